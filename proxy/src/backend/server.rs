//! What the session layer may do with a server connection: queue requests
//! (with the replies they owe), read replies, and note what the replies say.
//! Its fields stay private to `backend`, so the bookkeeping (what is owed,
//! which statements exist, which settings are applied) changes only here.

use bytes::BytesMut;
use pgsplit_protocol::pipeline::{Disposition, Request, ResponseTracker};
use pgsplit_protocol::{Direction, TransactionStatus};

use super::{Prepared, ServerConn};
use crate::io::ReadError;

impl ServerConn {
    pub fn backend_name(&self) -> &str {
        &self.backend.name
    }

    /// Address, process id and secret key: what a cancel request needs.
    pub fn cancel_key(&self) -> (std::net::SocketAddr, i32, i32) {
        (self.addr, self.pid, self.secret)
    }

    /// ParameterStatus values as the server last reported them.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// Transaction status from the last ReadyForQuery.
    pub fn tx(&self) -> TransactionStatus {
        self.tx
    }

    /// Fingerprint of the session settings applied here; 0: server defaults.
    pub fn settings(&self) -> u64 {
        self.settings
    }

    pub fn set_settings(&mut self, fingerprint: u64) {
        self.settings = fingerprint;
    }

    /// Makes this connection's sequence state `session`'s alone: when
    /// another session's writes ran here, `DISCARD SEQUENCES` is queued
    /// (its replies are not forwarded), so a later `currval()` of `session`
    /// can never answer with the other's `nextval()`. Before every write.
    pub fn own_sequences(&mut self, session: u64) {
        if self.sequences_owner == session {
            return;
        }
        if self.sequences_owner != 0 {
            self.inject_query("DISCARD SEQUENCES");
        }
        self.sequences_owner = session;
    }

    pub fn sequences_owner(&self) -> u64 {
        self.sequences_owner
    }

    pub fn prepared(&mut self) -> &mut Prepared {
        &mut self.prepared
    }

    pub fn tracker(&self) -> &ResponseTracker {
        &self.tracker
    }

    /// Whether every reply owed has come.
    pub fn owes_nothing(&self) -> bool {
        self.tracker.is_idle()
    }

    /// Bytes queued for the server, for an encoder to append a message to;
    /// its reply is accounted for with [`ServerConn::expect_replies`].
    pub fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// A request was queued: its replies are owed, and go to the client
    /// only if `forward`.
    pub fn expect_replies(&mut self, request: Request, forward: bool) {
        self.tracker.push(request, forward);
    }

    /// Queues a simple query of pgsplit's own; its replies are not forwarded.
    /// It replaces the unnamed statement, which the relay then prepares
    /// again when the client uses it.
    pub fn inject_query(&mut self, sql: &str) {
        pgsplit_protocol::encode::query(&mut self.out, sql);
        self.prepared.set_unnamed(None);
        self.tracker.push(Request::UntilReady, false);
    }

    /// The next reply pgsplit answers itself, if it is due.
    pub fn take_synthetic(&mut self) -> Option<u8> {
        self.tracker.take_synthetic()
    }

    /// Reads more from the server; false: it closed the connection.
    pub async fn read_more(&mut self, max: usize) -> Result<bool, ReadError> {
        let before = self.rbuf.len();
        let more = self
            .stream
            .fill(&mut self.rbuf, Direction::Backend, max)
            .await;
        self.traffic.received += self.rbuf.len().saturating_sub(before) as u64;
        more
    }

    /// The replies read and not yet consumed, taken out so they can be read
    /// while the connection notes what they say; give them back with
    /// [`ServerConn::restore_received`].
    pub fn take_received(&mut self) -> BytesMut {
        std::mem::take(&mut self.rbuf)
    }

    pub fn restore_received(&mut self, rbuf: BytesMut) {
        self.rbuf = rbuf;
    }

    pub fn received(&self) -> &[u8] {
        &self.rbuf
    }

    /// Drops the first `n` bytes received (copied elsewhere already).
    pub fn consume(&mut self, n: usize) {
        bytes::Buf::advance(&mut self.rbuf, n);
    }

    /// The first `n` bytes received, to forward as they are.
    pub fn split_received(&mut self, n: usize) -> BytesMut {
        self.rbuf.split_to(n)
    }

    /// Accounts for one reply: where it goes, and what it ends.
    pub fn on_reply(&mut self, tag: u8) -> Disposition {
        self.tracker.on_message(tag)
    }

    /// A ReadyForQuery said `status`.
    pub fn note_ready(&mut self, status: TransactionStatus) {
        self.tx = status;
        self.traffic.queries += 1;
        self.traffic.xacts += u64::from(status == TransactionStatus::Idle);
        if self.tracker.is_idle() {
            // A position query that failed answered with no row.
            self.positions_owed = 0;
        }
    }
}
