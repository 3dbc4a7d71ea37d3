//! Client frames onto the attached server connection, with the statements
//! and settings that connection lacks, and what each frame changes about
//! the session once it succeeds.

use std::sync::Arc;

use bytes::Bytes;
use pgsplit_protocol::encode;
use pgsplit_protocol::frontend::{self, FrontendMessage, Target};
use pgsplit_protocol::pipeline::Request;
use pgsplit_protocol::tag::{backend as be, frontend as fe};
use pgsplit_protocol::Frame;
use pgsplit_router::session_cmd::{session_command, SessionCommand};
use pgsplit_router::Analysis;

use super::phase::Attachment;
use super::session::{Client, Flow};
use super::state::{Pin, Statement};
use super::text::{is_admin, statement_hash, until_nul};
use crate::backend::{Prepare, ServerConn};
use crate::errors::SessionError;

/// How a client frame reaches the server.
enum Send {
    /// Unchanged.
    Forward,
    /// Rewritten into the connection's buffer already (statement renamed).
    Written,
    /// Not sent: pgsplit answers it itself with this message tag.
    Answer(u8),
}

impl Client {
    /// Queues one client frame for the attached server.
    pub(super) fn send_frame(
        &mut self,
        a: &mut Attachment,
        frame: Frame,
    ) -> Result<Flow, SessionError> {
        let tag = frame.tag();
        if tag == fe::TERMINATE {
            return Ok(Flow::Terminate);
        }
        if !fe::is_session_message(tag) {
            // Forwarded, the server would end the connection with a FATAL.
            return Err(SessionError::UnknownMessage(tag));
        }
        let send = match frontend::parse(&frame)? {
            FrontendMessage::Query { sql } => {
                self.note_statement(a, sql);
                self.end_segment(a);
                // A simple query replaces the unnamed statement.
                a.conn.prepared().set_unnamed(None);
                Send::Forward
            }
            FrontendMessage::Parse { name, .. } => {
                let st = self.register(name, frame.body());
                self.parse_on(&mut a.conn, name.is_empty(), &st)
            }
            FrontendMessage::Bind { statement, .. } => {
                match self.state.statements.get(statement).cloned() {
                    None => Send::Forward,
                    Some(st) => {
                        self.ensure_prepared(&mut a.conn, &st);
                        self.note_effects(a, &st.analysis, st.session_cmd.clone());
                        if st.server_name.is_empty() {
                            Send::Forward
                        } else {
                            let bind = frontend::split_bind_body(frame.body())?;
                            encode::bind_renamed(
                                a.conn.out(),
                                bind.portal,
                                st.server_name.as_bytes(),
                                bind.rest,
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
                    self.ensure_prepared(&mut a.conn, &st);
                    encode::describe(a.conn.out(), Target::Statement, &st.server_name);
                    Send::Written
                }
                Some(st) => {
                    self.ensure_prepared(&mut a.conn, &st);
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
                Send::Answer(be::CLOSE_COMPLETE)
            }
            FrontendMessage::Sync | FrontendMessage::FunctionCall => {
                self.end_segment(a);
                Send::Forward
            }
            _ => Send::Forward,
        };
        self.queue(a, send, &frame);
        Ok(Flow::Continue)
    }

    /// Puts `frame` (or what replaces it) on the connection's queue.
    fn queue(&mut self, a: &mut Attachment, send: Send, frame: &Frame) {
        let conn = &mut a.conn;
        let tag = frame.tag();
        match send {
            Send::Forward => {
                if let Some(request) = Request::for_frontend_tag(tag) {
                    conn.expect_replies(request, true);
                }
                conn.out().extend_from_slice(frame.as_bytes());
            }
            Send::Written => {
                if let Some(request) = Request::for_frontend_tag(tag) {
                    conn.expect_replies(request, true);
                }
            }
            Send::Answer(reply) => {
                conn.expect_replies(Request::Synthetic(reply), true);
                let mut answered = false;
                while let Some(reply) = conn.take_synthetic() {
                    encode::empty_message(&mut self.wbuf, reply);
                    answered = true;
                }
                // Answered at once: a retry elsewhere must not answer it
                // again. (Queued behind server replies, it is answered
                // with them, so a retry answers it then.)
                if answered {
                    a.retry.answered_last(frame.as_bytes().len());
                }
            }
        }
    }

    /// A client Parse on the attached connection: forwarded under the
    /// statement's server name, or answered at once when the server already
    /// has that statement.
    fn parse_on(&mut self, conn: &mut ServerConn, unnamed: bool, st: &Arc<Statement>) -> Send {
        let max = self.shared.config.pool.max_prepared_statements;
        if unnamed {
            conn.prepared().set_unnamed(Some(st.hash));
            return Send::Forward;
        }
        if !queue_parse(conn, st, max) {
            return Send::Answer(be::PARSE_COMPLETE);
        }
        self.current_meta
            .get_or_insert_with(Default::default)
            .parsed
            .push(st.hash);
        Send::Written
    }

    /// The request's terminator is being sent: whatever it changes is
    /// recorded when its ReadyForQuery comes back.
    pub(super) fn end_segment(&mut self, a: &mut Attachment) {
        a.open_request = false;
        self.segments.push_back(self.current_meta.take());
    }

    /// Records a client Parse (`body`: the Parse message body).
    pub(super) fn register(&mut self, name: &[u8], body: &[u8]) -> Arc<Statement> {
        // Drivers using the unnamed statement re-Parse the same text on every
        // execution: reuse the previous record instead of rebuilding it.
        let rest = &body[(name.len() + 1).min(body.len())..];
        if let Some(st) = self.state.statements.get(name) {
            if st.body[..] == *rest {
                return Arc::clone(st);
            }
        }
        let sql = until_nul(rest);
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
            local: is_admin(sql) || super::own::own_command(sql).is_some(),
        });
        self.state
            .statements
            .insert(Bytes::copy_from_slice(name), Arc::clone(&statement));
        statement
    }

    /// Prepares `st` on the connection first if it lacks it; the server's
    /// reply to that is not forwarded.
    pub(super) fn ensure_prepared(&mut self, conn: &mut ServerConn, st: &Statement) {
        let max = self.shared.config.pool.max_prepared_statements;
        if st.server_name.is_empty() {
            if !conn.prepared().has_unnamed(st.hash) {
                encode::parse_raw(conn.out(), b"", &st.body);
                conn.expect_replies(Request::Parse, false);
                conn.prepared().set_unnamed(Some(st.hash));
            }
            return;
        }
        if queue_parse(conn, st, max) {
            conn.expect_replies(Request::Parse, false);
        }
    }

    /// Session effects of a simple-protocol query string.
    fn note_statement(&mut self, a: &mut Attachment, sql: &[u8]) {
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
        self.note_effects(a, &analysis, cmd);
    }

    pub(super) fn note_effects(
        &mut self,
        a: &mut Attachment,
        an: &Analysis,
        cmd: Option<(SessionCommand, Arc<str>)>,
    ) {
        let fx = &an.effects;
        if fx.pins_session {
            if Some(a.backend) == self.shared.primary() {
                self.pin(Pin::UnmovableState);
            } else {
                // Made inside a read-only transaction on a replica: the
                // session cannot stay there (its writes go to the primary),
                // so the connection is closed when released rather than
                // handed to someone else with that state on it.
                a.discard_on_release = true;
            }
        }
        if fx.deallocate_all || fx.discard_all {
            // Takes pgsplit's statements on this connection with it.
            a.conn.prepared().forget();
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

    pub(super) fn pin(&mut self, why: Pin) {
        if self.state.pinned.is_none() {
            self.shared.pins[why as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.state.pin(why);
    }
}

/// Queues a Parse of `st` under its server name unless the connection has
/// it already; returns whether a Parse was queued, for the caller to
/// account for its reply.
fn queue_parse(conn: &mut ServerConn, st: &Statement, max: usize) -> bool {
    let Prepare::Needed { evict } = conn.prepared().use_named(st.hash, max) else {
        return false;
    };
    if let Some(victim) = evict {
        // Its reply is not forwarded.
        close_statement(conn, &format!("pgsplit_{victim:016x}"));
    }
    // Closed first: the server may still have it (pgsplit forgets
    // statements conservatively after errors), and closing a statement
    // that does not exist is not an error.
    close_statement(conn, &st.server_name);
    encode::parse_raw(conn.out(), st.server_name.as_bytes(), &st.body);
    true
}

fn close_statement(conn: &mut ServerConn, name: &str) {
    encode::close(conn.out(), Target::Statement, name);
    conn.expect_replies(Request::Close, false);
}
