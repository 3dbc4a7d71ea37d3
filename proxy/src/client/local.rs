//! Requests pgsplit answers without a server, over both protocols: admin
//! commands, and everything a client sends inside a transaction whose
//! server was lost (answered as PostgreSQL answers an aborted transaction,
//! so the client ends it with ROLLBACK and carries on).

use std::sync::Arc;

use bytes::Bytes;
use pgsplit_protocol::encode::{self, ErrorInfo};
use pgsplit_protocol::frame::Frames;
use pgsplit_protocol::frontend::{self, FrontendMessage, Target};
use pgsplit_protocol::{split_frame, Direction, TransactionStatus};
use pgsplit_router::admin::parse_admin;

use super::session::Session;
use super::state::Statement;
use crate::admin::Outcome;
use crate::errors::SessionError;

impl Session {
    /// Whether the request starting with the frame `tag`/`body` (the front
    /// of the buffer) is pgsplit's to answer.
    pub(super) fn front_is_local(&self, tag: u8, body: &[u8]) -> bool {
        if self.failed_tx {
            return true;
        }
        match tag {
            b'Q' => is_admin(body),
            b'P' => {
                let name_end = memchr::memchr(0, body).map_or(body.len(), |i| i + 1);
                is_admin(&body[name_end..])
            }
            b'B' => {
                let portal_end = memchr::memchr(0, body).map_or(body.len(), |i| i + 1);
                self.state
                    .statements
                    .get(until_nul(&body[portal_end..]))
                    .is_some_and(|st| st.local)
            }
            _ => false,
        }
    }

    /// Answers the request at the front of the buffer (a Query, or
    /// extended messages through Sync). Returns false until it is complete.
    pub(super) async fn answer_locally(&mut self) -> Result<bool, SessionError> {
        let max = self.shared.config.limits.max_message_size;
        let mut complete = false;
        for item in Frames::new(&self.rbuf, Direction::Frontend, max) {
            let (tag, _) = item?;
            if matches!(tag, b'Q' | b'S' | b'F' | b'H') {
                complete = true;
                break;
            }
        }
        if !complete {
            return Ok(false);
        }
        let mut skipping = false;
        let mut portals: Vec<(Bytes, Arc<Statement>)> = Vec::new();
        while let Some(frame) = split_frame(&mut self.rbuf, Direction::Frontend, max)? {
            let tag = frame.tag();
            if skipping && tag != b'S' {
                continue;
            }
            match frontend::parse(&frame)? {
                FrontendMessage::Query { sql } => {
                    let sql = sql.to_vec();
                    if !sql.iter().all(u8::is_ascii_whitespace) {
                        let outcome = self.local_outcome(&sql).await;
                        self.emit(outcome, true);
                    } else {
                        encode::empty_query_response(&mut self.wbuf);
                    }
                    self.local_ready();
                    return Ok(true);
                }
                FrontendMessage::Parse { name, sql, .. } => {
                    let st = self.register(name, frame.body(), sql);
                    if st.local || self.failed_tx {
                        encode::raw_message(&mut self.wbuf, b'1', &[]);
                    } else {
                        skipping = self.emit_error(ErrorInfo::error(
                            "0A000",
                            "pgsplit: an admin command cannot share a request with other statements",
                        )
                        .hint("Send SHOW pool_* and PGSPLIT commands on their own."));
                    }
                }
                FrontendMessage::Bind { portal, statement } => {
                    match self.state.statements.get(statement).cloned() {
                        Some(st) => {
                            portals.retain(|(p, _)| p[..] != *portal);
                            portals.push((Bytes::copy_from_slice(portal), st));
                            encode::raw_message(&mut self.wbuf, b'2', &[]);
                        }
                        None => {
                            skipping = self.emit_error(ErrorInfo::error(
                                "26000",
                                format!(
                                    "prepared statement \"{}\" does not exist",
                                    String::from_utf8_lossy(statement)
                                ),
                            ));
                        }
                    }
                }
                FrontendMessage::Describe { target, name } => {
                    let st = match target {
                        Target::Statement => self.state.statements.get(name).cloned(),
                        Target::Portal => portals
                            .iter()
                            .find(|(p, _)| p[..] == *name)
                            .map(|(_, st)| Arc::clone(st)),
                    };
                    let Some(st) = st else {
                        skipping = self.emit_error(ErrorInfo::error(
                            "26000",
                            "pgsplit: Describe of a statement or portal that does not exist",
                        ));
                        continue;
                    };
                    if target == Target::Statement {
                        // No parameters.
                        encode::raw_message(&mut self.wbuf, b't', &[&[0, 0]]);
                    }
                    let columns = self.local_columns(&st);
                    if columns.is_empty() {
                        encode::raw_message(&mut self.wbuf, b'n', &[]);
                    } else {
                        encode::row_description(&mut self.wbuf, columns);
                    }
                }
                FrontendMessage::Execute { portal, .. } => {
                    let st = portals
                        .iter()
                        .find(|(p, _)| p[..] == *portal)
                        .map(|(_, st)| Arc::clone(st));
                    let Some(st) = st else {
                        skipping =
                            self.emit_error(ErrorInfo::error("34000", "portal does not exist"));
                        continue;
                    };
                    let outcome = self.local_outcome(st.sql()).await;
                    skipping = self.emit(outcome, false);
                }
                FrontendMessage::Close { target, name } => {
                    if target == Target::Statement && !name.is_empty() {
                        self.state.statements.remove(name);
                    }
                    encode::raw_message(&mut self.wbuf, b'3', &[]);
                }
                FrontendMessage::Sync => {
                    self.local_ready();
                    return Ok(true);
                }
                FrontendMessage::FunctionCall => {
                    self.emit_error(aborted());
                    self.local_ready();
                    return Ok(true);
                }
                // The client waits for what it asked so far, without a
                // Sync: it has it (written with this batch).
                FrontendMessage::Flush => return Ok(true),
                _ => {}
            }
        }
        unreachable!("the request was checked to be complete")
    }

