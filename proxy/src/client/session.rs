//! One client session: startup, authentication, then the relay loop.
//!
//! A session is its [`Phase`] (what it is doing, and the server connection
//! if it holds one) and its [`Client`] (the client's socket and buffers,
//! and everything that outlives a phase: settings, prepared statements,
//! read-your-writes state). Client frames are read into `Client::rbuf`,
//! routed a request at a time (`route.rs`), sent on the attached server
//! (`relay.rs`), and the server's replies come back (`response.rs`).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use pgsplit_protocol::frame::missing_bytes;
use pgsplit_protocol::{Direction, TransactionStatus};
use pgsplit_router::ryw::{Mode, Ryw};
use tokio::sync::OwnedSemaphorePermit;

use super::large::streamable;
use super::ledger::{Event, SegmentMeta};
use super::phase::{Attachment, Phase, DECIDE_LIMIT};
use super::socket::ClientStream;
use super::state::SessionState;
use crate::backend::pool::{ConnPool, PooledConn};
use crate::backend::BackendError;
use crate::budget::{Share, FREE};
use crate::cancel::CancelKey;
use crate::errors::{Loss, SessionError};
use crate::io::READ_CHUNK;
use crate::lifecycle::State;
use crate::shared::{LagLimit, Shared};
use crate::topology::BackendId;

pub(super) struct Session {
    pub phase: Phase,
    pub c: Client,
}

/// The client side of a session, and what outlives its phases.
pub(super) struct Client {
    pub shared: Arc<Shared>,
    /// Where a shutdown reaches this session. Declared before `stream`,
    /// so it leaves the registry before the socket closes: the registry
    /// may shut the socket's descriptor down.
    pub lifecycle: crate::lifecycle::Listener,
    /// The client's address, on every log line about this session.
    pub peer: Peer,
    pub stream: ClientStream,
    /// Client bytes not yet sent on (partial frames, or frames waiting for
    /// a routing decision).
    pub rbuf: BytesMut,
    /// Messages pgsplit writes to the client itself.
    pub wbuf: BytesMut,
    /// In session pooling, the session's own server connections, by
    /// backend index, while it is not attached to them.
    pub conns: Vec<Option<PooledConn>>,
    /// This session's pools, looked up once per backend.
    pub pools: Vec<Option<ConnPool>>,
    pub session_pooling: bool,
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
    /// The classification routing made of the Query it routed, so sending
    /// it does not classify it again.
    pub decided_query: Option<Arc<pgsplit_router::Analysis>>,
    pub user: String,
    /// What this session logs in to servers as.
    pub login: Arc<crate::login::Login>,
    /// The primary connection the session's last writes ran on, held for
    /// it in the pool (transaction pooling): where its `nextval()` state
    /// lives, for a later `currval()` / `lastval()`.
    pub last_primary: Option<(BackendId, crate::backend::pool::Held)>,
    /// Unique among the process's sessions: whose sequence state a server
    /// connection holds.
    pub session_id: u64,
    /// When the last write of any session of this user and database
    /// committed (`read_your_writes = "user"`).
    pub peer_writes: Arc<std::sync::atomic::AtomicU64>,
    pub database: String,
    /// Read-your-writes mode in force, and the one `RESET` returns to.
    pub ryw_mode: Mode,
    pub default_ryw_mode: Mode,
    /// What this session wrote, for its reads.
    pub ryw: Ryw,
    /// How far behind a standby may be for this session's reads.
    pub lag_limit: LagLimit,
    /// A write was refused as read-only by this server, believed primary:
    /// the next write waits for its fresh health check first.
    pub recheck: Option<BackendId>,
    pub cancel_key: CancelKey,
    /// The buffer attachments keep frames for a retry in, between them.
    pub spare_frames: BytesMut,
    /// What `rbuf` takes from the budget shared by all sessions.
    pub buffer_share: Share,
    /// Bytes of a large CopyData message still to pass through unframed
    /// (`stream.rs`); while not zero, `rbuf` holds only its bytes.
    pub streaming: usize,
    pub _permit: OwnedSemaphorePermit,
}

