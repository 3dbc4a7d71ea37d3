//! The endpoints on `metrics_listen`: probes, 404 and 405, and an
//! exposition Prometheus' own linter accepts.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// One HTTP request: (status, the whole response).
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: pgsplit\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    (status, response)
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_answers_its_path_and_method_and_nothing_else() {
    let proxy = proxy_with_shutdown_timeout(Duration::from_secs(20)).await;
    let addr = proxy.metrics_addr().unwrap();
    // The health loop's first round finds the primary and the replicas.
    let ready = eventually(Duration::from_secs(10), || async {
        http(addr, "GET", "/ready").await.0 == 200
    })
    .await;
    assert!(ready, "{:?}", http(addr, "GET", "/ready").await);
    let (status, response) = http(addr, "GET", "/primary").await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(body(&response), "primary primary\n", "{response}");
    let (status, response) = http(addr, "GET", "/replica").await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(
        body(&response),
        "replicas replica1, replica2\n",
        "{response}"
    );
    assert_eq!(http(addr, "GET", "/health").await.0, 200);

    let (status, response) = http(addr, "GET", "/metrics?name[]=x").await;
    assert_eq!(status, 200);
    assert!(body(&response).contains("pgsplit_backend_up{backend=\"primary\"} 1"));
    let (status, response) = http(addr, "HEAD", "/metrics").await;
    assert_eq!(status, 200);
    assert!(response.contains("Content-Length: "), "{response}");
    assert_eq!(body(&response), "", "HEAD has no body");

    let (status, response) = http(addr, "GET", "/").await;
    assert_eq!(status, 404, "{response}");
    assert_eq!(http(addr, "GET", "/metricsx").await.0, 404);
    let (status, response) = http(addr, "POST", "/metrics").await;
    assert_eq!(status, 405, "{response}");
    assert!(response.contains("Allow: GET, HEAD\r\n"), "{response}");
    assert_eq!(http(addr, "DELETE", "/ready").await.0, 405);
    proxy.shutdown().await;
}

/// `/ready` says no while paused, and comes back at RESUME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_paused() {
    let db = fresh_database("ready_paused");
    let proxy = proxy_with_shutdown_timeout(Duration::from_secs(20)).await;
    let addr = proxy.metrics_addr().unwrap();
    let ready = eventually(Duration::from_secs(10), || async {
        http(addr, "GET", "/ready").await.0 == 200
    })
    .await;
    assert!(ready);
    let admin = connect(&proxy, &db).await;
    admin.batch_execute("PGSPLIT PAUSE").await.unwrap();
    let (status, response) = http(addr, "GET", "/ready").await;
    assert_eq!(status, 503, "{response}");
    assert!(body(&response).contains("paused"), "{response}");
    assert_eq!(http(addr, "GET", "/health").await.0, 200, "paused is alive");
    admin.batch_execute("PGSPLIT RESUME").await.unwrap();
    assert_eq!(http(addr, "GET", "/ready").await.0, 200);
    proxy.shutdown().await;
}

/// `promtool check metrics` (Debian's prometheus package, installed by
/// .ci/run) lints the page: names, types, help, label syntax.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_passes_promtool() {
    let proxy = proxy_with_shutdown_timeout(Duration::from_secs(20)).await;
    let addr = proxy.metrics_addr().unwrap();
    // Some traffic, so per-pool and per-backend series have samples.
    let client = connect(&proxy, "postgres").await;
    read_port(&client, true).await.unwrap();
    let (status, response) = http(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    let page = body(&response).to_owned();
    let checked = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool runs (apt-get install prometheus: see .ci/run)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    proxy.shutdown().await;
}

