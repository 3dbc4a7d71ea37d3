//! Getting a server connection for a routed request: a reader (trying
//! another when one is unreachable) or the primary (waiting out a
//! failover), then bringing it up to date with the session's settings and
//! deferred BEGIN.

use std::sync::atomic::Ordering;

use pgsplit_protocol::encode::{self, ErrorInfo};
use pgsplit_protocol::pipeline::Request;

use super::route::no_reader_error;
use super::session::{checkout, Session};
use crate::backend::pool::PooledConn;
use crate::errors::SessionError;

impl Session {
    /// Makes `backend` (or, for a read it cannot reach, another reader) the
    /// active connection, with the session's settings and deferred BEGIN.
    pub(super) async fn attach(&mut self, mut backend: usize, read: bool) -> Result<(), ErrorInfo> {
        let mut tried: Vec<usize> = self.avoid.into_iter().collect();
        loop {
            match self.ensure_conn(backend).await {
                Ok(()) => break,
                Err(SessionError::Backend(e)) if !e.is_transient() => {
                    return Err(crate::errors::statement_error(&e));
                }
                Err(SessionError::Backend(e)) => {
                    self.shared.mark_unreachable(backend);
                    self.shared.suspect(backend);
                    // Nothing was sent yet, so another reader is a safe retry.
                    tracing::warn!(error = %e, "backend unreachable for a read; trying another");
                    tried.push(backend);
                    match self
                        .shared
                        .pick_reader(&tried, self.read_min_lsn, self.lag_limit)
                    {
                        Some(next) => backend = next,
                        None => return Err(no_reader_error().detail(format!("Last attempt: {e}."))),
                    }
                }
                Err(e) => return Err(crate::errors::pool_error(&e)),
            }
        }
        self.shared.stats[backend]
            .active
            .fetch_add(1, Ordering::SeqCst);
        self.finish_attach(backend, read);
        Ok(())
    }

    /// Attaches the primary, waiting out a failover (no primary, or one
    /// that cannot be reached) for up to `health.failover_timeout`.
    pub(super) async fn attach_primary(&mut self, read: bool) -> Result<(), ErrorInfo> {
        let timeout = self.shared.config.health.failover_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_error = None;
        if let Some(i) = self.recheck.take() {
            // It refused a write as read-only: wait for a fresh check to
            // say whether it was demoted (bounded by one check's timeout).
            self.shared
                .await_check(i, self.shared.config.health.health_check_timeout)
                .await;
        }
        loop {
            let Some(p) = self.shared.wait_for_primary(deadline).await else {
                return Err(crate::errors::no_primary(timeout, last_error.as_deref()));
            };
            match self.ensure_conn(p).await {
                Ok(()) => {}
                Err(SessionError::Backend(e)) if !e.is_transient() => {
                    return Err(crate::errors::statement_error(&e));
                }
                Err(SessionError::Backend(e)) => {
                    tracing::warn!(error = %e, "primary unreachable; waiting for it or a new one");
                    self.shared.mark_unreachable(p);
                    self.shared.suspect(p);
                    last_error = Some(e.to_string());
                    continue;
                }
                Err(e) => return Err(crate::errors::pool_error(&e)),
            }
            // Claim, then check it is still the primary: a switchover fences
            // the primary first and then waits for its claims to end, so
            // one of the two always sees the other.
            let active = &self.shared.stats[p].active;
            active.fetch_add(1, Ordering::SeqCst);
            if self.shared.primary() != Some(p) {
                active.fetch_sub(1, Ordering::SeqCst);
                if !self.session_pooling {
                    self.conns[p] = None;
                }
                continue;
            }
            self.finish_attach(p, read);
            return Ok(());
        }
    }

    fn finish_attach(&mut self, backend: usize, read: bool) {
        self.count(backend, read);
        self.attached_read = read;
        self.attached_write = !read && Some(backend) == self.shared.primary();
        if read {
            let ryw = &self.shared.ryw;
            if Some(backend) != self.shared.primary() {
                ryw.replica_reads.fetch_add(1, Ordering::Relaxed);
            } else if self.read_min_lsn > 0 {
                ryw.kept_on_primary.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.active = Some(backend);
        self.set_cancel_target(backend);
        let conn = self.conns[backend].as_mut().expect("ensured above");
        if let Some(sql) = self.state.replay_sql(conn.settings) {
            encode::query(&mut conn.out, &sql);
            conn.tracker.push(Request::UntilReady, false);
            conn.settings = self.state.fingerprint;
        }
        if let Some(begin) = self.state.deferred_begin.take() {
            encode::query(&mut conn.out, &begin);
            conn.tracker.push(Request::UntilReady, false);
            self.retry_begin = Some(begin);
        }
        self.start_replay();
    }

    /// A healthy connection to `backend`: the one the session holds, or one
    /// from the pool.
    async fn ensure_conn(&mut self, backend: usize) -> Result<(), SessionError> {
        if let Some(c) = self.conns[backend].as_mut() {
            if c.is_alive() {
                return Ok(());
            }
            tracing::debug!(backend = %c.backend.name, "held server connection was closed; replacing it");
            if let Some(dead) = self.conns[backend].take() {
                PooledConn::discard(dead);
            }
        }
        let auth = &self.shared.users[&self.user];
        let pool = match &self.pools[backend] {
            Some(p) => p.clone(),
            None => {
                let p = self.shared.pools.pool(
                    backend,
                    &self.database,
                    &auth.server_user,
                    auth.server_password.as_deref(),
                );
                self.pools[backend] = Some(p.clone());
                p
            }
        };
        let conn = checkout(
            &self.shared,
            &pool,
            backend,
            &self.database,
            &auth.server_user,
        )
        .await?;
        self.conns[backend] = Some(conn);
        Ok(())
    }
}
