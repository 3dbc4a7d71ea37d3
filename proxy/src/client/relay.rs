//! Moving frames: client requests onto the active server connection (with
//! the statements and settings that connection lacks), and server replies
//! back to the client (minus the replies to what pgsplit injected).

use std::sync::Arc;

use bytes::{Buf, Bytes};
use pgsplit_protocol::backend::ready_status;
use pgsplit_protocol::encode;
use pgsplit_protocol::frame::Frames;
use pgsplit_protocol::frontend::{self, FrontendMessage, Target};
use pgsplit_protocol::pipeline::Request;
use pgsplit_protocol::{Direction, Frame, TransactionStatus};
use pgsplit_router::session_cmd::{session_command, SessionCommand};
use pgsplit_router::Analysis;
use tokio::io::AsyncWriteExt;

use super::session::{Flow, Session};
use super::state::{Pin, Statement};
use crate::errors::SessionError;

/// Settings changes made by one request, recorded once it has succeeded.
#[derive(Default)]
pub(super) struct SegmentMeta {
    pub commands: Vec<(SessionCommand, Arc<str>)>,
}

impl Session {
    /// Queues one client frame for the active server.
    pub(super) fn send_frame(&mut self, frame: Frame) -> Result<Flow, SessionError> {
        if frame.tag() == b'X' {
            return Ok(Flow::Terminate);
        }
        let Some(active) = self.active else {
            unreachable!("frames are only sent after routing attached a backend")
        };
        let tag = frame.tag();
        match tag {
            b'Q' => {
                if let FrontendMessage::Query { sql } = frontend::parse(&frame)? {
                    self.note_statement(sql);
                }
                self.end_segment();
            }
            b'P' => {
                if let FrontendMessage::Parse { name, sql, .. } = frontend::parse(&frame)? {
                    let name = Bytes::copy_from_slice(name);
                    let statement = self.register(name.clone(), &frame, sql);
                    let conn = self.conns[active].as_mut().expect("active connection");
                    // A stale statement of that name (prepared here for an
                    // earlier version) must go, or the server refuses the Parse.
                    if !name.is_empty() && conn.prepared.contains_key(&name) {
                        encode::close(
                            &mut conn.out,
                            Target::Statement,
                            &String::from_utf8_lossy(&name),
                        );
                        conn.tracker.push(Request::Close, false);
                    }
                    conn.prepared.insert(name, statement.id);
                }
            }
            b'B' | b'D' => {
                let name = match frontend::parse(&frame)? {
                    FrontendMessage::Bind { statement, .. } => Some(statement),
                    FrontendMessage::Describe {
                        target: Target::Statement,
                        name,
                    } => Some(name),
                    _ => None,
                };
                if let Some(name) = name {
                    self.ensure_prepared(active, name);
                    if tag == b'B' {
                        if let Some(st) = self.state.statements.get(name).cloned() {
                            self.note_effects(&st.analysis, st.session_cmd.clone());
                        }
                    }
                }
            }
            b'C' => {
                if let FrontendMessage::Close {
                    target: Target::Statement,
                    name,
                } = frontend::parse(&frame)?
                {
                    self.state.statements.remove(name);
                    if let Some(c) = self.conns[active].as_mut() {
                        c.prepared.remove(name);
                    }
                }
            }
            b'S' | b'F' => self.end_segment(),
            _ => {}
        }
        let conn = self.conns[active].as_mut().expect("active connection");
        if let Some(request) = Request::for_frontend_tag(tag) {
            conn.tracker.push(request, true);
        }
        conn.out.extend_from_slice(frame.as_bytes());
        Ok(Flow::Continue)
    }

    /// The request's terminator is being sent: whatever it changes is
    /// recorded when its ReadyForQuery comes back.
    fn end_segment(&mut self) {
        self.open_segment = false;
        self.segments.push_back(self.current_meta.take());
    }

    fn register(&mut self, name: Bytes, frame: &Frame, sql: &[u8]) -> Arc<Statement> {
        let text = String::from_utf8_lossy(sql);
        let analysis = self.shared.classifier.classify(&text);
        let session_cmd = if analysis.effects.set_session || analysis.effects.discard_all {
            session_command(&text).map(|c| (c, Arc::from(text.as_ref())))
        } else {
            None
        };
        let statement = Arc::new(Statement {
            id: self.state.next_statement_id(),
            parse: Bytes::copy_from_slice(frame.as_bytes()),
            analysis,
            session_cmd,
        });
        self.state.statements.insert(name, Arc::clone(&statement));
        statement
    }

