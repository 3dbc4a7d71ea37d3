//! What a read needs of its server under read-your-writes, from the
//! session's [`Ryw`](pgsplit_router::ryw::Ryw) state and the shared view
//! of the primary's position, and asking a replica whether it has caught
//! up when its last health check cannot say. The rules themselves are
//! pure, in `pgsplit_router::ryw` and `pgsplit_router::plan`.

use std::sync::atomic::{AtomicU64, Ordering};

use pgsplit_router::plan::ReadNeed;
use pgsplit_router::ryw::Env;

use super::phase::{Attachment, Purpose};
use super::session::Client;
use crate::shared::Shared;
use crate::topology::BackendId;

/// The proxy's clock, what its health checks have seen of the primary,
/// and when writes committed, as one session's reads see them.
struct SessionEnv<'a> {
    shared: &'a Shared,
    /// The last commit of the sessions of this user and database.
    peers: &'a AtomicU64,
}

impl Env for SessionEnv<'_> {
    fn now_us(&self) -> u64 {
        self.shared.topology.now_us()
    }

    fn primary_position_after(&self, t_us: u64) -> Option<u64> {
        self.shared.topology.primary_position_after(t_us)
    }

    fn last_write_us(&self) -> u64 {
        self.shared.last_write_us.load(Ordering::Acquire)
    }

    fn sticky_us(&self) -> u64 {
        self.shared.config.routing.sticky_duration.as_micros() as u64
    }

    fn peers_last_write_us(&self) -> u64 {
        self.peers.load(Ordering::Acquire)
    }
}

impl Client {
    /// What this session's next read needs of its server.
    pub(super) fn read_need(&mut self) -> ReadNeed {
        let env = SessionEnv {
            shared: &self.shared,
            peers: &self.peer_writes,
        };
        self.ryw.need(self.ryw_mode, &env)
    }

    /// A read needs replay position `min_lsn`, which no replica's last
    /// health check reached (they run every `routing.position_interval`,
    /// while replicas replay within milliseconds): asks the replica the
    /// balancer picks, on the connection the read would use. One round
    /// trip there instead of a read on the primary; the answer also serves
    /// other sessions' reads. `None`: the read goes where it would have.
    pub(super) async fn confirm_replica(
        &mut self,
        min_lsn: u64,
        avoid: Option<BackendId>,
    ) -> Option<Attachment> {
        let b = self
            .shared
            .pick_reader(avoid.as_slice(), 0, self.lag_limit)?;
        if Some(b) == self.shared.primary() {
            return None;
        }
        let mut conn = self.connection(b).await.ok()?;
        let limit = self.shared.config.health.health_check_timeout;
        // Dropped on a timeout or an error: the pool never hands out a
        // connection with replies still owed.
        let replayed = tokio::time::timeout(limit, conn.replay_position()).await;
        let lsn = replayed.ok()?.ok()??;
        self.shared.topology.backends[b].node.replayed(lsn);
        let counters = &self.shared.ryw;
        if lsn < min_lsn || !self.shared.standby_readable(b, min_lsn, self.lag_limit) {
            counters.behind.fetch_add(1, Ordering::Relaxed);
            self.keep(b, conn);
            return None;
        }
        counters.confirmed.fetch_add(1, Ordering::Relaxed);
        let claim = self.shared.topology.claim(b);
        Some(self.attachment(conn, claim, Purpose::Read { min_lsn }, avoid.is_some()))
    }

    /// Whether `replica` may serve a read with `need` right now.
    pub(super) fn replica_meets(&self, replica: BackendId, need: ReadNeed) -> bool {
        match need {
            ReadNeed::Any => self.shared.standby_readable(replica, 0, self.lag_limit),
            ReadNeed::AtLeast(lsn) => self.shared.standby_readable(replica, lsn, self.lag_limit),
            ReadNeed::Unsampled(_) | ReadNeed::Primary => false,
        }
    }
}

/// The replay position a replica needs for `need`, once it is known
/// (`None`: only the primary qualifies for now).
pub(super) fn min_lsn(need: ReadNeed, shared: &Shared) -> Option<u64> {
    match need {
        ReadNeed::Any => Some(0),
        ReadNeed::AtLeast(lsn) => Some(lsn),
        ReadNeed::Unsampled(t) => shared.topology.primary_position_after(t),
        ReadNeed::Primary => None,
    }
}
