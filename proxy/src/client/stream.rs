//! Large COPY data passed through as it arrives. COPY data goes to the
//! attached server whatever it holds, so nothing in it needs reading, and
//! buffering a CopyData message whole (psycopg's `copy.write()` of a large
//! buffer sends one) would take its full size in memory.

use bytes::Buf;
use pgsplit_protocol::tag::frontend as fe;

use super::phase::Phase;
use super::session::Session;

/// A CopyData message longer than this is passed through, not buffered.
pub(super) const STREAM_AT: usize = 1 << 20;

impl Session {
    /// Sends on what has arrived of a large CopyData message, starting one
    /// once its header is in (with no server attached, COPY data has
    /// nowhere to go and is dropped, as smaller messages are). `Client::streaming`
    /// says how much of it is still to come; while it is not zero, the read
    /// buffer holds no frames.
    pub(super) fn pass_copy_data(&mut self, max: usize) {
        let c = &mut self.c;
        if c.streaming == 0 {
            let Some(total) = large_copy_data_start(&c.rbuf, max) else {
                return;
            };
            if let Phase::Attached(a) = &mut self.phase {
                // Too large to keep for a retry elsewhere.
                a.retry.give_up();
            }
            c.streaming = total;
        }
        let n = c.streaming.min(c.rbuf.len());
        c.streaming -= n;
        match &mut self.phase {
            Phase::Attached(a) => a.conn.out().extend_from_slice(&c.rbuf.split_to(n)),
            // The server of the COPY was lost: the rest has nowhere to go.
            _ => c.rbuf.advance(n),
        }
    }
}

/// The full length of the large, incomplete CopyData message at the front
/// of `buf`, if that is what is there (a length over `max` is left to the
/// framing, which refuses it).
fn large_copy_data_start(buf: &[u8], max: usize) -> Option<usize> {
    if buf.len() < 5 || buf[0] != fe::COPY_DATA {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    let total = len + 1;
    (total > STREAM_AT && len <= max && buf.len() < total).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(tag: u8, len: u32) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&[b'x'; 100]);
        v
    }

    #[test]
    fn only_a_large_incomplete_copy_data_message_is_passed_through() {
        let big = (STREAM_AT as u32) * 2;
        assert_eq!(
            large_copy_data_start(&header(b'd', big), 1 << 30),
            Some(big as usize + 1)
        );
        assert_eq!(
            large_copy_data_start(&header(b'd', 1000), 1 << 30),
            None,
            "small: framed"
        );
        assert_eq!(
            large_copy_data_start(&header(b'Q', big), 1 << 30),
            None,
            "not COPY data"
        );
        assert_eq!(
            large_copy_data_start(&header(b'd', big), 1 << 20),
            None,
            "over the limit"
        );
        assert_eq!(
            large_copy_data_start(&[b'd', 0, 0], 1 << 30),
            None,
            "no header yet"
        );
    }
}
