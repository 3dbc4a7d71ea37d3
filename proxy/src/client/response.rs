//! Server replies back to the client: forwarded in whole batches where
//! possible, minus the replies to what pgsplit injected, with what
//! ReadyForQuery, errors and ParameterStatus say noted on the way.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use pgsplit_protocol::backend::ready_status;
use pgsplit_protocol::encode;
use pgsplit_protocol::frame::Frames;
use pgsplit_protocol::pipeline::ResponseTracker;
use pgsplit_protocol::tag::backend as be;
use pgsplit_protocol::{Direction, TransactionStatus};
use pgsplit_router::session_cmd::SessionCommand;

use super::ledger::{Event, SegmentMeta};
use super::phase::{Attachment, Phase, Purpose};
use super::session::{Client, Session};
use crate::backend::ServerConn;
use crate::errors::{Loss, SessionError};

/// A batch of replies taken off the attached connection.
struct Replies {
    /// The batch as it came, to write unchanged; `None`: it was copied
    /// into the client's write buffer, with changes.
    batch: Option<BytesMut>,
    /// The server ended the connection with this FATAL (not relayed).
    lost: Option<(String, Loss)>,
}

impl Session {
    /// Forwards what the attached server has sent, and lets go of the
    /// server if that finished the session's work on it.
    pub(super) async fn on_server_data(&mut self) -> Result<(), SessionError> {
        let Phase::Attached(a) = &mut self.phase else {
            return Ok(());
        };
        let Some(replies) = self.c.take_replies(a)? else {
            return Ok(());
        };
        // Back to the pool before the client is written to: once a client
        // has its ReadyForQuery the connection is free for the next request,
        // whoever sends it, and a slow client does not hold it meanwhile.
        if replies.lost.is_none() {
            self.release_if_done();
        }
        match replies.batch {
            None => {
                self.c.stream.send(&self.c.wbuf).await?;
                self.c.wbuf.clear();
            }
            Some(batch) if !batch.is_empty() => self.c.stream.send(&batch).await?,
            Some(_) => {}
        }
        match replies.lost {
            Some((why, loss)) => Err(SessionError::ServerLost { why, loss }),
            None => Ok(()),
        }
    }
}

impl Client {
    /// Takes the replies the attached server has sent, dropping those to
    /// injected requests and noting what ReadyForQuery says. `None`: they
    /// are held back for now (see [`first_replies`]).
    fn take_replies(&mut self, a: &mut Attachment) -> Result<Option<Replies>, SessionError> {
        let max = self.shared.config.limits.max_message_size;
        if a.retry.possible() {
            // Nothing of this attachment has reached the client yet.
            let write = a.purpose == Purpose::Write;
            match first_replies(a.conn.received(), max, a.conn.tracker(), write) {
                FirstReplies::Failed { why, loss } => {
                    return Err(SessionError::ServerLost { why, loss })
                }
                // ParseComplete, BindComplete and the like came ahead of
                // the results: hold them until results (or a failure)
                // follow, so a server dying in between leaves the request
                // retriable without the client seeing them twice. A request
                // that ends with a Sync has the rest on its way.
                FirstReplies::OnlyAcknowledgements if !a.open_request => return Ok(None),
                _ => {}
            }
        }
        // Reused across batches: the response path allocates nothing.
        let mut events = std::mem::take(&mut self.events);
        let scanned = scan(
            &mut a.conn,
            &mut self.wbuf,
            &mut events,
            !self.tx_meta.is_empty(),
            max,
        );
        let scanned = match scanned {
            Ok(s) => s,
            Err(e) => {
                self.events = events;
                return Err(e.into());
            }
        };
        if scanned.replied {
            a.retry.give_up();
        }
        self.note_commit(a, &events);
        let conn = &mut a.conn;
        let batch = if scanned.copying {
            conn.consume(scanned.consumed);
            None
        } else {
            Some(conn.split_received(scanned.consumed))
        };
        for e in events.drain(..) {
            self.on_event(e, conn);
        }
        self.events = events;
        Ok(Some(Replies {
            batch,
            lost: scanned.lost,
        }))
    }

