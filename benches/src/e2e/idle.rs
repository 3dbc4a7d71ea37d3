//! Idle-connection memory: how much resident memory pgsplit needs per
//! client that logged in and then went quiet.
//!
//! Production fleets hold thousands of mostly idle connections (one pool per
//! application process), so the per-client cost at rest bounds how many a
//! proxy can serve. The `idle` binary starts the proxy; this module holds the
//! client side (logging in over raw sockets, checking the sockets stayed
//! open) and the `/proc` reading, so each can be tested alone.

use std::fmt::Write;
use std::fs;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use pgsplit_protocol::backend::{self, Authentication, BackendMessage};
use pgsplit_protocol::{encode, split_frame, Direction};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// A login that takes longer than this is counted as failed: a healthy proxy
/// answers a trust login in milliseconds even under a burst.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Startup replies are a handful of small messages; anything bigger is a
/// broken stream, not something to buffer.
const MAX_REPLY: usize = 1 << 20;

/// Error messages kept verbatim; the rest are only counted.
const KEPT_ERRORS: usize = 10;

/// pgsplit configuration for the benchmark: a trust user, so the cost
/// measured is the session's and not SCRAM's, and a client limit above any
/// count the benchmark opens.
pub fn pgsplit_toml(
    listen_port: u16,
    primary_port: u16,
    replica_ports: &[u16],
    user: &str,
) -> String {
    let mut s = format!(
        "listen = \"127.0.0.1:{listen_port}\"\n\n\
         [pool]\npool_size = 5\n\n\
         [limits]\nmax_client_connections = 20000\n\n\
         [[backends]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {primary_port}\nrole = \"primary\"\n"
    );
    for (i, port) in replica_ports.iter().enumerate() {
        let _ = write!(
            s,
            "\n[[backends]]\nname = \"replica{}\"\nhost = \"127.0.0.1\"\nport = {port}\nrole = \"replica\"\n",
            i + 1
        );
    }
    let _ = write!(s, "\n[[users]]\nname = \"{user}\"\nauth = \"trust\"\n");
    s
}

/// This process's open-file limits after raising the soft one.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Nofile {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: every idle client is
/// one descriptor here, and the usual soft default (1024) is far below the
/// counts worth measuring.
pub fn raise_nofile() -> Result<Nofile, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
    }
    Ok(Nofile {
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// Resident memory of one process, in KiB as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: the most that was ever resident.
    pub hwm_kib: u64,
}

/// Reads VmRSS and VmHWM from the text of `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
    })
}

pub fn memory(pid: i32) -> Option<Memory> {
    parse_status(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Logs in as `user` and returns once ReadyForQuery arrives, the socket
/// handed back to std so it can sit idle with no runtime behind it.
pub async fn login(addr: SocketAddr, user: &str) -> Result<std::net::TcpStream, String> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut buf = BytesMut::new();
        encode::startup_message(
            &mut buf,
            &[
                ("user", user),
                ("database", "postgres"),
                ("application_name", "pgsplit-idle"),
            ],
        );
        stream
            .write_all(&buf)
            .await
            .map_err(|e| format!("send startup: {e}"))?;
        buf.clear();
        loop {
            while let Some(frame) =
                split_frame(&mut buf, Direction::Backend, MAX_REPLY).map_err(|e| e.to_string())?
            {
                match backend::parse(&frame).map_err(|e| e.to_string())? {
                    BackendMessage::ReadyForQuery(_) => return Ok(stream),
                    BackendMessage::ErrorResponse(f) => {
                        return Err(format!(
                            "server error {}: {}",
                            f.code().unwrap_or("?"),
                            f.message().unwrap_or("?")
                        ))
                    }
                    BackendMessage::Authentication(Authentication::Ok) => {}
                    BackendMessage::Authentication(other) => {
                        return Err(format!(
                            "asked for authentication ({other:?}), expected trust"
                        ))
                    }
                    _ => {}
                }
            }
            if stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?
                == 0
            {
                return Err("connection closed before ReadyForQuery".into());
            }
        }
    };
    let stream = tokio::time::timeout(LOGIN_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no ReadyForQuery within {}s", LOGIN_TIMEOUT.as_secs()))??;
    stream.into_std().map_err(|e| format!("into_std: {e}"))
}

/// The outcome of opening many idle clients.
pub struct Opened {
    pub streams: Vec<std::net::TcpStream>,
    pub failed: usize,
    /// The first few failures, verbatim.
    pub errors: Vec<String>,
}

/// Logs in `n` clients, `batch` at a time: all at once would overflow the
/// proxy's listen backlog and measure SYN retransmits instead of the proxy.
pub async fn open_idle(addr: SocketAddr, user: &str, n: usize, batch: usize) -> Opened {
    let mut opened = Opened {
        streams: Vec::with_capacity(n),
        failed: 0,
        errors: Vec::new(),
    };
    let mut started = 0;
    while started < n {
        let mut set = JoinSet::new();
        for _ in started..(started + batch).min(n) {
            let user = user.to_owned();
            set.spawn(async move { login(addr, &user).await });
        }
        started = (started + batch).min(n);
        while let Some(joined) = set.join_next().await {
            match joined.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok(stream) => opened.streams.push(stream),
                Err(e) => {
                    opened.failed += 1;
                    if opened.errors.len() < KEPT_ERRORS {
                        opened.errors.push(e);
                    }
                }
            }
        }
    }
    opened
}

