//! State shared by every session: the configuration snapshot, the users
//! (`crate::login`), the classifier, the balancer and read candidates, the
//! topology (`crate::topology`: backends, their health and counters, the
//! primary), pools, the cancel registry and the client-connection limit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pgsplit_config::Config;
use pgsplit_router::balance::{Balancer, Candidate, PrimaryReads, Strategy};
use pgsplit_router::{Classifier, ClassifierConfig};

use crate::admission::Admission;
use crate::backend::pool::Pools;
use crate::budget::Budget;
use crate::cancel::CancelRegistry;
use crate::functions::FunctionCatalog;
use crate::login::lookup::Lookups;
use crate::login::Users;
use crate::tls::ClientTlsSetup;
use crate::topology::{BackendId, StatsSnapshot, Topology};

/// What read-your-writes did, for operators (and tests).
#[derive(Default, Debug)]
pub struct RywCounters {
    /// Reads load-balanced to a replica.
    pub replica_reads: AtomicU64,
    /// Reads sent to the primary because no replica had the session's writes.
    pub kept_on_primary: AtomicU64,
    /// Reads that waited (`causal_wait`) for a replica to catch up.
    pub waits: AtomicU64,
    /// Commit positions read on the committing connection (causal sessions
    /// whose reads follow their writes).
    pub positions_asked: AtomicU64,
    /// Replicas asked for their replay position before a read that their
    /// last health check did not cover: had replayed it, had not.
    pub confirmed: AtomicU64,
    pub behind: AtomicU64,
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

/// Where the configuration came from, for the next reload: a file (or
/// none) and `PGSPLIT_*` variables, as `pgsplit run` reads them. Unset
/// (a proxy built from a `Config` in code, the demo): nothing to read.
#[derive(Default)]
pub struct Source(Mutex<Option<Option<std::path::PathBuf>>>);

impl Source {
    /// `path`: the file `run` read, if any.
    pub fn set(&self, path: Option<std::path::PathBuf>) {
        *self.0.lock().unwrap() = Some(path);
    }

    pub fn get(&self) -> Result<Option<std::path::PathBuf>, String> {
        self.0.lock().unwrap().clone().ok_or_else(|| {
            "this configuration was not read from a file and the environment (pgsplit demo, or a proxy built in code), so there is nothing to read again".to_owned()
        })
    }
}

/// ParameterStatus values as a server reports them, in order.
pub type Reported = Arc<Vec<(String, String)>>;

/// What one configuration decides: the settings, the users, how
/// statements are classified and reads balanced. A reload makes a new one
/// for the sessions that start from then on; the rest ([`Core`]) is the
/// same for every generation. Derefs to [`Core`].
pub struct Shared {
    pub config: Arc<Config>,
    pub users: Users,
    pub classifier: Classifier,
    pub balancer: Balancer,
    pub core: Arc<Core>,
}

impl std::ops::Deref for Shared {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

/// What outlives a reload: the servers and their pools, the sessions'
/// shared state, counters and the lifecycle.
pub struct Core {
    /// Credentials looked up in PostgreSQL (`[auth_query]`).
    pub lookups: Lookups,
    /// The backends and what is known of each, shared with the health loop.
    pub topology: Arc<Topology>,
    pub functions: Arc<FunctionCatalog>,
    pub pools: Pools,
    /// When the last write made through this proxy committed
    /// ([`Topology::now_us`]; 0: none yet): what `read_your_writes = global`
    /// waits for.
    pub last_write_us: AtomicU64,
    pub ryw: RywCounters,
    /// Sessions pinned to their connection so far, by reason (unmovable
    /// state, unreplayable setting): the pooling cost an operator watches.
    pub pins: [AtomicU64; 3],
    /// Statements (by content hash, database included) some server has
    /// parsed without error: a Parse of one can be answered without a server.
    known_statements: Mutex<HashSet<u64>>,
    /// When the last write of any session of a user and database committed
    /// (`read_your_writes = "user"`), shared by those sessions.
    peer_writes: Mutex<HashMap<(String, String), Arc<AtomicU64>>>,
    /// What a server reports at startup to a client of a database and user
    /// with given settings: later clients like it are answered from here,
    /// so connecting needs no server connection.
    startup_params: Mutex<HashMap<(String, String, u64), Reported>>,
    /// TLS for clients (`[tls]`).
    pub client_tls: ClientTlsSetup,
    pub cancel: Arc<CancelRegistry>,
    pub admission: Admission,
    /// What clients' buffered messages may take, all sessions together.
    pub buffers: Arc<Budget>,
    /// Serving, paused or shutting down.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    /// Failed logins, protocol errors, refusals: for alerts.
    pub events: crate::events::Events,
    /// The generation new sessions start with (the newest configuration);
    /// None once the proxy has stopped, which lets everything drop.
    current: Mutex<Option<Arc<Shared>>>,
    /// Where the configuration is read from again on a reload.
    pub source: Source,
}

impl Core {
    /// The newest generation, while the proxy runs.
    pub fn current(&self) -> Option<Arc<Shared>> {
        self.current.lock().unwrap().clone()
    }

