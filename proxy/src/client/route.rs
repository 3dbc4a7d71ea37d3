//! Where the next request goes, and the phase changes that makes.
//!
//! A request is one simple Query, or extended-protocol messages up to Sync
//! (or Flush, when the client waits for results before syncing). What it
//! is comes from `decide.rs`; the rules are pure functions in
//! `pgsplit_router::plan`. This file applies them: it attaches a server
//! (`route_idle`), lets a request join the attached one (`route_attached`),
//! or refuses it (`reject`).

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use pgsplit_protocol::encode::{self, ErrorInfo};
use pgsplit_protocol::frame::Frames;
use pgsplit_protocol::tag::frontend as fe;
use pgsplit_protocol::{split_frame, Direction, TransactionStatus};
use pgsplit_router::plan::{join, Join, Plan, ReadNeed};
use pgsplit_router::topology::Role;

use super::large::large_start;
use super::phase::{Phase, Purpose};
use super::session::{Client, Flow, Session};
use crate::errors::{Loss, SessionError};
use crate::lifecycle::State;

impl Session {
    /// Sends buffered client frames on, routing each new request.
    pub(super) async fn pump(&mut self) -> Result<Flow, SessionError> {
        let max = self.c.shared.config.limits.max_message_size;
        loop {
            if self.c.streaming > 0 || self.c.rbuf.first() == Some(&fe::COPY_DATA) {
                self.pass_through(max);
                if self.c.streaming > 0 {
                    return Ok(Flow::Continue);
                }
            }
            match &mut self.phase {
                Phase::Rejecting { then_aborted } => {
                    let then_aborted = *then_aborted;
                    let Some(frame) = split_frame(&mut self.c.rbuf, Direction::Frontend, max)?
                    else {
                        // A large message of the refused request: dropped
                        // as it comes.
                        if let Some(large) = large_start(&self.c.rbuf, max) {
                            self.c.streaming = large.total;
                            continue;
                        }
                        return Ok(Flow::Continue);
                    };
                    match frame.tag() {
                        fe::SYNC => self.end_rejecting(then_aborted),
                        fe::TERMINATE => return Ok(Flow::Terminate),
                        _ => {}
                    }
                }
                Phase::Attached(a) if a.open_request => {
                    let Some(frame) = split_frame(&mut self.c.rbuf, Direction::Frontend, max)?
                    else {
                        if self.c.start_large(a, max) {
                            continue;
                        }
                        return Ok(Flow::Continue);
                    };
                    a.retry.keep(frame.as_bytes());
                    if let Flow::Terminate = self.c.send_frame(a, frame)? {
                        return Ok(Flow::Terminate);
                    }
                }
                _ => {
                    if !self.route_next().await? {
                        return Ok(Flow::Continue);
                    }
                }
            }
        }
    }

    /// The refused request's Sync has come: it is answered, and the
    /// session goes on (as an aborted transaction if its server was lost).
    fn end_rejecting(&mut self, then_aborted: bool) {
        self.phase = if then_aborted {
            Phase::Aborted { reason: None }
        } else {
            Phase::IDLE
        };
        encode::ready_for_query(&mut self.c.wbuf, self.c.tx);
    }

    /// Starts the next request. Returns false when it must wait: for more
    /// bytes, or for the attached server to finish before it may start.
    async fn route_next(&mut self) -> Result<bool, SessionError> {
        let max = self.c.shared.config.limits.max_message_size;
        let aborted = self.phase.is_aborted();
        let (tag, local) = match Frames::new(&self.c.rbuf, Direction::Frontend, max).next() {
            // A large Query or Bind is routed by its start (`decide`).
            None => match large_start(&self.c.rbuf, max) {
                Some(large) if !aborted && large.tag != fe::COPY_DATA => (large.tag, false),
                _ => return Ok(false),
            },
            Some(Err(e)) => return Err(e.into()),
            Some(Ok((tag, body))) => (tag, self.c.front_is_local(tag, body, aborted)),
        };
        match tag {
            // COPY data belongs to the COPY running on the attached server.
            // Sent as it comes, without opening a request, so whatever
            // follows the COPY is routed (and checked) again. The rest of
            // a COPY whose server was lost has nowhere to go: dropped.
            fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL => {
                let Some(frame) = split_frame(&mut self.c.rbuf, Direction::Frontend, max)? else {
                    return Ok(false);
                };
                if let Phase::Attached(a) = &mut self.phase {
                    a.retry.keep(frame.as_bytes());
                    self.c.send_frame(a, frame)?;
                }
                Ok(true)
            }
            // Goodbye needs no server and opens no request.
            fe::TERMINATE => Err(SessionError::ClientGone),
            _ if local => {
                if let Phase::Attached(a) = &self.phase {
                    if !a.conn.owes_nothing() {
                        return Ok(false);
                    }
                }
                self.answer_locally().await
            }
            _ if matches!(self.phase, Phase::Attached(_)) => self.route_attached(),
            _ => self.route_idle().await,
        }
    }

