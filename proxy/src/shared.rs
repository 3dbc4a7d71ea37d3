//! State shared by every session: the configuration snapshot, precomputed
//! credentials, the classifier, the balancer, per-backend counters, the
//! cancel registry and the client-connection limit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgsplit_config::{AuthMethod, Config, PasswordKind, RoleHint};
use pgsplit_protocol::auth::ScramSecret;
use pgsplit_router::balance::{Balancer, Candidate, PrimaryReads, Strategy};
use pgsplit_router::{Classifier, ClassifierConfig};
use tokio::sync::Semaphore;

use crate::backend::pool::Pools;
use crate::backend::BackendAddr;
use crate::cancel::CancelRegistry;
use crate::functions::FunctionCatalog;
use crate::health::{Control, Node};

/// How one configured user logs in, prepared once at startup so that no
/// session pays for PBKDF2.
pub struct UserAuth {
    pub method: AuthMethod,
    pub scram: Option<Arc<ScramSecret>>,
    /// Plaintext password or stored md5 hash, for md5 challenges.
    pub md5_source: Option<String>,
    pub server_user: String,
    pub server_password: Option<String>,
}

/// Counters per backend, readable by tests and (later) `SHOW pool_nodes`.
#[derive(Default, Debug)]
pub struct BackendStats {
    /// Requests routed here (a simple Query, or an extended batch up to Sync).
    pub routed: AtomicU64,
    /// Of those, routed as reads (load-balanced).
    pub reads: AtomicU64,
    /// Of those, routed to the primary because they write, lock, or run in a
    /// transaction or a pinned session.
    pub writes: AtomicU64,
    /// Sessions using a connection to this backend right now.
    pub active: AtomicU64,
    /// Until when (ms since start) the backend is skipped after a failed
    /// connection attempt; a stand-in until the health loop exists.
    down_until_ms: AtomicU64,
}

/// A plain copy of one backend's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    pub routed: u64,
    pub reads: u64,
    pub writes: u64,
    pub active: u64,
}

/// What read-your-writes did, for operators (and tests).
#[derive(Default, Debug)]
pub struct RywCounters {
    /// Reads load-balanced to a replica.
    pub replica_reads: AtomicU64,
    /// Reads sent to the primary because no replica had the session's writes.
    pub kept_on_primary: AtomicU64,
    /// Reads that waited (`causal_wait`) for a replica to catch up.
    pub waits: AtomicU64,
}

/// How far behind a standby may be and still take a session's reads
/// (`health.max_replica_lag*`, or the session's `pgsplit.max_replica_lag`);
/// 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagLimit {
    pub bytes: u64,
    pub millis: u64,
}

impl LagLimit {
    pub fn from_config(h: &pgsplit_config::Health) -> LagLimit {
        LagLimit {
            bytes: h.max_replica_lag_bytes,
            millis: h.max_replica_lag.as_millis() as u64,
        }
    }
}

/// ParameterStatus values as a server reports them, in order.
pub type Reported = Arc<Vec<(String, String)>>;

/// How long a backend that refused a connection is left alone.
const RETRY_AFTER: Duration = Duration::from_secs(2);

pub struct Shared {
    pub config: Arc<Config>,
    pub users: HashMap<String, UserAuth>,
    pub backends: Vec<BackendAddr>,
    pub stats: Vec<BackendStats>,
    /// Which backend takes writes, elected from health reports.
    pub control: Control,
    pub classifier: Classifier,
    pub balancer: Balancer,
    pub functions: Arc<FunctionCatalog>,
    pub pools: Pools,
    /// Each backend's health, role, WAL position and lag.
    pub nodes: Vec<Node>,
    /// When the last write made through this proxy committed
    /// ([`Shared::now_us`]; 0: none yet): what `read_your_writes = global`
    /// waits for.
    pub last_write_us: AtomicU64,
    pub ryw: RywCounters,
    /// Sessions pinned to their connection so far, by reason (unmovable
    /// state, unreplayable setting): the pooling cost an operator watches.
    pub pins: [AtomicU64; 2],
    /// Statements (by content hash, database included) some server has
    /// parsed without error: a Parse of one can be answered without a server.
    known_statements: Mutex<HashSet<u64>>,
    /// What a server reports at startup to a client of a database and user
    /// with given settings: later clients like it are answered from here,
    /// so connecting needs no server connection.
    startup_params: Mutex<HashMap<(String, String, u64), Reported>>,
    pub cancel: Arc<CancelRegistry>,
    pub client_slots: Arc<Semaphore>,
    started: Instant,
}

