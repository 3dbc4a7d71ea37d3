//! Query cancellation across the proxy.
//!
//! Clients only ever see key data that pgsplit made up; a CancelRequest
//! arrives on a new connection with that key. The registry maps it to the
//! server connection the session is using *now*, which changes as sessions
//! move between backends, so sessions update their entry when they switch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use pgsplit_protocol::encode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Where a cancel for one client session must go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CancelTarget {
    pub addr: SocketAddr,
    pub server_pid: i32,
    pub server_secret: i32,
}

struct Entry {
    secret: i32,
    /// The session's own slot: it changes on every checkout, so the session
    /// writes it without taking the registry-wide lock.
    target: Arc<Mutex<Option<CancelTarget>>>,
}

/// Shared by all sessions. The mutexes are held only for a map operation or
/// a store, never across an await.
#[derive(Default)]
pub struct CancelRegistry {
    next_pid: AtomicI32,
    entries: Mutex<HashMap<i32, Entry>>,
}

/// A session's key, removed from the registry when the session ends.
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    target: Arc<Mutex<Option<CancelTarget>>>,
    pub pid: i32,
    pub secret: i32,
}

impl CancelRegistry {
    pub fn register(self: &Arc<Self>) -> CancelKey {
        // Positive, wrapping ids look like PostgreSQL pids to clients that log them.
        let pid = (self.next_pid.fetch_add(1, Ordering::Relaxed) & 0x3fff_ffff) + 1;
        let secret = rand::random::<i32>();
        let target = Arc::new(Mutex::new(None));
        self.entries.lock().unwrap().insert(
            pid,
            Entry {
                secret,
                target: Arc::clone(&target),
            },
        );
        CancelKey {
            registry: Arc::clone(self),
            target,
            pid,
            secret,
        }
    }

    /// The server connection to signal for (pid, secret), if the key is ours.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<CancelTarget> {
        let entries = self.entries.lock().unwrap();
        let e = entries.get(&pid)?;
        if e.secret != secret {
            return None;
        }
        let target = *e.target.lock().unwrap();
        target
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CancelKey {
    pub fn set_target(&self, target: Option<CancelTarget>) {
        *self.target.lock().unwrap() = target;
    }
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry.entries.lock().unwrap().remove(&self.pid);
    }
}

/// Sends a CancelRequest to a server. As in PostgreSQL, the outcome is never
/// reported to the requester; failures are only logged.
pub async fn send_cancel(target: CancelTarget, timeout: Duration) {
    let attempt = async {
        let mut s = TcpStream::connect(target.addr).await?;
        let mut buf = BytesMut::with_capacity(16);
        encode::cancel_request(&mut buf, target.server_pid, target.server_secret);
        s.write_all(&buf).await?;
        s.shutdown().await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => tracing::debug!(addr = %target.addr, "cancel request forwarded"),
        Ok(Err(e)) => {
            tracing::warn!(addr = %target.addr, error = %e, "could not forward cancel request")
        }
        Err(_) => tracing::warn!(addr = %target.addr, "timed out forwarding cancel request"),
    }
}
