//! What a session does when the server it is attached to goes away
//! mid-request: retry what is safe to retry, report the rest, and stay
//! usable.

use pgsplit_protocol::encode;
use pgsplit_protocol::TransactionStatus;

use super::phase::{Attachment, Phase, Purpose};
use super::session::Session;
use crate::backend::pool::PooledConn;
use crate::errors::{Loss, SessionError};

impl Session {
    /// The attached server was lost, or refused a write because it is no
    /// longer the primary (`Loss::ReadOnly`). A request that may be retried
    /// goes back to the front of the queue to be routed again: reads that
    /// had returned nothing, and writes a demoted primary refused (they did
    /// not run). Anything else gets an error; inside a transaction the
    /// session then answers as PostgreSQL does for an aborted transaction
    /// until the client ends it.
    pub(super) fn lose_server(&mut self, why: &str, loss: Loss) -> Result<(), SessionError> {
        let Phase::Attached(a) = std::mem::replace(&mut self.phase, Phase::IDLE) else {
            return Ok(());
        };
        let c = &mut self.c;
        let backend = a.backend;
        let name = c.shared.topology.backends[backend].name().to_owned();
        match loss {
            Loss::ReadOnly => {
                tracing::warn!(client = %c.peer, backend = %name, "the primary refused a write as read-only: it was demoted; looking for the new primary");
                c.shared
                    .events
                    .fenced_writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Maybe demoted, maybe refused for the client's own reasons
                // (a read-only setting): the health check tells which
                // before the write is tried again. Others keep using it.
                c.recheck = Some(backend);
            }
            // This session's connection only (pg_terminate_backend, a
            // protocol violation): other sessions go on using the server
            // unless the check woken below finds it down.
            Loss::Fatal { .. } => {
                tracing::warn!(client = %c.peer, backend = %name, reason = %why, "the server ended this session's connection");
            }
            Loss::Gone => {
                tracing::warn!(client = %c.peer, backend = %name, reason = %why, "lost the server connection mid-request");
                c.shared.topology.lost_silently(backend);
            }
        }
        c.shared.topology.suspect(backend);
        c.cancel_key.set_target(None);
        c.decided_query = None;
        c.current_meta = None;
        c.segment_failed = false;
        let open_request = a.open_request;
        if let Some((frames, begin)) = retry_of(a, loss) {
            tracing::info!(client = %c.peer, backend = %name, "retrying the request elsewhere: nothing of it had reached the client");
            if loss != Loss::ReadOnly {
                // A refused write waits for the new primary: counted as fenced.
                c.shared
                    .events
                    .retried_reads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let mut again = frames;
            again.extend_from_slice(&c.rbuf);
            c.rbuf = again;
            c.segments.clear();
            if let Some(begin) = begin {
                c.state.deferred_begin = Some(begin);
            }
            self.phase = Phase::Idle {
                retrying: Some(backend),
            };
            return Ok(());
        }
        if c.state.pinned.is_some() {
            // Temporary tables, advisory locks, a role... were on that
            // connection and cannot be rebuilt elsewhere: going on without
            // them would be silently wrong, so the session ends.
            return Err(SessionError::Backend(
                crate::backend::BackendError::Closed { backend: name },
            ));
        }
        self.report_loss(&name, why, open_request);
        Ok(())
    }

    /// Tells the client its requests on the lost server failed, and puts
    /// the session in the phase that follows.
    fn report_loss(&mut self, name: &str, why: &str, open_request: bool) {
        let c = &mut self.c;
        let in_transaction = c.tx != TransactionStatus::Idle;
        let info = crate::errors::server_lost(name, why, in_transaction);
        if in_transaction {
            c.tx = TransactionStatus::Failed;
            c.state.deferred_begin = None;
            c.tx_meta.clear();
        }
        let outstanding = c.segments.len();
        c.segments.clear();
        for _ in 0..outstanding {
            encode::error_response(&mut c.wbuf, &info);
            encode::ready_for_query(&mut c.wbuf, c.tx);
        }
        self.phase = if open_request {
            // The rest of this request is still coming: dropped up to its
            // Sync, which gets the ReadyForQuery.
            encode::error_response(&mut c.wbuf, &info);
            Phase::Rejecting {
                then_aborted: in_transaction,
            }
        } else if in_transaction {
            // Lost between statements: the next one hears why.
            Phase::Aborted {
                reason: (outstanding == 0).then_some(info),
            }
        } else {
            Phase::IDLE
        };
    }
}

/// The frames to send again, if the lost attachment's requests may be
/// retried: nothing of them reached the client, it was not a retry itself,
/// it only read (or wrote on a primary that refused as read-only), and the
/// server did not refuse it as a protocol violation (which would only
/// fail again elsewhere).
fn retry_of(a: Attachment, loss: Loss) -> Option<(bytes::BytesMut, Option<String>)> {
    let reads = matches!(a.purpose, Purpose::Read { .. });
    tracing::debug!(
        possible = a.retry.possible(),
        reads,
        kept = a.retry.kept(),
        open = a.open_request,
        "deciding whether to retry"
    );
    let Attachment { conn, retry, .. } = a;
    PooledConn::discard(conn);
    match loss {
        Loss::Fatal {
            protocol_violation: true,
        } => None,
        Loss::ReadOnly => retry.take(),
        _ if reads => retry.take(),
        _ => None,
    }
}