    /// A write committed in this batch, on any server not known to be a
    /// standby: the primary, or one being fenced in a switchover. Not on a
    /// replica: a write refused before it ran (a full pool) leaves the
    /// write pending, and the session's next read must not count as its
    /// commit. In the order of the replies, so a position read before a
    /// later commit is never taken for that commit's.
    fn note_commit(&mut self, a: &mut Attachment, events: &[Event]) {
        let mut committed = false;
        for e in events {
            match e {
                Event::Position(lsn) => self.ryw.position_read(*lsn),
                // Pending first: the node's role is read only then.
                Event::Ready(TransactionStatus::Idle)
                    if self.ryw.pending()
                        && self.shared.topology.backends[a.backend].node.pg_role()
                            != pgsplit_router::topology::PgRole::Standby =>
                {
                    committed = true;
                    // Noted before the client hears of the commit, so no
                    // read anywhere can overtake it unnoticed. A write
                    // pipelined behind this reply has not committed yet:
                    // its own ReadyForQuery is timed again.
                    let at_us = self.shared.topology.now_us().max(1);
                    self.ryw.committed(at_us, !a.conn.owes_nothing());
                    self.shared.last_write_us.fetch_max(at_us, Ordering::AcqRel);
                    self.peer_writes.fetch_max(at_us, Ordering::AcqRel);
                }
                _ => {}
            }
        }
        // Otherwise the primary's next health check reads a position at
        // least as new: no query, and the connection is free at once.
        if committed
            && a.conn.is_clean()
            && self.shared.config.routing.confirm_replay
            && self.ryw.wants_position(self.ryw_mode)
        {
            a.conn.ask_position();
            self.shared
                .ryw
                .positions_asked
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_event(&mut self, e: Event, conn: &mut ServerConn) {
        match e {
            Event::Error => self.segment_failed = true,
            Event::DefaultReadOnly(on) => self.state.default_read_only = on,
            Event::Tag(tag) => self.last_command_tag = Some(tag),
            Event::IgnoredSyncs(skip, count) => {
                let end = (skip + count).min(self.segments.len());
                self.segments.drain(skip.min(end)..end);
            }
            Event::Ready(status) => self.on_ready(status, conn),
            Event::Position(_) => {}
        }
    }

    /// A request ended: what it changed stands if it succeeded (and, in a
    /// transaction, once the transaction commits).
    fn on_ready(&mut self, status: TransactionStatus, conn: &mut ServerConn) {
        let was = self.tx;
        self.tx = status;
        let meta = self.segments.pop_front().flatten();
        let failed = std::mem::take(&mut self.segment_failed);
        if let Some(meta) = meta {
            if !failed && !meta.parsed.is_empty() {
                self.shared.statements_known_good(&meta.parsed);
            }
            if !failed {
                if status == TransactionStatus::Idle {
                    self.apply_meta(*meta, conn);
                } else {
                    self.tx_meta.push(*meta);
                }
            }
        }
        if was != TransactionStatus::Idle && status == TransactionStatus::Idle {
            // Settings made inside the transaction stand only if it committed.
            let committed = self.last_command_tag.as_deref() == Some("COMMIT");
            for meta in std::mem::take(&mut self.tx_meta) {
                if committed {
                    self.apply_meta(meta, conn);
                }
            }
            self.last_command_tag = None;
        }
    }

    fn apply_meta(&mut self, meta: SegmentMeta, conn: &mut ServerConn) {
        let mut resets = false;
        for (cmd, sql) in &meta.commands {
            match cmd {
                SessionCommand::Set(name) => match effective_set(conn, name) {
                    Some(effective) => self.state.apply(cmd, &effective),
                    None => self.state.apply(cmd, sql),
                },
                _ => self.state.apply(cmd, sql),
            }
            resets |= !matches!(cmd, SessionCommand::Set(_));
        }
        // The connection that ran them already has them, except that a
        // RESET there went to the server's defaults, not to this client's
        // startup parameters: then mark it for a full replay.
        conn.set_settings(if resets && self.state.has_baseline() {
            super::state::UNKNOWN_SETTINGS
        } else {
            self.state.fingerprint
        });
    }
}

/// For a parameter the server reports (DateStyle, TimeZone, IntervalStyle,
/// application_name, client_encoding, default_transaction_read_only, ...):
/// a SET of the value now in effect, from the ParameterStatus the server
/// sent. Replaying the client's own text would be wrong when it changed
/// only part of the value: `SET datestyle TO ymd` keeps the output style
/// of whatever the connection it is replayed on had.
fn effective_set(conn: &ServerConn, name: &str) -> Option<Arc<str>> {
    let (reported, value) = conn
        .params()
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))?;
    Some(Arc::from(super::state::set_statement(reported, value)))
}

