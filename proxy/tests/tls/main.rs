//! TLS, with certificates made for the tests (a CA and a certificate for
//! `localhost` and 127.0.0.1). To clients (`clients.rs`): psql, pgbench,
//! psycopg (by SSLRequest and by direct TLS) and asyncpg verify pgsplit and
//! are served, reads still on the replicas; `client_tls = "require"`
//! refuses plaintext; bad negotiations are refused. To servers
//! (`servers.rs`): a cluster that takes TLS logins only. Certificates
//! changed on disk (`reload.rs`).

mod clients;
#[path = "../common/mod.rs"]
mod common;
mod logins;
mod reload;
mod servers;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use common::*;
use pgsplit_config::ClientTls;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// Certificate files written once per test binary.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A CA that signed nothing of pgsplit's.
    pub other_ca: PathBuf,
}

pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pgsplit-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, ca_key) = make_ca("pgsplit test CA");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "pgsplit test server");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let (other, _) = make_ca("some other CA");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Certs {
            ca: write("ca.pem", ca.pem()),
            cert: write("server.pem", cert.pem()),
            key: write("server.key", key.serialize_pem()),
            other_ca: write("other-ca.pem", other.pem()),
        }
    })
}

pub fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap(), key)
}

pub async fn tls_proxy(mode: Option<ClientTls>) -> pgsplit::ProxyHandle {
    let mut config = routing_only();
    let c = certs();
    config.tls.client_tls = mode;
    config.tls.client_cert_file = Some(c.cert.clone());
    config.tls.client_key_file = Some(c.key.clone());
    start_proxy_with(config).await
}

/// A libpq connection string to the proxy by host name `localhost`.
pub fn libpq(proxy: &pgsplit::ProxyHandle, db: &str, ssl: &str) -> String {
    format!(
        "host=localhost hostaddr=127.0.0.1 port={} dbname={db} user=postgres {ssl}",
        proxy.local_addr().port()
    )
}

pub fn psql(conn: &str, sql: &str) -> (bool, String) {
    let out = tool("psql")
        .args(["-X", "-At", "-d", conn, "-c", sql])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

pub fn verify_full(ca: &Path) -> String {
    format!("sslmode=verify-full sslrootcert={}", ca.display())
}

/// A fresh CA and a certificate for localhost signed by it, as PEM:
/// (CA certificate, server certificate, server key).
pub fn fresh_chain(ca_name: &str) -> (String, String, String) {
    let (ca, ca_key) = make_ca(ca_name);
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A direct TLS connection to the proxy that trusts `ca_pem`, offering
/// ALPN `postgresql` if `alpn`.
pub async fn tls_connect(
    proxy: &pgsplit::ProxyHandle,
    ca_pem: &str,
    alpn: bool,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    if alpn {
        config.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    let tcp = tokio::net::TcpStream::connect(proxy.local_addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// A direct TLS session to the proxy, logged in as the trust user.
pub async fn tls_session(
    proxy: &pgsplit::ProxyHandle,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut tls = tls_connect(proxy, ca_pem, true).await;
    let mut startup = bytes::BytesMut::new();
    pgsplit_protocol::encode::startup_message(
        &mut startup,
        &[
            ("user", pgsplit_cluster::TRUST_USER),
            ("database", "postgres"),
        ],
    );
    tls.write_all(&startup).await.unwrap();
    until_ready(&mut tls).await;
    tls
}

/// One simple Query over `tls`: every frame up to its ReadyForQuery.
pub async fn query(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    sql: &str,
) -> Vec<pgsplit_protocol::Frame> {
    use tokio::io::AsyncWriteExt;
    let mut q = bytes::BytesMut::new();
    pgsplit_protocol::encode::query(&mut q, sql);
    tls.write_all(&q).await.unwrap();
    until_ready(tls).await
}

/// Reads frames up to ReadyForQuery; returns them.
pub async fn until_ready(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> Vec<pgsplit_protocol::Frame> {
    use tokio::io::AsyncReadExt;
    let mut buf = bytes::BytesMut::new();
    let mut frames = Vec::new();
    loop {
        while let Some(f) =
            pgsplit_protocol::split_frame(&mut buf, pgsplit_protocol::Direction::Backend, 1 << 20)
                .unwrap()
        {
            let done = f.tag() == b'Z';
            frames.push(f);
            if done {
                return frames;
            }
        }
        assert!(
            tls.read_buf(&mut buf).await.unwrap() > 0,
            "closed: {frames:?}"
        );
    }
}

/// Reads `tls` until the proxy closes it; the first ErrorResponse in it.
pub async fn error_until_closed(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> (String, String, String) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got).await;
    let mut buf = bytes::BytesMut::from(&got[..]);
    let frame =
        pgsplit_protocol::split_frame(&mut buf, pgsplit_protocol::Direction::Backend, 1 << 20)
            .unwrap()
            .expect("an ErrorResponse");
    first_error(&[frame]).expect("an ErrorResponse")
}
