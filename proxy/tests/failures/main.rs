//! Bad input and dead servers: the client gets a clear ErrorResponse with a
//! fitting SQLSTATE, and the proxy keeps serving everyone else.

mod binary;
mod client_faults;
#[path = "../common/mod.rs"]
mod common;
mod descriptors;
mod large_messages;
mod logs;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use pgsplit_config::Backend;
use pgsplit_protocol::backend::{self, Authentication, BackendMessage};
use pgsplit_protocol::encode;

/// Proof that the proxy still works for others after a bad client: a read
/// reaches a replica and a write reaches the primary.
async fn still_serving(proxy: &pgsplit::ProxyHandle) {
    let client = connect(proxy, "postgres").await;
    let port = read_port(&client, false).await.unwrap();
    assert_replica(port, "a read from another client");
    assert_primary(
        port_of(&client, "/* pgsplit:primary */ SELECT inet_server_port()").await,
        "a hinted read from another client",
    );
}

#[tokio::test]
async fn wrong_password_is_28p01_and_closes_only_that_connection() {
    let proxy = start_proxy().await;
    let other = connect(&proxy, "postgres").await;
    for user in ["postgres", pgsplit_cluster::MD5_USER] {
        let e = connect_as(&proxy, user, "wrong", "postgres")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "28P01", "{user}: {e}");
        let message = e.as_db_error().unwrap().message();
        assert!(
            message.contains("password authentication failed"),
            "{message}"
        );
    }
    // The connection that was already open is untouched.
    other.batch_execute("SELECT 1").await.unwrap();
    still_serving(&proxy).await;
    proxy.shutdown().await;
}

/// What a SCRAM login with a wrong proof saw.
struct WrongProof {
    /// The client's own address.
    client: std::net::SocketAddr,
    /// The server-first message after the nonce: `s=<salt>,i=<iterations>`.
    salt_and_iterations: String,
    error: (String, String, String),
}

/// A SCRAM login as `user` with a wrong proof, by hand.
async fn scram_with_wrong_proof(proxy: std::net::SocketAddr, user: &str, db: &str) -> WrongProof {
    let mut c = RawClient::connect_to(proxy).await;
    let client = c.stream.local_addr().unwrap();
    let mut out = BytesMut::new();
    encode::startup_message(&mut out, &[("user", user), ("database", db)]);
    c.send(&out).await;
    let first = c.recv().await.expect("an authentication request");
    assert!(
        matches!(
            backend::parse(&first),
            Ok(BackendMessage::Authentication(Authentication::Sasl { .. }))
        ),
        "{user}: {first:?}"
    );
    let nonce = "rOprNGfwEbeRWgbNEkqO";
    out.clear();
    let client_first = format!("n,,n=,r={nonce}");
    encode::sasl_initial_response(&mut out, "SCRAM-SHA-256", client_first.as_bytes());
    c.send(&out).await;
    let server_first = match backend::parse(&c.recv().await.expect("server-first")) {
        Ok(BackendMessage::Authentication(Authentication::SaslContinue(d))) => {
            String::from_utf8(d.to_vec()).unwrap()
        }
        other => panic!("{user}: {other:?}"),
    };
    let combined = server_first
        .split(',')
        .next()
        .and_then(|r| r.strip_prefix("r="))
        .unwrap()
        .to_owned();
    out.clear();
    let proof = "p=".to_owned() + &"A".repeat(43) + "=";
    let client_final = format!("c=biws,r={combined},{proof}");
    encode::sasl_response(&mut out, client_final.as_bytes());
    c.send(&out).await;
    let error = first_error(&c.until_closed().await).expect("an ErrorResponse");
    WrongProof {
        client,
        salt_and_iterations: server_first.split_once(',').unwrap().1.to_owned(),
        error,
    }
}

