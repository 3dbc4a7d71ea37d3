//! TLS settings (`[tls]`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Config, Problem};

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

    pub const ALL: [ServerTls; 5] = [
        ServerTls::Disable,
        ServerTls::Prefer,
        ServerTls::Require,
        ServerTls::VerifyCa,
        ServerTls::VerifyFull,
    ];
}

impl std::str::FromStr for ServerTls {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ServerTls::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = ServerTls::ALL.iter().map(|m| m.as_str()).collect();
                format!("{s:?} is not a TLS mode; use one of {}", known.join(", "))
            })
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

/// The `[tls]` rules of `Config::validate`: certificates come with their
/// keys, the files exist, and verifying modes have roots to verify by.
pub(crate) fn check(config: &Config, out: &mut Vec<Problem>) {
    check_client_tls(&config.tls, out);
    check_server_tls(config, out);
}

/// A backend whose certificate must be verified needs roots to verify it by.
fn check_server_tls(config: &Config, out: &mut Vec<Problem>) {
    if config.tls.server_root_cert_file.is_some() {
        return;
    }
    if config.tls.server_tls.verifies() {
        out.push(Problem::new(
            "tls.server_tls",
            "verify-ca and verify-full need tls.server_root_cert_file: set it to the PEM file of the CA that signed the servers' certificates",
        ));
    }
    for (i, b) in config.backends.iter().enumerate() {
        if b.server_tls.is_some_and(|m| m.verifies()) {
            out.push(Problem::new(
                format!("backends[{i}].server_tls"),
                "verify-ca and verify-full need tls.server_root_cert_file: set it to the PEM file of the CA that signed the servers' certificates",
            ));
        }
    }
}

fn check_client_tls(tls: &Tls, out: &mut Vec<Problem>) {
    use crate::ClientTls;
    let needs_files = tls.client_mode() != ClientTls::Disable;
    match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(_), None) => out.push(Problem::new(
            "tls.client_key_file",
            "is missing: a certificate needs its private key; set it to the key's PEM file",
        )),
        (None, Some(_)) => out.push(Problem::new(
            "tls.client_cert_file",
            "is missing: a private key needs its certificate; set it to the certificate's PEM file",
        )),
        (None, None) if needs_files => out.push(Problem::new(
            "tls.client_tls",
            "needs a certificate: set tls.client_cert_file and tls.client_key_file, or client_tls = \"disable\"",
        )),
        _ => {}
    }
    match (&tls.server_cert_file, &tls.server_key_file) {
        (Some(_), None) => out.push(Problem::new(
            "tls.server_key_file",
            "is missing: tls.server_cert_file needs its private key; set it to the key's PEM file",
        )),
        (None, Some(_)) => out.push(Problem::new(
            "tls.server_cert_file",
            "is missing: tls.server_key_file needs its certificate; set it to the certificate's PEM file",
        )),
        _ => {}
    }
    for (key, file) in [
        ("tls.client_cert_file", &tls.client_cert_file),
        ("tls.client_key_file", &tls.client_key_file),
        ("tls.server_root_cert_file", &tls.server_root_cert_file),
        ("tls.server_cert_file", &tls.server_cert_file),
        ("tls.server_key_file", &tls.server_key_file),
    ] {
        if let Some(path) = file {
            if let Err(e) = std::fs::metadata(path) {
                out.push(Problem::new(
                    key,
                    format!(
                        "cannot read {}: {e}; give the path of an existing PEM file",
                        path.display()
                    ),
                ));
            }
        }
    }
}
