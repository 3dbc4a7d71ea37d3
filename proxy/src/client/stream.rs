//! Large client messages passed on as they arrive instead of buffered
//! whole: COPY data, simple Queries and Binds (a bulk INSERT's text, a
//! large parameter). Routing needs only a message's start, so once that is
//! in and a server is attached, the rest goes straight to it, a read at a
//! time; memory stays at one read buffer however large the message.
//!
//! Parse messages are still buffered whole (against the shared budget):
//! pgsplit keeps each statement to prepare it again on other connections.

use bytes::{Buf, BufMut};
use pgsplit_protocol::pipeline::Request;
use pgsplit_protocol::tag::frontend as fe;

use super::large::{bind_names, large_start};
use super::phase::{Attachment, Phase};
use super::session::{Client, Session};
use super::state::Pin;

impl Session {
    /// Sends on what has arrived of the message being passed through,
    /// starting a large CopyData once its header is in. With no server
    /// attached (COPY data with nowhere to go, a refused request, a server
    /// lost midway) its bytes are dropped. `Client::streaming` says how
    /// much is still to come; while it is not zero, the read buffer holds
    /// only that message's bytes.
    pub(super) fn pass_through(&mut self, max: usize) {
        let c = &mut self.c;
        if c.streaming == 0 {
            match large_start(&c.rbuf, max) {
                Some(s) if s.tag == fe::COPY_DATA => c.streaming = s.total,
                _ => return,
            }
            if let Phase::Attached(a) = &mut self.phase {
                // Too large to keep for a retry elsewhere.
                a.retry.give_up();
            }
        }
        let n = c.streaming.min(c.rbuf.len());
        c.streaming -= n;
        match &mut self.phase {
            Phase::Attached(a) => a.conn.out().extend_from_slice(&c.rbuf.split_to(n)),
            _ => c.rbuf.advance(n),
        }
    }
}

impl Client {
    /// Starts passing the large Query or Bind at the front of the buffer
    /// to the attached server, whose request it belongs to. False: there
    /// is none there (or not enough of it yet to start).
    pub(super) fn start_large(&mut self, a: &mut Attachment, max: usize) -> bool {
        let Some(start) = large_start(&self.rbuf, max) else {
            return false;
        };
        a.retry.give_up();
        let rewritten = match start.tag {
            fe::QUERY => self.start_large_query(a),
            fe::BIND => self.start_large_bind(a, start.total),
            _ => return false,
        };
        self.streaming = start.total - rewritten;
        a.conn.expect_replies(
            Request::for_frontend_tag(start.tag).expect("Query or Bind"),
            true,
        );
        true
    }

    /// A Query too large to read is sent unread. What it does to the
    /// session (a SET, a temporary table, a LISTEN) cannot be known, so the
    /// session keeps this connection, as for any state pgsplit cannot move.
    /// Returns 0: nothing of it is rewritten.
    fn start_large_query(&mut self, a: &mut Attachment) -> usize {
        self.decided_query = None;
        if Some(a.backend) == self.shared.primary() {
            self.pin(Pin::UnreadQuery);
        } else {
            // Inside a read-only transaction on a replica: the session
            // cannot stay there, and no one else may inherit what the
            // query left on the connection.
            a.discard_on_release = true;
        }
        self.end_segment(a);
        a.conn.prepared().set_unnamed(None);
        0
    }

    /// A large Bind: the statement it names is made ready on the
    /// connection, and its start is rewritten with the statement's server
    /// name; its parameters follow unchanged. Returns how many of its
    /// bytes were rewritten (and taken from the buffer).
    fn start_large_bind(&mut self, a: &mut Attachment, total: usize) -> usize {
        let names = bind_names(&self.rbuf).expect("large_start found both names");
        let statement = &self.rbuf[names.statement.clone()];
        let Some(st) = self.state.statements.get(statement).cloned() else {
            // Unknown to pgsplit: the server says so.
            return 0;
        };
        self.ensure_prepared(&mut a.conn, &st);
        self.note_effects(a, &st.analysis, st.session_cmd.clone());
        if st.server_name.is_empty() {
            return 0;
        }
        let renamed = total - 1 - names.statement.len() + st.server_name.len();
        let out = a.conn.out();
        out.put_u8(fe::BIND);
        out.put_u32(renamed as u32);
        out.extend_from_slice(&self.rbuf[names.portal]);
        out.put_u8(0);
        out.extend_from_slice(st.server_name.as_bytes());
        out.put_u8(0);
        let head = names.statement.end + 1;
        self.rbuf.advance(head);
        head
    }
}
