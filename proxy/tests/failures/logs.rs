//! What the operator reads: the `pgsplit` binary's log names the client's
//! address and database for every refused login and protocol error, and
//! carries no colour codes when it is not a terminal.

use std::net::SocketAddr;

use super::binary::Binary;
use super::*;

/// The log line that names `client`, which must also name `database` and
/// say `what`.
fn line_for<'a>(log: &'a str, client: SocketAddr, database: &str, what: &str) -> &'a str {
    let line = log
        .lines()
        .find(|l| l.contains(&format!("client={client}")))
        .unwrap_or_else(|| panic!("no line names client {client} in:\n{log}"));
    assert!(line.contains(database), "{line}");
    assert!(line.contains(what), "{line}");
    line
}

#[tokio::test]
async fn refused_logins_and_protocol_errors_are_logged_with_client_and_database_without_colour() {
    let db = fresh_database("logs_named");
    let pgsplit = Binary::start("", None).await;

    // An unknown user and a wrong password: the same answer, told apart in
    // the log.
    let unknown = scram_with_wrong_proof(pgsplit.addr, "nobody", &db).await;
    let wrong = scram_with_wrong_proof(pgsplit.addr, "postgres", &db).await;
    for a in [&unknown, &wrong] {
        assert_eq!(a.error.0, "28P01", "{:?}", a.error);
    }

    // A message type PostgreSQL does not know, after logging in.
    let mut bad = RawClient::connect_to(pgsplit.addr).await;
    let bad_addr = bad.stream.local_addr().unwrap();
    let mut out = BytesMut::new();
    encode::startup_message(
        &mut out,
        &[("user", pgsplit_cluster::TRUST_USER), ("database", &db)],
    );
    bad.send(&out).await;
    bad.until_ready().await;
    bad.send(b"z\0\0\0\x04").await;
    assert_eq!(first_error(&bad.until_closed().await).unwrap().0, "08P01");

    // Data pipelined behind an SSLRequest.
    let mut early = RawClient::connect_to(pgsplit.addr).await;
    let early_addr = early.stream.local_addr().unwrap();
    out.clear();
    out.extend_from_slice(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
    encode::startup_message(&mut out, &[("user", "postgres"), ("database", &db)]);
    early.send(&out).await;
    let e = first_error(&early.until_closed().await).unwrap();
    assert_eq!(e.0, "08P01", "{e:?}");
    assert!(
        e.2.contains("unencrypted data after an encryption request"),
        "{e:?}"
    );

    let log = pgsplit.stop();
    assert!(!log.contains('\x1b'), "colour codes in a piped log:\n{log}");
    line_for(&log, unknown.client, &db, "not configured in pgsplit");
    line_for(&log, wrong.client, &db, "authentication failed");
    line_for(&log, bad_addr, &db, "message type");
    line_for(&log, early_addr, "", "after its encryption request");
}
