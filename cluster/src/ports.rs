//! Picking free loopback ports.
//!
//! The port is free when we look and may be taken by the time the server
//! binds it; callers retry with a fresh port when the server log says so.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// Ports already handed out by this process. The kernel may return a port
/// we just released to another `bind(0)`, which would give two nodes
/// started in parallel the same port.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

pub(crate) fn free_port() -> std::io::Result<u16> {
    for _ in 0..64 {
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no fresh loopback port after 64 attempts",
    ))
}

/// Whether a failed start's log output shows the port was taken.
pub(crate) fn is_port_conflict(log: &str) -> bool {
    log.contains("Address already in use")
        || log.contains("could not bind IPv4 address")
        || log.contains("could not create any TCP/IP sockets")
}

#[cfg(test)]
mod tests {
    use super::{free_port, is_port_conflict};

    #[test]
    fn hands_out_distinct_ports() {
        let ports: std::collections::HashSet<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        assert_eq!(ports.len(), 50);
    }

    #[test]
    fn recognises_postgres_bind_failures() {
        let log = "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\n\
                   FATAL:  could not create any TCP/IP sockets\n";
        assert!(is_port_conflict(log));
        assert!(!is_port_conflict(
            "FATAL:  invalid value for parameter \"port\""
        ));
    }
}
