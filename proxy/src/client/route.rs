//! Where the next request goes.
//!
//! A request is one simple Query, or extended-protocol messages up to Sync
//! (or Flush, when the client waits for results before syncing). It is
//! classified whole before any of it is sent, so a batch that reads and then
//! writes never starts on a replica. As soon as one message needs the
//! primary, the decision is made without waiting for the rest.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pgsplit_protocol::encode::{self, ErrorInfo};
use pgsplit_protocol::frame::Frames;
use pgsplit_protocol::frontend::{self, FrontendMessage};
use pgsplit_protocol::{split_frame, Direction, TransactionStatus};
use pgsplit_router::topology::Role;
use pgsplit_router::{Analysis, Route};

use super::reads::{own_setting, OwnSetting, ReadNeed, SessionCommandKind, Weight};
use super::session::{Flow, Session};
use crate::errors::SessionError;
use crate::functions::{LookupTarget, Verdict};

/// A request whose end has not arrived is decided anyway once this much of
/// it is buffered (a huge batch of reads), bounding the session's memory.
pub(super) const DECIDE_LIMIT: usize = 1 << 20;

pub(super) enum Decision {
    NeedMore,
    /// A read: a server is picked when it is routed (picking advances the
    /// balancer, so deciding again while waiting must not).
    Read(ReadNeed, Weight),
    /// A read no replica can take yet (read-your-writes): wait up to
    /// `routing.causal_wait` for one to meet the need, else the primary.
    WaitForReplica(ReadNeed),
    /// `SET`/`RESET`/`SHOW pgsplit.*`: pgsplit's own settings, answered here.
    Local(SessionCommandKind, OwnSetting),
    /// Parse messages of statements known to be valid, then Sync: answered
    /// by pgsplit, prepared on a server when first executed there.
    LocalPrepare,
    /// A particular server (a read's pick).
    Target {
        backend: usize,
        read: bool,
    },
    /// Whichever server is the primary when the request is sent; during a
    /// failover, the one that appears next.
    Primary {
        read: bool,
    },
    DeferBegin,
    Reject(ErrorInfo),
}

/// What the messages of one request add up to.
#[derive(Default)]
struct Tally {
    write: bool,
    read: bool,
    read_only_txn: bool,
    terminated: bool,
    first_is_single_begin: bool,
    /// Only named Parse messages of known-good statements so far.
    parse_only: bool,
    synced: bool,
    /// A Query, Execute or FunctionCall: the request runs something.
    runs: bool,
}

impl Tally {
    fn weight(&self) -> Weight {
        if self.runs {
            Weight::Runs
        } else {
            Weight::PrepareOnly
        }
    }
}

impl Session {
    /// Sends buffered client frames on, routing each new request.
    pub(super) async fn pump(&mut self) -> Result<Flow, SessionError> {
        let max = self.shared.config.limits.max_message_size;
        loop {
            if self.rejecting {
                let Some(frame) = split_frame(&mut self.rbuf, Direction::Frontend, max)? else {
                    return Ok(Flow::Continue);
                };
                match frame.tag() {
                    b'S' => {
                        self.rejecting = false;
                        encode::ready_for_query(&mut self.wbuf, self.tx);
                    }
                    b'X' => return Ok(Flow::Terminate),
                    _ => {}
                }
                continue;
            }
            if !self.open_segment {
                if !self.route_next().await? {
                    return Ok(Flow::Continue);
                }
                if self.rejecting || !self.open_segment {
                    continue;
                }
            }
            let Some(frame) = split_frame(&mut self.rbuf, Direction::Frontend, max)? else {
                return Ok(Flow::Continue);
            };
            self.keep_for_replay(frame.as_bytes());
            if let Flow::Terminate = self.send_frame(frame)? {
                return Ok(Flow::Terminate);
            }
        }
    }

