//! Running PostgreSQL tools as the right OS user, with deadlines.

use std::ffi::{CString, OsStr};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::log_tail;
use crate::ClusterError;

/// OS identity the servers run as when this process is root.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// `Some(postgres)` when running as root — PostgreSQL refuses to run as
/// root — and `None` (run as ourselves) otherwise.
pub(crate) fn server_owner() -> Result<Option<Owner>, ClusterError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    lookup_user("postgres")
        .map(Some)
        .ok_or(ClusterError::NoPostgresUser)
}

fn lookup_user(name: &str) -> Option<Owner> {
    let cname = CString::new(name).ok()?;
    // getpwnam_r rather than getpwnam: tests start clusters from several
    // threads, and getpwnam returns a pointer into shared static storage.
    // SAFETY: passwd is plain old data; all-zero is a valid initial value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, correctly sized storage owned by
    // this frame; pwd's string fields point into buf, which we do not read.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(Owner {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// What a finished command printed.
pub(crate) struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Builds commands for the tools in one bindir, run as the server owner,
/// with a clean `PG*` environment and the cluster's base dir as cwd/HOME.
#[derive(Clone, Debug)]
pub(crate) struct Runner {
    pub bindir: PathBuf,
    pub owner: Option<Owner>,
    pub home: PathBuf,
}

impl Runner {
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(tool));
        // An inherited PGHOST/PGPORT/PGUSER/PGOPTIONS/... would silently
        // redirect or alter our connections; everything is passed explicitly.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        // cwd and HOME must be reachable by the postgres user (root's home is
        // not), and C messages keep errors matchable in tests.
        cmd.env("LC_ALL", "C")
            .env("HOME", &self.home)
            .current_dir(&self.home)
            .stdin(Stdio::null());
        if let Some(owner) = self.owner {
            cmd.uid(owner.uid).gid(owner.gid);
        }
        cmd
    }

    /// Runs a command and requires success; failures quote `log`'s tail.
    pub fn check(
        &self,
        mut cmd: Command,
        what: &str,
        timeout: Duration,
        log: Option<&Path>,
    ) -> Result<String, ClusterError> {
        let out = run(&mut cmd, None, timeout).map_err(|e| with_log(e, what, log))?;
        ensure_success(out, what, log)
    }
}

/// Maps a non-zero exit to [`ClusterError::Command`], else returns stdout.
pub(crate) fn ensure_success(
    out: Output,
    what: &str,
    log: Option<&Path>,
) -> Result<String, ClusterError> {
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(ClusterError::Command {
        what: what.to_owned(),
        status: out.status.to_string(),
        stderr: out.stderr,
        log_tail: log.map(log_tail).unwrap_or_default(),
    })
}

fn with_log(err: ClusterError, what: &str, log: Option<&Path>) -> ClusterError {
    match (err, log) {
        (ClusterError::Timeout(_), Some(log)) => {
            crate::error::timeout_with_log(format!("{what} did not finish in time"), log)
        }
        (ClusterError::Timeout(_), None) => {
            ClusterError::Timeout(format!("{what} did not finish in time"))
        }
        (other, _) => other,
    }
}

/// Runs `cmd` to completion, feeding it `input`, and kills it after
/// `timeout`. Output is read on helper threads so a chatty child can never
/// block on a full pipe while we wait for it.
pub(crate) fn run(
    cmd: &mut Command,
    input: Option<&str>,
    timeout: Duration,
) -> Result<Output, ClusterError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let program = cmd.get_program().to_owned();
    let mut child = cmd.spawn().map_err(|e| spawn_error(&program, e))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        let input = input.to_owned();
        // A write error means the child exited early; its status says why.
        thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    let status = wait_deadline(&mut child, timeout).ok_or_else(|| {
        ClusterError::Timeout(format!(
            "{} did not finish in time",
            program.to_string_lossy()
        ))
    })?;
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn spawn_error(program: &OsStr, err: std::io::Error) -> ClusterError {
    std::io::Error::new(
        err.kind(),
        format!("cannot start {}: {err}", program.to_string_lossy()),
    )
    .into()
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

/// A daemon that inherited the pipe (it should not: pg_ctl redirects the
/// postmaster to the log file) would keep it open forever, so give up on the
/// output after a grace period instead of hanging.
fn collect(rx: mpsc::Receiver<Vec<u8>>) -> String {
    let bytes = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Waits for `child`, killing it at the deadline. Polling `try_wait` (rather
/// than a waiter thread plus `kill(pid)`) guarantees we never signal a pid
/// that has already been reaped and reused.
pub(crate) fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}
