//! Moving frames: client requests onto the active server connection (with
//! the statements and settings that connection lacks), and server replies
//! back to the client (minus the replies to what pgsplit injected).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use pgsplit_protocol::backend::ready_status;
use pgsplit_protocol::encode;
use pgsplit_protocol::frame::Frames;
use pgsplit_protocol::frontend::{self, FrontendMessage, Target};
use pgsplit_protocol::pipeline::{Request, ResponseTracker};
use pgsplit_protocol::{Direction, Frame, TransactionStatus};
use pgsplit_router::session_cmd::{session_command, SessionCommand};
use pgsplit_router::Analysis;
use tokio::io::AsyncWriteExt;

use super::session::{Flow, Session};
use super::state::{Pin, Statement};
use crate::errors::SessionError;

/// What one request changes, recorded once it has succeeded.
#[derive(Default)]
pub(super) struct SegmentMeta {
    pub commands: Vec<(SessionCommand, Arc<str>)>,
    /// Statements the server parsed for it: known good from then on.
    pub parsed: Vec<u64>,
}

/// Identifies a statement by database, text and parameter types: the same
/// statement prepared by any session shares one server-side copy.
pub(super) fn statement_hash(database: &str, parse_rest: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(database, &mut h);
    std::hash::Hash::hash(parse_rest, &mut h);
    std::hash::Hasher::finish(&h)
}

/// Makes room for one more prepared statement by closing the least
/// recently used one (its reply is not forwarded).
fn evict_if_full(conn: &mut crate::backend::ServerConn, max: usize) {
    if conn.prepared.len() < max {
        return;
    }
    if let Some((&victim, _)) = conn.prepared.iter().min_by_key(|(_, used)| **used) {
        conn.prepared.remove(&victim);
        encode::close(
            &mut conn.out,
            Target::Statement,
            &format!("pgsplit_{victim:016x}"),
        );
        conn.tracker.push(Request::Close, false);
    }
}

/// How a client frame reaches the server.
enum Send {
    /// Unchanged.
    Forward,
    /// Rewritten into the connection's buffer already (statement renamed).
    Written,
    /// Not sent: pgsplit answers it itself with this message tag.
    Answer(u8),
}

