//! The endpoints pgbench is pointed at: the primary itself, pgsplit, and
//! whichever peer proxies are installed.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::child::{clean_command, die_with_parent, wait_deadline, ChildGuard, Owner};
use super::configs::{self, Layout};
use super::scratch::{write, Scratch};
use super::{procstat, Mode};

/// How long a proxy may take to accept its first login.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// One thing to benchmark.
pub struct Target {
    pub name: &'static str,
    pub port: u16,
    pub version: String,
    /// Modes this target cannot run, with the reason printed for skipped cells.
    pub unsupported: Vec<(Mode, String)>,
    process: Option<ChildGuard>,
    /// Sum CPU over the process tree (pgpool forks one worker per client).
    cpu_tree: bool,
    log: Option<PathBuf>,
}

/// A peer proxy either started or was skipped, and the report says why.
pub enum Peer {
    Ready(Target),
    Skipped { name: &'static str, reason: String },
}

impl Target {
    /// The primary itself: the baseline every ratio is taken against.
    pub fn direct(layout: &Layout, version: String) -> Target {
        Target {
            name: "direct",
            port: layout.primary_port,
            version,
            unsupported: Vec::new(),
            process: None,
            cpu_tree: false,
            log: None,
        }
    }

    /// CPU ticks the proxy has used so far; `None` for `direct`.
    pub fn cpu_ticks(&self) -> Option<u64> {
        let pid = self.process.as_ref()?.pid();
        procstat::cpu_ticks(pid, self.cpu_tree)
    }

    pub fn is_proxy(&self) -> bool {
        self.process.is_some()
    }

    pub fn unsupported(&self, mode: Mode) -> Option<&str> {
        self.unsupported
            .iter()
            .find(|(m, _)| *m == mode)
            .map(|(_, why)| why.as_str())
    }

    /// Err with the proxy's log tail if it has died.
    pub fn check_alive(&mut self) -> Result<(), String> {
        let Some(process) = self.process.as_mut() else {
            return Ok(());
        };
        match process.exited() {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited ({status}); log tail:\n{}",
                self.name,
                log_tail(self.log.as_deref())
            )),
        }
    }
}

/// What every spawner needs: where things live and who runs them.
pub struct Env<'a> {
    pub layout: &'a Layout,
    pub scratch: &'a Scratch,
    pub owner: Option<Owner>,
    /// `psql`, to prove a login works end to end before measuring.
    pub psql: PathBuf,
}

pub fn spawn_pgsplit(env: &Env, binary: &Path) -> Result<Target, String> {
    spawn_pgsplit_with(env, binary, |port| configs::pgsplit_toml(env.layout, port))
}

/// pgsplit with a configuration of the caller's, made for the port it
/// will listen on (the regression runner's differs from the benchmark's).
pub fn spawn_pgsplit_with(
    env: &Env,
    binary: &Path,
    toml: impl FnOnce(u16) -> String,
) -> Result<Target, String> {
    let port = free_port()?;
    let dir = env.scratch.path();
    let config = dir.join("pgsplit.toml");
    write(&config, &toml(port), None)?;
    let log = dir.join("pgsplit.log");
    let mut cmd = clean_command(binary);
    cmd.arg("--config").arg(&config).env("PGSPLIT_LOG", "warn");
    let version = banner(binary).unwrap_or_else(|| "unknown".into());
    let target = start(
        env,
        Spec {
            name: "pgsplit",
            cmd,
            port,
            log,
            stop_signal: libc::SIGTERM,
            cpu_tree: false,
            as_owner: false,
        },
    )?;
    Ok(Target { version, ..target })
}

pub fn spawn_pgbouncer(env: &Env) -> Peer {
    let skip = |reason: String| Peer::Skipped {
        name: "pgbouncer",
        reason,
    };
    let Some(binary) = find_program("pgbouncer", &["/usr/sbin/pgbouncer"]) else {
        return skip("not installed (no pgbouncer on PATH or in /usr/sbin)".into());
    };
    let banner = banner(&binary).unwrap_or_default();
    let Some(version) = configs::parse_version(&banner) else {
        return skip(format!("cannot read the version of {}", binary.display()));
    };
    let result = (|| {
        let port = free_port()?;
        let dir = env.scratch.path();
        let ini = dir.join("pgbouncer.ini");
        write(
            &ini,
            &configs::pgbouncer_ini(env.layout, port, dir, version),
            env.owner,
        )?;
        write(
            &dir.join("userlist.txt"),
            &configs::pgbouncer_userlist(env.layout),
            env.owner,
        )?;
        let mut cmd = clean_command(&binary);
        cmd.arg(&ini);
        start(
            env,
            Spec {
                name: "pgbouncer",
                cmd,
                port,
                log: dir.join("pgbouncer.log"),
                stop_signal: libc::SIGTERM,
                cpu_tree: false,
                as_owner: true,
            },
        )
    })();
    match result {
        Ok(mut target) => {
            target.version = first_line(&banner);
            if !configs::pgbouncer_has_prepared(version) {
                let why = format!(
                    "{} predates 1.21: no named prepared statements in transaction pooling",
                    target.version
                );
                target.unsupported.push((Mode::Prepared, why));
            }
            Peer::Ready(target)
        }
        Err(e) => skip(format!("installed but failed to start: {e}")),
    }
}

