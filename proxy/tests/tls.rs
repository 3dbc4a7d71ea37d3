//! TLS between clients and pgsplit, with certificates made for the test
//! (a CA and a server certificate for `localhost` and 127.0.0.1): psql,
//! pgbench, psycopg (by SSLRequest and by direct TLS) and asyncpg verify
//! the certificate and are served, reads still on the replicas;
//! `client_tls = "require"` refuses plaintext; bad negotiations are refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use pgsplit_config::{ClientTls, ServerTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// Certificate files written once per test binary.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// A CA that signed nothing of pgsplit's.
    other_ca: PathBuf,
}

fn certs() -> &'static Certs {
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

fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap(), key)
}

async fn tls_proxy(mode: Option<ClientTls>) -> pgsplit::ProxyHandle {
    let mut config = routing_only();
    let c = certs();
    config.tls.client_tls = mode;
    config.tls.client_cert_file = Some(c.cert.clone());
    config.tls.client_key_file = Some(c.key.clone());
    start_proxy_with(config).await
}

fn tool(name: &str) -> Command {
    let bindir = pgsplit_cluster::find_bindir().expect("PostgreSQL binaries");
    let mut cmd = Command::new(bindir.join(name));
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.env("PGPASSWORD", PASSWORD).env("LC_ALL", "C");
    cmd
}

/// A libpq connection string to the proxy by host name `localhost`.
fn libpq(proxy: &pgsplit::ProxyHandle, db: &str, ssl: &str) -> String {
    format!(
        "host=localhost hostaddr=127.0.0.1 port={} dbname={db} user=postgres {ssl}",
        proxy.local_addr().port()
    )
}

