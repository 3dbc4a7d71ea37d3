//! One client session: startup, authentication, then the relay loop.
//!
//! The session reads client frames into its own buffer and sends them to
//! the server connection that holds its current work (`active`). Between
//! requests, outside a transaction, nothing is active: the next request is
//! classified and routed (see `route.rs`). Server replies are accounted for
//! per request (`ResponseTracker`), which says when the connection is quiet
//! again and lets pgsplit inject requests of its own (see `relay.rs`).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use pgsplit_protocol::{encode, Direction, TransactionStatus};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::relay::SegmentMeta;
use super::response::Event;
use super::startup::establish;
use super::state::SessionState;
use crate::backend::pool::{ConnPool, PoolError, PooledConn};
use crate::backend::BackendError;
use crate::cancel::{CancelKey, CancelTarget};
use crate::errors::{Reply, SessionError};
use crate::io::fill;
use crate::shared::Shared;

pub(super) struct Session {
    pub shared: Arc<Shared>,
    pub client: TcpStream,
    /// Client bytes not yet sent on (partial frames, or frames waiting for
    /// a routing decision).
    pub rbuf: BytesMut,
    /// Messages pgsplit writes to the client itself.
    pub wbuf: BytesMut,
    /// Server connections this session holds, by backend index: while a
    /// request or transaction runs (transaction pooling), or for the whole
    /// session (session pooling, or pinned).
    pub conns: Vec<Option<PooledConn>>,
    /// This session's pools, looked up once per backend.
    pub pools: Vec<Option<ConnPool>>,
    pub session_pooling: bool,
    /// The backend holding this session's in-flight work or transaction.
    pub active: Option<usize>,
    /// A request has been routed and its terminating Sync/Query is not sent
    /// yet: its remaining frames follow it.
    pub open_segment: bool,
    /// Dropping frames up to the next Sync after refusing a request.
    pub rejecting: bool,
    /// Transaction status as the client last saw it.
    pub tx: TransactionStatus,
    pub state: SessionState,
    /// Per forwarded Sync/Query: settings changes to record when it ends.
    pub segments: VecDeque<Option<Box<SegmentMeta>>>,
    /// The extended-protocol request being sent (flushed at its Sync).
    pub current_meta: Option<Box<SegmentMeta>>,
    /// Settings changed inside the open transaction: kept only if it commits.
    pub tx_meta: Vec<SegmentMeta>,
    pub segment_failed: bool,
    pub last_command_tag: Option<String>,
    pub events: Vec<Event>,
    /// The classification `decide` made of the Query it routed, so sending
    /// it does not classify it again.
    pub decided_query: Option<Arc<pgsplit_router::Analysis>>,
    pub user: String,
    pub database: String,
    /// Read-your-writes mode in force, and the one `RESET` returns to.
    pub ryw: pgsplit_config::ReadYourWrites,
    pub default_ryw: pgsplit_config::ReadYourWrites,
    /// A commit position at or after this session's last write (0: none).
    pub write_lsn: u64,
    /// When the last write committed ([`Shared::now_us`]) while its
    /// position is not known yet (0: known). Reads go to the primary until
    /// a health check sent after it reads the primary's position.
    pub write_at_us: u64,
    /// Something may have been written since the last commit.
    pub wrote: bool,
    pub last_write: Option<std::time::Instant>,
    pub ever_wrote: bool,
    /// The replay position the current read needs (for retries elsewhere).
    pub read_min_lsn: u64,
    /// State that pins was created on a replica connection: close it when
    /// it is released instead of returning it to the pool.
    pub discard_on_release: bool,
    pub cancel_key: CancelKey,
    /// The deferred BEGIN sent with the current attachment: restored if
    /// its first request is retried elsewhere.
    pub retry_begin: Option<String>,
    /// How far behind a standby may be for this session's reads.
    pub lag_limit: crate::shared::LagLimit,
    /// Client frames sent on the active connection since it was attached,
    /// kept while nothing has been returned for them: such requests can be
    /// sent again elsewhere if the server is lost (reads) or turns out to
    /// be a demoted primary (writes it refused).
    pub replay: BytesMut,
    pub replayable: bool,
    /// The current request has been retried once already...
    pub retried: bool,
    /// ... because this server failed it: not to be picked again for it,
    /// whatever a racing health check says.
    pub avoid: Option<usize>,
    /// The active connection was attached for a read.
    pub attached_read: bool,
    /// ... or to write on the server that was primary at the time.
    pub attached_write: bool,
    /// A write was refused as read-only by this server, believed primary:
    /// the next write waits for its fresh health check first.
    pub recheck: Option<usize>,
    /// The server of the open transaction was lost: requests are answered
    /// as in an aborted transaction until the client ends it.
    pub failed_tx: bool,
    /// Why, for the first statement that hears of it.
    pub lost_reason: Option<pgsplit_protocol::encode::ErrorInfo>,
    _permit: OwnedSemaphorePermit,
}

