//! Cutting a byte stream into whole messages.
//!
//! Every message after startup is `tag:u8, len:u32 (includes itself), body`.
//! The cut is zero-copy: the frame is `split_to(..).freeze()` of the
//! session's read buffer, so forwarding it costs a reference count, not a copy.

use bytes::{Bytes, BytesMut};

use crate::tag::frontend as fe;
use crate::ProtocolError;

/// Largest message the proxy accepts unless configured otherwise (1 GiB, the
/// same ceiling PostgreSQL itself uses for a single allocation).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 30;

/// Control messages (Sync, Describe, Close, Execute, passwords...) are tiny in
/// every real client; a large length on one of them means a broken or hostile
/// client, so it is rejected before any memory is reserved for it.
pub const MAX_CONTROL_MESSAGE_SIZE: usize = 256 * 1024;

/// One complete protocol message, tag and length header included, exactly as
/// it arrived on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
}

impl Frame {
    /// Wraps bytes that are already one complete message (tests, synthesised
    /// messages). The caller guarantees the header is consistent.
    pub fn from_bytes(bytes: Bytes) -> Frame {
        debug_assert!(bytes.len() >= 5);
        Frame { bytes }
    }

    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    /// The message body, after tag and length.
    pub fn body(&self) -> &[u8] {
        &self.bytes[5..]
    }

    /// The whole message as it goes on the wire.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Frame({:?}, {} bytes)",
            self.tag() as char,
            self.bytes.len()
        )
    }
}

/// Which side sent the bytes: it decides which tags may be large.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to proxy. Only data-carrying messages may use the full limit.
    Frontend,
    /// Server to proxy. Servers are trusted to the configured maximum.
    Backend,
}

/// Size limit for one message with `tag` travelling in `direction`.
pub fn limit_for(direction: Direction, tag: u8, max_message_size: usize) -> usize {
    match direction {
        Direction::Backend => max_message_size,
        Direction::Frontend => match tag {
            // These carry user data.
            fe::QUERY
            | fe::PARSE
            | fe::BIND
            | fe::COPY_DATA
            | fe::FUNCTION_CALL
            | fe::COPY_FAIL => max_message_size,
            _ => MAX_CONTROL_MESSAGE_SIZE.min(max_message_size),
        },
    }
}

/// Cuts the next complete message off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed; `buf` is left untouched, so a
/// caller may read more into it and call again (this is what makes reads
/// cancel-safe: no partial frame lives anywhere but in `buf`).
pub fn split_frame(
    buf: &mut BytesMut,
    direction: Direction,
    max_message_size: usize,
) -> Result<Option<Frame>, ProtocolError> {
    let Some(len) = peek_len(buf, direction, max_message_size)? else {
        return Ok(None);
    };
    if buf.len() < len + 1 {
        return Ok(None);
    }
    Ok(Some(Frame {
        bytes: buf.split_to(len + 1).freeze(),
    }))
}

/// Bytes still missing before the frame at the front of `buf` is complete,
/// so a reader can reserve exactly once for a large message.
pub fn missing_bytes(
    buf: &[u8],
    direction: Direction,
    max_message_size: usize,
) -> Result<usize, ProtocolError> {
    match peek_len(buf, direction, max_message_size)? {
        Some(len) => Ok((len + 1).saturating_sub(buf.len())),
        None => Ok(5 - buf.len()),
    }
}

