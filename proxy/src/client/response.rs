//! Server replies back to the client: forwarded in whole batches where
//! possible, minus the replies to what pgsplit injected, with what
//! ReadyForQuery, errors and ParameterStatus say noted on the way.

use std::sync::atomic::Ordering;

use bytes::Buf;
use pgsplit_protocol::backend::ready_status;
use pgsplit_protocol::encode;
use pgsplit_protocol::frame::Frames;
use pgsplit_protocol::pipeline::ResponseTracker;
use pgsplit_protocol::{Direction, TransactionStatus};
use pgsplit_router::session_cmd::SessionCommand;
use tokio::io::AsyncWriteExt;

use super::relay::SegmentMeta;
use super::session::Session;
use crate::errors::SessionError;

impl Session {
    /// Forwards what the active server has sent, dropping replies to
    /// injected requests, and notes what ReadyForQuery says.
    pub(super) async fn forward_server(&mut self) -> Result<(), SessionError> {
        let i = self.active.expect("forwarding needs an active backend");
        let max = self.shared.config.limits.max_message_size;
        // Reused across batches: the response path allocates nothing.
        let mut events = std::mem::take(&mut self.events);
        let conn = &mut **self.conns[i].as_mut().expect("active connection");
        let backend = &conn.backend.name;
        let protocol = |source| crate::backend::BackendError::Protocol {
            backend: backend.clone(),
            source,
        };
        // Fast path: every message goes to the client as it came, in one
        // write of the whole batch. Once a reply must be dropped or one of
        // pgsplit's own inserted, the batch is copied message by message.
        let mut copying = false;
        if self.replayable {
            // Nothing of this attachment has reached the client yet.
            match first_replies(&conn.rbuf, max, &conn.tracker, self.attached_write) {
                FirstReplies::Failed { why, read_only } => {
                    self.events = events;
                    return Err(SessionError::ServerLost {
                        backend: i,
                        why,
                        read_only,
                    });
                }
                // ParseComplete, BindComplete and the like came ahead of
                // the results: hold them until results (or a failure)
                // follow, so a server dying in between leaves the request
                // retriable without the client seeing them twice. A request
                // that ends with a Sync has the rest on its way.
                FirstReplies::OnlyAcknowledgements if !self.open_segment => {
                    self.events = events;
                    return Ok(());
                }
                _ => {}
            }
        }
        let mut lost = None;
        let mut replied = false;
        let wbuf = &mut self.wbuf;
        let mut frames = Frames::new(&conn.rbuf, Direction::Backend, max);
        let mut start = 0;
        for item in frames.by_ref() {
            let (tag, body) = item.map_err(protocol)?;
            let end = start + 5 + body.len();
            if tag == b'E' {
                if let Some(why) = fatal(body) {
                    // Never relayed: the client's connection to pgsplit
                    // lives on, and a FATAL would make it think otherwise.
                    lost = Some(why);
                    break;
                }
            }
            let d = conn.tracker.on_message(tag);
            replied |= d.forward && !matches!(tag, b'N' | b'A' | b'S');
            if let Some((skip, count)) = d.ignored_syncs {
                events.push(Event::IgnoredSyncs(skip, count));
            }
            match tag {
                b'Z' => {
                    let status = ready_status(body).map_err(protocol)?;
                    conn.tx = status;
                    if d.forward {
                        events.push(Event::Ready(status));
                    }
                }
                b'S' => {
                    if let Some((name, value)) = parameter(body) {
                        if d.forward && name == "default_transaction_read_only" {
                            events.push(Event::DefaultReadOnly(value == "on"));
                        }
                        match conn.params.iter_mut().find(|(n, _)| n == name) {
                            Some((_, v)) => value.clone_into(v),
                            None => conn.params.push((name.to_owned(), value.to_owned())),
                        }
                    }
                }
                b'E' => {
                    // Which Parse failed or was skipped is not known here:
                    // forget them all; they are prepared again when used
                    // (after a Close, so one the server kept is no problem).
                    conn.prepared.clear();
                    conn.unnamed = None;
                    if d.forward {
                        events.push(Event::Error);
                    }
                }
                b'C' if d.forward && !self.tx_meta.is_empty() => events.push(Event::Tag(
                    String::from_utf8_lossy(&body[..body.len().saturating_sub(1)]).into_owned(),
                )),
                _ => {}
            }
            if d.forward {
                if copying {
                    wbuf.extend_from_slice(&conn.rbuf[start..end]);
                }
            } else if !copying {
                copying = true;
                wbuf.extend_from_slice(&conn.rbuf[..start]);
            }
            while let Some(reply) = conn.tracker.take_synthetic() {
                replied = true;
                if !copying {
                    copying = true;
                    wbuf.extend_from_slice(&conn.rbuf[..end]);
                }
                encode::raw_message(wbuf, reply, &[]);
            }
            start = end;
        }
        let consumed = if lost.is_some() {
            start
        } else {
            frames.consumed()
        };
        if replied {
            self.replayable = false;
            self.replay.clear();
        }
        // On any server not known to be a standby: the primary, or one
        // being fenced in a switchover. Not on a replica: a write refused
        // before it ran (a full pool) leaves `wrote` set, and the session's
        // next read must not count as its commit.
        let write_done = self.wrote
            && self.shared.nodes[i].pg_role() != pgsplit_router::topology::PgRole::Standby
            && events
                .iter()
                .any(|e| matches!(e, Event::Ready(TransactionStatus::Idle)));
        if write_done {
            // Noted before the client hears of the commit, so no read
            // anywhere can overtake it unnoticed. Its position is not asked
            // for here: the primary's next health check reads a position
            // at least as new, costing this connection no round trip.
            let now = std::time::Instant::now();
            let at_us = self.shared.us_at(now).max(1);
            self.last_write = Some(now);
            self.ever_wrote = true;
            self.write_at_us = at_us;
            self.shared.last_write_us.fetch_max(at_us, Ordering::AcqRel);
            // A write pipelined behind this reply has not committed yet:
            // its own ReadyForQuery is timed again.
            self.wrote = !conn.tracker.is_idle();
        }
        let batch = if copying {
            conn.rbuf.advance(consumed);
            None
        } else {
            Some(conn.rbuf.split_to(consumed))
        };
        for e in events.drain(..) {
            self.on_event(e);
        }
        self.events = events;
        // Back to the pool before the client is written to: once a client
        // has its ReadyForQuery the connection is free for the next request,
        // whoever sends it, and a slow client does not hold it meanwhile.
        if lost.is_none() {
            self.maybe_release();
        }
        match batch {
            None => {
                self.client.write_all(&self.wbuf).await?;
                self.wbuf.clear();
            }
            Some(batch) if !batch.is_empty() => self.client.write_all(&batch).await?,
            Some(_) => {}
        }
        if let Some(why) = lost {
            return Err(SessionError::ServerLost {
                backend: i,
                why,
                read_only: false,
            });
        }
        Ok(())
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Error => self.segment_failed = true,
            Event::DefaultReadOnly(on) => self.state.default_read_only = on,
            Event::Tag(tag) => self.last_command_tag = Some(tag),
            Event::IgnoredSyncs(skip, count) => {
                let end = (skip + count).min(self.segments.len());
                self.segments.drain(skip.min(end)..end);
            }
            Event::Ready(status) => {
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
                            self.apply_meta(*meta);
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
                            self.apply_meta(meta);
                        }
                    }
                    self.last_command_tag = None;
                }
            }
        }
    }

    fn apply_meta(&mut self, meta: SegmentMeta) {
        let mut resets = false;
        for (cmd, sql) in &meta.commands {
            self.state.apply(cmd, sql);
            resets |= !matches!(cmd, SessionCommand::Set(_));
        }
        // The connection that ran them already has them, except that a
        // RESET there went to the server's defaults, not to this client's
        // startup parameters: then mark it for a full replay.
        let settings = if resets && self.state.has_baseline() {
            super::state::UNKNOWN_SETTINGS
        } else {
            self.state.fingerprint
        };
        if let Some(c) = self.active.and_then(|i| self.conns[i].as_mut()) {
            c.settings = settings;
        }
    }
}