    /// Starts the next request. Returns false when it must wait: for more
    /// bytes, or for the active replica to finish before a write may start.
    async fn route_next(&mut self) -> Result<bool, SessionError> {
        let max = self.shared.config.limits.max_message_size;
        let first = Frames::new(&self.rbuf, Direction::Frontend, max).next();
        match first {
            None => return Ok(false),
            // COPY data belongs to the COPY running on the active
            // connection. Sent as it comes, without opening a request, so
            // whatever follows the COPY is routed (and checked) again.
            Some(Ok((b'd' | b'c' | b'f', _))) if self.active.is_some() => {
                let frame = split_frame(&mut self.rbuf, Direction::Frontend, max)?
                    .expect("a complete frame was seen");
                self.keep_for_replay(frame.as_bytes());
                self.send_frame(frame)?;
                return Ok(true);
            }
            // Goodbye needs no server and opens no request.
            Some(Ok((b'X', _))) => return Err(SessionError::ClientGone),
            // The rest of a COPY whose server was lost: nothing to send it to.
            Some(Ok((b'd' | b'c' | b'f', _))) => {
                split_frame(&mut self.rbuf, Direction::Frontend, max)?;
                return Ok(true);
            }
            Some(Ok((tag, body))) if self.front_is_local(tag, body) => {
                if let Some(a) = self.active {
                    let quiet = self.conns[a].as_ref().is_none_or(|c| c.tracker.is_idle());
                    if !quiet {
                        return Ok(false);
                    }
                }
                return self.answer_locally().await;
            }
            _ => {}
        }
        if let Some(a) = self.active {
            let primary = self.shared.primary();
            if self.tx != TransactionStatus::Idle || self.state.pinned.is_some() {
                if self.shared.nodes[a].role() == Role::StalePrimary {
                    // Fenced since this transaction began: nothing more may
                    // commit there.
                    return self
                        .lose_server(a, "it was fenced as a stale primary", false)
                        .map(|()| true);
                }
                self.decided_query = None;
                self.wrote |= Some(a) == primary;
                self.open_segment = true;
                return Ok(true);
            }
            // Between requests, but the connection still owes replies (a
            // pipeline). Writes may follow on the primary and reads on a
            // replica; anything else waits until the connection is free and
            // is routed afresh (a read after a write then knows it wrote).
            return match self.decide()? {
                Decision::Primary { read: false } if Some(a) == primary => {
                    self.count(a, false);
                    // A write joins: a failure may no longer be retried as
                    // if only reads were in flight.
                    self.attached_read = false;
                    self.attached_write = true;
                    self.wrote = true;
                    self.open_segment = true;
                    Ok(true)
                }
                Decision::Read(need, _)
                    if Some(a) != primary && self.replica_satisfies(a, need) =>
                {
                    self.count(a, true);
                    self.open_segment = true;
                    Ok(true)
                }
                _ => Ok(false),
            };
        }
        match self.decide()? {
            Decision::NeedMore => Ok(false),
            Decision::DeferBegin => {
                self.defer_begin()?;
                Ok(true)
            }
            Decision::LocalPrepare => {
                self.prepare_locally()?;
                Ok(true)
            }
            Decision::Local(kind, which) => {
                self.answer_setting(kind, which)?;
                Ok(true)
            }
            Decision::Read(need, weight) => {
                match self.read_target(need, weight) {
                    Decision::Target { backend, read } => match self.attach(backend, read).await {
                        Ok(()) => self.open_segment = true,
                        Err(info) => self.reject(info)?,
                    },
                    Decision::Primary { read } => match self.attach_primary(read).await {
                        Ok(()) => self.open_segment = true,
                        Err(info) => self.reject(info)?,
                    },
                    Decision::WaitForReplica(need) => self.wait_for_replica(need).await?,
                    Decision::Reject(info) => self.reject(info)?,
                    _ => unreachable!("read_target picks, waits or refuses"),
                }
                Ok(true)
            }
            Decision::WaitForReplica(need) => {
                self.wait_for_replica(need).await?;
                Ok(true)
            }
            Decision::Reject(info) => {
                self.reject(info)?;
                Ok(true)
            }
            Decision::Target { backend, read } => {
                match self.attach(backend, read).await {
                    Ok(()) => self.open_segment = true,
                    Err(info) => self.reject(info)?,
                }
                Ok(true)
            }
            Decision::Primary { read } => {
                // A read's position requirement was set by read_target.
                if !read {
                    self.read_min_lsn = 0;
                    self.wrote = true;
                }
                match self.attach_primary(read).await {
                    Ok(()) => self.open_segment = true,
                    Err(info) => self.reject(info)?,
                }
                Ok(true)
            }
        }
    }

