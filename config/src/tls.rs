//! TLS settings (`[tls]`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Whether clients may, or must, use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTls {
    /// Encryption requests are declined; clients continue in plaintext.
    Disable,
    /// TLS for clients that ask for it, plaintext for the others.
    Allow,
    /// A client that does not negotiate TLS is refused (FATAL 28000).
    Require,
}

/// TLS on the client side. With a certificate and key configured, TLS is
/// offered (`client_tls = "allow"`) unless `client_tls` says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// "disable", "allow" or "require". Default: "allow" when
    /// `client_cert_file` is set, else "disable".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<ClientTls>,
    /// PEM file with the certificate chain pgsplit presents to clients,
    /// its own certificate first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM file with the private key of that certificate (PKCS#8, PKCS#1
    /// or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
}

impl Tls {
    /// The client TLS mode in force.
    pub fn client_mode(&self) -> ClientTls {
        match (self.client_tls, &self.client_cert_file) {
            (Some(mode), _) => mode,
            (None, Some(_)) => ClientTls::Allow,
            (None, None) => ClientTls::Disable,
        }
    }
}
