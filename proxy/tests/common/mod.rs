//! Shared test harness: one real cluster per test binary, a fresh in-process
//! proxy per test on port 0, and a raw protocol client for what drivers
//! will not send (pipelines, malformed frames).

#![allow(dead_code)]

mod tools;
#[allow(unused_imports)] // not every test binary runs the tools
pub use tools::{python_script, tool};

use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use pgsplit::ProxyHandle;
use pgsplit_cluster::{Cluster, ClusterOptions};
use pgsplit_config::{AuthMethod, Config, Secret, User};
use pgsplit_protocol::backend::{self, Authentication, BackendMessage};
use pgsplit_protocol::{encode, split_frame, Direction, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PASSWORD: &str = "postgres";

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The binary's cluster: a primary and two streaming replicas, started on
/// first use. Its watchdog removes it when the test process exits.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        Cluster::start(ClusterOptions::default()).expect("start the local PostgreSQL cluster")
    })
}

/// Proxy config for the shared cluster, listening on a free loopback port,
/// with one user per client authentication method.
pub fn config() -> Config {
    let c = cluster();
    let mut config = pgsplit::demo::config_for(c, "127.0.0.1:0");
    config.users.extend([
        User {
            name: pgsplit_cluster::MD5_USER.into(),
            password: Some(Secret::new(pgsplit_cluster::MD5_PASSWORD)),
            auth: AuthMethod::Md5,
            ..User::default()
        },
        User {
            name: pgsplit_cluster::TRUST_USER.into(),
            password: None,
            auth: AuthMethod::Trust,
            ..User::default()
        },
        User {
            name: pgsplit_cluster::SCRAM_USER.into(),
            password: Some(Secret::new(pgsplit_cluster::SCRAM_PASSWORD)),
            auth: AuthMethod::ScramSha256,
            ..User::default()
        },
    ]);
    config
}

/// The config for tests of statement routing itself: read-your-writes off,
/// so a read right after a write is routed by its classification alone.
pub fn routing_only() -> Config {
    let mut c = config();
    c.routing.read_your_writes = pgsplit_config::ReadYourWrites::Off;
    c
}

pub async fn start_proxy() -> ProxyHandle {
    start_proxy_with(config()).await
}