    /// Routes a request while nothing is attached: a server is attached
    /// for it, or pgsplit answers it, or it is refused.
    async fn route_idle(&mut self) -> Result<bool, SessionError> {
        let retrying = match self.phase {
            Phase::Idle { retrying } => retrying,
            _ => None,
        };
        let plan = match self.c.decide()? {
            Plan::NeedMore => return Ok(false),
            Plan::DeferBegin => {
                self.c.defer_begin()?;
                return Ok(true);
            }
            Plan::AnswerPrepare => {
                self.c.prepare_locally()?;
                return Ok(true);
            }
            plan => plan,
        };
        let mut limit = self.c.shared.config.timeouts.query_wait_timeout;
        if self.c.lifecycle.state() != State::Running {
            limit = self.c.wait_out_pause(limit).await?;
        }
        if plan.may_write() {
            self.c.ryw.write_sent();
        }
        let c = &mut self.c;
        let attached = match plan {
            Plan::Read(weight) => Within::new(limit, pin!(c.attach_read(weight, retrying))).await,
            _ => Within::new(limit, pin!(c.attach_primary(Purpose::Write, retrying))).await,
        }
        .ok_or(SessionError::QueryWaitTimeout(limit))?;
        match attached {
            Ok(mut a) => {
                a.open_request = true;
                self.phase = Phase::Attached(a);
            }
            Err(info) => self.reject(info)?,
        }
        Ok(true)
    }

    /// A request while a server is attached: inside a transaction or a
    /// pinned session it follows on that server. Between requests with
    /// replies still owed (a pipeline), a write may join on the primary
    /// and a read on a replica that meets its need; anything else waits
    /// until the server is released and is routed afresh.
    fn route_attached(&mut self) -> Result<bool, SessionError> {
        let Phase::Attached(a) = &self.phase else {
            return Ok(false);
        };
        let backend = a.backend;
        let primary = self.c.shared.primary();
        if self.c.tx != TransactionStatus::Idle || self.c.state.pinned.is_some() {
            if self.c.shared.topology.backends[backend].node.role() == Role::StalePrimary {
                // Fenced since this transaction began: nothing more may
                // commit there.
                self.lose_server("it was fenced as a stale primary", Loss::Gone)?;
                return Ok(true);
            }
            self.c.decided_query = None;
            if Some(backend) == primary {
                self.c.ryw.write_sent();
            }
            return Ok(self.open_request_on_attached(None));
        }
        let plan = self.c.decide()?;
        let need = match plan {
            Plan::Read(_) => self.c.read_need(),
            _ => ReadNeed::Primary,
        };
        let c = &self.c;
        let joined = join(
            plan,
            || need,
            Some(backend) == primary,
            |need| c.replica_meets(backend, need),
        );
        match joined {
            Join::AsWrite => {
                self.c.count(backend, false);
                if let Phase::Attached(a) = &mut self.phase {
                    a.conn.own_sequences(self.c.session_id);
                }
                if plan.may_write() {
                    self.c.ryw.write_sent();
                }
                // A write joins: a failure may no longer be retried as if
                // only reads were in flight.
                Ok(self.open_request_on_attached(Some(Purpose::Write)))
            }
            Join::AsRead => {
                self.c.count(backend, true);
                Ok(self.open_request_on_attached(None))
            }
            Join::Wait => Ok(false),
        }
    }

    /// The request at the front follows on the attached server, now for
    /// `purpose` if given.
    fn open_request_on_attached(&mut self, purpose: Option<Purpose>) -> bool {
        let Phase::Attached(a) = &mut self.phase else {
            return false;
        };
        if let Some(p) = purpose {
            a.purpose = p;
        }
        a.open_request = true;
        true
    }

    /// Refuses the request at the front of the buffer with `info`.
    pub(super) fn reject(&mut self, info: ErrorInfo) -> Result<(), SessionError> {
        tracing::warn!(client = %self.c.peer, code = %info.code, message = %info.message, "request refused");
        encode::error_response(&mut self.c.wbuf, &info);
        self.c.decided_query = None;
        // A Query or FunctionCall ends with its own ReadyForQuery; extended
        // messages are dropped up to their Sync.
        if matches!(self.c.rbuf.first(), Some(&(fe::QUERY | fe::FUNCTION_CALL))) {
            let max = self.c.shared.config.limits.max_message_size;
            split_frame(&mut self.c.rbuf, Direction::Frontend, max)?;
            encode::ready_for_query(&mut self.c.wbuf, self.c.tx);
            self.phase = Phase::IDLE;
        } else {
            self.phase = Phase::Rejecting {
                then_aborted: false,
            };
        }
        Ok(())
    }
}

impl Client {
    /// Before a request takes a server while the proxy is not simply
    /// running: waits out a pause (within `limit`, the request's
    /// `query_wait_timeout`, of which the rest is returned), and refuses
    /// the request of a session the shutdown ends, which never ran it.
    async fn wait_out_pause(&mut self, limit: Duration) -> Result<Duration, SessionError> {
        let started = tokio::time::Instant::now();
        let lifecycle = std::sync::Arc::clone(&self.shared.lifecycle);
        let state = if limit.is_zero() {
            lifecycle.unpaused().await
        } else {
            tokio::time::timeout(limit, lifecycle.unpaused())
                .await
                .map_err(|_| SessionError::QueryWaitTimeout(limit))?
        };
        let idle = self.tx == TransactionStatus::Idle && self.state.deferred_begin.is_none();
        if state.ends_session(idle) {
            return Err(self.shutdown_error(false));
        }
        Ok(if limit.is_zero() {
            limit
        } else {
            // Never zero, which would mean no limit.
            limit
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1))
        })
    }
}

/// `f`'s output, or None if it takes longer than `limit` (zero: no
/// limit). The timer is made only when `f` has to wait: most requests get
/// a server at their first poll, and a timer for each would cost every
/// request a clock read.
struct Within<'a, F> {
    f: Pin<&'a mut F>,
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<'a, F> Within<'a, F> {
    fn new(limit: Duration, f: Pin<&'a mut F>) -> Self {
        Within {
            f,
            limit,
            timer: None,
        }
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(out) = self.f.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if self.limit.is_zero() {
            return Poll::Pending;
        }
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