/// A client's address as log lines show it (`-` when unknown).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub Option<std::net::SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// What woke a session waiting for input.
enum Input<C, S> {
    Client(C),
    Server(S),
}

pub(super) enum Flow {
    Continue,
    Terminate,
}

impl Session {
    pub(super) async fn run(&mut self) -> Result<(), SessionError> {
        loop {
            match self.pump().await {
                Ok(Flow::Terminate) | Err(SessionError::ClientGone) => return Ok(()),
                Ok(Flow::Continue) => {}
                Err(e) => return Err(e),
            }
            match self.flush().await {
                Err(SessionError::ServerLost { why, loss }) => {
                    self.lose_server(&why, loss)?;
                    continue;
                }
                r => r?,
            }
            if !self.wait_for_input().await? {
                return Ok(());
            }
        }
    }

    /// Waits for the client or the attached server to send something, and
    /// handles what the server sent. False: the client is gone.
    async fn wait_for_input(&mut self) -> Result<bool, SessionError> {
        let max = self.c.shared.config.limits.max_message_size;
        // An aborted transaction answers a message only once it is whole.
        let passes_large = !self.phase.is_aborted();
        let c = &mut self.c;
        // While a request waits for the attached server to finish, stop
        // reading a client that keeps sending, so memory stays bounded.
        // Between transactions, holding a server only if pinned to it.
        let between = match &self.phase {
            Phase::Idle { .. } => true,
            Phase::Attached(a) => !a.open_request && a.conn.owes_nothing(),
            _ => false,
        } && c.tx == TransactionStatus::Idle
            && c.state.deferred_begin.is_none();
        let (client_open, server) = match &mut self.phase {
            Phase::Attached(a) => (
                a.open_request || c.rbuf.len() < DECIDE_LIMIT,
                Some(&mut *a.conn),
            ),
            _ => (true, None),
        };
        if client_open {
            c.cover_read(max, passes_large)?;
        }
        let busy = server.as_ref().is_some_and(|s| !s.owes_nothing());
        let idle = idle_limit(&c.shared.config.timeouts, c.tx, busy);
        let server_read = async {
            match server {
                Some(s) => Some(s.read_more(max).await),
                None => std::future::pending().await,
            }
        };
        // Two selects rather than one with a timer branch that is off: an
        // idle timeout costs nothing per wait unless it is configured.
        // Between transactions the client's branch also watches for the
        // shutdown, which ends such sessions: a select branch of its own
        // cost every wait more than the rest of the select. Once closing,
        // the registry shuts every client socket's reading side, which
        // ends the other waits (below).
        let input = {
            let lifecycle = &c.lifecycle;
            let mut fill = std::pin::pin!(c.stream.fill(&mut c.rbuf, Direction::Frontend, max));
            let client_read = std::future::poll_fn(|cx| {
                if between && lifecycle.poll_ends(cx) {
                    return std::task::Poll::Ready(None);
                }
                std::future::Future::poll(fill.as_mut(), cx).map(Some)
            });
            match idle {
                None => tokio::select! {
                    r = client_read, if client_open => Input::Client(r),
                    Some(r) = server_read => Input::Server(r),
                },
                Some((limit, in_transaction)) => tokio::select! {
                    r = client_read, if client_open => Input::Client(r),
                    Some(r) = server_read => Input::Server(r),
                    _ = tokio::time::sleep(limit), if client_open => {
                        return Err(if in_transaction {
                            SessionError::IdleInTransaction(limit)
                        } else {
                            SessionError::IdleSession(limit)
                        });
                    }
                },
            }
        };
        let r = match input {
            Input::Client(None) => return Err(self.c.shutdown_error(false)),
            // The shutdown shut the socket's reading side: not the client
            // leaving. What it had sent before is not run.
            Input::Client(Some(_)) if self.c.lifecycle.state() == State::Closing => {
                return Err(self.c.shutdown_error(busy));
            }
            Input::Client(Some(r)) => return Ok(r?),
            Input::Server(r) => r,
        };
        let lost = match r {
            Ok(true) => None,
            Ok(false) => Some("it closed the connection".to_owned()),
            Err(e) => Some(match self.phase.attachment() {
                Some(a) => a.conn.read_error(e).to_string(),
                None => e.to_string(),
            }),
        };
        let result = match lost {
            Some(why) => Err(SessionError::ServerLost {
                why,
                loss: Loss::Gone,
            }),
            None => self.on_server_data().await,
        };
        match result {
            Err(SessionError::ServerLost { why, loss }) => self.lose_server(&why, loss)?,
            r => r?,
        }
        Ok(true)
    }