    /// Classifies the request at the front of the read buffer, in place.
    pub(super) fn decide(&mut self) -> Result<Decision, SessionError> {
        let max = self.shared.config.limits.max_message_size;
        let mut tally = Tally {
            parse_only: true,
            ..Tally::default()
        };
        let mut unknown: Vec<String> = Vec::new();
        self.decided_query = None;
        let mut frames = Frames::new(&self.rbuf, Direction::Frontend, max);
        let mut first = true;
        for item in frames.by_ref() {
            let (tag, body) = item?;
            let frame_is_first = std::mem::take(&mut first);
            tally.parse_only &= match tag {
                b'P' => self.parse_is_known(body),
                b'S' => !frame_is_first,
                _ => false,
            };
            if tag == b'S' {
                tally.synced = true;
            }
            tally.runs |= matches!(tag, b'Q' | b'E' | b'F');
            let analysis = match tag {
                b'Q' | b'P' => {
                    let sql = sql_of(tag, body);
                    Some(match std::str::from_utf8(sql) {
                        Ok(s) => self.shared.classifier.classify(s),
                        // Not UTF-8: nothing to classify with; the primary is safe.
                        Err(_) => {
                            tally.write = true;
                            break;
                        }
                    })
                }
                b'B' => statement_name(tag, body)
                    .and_then(|n| self.state.statements.get(n))
                    .map(|s| Arc::clone(&s.analysis)),
                b'D' if body.first() == Some(&b'S') => statement_name(tag, body)
                    .and_then(|n| self.state.statements.get(n))
                    .map(|s| Arc::clone(&s.analysis)),
                b'F' => {
                    tally.write = true;
                    tally.terminated = true;
                    break;
                }
                b'S' | b'H' | b'X' => {
                    tally.terminated = true;
                    break;
                }
                _ => None,
            };
            if let Some(a) = analysis {
                if frame_is_first && tag == b'Q' {
                    if let Some((kind, which)) = own_setting(&a, sql_of(tag, body)) {
                        return Ok(Decision::Local(kind, which));
                    }
                    tally.first_is_single_begin = is_single_begin(&a);
                    self.decided_query = Some(Arc::clone(&a));
                }
                self.tally(&a, &mut tally, &mut unknown);
            }
            if tag == b'Q' {
                tally.terminated = true;
                break;
            }
            if tally.write && !tally.parse_only {
                break;
            }
        }
        if first {
            return Ok(Decision::NeedMore);
        }
        if tally.parse_only && tally.synced {
            return Ok(Decision::LocalPrepare);
        }
        if !tally.write && !tally.terminated && self.rbuf.len() < DECIDE_LIMIT {
            return Ok(Decision::NeedMore);
        }
        if !unknown.is_empty() {
            self.look_up_functions(unknown);
        }
        if self.state.pinned.is_some() {
            return Ok(Decision::Primary { read: false });
        }
        if self.state.deferred_begin.is_some() {
            // The deferred transaction runs on a replica only if it declared
            // itself read-only before doing anything.
            return Ok(if tally.read_only_txn && !tally.write {
                Decision::Read(self.read_need(), tally.weight())
            } else {
                Decision::Primary { read: false }
            });
        }
        if tally.first_is_single_begin && !self.state.default_read_only {
            return Ok(Decision::DeferBegin);
        }
        if tally.write {
            return Ok(Decision::Primary { read: false });
        }
        if tally.read || tally.read_only_txn {
            return Ok(Decision::Read(self.read_need(), tally.weight()));
        }
        // Nothing to classify (a lone Sync, a Bind of an unknown statement).
        Ok(Decision::Primary { read: false })
    }

    fn tally(&self, a: &Analysis, t: &mut Tally, unknown: &mut Vec<String>) {
        let fx = &a.effects;
        if fx.begin_read_only || (fx.begin && self.state.default_read_only) {
            t.read_only_txn = true;
            return;
        }
        if fx.set_transaction_read_only {
            t.read_only_txn = true;
            return;
        }
        if a.route == Route::Primary || fx.pins_session {
            t.write = true;
            return;
        }
        if !a.unknown_functions.is_empty() {
            match self
                .shared
                .functions
                .verdict(&self.database, &a.unknown_functions)
            {
                Verdict::ReadOnly => {}
                Verdict::MayWrite => {
                    t.write = true;
                    return;
                }
                Verdict::Unknown(names) => {
                    unknown.extend(names);
                    t.write = true;
                    return;
                }
            }
        }
        t.read = true;
    }

    fn look_up_functions(&self, functions: Vec<String>) {
        let auth = &self.shared.users[&self.user];
        // Any server has the catalog; the primary has the newest.
        let b = &self.shared.backends[self.shared.primary().unwrap_or(0)];
        self.shared.functions.look_up(
            LookupTarget {
                host: b.host.clone(),
                port: b.port,
                user: auth.server_user.clone(),
                password: auth.server_password.clone(),
                database: self.database.clone(),
            },
            functions,
        );
    }