impl Shared {
    pub fn new(config: Config) -> Shared {
        let users = config
            .users
            .iter()
            .map(|u| (u.name.clone(), prepare_user(u)))
            .collect();
        let backends: Vec<BackendAddr> = config
            .backends
            .iter()
            .map(|b| BackendAddr {
                name: b.name.clone(),
                host: b.host.clone(),
                port: b.port,
            })
            .collect();
        let hint = config
            .backends
            .iter()
            .position(|b| b.role == RoleHint::Primary);
        let r = &config.routing;
        let classifier = Classifier::new(ClassifierConfig {
            write_functions: r.write_functions.clone(),
            read_functions: r.read_functions.clone(),
            ..ClassifierConfig::default()
        });
        let balancer = Balancer::new(
            match r.strategy {
                pgsplit_config::Strategy::RoundRobin => Strategy::RoundRobin,
                pgsplit_config::Strategy::LeastConnections => Strategy::LeastConnections,
                pgsplit_config::Strategy::Random => Strategy::Random,
            },
            match r.primary_reads {
                pgsplit_config::PrimaryReads::On => PrimaryReads::On,
                pgsplit_config::PrimaryReads::Fallback => PrimaryReads::Fallback,
                pgsplit_config::PrimaryReads::Off => PrimaryReads::Off,
            },
        );
        let client_slots = Arc::new(Semaphore::new(config.limits.max_client_connections));
        let config = Arc::new(config);
        Shared {
            pools: Pools::new(Arc::clone(&config), backends.clone()),
            stats: config
                .backends
                .iter()
                .map(|_| BackendStats::default())
                .collect(),
            users,
            backends,
            control: Control::new(hint),
            classifier,
            balancer,
            functions: Arc::default(),
            cancel: Arc::new(CancelRegistry::default()),
            client_slots,
            pins: Default::default(),
            nodes: (0..config.backends.len())
                .map(|i| Node::with_hint(Some(i) == hint))
                .collect(),
            last_write_us: AtomicU64::new(0),
            ryw: RywCounters::default(),
            known_statements: Mutex::default(),
            startup_params: Mutex::default(),
            config,
            started: Instant::now(),
        }
    }

    pub fn stats(&self, backend: usize) -> StatsSnapshot {
        let s = &self.stats[backend];
        StatsSnapshot {
            routed: s.routed.load(Ordering::Relaxed),
            reads: s.reads.load(Ordering::Relaxed),
            writes: s.writes.load(Ordering::Relaxed),
            active: s.active.load(Ordering::Relaxed),
        }
    }

    pub fn cached_startup(&self, database: &str, user: &str, settings: u64) -> Option<Reported> {
        self.startup_params
            .lock()
            .unwrap()
            .get(&(database.to_owned(), user.to_owned(), settings))
            .cloned()
    }

    pub fn cache_startup(
        &self,
        database: &str,
        user: &str,
        settings: u64,
        params: Vec<(String, String)>,
    ) -> Arc<Vec<(String, String)>> {
        let params = Arc::new(params);
        self.startup_params.lock().unwrap().insert(
            (database.to_owned(), user.to_owned(), settings),
            Arc::clone(&params),
        );
        params
    }

    pub fn statements_known_good(&self, hashes: &[u64]) {
        self.known_statements
            .lock()
            .unwrap()
            .extend(hashes.iter().copied());
    }

    pub fn statement_known_good(&self, hash: u64) -> bool {
        self.known_statements.lock().unwrap().contains(&hash)
    }

