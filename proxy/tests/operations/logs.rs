//! `log_format = "json"`: one JSON object per line, the session's client
//! address among its fields.

use super::binary::Binary;
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_log_is_one_object_per_line_with_the_client_address() {
    let db = fresh_database("logs_json");
    let pgsplit = Binary::start("log_format = \"json\"\n", None).await;
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres password=wrong dbname={db}",
        pgsplit.addr.port()
    );
    let (client, _) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .map(|(c, conn)| (Some(c), Some(conn)))
        .unwrap_or((None, None));
    assert!(client.is_none(), "a wrong password logged in");
    let log = tokio::task::spawn_blocking(move || pgsplit.stop())
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let refused = lines
        .iter()
        .find(|l| l["fields"]["message"] == "session ended with an error")
        .unwrap_or_else(|| panic!("no refused login in:\n{log}"));
    assert_eq!(refused["level"], "WARN");
    assert_eq!(refused["fields"]["user"], "postgres");
    assert_eq!(refused["fields"]["database"], db.as_str());
    let client = refused["fields"]["client"].as_str().unwrap();
    assert!(client.starts_with("127.0.0.1:"), "{refused}");
    assert!(
        lines.iter().any(|l| l["fields"]["phase"] == "stopped"),
        "the shutdown's last phase is logged:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "no colour codes");
}
