//! Child processes that cannot outlive the benchmark.
//!
//! Three layers, because each covers a way the others fail:
//! - [`ChildGuard`]'s `Drop` stops a proxy on every normal or error return;
//! - every child runs in its own process group, so pgpool's forked workers
//!   are signalled together with their parent;
//! - `PR_SET_PDEATHSIG` has the kernel signal the child if this process is
//!   killed outright (Ctrl-C, OOM, SIGKILL), when no destructor runs.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Who a child runs as: PgBouncer refuses to run as root, and the files it
/// reads must then belong to that user.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// `Some(postgres)` when we are root, `None` (run as ourselves) otherwise.
pub fn drop_root_to_postgres() -> Result<Option<Owner>, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = c"postgres";
    // The benchmark is single-threaded when it looks this up, so the
    // non-reentrant getpwnam is fine.
    // SAFETY: `name` is a valid C string; the result is read immediately.
    let pwd = unsafe { libc::getpwnam(name.as_ptr()) };
    if pwd.is_null() {
        return Err("running as root but there is no `postgres` OS user to run proxies as".into());
    }
    // SAFETY: non-null pointer returned by getpwnam, read before any other call.
    let (uid, gid) = unsafe { ((*pwd).pw_uid, (*pwd).pw_gid) };
    Ok(Some(Owner { uid, gid }))
}

/// A command with a predictable environment: no inherited `PG*` variable
/// can redirect a connection, and `LC_ALL=C` keeps output parseable.
pub fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("LC_ALL", "C").stdin(Stdio::null());
    cmd
}

/// Puts the child in its own process group and asks the kernel to send it
/// `signal` when we die.
pub fn die_with_parent(cmd: &mut Command, signal: libc::c_int) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    cmd.process_group(0);
    // SAFETY: the closure only makes async-signal-safe syscalls. std runs it
    // after switching uid/gid, which matters: a credential change clears
    // the death signal.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // We may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("benchmark exited during spawn"));
            }
            Ok(())
        });
    }
}

/// Waits for `child` up to `timeout`, then kills its whole group. Polling
/// `try_wait` never signals a pid that was already reaped and reused.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            _ => {
                signal_group(child, libc::SIGKILL);
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn signal_group(child: &Child, signal: libc::c_int) {
    // Every child we spawn leads its own group (`process_group(0)`), so its
    // pid is the group id; the negative pid reaches forked workers too.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), signal);
    }
}

/// A long-running child (a proxy) that is stopped when the guard drops:
/// `stop_signal` first, SIGKILL to the whole group after a grace period.
pub struct ChildGuard {
    pub name: String,
    child: Option<Child>,
    stop_signal: libc::c_int,
}

impl ChildGuard {
    pub fn new(name: impl Into<String>, child: Child, stop_signal: libc::c_int) -> Self {
        ChildGuard {
            name: name.into(),
            child: Some(child),
            stop_signal,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// `Some(status)` when the child has already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            // The leader is gone; workers it left behind still share the group.
            signal_group(&child, libc::SIGKILL);
            return;
        }
        signal_group(&child, self.stop_signal);
        if wait_deadline(&mut child, Duration::from_secs(5)).is_some() {
            signal_group(&child, libc::SIGKILL);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_stops_a_sleeping_child() {
        let mut cmd = clean_command(Path::new("sleep"));
        cmd.arg("60");
        die_with_parent(&mut cmd, libc::SIGTERM);
        let child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        let mut guard = ChildGuard::new("sleep", child, libc::SIGTERM);
        assert!(guard.exited().is_none());
        let started = Instant::now();
        drop(guard);
        assert!(started.elapsed() < Duration::from_secs(5));
        // SAFETY: signal 0 only probes for existence.
        assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "child survived its guard");
    }

    #[test]
    fn deadline_kills_overrunning_child() {
        let mut cmd = clean_command(Path::new("sleep"));
        cmd.arg("60");
        die_with_parent(&mut cmd, libc::SIGTERM);
        let mut child = cmd.spawn().unwrap();
        assert!(wait_deadline(&mut child, Duration::from_millis(50)).is_none());
    }
}