    pub(super) fn count(&self, backend: usize, read: bool) {
        let s = &self.shared.stats[backend];
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
                .statement_known_good(super::relay::statement_hash(
                    &self.database,
                    &body[end + 1..],
                )),
        }
    }

    /// Answers Parse messages and their Sync without a server: every
    /// statement is known to parse, and is prepared where it is executed.
    /// Spares a blocking `PQprepare` from waiting for a pooled connection
    /// that its own thread's other clients hold.
    fn prepare_locally(&mut self) -> Result<(), SessionError> {
        let max = self.shared.config.limits.max_message_size;
        while let Some(frame) = split_frame(&mut self.rbuf, Direction::Frontend, max)? {
            match frontend::parse(&frame)? {
                FrontendMessage::Parse { name, sql, .. } => {
                    self.register(name, frame.body(), sql);
                    encode::raw_message(&mut self.wbuf, b'1', &[]);
                }
                FrontendMessage::Sync => {
                    encode::ready_for_query(&mut self.wbuf, self.tx);
                    return Ok(());
                }
                _ => unreachable!("decide() saw only Parse and Sync"),
            }
        }
        unreachable!("decide() saw the Sync")
    }

    /// Answers a bare BEGIN itself; the transaction starts on whichever
    /// server its first statement is routed to.
    fn defer_begin(&mut self) -> Result<(), SessionError> {
        let max = self.shared.config.limits.max_message_size;
        let frame = split_frame(&mut self.rbuf, Direction::Frontend, max)?
            .expect("decide() saw a complete Query");
        self.decided_query = None;
        let FrontendMessage::Query { sql } = frontend::parse(&frame)? else {
            unreachable!("a deferred BEGIN is a Query");
        };
        let sql = String::from_utf8_lossy(sql).into_owned();
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

    /// Refuses the request at the front of the buffer with `info`.
    pub(super) fn reject(&mut self, info: ErrorInfo) -> Result<(), SessionError> {
        tracing::warn!(code = %info.code, message = %info.message, "request refused");
        encode::error_response(&mut self.wbuf, &info);
        self.decided_query = None;
        // A Query or FunctionCall ends with its own ReadyForQuery; extended
        // messages are dropped up to their Sync.
        if matches!(self.rbuf.first(), Some(b'Q' | b'F')) {
            let max = self.shared.config.limits.max_message_size;
            split_frame(&mut self.rbuf, Direction::Frontend, max)?;
            encode::ready_for_query(&mut self.wbuf, self.tx);
        } else {
            self.rejecting = true;
        }
        Ok(())
    }
}

fn sql_of(tag: u8, body: &[u8]) -> &[u8] {
    let body = if tag == b'P' {
        // Skip the statement name.
        let end = memchr::memchr(0, body).map_or(body.len(), |i| i + 1);
        &body[end..]
    } else {
        body
    };
    super::local::until_nul(body)
}

/// The statement a Bind or Describe refers to.
fn statement_name(tag: u8, body: &[u8]) -> Option<&[u8]> {
    let body = match tag {
        // Bind: portal name, then statement name.
        b'B' => &body[body.iter().position(|&b| b == 0)? + 1..],
        // Describe: target byte, then name.
        _ => body.get(1..)?,
    };
    let end = body.iter().position(|&b| b == 0)?;
    Some(&body[..end])
}

fn is_single_begin(a: &Analysis) -> bool {
    a.statement_count == 1 && a.effects.begin && !a.effects.begin_read_only
}

pub(super) fn no_reader_error() -> ErrorInfo {
    ErrorInfo::error(
        "57P03",
        "pgsplit: no server can take this read: no replica is usable and routing.primary_reads is \"off\"",
    )
    .hint("Bring a replica back, or set routing.primary_reads = \"fallback\" to let the primary serve reads meanwhile.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_in_bind_describe_and_parse() {
        assert_eq!(
            statement_name(b'B', b"portal\0stmt\0\0\0"),
            Some(&b"stmt"[..])
        );
        assert_eq!(statement_name(b'B', b"\0\0"), Some(&b""[..]));
        assert_eq!(statement_name(b'D', b"Sname\0"), Some(&b"name"[..]));
        assert_eq!(statement_name(b'B', b"broken"), None);
        assert_eq!(sql_of(b'P', b"s1\0select 1\0\0\0"), b"select 1");
        assert_eq!(sql_of(b'Q', b"select 2\0"), b"select 2");
    }
}