fn peek_len(
    buf: &[u8],
    direction: Direction,
    max_message_size: usize,
) -> Result<Option<usize>, ProtocolError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    // Checked before the conversion: a length below 4 cannot even cover itself.
    if len < 4 {
        return Err(ProtocolError::InvalidLength { tag, len });
    }
    let len = len as usize;
    let limit = limit_for(direction, tag, max_message_size);
    if len > limit {
        return Err(ProtocolError::TooLarge { tag, len, limit });
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::backend as be;
    use bytes::BufMut;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn partial_header_and_body_wait_for_more() {
        let whole = msg(fe::QUERY, b"select 1\0");
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            assert!(
                split_frame(&mut buf, Direction::Frontend, 1 << 20)
                    .unwrap()
                    .is_none(),
                "complete after only {i} bytes"
            );
            buf.put_u8(*b);
        }
        let f = split_frame(&mut buf, Direction::Frontend, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(f.tag(), fe::QUERY);
        assert_eq!(f.body(), b"select 1\0");
        assert_eq!(f.as_bytes().as_ref(), &whole[..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn coalesced_frames_come_out_one_by_one() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&msg(fe::PARSE, b"\0select 1\0\0\0"));
        buf.extend_from_slice(&msg(fe::SYNC, b""));
        buf.extend_from_slice(&msg(fe::TERMINATE, b"")[..3]);
        let a = split_frame(&mut buf, Direction::Frontend, 1 << 20)
            .unwrap()
            .unwrap();
        let b = split_frame(&mut buf, Direction::Frontend, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!((a.tag(), b.tag()), (fe::PARSE, fe::SYNC));
        assert_eq!(b.body(), b"");
        assert!(split_frame(&mut buf, Direction::Frontend, 1 << 20)
            .unwrap()
            .is_none());
        assert_eq!(buf.len(), 3, "the partial third frame stays buffered");
    }

    #[test]
    fn length_below_four_is_rejected() {
        let mut buf = BytesMut::from(&[fe::QUERY, 0, 0, 0, 3][..]);
        assert_eq!(
            split_frame(&mut buf, Direction::Frontend, 1 << 20),
            Err(ProtocolError::InvalidLength {
                tag: fe::QUERY,
                len: 3
            })
        );
    }

    #[test]
    fn oversized_length_is_rejected_without_waiting_for_the_body() {
        let mut buf = BytesMut::from(&[fe::QUERY, 0x7f, 0xff, 0xff, 0xff][..]);
        let err = split_frame(&mut buf, Direction::Frontend, 1 << 30).unwrap_err();
        assert!(
            matches!(err, ProtocolError::TooLarge { tag: fe::QUERY, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn control_messages_have_a_small_limit_but_data_does_not() {
        let mut sync = BytesMut::from(&[fe::SYNC, 0, 0x10, 0, 0][..]); // 1 MiB Sync
        assert!(split_frame(&mut sync, Direction::Frontend, 1 << 30).is_err());
        let mut q = BytesMut::from(&[fe::QUERY, 0, 0x10, 0, 0][..]);
        assert_eq!(split_frame(&mut q, Direction::Frontend, 1 << 30), Ok(None));
        let mut row = BytesMut::from(&[be::DATA_ROW, 0, 0x10, 0, 0][..]);
        assert_eq!(split_frame(&mut row, Direction::Backend, 1 << 30), Ok(None));
    }

    #[test]
    fn missing_bytes_reports_the_rest_of_the_frame() {
        let whole = msg(fe::COPY_DATA, &[7u8; 100]);
        assert_eq!(
            missing_bytes(&whole[..2], Direction::Frontend, 1 << 20),
            Ok(3)
        );
        assert_eq!(
            missing_bytes(&whole[..10], Direction::Frontend, 1 << 20),
            Ok(95)
        );
        assert_eq!(missing_bytes(&whole, Direction::Frontend, 1 << 20), Ok(0));
    }
}

/// Walks the complete frames at the front of a buffer without cutting them,
/// so a proxy can inspect a batch and then forward it with one `split_to`
/// and one write. `consumed()` is the length of the complete prefix seen.
pub struct Frames<'a> {
    buf: &'a [u8],
    off: usize,
    direction: Direction,
    max: usize,
}

impl<'a> Frames<'a> {
    pub fn new(buf: &'a [u8], direction: Direction, max_message_size: usize) -> Frames<'a> {
        Frames {
            buf,
            off: 0,
            direction,
            max: max_message_size,
        }
    }

    pub fn consumed(&self) -> usize {
        self.off
    }
}

impl<'a> Iterator for Frames<'a> {
    /// Tag and body of the next complete frame.
    type Item = Result<(u8, &'a [u8]), ProtocolError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.off..];
        match peek_len(rest, self.direction, self.max) {
            Err(e) => Some(Err(e)),
            Ok(Some(len)) if rest.len() > len => {
                self.off += len + 1;
                Some(Ok((rest[0], &rest[5..len + 1])))
            }
            Ok(_) => None,
        }
    }
}

#[cfg(test)]
mod frames_tests {
    use super::*;
    use crate::tag::backend as be;

    #[test]
    fn walks_complete_frames_and_stops_at_a_partial_one() {
        let buf = [
            be::ROW_DESCRIPTION,
            0,
            0,
            0,
            6,
            0,
            0, // no columns
            be::DATA_ROW,
            0,
            0,
            0,
            4, // empty body
            be::READY_FOR_QUERY,
            0,
            0,
            0,
            5,
            b'I', // idle
            be::DATA_ROW,
            0,
            0,
            0,
            9,
            1, // partial
        ];
        let mut it = Frames::new(&buf, Direction::Backend, 1 << 20);
        assert_eq!(it.next(), Some(Ok((be::ROW_DESCRIPTION, &[0u8, 0][..]))));
        assert_eq!(it.next(), Some(Ok((be::DATA_ROW, &[][..]))));
        assert_eq!(it.next(), Some(Ok((be::READY_FOR_QUERY, &[b'I'][..]))));
        assert_eq!(it.next(), None);
        assert_eq!(it.consumed(), 18);
    }

    #[test]
    fn reports_a_bad_length() {
        let buf = [be::READY_FOR_QUERY, 0, 0, 0, 1];
        let mut it = Frames::new(&buf, Direction::Backend, 1 << 20);
        assert!(matches!(
            it.next(),
            Some(Err(ProtocolError::InvalidLength { .. }))
        ));
    }
}
