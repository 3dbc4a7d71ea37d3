//! Writers for the messages pgsplit produces itself.
//!
//! Each appends one message to a caller-owned buffer, so a session can queue
//! several replies (ParameterStatus..., BackendKeyData, ReadyForQuery) and
//! write them with one syscall. Lengths are back-patched, never precomputed.
//!
//! Server-to-client messages (what pgsplit answers clients) are written by
//! the functions from `encode/backend.rs`, client-to-server ones (what it
//! sends servers) by those from `encode/frontend.rs`; all are reached as
//! `encode::name`. Every message has its own encoder: [`raw_message`] is for
//! a tag that has none, and takes a constant from [`crate::tag`].

use bytes::{BufMut, BytesMut};

mod backend;
mod frontend;

pub use backend::*;
pub use frontend::*;

fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    at
}

fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

fn message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let at = begin(buf, tag);
    body(buf);
    finish(buf, at);
}

/// A message of `tag` whose body is `parts` concatenated, for a message no
/// named encoder covers. Renaming a statement in a client's Parse or Bind has
/// its own encoders ([`parse_raw`], [`bind_renamed`]).
pub fn raw_message(buf: &mut BytesMut, tag: u8, parts: &[&[u8]]) {
    message(buf, tag, |b| {
        for p in parts {
            b.put_slice(p);
        }
    });
}

/// A server message whose body is empty, given its tag: the acknowledgement
/// the proxy owes a client for a request it answered itself, when the tag is
/// only known at run time (a `pipeline::Request::Synthetic` handed back by
/// `ResponseTracker::take_synthetic`).
///
/// `tag` must be one of the empty-bodied `tag::backend` messages
/// (ParseComplete, BindComplete, CloseComplete, NoData, PortalSuspended,
/// EmptyQueryResponse, CopyDone; see `tag::backend::has_empty_body`); any
/// other tag would make a malformed message, and panics in debug builds.
/// When the message is known where it is written, call its own encoder
/// ([`parse_complete`], [`close_complete`]...) instead.
pub fn empty_message(buf: &mut BytesMut, tag: u8) {
    debug_assert!(
        crate::tag::backend::has_empty_body(tag),
        "{:?} is not an empty-bodied server message",
        tag as char
    );
    message(buf, tag, |_| {});
}