    /// Prepares `name` on the active connection first if it lacks it.
    fn ensure_prepared(&mut self, active: usize, name: &[u8]) {
        let Some(st) = self.state.statements.get(name) else {
            return; // Never prepared: the server reports the client's mistake.
        };
        let conn = self.conns[active].as_mut().expect("active connection");
        match conn.prepared.get(name) {
            Some(&id) if id == st.id => return,
            Some(_) if !name.is_empty() => {
                encode::close(
                    &mut conn.out,
                    Target::Statement,
                    &String::from_utf8_lossy(name),
                );
                conn.tracker.push(Request::Close, false);
            }
            _ => {}
        }
        conn.out.extend_from_slice(&st.parse);
        conn.tracker.push(Request::Parse, false);
        conn.prepared.insert(Bytes::copy_from_slice(name), st.id);
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
            self.state.pin(Pin::UnmovableState);
        }
        match cmd {
            Some(c) => self
                .current_meta
                .get_or_insert_with(Default::default)
                .commands
                .push(c),
            None if fx.set_session || fx.discard_all => self.state.pin(Pin::UnreplayableSetting),
            None => {}
        }
    }

    /// Forwards what the active server has sent, dropping replies to
    /// injected requests, and notes what ReadyForQuery says.
    pub(super) async fn forward_server(&mut self) -> Result<(), SessionError> {
        let i = self.active.expect("forwarding needs an active backend");
        let max = self.shared.config.limits.max_message_size;
        // Reused across batches: the response path allocates nothing.
        let mut events = std::mem::take(&mut self.events);
        let conn = self.conns[i].as_mut().expect("active connection");
        let mut frames = Frames::new(&conn.rbuf, Direction::Backend, max);
        let mut all_forwarded = true;
        // Offsets of frames to drop, only filled in the rare injected case.
        let mut dropped: Vec<(usize, usize)> = Vec::new();
        let mut start = 0;
        for item in frames.by_ref() {
            let (tag, body) = item.map_err(|source| crate::backend::BackendError::Protocol {
                backend: conn.backend.name.clone(),
                source,
            })?;
            let end = start + 5 + body.len();
            let d = conn.tracker.on_message(tag);
            if d.forward {
                match tag {
                    b'Z' => events.push(Event::Ready(ready_status(body).map_err(|source| {
                        crate::backend::BackendError::Protocol {
                            backend: conn.backend.name.clone(),
                            source,
                        }
                    })?)),
                    b'E' => events.push(Event::Error),
                    b'S' if body.starts_with(b"default_transaction_read_only\0") => {
                        events.push(Event::DefaultReadOnly(body.ends_with(b"on\0")))
                    }
                    b'C' if !self.tx_meta.is_empty() => events.push(Event::Tag(
                        String::from_utf8_lossy(&body[..body.len().saturating_sub(1)]).into_owned(),
                    )),
                    _ => {}
                }
            } else {
                all_forwarded = false;
                dropped.push((start, end));
            }
            start = end;
        }
        let consumed = frames.consumed();
        if consumed > 0 {
            if all_forwarded {
                let batch = conn.rbuf.split_to(consumed);
                self.client.write_all(&batch).await?;
            } else {
                let mut at = 0;
                for (s, e) in dropped {
                    self.wbuf.extend_from_slice(&conn.rbuf[at..s]);
                    at = e;
                }
                self.wbuf.extend_from_slice(&conn.rbuf[at..consumed]);
                conn.rbuf.advance(consumed);
                self.client.write_all(&self.wbuf).await?;
                self.wbuf.clear();
            }
        }
        for e in events.drain(..) {
            self.on_event(e);
        }
        self.events = events;
        self.maybe_release();
        Ok(())
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Error => self.segment_failed = true,
            Event::DefaultReadOnly(on) => self.state.default_read_only = on,
            Event::Tag(tag) => self.last_command_tag = Some(tag),
            Event::Ready(status) => {
                let was = self.tx;
                self.tx = status;
                let meta = self.segments.pop_front().flatten();
                let failed = std::mem::take(&mut self.segment_failed);
                if let Some(meta) = meta {
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
        for (cmd, sql) in &meta.commands {
            self.state.apply(cmd, sql);
        }
        // The connection that ran them already has them.
        if let Some(c) = self.active.and_then(|i| self.conns[i].as_mut()) {
            c.state_version = self.state.version;
            if meta
                .commands
                .iter()
                .any(|(c, _)| *c == SessionCommand::DiscardAll)
            {
                c.prepared.clear();
            }
        }
    }
}

pub(super) enum Event {
    Ready(TransactionStatus),
    Error,
    DefaultReadOnly(bool),
    Tag(String),
}
