//! Moving frames: client requests onto the active server connection (with
//! the statements and settings that connection lacks), and server replies
//! back to the client (minus the replies to what pgsplit injected).

use std::sync::Arc;

use bytes::Bytes;
use pgsplit_protocol::encode;
use pgsplit_protocol::frontend::{self, FrontendMessage, Target};
use pgsplit_protocol::pipeline::Request;
use pgsplit_protocol::Frame;
use pgsplit_router::session_cmd::{session_command, SessionCommand};
use pgsplit_router::Analysis;

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
                conn.tracker.push(Request::Synthetic(reply), true);
                let mut answered = false;
                while let Some(reply) = conn.tracker.take_synthetic() {
                    encode::raw_message(&mut self.wbuf, reply, &[]);
                    answered = true;
                }
                // Answered at once: a retry elsewhere must not answer it
                // again. (Queued behind server replies, it is answered
                // with them, so a retry answers it then.)
                if answered && self.replayable {
                    let kept = self.replay.len().saturating_sub(frame.as_bytes().len());
                    self.replay.truncate(kept);
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
            local: super::local::is_admin(sql),
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

    fn pin(&mut self, why: Pin) {
        if self.state.pinned.is_none() {
            self.shared.pins[why as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.state.pin(why);
    }
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