    /// Makes `shared` the generation new sessions start with; the one
    /// before lives on in its sessions until they end.
    pub fn set_current(&self, shared: &Arc<Shared>) {
        *self.current.lock().unwrap() = Some(Arc::clone(shared));
    }

    /// At the end of a shutdown: the last reference from the core to a
    /// generation goes, so the proxy's state can drop.
    pub fn clear_current(&self) {
        self.current.lock().unwrap().take();
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

    /// The last-commit time shared by the sessions of `user` on `database`.
    pub fn peer_writes(&self, user: &str, database: &str) -> Arc<AtomicU64> {
        let mut map = self.peer_writes.lock().unwrap();
        let key = (user.to_owned(), database.to_owned());
        Arc::clone(map.entry(key).or_default())
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
}

impl Shared {
    /// The newest generation (this one if the proxy has stopped): what
    /// admin views show, so a session older than a reload sees it too.
    pub fn newest(self: &Arc<Self>) -> Arc<Shared> {
        self.core.current().unwrap_or_else(|| Arc::clone(self))
    }

    /// `client_limit`: the client sockets served at once, as the open-file
    /// budget allows ([`crate::admission::client_limit`]).
    pub fn new(
        config: Config,
        client_limit: usize,
        client_tls: ClientTlsSetup,
        server_tls: Vec<Arc<crate::tls::ServerTlsSetup>>,
    ) -> Shared {
        let config = Arc::new(config);
        let topology = Arc::new(Topology::new(Arc::clone(&config), server_tls));
        let core = Core {
            lookups: Lookups::new(Arc::clone(&config), Arc::clone(&topology)),
            pools: Pools::new(Arc::clone(&config), topology.backends.addrs()),
            topology,
            functions: Arc::default(),
            cancel: Arc::new(CancelRegistry::default()),
            admission: Admission::new(client_limit),
            buffers: Budget::new(config.limits.client_buffer_budget),
            pins: Default::default(),
            last_write_us: AtomicU64::new(0),
            ryw: RywCounters::default(),
            known_statements: Mutex::default(),
            startup_params: Mutex::default(),
            peer_writes: Mutex::default(),
            client_tls,
            lifecycle: Default::default(),
            events: Default::default(),
            current: Mutex::default(),
            source: Default::default(),
        };
        Shared::generation(config, Arc::new(core))
    }

    /// The settings, users, classifier and balancer of `config`, over `core`.
    pub fn generation(config: Arc<Config>, core: Arc<Core>) -> Shared {
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
        Shared {
            users: Users::new(&config),
            classifier,
            balancer,
            config,
            core,
        }
    }

    /// Counters of the backend with `node_id` (as `SHOW pool_nodes`
    /// numbers them).
    pub fn stats(&self, node_id: usize) -> StatsSnapshot {
        self.topology.backends[BackendId::nth(node_id)].stats()
    }

    /// The server writes go to now, if any.
    pub fn primary(&self) -> Option<BackendId> {
        self.topology.primary()
    }

    /// The server for the next read, skipping `exclude` (servers this
    /// request already failed to reach) and replicas that have not replayed
    /// up to `min_lsn` (0: no requirement).
    pub fn pick_reader(
        &self,
        exclude: &[BackendId],
        min_lsn: u64,
        lag: LagLimit,
    ) -> Option<BackendId> {
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
    pub fn peek_reader(
        &self,
        exclude: &[BackendId],
        min_lsn: u64,
        lag: LagLimit,
    ) -> Option<BackendId> {
        self.with_candidates(exclude, min_lsn, lag, |c| {
            self.balancer.peek(c, self.random_for_balancer())
        })
    }

    /// Whether standby `i` may take a read now: up, attached, not fenced,
    /// within the lag limit, and (for read-your-writes) replayed to `min_lsn`.
    pub fn standby_readable(&self, i: BackendId, min_lsn: u64, lag: LagLimit) -> bool {
        let n = &self.topology.backends[i].node;
        n.serves_as_standby()
            && self.topology.is_usable(i)
            && n.lag().within(lag.bytes, lag.millis)
            && (min_lsn == 0 || n.lsn() >= min_lsn)
    }

    /// Runs `f` over every backend as a read candidate now. The list is
    /// built in a per-thread buffer, so a read allocates nothing.
    fn with_candidates(
        &self,
        exclude: &[BackendId],
        min_lsn: u64,
        lag: LagLimit,
        f: impl FnOnce(&[Candidate]) -> Option<usize>,
    ) -> Option<BackendId> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<Candidate>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let primary = self.primary();
        SCRATCH.with_borrow_mut(|list| {
            list.clear();
            list.extend(self.topology.backends.iter().map(|b| {
                let is_primary = Some(b.id) == primary;
                Candidate {
                    index: b.id.index(),
                    is_primary,
                    usable: !exclude.contains(&b.id)
                        && if is_primary {
                            self.topology.is_usable(b.id) && !b.node.is_detached()
                        } else {
                            self.standby_readable(b.id, min_lsn, lag)
                        },
                    weight: b.weight,
                    active: b.stats.active.load(Ordering::Relaxed),
                }
            }));
            f(list).map(BackendId::nth)
        })
    }
}