/// The series to alert on move with what happened: a wrong password, a
/// protocol error, a pool's use and its checkouts' waits; promtool still
/// accepts the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerting_series_count_failures_and_pool_use() {
    let db = fresh_database("metrics_alerts");
    let mut config = config();
    config.metrics_listen = Some("127.0.0.1:0".into());
    config.pool.pool_size = 1;
    let proxy = start_proxy_with(config).await;
    let addr = proxy.metrics_addr().unwrap();
    let page = || async { body(&http(addr, "GET", "/metrics").await.1).to_owned() };
    let before = page().await;
    let e = connect_as(&proxy, "postgres", "wrong", &db)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
    let mut bad = RawClient::login(&proxy, &db).await;
    bad.send(b"z\0\0\0\x04").await;
    bad.until_closed().await;
    // Two transactions at once on a pool of one: the second waits.
    let a = connect(&proxy, &db).await;
    let b = connect(&proxy, &db).await;
    a.batch_execute("BEGIN; SELECT 1 FROM pg_class LIMIT 1")
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        b.batch_execute("BEGIN; SELECT 1 FROM pg_class LIMIT 1; COMMIT")
            .await
    });
    let queued = eventually(Duration::from_secs(5), || async {
        page().await.contains(&format!(
            "pgsplit_pool_waiting_clients{{backend=\"primary\",database=\"{db}\",user=\"postgres\"}} 1"
        ))
    })
    .await;
    assert!(queued, "{}", page().await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.batch_execute("COMMIT").await.unwrap();
    waiting.await.unwrap().unwrap();
    let after = page().await;
    for series in [
        "pgsplit_auth_failures_total",
        "pgsplit_protocol_errors_total",
    ] {
        assert_eq!(
            metric(&after, series),
            metric(&before, series) + 1,
            "{series}"
        );
    }
    let active = format!(
        "pgsplit_pool_connections{{backend=\"primary\",database=\"{db}\",user=\"postgres\",state=\"idle\"}}"
    );
    assert_eq!(metric(&after, &active), 1, "the one connection is back");
    // The wait took at least 50 ms: not in the 10 ms bucket, in the 100 ms one.
    let bucket = |le: &str| {
        metric(
            &after,
            &format!("pgsplit_server_wait_seconds_bucket{{backend=\"primary\",le=\"{le}\"}}"),
        )
    };
    assert_eq!(bucket("+Inf") - bucket("0.01"), 1, "{after}");
    assert_eq!(bucket("1"), bucket("+Inf"), "and under a second: {after}");
    proxy.shutdown().await;
}

/// A request that gives up waiting for a connection (its
/// `query_wait_timeout` is shorter than the pool's `checkout_timeout`)
/// stops counting as waiting: the gauge and SHOW POOLS go back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_gives_up_waiting_stops_counting_as_waiting() {
    let db = fresh_database("metrics_gave_up");
    let mut config = config();
    config.metrics_listen = Some("127.0.0.1:0".into());
    config.pool.pool_size = 1;
    config.pool.checkout_timeout = Duration::from_secs(30);
    config.timeouts.query_wait_timeout = Duration::from_millis(500);
    let proxy = start_proxy_with(config).await;
    let addr = proxy.metrics_addr().unwrap();
    let a = connect(&proxy, &db).await;
    let b = connect(&proxy, &db).await;
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let e = b.batch_execute("BEGIN; SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e}");
    let series = format!(
        "pgsplit_pool_waiting_clients{{backend=\"primary\",database=\"{db}\",user=\"postgres\"}}"
    );
    let page = body(&http(addr, "GET", "/metrics").await.1).to_owned();
    assert_eq!(metric(&page, &series), 0, "{page}");
    a.batch_execute("COMMIT").await.unwrap();
    proxy.shutdown().await;
}

/// In session pooling a session holds its own connections, so its PAUSE
/// could never see none in use: refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_from_a_session_pooled_connection_is_refused_at_once() {
    let db = fresh_database("pause_session_pool");
    let mut config = config();
    config.pool.mode = pgsplit_config::PoolMode::Session;
    let proxy = start_proxy_with(config).await;
    let admin = connect(&proxy, &db).await;
    let e = admin.batch_execute("PGSPLIT PAUSE").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25001", "{e}");
    proxy.shutdown().await;
}
