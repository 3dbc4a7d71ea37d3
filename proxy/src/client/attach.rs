//! Getting a server connection for a routed request: a reader (trying
//! another when one is unreachable, or waiting for one to catch up) or the
//! primary (waiting out a failover), brought up to date with the session's
//! settings and deferred BEGIN. Each returns the [`Attachment`] the session
//! enters its attached phase with.

use std::sync::atomic::Ordering;

use pgsplit_protocol::encode::{self, ErrorInfo};
use pgsplit_protocol::pipeline::Request;
use pgsplit_protocol::TransactionStatus;
use pgsplit_router::plan::{place_read, ReadNeed, ReadPlace, Weight};

use super::phase::{Attachment, Purpose, Retry};
use super::session::Client;
use crate::backend::pool::{ConnPool, PoolError, PooledConn};
use crate::cancel::CancelTarget;
use crate::errors::{self, SessionError};
use crate::shared::Shared;
use crate::topology::{BackendId, Claim};

impl Client {
    /// Attaches a server for a read: a replica that meets the session's
    /// read-your-writes need, else the primary, waiting for a replica to
    /// catch up if `routing.causal_wait` allows. `avoid`: the server that
    /// failed this request already.
    pub(super) async fn attach_read(
        &mut self,
        weight: Weight,
        avoid: Option<BackendId>,
    ) -> Result<Attachment, ErrorInfo> {
        let need = self.read_need();
        let causal_wait = !self.shared.config.routing.causal_wait.is_zero();
        let exclude = avoid.as_slice();
        let (shared, lag) = (&self.shared, self.lag_limit);
        let (place, min_lsn) =
            place_read(need, shared.primary(), causal_wait, |lsn| match weight {
                Weight::Runs => shared.pick_reader(exclude, lsn, lag),
                // Preparing takes no turn in the rotation: it goes where the
                // next read will.
                Weight::PrepareOnly => shared.peek_reader(exclude, lsn, lag),
            });
        let confirmable = weight == Weight::Runs
            && min_lsn != u64::MAX
            && self.shared.config.routing.confirm_replay;
        if confirmable && matches!(place, ReadPlace::Primary | ReadPlace::Wait) {
            if let Some(a) = self.confirm_replica(min_lsn, avoid).await {
                return Ok(a);
            }
        }
        match place {
            ReadPlace::Server(b) => self.attach_reader(b, min_lsn, avoid).await,
            ReadPlace::Primary => self.attach_primary(Purpose::Read { min_lsn }, avoid).await,
            ReadPlace::Wait => self.wait_for_replica(need, avoid).await,
            ReadPlace::Refuse => Err(errors::no_reader(self.shared.config.routing.primary_reads)),
        }
    }

    /// Waits up to `routing.causal_wait` for a replica to meet `need`
    /// (first for the position it names to be read, if it is not yet),
    /// then attaches it, or the primary.
    async fn wait_for_replica(
        &mut self,
        need: ReadNeed,
        avoid: Option<BackendId>,
    ) -> Result<Attachment, ErrorInfo> {
        self.shared.ryw.waits.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.shared.config.routing.causal_wait;
        let mut min_lsn = u64::MAX;
        let backend = loop {
            let picked = super::reads::min_lsn(need, &self.shared).and_then(|lsn| {
                min_lsn = lsn;
                self.shared
                    .pick_reader(avoid.as_slice(), lsn, self.lag_limit)
            });
            match picked {
                Some(b) if Some(b) != self.shared.primary() => break Some(b),
                _ if tokio::time::Instant::now() >= deadline => break None,
                _ => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
            }
        };
        match backend {
            Some(b) => self.attach_reader(b, min_lsn, avoid).await,
            None => self.attach_primary(Purpose::Read { min_lsn }, avoid).await,
        }
    }

