//! Certificates changed on disk while pgsplit runs.

use std::time::Duration;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_used_for_new_connections_and_old_ones_keep_theirs() {
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
    assert_eq!(data_values(&query(&mut old, "SELECT 41 + 1").await), ["42"]);

    // A broken file is not taken: the certificate in use stays.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    tokio::time::sleep(pgsplit::tls::WATCH_EVERY * 2).await;
    let (ok, out) = psql(&libpq(&proxy, &db, &verify_full(&ca2_file)), "SELECT 1");
    assert!(ok, "the broken file replaced a working certificate: {out}");
    proxy.shutdown().await;
}
