//! A detached process that cleans up after us if we die.
//!
//! Tests keep their cluster in a `static`, which Rust never drops, and a
//! killed test binary runs no destructors either. So each cluster gets a
//! small `sh` watchdog that holds the read end of a pipe whose write end
//! only this process has. The kernel closes that write end however we exit
//! — return, panic, SIGKILL — and the watchdog's `read` then sees EOF and
//! stops the servers and deletes the base directory.
//!
//! An EOF on a pipe beats polling `kill -0 <pid>`: it is immediate, immune
//! to pid reuse, and works when the watchdog runs as `postgres` and may not
//! signal a root parent. A graceful [`Watchdog::dismiss`] writes a line
//! first, which tells the watchdog the cleanup is already done.
//!
//! The write end is close-on-exec (std opens every pipe that way), so no
//! server or tool we spawn inherits it and keeps the watchdog waiting.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::exec::{wait_deadline, Runner};

/// `$1` is pg_ctl, `$2` the base dir. A line on stdin means "already
/// cleaned up"; EOF means the owner is gone.
const SCRIPT: &str = r#"
if read -r line; then exit 0; fi
for d in "$2"/node*; do
    if [ -f "$d/postmaster.pid" ]; then
        "$1" stop -D "$d" -m immediate -w -t 30 >/dev/null 2>&1
    fi
done
rm -rf "$2"
"#;

pub(crate) struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    pub fn spawn(runner: &Runner, base_dir: &Path) -> std::io::Result<Watchdog> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("pgsplit-cluster-watchdog")
            .arg(runner.bindir.join("pg_ctl"))
            .arg(base_dir)
            // Not the base dir: the watchdog deletes it.
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(owner) = runner.owner {
            cmd.uid(owner.uid).gid(owner.gid);
        }
        // A session of its own: the Ctrl-C or SIGTERM that a test harness or
        // terminal sends to our process group must not reach the watchdog.
        // SAFETY: setsid is async-signal-safe and touches no Rust state.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin })
    }

    /// Tells the watchdog the cluster is already gone and reaps it.
    pub fn dismiss(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"done\n");
        }
        // Killed on timeout by wait_deadline; a stuck watchdog must not hang
        // the caller's shutdown.
        let _ = wait_deadline(&mut self.child, Duration::from_secs(5));
    }
}
