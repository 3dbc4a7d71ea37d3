//! A write and read load that records every attempt, for failover tests.

use super::*;

/// One statement a background task ran, with what came back.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Writers: the row's key. Readers: the client's number.
    pub seq: i64,
    pub sent: Instant,
    pub done: Instant,
    /// The serving node's port, or the error.
    pub result: Result<u16, String>,
}

impl Attempt {
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// A background task looping over one statement until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<(Vec<Attempt>, usize)>>,
}

/// What a [`Load`] recorded: every attempt in completion order, and how
/// often a client found its connection closed and had to reconnect.
pub struct Recorded {
    pub attempts: Vec<Attempt>,
    pub reconnects: usize,
}

impl Load {
    pub async fn stop(self) -> Recorded {
        self.stop.store(true, Ordering::Relaxed);
        let mut attempts = Vec::new();
        let mut reconnects = 0;
        for task in self.tasks {
            let (a, r) = task.await.expect("load task panicked");
            attempts.extend(a);
            reconnects += r;
        }
        attempts.sort_by_key(|a| a.done);
        Recorded {
            attempts,
            reconnects,
        }
    }
}

/// Bound on one statement: above the tests' `failover_timeout`, so a write
/// waiting for a primary is measured rather than abandoned, yet a hung
/// proxy cannot hang the suite.
const STATEMENT_LIMIT: Duration = Duration::from_secs(15);

/// `clients` connections inserting rows into `writes` (keys `1..` for the
/// first client, `1_000_001..` for the second, ...) with `pause` between
/// inserts, alternating simple and extended protocol. Each insert returns
/// the port of the server that ran it.
pub fn spawn_writers(conn: String, clients: usize, pause: Duration) -> Load {
    spawn_load(conn, clients, pause, |client, i, seq| async move {
        if i % 2 == 0 {
            let sql = format!("INSERT INTO writes (seq) VALUES ({seq}) RETURNING port");
            let messages = client.simple_query(&sql).await?;
            Ok(first_port(&messages))
        } else {
            let row = client
                .query_one(
                    "INSERT INTO writes (seq) VALUES ($1) RETURNING port",
                    &[&seq],
                )
                .await?;
            Ok(row.get::<_, i32>(0) as u16)
        }
    })
}

/// `clients` connections reading `inet_server_port()` in autocommit with
/// no pause, alternating simple and extended protocol.
pub fn spawn_readers(conn: String, clients: usize) -> Load {
    spawn_load(conn, clients, Duration::ZERO, |client, i, _| async move {
        read_port(&client, i % 2 == 0).await
    })
}

fn first_port(messages: &[SimpleQueryMessage]) -> u16 {
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(|p| p.parse().ok()),
            _ => None,
        })
        .expect("RETURNING gave a port")
}

fn spawn_load<F, Fut>(conn: String, clients: usize, pause: Duration, statement: F) -> Load
where
    F: Fn(Arc<Client>, u64, i64) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = Result<u16, tokio_postgres::Error>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..clients)
        .map(|n| {
            let stop = Arc::clone(&stop);
            tokio::spawn(client_loop(conn.clone(), n as i64, pause, stop, statement))
        })
        .collect();
    Load { stop, tasks }
}

