//! A connection, plaintext or TLS, to a client (`T` is rustls' server
//! stream) or to a server (its client stream). Reads and writes go through
//! one type either way; a plaintext connection keeps its cheaper path
//! (`io::fill`: readiness first, one system call; `write_all` itself).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use pgsplit_protocol::{split_frame, Direction, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::io::{fill, reserve_for_read, ReadError};

pub enum Wire<T> {
    Plain(TcpStream),
    /// With the channel binding data of pgsplit's certificate on it (a
    /// client connection), for SCRAM-SHA-256-PLUS.
    Tls(Box<T>, Option<Arc<[u8]>>),
    /// During a TLS handshake, which owns the socket; left behind if the
    /// handshake fails, when nothing can be told to the client anyway.
    Upgrading,
}

pub(crate) fn upgrading() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the TLS handshake did not complete",
    )
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Wire<T> {
    pub fn is_tls(&self) -> bool {
        matches!(self, Wire::Tls(..))
    }

    /// `tls-server-end-point` data for SCRAM-SHA-256-PLUS, on a TLS
    /// connection whose certificate has it.
    pub fn end_point(&self) -> Option<&[u8]> {
        match self {
            Wire::Tls(_, end_point) => end_point.as_deref(),
            _ => None,
        }
    }

    /// Writes all of `data` out: through TLS, flushed too, since rustls
    /// may hold back what the socket did not take at once.
    pub fn send<'a>(&'a mut self, data: &'a [u8]) -> impl Future<Output = io::Result<()>> + 'a {
        match self {
            Wire::Plain(s) => Either::Plain(s.write_all(data)),
            other => Either::Other(Box::pin(async move {
                other.write_all(data).await?;
                other.flush().await
            })),
        }
    }

    /// Reads more bytes; `Ok(false)` on a clean EOF at a frame boundary.
    /// Cancel safe: a read dropped while pending loses nothing. A
    /// plaintext read is `io::fill` itself, not wrapped in another future
    /// (this is polled on every wait of every session).
    pub fn fill<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
        direction: Direction,
        max: usize,
    ) -> impl Future<Output = Result<bool, ReadError>> + 'a {
        match self {
            Wire::Plain(s) => Either::Plain(fill(s, buf, direction, max)),
            other => Either::Other(Box::pin(async move {
                let Wire::Tls(s, _) = other else {
                    return Err(upgrading().into());
                };
                reserve_for_read(buf, direction, max)?;
                match s.read_buf(buf).await? {
                    0 if buf.is_empty() => Ok(false),
                    0 => Err(ReadError::TruncatedMessage),
                    _ => Ok(true),
                }
            })),
        }
    }

    /// What has arrived, without waiting: Ok(0) at EOF, WouldBlock when
    /// nothing has.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if let Wire::Plain(s) = self {
            return s.try_read_buf(buf);
        }
        let mut chunk = [0u8; 4096];
        let mut read = ReadBuf::new(&mut chunk);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(self).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) => {
                buf.extend_from_slice(read.filled());
                Ok(read.filled().len())
            }
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Reads one whole frame; None on a clean EOF before it.
    pub async fn read_frame(
        &mut self,
        buf: &mut BytesMut,
        direction: Direction,
        max: usize,
    ) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(f) = split_frame(buf, direction, max)? {
                return Ok(Some(f));
            }
            if !self.fill(buf, direction, max).await? {
                return Ok(None);
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Wire<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Wire::Tls(s, _) => Pin::new(s).poll_read(cx, buf),
            Wire::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Wire<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Wire::Tls(s, _) => Pin::new(s).poll_write(cx, buf),
            Wire::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_flush(cx),
            Wire::Tls(s, _) => Pin::new(s).poll_flush(cx),
            Wire::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Wire::Tls(s, _) => Pin::new(s).poll_shutdown(cx),
            Wire::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Wire::Tls(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Wire::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Wire::Plain(s) => s.is_write_vectored(),
            Wire::Tls(s, _) => s.is_write_vectored(),
            Wire::Upgrading => false,
        }
    }
}

/// One of two futures with the same output.
enum Either<P, O> {
    Plain(P),
    Other(O),
}

impl<P: Future, O: Future<Output = P::Output> + Unpin> Future for Either<P, O> {
    type Output = P::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<P::Output> {
        // SAFETY: the future inside is never moved out of the pinned enum
        // (no method takes it out or replaces the variant), so pinning
        // the enum pins it.
        unsafe {
            match self.get_unchecked_mut() {
                Either::Plain(p) => Pin::new_unchecked(p).poll(cx),
                Either::Other(o) => Pin::new(o).poll(cx),
            }
        }
    }
}
