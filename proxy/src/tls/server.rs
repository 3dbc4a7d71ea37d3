//! TLS to servers, with libpq's sslmode meanings: which certificates are
//! accepted, and the handshake after the server answered SSLRequest `S`.

use std::sync::Arc;

use pgsplit_config::ServerTls;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;

use super::{read_certs, read_key, Reloadable, TlsConfigError, ALPN};

/// TLS from pgsplit to one backend: its mode and, unless disabled, the
/// connector (certificate checks as the mode says).
pub struct ServerTlsSetup {
    pub mode: ServerTls,
    connector: Option<Reloadable<tokio_rustls::TlsConnector>>,
}

impl std::fmt::Debug for ServerTlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTlsSetup({:?})", self.mode)
    }
}

impl ServerTlsSetup {
    /// Plaintext only.
    pub fn disabled() -> ServerTlsSetup {
        ServerTlsSetup {
            mode: ServerTls::Disable,
            connector: None,
        }
    }

    /// One setup per backend, in `config.backends` order (backends with
    /// the same mode share one).
    pub fn load_all(
        config: &pgsplit_config::Config,
    ) -> Result<Vec<Arc<ServerTlsSetup>>, TlsConfigError> {
        let mut made: Vec<Arc<ServerTlsSetup>> = Vec::new();
        let mut out = Vec::with_capacity(config.backends.len());
        for b in &config.backends {
            let mode = b.server_tls.unwrap_or(config.tls.server_tls);
            let setup = match made.iter().find(|s| s.mode == mode) {
                Some(s) => Arc::clone(s),
                None => {
                    let s = Arc::new(ServerTlsSetup::load(&config.tls, mode)?);
                    made.push(Arc::clone(&s));
                    s
                }
            };
            out.push(setup);
        }
        Ok(out)
    }

    fn load(tls: &pgsplit_config::Tls, mode: ServerTls) -> Result<ServerTlsSetup, TlsConfigError> {
        if mode == ServerTls::Disable {
            return Ok(ServerTlsSetup::disabled());
        }
        let files = [
            &tls.server_root_cert_file,
            &tls.server_cert_file,
            &tls.server_key_file,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        Ok(ServerTlsSetup {
            mode,
            connector: Some(Reloadable::new(connector(tls, mode)?, files)),
        })
    }

    /// Reads the certificates again if their files changed.
    pub fn reload_if_changed(&self, tls: &pgsplit_config::Tls) {
        if let Some(c) = &self.connector {
            c.reload_if_changed("TLS to servers", || connector(tls, self.mode));
        }
    }

    /// The TLS handshake with a server that accepted SSLRequest; `host` is
    /// the name (or address) its certificate must carry for verify-full.
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector = self
            .connector
            .as_ref()
            .ok_or_else(|| std::io::Error::other("TLS to servers is disabled"))?
            .get();
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| std::io::Error::other(format!("{host:?} is not a host name: {e}")))?;
        connector.connect(name, tcp).await
    }
}

/// A connector that checks server certificates as `mode` says.
fn connector(
    tls: &pgsplit_config::Tls,
    mode: ServerTls,
) -> Result<tokio_rustls::TlsConnector, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Mismatch(e.to_string()))?;
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if mode.verifies() {
        let path = tls
            .server_root_cert_file
            .as_deref()
            .ok_or_else(|| TlsConfigError::Read {
                key: "server_root_cert_file",
                path: String::new(),
                error: "not set, and verify-ca / verify-full need it".into(),
            })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs("server_root_cert_file", path)? {
            roots.add(cert).map_err(|e| TlsConfigError::Read {
                key: "server_root_cert_file",
                path: path.display().to_string(),
                error: e.to_string(),
            })?;
        }
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| TlsConfigError::Mismatch(e.to_string()))?;
        Arc::new(Verify {
            inner: webpki,
            check_name: mode == ServerTls::VerifyFull,
        })
    } else {
        Arc::new(NoCheck(provider))
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&tls.server_cert_file, &tls.server_key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("server_cert_file", cert)?;
            let key = read_key("server_key_file", key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsConfigError::Mismatch(e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// verify-ca and verify-full: the chain must lead to a configured root;
/// for verify-ca the host name is not compared.
#[derive(Debug)]
struct Verify {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl rustls::client::danger::ServerCertVerifier for Verify {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) if !self.check_name => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// prefer and require, as libpq: encrypted, but any certificate will do
/// (the handshake's signatures are still checked).
#[derive(Debug)]
struct NoCheck(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