/// One client of a [`Load`]: runs `statement` until `stop`, recording each
/// attempt, and reconnects when the proxy closed its connection.
async fn client_loop<F, Fut>(
    conn: String,
    n: i64,
    pause: Duration,
    stop: Arc<AtomicBool>,
    statement: F,
) -> (Vec<Attempt>, usize)
where
    F: Fn(Arc<Client>, u64, i64) -> Fut,
    Fut: std::future::Future<Output = Result<u16, tokio_postgres::Error>>,
{
    let mut attempts = Vec::new();
    let mut reconnects = 0;
    let mut client: Option<Arc<Client>> = None;
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let c = match &client {
            Some(c) => Arc::clone(c),
            None => match connect(&conn).await {
                Ok(c) => Arc::clone(client.insert(Arc::new(c))),
                Err(e) => {
                    let now = Instant::now();
                    attempts.push(Attempt {
                        seq: -1,
                        sent: now,
                        done: now,
                        result: Err(format!("connect: {}", describe(&e))),
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        i += 1;
        let seq = n * 1_000_000 + i as i64;
        let sent = Instant::now();
        let result =
            match tokio::time::timeout(STATEMENT_LIMIT, statement(Arc::clone(&c), i, seq)).await {
                Ok(Ok(port)) => Ok(port),
                Ok(Err(e)) => Err(describe(&e)),
                Err(_) => Err(format!("no answer within {STATEMENT_LIMIT:?}")),
            };
        let failed = result.is_err();
        attempts.push(Attempt {
            seq,
            sent,
            done: Instant::now(),
            result,
        });
        if c.is_closed() {
            client = None;
            reconnects += 1;
        }
        // After an error, a short breath like any client's retry loop:
        // spinning on instant failures would starve the proxy of the cores
        // the figures are measured on.
        let pause = if failed {
            pause.max(Duration::from_millis(10))
        } else {
            pause
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    (attempts, reconnects)
}

/// Failed attempts, for assertion messages.
pub fn failures(attempts: &[Attempt]) -> Vec<&Attempt> {
    attempts.iter().filter(|a| !a.ok()).collect()
}

/// The latest success completed by `t`.
pub fn last_ok_before(attempts: &[Attempt], t: Instant) -> Option<&Attempt> {
    attempts
        .iter()
        .filter(|a| a.ok() && a.done <= t)
        .max_by_key(|a| a.done)
}

/// The longest stretch without a completed success inside `[from, to]`,
/// counting from the last success before `from`: the pause clients felt.
pub fn longest_gap(attempts: &[Attempt], from: Instant, to: Instant) -> Duration {
    let mut last = last_ok_before(attempts, from).map_or(from, |a| a.done);
    let mut longest = Duration::ZERO;
    for a in attempts
        .iter()
        .filter(|a| a.ok() && a.done > from && a.done <= to)
    {
        longest = longest.max(a.done - last);
        last = a.done;
    }
    longest.max(to.saturating_duration_since(last))
}

/// The `seq` column of every row in `writes` on node `index`, read directly.
pub fn seqs_on(cluster: &Cluster, index: usize) -> std::collections::BTreeSet<i64> {
    cluster
        .psql(index, DB, "SELECT seq FROM writes")
        .unwrap_or_else(|e| panic!("read writes on node {index}: {e}"))
        .lines()
        .map(|l| l.parse().expect("a seq"))
        .collect()
}

/// A WAL position ("16/B374D848") as a number, for comparing two nodes.
pub fn lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .trim()
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text:?}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// Like [`spawn_readers`], each read taking `hold` on the server, so a
/// read is nearly always in flight.
pub fn spawn_slow_readers(conn: String, clients: usize, hold: Duration) -> Load {
    let sql: &'static str = Box::leak(
        format!(
            "SELECT inet_server_port() FROM pg_sleep({})",
            hold.as_secs_f64()
        )
        .into_boxed_str(),
    );
    spawn_load(
        conn,
        clients,
        Duration::ZERO,
        move |client, _, _| async move {
            let messages = client.simple_query(sql).await?;
            Ok(first_port(&messages))
        },
    )
}

/// Like [`spawn_writers`], each insert holding its transaction `hold` on
/// the server, so a write is nearly always in flight.
pub fn spawn_slow_writers(conn: String, clients: usize, hold: Duration) -> Load {
    let secs = hold.as_secs_f64();
    spawn_load(
        conn,
        clients,
        Duration::ZERO,
        move |client, _, seq| async move {
            let sql = format!(
                "WITH w AS (INSERT INTO writes (seq) VALUES ({seq}) RETURNING port) \
             SELECT port FROM w, pg_sleep({secs})"
            );
            let messages = client.simple_query(&sql).await?;
            Ok(first_port(&messages))
        },
    )
}
