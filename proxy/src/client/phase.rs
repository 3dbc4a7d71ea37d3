//! The phases of a client session, and what exists only in one of them.
//!
//! ```text
//!            route_idle ──────────────► Attached ──── release_if_done ──► Idle
//!   Idle ──┤ reject ──► Rejecting ──── end_rejecting (Sync) ──► Idle | Aborted
//!            answer_locally (admin, own settings, deferred BEGIN) ──► Idle
//!   Attached ── lose_server ──► Idle{retrying} (replayed) | Rejecting | Aborted | end
//!   Aborted ── answer_locally (ROLLBACK) ──► Idle
//! ```
//!
//! A server connection, its claim and the means to retry the request on
//! it exist only while `Attached`: no other phase can reach them.

use bytes::BytesMut;
use pgsplit_protocol::encode::ErrorInfo;

use crate::backend::pool::PooledConn;
use crate::topology::{BackendId, Claim};

/// A request whose end has not arrived is decided anyway once this much of
/// it is buffered (a huge batch of reads), bounding the session's memory.
pub(super) const DECIDE_LIMIT: usize = 1 << 20;

/// Bytes of client frames kept for a retry; a request bigger than this
/// (a large COPY) is not retried.
pub(super) const REPLAY_LIMIT: usize = 64 << 10;

pub(super) enum Phase {
    /// Between requests, holding nothing for them (in session pooling the
    /// session's own connections wait in `Client::conns`). `retrying`: the
    /// request at the front is being sent again because this server failed
    /// it; that server is avoided, and a second failure is not retried.
    Idle { retrying: Option<BackendId> },
    /// A server connection runs the session's request, transaction or
    /// pinned session.
    Attached(Attachment),
    /// A refused request's remaining frames are dropped up to its Sync,
    /// which is answered; then the session is `Aborted` if `then_aborted`.
    Rejecting { then_aborted: bool },
    /// The server of the open transaction was lost: every request is
    /// answered as in an aborted transaction until the client ends it.
    /// `reason` is told to the first statement that has not heard it.
    Aborted { reason: Option<ErrorInfo> },
}

impl Phase {
    pub(super) const IDLE: Phase = Phase::Idle { retrying: None };

    pub(super) fn attachment(&mut self) -> Option<&mut Attachment> {
        match self {
            Phase::Attached(a) => Some(a),
            _ => None,
        }
    }

    pub(super) fn is_aborted(&self) -> bool {
        matches!(self, Phase::Aborted { .. })
    }
}

/// Why the attached server was chosen.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Purpose {
    /// A read; `min_lsn` is the replay position it needs (for a retry
    /// elsewhere; `u64::MAX`: the primary only).
    Read { min_lsn: u64 },
    /// Writes, on the server that was primary when it was attached.
    Write,
}

pub(super) struct Attachment {
    pub backend: BackendId,
    pub conn: PooledConn,
    /// Held for the switchover fence; released with the attachment.
    pub _claim: Claim,
    pub purpose: Purpose,
    /// The request routed here has frames still to come: everything up to
    /// its Sync (or its Query) follows it without being routed again.
    pub open_request: bool,
    pub retry: Retry,
    /// State that pins was created on a replica connection: it is closed
    /// when released instead of going back to the pool.
    pub discard_on_release: bool,
}

/// Client frames sent since attaching, kept while nothing has reached the
/// client for them: then they may be sent again elsewhere if the server is
/// lost (reads) or turns out to be a demoted primary (writes it refused).
pub(super) struct Retry {
    frames: BytesMut,
    possible: bool,
    /// The deferred BEGIN sent ahead of them, deferred again on a retry.
    begin: Option<String>,
}

impl Retry {
    /// `frames`: an empty buffer to keep them in (reused between
    /// attachments, so keeping frames allocates nothing per request).
    pub(super) fn new(possible: bool, begin: Option<String>, frames: BytesMut) -> Retry {
        Retry {
            frames,
            possible,
            begin,
        }
    }

    /// The buffer, emptied, for the next attachment.
    pub(super) fn into_buffer(self) -> BytesMut {
        let mut frames = self.frames;
        frames.clear();
        frames
    }

    pub(super) fn possible(&self) -> bool {
        self.possible
    }

    pub(super) fn keep(&mut self, frame: &[u8]) {
        if !self.possible {
            return;
        }
        if self.frames.len() + frame.len() > REPLAY_LIMIT {
            self.give_up();
        } else {
            self.frames.extend_from_slice(frame);
        }
    }

    /// The last kept frame (`len` bytes) was answered at once: a retry
    /// elsewhere must not answer it again.
    pub(super) fn answered_last(&mut self, len: usize) {
        if self.possible {
            let kept = self.frames.len().saturating_sub(len);
            self.frames.truncate(kept);
        }
    }

    /// Something reached the client: the requests can no longer be retried.
    pub(super) fn give_up(&mut self) {
        self.possible = false;
        self.frames.clear();
    }

    /// The kept frames and the deferred BEGIN, if a retry is possible.
    pub(super) fn take(self) -> Option<(BytesMut, Option<String>)> {
        self.possible.then_some((self.frames, self.begin))
    }

    pub(super) fn kept(&self) -> usize {
        self.frames.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_keeps_frames_until_something_reaches_the_client() {
        let mut r = Retry::new(true, Some("BEGIN".into()), BytesMut::new());
        r.keep(b"abc");
        r.keep(b"de");
        r.answered_last(2);
        assert_eq!(r.kept(), 3);
        let (frames, begin) = r.take().expect("still possible");
        assert_eq!(&frames[..], b"abc");
        assert_eq!(begin.as_deref(), Some("BEGIN"));
        let mut r = Retry::new(true, None, BytesMut::new());
        r.keep(b"abc");
        r.give_up();
        r.keep(b"more");
        assert!(r.take().is_none());
    }

    #[test]
    fn a_request_too_big_to_keep_is_not_retried() {
        let mut r = Retry::new(true, None, BytesMut::new());
        r.keep(&vec![0; REPLAY_LIMIT]);
        assert!(r.possible());
        r.keep(b"x");
        assert!(!r.possible());
        assert!(r.take().is_none());
        assert!(Retry::new(false, None, BytesMut::new()).take().is_none());
    }
}
