//! The servers pgsplit knows and what is known of each right now: address,
//! counters, health (`node.rs`), its open connections (`live.rs`), and
//! which one is the primary (`control.rs`). The health loop (`crate::health`) writes it; sessions
//! read it, lock-free, for every request.

pub(crate) mod control;
mod live;
mod node;

use std::ops::Index;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use pgsplit_config::{Config, RoleHint};

pub use control::Control;
pub use live::{LiveSockets, ServerInfo};
pub use node::{Node, NodeSnapshot, Report};

/// A configured backend, by its place in `[[backends]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(u16);

impl BackendId {
    /// The `i`-th configured backend (validation bounds their number).
    pub fn nth(i: usize) -> BackendId {
        BackendId(u16::try_from(i).expect("config validation bounds the backend count"))
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl std::fmt::Display for BackendId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a backend is, and what it is called.
#[derive(Debug, Clone)]
pub struct BackendAddr {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Its open server connections, for the health loop to cut when it
    /// declares the server down.
    pub live: Arc<LiveSockets>,
    /// How connections to it use TLS.
    pub tls: Arc<crate::tls::ServerTlsSetup>,
}

impl BackendAddr {
    pub async fn resolve(&self) -> std::io::Result<std::net::SocketAddr> {
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other("host name resolved to no address"))
    }
}

/// How long a backend a session could not reach is skipped, unless a
/// health check succeeds sooner.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Counters per backend, for `SHOW pool_nodes`, metrics and tests.
#[derive(Default, Debug)]
pub struct BackendStats {
    /// Requests routed here (a simple Query, or an extended batch up to Sync).
    pub routed: AtomicU64,
    /// Of those, routed as reads (load-balanced).
    pub reads: AtomicU64,
    /// Of those, routed to the primary because they write, lock, or run in a
    /// transaction or a pinned session.
    pub writes: AtomicU64,
    /// Sessions attached to this backend right now ([`Claim`]s).
    pub active: AtomicU64,
}

/// A plain copy of one backend's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    pub routed: u64,
    pub reads: u64,
    pub writes: u64,
    pub active: u64,
}

/// One backend and everything known of it.
pub struct Backend {
    pub id: BackendId,
    pub addr: BackendAddr,
    /// `[[backends]] weight`, for the balancer.
    pub weight: u32,
    pub stats: BackendStats,
    pub node: Node,
    /// Until when (ms on the topology's clock) sessions skip it after
    /// failing to reach it.
    down_until_ms: AtomicU64,
    /// When (ms on the topology's clock, plus one so 0 means never) a
    /// session last lost a connection here without an error from the server.
    silent_loss_ms: AtomicU64,
}

impl Backend {
    pub fn name(&self) -> &str {
        &self.addr.name
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            routed: s.routed.load(Ordering::Relaxed),
            reads: s.reads.load(Ordering::Relaxed),
            writes: s.writes.load(Ordering::Relaxed),
            active: s.active.load(Ordering::Relaxed),
        }
    }
}

/// Every configured backend, indexed by [`BackendId`].
pub struct Backends(Vec<Backend>);

impl Backends {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Backend> {
        self.0.iter()
    }

    pub fn ids(&self) -> impl Iterator<Item = BackendId> {
        (0..self.0.len()).map(BackendId::nth)
    }

    pub fn by_name(&self, name: &str) -> Option<BackendId> {
        self.0.iter().find(|b| b.addr.name == name).map(|b| b.id)
    }

    pub fn addrs(&self) -> Vec<BackendAddr> {
        self.0.iter().map(|b| b.addr.clone()).collect()
    }
}

impl Index<BackendId> for Backends {
    type Output = Backend;

    fn index(&self, id: BackendId) -> &Backend {
        &self.0[id.index()]
    }
}

pub struct Topology {
    /// The newest configuration (a reload replaces it): what the health
    /// loop reads its intervals and limits from, each round.
    config: std::sync::Mutex<Arc<Config>>,
    pub backends: Backends,
    pub control: Control,
    started: Instant,
}

