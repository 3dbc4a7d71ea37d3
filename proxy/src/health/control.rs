//! Applying health reports: the election of the primary, fencing, and the
//! actions that change the cluster (detach, attach, promote).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgsplit_protocol::encode::ErrorInfo;
use pgsplit_router::topology::{self, Lag, PgRole, Role};

use super::check;
use crate::errors;
use crate::topology::control::NO_PRIMARY;
use crate::topology::{BackendId, Control, Report, Topology};

impl Control {
    pub(super) fn checked(&self, s: &Arc<Topology>, i: BackendId, r: &Report) {
        let lag = if r.in_recovery {
            let primary_lsn = self
                .primary()
                .filter(|&p| p != i)
                .map(|p| s.backends[p].node.lsn())
                .filter(|&lsn| lsn > 0);
            topology::standby_lag(primary_lsn, r.lsn, r.receive_lsn, r.replay_age_millis)
        } else {
            Lag::default()
        };
        if s.backends[i].node.checked(r, lag) {
            tracing::info!(backend = %s.backends[i].name(), "backend is up again: health check succeeded");
            // Back from down: sessions may try it again at once. A server
            // merely skipped is cleared by the loop after a check on a
            // fresh connection (check.rs).
            s.clear_unreachable(i);
        }
        self.reelect(s);
    }

    pub(super) fn failed(&self, s: &Arc<Topology>, i: BackendId, failures: u32, error: &str) {
        let name = &s.backends[i].name();
        // Sessions stop picking it at once; `down` waits for the retries.
        s.mark_unreachable(i);
        let limit = s.config().health.health_check_max_retries;
        if failures == 1 {
            tracing::warn!(backend = %name, %error, "health check failed");
        }
        if s.backends[i].node.failed(failures >= limit) {
            tracing::error!(backend = %name, %error, failures, "backend is down: {failures} health checks failed in a row");
            // Sessions waiting on it may wait forever on a silent network:
            // cutting their connections ends the wait (a read nothing of
            // which reached its client is retried elsewhere).
            let cut = s.backends[i].addr.live.shut_all();
            if cut > 0 {
                tracing::warn!(backend = %name, connections = cut, "closed every connection to the backend that is down");
            }
        }
        self.reelect(s);
    }

    /// Runs the election on the latest reports and applies it.
    pub(super) fn reelect(&self, s: &Arc<Topology>) {
        if s.backends.iter().any(|b| b.node.checks() == 0) {
            return;
        }
        let mut st = self.state.lock().unwrap();
        let reports: Vec<_> = s.backends.iter().map(|b| b.node.report()).collect();
        let followed = st.memory.system_id;
        let e = topology::elect(&reports, &mut st.memory);
        if followed != 0 && st.memory.system_id != followed {
            tracing::warn!(
                was = followed,
                now = st.memory.system_id,
                "every backend that answers belongs to a new cluster (re-initialized): following it; the old cluster's timelines no longer fence anything"
            );
        }
        for (i, &role) in e.roles.iter().enumerate() {
            let b = &s.backends[BackendId::nth(i)];
            let was = b.node.set_role(role);
            if was == role {
                continue;
            }
            let name = b.name();
            if role == Role::OtherCluster {
                tracing::error!(
                    backend = %name,
                    system_identifier = reports[i].system_id,
                    following = st.memory.system_id,
                    "backend belongs to another cluster than the other backends: it gets no reads and no writes; rebuild it from this cluster's primary, or PGSPLIT ACCEPT it if it is the one to follow"
                );
            } else if role == Role::Draining {
                tracing::warn!(backend = %name, "switchover: the primary takes no new transactions; those open on it finish first");
            } else if role == Role::StalePrimary && st.switched_from == Some(i) {
                st.switched_from = None;
                tracing::warn!(backend = %name, "switchover done: the old primary is fenced (no reads, no writes) until it rejoins as a standby");
            } else if role == Role::StalePrimary && reports[i].up {
                let winner = e
                    .primary
                    .map_or("none", |p| s.backends[BackendId::nth(p)].name());
                tracing::error!(
                    backend = %name,
                    timeline = reports[i].timeline,
                    primary = %winner,
                    "SPLIT BRAIN: backend claims to be primary but is not the primary pgsplit trusts (older timeline, or a switchover in progress); fenced: it gets no reads and no writes until it rejoins as a standby"
                );
            } else {
                tracing::info!(backend = %name, from = was.as_str(), to = role.as_str(), "backend role changed");
            }
        }
        let new = e.primary.unwrap_or(NO_PRIMARY);
        let old = self.primary.swap(new, Ordering::SeqCst);
        if old != new {
            self.primary_changes.fetch_add(1, Ordering::Relaxed);
            match e.primary {
                Some(p) => {
                    tracing::warn!(backend = %s.backends[BackendId::nth(p)].name(), timeline = reports[p].timeline, "primary is now this backend; writes go here");
                    st.promoting = false;
                }
                None => tracing::error!(
                    timeout = ?s.config().health.failover_timeout,
                    "no primary: writes wait up to health.failover_timeout for one to appear"
                ),
            }
            self.topology.send_modify(|v| *v += 1);
        }
        match e.primary {
            Some(_) => st.no_primary_since = None,
            None => {
                let since = *st.no_primary_since.get_or_insert_with(Instant::now);
                if s.config().health.auto_promote
                    && !st.promoting
                    && since.elapsed() >= s.config().health.promote_after
                    // Only when no server still claims the role: a live old
                    // primary is a split brain to fence, not to add to.
                    && !reports.iter().any(|r| r.up && r.pg_role == PgRole::Primary)
                {
                    if let Some(target) = best_standby(s) {
                        st.promoting = true;
                        tracing::warn!(backend = %s.backends[target].name(), down_for = ?since.elapsed(), "auto_promote: the primary has been down for promote_after; promoting the standby with the most WAL replayed");
                        let s = Arc::clone(s);
                        tokio::spawn(async move {
                            if let Err(e) = pg_promote(&s, target).await {
                                tracing::error!(backend = %s.backends[target].name(), error = %e, "auto_promote failed; will retry");
                                s.control.state.lock().unwrap().promoting = false;
                            }
                        });
                    }
                }
            }
        }
    }

