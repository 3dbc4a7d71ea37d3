//! The open server connections of one backend, so the health loop can end
//! every wait on a server it declared down: a session waiting for a reply
//! on a silent network would otherwise wait for TCP's retransmission
//! timeout (a read nothing of which reached the client is then retried
//! elsewhere).

use std::collections::HashSet;
use std::os::fd::RawFd;
use std::sync::Mutex;

/// The open sockets of one backend.
#[derive(Debug, Default)]
pub struct LiveSockets {
    fds: Mutex<HashSet<RawFd>>,
}

impl LiveSockets {
    pub(crate) fn add(&self, fd: RawFd) {
        self.fds.lock().unwrap().insert(fd);
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
        for &fd in fds.iter() {
            // SAFETY: `fd` is an open socket: it leaves the set (under this
            // lock) before its owner closes it.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        fds.len()
    }
}