/// What one pass over a batch found.
struct Scanned {
    consumed: usize,
    /// The batch was copied into the write buffer (something dropped or
    /// inserted); else it goes out as it came.
    copying: bool,
    /// A reply the client sees was among them.
    replied: bool,
    lost: Option<(String, Loss)>,
}

/// One pass over the replies in `conn.rbuf`, up to a FATAL if any.
/// Fast path: every message goes to the client as it came, in one write of
/// the whole batch. Once a reply must be dropped or one of pgsplit's own
/// inserted, the batch is copied message by message into `wbuf`.
fn scan(
    conn: &mut ServerConn,
    wbuf: &mut BytesMut,
    events: &mut Vec<Event>,
    want_tags: bool,
    max: usize,
) -> Result<Scanned, crate::backend::BackendError> {
    // Read in place while the connection's other state is updated.
    let rbuf = conn.take_received();
    let scanned = scan_batch(conn, &rbuf, wbuf, events, want_tags, max);
    conn.restore_received(rbuf);
    scanned.map_err(|source| crate::backend::BackendError::Protocol {
        backend: conn.backend_name().to_owned(),
        source,
    })
}

fn scan_batch(
    conn: &mut ServerConn,
    rbuf: &[u8],
    wbuf: &mut BytesMut,
    events: &mut Vec<Event>,
    want_tags: bool,
    max: usize,
) -> Result<Scanned, pgsplit_protocol::ProtocolError> {
    let mut out = Scanned {
        consumed: 0,
        copying: false,
        replied: false,
        lost: None,
    };
    let mut frames = Frames::new(rbuf, Direction::Backend, max);
    let mut start = 0;
    for item in frames.by_ref() {
        let (tag, body) = item?;
        let end = start + 5 + body.len();
        if tag == be::ERROR_RESPONSE {
            if let Some(lost) = fatal(body) {
                // Never relayed: the client's connection to pgsplit
                // lives on, and a FATAL would make it think otherwise.
                out.lost = Some(lost);
                break;
            }
        }
        let d = conn.on_reply(tag);
        out.replied |= d.forward
            && !matches!(
                tag,
                be::NOTICE_RESPONSE | be::NOTIFICATION_RESPONSE | be::PARAMETER_STATUS
            );
        if let Some((skip, count)) = d.ignored_syncs {
            events.push(Event::IgnoredSyncs(skip, count));
        }
        note_reply(conn, tag, body, d.forward, events, want_tags)?;
        if d.forward {
            if out.copying {
                wbuf.extend_from_slice(&rbuf[start..end]);
            }
        } else if !out.copying {
            out.copying = true;
            wbuf.extend_from_slice(&rbuf[..start]);
        }
        while let Some(reply) = conn.take_synthetic() {
            out.replied = true;
            if !out.copying {
                out.copying = true;
                wbuf.extend_from_slice(&rbuf[..end]);
            }
            encode::empty_message(wbuf, reply);
        }
        start = end;
    }
    out.consumed = if out.lost.is_some() {
        start
    } else {
        frames.consumed()
    };
    Ok(out)
}

/// What one forwarded-or-dropped reply tells the session (as `events`)
/// and its connection: transaction status, server parameters, errors.
fn note_reply(
    conn: &mut ServerConn,
    tag: u8,
    body: &[u8],
    forward: bool,
    events: &mut Vec<Event>,
    want_tags: bool,
) -> Result<(), pgsplit_protocol::ProtocolError> {
    match tag {
        be::READY_FOR_QUERY => {
            let status = ready_status(body)?;
            conn.note_ready(status);
            if forward {
                events.push(Event::Ready(status));
            }
        }
        be::PARAMETER_STATUS => {
            if let Some((name, value)) = parameter(body) {
                if forward && name == "default_transaction_read_only" {
                    events.push(Event::DefaultReadOnly(value == "on"));
                }
                conn.set_param(name.to_owned(), value.to_owned());
            }
        }
        be::ERROR_RESPONSE => {
            // Which Parse failed or was skipped is not known here:
            // forget them all; they are prepared again when used
            // (after a Close, so one the server kept is no problem).
            conn.prepared().forget();
            if forward {
                events.push(Event::Error);
            }
        }
        be::DATA_ROW if !forward => {
            if let Some(lsn) = conn.position_reply(body) {
                events.push(Event::Position(lsn));
            }
        }
        be::COMMAND_COMPLETE if forward && want_tags => events.push(Event::Tag(
            String::from_utf8_lossy(&body[..body.len().saturating_sub(1)]).into_owned(),
        )),
        _ => {}
    }
    Ok(())
}