impl Topology {
    /// `tls`: each backend's TLS setup, in `config.backends` order.
    pub fn new(config: Arc<Config>, tls: Vec<Arc<crate::tls::ServerTlsSetup>>) -> Topology {
        let hint = config
            .backends
            .iter()
            .position(|b| b.role == RoleHint::Primary)
            .map(BackendId::nth);
        let backends = config
            .backends
            .iter()
            .zip(tls)
            .enumerate()
            .map(|(i, (b, tls))| Backend {
                id: BackendId::nth(i),
                addr: BackendAddr {
                    name: b.name.clone(),
                    host: b.host.clone(),
                    port: b.port,
                    live: Arc::default(),
                    tls,
                },
                weight: b.weight,
                stats: BackendStats::default(),
                node: Node::with_hint(Some(BackendId::nth(i)) == hint),
                down_until_ms: AtomicU64::new(0),
                silent_loss_ms: AtomicU64::new(0),
            })
            .collect();
        Topology {
            backends: Backends(backends),
            control: Control::new(hint),
            config: std::sync::Mutex::new(config),
            started: Instant::now(),
        }
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.lock().unwrap())
    }

    /// After a reload: the health loop's next round uses `config`.
    pub fn set_config(&self, config: Arc<Config>) {
        *self.config.lock().unwrap() = config;
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The proxy's monotonic clock, for ordering commits against position
    /// samples. Tokio's, so unit tests can pause it.
    pub fn now_us(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.started)
            .as_micros() as u64
    }

    /// The server writes go to now, if any.
    pub fn primary(&self) -> Option<BackendId> {
        self.control.primary()
    }

    /// A session could not reach `id`: others skip it for a while.
    pub fn mark_unreachable(&self, id: BackendId) {
        let until = self.now_ms() + RETRY_AFTER.as_millis() as u64;
        self.backends[id]
            .down_until_ms
            .store(until, Ordering::Relaxed);
    }

    /// A session's connection to `id` ended without a word from the server
    /// (EOF, reset). One such loss can be that session's own (a backend
    /// killed alone, a connection cut by a middlebox), so others go on using
    /// the server; a second within [`RETRY_AFTER`], from any session, says
    /// the server is failing and marks it unreachable. Either way the caller
    /// also wakes the health check, which decides for good.
    pub fn lost_silently(&self, id: BackendId) {
        let now = self.now_ms() + 1;
        let last = self.backends[id]
            .silent_loss_ms
            .swap(now, Ordering::Relaxed);
        if last != 0 && now - last < RETRY_AFTER.as_millis() as u64 {
            self.mark_unreachable(id);
        }
    }

    /// Whether sessions are skipping `id` now after failing to reach it.
    pub fn is_marked_unreachable(&self, id: BackendId) -> bool {
        !self.is_usable(id)
    }

    /// A health check succeeded: the node is worth trying again at once.
    pub fn clear_unreachable(&self, id: BackendId) {
        self.backends[id].down_until_ms.store(0, Ordering::Relaxed);
    }

    pub fn is_usable(&self, id: BackendId) -> bool {
        // Asked for every candidate of every read: the clock is read only
        // for a server that failed recently.
        let until = self.backends[id].down_until_ms.load(Ordering::Relaxed);
        until == 0 || until <= self.now_ms()
    }

    /// Tells `id`'s health check to run now: a session saw it fail.
    pub fn suspect(&self, id: BackendId) {
        self.backends[id].node.wake.notify_one();
    }

    /// Counts a session's use of `id` until the guard is dropped.
    pub fn claim(self: &Arc<Self>, id: BackendId) -> Claim {
        self.backends[id]
            .stats
            .active
            .fetch_add(1, Ordering::SeqCst);
        Claim {
            topology: Arc::clone(self),
            backend: id,
        }
    }

    /// The primary's write position as read by a health check sent after
    /// `t_us`: at least the position of anything committed before then.
    /// `None` until such a check has come back.
    pub fn primary_position_after(&self, t_us: u64) -> Option<u64> {
        let node = &self.backends[self.primary()?].node;
        // A primary just seen demoted reports a replay position, until
        // the election catches up.
        if node.pg_role() != pgsplit_router::topology::PgRole::Primary {
            return None;
        }
        node.position_sampled_after(t_us)
    }

    /// Waits (up to `timeout`) for two more checks of `id` to finish, so
    /// at least one of them started after this call.
    pub async fn await_check(&self, id: BackendId, timeout: Duration) {
        let node = &self.backends[id].node;
        let target = node.checks() + 2;
        let deadline = tokio::time::Instant::now() + timeout;
        while node.checks() < target && tokio::time::Instant::now() < deadline {
            self.suspect(id);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until there is a primary that is not known to be unreachable,
    /// up to `deadline`.
    pub async fn wait_for_primary(&self, deadline: tokio::time::Instant) -> Option<BackendId> {
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
}

/// A session's use of one backend, counted in its `active` while the
/// guard lives. A switchover fences the old primary and then waits for its
/// claims to end; a session claims first and then re-checks the primary,
/// so one of the two always sees the other.
pub struct Claim {
    topology: Arc<Topology>,
    backend: BackendId,
}

impl Claim {
    pub fn backend(&self) -> BackendId {
        self.backend
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.topology.backends[self.backend]
            .stats
            .active
            .fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_backends() -> Arc<Topology> {
        let config = Config {
            backends: ["primary", "replica1", "replica2"]
                .iter()
                .map(|name| pgsplit_config::Backend {
                    name: (*name).into(),
                    ..pgsplit_config::Backend::default()
                })
                .collect(),
            ..Config::default()
        };
        let tls = (0..config.backends.len())
            .map(|_| Arc::new(crate::tls::ServerTlsSetup::disabled()))
            .collect();
        Arc::new(Topology::new(Arc::new(config), tls))
    }

    #[test]
    fn a_claim_counts_while_it_is_held() {
        let t = three_backends();
        let id = t.backends.by_name("replica1").unwrap();
        let active = |t: &Topology| t.backends[id].stats().active;
        let a = t.claim(id);
        let b = t.claim(id);
        assert_eq!(active(&t), 2);
        drop(a);
        assert_eq!(active(&t), 1);
        drop(b);
        assert_eq!(active(&t), 0);
        assert_eq!(t.backends[BackendId::nth(0)].stats().active, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_backend_is_skipped_for_retry_after_or_until_a_check_passes() {
        let t = three_backends();
        let id = BackendId::nth(2);
        assert!(t.is_usable(id));
        t.mark_unreachable(id);
        assert!(!t.is_usable(id));
        tokio::time::advance(RETRY_AFTER - Duration::from_millis(10)).await;
        assert!(!t.is_usable(id), "still within the retry delay");
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(t.is_usable(id), "the delay ran out");
        t.mark_unreachable(id);
        t.clear_unreachable(id);
        assert!(t.is_usable(id), "a passing check clears it at once");
        assert!(t.is_usable(BackendId::nth(1)), "others are not affected");
    }

    #[tokio::test(start_paused = true)]
    async fn one_silent_loss_spares_the_server_and_a_second_one_soon_after_marks_it() {
        let t = three_backends();
        let id = BackendId::nth(1);
        t.lost_silently(id);
        assert!(t.is_usable(id), "one session's loss is its own");
        tokio::time::advance(RETRY_AFTER + Duration::from_millis(1)).await;
        t.lost_silently(id);
        assert!(
            t.is_usable(id),
            "two losses far apart are two sessions' own"
        );
        tokio::time::advance(RETRY_AFTER - Duration::from_millis(100)).await;
        t.lost_silently(id);
        assert!(!t.is_usable(id), "a second loss within the window marks it");
        assert!(t.is_usable(BackendId::nth(2)), "others are not affected");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_primary_ends_at_the_deadline_when_none_is_elected() {
        let t = three_backends();
        let start = Instant::now();
        let got = t.wait_for_primary(start + Duration::from_secs(3)).await;
        assert_eq!(got, None);
        assert!(Instant::now() - start >= Duration::from_secs(3));
    }

    #[test]
    fn backends_are_found_by_name_and_id() {
        let t = three_backends();
        let ids: Vec<usize> = t.backends.ids().map(BackendId::index).collect();
        assert_eq!(ids, [0, 1, 2]);
        assert_eq!(t.backends.by_name("replica2"), Some(BackendId::nth(2)));
        assert_eq!(t.backends.by_name("nope"), None);
        assert_eq!(t.backends[BackendId::nth(1)].name(), "replica1");
    }
}
