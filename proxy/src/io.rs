//! Reading whole frames from a socket into a buffer the caller owns.
//!
//! Cancel safety: the only state is the caller's `BytesMut`; waiting for
//! readability takes no bytes, and the read itself does not await, so
//! dropping a pending read inside `select!` loses nothing and a partial frame
//! simply waits there.

use bytes::BytesMut;
use pgsplit_protocol::frame::missing_bytes;
use pgsplit_protocol::{Direction, ProtocolError};
use tokio::net::TcpStream;

/// Typical read size: large enough for a batch of small messages or a few
/// dozen rows, small enough that 10 000 idle sessions stay cheap (buffers are
/// only grown when a read actually happens).
pub const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("connection closed in the middle of a message")]
    TruncatedMessage,
}

/// Room is made for at most this much of a pending frame at a time: a
/// message that is passed on as it arrives is never held whole, so its
/// full length must not be reserved either (one that is held grows as it
/// arrives, doubling).
const RESERVE_AHEAD: usize = 1 << 20;

/// Makes room for the next read: what a large pending frame still needs
/// (up to [`RESERVE_AHEAD`]), or one chunk.
pub fn reserve_for_read(
    buf: &mut BytesMut,
    direction: Direction,
    max: usize,
) -> Result<(), ProtocolError> {
    let want = missing_bytes(buf, direction, max)?.clamp(READ_CHUNK, RESERVE_AHEAD);
    if buf.capacity() - buf.len() < want / 2 {
        buf.reserve(want);
    }
    Ok(())
}

/// Reads more bytes; `Ok(false)` on a clean EOF at a frame boundary.
///
/// Waits for readability before growing the buffer, so the thousands of
/// sessions that sit idle hold no read buffer while they wait.
pub async fn fill(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    direction: Direction,
    max: usize,
) -> Result<bool, ReadError> {
    loop {
        stream.readable().await?;
        reserve_for_read(buf, direction, max)?;
        match read_draining(stream, buf) {
            Ok(0) if buf.is_empty() => return Ok(false),
            Ok(0) => return Err(ReadError::TruncatedMessage),
            Ok(_) => return Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One read into the spare capacity of `buf`. A short read drained the
/// socket: its readiness is then cleared in the same step, so the next
/// read waits for the poller instead of making a system call only to hear
/// EAGAIN (one call fewer per read). The readiness snapshot is taken before
/// the read, so data that arrives after it, once the poller has seen it, is
/// never cleared away.
fn read_draining(stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let mut got = 0;
    let result = stream.try_io(tokio::io::Interest::READABLE, || {
        let spare = buf.spare_capacity_mut();
        let room = spare.len();
        // SAFETY: recv writes at most `room` bytes into the spare capacity,
        // and only the bytes it reports are marked initialised below.
        let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), room, 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: the kernel initialised these `n` bytes.
        unsafe { buf.set_len(buf.len() + n) };
        got = n;
        if n > 0 && n < room {
            // Drained: report WouldBlock so tokio clears the readiness
            // it saw before this read; the bytes are already in `buf`.
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    match result {
        Ok(()) => Ok(got),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        Err(e) => Err(e),
    }
}