pub async fn start_proxy_with(config: Config) -> ProxyHandle {
    // PGSPLIT_TEST_LOG=debug shows the proxy's log while debugging a test.
    if let Ok(filter) = std::env::var("PGSPLIT_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    config.validate().expect("test config is valid");
    pgsplit::start(config).await.expect("proxy starts")
}

/// Creates (or recreates) a database for one test, so tests never share rows.
pub fn fresh_database(name: &str) -> String {
    let c = cluster();
    c.psql(
        0,
        "postgres",
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .expect("drop test database");
    c.psql(0, "postgres", &format!("CREATE DATABASE {name}"))
        .expect("create test database");
    // A read routed to a replica that has not replayed the CREATE yet
    // would fail with 3D000: wait until every running replica has it.
    let exists = format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for i in 1..c.nodes().len() {
        loop {
            match c.psql(i, "postgres", &exists) {
                Ok(out) if out.trim() == "1" => break,
                // A node a test stopped or is rebuilding: not waited for.
                Err(_) => break,
                Ok(_) => {}
            }
            assert!(
                std::time::Instant::now() < deadline,
                "replica {i} never replayed CREATE DATABASE {name}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    name.to_owned()
}

pub fn conn_string(proxy: &ProxyHandle, user: &str, password: &str, db: &str) -> String {
    let a = proxy.local_addr();
    format!(
        "host={} port={} user={user} password={password} dbname={db} connect_timeout=10",
        a.ip(),
        a.port()
    )
}

/// A tokio-postgres client through the proxy, as the superuser.
pub async fn connect(proxy: &ProxyHandle, db: &str) -> tokio_postgres::Client {
    connect_as(proxy, "postgres", PASSWORD, db)
        .await
        .expect("connect through pgsplit")
}

pub async fn connect_as(
    proxy: &ProxyHandle,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(
        &conn_string(proxy, user, password, db),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The first row of a simple query, as text columns (NULL as "NULL").
pub async fn row(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// The first column of the first row of a simple query, as text.
pub async fn scalar(client: &tokio_postgres::Client, sql: &str) -> String {
    row(client, sql).await.swap_remove(0)
}

/// The SQLSTATE of a driver error, for assertions.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// The index of the node of `cluster` listening on `port`; panics on a
/// stranger. The one place that maps what `inet_server_port()` said to a
/// node: every "which node served this" assertion goes through it.
pub fn node_index(cluster: &Cluster, port: u16) -> usize {
    cluster
        .nodes()
        .iter()
        .position(|n| n.port == port)
        .unwrap_or_else(|| panic!("port {port} is no node of this cluster"))
}

/// The shared cluster's node that listens on `port`: 0 is the primary, 1
/// and 2 the replicas.
pub fn node(port: u16) -> usize {
    node_index(cluster(), port)
}

/// Whether `port` is one of the shared cluster's replicas.
pub fn is_replica(port: u16) -> bool {
    node(port) != 0
}

pub fn assert_replica(port: u16, what: &str) {
    assert!(
        is_replica(port),
        "{what} ran on {port}, not a replica (primary is {})",
        cluster().port(0)
    );
}

pub fn assert_primary(port: u16, what: &str) {
    assert_eq!(
        node(port),
        0,
        "{what} ran on {port}, not the primary ({})",
        cluster().port(0)
    );
}

/// Runs `sql` over the simple protocol and returns its first column, which
/// must be `inet_server_port()` (or a value of the same shape): the port
/// of the server that ran it.
pub async fn port_of(client: &tokio_postgres::Client, sql: &str) -> u16 {
    let v = scalar(client, sql).await;
    v.parse()
        .unwrap_or_else(|_| panic!("{sql}: {v:?} is not a port"))
}

/// `SELECT inet_server_port()`, over the simple or the extended protocol.
pub async fn read_port(
    client: &tokio_postgres::Client,
    simple: bool,
) -> Result<u16, tokio_postgres::Error> {
    const SQL: &str = "SELECT inet_server_port()";
    if simple {
        let messages = client.simple_query(SQL).await?;
        let port = messages
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .expect("a row");
        Ok(port.parse().expect("a port number"))
    } else {
        let row = client.query_one(SQL, &[]).await?;
        Ok(row.get::<_, i32>(0) as u16)
    }
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `cond` until it holds; returns how long that took, or None once
/// `timeout` has passed. For waits whose duration is itself asserted.
pub async fn time_until<F, Fut>(timeout: Duration, cond: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    eventually(timeout, cond).await.then(|| started.elapsed())
}

/// A hand-driven protocol client.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    /// The (pid, secret) of BackendKeyData, once logged in.
    pub key: Option<(i32, i32)>,
}

impl RawClient {
    pub async fn connect(proxy: &ProxyHandle) -> RawClient {
        RawClient::connect_to(proxy.local_addr()).await
    }

    pub async fn connect_to(addr: std::net::SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        RawClient {
            stream,
            buf: BytesMut::new(),
            key: None,
        }
    }

    /// Connects and logs in as the trust user, up to the first ReadyForQuery.
    pub async fn login(proxy: &ProxyHandle, db: &str) -> RawClient {
        RawClient::login_with(proxy, db, &[]).await
    }

    /// [`RawClient::login`] with more startup parameters.
    pub async fn login_with(proxy: &ProxyHandle, db: &str, params: &[(&str, &str)]) -> RawClient {
        let mut c = RawClient::connect(proxy).await;
        let mut out = BytesMut::new();
        let mut all = vec![("user", pgsplit_cluster::TRUST_USER), ("database", db)];
        all.extend_from_slice(params);
        encode::startup_message(&mut out, &all);
        c.send(&out).await;
        let frames = c.until_ready().await;
        assert!(
            frames.iter().any(|f| matches!(
                backend::parse(f),
                Ok(BackendMessage::Authentication(Authentication::Ok))
            )),
            "login failed: {frames:?}"
        );
        c.key = frames.iter().find_map(|f| match backend::parse(f) {
            Ok(BackendMessage::BackendKeyData { pid, secret }) => Some((pid, secret)),
            _ => None,
        });
        c
    }

    /// Sends a simple Query whose text is given as bytes in the client's
    /// encoding, which need not be UTF-8.
    pub async fn query_bytes(&mut self, sql: &[u8]) {
        let mut out = BytesMut::new();
        encode::raw_message(&mut out, b'Q', &[sql, b"\0"]);
        self.send(&out).await;
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame, or None when the proxy closed the connection.
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = split_frame(&mut self.buf, Direction::Backend, 1 << 30).unwrap() {
                return Some(f);
            }
            let n =
                tokio::time::timeout(Duration::from_secs(15), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("proxy answered within 15s")
                    .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Frames up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = self.recv().await {
            let done = f.tag() == b'Z';
            frames.push(f);
            if done {
                return frames;
            }
        }
        panic!("connection closed before ReadyForQuery; got {frames:?}");
    }

    /// Reads until the proxy closes the connection; returns what came.
    pub async fn until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = self.recv().await {
            frames.push(f);
        }
        frames
    }
}

/// The rows `sql` returns over the simple protocol, each by column name.
pub async fn named_rows(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<std::collections::HashMap<String, String>>, tokio_postgres::Error> {
    Ok(client
        .simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), r.get(i).unwrap_or("").to_owned()))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// The (SQLSTATE, severity) of the first ErrorResponse among `frames`.
pub fn first_error(frames: &[Frame]) -> Option<(String, String, String)> {
    frames.iter().find_map(|f| match backend::parse(f) {
        Ok(BackendMessage::ErrorResponse(e)) => Some((
            e.code().unwrap_or_default().to_owned(),
            e.severity().unwrap_or_default().to_owned(),
            e.message().unwrap_or_default().to_owned(),
        )),
        _ => None,
    })
}

/// Text values of every DataRow among `frames` (single-column results).
pub fn data_values(frames: &[Frame]) -> Vec<String> {
    data_rows(frames)
        .into_iter()
        .map(|mut r| String::from_utf8(r.swap_remove(0)).unwrap())
        .collect()
}

/// Every DataRow among `frames`, each column's raw bytes (NULL as empty).
pub fn data_rows(frames: &[Frame]) -> Vec<Vec<Vec<u8>>> {
    frames
        .iter()
        .filter(|f| f.tag() == b'D')
        .map(|f| {
            let body = f.body();
            let columns = u16::from_be_bytes([body[0], body[1]]);
            let mut at = 2;
            (0..columns)
                .map(|_| {
                    let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                    at += 4;
                    let len = len.max(0) as usize;
                    at += len;
                    body[at - len..at].to_vec()
                })
                .collect()
        })
        .collect()
}

impl RawClient {
    /// Sends one simple Query and returns every frame up to its
    /// ReadyForQuery.
    pub async fn simple(&mut self, sql: &str) -> Vec<Frame> {
        let mut out = BytesMut::new();
        encode::query(&mut out, sql);
        self.send(&out).await;
        self.until_ready().await
    }

    /// Runs `sql` as one unnamed Parse/Bind/Execute/Sync and returns every
    /// frame up to its ReadyForQuery.
    pub async fn extended(&mut self, sql: &str) -> Vec<Frame> {
        let mut out = BytesMut::new();
        encode::parse(&mut out, "", sql, &[]);
        encode::bind(&mut out, "", "", &[]);
        encode::execute(&mut out, "", 0);
        encode::sync(&mut out);
        self.send(&out).await;
        self.until_ready().await
    }
}

/// The command tags of every CommandComplete among `frames`.
pub fn command_tags(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.tag() == b'C')
        .map(|f| {
            let body = f.body();
            let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
            String::from_utf8_lossy(&body[..end]).into_owned()
        })
        .collect()
}

/// The transaction status of the last ReadyForQuery among `frames`:
/// `b'I'` idle, `b'T'` in a transaction, `b'E'` in a failed transaction.
pub fn ready_status(frames: &[Frame]) -> u8 {
    frames
        .iter()
        .rev()
        .find(|f| f.tag() == b'Z')
        .map(|f| f.body()[0])
        .unwrap_or_else(|| panic!("no ReadyForQuery in {frames:?}"))
}

/// The proxy's Prometheus page (`metrics_listen` must be set).
pub async fn metrics_page(proxy: &ProxyHandle) -> String {
    let addr = proxy.metrics_addr().expect("metrics_listen is set");
    let mut stream = TcpStream::connect(addr).await.expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).await.unwrap();
    page
}

/// The value of the sample `series` (name and labels, as printed) on a
/// metrics page; panics when it is missing.
pub fn metric(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).filter(|rest| rest.starts_with(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{page}"))
}