    pub fn backend_index(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The proxy's monotonic clock, for ordering commits against position
    /// samples.
    pub fn now_us(&self) -> u64 {
        self.us_at(Instant::now())
    }

    /// `t` on the clock of [`Shared::now_us`].
    pub fn us_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.started).as_micros() as u64
    }

    /// The primary's write position as read by a health check sent after
    /// `t_us`: at least the position of anything committed before then.
    /// `None` until such a check has come back.
    pub fn primary_position_after(&self, t_us: u64) -> Option<u64> {
        let node = &self.nodes[self.primary()?];
        // A primary just seen demoted reports a replay position, until
        // the election catches up.
        if node.pg_role() != pgsplit_router::topology::PgRole::Primary {
            return None;
        }
        node.position_sampled_after(t_us)
    }

    pub fn mark_unreachable(&self, backend: usize) {
        let until = self.now_ms() + RETRY_AFTER.as_millis() as u64;
        self.stats[backend]
            .down_until_ms
            .store(until, Ordering::Relaxed);
    }

    /// A health check succeeded: the node is worth trying again at once.
    pub fn clear_unreachable(&self, backend: usize) {
        self.stats[backend]
            .down_until_ms
            .store(0, Ordering::Relaxed);
    }

    pub fn is_usable(&self, backend: usize) -> bool {
        // Asked for every candidate of every read: the clock is read only
        // for a server that failed recently.
        let until = self.stats[backend].down_until_ms.load(Ordering::Relaxed);
        until == 0 || until <= self.now_ms()
    }

    /// The server writes go to now, if any.
    pub fn primary(&self) -> Option<usize> {
        self.control.primary()
    }

    /// Tells `backend`'s health check to run now: a session saw it fail.
    pub fn suspect(&self, backend: usize) {
        self.nodes[backend].wake.notify_one();
    }

    /// Waits (up to `timeout`) for two more checks of `backend` to finish,
    /// so at least one of them started after this call.
    pub async fn await_check(&self, backend: usize, timeout: Duration) {
        let node = &self.nodes[backend];
        let target = node.checks() + 2;
        let deadline = tokio::time::Instant::now() + timeout;
        while node.checks() < target && tokio::time::Instant::now() < deadline {
            self.suspect(backend);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until there is a primary that is not known to be unreachable,
    /// up to `deadline`.
    pub async fn wait_for_primary(&self, deadline: tokio::time::Instant) -> Option<usize> {
        let mut changes = self.control.subscribe();
        loop {
            if let Some(p) = self.primary().filter(|&p| self.is_usable(p)) {
                return Some(p);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return None;
            }
            // A change of primary wakes us at once; polling covers an
            // unreachable primary whose retry delay runs out.
            let nap = (deadline - now).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(nap, changes.changed()).await;
        }
    }

    /// The server for the next read, skipping `exclude` (servers this
    /// request already failed to reach) and replicas that have not replayed
    /// up to `min_lsn` (0: no requirement).
    pub fn pick_reader(&self, exclude: &[usize], min_lsn: u64, lag: LagLimit) -> Option<usize> {
        self.with_candidates(exclude, min_lsn, lag, |c| {
            self.balancer.pick(c, self.random_for_balancer())
        })
    }

    /// A thread-local generator step costs more than the rest of a pick:
    /// drawn only for the random strategy.
    fn random_for_balancer(&self) -> u64 {
        if self.balancer.uses_random() {
            rand::random()
        } else {
            0
        }
    }

    /// Where the next read would go, without taking its turn.
    pub fn peek_reader(&self, exclude: &[usize], min_lsn: u64, lag: LagLimit) -> Option<usize> {
        self.with_candidates(exclude, min_lsn, lag, |c| {
            self.balancer.peek(c, self.random_for_balancer())
        })
    }

    /// Whether standby `i` may take a read now: up, attached, not fenced,
    /// within the lag limit, and (for read-your-writes) replayed to `min_lsn`.
    pub fn standby_readable(&self, i: usize, min_lsn: u64, lag: LagLimit) -> bool {
        let n = &self.nodes[i];
        n.serves_as_standby()
            && self.is_usable(i)
            && n.lag().within(lag.bytes, lag.millis)
            && (min_lsn == 0 || n.lsn() >= min_lsn)
    }

    /// Runs `f` over every backend as a read candidate now. The list is
    /// built in a per-thread buffer, so a read allocates nothing.
    fn with_candidates<R>(
        &self,
        exclude: &[usize],
        min_lsn: u64,
        lag: LagLimit,
        f: impl FnOnce(&[Candidate]) -> R,
    ) -> R {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<Candidate>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let primary = self.primary();
        SCRATCH.with_borrow_mut(|list| {
            list.clear();
            list.extend(self.config.backends.iter().enumerate().map(|(i, b)| {
                let is_primary = Some(i) == primary;
                Candidate {
                    index: i,
                    is_primary,
                    usable: !exclude.contains(&i)
                        && if is_primary {
                            self.is_usable(i) && !self.nodes[i].is_detached()
                        } else {
                            self.standby_readable(i, min_lsn, lag)
                        },
                    weight: b.weight,
                    active: self.stats[i].active.load(Ordering::Relaxed),
                }
            }));
            f(list)
        })
    }
}

fn prepare_user(u: &pgsplit_config::User) -> UserAuth {
    let (scram, md5_source) = match &u.password {
        None => (None, None),
        Some(p) => match p.kind() {
            PasswordKind::Plain => (
                (u.auth == AuthMethod::ScramSha256)
                    .then(|| Arc::new(ScramSecret::from_password(p.expose()))),
                Some(p.expose().to_owned()),
            ),
            PasswordKind::ScramVerifier => (ScramSecret::parse(p.expose()).map(Arc::new), None),
            PasswordKind::Md5Hash => (None, Some(p.expose().to_owned())),
        },
    };
    UserAuth {
        method: u.auth,
        scram,
        md5_source,
        server_user: u.server_user().to_owned(),
        server_password: u.server_password().map(str::to_owned),
    }
}
