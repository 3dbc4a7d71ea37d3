//! TLS with rustls, both ways: to clients (`client.rs`: the certificate
//! pgsplit presents, either negotiation) and to servers (`server.rs`: the
//! certificate checks of libpq's sslmode). Certificates are read from PEM
//! files, and read again when the files change (`reload_if_changed`, which
//! the proxy calls every [`WATCH_EVERY`]): new handshakes use the new ones,
//! connections already made keep theirs.

mod client;
mod server;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use client::ClientTlsSetup;
pub use server::ServerTlsSetup;

/// The ALPN protocol name PostgreSQL uses (and direct TLS requires).
pub const ALPN: &[u8] = b"postgresql";

/// The first byte of a TLS record carrying a handshake: a client that
/// starts with it negotiates TLS directly.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// How often the certificate files are looked at for a change.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Why the configured certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("tls.{key}: cannot read {path}: {error}; give the path of a PEM file")]
    Read {
        key: &'static str,
        path: String,
        error: String,
    },
    #[error("tls.{key}: {path} holds no certificate; give a PEM file with certificates")]
    NoCertificate { key: &'static str, path: String },
    #[error("the [tls] certificates and keys do not fit together: {0}")]
    Mismatch(String),
}

/// A configuration built from files, swapped whole when they change.
struct Reloadable<T> {
    current: RwLock<Arc<T>>,
    files: Vec<PathBuf>,
    /// Modification time and size of each file when last read.
    seen: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl<T> Reloadable<T> {
    fn new(value: T, files: Vec<PathBuf>) -> Reloadable<T> {
        let seen = stamps(&files);
        Reloadable {
            current: RwLock::new(Arc::new(value)),
            files,
            seen: Mutex::new(seen),
        }
    }

    fn get(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap())
    }

    /// Builds anew with `load` if any file changed since it was last read.
    /// A build that fails (a file half written, a key that does not fit)
    /// leaves the one in use; it is tried again at the next change.
    fn reload_if_changed(&self, what: &str, load: impl FnOnce() -> Result<T, TlsConfigError>) {
        let now = stamps(&self.files);
        {
            let mut seen = self.seen.lock().unwrap();
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match load() {
            Ok(value) => {
                *self.current.write().unwrap() = Arc::new(value);
                tracing::info!(files = ?self.files, "{what}: certificates read again; new connections use them");
            }
            Err(e) => {
                tracing::error!(error = %e, "{what}: the changed certificate files cannot be used; keeping the ones in use")
            }
        }
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|e| TlsConfigError::Read {
        key,
        path: path.display().to_string(),
        error: e.to_string(),
    })
}

/// The certificates in a PEM file: at least one.
fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Read {
            key,
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            key,
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn read_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let pem = read_file(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsConfigError::Read {
        key,
        path: path.display().to_string(),
        error: format!("no private key in it ({e})"),
    })
}