/// What a peek at each idle socket found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Liveness {
    /// Nothing to read and no EOF: still connected and quiet.
    pub open: usize,
    /// The proxy closed the connection.
    pub closed: usize,
    /// The proxy sent something unprompted (an ErrorResponse before closing, say).
    pub unexpected_data: usize,
    /// Reset or another socket error.
    pub errors: usize,
}

/// Peeks one byte on each socket without blocking and without sending
/// anything, so the check itself cannot wake the proxy's sessions.
pub fn liveness(streams: &[std::net::TcpStream]) -> Liveness {
    let mut l = Liveness::default();
    let mut byte = [0u8; 1];
    for s in streams {
        // into_std left the sockets non-blocking, so an open, quiet one
        // answers WouldBlock.
        match s.peek(&mut byte) {
            Ok(0) => l.closed += 1,
            Ok(_) => l.unexpected_data += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => l.open += 1,
            Err(_) => l.errors += 1,
        }
    }
    l
}

/// Per-client cost in KiB, `None` when nobody connected.
pub fn per_client_kib(rest: Memory, loaded: Memory, clients: usize) -> Option<f64> {
    (clients > 0).then(|| (loaded.rss_kib as f64 - rest.rss_kib as f64) / clients as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tpgsplit\nVmPeak:\t  900000 kB\nVmHWM:\t   20480 kB\n\
                          VmRSS:\t   10240 kB\nRssAnon:\t    4096 kB\nThreads:\t3\n";

    #[test]
    fn reads_rss_and_hwm() {
        let m = parse_status(STATUS).unwrap();
        assert_eq!((m.rss_kib, m.hwm_kib), (10240, 20480));
        assert_eq!(parse_status("Name:\tx\nVmRSS:\t1 kB\n"), None);
    }

    #[test]
    fn reads_own_memory() {
        let m = memory(std::process::id() as i32).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
    }

    #[test]
    fn per_client_is_the_delta_over_clients() {
        let m = |rss_kib| Memory {
            rss_kib,
            hwm_kib: 0,
        };
        assert_eq!(per_client_kib(m(1000), m(3000), 100), Some(20.0));
        assert_eq!(per_client_kib(m(1000), m(3000), 0), None);
    }

    #[test]
    fn liveness_tells_open_closed_and_chatty_apart() {
        use std::io::Write as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..3 {
            let c = std::net::TcpStream::connect(addr).unwrap();
            c.set_nonblocking(true).unwrap();
            clients.push(c);
            servers.push(listener.accept().unwrap().0);
        }
        servers[1].write_all(b"E").unwrap();
        drop(servers.remove(2));
        // Loopback delivers the byte and the FIN soon, not at once.
        let seen = |l: Liveness| (l.open, l.unexpected_data, l.closed, l.errors);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut got = seen(liveness(&clients));
        while got != (1, 1, 1, 0) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            got = seen(liveness(&clients));
        }
        assert_eq!(got, (1, 1, 1, 0));
    }

    #[test]
    fn config_has_trust_user_and_replicas() {
        let t = pgsplit_toml(6432, 5433, &[5434], "trustuser");
        assert!(t.contains("listen = \"127.0.0.1:6432\""));
        assert!(t.contains("port = 5434\nrole = \"replica\""));
        assert!(t.contains("name = \"trustuser\"\nauth = \"trust\""));
        assert!(t.contains("max_client_connections = 20000"));
    }
}
