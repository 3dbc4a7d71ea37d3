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

/// How pgsplit's connections to a server use TLS, with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTls {
    /// Plaintext.
    Disable,
    /// TLS if the server accepts it, else plaintext; no certificate check.
    Prefer,
    /// TLS or no connection; no certificate check.
    Require,
    /// TLS with a certificate signed by `server_root_cert_file`.
    VerifyCa,
    /// As verify-ca, and the certificate names the backend's host.
    VerifyFull,
}

impl ServerTls {
    /// As written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerTls::Disable => "disable",
            ServerTls::Prefer => "prefer",
            ServerTls::Require => "require",
            ServerTls::VerifyCa => "verify-ca",
            ServerTls::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate is checked against the roots.
    pub fn verifies(self) -> bool {
        matches!(self, ServerTls::VerifyCa | ServerTls::VerifyFull)
    }
}

/// TLS on both sides. To clients: with a certificate and key configured,
/// TLS is offered (`client_tls = "allow"`) unless `client_tls` says
/// otherwise. To servers: `server_tls` for every backend that does not set
/// its own.
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
    /// "disable", "prefer" (default), "require", "verify-ca" or
    /// "verify-full", for backends without their own `server_tls`.
    pub server_tls: ServerTls,
    /// PEM file of the certificate authorities a server's certificate must
    /// chain to (verify-ca, verify-full).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_root_cert_file: Option<PathBuf>,
    /// PEM certificate pgsplit presents to servers that ask for one
    /// (`clientcert` in pg_hba.conf), with its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_key_file: Option<PathBuf>,
}

impl Default for ServerTls {
    /// libpq's default.
    fn default() -> Self {
        ServerTls::Prefer
    }
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
