//! The open server connections of one backend, so the health loop can end
//! every wait on a server it declared down: a session waiting for a reply
//! on a silent network would otherwise wait for TCP's retransmission
//! timeout (a read nothing of which reached the client is then retried
//! elsewhere).

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Mutex;

/// A logged-in server connection, for the admin console's `SHOW SERVERS`.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub database: String,
    pub user: String,
    pub pid: i32,
    pub local: Option<std::net::SocketAddr>,
    pub remote: std::net::SocketAddr,
    pub connected: std::time::SystemTime,
    pub tls: bool,
}

/// The open sockets of one backend, with what is known of each.
#[derive(Debug, Default)]
pub struct LiveSockets {
    fds: Mutex<HashMap<RawFd, Option<ServerInfo>>>,
}

impl LiveSockets {
    pub(crate) fn add(&self, fd: RawFd) {
        self.fds.lock().unwrap().insert(fd, None);
    }

    /// The connection on `fd` has logged in.
    pub(crate) fn describe(&self, fd: RawFd, info: ServerInfo) {
        if let Some(slot) = self.fds.lock().unwrap().get_mut(&fd) {
            *slot = Some(info);
        }
    }

    /// Every logged-in connection.
    pub fn servers(&self) -> Vec<ServerInfo> {
        let fds = self.fds.lock().unwrap();
        fds.values().flatten().cloned().collect()
    }

    /// Called before the socket closes, so the number is never shut after
    /// the kernel has given it to another socket.
    pub(crate) fn remove(&self, fd: RawFd) {
        self.fds.lock().unwrap().remove(&fd);
    }

    /// Shuts every socket down in both directions; returns how many. Their
    /// owners see the connection end at their next (or pending) read.
    pub fn shut_all(&self) -> usize {
        let fds = self.fds.lock().unwrap();
        for &fd in fds.keys() {
            // SAFETY: `fd` is an open socket: it leaves the set (under this
            // lock) before its owner closes it.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        fds.len()
    }
}
