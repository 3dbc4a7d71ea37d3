//! What the request at the front of the buffer is: its messages are
//! classified in place into a [`RequestShape`], and the pure rules of
//! `pgsplit_router::plan` say where it goes. Also the two requests pgsplit
//! answers itself on a plan's word: a deferred BEGIN, and Parse messages of
//! statements known to be valid.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pgsplit_protocol::encode;
use pgsplit_protocol::frame::Frames;
use pgsplit_protocol::frontend::Target;
use pgsplit_protocol::tag::frontend as fe;
use pgsplit_protocol::{split_frame, Direction, TransactionStatus};
use pgsplit_router::plan::{plan, Functions, Plan, RequestShape, SessionFacts};
use pgsplit_router::Analysis;

use super::large::large_start;
use super::phase::DECIDE_LIMIT;
use super::session::Client;
use super::text::{sql_of, statement_hash, statement_name};
use crate::errors::SessionError;
use crate::functions::{LookupTarget, Verdict};
use crate::topology::BackendId;

impl Client {
    /// Classifies the request at the front of the read buffer, in place.
    /// As soon as one message needs the primary, the plan is made without
    /// waiting for the rest.
    pub(super) fn decide(&mut self) -> Result<Plan, SessionError> {
        let max = self.shared.config.limits.max_message_size;
        let mut shape = RequestShape::default();
        // Only named Parse messages of known-good statements, then a Sync.
        let mut parse_only = true;
        let mut synced = false;
        let mut terminated = false;
        let mut unknown: Vec<String> = Vec::new();
        self.decided_query = None;
        let mut first = true;
        let mut frames = Frames::new(&self.rbuf, Direction::Frontend, max);
        for item in frames.by_ref() {
            let (tag, body) = item?;
            let frame_is_first = std::mem::take(&mut first);
            parse_only &= match tag {
                fe::PARSE => self.parse_is_known(body),
                fe::SYNC => !frame_is_first,
                _ => false,
            };
            synced |= tag == fe::SYNC;
            shape.runs |= matches!(tag, fe::QUERY | fe::EXECUTE | fe::FUNCTION_CALL);
            let analysis = match tag {
                fe::QUERY | fe::PARSE => match std::str::from_utf8(sql_of(tag, body)) {
                    Ok(s) => Some(self.shared.classifier.classify(s)),
                    // Not UTF-8: nothing to classify with; the primary is safe.
                    Err(_) => {
                        shape.writes = true;
                        break;
                    }
                },
                fe::BIND => self.statement_analysis(tag, body),
                fe::DESCRIBE if body.first() == Some(&Target::Statement.as_byte()) => {
                    self.statement_analysis(tag, body)
                }
                fe::FUNCTION_CALL => {
                    shape.writes = true;
                    terminated = true;
                    break;
                }
                fe::SYNC | fe::FLUSH | fe::TERMINATE => {
                    terminated = true;
                    break;
                }
                t if !fe::is_session_message(t) => return Err(SessionError::UnknownMessage(t)),
                _ => None,
            };
            if let Some(a) = analysis {
                if frame_is_first && tag == fe::QUERY {
                    shape.bare_begin = is_single_begin(&a);
                    self.decided_query = Some(Arc::clone(&a));
                }
                self.add_statement(&mut shape, &a, &mut unknown);
            }
            if tag == fe::QUERY {
                terminated = true;
                break;
            }
            if shape.writes && !parse_only {
                break;
            }
        }
        if !terminated {
            if let Some(large) = large_start(&self.rbuf[frames.consumed()..], max) {
                // Passed on as it comes (`stream.rs`): what follows it
                // cannot be seen before it is sent.
                first = false;
                terminated = true;
                shape.runs = true;
                match large.tag {
                    // Too large to read: the primary is safe for anything.
                    fe::QUERY => shape.writes = true,
                    _ => {
                        let body = &self.rbuf[frames.consumed() + 5..];
                        if let Some(a) = self.statement_analysis(fe::BIND, body) {
                            self.add_statement(&mut shape, &a, &mut unknown);
                        }
                    }
                }
            }
        }
        if first {
            return Ok(Plan::NeedMore);
        }
        shape.known_prepares = parse_only && synced;
        shape.complete = terminated || self.rbuf.len() >= DECIDE_LIMIT;
        if !unknown.is_empty() {
            self.look_up_functions(unknown);
        }
        let facts = SessionFacts {
            pinned: self.state.pinned.is_some(),
            deferred_begin: self.state.deferred_begin.is_some(),
            default_read_only: self.state.default_read_only,
        };
        Ok(plan(&shape, facts))
    }