#[tokio::test]
async fn an_unknown_user_gets_the_same_answer_as_a_wrong_password() {
    let proxy = start_proxy().await;
    // Through libpq-like drivers: the same SQLSTATE and words.
    let e = connect_as(&proxy, "nobody", "x", "postgres")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "password authentication failed for user \"nobody\""
    );
    // Step by step: the same exchange, with a salt as stable as a real
    // user's, so repeated attempts do not give the game away.
    let attempt = |user| scram_with_wrong_proof(proxy.local_addr(), user, "postgres");
    let known = attempt("postgres").await;
    let unknown = attempt("nobody").await;
    let again = attempt("nobody").await;
    let other = attempt("nobody_else").await;
    let salt = |a: &WrongProof| a.salt_and_iterations.split(',').next().unwrap().len();
    assert_eq!(
        salt(&unknown),
        salt(&known),
        "{} vs {}",
        unknown.salt_and_iterations,
        known.salt_and_iterations
    );
    for a in [&known, &unknown] {
        assert!(
            a.salt_and_iterations.ends_with(",i=4096"),
            "{}",
            a.salt_and_iterations
        );
    }
    assert_eq!(
        unknown.salt_and_iterations, again.salt_and_iterations,
        "one name, one salt"
    );
    assert_ne!(
        unknown.salt_and_iterations, other.salt_and_iterations,
        "another name, another salt"
    );
    assert_eq!(known.error.0, "28P01");
    let (code, severity, message) = known.error;
    assert_eq!(
        unknown.error,
        (code, severity, message.replace("postgres", "nobody"))
    );
    still_serving(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn each_client_and_server_auth_method_logs_in() {
    let proxy = start_proxy().await;
    // Client side: md5 for md5user, trust for trustuser, SCRAM for the rest;
    // server side: the cluster's pg_hba uses the same method per role.
    for (user, password) in [
        (pgsplit_cluster::MD5_USER, pgsplit_cluster::MD5_PASSWORD),
        (pgsplit_cluster::TRUST_USER, "ignored"),
        (pgsplit_cluster::SCRAM_USER, pgsplit_cluster::SCRAM_PASSWORD),
        ("postgres", PASSWORD),
    ] {
        let client = connect_as(&proxy, user, password, "postgres")
            .await
            .unwrap_or_else(|e| panic!("{user}: {e:?}"));
        // Logging in to a replica and to the primary, with the same method.
        for (sql, on_primary) in [
            ("SELECT current_user::text, inet_server_port()", false),
            (
                "/* pgsplit:primary */ SELECT current_user::text, inet_server_port()",
                true,
            ),
        ] {
            let row = client.query_one(sql, &[]).await.unwrap();
            assert_eq!(row.get::<_, &str>(0), user);
            let port = row.get::<_, i32>(1) as u16;
            if on_primary {
                assert_primary(port, &format!("{user}: {sql}"));
            } else {
                assert_replica(port, &format!("{user}: {sql}"));
            }
        }
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_server_side_refusal_is_relayed_verbatim() {
    let proxy = start_proxy().await;
    let e = connect_as(&proxy, "postgres", PASSWORD, "no_such_db")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "3D000");
    let message = e.as_db_error().unwrap().message();
    assert!(message.contains("no_such_db"), "{message}");
    still_serving(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn malformed_startup_packets_get_08p01() {
    let proxy = start_proxy().await;
    let cases: Vec<Vec<u8>> = vec![
        // Length below the minimum.
        vec![0, 0, 0, 4, 0, 3, 0, 0],
        // Length over the 10 000-byte startup limit.
        vec![0, 1, 0, 0, 0, 3, 0, 0],
        // Protocol 2.
        [
            &12u32.to_be_bytes()[..],
            &(2u32 << 16).to_be_bytes(),
            b"a\0\0\0",
        ]
        .concat(),
        // Parameter without terminator.
        [
            &13u32.to_be_bytes()[..],
            &(3u32 << 16).to_be_bytes(),
            b"user\0",
        ]
        .concat(),
    ];
    for case in cases {
        let mut c = RawClient::connect(&proxy).await;
        c.send(&case).await;
        let frames = c.until_closed().await;
        let (code, severity, message) =
            first_error(&frames).unwrap_or_else(|| panic!("no error for {case:?}: {frames:?}"));
        assert_eq!(
            (code.as_str(), severity.as_str()),
            ("08P01", "FATAL"),
            "{message}"
        );
    }
    // A startup without a user name.
    let mut c = RawClient::connect(&proxy).await;
    let mut out = BytesMut::new();
    encode::startup_message(&mut out, &[("database", "postgres")]);
    c.send(&out).await;
    assert_eq!(first_error(&c.until_closed().await).unwrap().0, "28000");
    still_serving(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn oversized_and_malformed_messages_close_only_that_session() {
    let proxy = start_proxy().await;
    // A Query claiming 2 GiB: rejected from the header, nothing allocated.
    let mut c = RawClient::login(&proxy, "postgres").await;
    c.send(&[b'Q', 0x7f, 0xff, 0xff, 0xff, b'S']).await;
    let (code, severity, message) = first_error(&c.until_closed().await).unwrap();
    assert_eq!((code.as_str(), severity.as_str()), ("08P01", "FATAL"));
    assert!(message.contains("exceeds the limit"), "{message}");

    // A Sync claiming 1 MiB exceeds the small limit for control messages.
    let mut c = RawClient::login(&proxy, "postgres").await;
    c.send(&[b'S', 0, 0x10, 0, 0]).await;
    assert_eq!(first_error(&c.until_closed().await).unwrap().0, "08P01");

    // A length below 4.
    let mut c = RawClient::login(&proxy, "postgres").await;
    c.send(&[b'Q', 0, 0, 0, 2]).await;
    assert_eq!(first_error(&c.until_closed().await).unwrap().0, "08P01");
    still_serving(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn encryption_requests_are_declined_and_newer_protocols_negotiated() {
    let proxy = start_proxy().await;
    let mut c = RawClient::connect(&proxy).await;
    c.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await; // SSLRequest
    let mut byte = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut c.stream, &mut byte)
        .await
        .unwrap();
    assert_eq!(&byte, b"N");

    // Startup asking for protocol 3.2 with an unknown _pq_ option.
    let body = b"user\0trustuser\0database\0postgres\0_pq_.future\0on\0\0";
    let mut out = BytesMut::new();
    out.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&((3u32 << 16) | 2).to_be_bytes());
    out.extend_from_slice(body);
    c.send(&out).await;
    let frames = c.until_ready().await;
    assert_eq!(
        backend::parse(&frames[0]).unwrap(),
        BackendMessage::NegotiateProtocolVersion { newest_minor: 0 }
    );
    let mut q = BytesMut::new();
    encode::query(&mut q, "SELECT inet_server_port()");
    c.send(&q).await;
    let rows = data_values(&c.until_ready().await);
    assert_eq!(rows.len(), 1);
    assert_replica(rows[0].parse().unwrap(), "a read after negotiation");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_primary_that_is_down_gives_08001_quickly() {
    // A port nothing listens on, and that no test's proxy can be given:
    // a port released after binding it may be handed to another test's
    // listener at once (an ephemeral port), and then the connect succeeds.
    let dead_port = 1;
    let mut config = config();
    config.backends = vec![Backend {
        name: "gone".into(),
        host: "127.0.0.1".into(),
        port: dead_port,
        role: pgsplit_config::RoleHint::Primary,
        ..Backend::default()
    }];
    let proxy = start_proxy_with(config).await;
    let started = Instant::now();
    let e = connect_as(&proxy, "postgres", PASSWORD, "postgres")
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(sqlstate(&e), "08001");
    let db = e.as_db_error().unwrap();
    assert!(db.message().contains("\"gone\""), "{}", db.message());
    assert!(
        db.hint().unwrap_or("").contains("running"),
        "{:?}",
        db.hint()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_client_limit_answers_53300() {
    let mut config = config();
    config.limits.max_client_connections = 2;
    let proxy = start_proxy_with(config).await;
    let a = connect(&proxy, "postgres").await;
    let b = connect(&proxy, "postgres").await;
    let e = connect_as(&proxy, "postgres", PASSWORD, "postgres")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "53300");
    assert!(e
        .as_db_error()
        .unwrap()
        .hint()
        .unwrap()
        .contains("max_client_connections"));
    a.batch_execute("SELECT 1").await.unwrap();
    drop(b);
    // The slot comes back once the session is gone.
    let ok = eventually(Duration::from_secs(5), || async {
        connect_as(&proxy, "postgres", PASSWORD, "postgres")
            .await
            .is_ok()
    })
    .await;
    assert!(ok, "the freed slot was never reused");
    proxy.shutdown().await;
}

/// A 25006 from the primary is also what a demoted primary says, so
/// pgsplit re-checks the server before trying the write again (README,
/// "Requests caught in a failure"). When the refusal is the client's own
/// doing (`default_transaction_read_only`), the check finds the primary
/// still primary: the client gets PostgreSQL's 25006, nothing about the
/// cluster changes, and other sessions never wait for a failover.
#[tokio::test]
async fn a_read_only_refusal_the_client_asked_for_is_not_taken_for_a_demotion() {
    let db = fresh_database("failures_readonly_refusal");
    let mut cfg = config();
    cfg.metrics_listen = Some("127.0.0.1:0".into());
    let health = cfg.health.clone();
    let proxy = start_proxy_with(cfg).await;
    let setup = connect(&proxy, &db).await;
    setup.batch_execute("CREATE TABLE t (x int)").await.unwrap();
    // Another session writing all along; its longest pause is measured.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let other = connect(&proxy, &db).await;
    let background = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut ports = Vec::new();
            let mut last = Instant::now();
            let mut i = 1000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let port = scalar(
                    &other,
                    &format!("INSERT INTO t VALUES ({i}) RETURNING inet_server_port()"),
                )
                .await;
                ports.push(port.parse::<u16>().unwrap());
                longest = longest.max(last.elapsed());
                last = Instant::now();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (longest, ports)
        })
    };
    // A few writes first, so a pause caused by the refusal stands out.
    let warm = eventually(Duration::from_secs(5), || async {
        metric(
            &metrics_page(&proxy).await,
            "pgsplit_writes_total{backend=\"primary\"}",
        ) >= 10
    })
    .await;
    assert!(warm, "the background writer did not get going");
    let page = metrics_page(&proxy).await;
    let primary_changes = metric(&page, "pgsplit_primary_changes_total");
    let status_changes = metric(
        &page,
        "pgsplit_backend_status_changes_total{backend=\"primary\"}",
    );
    let replica_writes: u64 = ["replica1", "replica2"]
        .iter()
        .map(|r| metric(&page, &format!("pgsplit_writes_total{{backend=\"{r}\"}}")))
        .sum();

    let careful = connect(&proxy, &db).await;
    careful
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .unwrap();
    let started = Instant::now();
    let e = careful
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .expect_err("a read-only session cannot write");
    let refused_after = started.elapsed();
    // PostgreSQL's own refusal reaches the client, not a 57P03 after
    // waiting out a failover that is not happening.
    assert_eq!(sqlstate(&e), "25006", "{e}");
    let message = e.as_db_error().unwrap().message();
    assert!(
        message.contains("read-only transaction"),
        "not the server's refusal: {message}"
    );
    // The re-check waits for two more health checks of the primary, at
    // most health_check_timeout in all; a second of slack for a loaded
    // machine. Taking the refusal for a demotion would instead wait for a
    // new primary, up to failover_timeout (30 s by default), then 57P03.
    let refusal_bound = health.health_check_timeout + Duration::from_secs(1);
    assert!(
        refused_after < refusal_bound,
        "the refusal took {refused_after:?}, over {refusal_bound:?}"
    );
    // The re-check is over before the client hears the refusal: node 0 is
    // still the primary and nothing was marked down or fenced (columns 3
    // and 6 of SHOW pool_nodes are status and role). The counters also
    // catch a change undone since.
    let admin = connect(&proxy, "postgres").await;
    let rows = pool_node_rows(&admin).await;
    assert_eq!(
        rows[0][6], "primary",
        "role of node 0 after the refusal: {rows:?}"
    );
    assert!(
        rows.iter().all(|r| r[3] == "up"),
        "a node went down after the refusal: {rows:?}"
    );
    let page = metrics_page(&proxy).await;
    assert_eq!(
        metric(&page, "pgsplit_primary_changes_total"),
        primary_changes,
        "the primary changed after a refusal the client asked for"
    );
    assert_eq!(
        metric(
            &page,
            "pgsplit_backend_status_changes_total{backend=\"primary\"}"
        ),
        status_changes,
        "the primary's status changed after the refusal"
    );
    assert_eq!(
        metric(&page, "pgsplit_backend_primary{backend=\"primary\"}"),
        1
    );
    assert_eq!(
        metric(&page, "pgsplit_backend_fenced{backend=\"primary\"}"),
        0
    );
    // The refused INSERT went to the primary only: a demoted primary's
    // write is retried once elsewhere, and there is no elsewhere here.
    let now_replica_writes: u64 = ["replica1", "replica2"]
        .iter()
        .map(|r| metric(&page, &format!("pgsplit_writes_total{{backend=\"{r}\"}}")))
        .sum();
    assert_eq!(
        now_replica_writes, replica_writes,
        "a write was sent to a replica"
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (longest, ports) = background.await.unwrap();
    // Everyone else kept writing to the primary without a pause: a
    // suspected demotion marks the server unreachable for 2 s or holds
    // writes for a new primary, either of which shows here.
    println!("readonly_refusal: refused after {refused_after:?}; the other writer's longest pause {longest:?} over {} writes", ports.len());
    assert!(
        longest < Duration::from_millis(500),
        "another session's write waited {longest:?} around the 25006"
    );
    assert!(ports.iter().all(|&p| p == cluster().port(0)), "{ports:?}");
    // Nothing of the refused write landed.
    assert_eq!(
        scalar(&setup, "SELECT count(*) FROM t WHERE x = 1").await,
        "0"
    );
    // The session that asked for read-only gets writes back when it says so.
    careful
        .batch_execute("RESET default_transaction_read_only")
        .await
        .unwrap();
    let port = scalar(
        &careful,
        "INSERT INTO t VALUES (2) RETURNING inet_server_port()",
    )
    .await;
    assert_eq!(port.parse::<u16>().unwrap(), cluster().port(0));
    // Without clients, shutdown does not wait for sessions to finish.
    drop((setup, careful, admin));
    proxy.shutdown().await;
}

/// `SHOW pool_nodes` as text rows, in the proxy's column order.
async fn pool_node_rows(client: &tokio_postgres::Client) -> Vec<Vec<String>> {
    client
        .simple_query("SHOW pool_nodes")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}