pub(super) enum Flow {
    Continue,
    Terminate,
}

/// Serves one client connection to the end. Never panics on client input;
/// every failure ends with an ErrorResponse where the client can still read it.
pub async fn serve_client(mut client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let mut rbuf = BytesMut::with_capacity(1024);
    let opened = tokio::time::timeout(
        shared.config.timeouts.client_startup,
        establish(&mut client, &mut rbuf, &shared),
    )
    .await
    .unwrap_or(Err(SessionError::StartupTimeout));
    let e = match opened {
        Ok(Some(e)) => e,
        Ok(None) => return,
        Err(e) => {
            log_end(&e);
            report(&mut client, &e).await;
            return;
        }
    };
    let backends = shared.backends.len();
    let startup_conn = e.conn;
    let mut session = Session {
        retry_begin: None,
        lag_limit: crate::shared::LagLimit::from_config(&shared.config.health),
        replay: BytesMut::new(),
        replayable: false,
        retried: false,
        avoid: None,
        attached_read: false,
        attached_write: false,
        recheck: None,
        failed_tx: false,
        lost_reason: None,
        conns: (0..backends).map(|_| None).collect(),
        pools: (0..backends).map(|_| None).collect(),
        session_pooling: shared.config.pool.mode == pgsplit_config::PoolMode::Session,
        shared,
        client,
        rbuf,
        wbuf: BytesMut::new(),
        active: None,
        open_segment: false,
        rejecting: false,
        tx: TransactionStatus::Idle,
        state: e.state,
        segments: VecDeque::new(),
        current_meta: None,
        tx_meta: Vec::new(),
        segment_failed: false,
        last_command_tag: None,
        events: Vec::new(),
        decided_query: None,
        ryw: e.ryw,
        default_ryw: e.ryw,
        write_lsn: 0,
        wrote: false,
        write_at_us: 0,
        last_write: None,
        ever_wrote: false,
        read_min_lsn: 0,
        discard_on_release: false,
        user: e.user,
        database: e.database,
        cancel_key: e.cancel_key,
        _permit: e.permit,
    };
    if let Some((backend, pool)) = e.pool {
        session.pools[backend] = Some(pool);
        // In transaction pooling an idle client holds nothing: the
        // connection goes back to the pool now.
        if session.session_pooling {
            session.conns[backend] = startup_conn;
        } else {
            drop(startup_conn);
        }
    }
    let result = session.run().await;
    if let Err(e) = &result {
        log_end(e);
        report(&mut session.client, e).await;
    }
    session.close().await;
}

/// A connection from `pool`, waiting at most `pool.checkout_timeout`.
pub(super) async fn checkout(
    shared: &Shared,
    pool: &ConnPool,
    backend: usize,
    database: &str,
    user: &str,
) -> Result<PooledConn, SessionError> {
    match pool.get().await {
        Ok(c) => Ok(c),
        Err(PoolError::Backend(e)) => Err(e.into()),
        Err(PoolError::Timeout) => Err(SessionError::PoolExhausted {
            backend: shared.backends[backend].name.clone(),
            database: database.to_owned(),
            user: user.to_owned(),
            size: shared.config.pool.pool_size,
            waited: shared.config.pool.checkout_timeout,
        }),
    }
}

