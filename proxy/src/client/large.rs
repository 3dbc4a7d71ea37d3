//! Which client messages are passed on as they arrive (`stream.rs`), read
//! from their first bytes: pure functions of the read buffer.

use pgsplit_protocol::tag::frontend as fe;

/// A message longer than this is passed through, not buffered.
pub(super) const STREAM_AT: usize = 1 << 20;

/// The start of a large message that may be passed through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LargeStart {
    pub tag: u8,
    /// The message's full length, tag byte included.
    pub total: usize,
}

/// Where a Bind's portal and statement names are in its message.
pub(super) struct BindNames {
    pub portal: std::ops::Range<usize>,
    pub statement: std::ops::Range<usize>,
}

/// The names at the start of the Bind message in `buf`, once both are in.
pub(super) fn bind_names(buf: &[u8]) -> Option<BindNames> {
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
