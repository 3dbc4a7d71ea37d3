//! What a session does when the server it is using goes away mid-request:
//! retry what is safe to retry, report the rest, and stay usable.

use std::sync::atomic::Ordering;

use pgsplit_protocol::encode;
use pgsplit_protocol::TransactionStatus;

use super::session::Session;
use crate::backend::pool::PooledConn;
use crate::errors::SessionError;

/// Bytes of client frames kept for a retry; a request bigger than this
/// (a large COPY) is not retried.
pub(super) const REPLAY_LIMIT: usize = 64 << 10;

impl Session {
    /// Keeps a copy of a frame sent on the active connection while its
    /// request can still be retried.
    pub(super) fn keep_for_replay(&mut self, frame: &[u8]) {
        if !self.replayable {
            return;
        }
        if self.replay.len() + frame.len() > REPLAY_LIMIT {
            self.replayable = false;
            self.replay.clear();
        } else {
            self.replay.extend_from_slice(frame);
        }
    }

    /// Nothing has reached the client for the current attachment's
    /// requests: they may be retried if the server fails them.
    pub(super) fn start_replay(&mut self) {
        self.replay.clear();
        self.replayable = !self.retried
            && self.state.pinned.is_none()
            && (self.tx == TransactionStatus::Idle || self.retry_begin.is_some());
    }

    /// Server `i` was lost (or, with `read_only`, refused a write because
    /// it is no longer the primary). A request that may be retried goes
    /// back to the front of the queue to be routed again: reads that had
    /// returned nothing, and writes a demoted primary refused (they did not
    /// run). Anything else gets an error; inside a transaction the session
    /// then answers as PostgreSQL does for an aborted transaction until the
    /// client ends it.
    pub(super) fn lose_server(
        &mut self,
        i: usize,
        why: &str,
        read_only: bool,
    ) -> Result<(), SessionError> {
        let name = self.shared.backends[i].name.clone();
        if read_only {
            tracing::warn!(backend = %name, "the primary refused a write as read-only: it was demoted; looking for the new primary");
        } else {
            tracing::warn!(backend = %name, reason = %why, "lost the server connection mid-request");
        }
        if read_only {
            // Maybe demoted, maybe refused for the client's own reasons
            // (a read-only setting): the health check tells which before
            // the write is tried again. Others keep using the server.
            self.recheck = Some(i);
        } else {
            self.shared.mark_unreachable(i);
        }
        self.shared.suspect(i);
        if let Some(c) = self.conns[i].take() {
            PooledConn::discard(c);
        }
        if self.active == Some(i) {
            self.active = None;
            self.shared.stats[i].active.fetch_sub(1, Ordering::SeqCst);
            self.cancel_key.set_target(None);
        }
        self.decided_query = None;
        self.current_meta = None;
        self.segment_failed = false;
        let retry = self.replayable && !self.retried && (self.attached_read || read_only);
        tracing::debug!(
            session = self.cancel_key.pid,
            replayable = self.replayable,
            retried = self.retried,
            attached_read = self.attached_read,
            kept = self.replay.len(),
            outstanding = self.segments.len(),
            open = self.open_segment,
            "deciding whether to retry"
        );
        self.replayable = false;
        if retry {
            tracing::info!(backend = %name, "retrying the request elsewhere: nothing of it had reached the client");
            self.retried = true;
            self.avoid = Some(i);
            let mut again = std::mem::take(&mut self.replay);
            again.extend_from_slice(&self.rbuf);
            self.rbuf = again;
            self.segments.clear();
            self.open_segment = false;
            if let Some(begin) = self.retry_begin.take() {
                self.state.deferred_begin = Some(begin);
            }
            return Ok(());
        }
        self.replay.clear();
        self.retry_begin = None;
        if self.state.pinned.is_some() {
            // Temporary tables, advisory locks, a role... were on that
            // connection and cannot be rebuilt elsewhere: going on without
            // them would be silently wrong, so the session ends.
            return Err(SessionError::Backend(
                crate::backend::BackendError::Closed { backend: name },
            ));
        }
        let in_transaction = self.tx != TransactionStatus::Idle;
        let info = crate::errors::server_lost(&name, why, in_transaction);
        if in_transaction {
            self.failed_tx = true;
            self.tx = TransactionStatus::Failed;
            self.state.deferred_begin = None;
            self.tx_meta.clear();
        }
        let outstanding = self.segments.len();
        self.segments.clear();
        for _ in 0..outstanding {
            encode::error_response(&mut self.wbuf, &info);
            encode::ready_for_query(&mut self.wbuf, self.tx);
        }
        if self.open_segment {
            // The rest of this request is still coming: dropped up to its
            // Sync, which gets the ReadyForQuery.
            encode::error_response(&mut self.wbuf, &info);
            self.open_segment = false;
            self.rejecting = true;
        } else if outstanding == 0 && in_transaction {
            // Lost between statements: the next one hears why.
            self.lost_reason = Some(info);
        }
        Ok(())
    }
}