impl Session {
    async fn run(&mut self) -> Result<(), SessionError> {
        let max = self.shared.config.limits.max_message_size;
        loop {
            match self.pump().await {
                Ok(Flow::Terminate) | Err(SessionError::ClientGone) => return Ok(()),
                Ok(Flow::Continue) => {}
                Err(e) => return Err(e),
            }
            match self.flush().await {
                Err(SessionError::ServerLost {
                    backend,
                    why,
                    read_only,
                }) => {
                    self.lose_server(backend, &why, read_only)?;
                    continue;
                }
                r => r?,
            }
            // While a request waits for the active server to finish, stop
            // reading a client that keeps sending, so memory stays bounded.
            let waiting = !self.open_segment && self.active.is_some();
            let client_open = !(waiting && self.rbuf.len() >= super::route::DECIDE_LIMIT);
            let active = self
                .active
                .and_then(|i| self.conns[i].as_mut())
                .map(|c| &mut **c);
            let server_read = async {
                match active {
                    Some(c) => {
                        Some(fill(&mut c.stream, &mut c.rbuf, Direction::Backend, max).await)
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = fill(&mut self.client, &mut self.rbuf, Direction::Frontend, max), if client_open => {
                    if !r? {
                        return Ok(());
                    }
                }
                Some(r) = server_read => {
                    let i = self.active.expect("a server read implies an active backend");
                    let conn = self.conns[i].as_mut().expect("active backend has a connection");
                    let lost = match r {
                        Ok(true) => None,
                        Ok(false) => Some("it closed the connection".to_owned()),
                        Err(e) => Some(conn.read_error(e).to_string()),
                    };
                    if let Some(why) = lost {
                        self.lose_server(i, &why, false)?;
                        continue;
                    }
                    match self.forward_server().await {
                        Err(SessionError::ServerLost { backend, why, read_only }) => {
                            self.lose_server(backend, &why, read_only)?;
                        }
                        r => r?,
                    }
                }
            }
        }
    }

    /// Writes what pgsplit itself has for the client, then queued requests.
    pub(super) async fn flush(&mut self) -> Result<(), SessionError> {
        if !self.wbuf.is_empty() {
            self.client.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        if let Some(i) = self.active {
            if let Some(c) = self.conns[i].as_mut() {
                if let Err(e) = c.flush().await {
                    return Err(SessionError::ServerLost {
                        backend: i,
                        why: e.to_string(),
                        read_only: false,
                    });
                }
            }
        }
        Ok(())
    }

    /// Lets go of the active backend once it owes nothing and no
    /// transaction is open: the next request is routed afresh.
    pub(super) fn maybe_release(&mut self) {
        let Some(i) = self.active else { return };
        let quiet = self.conns[i].as_ref().is_none_or(|c| c.tracker.is_idle());
        if quiet
            && !self.open_segment
            && self.tx == TransactionStatus::Idle
            && self.state.pinned.is_none()
            && self.state.deferred_begin.is_none()
        {
            self.active = None;
            self.shared.stats[i]
                .active
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            self.replay.clear();
            self.replayable = false;
            self.retried = false;
            self.avoid = None;
            self.retry_begin = None;
            if std::mem::take(&mut self.discard_on_release) {
                if let Some(c) = self.conns[i].take() {
                    PooledConn::discard(c);
                }
            } else if !self.session_pooling {
                // Clean (checked above): back to the pool for anyone.
                self.conns[i] = None;
            }
            self.cancel_key.set_target(None);
        }
    }

    pub(super) fn set_cancel_target(&self, backend: usize) {
        if let Some(c) = &self.conns[backend] {
            self.cancel_key.set_target(Some(CancelTarget {
                addr: c.addr,
                server_pid: c.pid,
                server_secret: c.secret,
            }));
        }
    }

    /// Gives every held connection back: reset when the session left state
    /// on it, closed when it cannot be made clean (mid-transaction, mid-COPY,
    /// replies still owed: closing makes the server roll back).
    async fn close(mut self) {
        let was_active = self.active;
        self.cancel_key.set_target(None);
        if let Some(i) = self.active.take() {
            self.shared.stats[i]
                .active
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut reset = self.session_pooling || self.state.pinned.is_some();
        let patience = std::time::Duration::from_millis(500);
        let abandoned = was_active.filter(|_| self.open_segment);
        for (i, slot) in self.conns.iter_mut().enumerate() {
            let Some(mut conn) = slot.take() else {
                continue;
            };
            // Extended messages without their Sync: the server holds an
            // implicit transaction that must not be committed by whoever
            // sends the next Sync. Closing it makes the server roll back.
            if abandoned == Some(i) || (self.discard_on_release && was_active == Some(i)) {
                PooledConn::take(conn).terminate().await;
                continue;
            }
            if !conn.is_clean() {
                // The client left with replies owed or a transaction open:
                // let the server finish, roll back, then reset below. A
                // server that does not get there quickly (waiting for COPY
                // data, running a long query) is closed, which rolls back.
                let settled = tokio::time::timeout(patience, async {
                    conn.drain().await?;
                    if conn.tx != TransactionStatus::Idle {
                        conn.exchange("ROLLBACK").await?.ok();
                    }
                    Ok::<_, BackendError>(())
                })
                .await;
                if !matches!(settled, Ok(Ok(()))) || !conn.is_clean() {
                    tracing::debug!(backend = %conn.backend.name, "closing a server connection left mid-request");
                    PooledConn::take(conn).terminate().await;
                    continue;
                }
                reset = true;
            }
            if reset {
                let cleaned = tokio::time::timeout(patience, conn.exchange("DISCARD ALL")).await;
                if !matches!(cleaned, Ok(Ok(Ok(_)))) {
                    PooledConn::take(conn).terminate().await;
                    continue;
                }
                conn.forget_session_state();
            }
        }
    }
}

async fn report(client: &mut TcpStream, e: &SessionError) {
    let mut out = BytesMut::new();
    match e.reply() {
        Reply::None => return,
        Reply::Error(info) => encode::error_response(&mut out, &info),
        Reply::Raw(frame) => out.extend_from_slice(frame.as_bytes()),
    }
    let _ = client.write_all(&out).await;
    let _ = client.shutdown().await;
}

fn log_end(e: &SessionError) {
    match e {
        SessionError::ClientIo(_) | SessionError::ClientTruncated => {
            tracing::debug!(error = %e, "client connection ended")
        }
        _ => tracing::warn!(error = %e, "session ended with an error"),
    }
}