    /// Attaches `backend` (or, if it cannot be reached, another reader)
    /// for a read that needs replay position `min_lsn`.
    async fn attach_reader(
        &mut self,
        mut backend: BackendId,
        min_lsn: u64,
        avoid: Option<BackendId>,
    ) -> Result<Attachment, ErrorInfo> {
        let mut tried: Vec<BackendId> = avoid.into_iter().collect();
        loop {
            match self.connection(backend).await {
                Ok(conn) => {
                    let claim = self.shared.topology.claim(backend);
                    let purpose = Purpose::Read { min_lsn };
                    return Ok(self.attachment(conn, claim, purpose, avoid.is_some()));
                }
                Err(SessionError::Backend(e)) if !e.is_transient() => {
                    return Err(errors::statement_error(&e));
                }
                Err(SessionError::Backend(e)) => {
                    self.shared.topology.mark_unreachable(backend);
                    self.shared.topology.suspect(backend);
                    // Nothing was sent yet, so another reader is a safe retry.
                    tracing::warn!(client = %self.peer, error = %e, "backend unreachable for a read; trying another");
                    tried.push(backend);
                    match self.shared.pick_reader(&tried, min_lsn, self.lag_limit) {
                        Some(next) => backend = next,
                        None => {
                            let refused =
                                errors::no_reader(self.shared.config.routing.primary_reads);
                            return Err(refused.detail(format!("Last attempt: {e}.")));
                        }
                    }
                }
                Err(e) => return Err(errors::pool_error(&e)),
            }
        }
    }

    /// Attaches the primary, waiting out a failover (no primary, or one
    /// that cannot be reached) for up to `health.failover_timeout`.
    pub(super) async fn attach_primary(
        &mut self,
        purpose: Purpose,
        avoid: Option<BackendId>,
    ) -> Result<Attachment, ErrorInfo> {
        let timeout = self.shared.config.health.failover_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_error = None;
        if let Some(attached) = self.attach_last_primary(purpose, avoid) {
            return Ok(attached);
        }
        if let Some(i) = self.recheck.take() {
            // It refused a write as read-only: wait for a fresh check to
            // say whether it was demoted (bounded by one check's timeout).
            self.shared
                .topology
                .await_check(i, self.shared.config.health.health_check_timeout)
                .await;
        }
        loop {
            let Some(p) = self.shared.topology.wait_for_primary(deadline).await else {
                return Err(errors::no_primary(timeout, last_error.as_deref()));
            };
            let conn = match self.connection(p).await {
                Ok(conn) => conn,
                Err(SessionError::Backend(e)) if !e.is_transient() => {
                    return Err(errors::statement_error(&e));
                }
                Err(SessionError::Backend(e)) => {
                    tracing::warn!(client = %self.peer, error = %e, "primary unreachable; waiting for it or a new one");
                    self.shared.topology.mark_unreachable(p);
                    self.shared.topology.suspect(p);
                    last_error = Some(e.to_string());
                    continue;
                }
                Err(e) => return Err(errors::pool_error(&e)),
            };
            // Claim, then check it is still the primary: a switchover
            // fences the primary first and then waits for its claims to
            // end, so one of the two always sees the other.
            let claim = self.shared.topology.claim(p);
            if self.shared.primary() != Some(p) {
                drop(claim);
                self.keep(p, conn);
                continue;
            }
            return Ok(self.attachment(conn, claim, purpose, avoid.is_some()));
        }
    }

    /// The primary connection the session's last writes ran on and that
    /// the pool kept for it (transaction pooling), so that `currval()` /
    /// `lastval()` see its `nextval()`s. `None` when another checkout took
    /// it (the pool was full): attach as usual, on a connection that holds
    /// no other session's sequences (`own_sequences`), where the server
    /// itself says "not yet defined in this session" if this request does
    /// not call `nextval()` first, never another's value.
    fn attach_last_primary(
        &mut self,
        purpose: Purpose,
        avoid: Option<BackendId>,
    ) -> Option<Attachment> {
        let primary = self.shared.primary()?;
        let (backend, held) = self.last_primary.take()?;
        if backend != primary || self.session_pooling || self.conns[primary.index()].is_some() {
            return None;
        }
        let mut conn = held.take_back()?;
        if conn.sequences_owner() != self.session_id || !conn.is_alive() {
            PooledConn::discard(conn);
            return None;
        }
        let claim = self.shared.topology.claim(primary);
        if self.shared.primary() != Some(primary) {
            return None;
        }
        Some(self.attachment(conn, claim, purpose, avoid.is_some()))
    }