pub fn spawn_pgpool(env: &Env) -> Peer {
    let skip = |reason: String| Peer::Skipped {
        name: "pgpool",
        reason,
    };
    let Some(binary) = find_program("pgpool", &["/usr/sbin/pgpool"]) else {
        return skip("not installed (no pgpool on PATH or in /usr/sbin)".into());
    };
    if env.layout.tls.is_some() {
        return skip("not set up for TLS in this benchmark".into());
    }
    let banner = banner(&binary).unwrap_or_default();
    let Some(version) = configs::parse_version(&banner) else {
        return skip(format!("cannot read the version of {}", binary.display()));
    };
    let result = (|| {
        let ports = (free_port()?, free_port()?);
        let dir = env.scratch.path();
        let conf = dir.join("pgpool.conf");
        write(
            &conf,
            &configs::pgpool_conf(env.layout, ports, dir, version),
            env.owner,
        )?;
        write(&dir.join("pool_hba.conf"), configs::pgpool_hba(), env.owner)?;
        write(
            &dir.join("pool_passwd"),
            &configs::pgpool_passwd(env.layout),
            env.owner,
        )?;
        write(&dir.join("pcp.conf"), "", env.owner)?;
        let mut cmd = clean_command(&binary);
        cmd.arg("-n").arg("-f").arg(&conf);
        cmd.arg("-F").arg(dir.join("pcp.conf"));
        cmd.arg("-a").arg(dir.join("pool_hba.conf"));
        // SIGQUIT is pgpool's immediate shutdown: the parent takes its
        // pre-forked workers down with it.
        start(
            env,
            Spec {
                name: "pgpool",
                cmd,
                port: ports.0,
                log: dir.join("pgpool.log"),
                stop_signal: libc::SIGQUIT,
                cpu_tree: true,
                as_owner: true,
            },
        )
    })();
    match result {
        Ok(target) => Peer::Ready(Target {
            version: first_line(&banner),
            ..target
        }),
        Err(e) => skip(format!("installed but failed to start: {e}")),
    }
}

/// How to launch one proxy.
struct Spec {
    name: &'static str,
    cmd: Command,
    port: u16,
    /// Receives stdout and stderr; its tail explains a failed start.
    log: PathBuf,
    stop_signal: libc::c_int,
    cpu_tree: bool,
    /// Peers run as the server owner (PgBouncer refuses root); pgsplit is
    /// ours and runs as we do.
    as_owner: bool,
}

/// Spawns the proxy, then waits until a real login through it succeeds.
fn start(env: &Env, spec: Spec) -> Result<Target, String> {
    let Spec {
        name,
        mut cmd,
        port,
        log,
        stop_signal,
        cpu_tree,
        as_owner,
    } = spec;
    let out = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
    cmd.current_dir(env.scratch.path());
    if let (Some(owner), true) = (env.owner, as_owner) {
        cmd.uid(owner.uid)
            .gid(owner.gid)
            .env("HOME", env.scratch.path());
    }
    die_with_parent(&mut cmd, stop_signal);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cmd.get_program().to_string_lossy()))?;
    let mut target = Target {
        name,
        port,
        version: String::new(),
        unsupported: Vec::new(),
        process: Some(ChildGuard::new(name, child, stop_signal)),
        cpu_tree,
        log: Some(log),
    };
    wait_listening(&mut target)?;
    login_check(env, &mut target)?;
    Ok(target)
}

fn wait_listening(target: &mut Target) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], target.port));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        target.check_alive()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not listen on {addr} within {}s; log tail:\n{}",
                target.name,
                READY_TIMEOUT.as_secs(),
                log_tail(target.log.as_deref())
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A listening socket is not a working proxy: authentication or backend
/// settings can still be wrong, which would otherwise surface as a cell
/// full of failures.
pub fn login_check(env: &Env, target: &mut Target) -> Result<(), String> {
    let mut cmd = clean_command(&env.psql);
    cmd.args([
        "-X",
        "-At",
        "-h",
        "127.0.0.1",
        "-p",
        &target.port.to_string(),
    ])
    .args(["-U", &env.layout.user, "-d", "postgres", "-c", "SELECT 1"])
    .env("PGPASSWORD", &env.layout.password)
    .env("PGCONNECT_TIMEOUT", "10")
    .env("PGSSLMODE", env.layout.sslmode())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    die_with_parent(&mut cmd, libc::SIGKILL);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start psql: {e}"))?;
    match wait_deadline(&mut child, READY_TIMEOUT) {
        Some(s) if s.success() => Ok(()),
        other => Err(format!(
            "`psql -c 'SELECT 1'` through {} failed ({}); log tail:\n{}",
            target.name,
            other.map_or("timed out".into(), |s| s.to_string()),
            log_tail(target.log.as_deref())
        )),
    }
}

/// A loopback port free right now. Another process may take it before the
/// proxy binds; the proxy then fails to start and says so in its log.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

fn find_program(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// `program --version`, stdout and stderr together (pgpool prints to stderr).
pub fn banner(program: &Path) -> Option<String> {
    let out = clean_command(program).arg("--version").output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_owned()
}

/// The last lines of a log, for error messages.
pub fn log_tail(log: Option<&Path>) -> String {
    let text = log
        .and_then(|p| fs::read_to_string(p).ok())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
