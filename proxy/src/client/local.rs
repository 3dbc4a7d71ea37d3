//! Requests pgsplit answers without a server, over both protocols: admin
//! commands, pgsplit's own `SET`/`RESET`/`SHOW pgsplit.*`, and everything a
//! client sends while its transaction's server is lost (answered as
//! PostgreSQL answers an aborted transaction, so the client ends it with
//! ROLLBACK and carries on).

use std::sync::Arc;

use bytes::Bytes;
use pgsplit_protocol::encode::{self, ErrorInfo};
use pgsplit_protocol::frame::Frames;
use pgsplit_protocol::frontend::{self, FrontendMessage, Target};
use pgsplit_protocol::tag::frontend as fe;
use pgsplit_protocol::{split_frame, Direction, TransactionStatus};
use pgsplit_router::admin::{parse_admin, AdminCommand};

use super::own::{own_command, Verb};
use super::phase::Phase;
use super::session::{Client, Session};
use super::state::Statement;
use super::text::{is_admin, until_nul};
use crate::admin::Outcome;
use crate::errors::{self, SessionError};

/// An extended-protocol request being answered locally.
#[derive(Default)]
struct Local {
    /// An error was sent: the rest is skipped up to the Sync.
    skipping: bool,
    portals: Vec<(Bytes, Arc<Statement>)>,
}

impl Local {
    fn portal(&self, name: &[u8]) -> Option<Arc<Statement>> {
        self.portals
            .iter()
            .find(|(p, _)| p[..] == *name)
            .map(|(_, st)| Arc::clone(st))
    }
}

impl Client {
    /// Whether the request starting with the frame `tag`/`body` (the front
    /// of the buffer) is pgsplit's to answer.
    pub(super) fn front_is_local(&self, tag: u8, body: &[u8], aborted: bool) -> bool {
        if aborted {
            return true;
        }
        let ours = |text: &[u8]| is_admin(text) || own_command(text).is_some();
        match tag {
            fe::QUERY => ours(body),
            fe::PARSE => {
                let name_end = memchr::memchr(0, body).map_or(body.len(), |i| i + 1);
                ours(&body[name_end..])
            }
            fe::BIND => {
                let portal_end = memchr::memchr(0, body).map_or(body.len(), |i| i + 1);
                self.state
                    .statements
                    .get(until_nul(&body[portal_end..]))
                    .is_some_and(|st| st.local)
            }
            _ => false,
        }
    }
}

impl Session {
    /// Answers the request at the front of the buffer (a Query, or
    /// extended messages through Sync). Returns false until it is complete.
    pub(super) async fn answer_locally(&mut self) -> Result<bool, SessionError> {
        let max = self.c.shared.config.limits.max_message_size;
        let mut complete = false;
        for item in Frames::new(&self.c.rbuf, Direction::Frontend, max) {
            let (tag, _) = item?;
            if matches!(tag, fe::QUERY | fe::SYNC | fe::FUNCTION_CALL | fe::FLUSH) {
                complete = true;
                break;
            }
        }
        if !complete {
            return Ok(false);
        }
        let mut local = Local::default();
        while let Some(frame) = split_frame(&mut self.c.rbuf, Direction::Frontend, max)? {
            if local.skipping && frame.tag() != fe::SYNC {
                continue;
            }
            match frontend::parse(&frame)? {
                FrontendMessage::Query { sql } => {
                    let sql = sql.to_vec();
                    if sql.iter().all(u8::is_ascii_whitespace) {
                        encode::empty_query_response(&mut self.c.wbuf);
                    } else {
                        let outcome = self.local_outcome(&sql).await;
                        self.c.emit(outcome, true);
                    }
                    self.local_ready();
                    return Ok(true);
                }
                FrontendMessage::Parse { name, .. } => {
                    let aborted = self.phase.is_aborted();
                    self.c.local_parse(&mut local, name, frame.body(), aborted);
                }
                FrontendMessage::Bind { portal, statement } => {
                    self.c.local_bind(&mut local, portal, statement)
                }
                FrontendMessage::Describe { target, name } => {
                    let aborted = self.phase.is_aborted();
                    self.c.local_describe(&mut local, target, name, aborted);
                }
                FrontendMessage::Execute { portal, .. } => {
                    let Some(st) = local.portal(portal) else {
                        local.skipping = self
                            .c
                            .emit_error(errors::undefined("34000", "portal does not exist".into()));
                        continue;
                    };
                    let outcome = self.local_outcome(st.sql()).await;
                    local.skipping = self.c.emit(outcome, false);
                }
                FrontendMessage::Close { target, name } => {
                    if target == Target::Statement && !name.is_empty() {
                        self.c.state.statements.remove(name);
                    }
                    encode::close_complete(&mut self.c.wbuf);
                }
                FrontendMessage::Sync => {
                    self.local_ready();
                    return Ok(true);
                }
                FrontendMessage::FunctionCall => {
                    self.c.emit_error(errors::aborted_transaction());
                    self.local_ready();
                    return Ok(true);
                }
                // The client waits for what it asked so far, without a
                // Sync: it has it (written with this batch).
                FrontendMessage::Flush => return Ok(true),
                _ => {}
            }
        }
        Ok(true)
    }

    fn local_ready(&mut self) {
        if self.phase.is_aborted() {
            self.c.tx = TransactionStatus::Failed;
        }
        encode::ready_for_query(&mut self.c.wbuf, self.c.tx);
    }