    /// The attachment of `conn`, with the session's settings and deferred
    /// BEGIN queued ahead of the request.
    pub(super) fn attachment(
        &mut self,
        mut conn: PooledConn,
        claim: Claim,
        purpose: Purpose,
        retried: bool,
    ) -> Attachment {
        let backend = claim.backend();
        let primary = self.shared.primary();
        self.count(backend, !matches!(purpose, Purpose::Write));
        if let Purpose::Read { min_lsn } = purpose {
            let ryw = &self.shared.ryw;
            if Some(backend) != primary {
                ryw.replica_reads.fetch_add(1, Ordering::Relaxed);
            } else if min_lsn > 0 {
                ryw.kept_on_primary.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (addr, server_pid, server_secret) = conn.cancel_key();
        self.cancel_key.set_target(Some(CancelTarget {
            addr,
            server_pid,
            server_secret,
        }));
        if let Some(sql) = self.state.replay_sql(conn.settings()) {
            encode::query(conn.out(), &sql);
            conn.expect_replies(Request::UntilReady, false);
            conn.set_settings(self.state.fingerprint);
        }
        if purpose == Purpose::Write {
            conn.own_sequences(self.session_id);
        }
        let begin = self.state.deferred_begin.take();
        if let Some(begin) = &begin {
            encode::query(conn.out(), begin);
            conn.expect_replies(Request::UntilReady, false);
        }
        let retriable = !retried
            && self.state.pinned.is_none()
            && (self.tx == TransactionStatus::Idle || begin.is_some());
        Attachment {
            backend,
            conn,
            _claim: claim,
            purpose,
            open_request: false,
            retry: Retry::new(retriable, begin, std::mem::take(&mut self.spare_frames)),
            discard_on_release: false,
        }
    }

    /// A healthy connection to `backend`: the session's own (session
    /// pooling), or one from the pool.
    pub(super) async fn connection(
        &mut self,
        backend: BackendId,
    ) -> Result<PooledConn, SessionError> {
        if let Some(mut c) = self.conns[backend.index()].take() {
            if c.is_alive() {
                return Ok(c);
            }
            tracing::debug!(backend = %c.backend_name(), "held server connection was closed; replacing it");
            PooledConn::discard(c);
        }
        let pool = match &self.pools[backend.index()] {
            Some(p) => p.clone(),
            None => {
                let login = &self.login;
                let p = self.shared.pools.pool(
                    backend,
                    &self.database,
                    &login.server_user,
                    &login.credential,
                );
                self.pools[backend.index()] = Some(p.clone());
                p
            }
        };
        match pool.get().await {
            Ok(c) => Ok(c),
            Err(e) => {
                let user = &self.login.server_user;
                Err(checkout_error(
                    &self.shared,
                    backend,
                    &self.database,
                    user,
                    e,
                ))
            }
        }
    }

    /// A connection taken but not attached: kept by the session in
    /// session pooling, else back to the pool.
    pub(super) fn keep(&mut self, backend: BackendId, conn: PooledConn) {
        if self.session_pooling {
            self.conns[backend.index()] = Some(conn);
        }
    }
}

/// A connection from `pool`, waiting at most `pool.checkout_timeout`.
pub(super) async fn checkout(
    shared: &Shared,
    pool: &ConnPool,
    backend: BackendId,
    database: &str,
    user: &str,
) -> Result<PooledConn, SessionError> {
    pool.get()
        .await
        .map_err(|e| checkout_error(shared, backend, database, user, e))
}

/// Why no connection could be had from a pool, as the session reports it.
fn checkout_error(
    shared: &Shared,
    backend: BackendId,
    database: &str,
    user: &str,
    e: PoolError,
) -> SessionError {
    match e {
        PoolError::Backend(e) => e.into(),
        PoolError::Timeout => SessionError::PoolExhausted {
            backend: shared.topology.backends[backend].name().to_owned(),
            database: database.to_owned(),
            user: user.to_owned(),
            size: shared.config.pool.pool_size,
            waited: shared.config.pool.checkout_timeout,
        },
    }
}
