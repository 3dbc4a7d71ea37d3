//! A client's connection: plaintext, or TLS once negotiated (`upgrade`).

use tokio::net::TcpStream;

use crate::errors::SessionError;
use crate::tls::{ClientTlsSetup, ALPN};
use crate::wire::{upgrading, Wire};

pub type ClientStream = Wire<tokio_rustls::server::TlsStream<TcpStream>>;

impl ClientStream {
    /// Negotiates TLS on a plaintext connection; `direct`: the client
    /// started with its ClientHello, which PostgreSQL accepts only with
    /// ALPN `postgresql`.
    pub async fn upgrade(
        &mut self,
        tls: &ClientTlsSetup,
        direct: bool,
    ) -> Result<(), SessionError> {
        let Wire::Plain(tcp) = std::mem::replace(self, Wire::Upgrading) else {
            return Err(SessionError::ClientIo(upgrading()));
        };
        let (s, end_point) = tls.accept(tcp).await.map_err(SessionError::TlsHandshake)?;
        let alpn_ok = s.get_ref().1.alpn_protocol() == Some(ALPN);
        *self = Wire::Tls(Box::new(s), end_point);
        if direct && !alpn_ok {
            return Err(SessionError::DirectTlsWithoutAlpn);
        }
        Ok(())
    }
}
