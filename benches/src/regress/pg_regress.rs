//! One run of `pg_regress` against a running server (what `make
//! installcheck-parallel` does), as the `postgres` user, with a deadline.
//!
//! No `--use-existing`: without it pg_regress, pointed at an existing
//! server by `--host`/`--port`, drops and recreates the `regression`
//! database (from template0, with the settings the expected output
//! assumes) through the same endpoint the tests use. With it, the database
//! would have to exist already and keep the previous run's objects.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::apt::Installed;
use super::run_tool;
use super::suite::{chown, Staged};
use crate::e2e::child::{clean_command, die_with_parent, wait_deadline, Owner};

/// The database every run uses: the expected output names it.
pub const DBNAME: &str = "regression";
/// Concurrent psql sessions at most: the size of the largest parallel group.
pub const MAX_CONNECTIONS: u32 = 20;

/// How to run the suite; the same for every run.
#[derive(Clone, Debug)]
pub struct PgRegress {
    pub program: PathBuf,
    /// Where psql is (`--bindir`).
    pub bindir: PathBuf,
    pub staged: Staged,
    /// Who runs it: pg_regress refuses root.
    pub owner: Option<Owner>,
    pub timeout: Duration,
}

/// A finished (or killed) run.
#[derive(Debug)]
pub struct Finished {
    /// `None`: killed at the deadline, the results are partial.
    pub exit: Option<ExitStatus>,
    pub seconds: f64,
    /// `regression.out`: one line per test, as pg_regress printed it.
    pub report: String,
}

impl Finished {
    /// pg_regress exits 0 (all passed) or 1 (some differ from expected)
    /// after a complete run; 2 means it could not run the tests.
    pub fn complete(&self) -> bool {
        self.exit.and_then(|s| s.code()).is_some_and(|c| c <= 1)
    }
}

/// The installed `pg_regress`, which Debian ships in the client package
/// under PGXS: `<pgxs>/src/test/regress/pg_regress`.
pub fn find(bindir: &Path) -> Result<PathBuf, String> {
    let pgxs = run_tool(
        Command::new(bindir.join("pg_config")).arg("--pgxs"),
        "pg_config --pgxs",
    )?;
    let makefiles = Path::new(pgxs.trim()).parent().and_then(Path::parent);
    let program = makefiles
        .map(|src| src.join("test/regress/pg_regress"))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no pg_regress next to {} (postgresql-client not installed?)",
                pgxs.trim()
            )
        })?;
    Ok(program)
}

/// `postgres --version` and `pg_regress --version`, warning when the
/// client package (pg_regress and psql come with it) is not the server's
/// version: a known cause of differences from `expected/`.
pub fn versions(bindir: &Path, server: &Installed) -> Result<(String, String), String> {
    let ask = |program: &Path| {
        let out = run_tool(Command::new(program).arg("--version"), "--version")?;
        Ok::<_, String>(out.trim().to_owned())
    };
    let postgres = ask(&bindir.join("postgres"))?;
    let pg_regress = ask(&find(bindir)?)?;
    if server.client_version.as_deref() != Some(server.version.as_str()) {
        eprintln!(
            "!!! postgresql-client-{} is {:?} but the server is {}: the direct run may \
             differ from expected/",
            server.major, server.client_version, server.version
        );
    }
    Ok((postgres, pg_regress))
}

impl PgRegress {
    /// pg_regress's arguments for a server (or proxy) at 127.0.0.1:`port`.
    pub fn args(&self, port: u16, user: &str, out_dir: &Path) -> Vec<String> {
        let input = &self.staged.input_dir;
        vec![
            format!("--inputdir={}", input.display()),
            format!("--outputdir={}", out_dir.display()),
            format!("--bindir={}", self.bindir.display()),
            format!("--dlpath={}", self.staged.lib_dir.display()),
            format!("--schedule={}", input.join("parallel_schedule").display()),
            format!("--max-connections={MAX_CONNECTIONS}"),
            // The suite's own Makefile passes this: no group above 20.
            "--max-concurrent-tests=20".into(),
            "--host=127.0.0.1".into(),
            format!("--port={port}"),
            format!("--user={user}"),
            format!("--dbname={DBNAME}"),
        ]
    }

    /// Runs the whole schedule into `out_dir` (recreated empty), writing
    /// pg_regress's console output to `pg_regress.log` there.
    pub fn run(&self, port: u16, user: &str, out_dir: &Path) -> Result<Finished, String> {
        let _ = fs::remove_dir_all(out_dir);
        fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
        chown(out_dir, self.owner)?;
        let log_path = out_dir.join("pg_regress.log");
        let log =
            fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut cmd = clean_command(&self.program);
        cmd.args(self.args(port, user, out_dir))
            .current_dir(out_dir)
            .env("HOME", out_dir)
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log));
        if let Some(o) = self.owner {
            cmd.uid(o.uid).gid(o.gid);
        }
        // SIGKILL: pg_regress has no cleanup worth waiting for, and its psql
        // children lose their server when the cluster's watchdog stops it.
        die_with_parent(&mut cmd, libc::SIGKILL);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start pg_regress: {e}"))?;
        let exit = wait_deadline(&mut child, self.timeout);
        Ok(Finished {
            exit,
            seconds: started.elapsed().as_secs_f64(),
            report: fs::read_to_string(out_dir.join("regression.out")).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_of_an_installcheck_against_one_port() {
        let runner = PgRegress {
            program: "/pgxs/src/test/regress/pg_regress".into(),
            bindir: "/usr/lib/postgresql/15/bin".into(),
            staged: Staged {
                input_dir: "/out/suite/regress".into(),
                lib_dir: "/out/suite/lib".into(),
            },
            owner: None,
            timeout: Duration::from_secs(1),
        };
        let args = runner.args(6543, "postgres", Path::new("/out/runs/session"));
        assert!(args.contains(&"--schedule=/out/suite/regress/parallel_schedule".to_owned()));
        assert!(args.contains(&"--dlpath=/out/suite/lib".to_owned()));
        assert!(args.contains(&"--port=6543".to_owned()));
        assert!(args.contains(&"--dbname=regression".to_owned()));
        assert!(args.contains(&"--max-connections=20".to_owned()));
        assert!(!args.iter().any(|a| a == "--use-existing"));
    }
}
