//! The `pgsplit` binary run as an operator runs it, in front of the shared
//! cluster, for what only a separate process shows: its log, its limits.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use super::*;

/// The binary in front of the shared cluster, its stderr piped.
pub struct Binary {
    child: Child,
    pub addr: SocketAddr,
    /// The configuration file it runs with (rewritten by the reload test).
    #[allow(dead_code)]
    pub config: std::path::PathBuf,
}

impl Binary {
    /// `extra`: more TOML (keys before its first table go to the top
    /// level, the rest after the generated config); `open_files`: the
    /// open-file limit (soft and hard) it runs under.
    pub async fn start(extra: &str, open_files: Option<u64>) -> Binary {
        let c = cluster();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tables = extra.find("\n[").map_or(
            if extra.starts_with('[') {
                0
            } else {
                extra.len()
            },
            |at| if extra.starts_with('[') { 0 } else { at + 1 },
        );
        let (top, extra) = extra.split_at(tables);
        let mut toml = format!("listen = \"127.0.0.1:{port}\"\n{top}");
        for n in c.nodes() {
            let role = if n.index == 0 { "primary" } else { "replica" };
            toml += &format!(
                "[[backends]]\nname = \"node{}\"\nhost = \"{}\"\nport = {}\nrole = \"{role}\"\n",
                n.index, n.host, n.port
            );
        }
        toml += &format!(
            "[[users]]\nname = \"{}\"\npassword = \"{}\"\nadmin = true\n[[users]]\nname = \"{}\"\nauth = \"trust\"\n",
            c.superuser(),
            c.password(),
            pgsplit_cluster::TRUST_USER
        );
        toml += extra;
        let path = std::env::temp_dir().join(format!("pgsplit-logs-{port}.toml"));
        std::fs::write(&path, toml).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgsplit"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PGSPLIT_")) {
            cmd.env_remove(k);
        }
        if let Some(n) = open_files {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe; it only reads `limit`.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd
            .args(["--config", path.to_str().unwrap(), "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pgsplit");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let up = eventually(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        assert!(up, "pgsplit never listened on {addr}");
        Binary {
            child,
            addr,
            config: path,
        }
    }

    /// Sends SIGHUP (reload).
    #[allow(dead_code)]
    pub fn hangup(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
    }

    /// Stops the binary (SIGTERM) and returns everything it logged.
    pub fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut log = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        self.child.wait().unwrap();
        log
    }
}