    /// The classification of the statement a Bind or Describe names.
    fn statement_analysis(&self, tag: u8, body: &[u8]) -> Option<Arc<Analysis>> {
        statement_name(tag, body)
            .and_then(|n| self.state.statements.get(n))
            .map(|s| Arc::clone(&s.analysis))
    }

    /// Adds one classified statement; functions the catalog does not know
    /// yet are collected in `unknown` to be looked up.
    fn add_statement(&self, shape: &mut RequestShape, a: &Analysis, unknown: &mut Vec<String>) {
        let catalog = &self.shared.functions;
        shape.add_statement(a, self.state.default_read_only, |names| {
            match catalog.verdict(&self.database, names) {
                Verdict::ReadOnly => Functions::ReadOnly,
                Verdict::MayWrite => Functions::MayWrite,
                Verdict::Unknown(names) => {
                    unknown.extend(names);
                    Functions::NotKnownYet
                }
            }
        });
    }

    fn look_up_functions(&self, functions: Vec<String>) {
        let (user, password) = self.login.catalog_login(&self.shared.config);
        // Any server has the catalog; the primary has the newest.
        let primary = self.shared.primary().unwrap_or(BackendId::nth(0));
        let b = &self.shared.topology.backends[primary].addr;
        self.shared.functions.look_up(
            LookupTarget {
                addr: b.clone(),
                timeouts: self.shared.config.timeouts.clone(),
                user,
                password,
                database: self.database.clone(),
            },
            functions,
        );
    }

    /// Counts a request routed to `backend`.
    pub(super) fn count(&self, backend: BackendId, read: bool) {
        let s = &self.shared.topology.backends[backend].stats;
        s.routed.fetch_add(1, Ordering::Relaxed);
        if read {
            s.reads.fetch_add(1, Ordering::Relaxed);
        } else {
            s.writes.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn parse_is_known(&self, body: &[u8]) -> bool {
        match body.iter().position(|&b| b == 0) {
            Some(0) | None => false,
            Some(end) => self
                .shared
                .statement_known_good(statement_hash(&self.database, &body[end + 1..])),
        }
    }

    /// Answers Parse messages and their Sync without a server: every
    /// statement is known to parse, and is prepared where it is executed.
    /// Spares a blocking `PQprepare` from waiting for a pooled connection
    /// that its own thread's other clients hold.
    pub(super) fn prepare_locally(&mut self) -> Result<(), SessionError> {
        let max = self.shared.config.limits.max_message_size;
        while let Some(frame) = split_frame(&mut self.rbuf, Direction::Frontend, max)? {
            match frame.tag() {
                fe::PARSE => {
                    let (name, _) = pgsplit_protocol::frontend::split_parse_body(frame.body())?;
                    self.register(name, frame.body());
                    encode::parse_complete(&mut self.wbuf);
                }
                fe::SYNC => {
                    encode::ready_for_query(&mut self.wbuf, self.tx);
                    break;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Answers a bare BEGIN itself; the transaction starts on whichever
    /// server its first statement is routed to.
    pub(super) fn defer_begin(&mut self) -> Result<(), SessionError> {
        let max = self.shared.config.limits.max_message_size;
        let Some(frame) = split_frame(&mut self.rbuf, Direction::Frontend, max)? else {
            return Ok(());
        };
        self.decided_query = None;
        let sql = String::from_utf8_lossy(sql_of(fe::QUERY, frame.body())).into_owned();
        let tag = if sql.trim_start().to_ascii_lowercase().starts_with("start") {
            "START TRANSACTION"
        } else {
            "BEGIN"
        };
        encode::command_complete(&mut self.wbuf, tag);
        self.tx = TransactionStatus::InTransaction;
        encode::ready_for_query(&mut self.wbuf, self.tx);
        self.state.deferred_begin = Some(sql);
        Ok(())
    }
}

fn is_single_begin(a: &Analysis) -> bool {
    a.statement_count == 1 && a.effects.begin && !a.effects.begin_read_only
}