    fn set_excluded(&self, s: &Arc<Topology>, node: Option<BackendId>) {
        self.state.lock().unwrap().memory.excluded = node.map(BackendId::index);
        self.reelect(s);
    }
}

/// The up, attached standby that has replayed the most WAL.
fn best_standby(s: &Topology) -> Option<BackendId> {
    s.backends
        .iter()
        .filter(|b| {
            let n = &b.node;
            n.is_up() && !n.is_detached() && n.pg_role() == PgRole::Standby
        })
        .max_by_key(|b| (b.node.lsn(), std::cmp::Reverse(b.id)))
        .map(|b| b.id)
}

/// Runs `pg_promote()` on `target` and wakes its check so the new role is
/// seen at once.
async fn pg_promote(s: &Arc<Topology>, target: BackendId) -> Result<(), String> {
    let client = check::connect(s, target).await?;
    let rows = client
        .simple_query("SELECT pg_promote(true, 60)")
        .await
        .map_err(|e| e.to_string())?;
    let promoted = rows
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("t")));
    if !promoted {
        return Err("pg_promote() returned false: the promotion did not finish within 60 s".into());
    }
    s.control.promotions.fetch_add(1, Ordering::Relaxed);
    s.backends[target].node.wake.notify_one();
    Ok(())
}

/// `PGSPLIT DETACH`: the node gets no traffic until attached.
pub fn detach(s: &Arc<Topology>, i: BackendId) -> Option<String> {
    let was = s.backends[i].node.set_detached(true);
    tracing::warn!(backend = %s.backends[i].name(), "detached by an admin: no traffic until PGSPLIT ATTACH");
    s.control.reelect(s);
    if was {
        Some("the node was already detached".to_owned())
    } else if s.backends[i].node.pg_role() == PgRole::Primary && s.control.primary().is_none() {
        Some("that was the primary: writes now wait for health.failover_timeout; attach it again or PGSPLIT PROMOTE a standby".to_owned())
    } else {
        None
    }
}

/// `PGSPLIT ACCEPT`: an admin's word that `i`, a server that says it is
/// primary, is the one to write to, whatever timeline or cluster pgsplit
/// followed before (a cluster restored from a backup, re-initialized in
/// part).
pub fn accept(s: &Arc<Topology>, i: BackendId) -> Result<Option<String>, ErrorInfo> {
    let n = &s.backends[i].node;
    let name = s.backends[i].name();
    if !(n.is_up() && n.pg_role() == PgRole::Primary) {
        return Err(errors::not_acceptable(name));
    }
    let report = n.report();
    s.control
        .state
        .lock()
        .unwrap()
        .memory
        .accept(i.index(), &report);
    tracing::warn!(backend = %name, timeline = report.timeline, system_identifier = report.system_id, "accepted by an admin as the primary; older timelines and other clusters are fenced from now on");
    s.control.reelect(s);
    let note = (s.control.primary() != Some(i))
        .then(|| "accepted, but it is not the primary yet: it may be detached or excluded by a switchover in progress".to_owned());
    Ok(note)
}