    async fn local_outcome(&mut self, sql: &[u8]) -> Outcome {
        let text = String::from_utf8_lossy(sql);
        if let Phase::Aborted { reason } = &mut self.phase {
            // The client has not heard of the loss yet: whatever it sends,
            // COMMIT included, fails with the reason.
            if let Some(reason) = reason.take() {
                return Outcome::Error(reason);
            }
            let a = self.c.shared.classifier.classify(&text);
            if !(a.effects.commit_or_rollback && a.statement_count == 1) {
                return Outcome::Error(errors::aborted_transaction());
            }
            if rolls_back_to_savepoint(&text) {
                return Outcome::Error(errors::savepoint_lost());
            }
            self.phase = Phase::IDLE;
            self.c.tx = TransactionStatus::Idle;
            return Outcome::Done {
                tag: "ROLLBACK",
                note: None,
            };
        }
        if let Some((verb, which)) = own_command(sql) {
            return self.c.own_outcome(verb, which, &text);
        }
        match parse_admin(&text) {
            // Its own transaction would hold the switchover (or the
            // pause) up.
            // In session pooling, its own connections count as in use.
            Some(Ok(cmd @ (AdminCommand::Promote(_) | AdminCommand::Pause)))
                if matches!(self.phase, Phase::Attached(_))
                    || self.c.conns.iter().any(Option::is_some) =>
            {
                Outcome::Error(errors::admin_in_transaction(cmd.tag()))
            }
            Some(Ok(cmd)) => {
                let c = &self.c;
                let is_admin = c.shared.config.user(&c.user).is_some_and(|u| u.admin);
                crate::admin::run(&c.shared, cmd, is_admin).await
            }
            Some(Err(message)) => Outcome::Error(errors::admin_syntax(message)),
            None => Outcome::Error(errors::admin_not_alone()),
        }
    }
}

impl Client {
    fn local_parse(&mut self, local: &mut Local, name: &[u8], body: &[u8], aborted: bool) {
        let st = self.register(name, body);
        if st.local || aborted {
            encode::parse_complete(&mut self.wbuf);
        } else {
            local.skipping = self.emit_error(errors::admin_not_alone());
        }
    }

    fn local_bind(&mut self, local: &mut Local, portal: &[u8], statement: &[u8]) {
        match self.state.statements.get(statement).cloned() {
            Some(st) => {
                local.portals.retain(|(p, _)| p[..] != *portal);
                local.portals.push((Bytes::copy_from_slice(portal), st));
                encode::bind_complete(&mut self.wbuf);
            }
            None => {
                let name = String::from_utf8_lossy(statement);
                local.skipping = self.emit_error(errors::undefined(
                    "26000",
                    format!("prepared statement \"{name}\" does not exist"),
                ));
            }
        }
    }

    fn local_describe(&mut self, local: &mut Local, target: Target, name: &[u8], aborted: bool) {
        let st = match target {
            Target::Statement => self.state.statements.get(name).cloned(),
            Target::Portal => local.portal(name),
        };
        let Some(st) = st else {
            local.skipping = self.emit_error(errors::undefined(
                "26000",
                "pgsplit: Describe of a statement or portal that does not exist".into(),
            ));
            return;
        };
        if target == Target::Statement {
            encode::parameter_description(&mut self.wbuf, &[]);
        }
        let columns = if aborted { &[][..] } else { local_columns(&st) };
        if columns.is_empty() {
            encode::no_data(&mut self.wbuf);
        } else {
            encode::row_description(&mut self.wbuf, columns);
        }
    }

    /// Writes an outcome; returns whether it was an error (the rest of an
    /// extended request is then skipped up to its Sync).
    fn emit(&mut self, outcome: Outcome, describe: bool) -> bool {
        match outcome {
            Outcome::Rows { columns, rows } => {
                if describe {
                    encode::row_description(&mut self.wbuf, columns);
                }
                for row in &rows {
                    let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
                    encode::data_row(&mut self.wbuf, &values);
                }
                // `SHOW pgsplit.*` answers as `SHOW` does.
                let tag = if columns.len() == 1 && columns[0].starts_with("pgsplit.") {
                    "SHOW".to_owned()
                } else {
                    format!("SELECT {}", rows.len())
                };
                encode::command_complete(&mut self.wbuf, &tag);
                false
            }
            Outcome::Done { tag, note } => {
                if let Some(note) = note {
                    encode::notice_response(&mut self.wbuf, &ErrorInfo::notice("00000", note));
                }
                encode::command_complete(&mut self.wbuf, tag);
                false
            }
            Outcome::Error(info) => self.emit_error(info),
        }
    }

    fn emit_error(&mut self, info: ErrorInfo) -> bool {
        encode::error_response(&mut self.wbuf, &info);
        true
    }
}

/// The columns a local statement's Describe reports.
fn local_columns(st: &Statement) -> &'static [&'static str] {
    match own_command(st.sql()) {
        Some((Verb::Show, which)) => return which.columns(),
        Some(_) => return &[],
        None => {}
    }
    match std::str::from_utf8(st.sql()).ok().and_then(parse_admin) {
        Some(Ok(cmd)) => crate::admin::columns(&cmd),
        _ => &[],
    }
}

fn rolls_back_to_savepoint(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    let mut words = lower.split_ascii_whitespace();
    words.next() == Some("rollback") && words.any(|w| w == "to")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoint_rollbacks_are_told_apart() {
        assert!(rolls_back_to_savepoint("ROLLBACK TO SAVEPOINT a"));
        assert!(rolls_back_to_savepoint("rollback work to a"));
        assert!(!rolls_back_to_savepoint("ROLLBACK"));
        assert!(!rolls_back_to_savepoint("COMMIT"));
    }
}
