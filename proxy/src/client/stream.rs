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

use super::phase::{Attachment, Phase};
use super::session::{Client, Session};
use super::state::Pin;

/// A message longer than this is passed through, not buffered.
pub(super) const STREAM_AT: usize = 1 << 20;

/// The start of a large message that may be passed through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LargeStart {
    pub tag: u8,
    /// The message's full length, tag byte included.
    pub total: usize,
}

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

/// Where a Bind's portal and statement names are in its message.
struct BindNames {
    portal: std::ops::Range<usize>,
    statement: std::ops::Range<usize>,
}

/// The names at the start of the Bind message in `buf`, once both are in.
fn bind_names(buf: &[u8]) -> Option<BindNames> {
    let body = buf.get(5..)?;
    let p = memchr::memchr(0, body)?;
    let s = memchr::memchr(0, &body[p + 1..])? + p + 1;
    Some(BindNames {
        portal: 5..5 + p,
        statement: 5 + p + 1..5 + s,
    })
}

/// The large, incomplete message at the front of `buf` that may be passed
/// through (a Bind once its names are in), if that is what is there.
pub(super) fn large_start(buf: &[u8], max: usize) -> Option<LargeStart> {
    let total = streamed_len(buf, max)?;
    let ready = buf.len() < total && (buf[0] != fe::BIND || bind_names(buf).is_some());
    ready.then_some(LargeStart { tag: buf[0], total })
}

/// Whether the message at the front of `buf` will be passed through once
/// enough of it is in: only what is buffered of it counts against the
/// budget, not its full length.
pub(super) fn streamable(buf: &[u8], max: usize) -> bool {
    streamed_len(buf, max).is_some()
}

/// The full length of the message at the front of `buf` if it is of a kind
/// passed through and large enough to be. A length over `max` is left to
/// the framing, which refuses it.
fn streamed_len(buf: &[u8], max: usize) -> Option<usize> {
    if buf.len() < 5 || !matches!(buf[0], fe::COPY_DATA | fe::QUERY | fe::BIND) {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    (len + 1 > STREAM_AT && len <= max).then_some(len + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(tag: u8, len: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn only_a_large_incomplete_message_of_a_streamed_kind_is_passed_through() {
        let big = (STREAM_AT as u32) * 2;
        let at = |tag, len, body: &[u8], max| large_start(&header(tag, len, body), max);
        let start = |tag| {
            Some(LargeStart {
                tag,
                total: big as usize + 1,
            })
        };
        assert_eq!(at(b'd', big, b"xx", 1 << 30), start(b'd'));
        assert_eq!(at(b'Q', big, b"INSERT", 1 << 30), start(b'Q'));
        assert_eq!(at(b'B', big, b"p\0s\0xx", 1 << 30), start(b'B'));
        assert_eq!(at(b'B', big, b"\0\0", 1 << 30), start(b'B'), "unnamed");
        assert_eq!(at(b'B', big, b"p\0s", 1 << 30), None, "names not in");
        assert_eq!(at(b'P', big, b"\0SELECT", 1 << 30), None, "Parse is kept");
        assert_eq!(at(b'd', 1000, b"xx", 1 << 30), None, "small: framed");
        assert_eq!(at(b'd', big, b"xx", 1 << 20), None, "over the limit");
        assert_eq!(large_start(&[b'd', 0, 0], 1 << 30), None, "no header");
    }

    #[test]
    fn a_bind_whose_names_are_not_in_yet_is_still_counted_as_streamed() {
        let big = (STREAM_AT as u32) * 2;
        assert!(streamable(&header(b'B', big, b"p"), 1 << 30));
        assert!(streamable(&header(b'Q', big, b""), 1 << 30));
        assert!(!streamable(&header(b'P', big, b""), 1 << 30));
        assert!(!streamable(&header(b'Q', 1000, b""), 1 << 30));
        assert!(!streamable(&header(b'Q', big, b""), 1 << 20));
    }

    #[test]
    fn bind_names_are_found_at_the_start() {
        let m = header(b'B', 100, b"portal\0stmt\0\0\0");
        let n = bind_names(&m).unwrap();
        assert_eq!(&m[n.portal], b"portal");
        assert_eq!(&m[n.statement], b"stmt");
    }
}