/// `PGSPLIT ATTACH`: back in service as soon as it is healthy.
pub fn attach(s: &Arc<Topology>, i: BackendId) -> Option<String> {
    let was = s.backends[i].node.set_detached(false);
    tracing::info!(backend = %s.backends[i].name(), "attached by an admin");
    s.control.reelect(s);
    (!was).then(|| "the node was not detached".to_owned())
}

/// `PGSPLIT PROMOTE`: makes standby `target` the primary. With the old
/// primary up this is a switchover that loses nothing: writes are held,
/// sessions using the old primary finish, the target replays everything
/// the old primary wrote, and only then is it promoted.
pub async fn promote(s: &Arc<Topology>, target: BackendId) -> Result<String, ErrorInfo> {
    let name = s.backends[target].name().to_owned();
    let n = &s.backends[target].node;
    if !(n.is_up() && n.pg_role() == PgRole::Standby) {
        return Err(errors::not_promotable(&name));
    }
    if std::mem::replace(&mut s.control.state.lock().unwrap().promoting, true) {
        return Err(errors::promotion_in_progress());
    }
    let result = switch_to(s, target).await;
    if result.is_err() {
        let mut st = s.control.state.lock().unwrap();
        st.promoting = false;
        st.memory.excluded = None;
        drop(st);
        s.control.reelect(s);
    }
    result
}

async fn switch_to(s: &Arc<Topology>, target: BackendId) -> Result<String, ErrorInfo> {
    let name = s.backends[target].name().to_owned();
    let timeout = s.config().health.failover_timeout;
    let deadline = Instant::now() + timeout;
    let old = s.control.primary();
    if let Some(old) = old {
        s.control.set_excluded(s, Some(old));
        let undo = |why: String| errors::switchover_abandoned(&name, &why);
        // Sessions that picked the old primary before the fence finish
        // their work there; none can start after it (they re-check).
        while s.backends[old].stats.active.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return Err(undo(format!(
                    "sessions still use the old primary after {timeout:?} (health.failover_timeout)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let lsn = match current_lsn(s, old).await {
            Ok(l) => l,
            Err(e) => {
                return Err(undo(format!(
                    "cannot read the old primary's WAL position: {e}"
                )))
            }
        };
        while s.backends[target].node.lsn() < lsn {
            if Instant::now() >= deadline {
                return Err(undo(format!(
                    "{name} did not replay the old primary's WAL within {timeout:?}"
                )));
            }
            s.backends[target].node.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    s.control.state.lock().unwrap().promoting = true;
    if let Err(e) = pg_promote(s, target).await {
        s.control.state.lock().unwrap().promoting = false;
        s.control.set_excluded(s, None);
        return Err(errors::promotion_failed(&name, &e));
    }
    let mut topology = s.control.subscribe();
    while s.control.primary() != Some(target) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(errors::promotion_unconfirmed(&name, timeout));
        }
        let _ =
            tokio::time::timeout(left.min(Duration::from_millis(100)), topology.changed()).await;
    }
    // The old primary stays fenced by its older timeline.
    {
        let mut st = s.control.state.lock().unwrap();
        st.memory.excluded = None;
        st.switched_from = old.map(BackendId::index);
    }
    s.control.reelect(s);
    tracing::warn!(backend = %name, old = ?old.map(|o| s.backends[o].name()), "promoted by PGSPLIT PROMOTE");
    Ok(match old {
        Some(o) => format!(
            "{name} is the primary; {} is fenced until it rejoins as a standby",
            s.backends[o].name()
        ),
        None => format!("{name} is the primary"),
    })
}

async fn current_lsn(s: &Topology, i: BackendId) -> Result<u64, String> {
    let client = check::connect(s, i).await?;
    let rows = client
        .simple_query("SELECT pg_current_wal_lsn()::text")
        .await
        .map_err(|e| e.to_string())?;
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(check::parse_lsn),
            _ => None,
        })
        .ok_or_else(|| "no position returned".to_owned())
}