    /// Writes what pgsplit itself has for the client, then queued requests.
    pub(super) async fn flush(&mut self) -> Result<(), SessionError> {
        if !self.c.wbuf.is_empty() {
            self.c.stream.send(&self.c.wbuf).await?;
            self.c.wbuf.clear();
        }
        if let Phase::Attached(a) = &mut self.phase {
            if let Err(e) = a.conn.flush().await {
                return Err(SessionError::ServerLost {
                    why: e.to_string(),
                    loss: Loss::Gone,
                });
            }
        }
        Ok(())
    }

    /// Lets go of the attached server once it owes nothing and no
    /// transaction is open: the next request is routed afresh.
    pub(super) fn release_if_done(&mut self) {
        let Phase::Attached(a) = &self.phase else {
            return;
        };
        let done = a.conn.owes_nothing()
            && !a.open_request
            && self.c.tx == TransactionStatus::Idle
            && self.c.state.pinned.is_none()
            && self.c.state.deferred_begin.is_none();
        if done {
            if let Phase::Attached(a) = std::mem::replace(&mut self.phase, Phase::IDLE) {
                self.c.detach(a);
            }
        }
    }

    /// Gives every held connection back: reset when the session left state
    /// on it, closed when it cannot be made clean (mid-transaction, mid-COPY,
    /// replies still owed: closing makes the server roll back).
    pub(super) async fn close(mut self) {
        self.c.cancel_key.set_target(None);
        let mut reset = self.c.session_pooling || self.c.state.pinned.is_some();
        if let Phase::Attached(a) = std::mem::replace(&mut self.phase, Phase::IDLE) {
            // Extended messages without their Sync: the server holds an
            // implicit transaction that must not be committed by whoever
            // sends the next Sync. Closing it makes the server roll back.
            if a.open_request || a.discard_on_release {
                PooledConn::take(a.conn).terminate().await;
            } else {
                let backend = a.backend;
                self.c.conns[backend.index()] = Some(a.conn);
            }
        }
        for slot in self.c.conns.iter_mut() {
            let Some(conn) = slot.take() else {
                continue;
            };
            reset |= !conn.is_clean();
            settle(conn, reset).await;
        }
    }
}

impl Client {
    /// What a session ended by the shutdown tells its client: nothing
    /// ran, or its transaction or request (`in_flight`: the server was
    /// still working on it) was cut.
    pub(super) fn shutdown_error(&self, in_flight: bool) -> SessionError {
        let idle = self.tx == TransactionStatus::Idle && self.state.deferred_begin.is_none();
        let timeout = self.shared.config.timeouts.shutdown_timeout;
        SessionError::AdminShutdown {
            cut: (!idle || in_flight).then_some(timeout),
            in_flight,
        }
    }