fn psql(conn: &str, sql: &str) -> (bool, String) {
    let out = tool("psql")
        .args(["-X", "-At", "-d", conn, "-c", sql])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn verify_full(ca: &Path) -> String {
    format!("sslmode=verify-full sslrootcert={}", ca.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verifies_pgsplit_and_is_served_over_tls() {
    let proxy = tls_proxy(None).await;
    let db = fresh_database("tls_psql");
    let conn = libpq(&proxy, &db, &verify_full(&certs().ca));
    let (ok, out) = psql(&conn, "\\conninfo");
    assert!(ok && out.contains("SSL connection"), "{out}");
    // Routing is unchanged over TLS: a read on a replica, a write on the primary.
    let (ok, out) = psql(&conn, "SELECT inet_server_port()");
    assert!(ok, "{out}");
    assert_replica(out.trim().parse().unwrap(), "a read over TLS");
    let (ok, out) = psql(
        &conn,
        "CREATE TABLE t AS SELECT inet_server_port() AS port; SELECT port FROM t",
    );
    assert!(ok, "{out}");
    let port = out.lines().last().unwrap().parse().unwrap();
    assert_primary(port, "a write over TLS");
    // With "allow" (the default once a certificate is set) plaintext works too.
    let (ok, out) = psql(&libpq(&proxy, &db, "sslmode=disable"), "\\conninfo");
    assert!(ok && !out.contains("SSL connection"), "{out}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_require_logs_in_by_scram_sha_256_plus() {
    let proxy = tls_proxy(None).await;
    let db = fresh_database("tls_binding");
    let pass = format!("password={PASSWORD}");
    let bound = format!(
        "{} channel_binding=require {pass}",
        verify_full(&certs().ca)
    );
    let (ok, out) = psql(&libpq(&proxy, &db, &bound), "SELECT inet_server_port()");
    assert!(ok, "{out}");
    assert_replica(out.trim().parse().unwrap(), "a read after a bound login");
    // A wrong password is still refused, bound or not.
    let wrong = "sslmode=require channel_binding=require password=wrong";
    let (ok, out) = psql(&libpq(&proxy, &db, wrong), "SELECT 1");
    assert!(
        !ok && out.contains("password authentication failed"),
        "{out}"
    );
    // Without TLS there is nothing to bind to: libpq refuses on its own.
    let plain = format!("sslmode=disable channel_binding=require {pass}");
    let (ok, out) = psql(&libpq(&proxy, &db, &plain), "SELECT 1");
    assert!(!ok && out.contains("channel binding"), "{out}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_host_name_fails_with_a_clear_error() {
    let proxy = tls_proxy(None).await;
    let db = fresh_database("tls_wrong");
    let (ok, out) = psql(
        &libpq(&proxy, &db, &verify_full(&certs().other_ca)),
        "SELECT 1",
    );
    assert!(!ok && out.contains("certificate verify failed"), "{out}");
    let wrong_name = format!(
        "host=127.0.0.2 hostaddr=127.0.0.1 port={} dbname={db} user=postgres {}",
        proxy.local_addr().port(),
        verify_full(&certs().ca)
    );
    let (ok, out) = psql(&wrong_name, "SELECT 1");
    assert!(!ok && out.contains("does not match host name"), "{out}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_over_tls() {
    let proxy = tls_proxy(Some(ClientTls::Require)).await;
    let db = fresh_database("tls_pgbench");
    let conn = libpq(&proxy, &db, "sslmode=require");
    let run = |args: &[&str]| {
        let out = tool("pgbench").args(args).arg(&conn).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "pgbench {args:?}: {text}");
        text
    };
    run(&["-i", "-s", "1", "-q"]);
    cluster()
        .wait_for_replay(std::time::Duration::from_secs(30))
        .unwrap();
    for mode in ["simple", "extended", "prepared"] {
        let out = run(&["-n", "-c", "4", "-t", "50", "-M", mode]);
        assert!(
            out.contains("number of transactions actually processed: 200/200"),
            "{mode}: {out}"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_require_refuses_plaintext_with_28000() {
    let proxy = tls_proxy(Some(ClientTls::Require)).await;
    let db = fresh_database("tls_require");
    let (ok, out) = psql(&libpq(&proxy, &db, "sslmode=disable"), "SELECT 1");
    assert!(!ok && out.contains("pgsplit requires TLS"), "{out}");
    let e = tokio_postgres::connect(
        &conn_string(&proxy, "postgres", PASSWORD, &db),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(sqlstate(&e), "28000", "{e}");
    let (ok, out) = psql(&libpq(&proxy, &db, "sslmode=require"), "SELECT 1");
    assert!(ok && out.trim() == "1", "{out}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers_verify_pgsplit_by_sslrequest_and_direct_tls() {
    let proxy = tls_proxy(Some(ClientTls::Require)).await;
    let db = fresh_database("tls_py");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/tls.py");
    let port = proxy.local_addr().port().to_string();
    let ca = certs().ca.display().to_string();
    let replicas = format!("{},{}", cluster().port(1), cluster().port(2));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, "localhost", &port, &db, &ca, &replicas])
            .output()
            .expect("python3 runs (install psycopg[binary] and asyncpg: see .ci/run)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("tls drivers ok"),
        "python drivers over TLS failed:\n{stdout}\n{stderr}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn bytes_after_sslrequest_are_refused_before_the_handshake() {
    let proxy = tls_proxy(None).await;
    let mut c = RawClient::connect(&proxy).await;
    // SSLRequest with a StartupMessage pipelined behind it, in one write.
    let mut out = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut startup = bytes::BytesMut::new();
    pgsplit_protocol::encode::startup_message(&mut startup, &[("user", "postgres")]);
    out.extend_from_slice(&startup);
    c.send(&out).await;
    let frames = c.until_closed().await;
    let e = first_error(&frames).expect("an ErrorResponse");
    assert_eq!(e.0, "08P01", "{e:?}");
    assert!(e.2.contains("after an encryption request"), "{e:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn direct_tls_without_alpn_is_refused() {
    use tokio::io::AsyncReadExt;
    let proxy = tls_proxy(None).await;
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(&certs().ca).unwrap();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let connect = |alpn: bool| {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        if alpn {
            config.alpn_protocols = vec![b"postgresql".to_vec()];
        }
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let addr = proxy.local_addr();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            connector.connect(name, tcp).await.unwrap()
        }
    };
    // Without ALPN: told why, in the TLS session, then closed.
    let mut tls = connect(false).await;
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got).await;
    let mut buf = bytes::BytesMut::from(&got[..]);
    let frame =
        pgsplit_protocol::split_frame(&mut buf, pgsplit_protocol::Direction::Backend, 1 << 20)
            .unwrap()
            .expect("an ErrorResponse");
    let e = first_error(&[frame]).unwrap();
    assert_eq!(e.0, "08P01", "{e:?}");
    assert!(e.2.contains("ALPN"), "{e:?}");
    // With it, a startup inside TLS gets a login.
    let mut tls = connect(true).await;
    use tokio::io::AsyncWriteExt;
    let mut startup = bytes::BytesMut::new();
    pgsplit_protocol::encode::startup_message(
        &mut startup,
        &[
            ("user", pgsplit_cluster::TRUST_USER),
            ("database", "postgres"),
        ],
    );
    tls.write_all(&startup).await.unwrap();
    let mut first = [0u8; 9];
    tls.read_exact(&mut first).await.unwrap();
    assert_eq!(first[0], b'R', "an authentication message: {first:?}");
    assert_eq!(&first[5..9], &0u32.to_be_bytes(), "AuthenticationOk");
    proxy.shutdown().await;
}

/// A cluster whose servers take TLS logins only (`hostssl`), with the
/// test CA's certificate.
fn tls_cluster() -> pgsplit_cluster::Cluster {
    let c = certs();
    pgsplit_cluster::Cluster::start(pgsplit_cluster::ClusterOptions {
        tls: Some(pgsplit_cluster::ServerCert {
            cert_pem: std::fs::read_to_string(&c.cert).unwrap(),
            key_pem: std::fs::read_to_string(&c.key).unwrap(),
            hostssl_only: true,
        }),
        ..Default::default()
    })
    .expect("start a cluster with TLS")
}

/// Whether the connection that ran it is encrypted, and the server's port.
const SSL_AND_PORT: &str =
    "SELECT ssl::text, inet_server_port()::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgsplit_reaches_servers_that_take_only_tls_and_verifies_them() {
    let cluster = tokio::task::spawn_blocking(tls_cluster).await.unwrap();
    let with = |mode, ca: &Path| {
        let mut config = pgsplit::demo::config_for(&cluster, "127.0.0.1:0");
        config.tls.server_tls = mode;
        config.tls.server_root_cert_file = Some(ca.to_path_buf());
        config
    };
    let proxy = start_proxy_with(with(ServerTls::VerifyFull, &certs().ca)).await;
    let client = connect(&proxy, "postgres").await;
    let row = |sql: &'static str| {
        let client = &client;
        async move {
            let r = client.simple_query(sql).await.unwrap();
            let row = r
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                })
                .expect("a row");
            let port: u16 = row.get(1).unwrap().parse().unwrap();
            (row.get(0).unwrap().to_owned(), port)
        }
    };
    let (ssl, port) = row(SSL_AND_PORT).await;
    assert_eq!(ssl, "true", "the read's server connection is not encrypted");
    assert!(port != cluster.port(0), "the read ran on the primary");
    let hinted = "/* pgsplit:primary */ SELECT ssl::text, inet_server_port()::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let (ssl, port) = row(hinted).await;
    assert_eq!((ssl.as_str(), port), ("true", cluster.port(0)));
    // The health checks reach every server the same way.
    let nodes = client.simple_query("SHOW pool_nodes").await.unwrap();
    let up = nodes
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get("pg_status") == Some("up")))
        .count();
    assert_eq!(up, 3, "{nodes:?}");
    drop(client);
    proxy.shutdown().await;

    // A certificate from a CA pgsplit was not told about: refused, saying why.
    let proxy = start_proxy_with(with(ServerTls::VerifyFull, &certs().other_ca)).await;
    let e = tokio_postgres::connect(
        &conn_string(&proxy, "postgres", PASSWORD, "postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(sqlstate(&e), "08001", "{e}");
    let message = e.as_db_error().unwrap().message().to_owned();
    assert!(
        message.contains("TLS") && message.contains("certificate"),
        "{message}"
    );
    proxy.shutdown().await;

    // Without TLS, the server's own refusal is relayed.
    let proxy = start_proxy_with(with(ServerTls::Disable, &certs().ca)).await;
    let e = tokio_postgres::connect(
        &conn_string(&proxy, "postgres", PASSWORD, "postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("refused");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("no encryption"), "{e}");
    proxy.shutdown().await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

/// A fresh CA and a certificate for localhost signed by it, as PEM:
/// (CA certificate, server certificate, server key).
fn fresh_chain(ca_name: &str) -> (String, String, String) {
    let (ca, ca_key) = make_ca(ca_name);
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A TLS session to the proxy (direct TLS), logged in as the trust user.
async fn tls_session(
    proxy: &pgsplit::ProxyHandle,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::AsyncWriteExt;
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
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    let tcp = tokio::net::TcpStream::connect(proxy.local_addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
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

/// Reads frames up to ReadyForQuery; returns them.
async fn until_ready(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_used_for_new_connections_and_old_ones_keep_theirs() {
    use tokio::io::AsyncWriteExt;
    let dir = std::env::temp_dir().join(format!("pgsplit-tls-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    let (ca1, cert1, key1) = fresh_chain("first CA");
    std::fs::write(&cert, cert1).unwrap();
    std::fs::write(&key, key1).unwrap();
    let (ca1_file, ca2_file) = (dir.join("ca1.pem"), dir.join("ca2.pem"));
    std::fs::write(&ca1_file, &ca1).unwrap();
    let mut config = routing_only();
    config.tls.client_cert_file = Some(cert.clone());
    config.tls.client_key_file = Some(key.clone());
    let proxy = start_proxy_with(config).await;
    let db = fresh_database("tls_reload");
    let mut old = tls_session(&proxy, &ca1).await;
    let (ok, out) = psql(&libpq(&proxy, &db, &verify_full(&ca1_file)), "SELECT 1");
    assert!(ok, "{out}");

    // The files are replaced by a certificate from another CA.
    let (ca2, cert2, key2) = fresh_chain("second CA");
    std::fs::write(&ca2_file, &ca2).unwrap();
    std::fs::write(&key, key2).unwrap();
    std::fs::write(&cert, cert2).unwrap();
    let took = time_until(Duration::from_secs(15), || async {
        psql(&libpq(&proxy, &db, &verify_full(&ca2_file)), "SELECT 1").0
    })
    .await
    .expect("new connections get the new certificate");
    println!("new certificate in use after {took:?}");
    let (ok, out) = psql(&libpq(&proxy, &db, &verify_full(&ca1_file)), "SELECT 1");
    assert!(!ok && out.contains("certificate verify failed"), "{out}");

    // The session made before keeps its TLS session and is served.
    let mut q = bytes::BytesMut::new();
    pgsplit_protocol::encode::query(&mut q, "SELECT 41 + 1");
    old.write_all(&q).await.unwrap();
    assert_eq!(data_values(&until_ready(&mut old).await), ["42"]);

    // A broken file is not taken: the certificate in use stays.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    tokio::time::sleep(pgsplit::tls::WATCH_EVERY * 2).await;
    let (ok, out) = psql(&libpq(&proxy, &db, &verify_full(&ca2_file)), "SELECT 1");
    assert!(ok, "the broken file replaced a working certificate: {out}");
    proxy.shutdown().await;
}
