//! TLS between clients and pgsplit.

use super::*;

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
    let port = proxy.local_addr().port().to_string();
    let ca = certs().ca.display().to_string();
    let replicas = format!("{},{}", cluster().port(1), cluster().port(2));
    let args = vec!["localhost".to_owned(), port, db, ca, replicas];
    python_script("tls.py", args, "tls drivers ok").await;
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
    let proxy = tls_proxy(None).await;
    let ca = std::fs::read_to_string(&certs().ca).unwrap();
    // Without ALPN: told why, in the TLS session, then closed.
    let mut tls = tls_connect(&proxy, &ca, false).await;
    let e = error_until_closed(&mut tls).await;
    assert_eq!(e.0, "08P01", "{e:?}");
    assert!(e.2.contains("ALPN"), "{e:?}");
    // With it, a startup inside TLS gets a login and is served.
    let mut tls = tls_session(&proxy, &ca).await;
    let frames = query(&mut tls, "SELECT inet_server_port()").await;
    assert_replica(
        data_values(&frames)[0].parse().unwrap(),
        "a read over direct TLS",
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_encryption_request_inside_tls_is_refused() {
    use tokio::io::AsyncWriteExt;
    let proxy = tls_proxy(None).await;
    let ca = std::fs::read_to_string(&certs().ca).unwrap();
    let mut tls = tls_connect(&proxy, &ca, true).await;
    tls.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let e = error_until_closed(&mut tls).await;
    assert_eq!(e.0, "08P01", "{e:?}");
    assert!(e.2.contains("already encrypted"), "{e:?}");
    proxy.shutdown().await;
}