    /// Before reading more from the client: the buffer may grow to hold the
    /// message it is waiting for, which must fit in the budget all sessions
    /// share. Once it holds only ordinary messages again, the memory of a
    /// large one is given back. A message passed on as it comes (when
    /// `passes_large`) needs only what is buffered of it.
    fn cover_read(&mut self, max: usize, passes_large: bool) -> Result<(), SessionError> {
        // Between requests the buffer is empty and holds nothing: done.
        // While streaming, it is passed on as it comes, a chunk at a time.
        if (self.rbuf.len() < 5 && self.buffer_share.held() == 0) || self.streaming > 0 {
            return Ok(());
        }
        let pending = if passes_large && streamable(&self.rbuf, max) {
            0
        } else {
            missing_bytes(&self.rbuf, Direction::Frontend, max)?
        };
        let need = self.rbuf.len() + pending.max(READ_CHUNK);
        if need <= FREE {
            if self.buffer_share.held() > 0 {
                self.buffer_share.cover(0);
                if self.rbuf.capacity() > 4 * FREE {
                    let mut fresh = BytesMut::with_capacity(READ_CHUNK);
                    fresh.extend_from_slice(&self.rbuf);
                    self.rbuf = fresh;
                }
            }
            return Ok(());
        }
        if self.buffer_share.cover(need) {
            return Ok(());
        }
        let budget = &self.shared.buffers;
        Err(SessionError::BufferBudget {
            need,
            limit: budget.limit(),
            used: budget.used(),
        })
    }

    /// Ends an attachment between requests: its connection goes back to
    /// the pool (or to the session's own, in session pooling), or is
    /// closed if it carries state nobody else may inherit.
    pub(super) fn detach(&mut self, a: Attachment) {
        self.cancel_key.set_target(None);
        let Attachment {
            backend,
            conn,
            retry,
            discard_on_release,
            ..
        } = a;
        self.spare_frames = retry.into_buffer();
        if discard_on_release {
            PooledConn::discard(conn);
        } else if self.session_pooling {
            self.conns[backend.index()] = Some(conn);
        } else if conn.sequences_owner() == self.session_id {
            // Only this session's writes ran here since its sequence state
            // was cleared (a read of its own changes nothing).
            self.last_primary = Some((backend, PooledConn::hold(conn)));
        }
    }
}

/// The idle timeout that applies while the session waits for its client,
/// and whether it is the one for a client inside a transaction; None when
/// it is off or a server is still working for the client (`busy`).
fn idle_limit(
    t: &pgsplit_config::Timeouts,
    tx: TransactionStatus,
    busy: bool,
) -> Option<(std::time::Duration, bool)> {
    if busy {
        return None;
    }
    let in_transaction = tx != TransactionStatus::Idle;
    let limit = if in_transaction {
        t.idle_transaction_timeout
    } else {
        t.client_idle_timeout
    };
    (!limit.is_zero()).then_some((limit, in_transaction))
}

/// Brings a connection the session is done with back to a clean state
/// (`reset`: DISCARD ALL), or closes it if that does not work quickly.
async fn settle(mut conn: PooledConn, mut reset: bool) {
    let patience = std::time::Duration::from_millis(500);
    if !conn.is_clean() {
        // The client left with replies owed or a transaction open: let the
        // server finish and roll back. A server that does not get there
        // quickly (waiting for COPY data, running a long query) is closed,
        // which rolls back.
        let settled = tokio::time::timeout(patience, async {
            conn.drain().await?;
            if conn.tx() != TransactionStatus::Idle {
                conn.exchange("ROLLBACK").await?.ok();
            }
            Ok::<_, BackendError>(())
        })
        .await;
        if !matches!(settled, Ok(Ok(()))) || !conn.is_clean() {
            tracing::debug!(backend = %conn.backend_name(), "closing a server connection left mid-request");
            PooledConn::take(conn).terminate().await;
            return;
        }
        reset = true;
    }
    if reset {
        let cleaned = tokio::time::timeout(patience, conn.exchange("DISCARD ALL")).await;
        if !matches!(cleaned, Ok(Ok(Ok(_)))) {
            PooledConn::take(conn).terminate().await;
            return;
        }
        conn.forget_session_state();
    }
}