    fn local_ready(&mut self) {
        if self.failed_tx {
            self.tx = TransactionStatus::Failed;
        }
        encode::ready_for_query(&mut self.wbuf, self.tx);
    }

    fn local_columns(&self, st: &Statement) -> &'static [&'static str] {
        if self.failed_tx {
            return &[];
        }
        match std::str::from_utf8(st.sql()).ok().and_then(parse_admin) {
            Some(Ok(cmd)) => crate::admin::columns(&cmd),
            _ => &[],
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
                encode::command_complete(&mut self.wbuf, &format!("SELECT {}", rows.len()));
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

    async fn local_outcome(&mut self, sql: &[u8]) -> Outcome {
        let text = String::from_utf8_lossy(sql);
        if self.failed_tx {
            // The client has not heard of the loss yet: whatever it sends,
            // COMMIT included, fails with the reason.
            if let Some(reason) = self.lost_reason.take() {
                return Outcome::Error(reason);
            }
            let a = self.shared.classifier.classify(&text);
            if !(a.effects.commit_or_rollback && a.statement_count == 1) {
                return Outcome::Error(aborted());
            }
            if rolls_back_to_savepoint(&text) {
                return Outcome::Error(
                    ErrorInfo::error(
                        "3B001",
                        "pgsplit: the savepoint is gone with the lost server's transaction",
                    )
                    .hint("End the transaction with ROLLBACK and run it again."),
                );
            }
            self.failed_tx = false;
            self.lost_reason = None;
            self.tx = TransactionStatus::Idle;
            return Outcome::Done {
                tag: "ROLLBACK",
                note: None,
            };
        }
        match parse_admin(&text) {
            Some(Ok(pgsplit_router::admin::AdminCommand::Promote(_))) if self.active.is_some() => {
                // Its own transaction would hold the switchover up.
                Outcome::Error(ErrorInfo::error(
                    "25001",
                    "pgsplit: PGSPLIT PROMOTE cannot run inside a transaction block or a pinned session",
                )
                .hint("Run it on a connection of its own, outside a transaction."))
            }
            Some(Ok(cmd)) => {
                let is_admin = self.shared.config.user(&self.user).is_some_and(|u| u.admin);
                crate::admin::run(&self.shared, cmd, is_admin).await
            }
            Some(Err(message)) => Outcome::Error(ErrorInfo::error("42601", message)),
            None => Outcome::Error(ErrorInfo::error(
                "0A000",
                "pgsplit: an admin command cannot share a request with other statements",
            )),
        }
    }
}

fn aborted() -> ErrorInfo {
    ErrorInfo::error(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block",
    )
    .detail("pgsplit lost the server this transaction ran on; the server rolled it back.")
    .hint("Send ROLLBACK, then run the transaction again.")
}

fn rolls_back_to_savepoint(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    let mut words = lower.split_ascii_whitespace();
    words.next() == Some("rollback") && words.any(|w| w == "to")
}

pub(super) fn until_nul(b: &[u8]) -> &[u8] {
    &b[..memchr::memchr(0, b).unwrap_or(b.len())]
}

/// Compares the first word's bytes first: almost every statement fails
/// there, before the end of the text is looked for, any UTF-8 check, or
/// parsing. `text` may run on past a NUL that ends the statement.
pub(super) fn is_admin(text: &[u8]) -> bool {
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let rest = &text[start..];
    let word_len = rest
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == 0)
        .unwrap_or(rest.len());
    let word = &rest[..word_len];
    (word.eq_ignore_ascii_case(b"show") || word.eq_ignore_ascii_case(b"pgsplit"))
        && std::str::from_utf8(until_nul(text)).is_ok_and(|s| parse_admin(s).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_text_is_recognised_cheaply() {
        assert!(is_admin(b"SHOW pool_nodes"));
        assert!(is_admin(b"  pgsplit promote 1"));
        assert!(!is_admin(b"SELECT 1"));
        assert!(!is_admin(b"SHOW search_path"));
        assert!(!is_admin(b""));
        // A Query's body: the text ends at its NUL.
        assert!(is_admin(b"SHOW pool_nodes\0"));
        assert!(!is_admin(b"SHOW\0pool_nodes\0"));
    }

    #[test]
    fn savepoint_rollbacks_are_told_apart() {
        assert!(rolls_back_to_savepoint("ROLLBACK TO SAVEPOINT a"));
        assert!(rolls_back_to_savepoint("rollback work to a"));
        assert!(!rolls_back_to_savepoint("ROLLBACK"));
        assert!(!rolls_back_to_savepoint("COMMIT"));
    }
}