pub(super) enum Event {
    Ready(TransactionStatus),
    Error,
    DefaultReadOnly(bool),
    Tag(String),
    /// Client Syncs the server swallowed during COPY FROM STDIN.
    IgnoredSyncs(usize, usize),
}

/// The message of a FATAL or PANIC ErrorResponse: the server is ending
/// the connection.
fn fatal(body: &[u8]) -> Option<String> {
    let fields = pgsplit_protocol::backend::error_fields(body).ok()?;
    matches!(fields.severity(), Some("FATAL" | "PANIC")).then(|| {
        format!(
            "{} (SQLSTATE {})",
            fields
                .message()
                .unwrap_or("the server ended the connection"),
            fields.code().unwrap_or("?")
        )
    })
}

/// What the first replies of a retriable attachment say.
enum FirstReplies {
    /// Results (or an error the client must see): forward as usual.
    Forward,
    /// Only acknowledgements of extended-protocol steps, or notices.
    OnlyAcknowledgements,
    /// A failure that makes the requests safe to send elsewhere.
    Failed { why: String, read_only: bool },
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
            b'1' | b'2' | b'3' | b't' | b'n' | b'T' | b'N' | b'S' | b'A' => {}
            b'E' => {
                let failure = match fatal(body) {
                    Some(why) => Some((why, false)),
                    None => pgsplit_protocol::backend::error_fields(body)
                        .ok()
                        .filter(|f| write_on_primary && f.code() == Some("25006"))
                        .map(|_| ("it is read-only: no longer the primary".to_owned(), true)),
                };
                return match failure {
                    Some((why, read_only)) if !completes_before_error(rbuf, max, tracker) => {
                        FirstReplies::Failed { why, read_only }
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
        if tag == b'E' {
            return false;
        }
        if d.forward && tag == b'Z' {
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
