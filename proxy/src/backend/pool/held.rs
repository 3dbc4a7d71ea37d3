//! Connections kept in the pool for one session: after a session's writes
//! in transaction pooling, the connection that ran them holds its sequence
//! state (`nextval()`), and its later `currval()` / `lastval()` must run
//! there. Other checkouts leave a held connection alone while the pool may
//! still open connections (`PoolInner::next_idle`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{ConnPool, Permit, PooledConn};
use crate::backend::ServerConn;

/// Names one connection at one checkout: it is handed out again only if
/// nobody has checked it out since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ConnToken {
    serial: u64,
    uses: u64,
}

impl ConnToken {
    fn of(conn: &ServerConn) -> ConnToken {
        ConnToken {
            serial: conn.serial,
            uses: conn.uses,
        }
    }

    fn names(&self, conn: &ServerConn) -> bool {
        *self == ConnToken::of(conn)
    }
}

/// A connection in the pool kept for one session (see
/// [`PooledConn::hold`]); dropping this lets others take it again.
pub struct Held {
    pool: ConnPool,
    /// None once taken back: nothing is left to release.
    token: Option<ConnToken>,
}

impl Held {
    /// The held connection, unless another checkout took it. Never waits.
    pub fn take_back(mut self) -> Option<PooledConn> {
        let conn = self.pool.take_back(self.token?);
        if conn.is_some() {
            self.token = None;
        }
        conn
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(token) = self.token {
            self.pool.release(token);
        }
    }
}

impl PooledConn {
    /// Gives the connection back, kept for the session (transaction
    /// pooling, after its writes): other checkouts leave it alone while the
    /// pool has room, so the session's next `currval()` finds its
    /// `nextval()`.
    pub fn hold(mut this: PooledConn) -> Held {
        let token = ConnToken::of(&this);
        this.held = true;
        let pool = ConnPool(Arc::clone(&this.pool));
        drop(this);
        Held {
            pool,
            token: Some(token),
        }
    }
}

impl ConnPool {
    /// The idle connection `token` names, if nobody has checked it out
    /// since the token was taken.
    fn take_back(&self, token: ConnToken) -> Option<PooledConn> {
        let inner = &self.0;
        // No permit: every connection is in use, so this one is too.
        inner.permits.try_acquire().ok()?.forget();
        let permit = Permit(inner);
        let mut idle = inner.idle.lock().unwrap();
        let at = idle.iter().position(|i| token.names(&i.conn))?;
        let mut found = idle.remove(at);
        drop(idle);
        let now = Instant::now();
        if inner.manager.reusable(&mut found, now).is_err() {
            inner.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        std::mem::forget(permit);
        Some(PooledConn::checked_out(inner, found, now))
    }

    /// Makes the idle connection `token` names an ordinary one again.
    fn release(&self, token: ConnToken) {
        let mut idle = self.0.idle.lock().unwrap();
        if let Some(i) = idle.iter_mut().find(|i| token.names(&i.conn)) {
            i.held = false;
        }
    }
}
