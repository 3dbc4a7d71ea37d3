//! TLS to clients: the certificate pgsplit presents, and its handshake.

use std::sync::Arc;

use pgsplit_config::ClientTls;
use pgsplit_protocol::auth::tls_server_end_point;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{read_certs, read_key, Reloadable, TlsConfigError, ALPN};

/// What handshakes use: the acceptor, and the channel binding data of its
/// certificate (none if its signature algorithm defines none: then
/// SCRAM-SHA-256-PLUS is not offered).
struct Presented {
    acceptor: TlsAcceptor,
    end_point: Option<Arc<[u8]>>,
}

/// TLS for clients: the mode and, unless disabled, the certificate.
pub struct ClientTlsSetup {
    pub mode: ClientTls,
    presented: Option<Reloadable<Presented>>,
}

impl ClientTlsSetup {
    /// Loads the certificate and key `tls` names (none when TLS is off).
    pub fn load(tls: &pgsplit_config::Tls) -> Result<ClientTlsSetup, TlsConfigError> {
        let mode = tls.client_mode();
        let presented = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(cert), Some(key)) if mode != ClientTls::Disable => Some(Reloadable::new(
                presented(tls)?,
                vec![cert.clone(), key.clone()],
            )),
            _ => None,
        };
        Ok(ClientTlsSetup { mode, presented })
    }

    /// Whether clients may negotiate TLS.
    pub fn offered(&self) -> bool {
        self.presented.is_some()
    }

    /// The TLS handshake on a client connection that asked for it, with
    /// the channel binding data of the certificate it was made with.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<(TlsStream<TcpStream>, Option<Arc<[u8]>>)> {
        let presented = self
            .presented
            .as_ref()
            .ok_or_else(|| std::io::Error::other("TLS is not configured"))?
            .get();
        let stream = presented.acceptor.accept(tcp).await?;
        Ok((stream, presented.end_point.clone()))
    }

    /// Reads the certificate again if its files changed.
    pub fn reload_if_changed(&self, tls: &pgsplit_config::Tls) {
        if let Some(p) = &self.presented {
            p.reload_if_changed("TLS to clients", || presented(tls));
        }
    }
}

fn presented(tls: &pgsplit_config::Tls) -> Result<Presented, TlsConfigError> {
    let (Some(cert), Some(key)) = (&tls.client_cert_file, &tls.client_key_file) else {
        return Err(TlsConfigError::Mismatch(
            "no client certificate configured".into(),
        ));
    };
    let chain = read_certs("client_cert_file", cert)?;
    let end_point = tls_server_end_point(&chain[0]).map(Arc::from);
    let private = read_key("client_key_file", key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsConfigError::Mismatch(e.to_string()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Presented {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        end_point,
    })
}
