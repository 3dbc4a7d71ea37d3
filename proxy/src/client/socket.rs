//! A client's connection, plaintext or TLS. Reads and writes go through
//! one type either way; a plaintext read keeps its cheaper path
//! (`io::fill`: readiness first, one system call).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use pgsplit_protocol::{split_frame, Direction, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::errors::SessionError;
use crate::io::{fill, reserve_for_read, ReadError};
use crate::tls::{ClientTlsSetup, ALPN};

pub enum ClientStream {
    Plain(TcpStream),
    /// With the channel binding data of the certificate it was made with.
    Tls(Box<TlsStream<TcpStream>>, Option<Arc<[u8]>>),
    /// During a TLS handshake, which owns the socket; left behind if the
    /// handshake fails, when nothing can be told to the client anyway.
    Upgrading,
}

fn upgrading() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the TLS handshake did not complete",
    )
}

impl ClientStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(..))
    }

    /// `tls-server-end-point` data for SCRAM-SHA-256-PLUS, on a TLS
    /// connection whose certificate has it.
    pub fn end_point(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Tls(_, end_point) => end_point.as_deref(),
            _ => None,
        }
    }

    /// Negotiates TLS on a plaintext connection; `direct`: the client
    /// started with its ClientHello, which PostgreSQL accepts only with
    /// ALPN `postgresql`.
    pub async fn upgrade(
        &mut self,
        tls: &ClientTlsSetup,
        direct: bool,
    ) -> Result<(), SessionError> {
        let ClientStream::Plain(tcp) = std::mem::replace(self, ClientStream::Upgrading) else {
            return Err(SessionError::ClientIo(upgrading()));
        };
        let s = tls.accept(tcp).await.map_err(SessionError::TlsHandshake)?;
        let alpn_ok = s.get_ref().1.alpn_protocol() == Some(ALPN);
        *self = ClientStream::Tls(Box::new(s), tls.end_point());
        if direct && !alpn_ok {
            return Err(SessionError::DirectTlsWithoutAlpn);
        }
        Ok(())
    }

    /// Writes all of `data` out: through TLS, flushed too, since rustls
    /// may hold back what the socket did not take at once.
    pub fn send<'a>(&'a mut self, data: &'a [u8]) -> impl Future<Output = io::Result<()>> + 'a {
        match self {
            ClientStream::Plain(s) => Either::Plain(s.write_all(data)),
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
            ClientStream::Plain(s) => Either::Plain(fill(s, buf, direction, max)),
            other => Either::Other(Box::pin(async move {
                let ClientStream::Tls(s, _) = other else {
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

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s, _) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s, _) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s, _) => Pin::new(s).poll_flush(cx),
            ClientStream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s, _) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s, _) => s.is_write_vectored(),
            ClientStream::Upgrading => false,
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