/// The message of a FATAL or PANIC ErrorResponse: the server is ending
/// the connection.
fn fatal(body: &[u8]) -> Option<(String, Loss)> {
    let fields = pgsplit_protocol::backend::error_fields(body).ok()?;
    matches!(fields.severity(), Some("FATAL" | "PANIC")).then(|| {
        let code = fields.code().unwrap_or("?");
        let why = format!(
            "{} (SQLSTATE {code})",
            fields
                .message()
                .unwrap_or("the server ended the connection"),
        );
        let protocol_violation = code == "08P01";
        (why, Loss::Fatal { protocol_violation })
    })
}

/// What the first replies of a retriable attachment say.
enum FirstReplies {
    /// Results (or an error the client must see): forward as usual.
    Forward,
    /// Only acknowledgements of extended-protocol steps, or notices.
    OnlyAcknowledgements,
    /// A failure that makes the requests safe to send elsewhere.
    Failed { why: String, loss: Loss },
}

/// One pass over a batch of which nothing has reached the client yet.
/// Failures worth a retry: the server is going away (FATAL), or, for a
/// write sent to the primary, it refused with 25006 because it is a standby
/// now (nothing ran). Only if no reply the client would see comes before
/// it: a request that completed in this batch must not run again.
fn first_replies(
    rbuf: &[u8],
    max: usize,
    tracker: &ResponseTracker,
    write_on_primary: bool,
) -> FirstReplies {
    let mut only_acks = true;
    for item in Frames::new(rbuf, Direction::Backend, max) {
        let Ok((tag, body)) = item else {
            return FirstReplies::Forward;
        };
        match tag {
            be::PARSE_COMPLETE
            | be::BIND_COMPLETE
            | be::CLOSE_COMPLETE
            | be::PARAMETER_DESCRIPTION
            | be::NO_DATA
            | be::ROW_DESCRIPTION
            | be::NOTICE_RESPONSE
            | be::PARAMETER_STATUS
            | be::NOTIFICATION_RESPONSE => {}
            be::ERROR_RESPONSE => {
                let failure = fatal(body).or_else(|| {
                    pgsplit_protocol::backend::error_fields(body)
                        .ok()
                        .filter(|f| write_on_primary && f.code() == Some("25006"))
                        .map(|_| {
                            let why = "it is read-only: no longer the primary".to_owned();
                            (why, Loss::ReadOnly)
                        })
                });
                return match failure {
                    Some((why, loss)) if !completes_before_error(rbuf, max, tracker) => {
                        FirstReplies::Failed { why, loss }
                    }
                    _ => FirstReplies::Forward,
                };
            }
            _ => only_acks = false,
        }
    }
    if only_acks {
        FirstReplies::OnlyAcknowledgements
    } else {
        FirstReplies::Forward
    }
}

/// Whether a ReadyForQuery the client would see comes before the first
/// ErrorResponse: replayed as the tracker will, on a copy (rare: only
/// when a batch carries a retriable failure).
fn completes_before_error(rbuf: &[u8], max: usize, tracker: &ResponseTracker) -> bool {
    let mut tracker = tracker.clone();
    for item in Frames::new(rbuf, Direction::Backend, max) {
        let Ok((tag, _)) = item else { return true };
        let d = tracker.on_message(tag);
        if tag == be::ERROR_RESPONSE {
            return false;
        }
        if d.forward && tag == be::READY_FOR_QUERY {
            return true;
        }
    }
    true
}

/// Name and value of a ParameterStatus body.
fn parameter(body: &[u8]) -> Option<(&str, &str)> {
    let mut parts = body.split(|&b| b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?;
    let value = std::str::from_utf8(parts.next()?).ok()?;
    Some((name, value))
}