impl Session {
    /// Queues one client frame for the active server.
    pub(super) fn send_frame(&mut self, frame: Frame) -> Result<Flow, SessionError> {
        let tag = frame.tag();
        if tag == b'X' {
            return Ok(Flow::Terminate);
        }
        let Some(active) = self.active else {
            unreachable!("frames are only sent after routing attached a backend")
        };
        let send = match frontend::parse(&frame)? {
            FrontendMessage::Query { sql } => {
                self.note_statement(sql);
                self.end_segment();
                let conn = &mut **self.conns[active].as_mut().expect("active connection");
                // A simple query replaces the unnamed statement.
                conn.unnamed = None;
                Send::Forward
            }
            FrontendMessage::Parse { name, sql, .. } => {
                let st = self.register(name, frame.body(), sql);
                self.parse_on(active, name.is_empty(), &st)
            }
            FrontendMessage::Bind { statement, portal } => {
                match self.state.statements.get(statement).cloned() {
                    None => Send::Forward,
                    Some(st) => {
                        self.ensure_prepared(active, &st);
                        self.note_effects(&st.analysis, st.session_cmd.clone());
                        if st.server_name.is_empty() {
                            Send::Forward
                        } else {
                            // Bind body: portal, statement, then the rest.
                            let rest = &frame.body()[portal.len() + statement.len() + 2..];
                            let conn =
                                &mut **self.conns[active].as_mut().expect("active connection");
                            encode::raw_message(
                                &mut conn.out,
                                b'B',
                                &[portal, b"\0", st.server_name.as_bytes(), b"\0", rest],
                            );
                            Send::Written
                        }
                    }
                }
            }
            FrontendMessage::Describe {
                target: Target::Statement,
                name,
            } => match self.state.statements.get(name).cloned() {
                Some(st) if !st.server_name.is_empty() => {
                    self.ensure_prepared(active, &st);
                    let conn = &mut **self.conns[active].as_mut().expect("active connection");
                    encode::describe(&mut conn.out, Target::Statement, &st.server_name);
                    Send::Written
                }
                Some(st) => {
                    self.ensure_prepared(active, &st);
                    Send::Forward
                }
                None => Send::Forward,
            },
            FrontendMessage::Close {
                target: Target::Statement,
                name,
            } if !name.is_empty() => {
                // The server copy stays cached for whoever prepares the same
                // statement next; the client's name is simply forgotten.
                self.state.statements.remove(name);
                Send::Answer(b'3')
            }
            FrontendMessage::Sync | FrontendMessage::FunctionCall => {
                self.end_segment();
                Send::Forward
            }
            _ => Send::Forward,
        };
        let conn = &mut **self.conns[active].as_mut().expect("active connection");
        match send {
            Send::Forward => {
                if let Some(request) = Request::for_frontend_tag(tag) {
                    conn.tracker.push(request, true);
                }
                conn.out.extend_from_slice(frame.as_bytes());
            }
            Send::Written => {
                let request =
                    Request::for_frontend_tag(tag).expect("rewritten messages get replies");
                conn.tracker.push(request, true);
            }
            Send::Answer(reply) => {
                // A reply of pgsplit's own reached the client: resending
                // this request elsewhere would repeat it.
                self.replayable = false;
                self.replay.clear();
                conn.tracker.push(Request::Synthetic(reply), true);
                while let Some(reply) = conn.tracker.take_synthetic() {
                    encode::raw_message(&mut self.wbuf, reply, &[]);
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// A client Parse on the active connection: forwarded under the
    /// statement's server name, or answered at once when the server already
    /// has that statement.
    fn parse_on(&mut self, active: usize, unnamed: bool, st: &Arc<Statement>) -> Send {
        let max = self.shared.config.pool.max_prepared_statements;
        let conn = &mut **self.conns[active].as_mut().expect("active connection");
        if unnamed {
            conn.unnamed = Some(st.hash);
            return Send::Forward;
        }
        if !queue_parse(conn, st, max) {
            return Send::Answer(b'1');
        }
        self.current_meta
            .get_or_insert_with(Default::default)
            .parsed
            .push(st.hash);
        Send::Written
    }

    /// The request's terminator is being sent: whatever it changes is
    /// recorded when its ReadyForQuery comes back.
    fn end_segment(&mut self) {
        self.open_segment = false;
        self.segments.push_back(self.current_meta.take());
    }

    /// Records a client Parse; `body` is the Parse message body.
    pub(super) fn register(&mut self, name: &[u8], body: &[u8], sql: &[u8]) -> Arc<Statement> {
        // Drivers using the unnamed statement re-Parse the same text on every
        // execution: reuse the previous record instead of rebuilding it.
        let rest = &body[name.len() + 1..];
        if let Some(st) = self.state.statements.get(name) {
            if st.body[..] == *rest {
                return Arc::clone(st);
            }
        }
        let text = String::from_utf8_lossy(sql);
        let analysis = self.shared.classifier.classify(&text);
        let session_cmd = if analysis.effects.set_session || analysis.effects.discard_all {
            session_command(&text).map(|c| (c, Arc::from(text.as_ref())))
        } else {
            None
        };
        let hash = statement_hash(&self.database, rest);
        let statement = Arc::new(Statement {
            hash,
            server_name: if name.is_empty() {
                String::new()
            } else {
                format!("pgsplit_{hash:016x}")
            },
            body: Bytes::copy_from_slice(rest),
            analysis,
            session_cmd,
            local: pgsplit_router::admin::parse_admin(&text).is_some(),
        });
        self.state
            .statements
            .insert(Bytes::copy_from_slice(name), Arc::clone(&statement));
        statement
    }

    /// Prepares `st` on the active connection first if it lacks it; the
    /// server's reply to that is not forwarded.
    fn ensure_prepared(&mut self, active: usize, st: &Statement) {
        let max = self.shared.config.pool.max_prepared_statements;
        let conn = &mut **self.conns[active].as_mut().expect("active connection");
        if st.server_name.is_empty() {
            if conn.unnamed != Some(st.hash) {
                encode::raw_message(&mut conn.out, b'P', &[b"\0", &st.body]);
                conn.tracker.push(Request::Parse, false);
                conn.unnamed = Some(st.hash);
            }
            return;
        }
        if queue_parse(conn, st, max) {
            conn.tracker.push(Request::Parse, false);
        }
    }

    /// Session effects of a simple-protocol query string.
    fn note_statement(&mut self, sql: &[u8]) {
        let Ok(text) = std::str::from_utf8(sql) else {
            return;
        };
        // Routing already classified this Query; reuse that verdict.
        let analysis = self
            .decided_query
            .take()
            .unwrap_or_else(|| self.shared.classifier.classify(text));
        let fx = &analysis.effects;
        let cmd = if (fx.set_session || fx.discard_all) && analysis.statement_count == 1 {
            session_command(text).map(|c| (c, Arc::from(text)))
        } else {
            None
        };
        self.note_effects(&analysis, cmd);
    }

    fn note_effects(&mut self, a: &Analysis, cmd: Option<(SessionCommand, Arc<str>)>) {
        let fx = &a.effects;
        if fx.pins_session {
            if self.active.is_some() && self.active == self.shared.primary() {
                self.pin(Pin::UnmovableState);
            } else {
                // Made inside a read-only transaction on a replica: the
                // session cannot stay there (its writes go to the primary),
                // so the connection is closed when released rather than
                // handed to someone else with that state on it.
                self.discard_on_release = true;
            }
        }
        if fx.deallocate_all || fx.discard_all {
            // Takes pgsplit's statements on this connection with it.
            if let Some(c) = self.active.and_then(|i| self.conns[i].as_mut()) {
                c.prepared.clear();
                c.unnamed = None;
            }
        }
        // A role change is not undone by RESET ALL: never replay it onto a
        // pooled connection; keep the session on its own (reset by DISCARD
        // ALL when it ends).
        if let Some((SessionCommand::Set(name) | SessionCommand::Reset(name), _)) = &cmd {
            if name == "role" || name == "session_authorization" {
                self.pin(Pin::UnreplayableSetting);
                return;
            }
        }
        if let Some((SessionCommand::Set(name), sql)) = &cmd {
            // pgsplit's own setting through the extended protocol: applied
            // here, and harmless on the server (a custom setting).
            if let Some(which) = super::reads::own_setting_named(name) {
                if let Err(info) = self.apply_own_setting(which, sql) {
                    tracing::debug!(message = %info.message, "ignored an invalid pgsplit setting");
                }
                return;
            }
        }
        match cmd {
            Some(c) => self
                .current_meta
                .get_or_insert_with(Default::default)
                .commands
                .push(c),
            None if fx.set_session || fx.discard_all => self.pin(Pin::UnreplayableSetting),
            None => {}
        }
    }

    /// Whether this session's writes have their commit position read: its
    /// own causal reads need it, and so do global readers anywhere.
    fn tracks_positions(&self) -> bool {
        use pgsplit_config::ReadYourWrites as Mode;
        matches!(self.ryw, Mode::Causal | Mode::Global)
            || self.shared.global_mode_in_use.load(Ordering::Relaxed)
    }

    pub(super) fn set_ryw(&mut self, mode: pgsplit_config::ReadYourWrites) {
        if mode == pgsplit_config::ReadYourWrites::Global {
            self.shared
                .global_mode_in_use
                .store(true, Ordering::Relaxed);
        }
        self.ryw = mode;
    }

    fn pin(&mut self, why: Pin) {
        if self.state.pinned.is_none() {
            self.shared.pins[why as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.state.pin(why);
    }

    /// Forwards what the active server has sent, dropping replies to
    /// injected requests, and notes what ReadyForQuery says.
    pub(super) async fn forward_server(&mut self) -> Result<(), SessionError> {
        let i = self.active.expect("forwarding needs an active backend");
        let max = self.shared.config.limits.max_message_size;
        // Reused across batches: the response path allocates nothing.
        let mut events = std::mem::take(&mut self.events);
        let tracks_positions = self.tracks_positions();
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
        let mut capture = false;
        let on_primary = Some(i) == self.shared.primary();
        if self.replayable {
            if let Some((why, read_only)) =
                retriable_failure(&conn.rbuf, max, &conn.tracker, self.attached_write)
            {
                self.events = events;
                return Err(SessionError::ServerLost {
                    backend: i,
                    why,
                    read_only,
                });
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
                        // A write just finished: read its commit position on
                        // this connection. Counted in flight before the client
                        // hears of the commit, so no read anywhere can
                        // overtake it unnoticed.
                        if on_primary
                            && self.wrote
                            && !self.capturing
                            && status == TransactionStatus::Idle
                            && tracks_positions
                        {
                            self.shared
                                .captures_in_flight
                                .fetch_add(1, Ordering::AcqRel);
                            self.capturing = true;
                            self.wrote = false;
                            capture = true;
                        }
                    } else if self.capturing {
                        // The capture ended without a position (it failed):
                        // reads of this session stay on the primary until
                        // the next write's position is known.
                        finish_capture(
                            &self.shared,
                            &mut self.capturing,
                            &mut self.write_lsn,
                            None,
                        );
                    }
                }
                b'D' if !d.forward && self.capturing => {
                    finish_capture(
                        &self.shared,
                        &mut self.capturing,
                        &mut self.write_lsn,
                        single_text(body).and_then(crate::health::parse_lsn),
                    );
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
        if capture {
            encode::query(&mut conn.out, "SELECT pg_current_wal_lsn()");
            conn.tracker.push(Request::UntilReady, false);
        }
        let write_done = on_primary
            && self.wrote
            && events
                .iter()
                .any(|e| matches!(e, Event::Ready(TransactionStatus::Idle)));
        if capture || write_done {
            // Session and sticky modes need only that, and when, it wrote.
            self.last_write = Some(std::time::Instant::now());
            self.ever_wrote = true;
            self.wrote &= !write_done;
        }
        if copying {
            conn.rbuf.advance(consumed);
            self.client.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        } else if consumed > 0 {
            let batch = conn.rbuf.split_to(consumed);
            self.client.write_all(&batch).await?;
        }
        for e in events.drain(..) {
            self.on_event(e);
        }
        self.events = events;
        if let Some(why) = lost {
            return Err(SessionError::ServerLost {
                backend: i,
                why,
                read_only: false,
            });
        }
        self.maybe_release();
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

/// In a batch of replies of which nothing has reached the client yet: a
/// failure that makes the requests safe to send elsewhere. The server is
/// going away (FATAL), or, for a write sent to the primary, it refused with
/// 25006 because it is a standby now (nothing ran). Only if no reply the
/// client would see comes before it: a request that completed in this
/// batch must not run again.
fn retriable_failure(
    rbuf: &[u8],
    max: usize,
    tracker: &ResponseTracker,
    write_on_primary: bool,
) -> Option<(String, bool)> {
    // Cheap first pass: most batches hold no error at all.
    let failure = Frames::new(rbuf, Direction::Backend, max).find_map(|item| {
        let (tag, body) = item.ok()?;
        if tag != b'E' {
            return None;
        }
        if let Some(why) = fatal(body) {
            return Some((why, false));
        }
        let fields = pgsplit_protocol::backend::error_fields(body).ok()?;
        (write_on_primary && fields.code() == Some("25006"))
            .then(|| ("it is read-only: no longer the primary".to_owned(), true))
    })?;
    let mut tracker = tracker.clone();
    for item in Frames::new(rbuf, Direction::Backend, max) {
        let (tag, _) = item.ok()?;
        let d = tracker.on_message(tag);
        if tag == b'E' {
            return Some(failure);
        }
        if d.forward && tag == b'Z' {
            return None;
        }
    }
    None
}

/// Name and value of a ParameterStatus body.
fn parameter(body: &[u8]) -> Option<(&str, &str)> {
    let mut parts = body.split(|&b| b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?;
    let value = std::str::from_utf8(parts.next()?).ok()?;
    Some((name, value))
}

/// The one text value of a single-column DataRow body.
fn single_text(body: &[u8]) -> Option<&str> {
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let value = body.get(6..6 + usize::try_from(len).ok()?)?;
    std::str::from_utf8(value).ok()
}

/// Records the position of the session's last write (`None`: unknown, so
/// no replica qualifies until the next write's position is read).
pub(super) fn finish_capture(
    shared: &crate::shared::Shared,
    capturing: &mut bool,
    write_lsn: &mut u64,
    lsn: Option<u64>,
) {
    // A later capture is a later position than any earlier write, so it
    // replaces the last one (also replacing "unknown").
    let lsn = lsn.unwrap_or(u64::MAX);
    *write_lsn = lsn;
    if lsn != u64::MAX {
        shared.global_write_lsn.fetch_max(lsn, Ordering::AcqRel);
    }
    shared.captures_in_flight.fetch_sub(1, Ordering::AcqRel);
    *capturing = false;
}

/// Queues a Parse of `st` under its server name unless the connection has
/// it already (then only its use time is refreshed); returns whether a
/// Parse was queued, for the caller to account for its reply.
fn queue_parse(conn: &mut crate::backend::ServerConn, st: &Statement, max: usize) -> bool {
    conn.uses += 1;
    if let Some(used) = conn.prepared.get_mut(&st.hash) {
        *used = conn.uses;
        return false;
    }
    evict_if_full(conn, max);
    close_first(conn, &st.server_name);
    encode::raw_message(
        &mut conn.out,
        b'P',
        &[st.server_name.as_bytes(), b"\0", &st.body],
    );
    conn.prepared.insert(st.hash, conn.uses);
    true
}

/// Closes `name` before preparing it again: the server may still have it
/// (pgsplit forgets statements conservatively after errors), and closing a
/// statement that does not exist is not an error.
fn close_first(conn: &mut crate::backend::ServerConn, name: &str) {
    encode::close(&mut conn.out, Target::Statement, name);
    conn.tracker.push(Request::Close, false);
}
