//! Which server takes writes, decided from what every server says about
//! itself; the configured roles are only a first guess.
//!
//! Pure: the proxy's health loop feeds in each server's latest report and
//! applies the [`Election`] it gets back. The rules that keep two primaries
//! from both taking writes live here, where they can be tested exhaustively:
//!
//! * Only a server that answers, is attached, and says it is out of
//!   recovery can be the primary.
//! * The highest timeline wins: a promotion always moves to a new timeline,
//!   so an older one is the side that was left behind.
//! * A timeline below one pgsplit has already trusted never wins again,
//!   even when the newer primary goes away: an old primary restarted
//!   without being rejoined would otherwise take writes on a dead branch.
//! * On a tie, the primary pgsplit trusted last keeps the role, so a
//!   restart race between two equal claimants cannot flip writes back and
//!   forth.
//!
//! * Timelines are compared within one cluster only. Every server names
//!   its cluster (the system identifier from `pg_control_system()`); a
//!   server of another cluster than the one pgsplit follows gets no
//!   traffic at all. When every server that answers names the same new
//!   cluster (the whole cluster was re-initialized), pgsplit follows it
//!   and forgets the old one's timelines.
//!
//! Every other server that claims to be primary is fenced: no reads, no
//! writes, until it rejoins as a standby.

/// What a server said about itself in its last successful check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PgRole {
    /// Never answered (or not yet).
    #[default]
    Unknown,
    Primary,
    Standby,
}

/// One server as the election sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NodeReport {
    /// Answering health checks (not `down`).
    pub up: bool,
    /// Taken out of service by an admin.
    pub detached: bool,
    pub pg_role: PgRole,
    /// The timeline it writes on (primaries; 0 when unknown).
    pub timeline: u32,
    /// Its cluster's system identifier (0 when unknown: not judged by it).
    pub system_id: u64,
}

/// How pgsplit uses a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Unknown,
    Primary,
    Standby,
    /// Claims to be primary but lost the election: gets no traffic.
    StalePrimary,
    /// Belongs to another cluster than the one pgsplit follows: gets no
    /// traffic.
    OtherCluster,
    /// The primary a switchover is moving away from: transactions already
    /// open there finish, nothing new starts.
    Draining,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::StalePrimary => "stale_primary",
            Role::OtherCluster => "other_cluster",
            Role::Draining => "draining",
        }
    }
}

/// The outcome for every server, by index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Election {
    pub primary: Option<usize>,
    pub roles: Vec<Role>,
}

/// What the election remembers between rounds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// The primary trusted last (the configured one before any report).
    pub trusted: Option<usize>,
    /// The highest timeline a trusted primary has had: nothing below it
    /// can take writes again.
    pub floor: u32,
    /// Kept out of the running by a switchover in progress.
    pub excluded: Option<usize>,
    /// The cluster followed (0: none seen yet).
    pub system_id: u64,
}

impl Memory {
    /// An admin's word that server `i`, as it reports now, is the primary:
    /// its cluster is followed and timelines below its own are forgotten.
    pub fn accept(&mut self, i: usize, report: &NodeReport) {
        self.trusted = Some(i);
        self.floor = report.timeline;
        if report.system_id != 0 {
            self.system_id = report.system_id;
        }
    }
}

/// Which cluster to follow: the one every answering server names, if they
/// agree (a cluster seen for the first time, or one re-initialized as a
/// whole); otherwise the one followed so far, or on first sight the one
/// most of them name (ties: the server trusted, then the first).
fn cluster_to_follow(nodes: &[NodeReport], memory: &Memory) -> u64 {
    let named: Vec<u64> = nodes
        .iter()
        .filter(|n| n.up && n.system_id != 0)
        .map(|n| n.system_id)
        .collect();
    let Some(&first) = named.first() else {
        return memory.system_id;
    };
    if named.iter().all(|&id| id == first) {
        return first;
    }
    if memory.system_id != 0 {
        return memory.system_id;
    }
    let votes = |id: u64| named.iter().filter(|&&x| x == id).count();
    let most = named.iter().map(|&id| votes(id)).max().unwrap_or(0);
    let trusted = memory
        .trusted
        .and_then(|t| nodes.get(t))
        .map(|n| n.system_id)
        .filter(|&id| id != 0 && votes(id) == most);
    trusted.unwrap_or_else(|| {
        *named
            .iter()
            .find(|&&id| votes(id) == most)
            .expect("non-empty")
    })
}

/// Decides the primary and every server's role, and updates `memory`.
pub fn elect(nodes: &[NodeReport], memory: &mut Memory) -> Election {
    let cluster = cluster_to_follow(nodes, memory);
    if cluster != memory.system_id {
        if memory.system_id != 0 {
            // A new cluster: the old one's timelines mean nothing in it.
            memory.floor = 0;
            memory.trusted = None;
        }
        memory.system_id = cluster;
    }
    let foreign = |i: usize| nodes[i].system_id != 0 && nodes[i].system_id != cluster;
    let claims = |i: usize| nodes[i].pg_role == PgRole::Primary;
    let eligible = |i: usize| {
        let n = &nodes[i];
        claims(i)
            && n.up
            && !n.detached
            && !foreign(i)
            && n.timeline >= memory.floor
            && memory.excluded != Some(i)
    };
    let best_timeline = (0..nodes.len())
        .filter(|&i| eligible(i))
        .map(|i| nodes[i].timeline)
        .max();
    let primary = best_timeline.and_then(|tl| {
        let tied = |i: usize| eligible(i) && nodes[i].timeline == tl;
        memory
            .trusted
            .filter(|&t| t < nodes.len() && tied(t))
            .or_else(|| (0..nodes.len()).find(|&i| tied(i)))
    });
    if let Some(p) = primary {
        memory.trusted = Some(p);
        memory.floor = memory.floor.max(nodes[p].timeline);
    }
    let roles = (0..nodes.len())
        .map(|i| match nodes[i].pg_role {
            _ if Some(i) == primary => Role::Primary,
            _ if foreign(i) => Role::OtherCluster,
            PgRole::Primary if memory.excluded == Some(i) && nodes[i].up => Role::Draining,
            PgRole::Primary => Role::StalePrimary,
            PgRole::Standby => Role::Standby,
            PgRole::Unknown => Role::Unknown,
        })
        .collect();
    Election { primary, roles }
}

/// How far a standby is behind, and the limits it must be within to take
/// reads (0: that limit is off).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lag {
    pub bytes: u64,
    pub millis: u64,
}

impl Lag {
    pub fn within(self, max_bytes: u64, max_millis: u64) -> bool {
        (max_bytes == 0 || self.bytes <= max_bytes)
            && (max_millis == 0 || self.millis <= max_millis)
    }
}

/// A standby's lag from its own report and the primary's write position.
///
/// Time lag is the age of the last replayed transaction, but only while
/// there is something left to replay: an idle primary sends nothing, and a
/// standby that has replayed everything is current however old its last
/// transaction is.
pub fn standby_lag(
    primary_lsn: Option<u64>,
    replay_lsn: u64,
    receive_lsn: u64,
    replay_age_millis: Option<u64>,
) -> Lag {
    let bytes = primary_lsn.map_or(0, |p| p.saturating_sub(replay_lsn));
    let behind = match primary_lsn {
        Some(_) => bytes > 0,
        // No primary to compare with: only what it received and has not
        // applied yet.
        None => receive_lsn > replay_lsn,
    };
    let millis = if behind {
        replay_age_millis.unwrap_or(0)
    } else {
        0
    };
    Lag { bytes, millis }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(tl: u32) -> NodeReport {
        NodeReport {
            up: true,
            detached: false,
            pg_role: PgRole::Primary,
            timeline: tl,
            system_id: 7,
        }
    }

    fn standby() -> NodeReport {
        NodeReport {
            up: true,
            detached: false,
            pg_role: PgRole::Standby,
            timeline: 0,
            system_id: 7,
        }
    }

    fn down(mut n: NodeReport) -> NodeReport {
        n.up = false;
        n
    }

    fn memory(trusted: Option<usize>) -> Memory {
        Memory {
            trusted,
            ..Memory::default()
        }
    }

    #[test]
    fn the_one_primary_is_elected_and_standbys_stay_standbys() {
        let mut m = memory(Some(0));
        let e = elect(&[primary(1), standby(), standby()], &mut m);
        assert_eq!(e.primary, Some(0));
        assert_eq!(e.roles, [Role::Primary, Role::Standby, Role::Standby]);
        assert_eq!(m.floor, 1);
    }

    #[test]
    fn the_database_overrides_the_configured_hint() {
        // Configured primary is node 0, but node 2 is the one out of recovery.
        let mut m = memory(Some(0));
        let e = elect(&[standby(), standby(), primary(3)], &mut m);
        assert_eq!(e.primary, Some(2));
        assert_eq!(m.trusted, Some(2));
    }

    #[test]
    fn no_primary_while_the_primary_is_down_and_nothing_was_promoted() {
        let mut m = memory(Some(0));
        elect(&[primary(1), standby(), standby()], &mut m);
        let e = elect(&[down(primary(1)), standby(), standby()], &mut m);
        assert_eq!(e.primary, None);
        // A down node keeps its last known role for display.
        assert_eq!(e.roles[0], Role::StalePrimary);
        // It comes back unchanged: trusted again.
        let e = elect(&[primary(1), standby(), standby()], &mut m);
        assert_eq!(e.primary, Some(0));
    }

    #[test]
    fn a_promotion_wins_over_the_old_primary_still_running() {
        let mut m = memory(Some(0));
        elect(&[primary(1), standby(), standby()], &mut m);
        let e = elect(&[primary(1), primary(2), standby()], &mut m);
        assert_eq!(e.primary, Some(1));
        assert_eq!(e.roles, [Role::StalePrimary, Role::Primary, Role::Standby]);
    }

    #[test]
    fn an_older_timeline_never_comes_back_even_when_the_newer_primary_dies() {
        let mut m = memory(Some(0));
        elect(&[primary(1), primary(2), standby()], &mut m);
        assert_eq!(m.floor, 2);
        let e = elect(&[primary(1), down(primary(2)), standby()], &mut m);
        assert_eq!(e.primary, None, "timeline 1 is a dead branch");
        assert_eq!(e.roles[0], Role::StalePrimary);
    }

    #[test]
    fn a_tie_keeps_the_primary_trusted_last() {
        let mut m = memory(Some(1));
        let e = elect(&[primary(4), primary(4), standby()], &mut m);
        assert_eq!(e.primary, Some(1));
        assert_eq!(e.roles[0], Role::StalePrimary);
        // Whatever order the reports come in.
        let e = elect(&[primary(4), primary(4), standby()], &mut m);
        assert_eq!(e.primary, Some(1));
    }

    #[test]
    fn a_tie_without_history_goes_to_the_first_claimant() {
        let mut m = memory(None);
        let e = elect(&[standby(), primary(1), primary(1)], &mut m);
        assert_eq!(e.primary, Some(1));
        assert_eq!(e.roles[2], Role::StalePrimary);
    }

    #[test]
    fn detached_and_excluded_servers_cannot_be_elected() {
        let mut m = memory(Some(0));
        let mut n0 = primary(1);
        n0.detached = true;
        assert_eq!(elect(&[n0, standby()], &mut m).primary, None);

        let mut m = memory(Some(0));
        m.excluded = Some(0);
        let e = elect(&[primary(1), standby()], &mut m);
        assert_eq!(e.primary, None);
        assert_eq!(e.roles[0], Role::Draining, "open transactions finish there");
        // Once the switchover target is promoted, it wins on its timeline.
        let e = elect(&[primary(1), primary(2)], &mut m);
        assert_eq!(e.primary, Some(1));
    }

    #[test]
    fn unknown_servers_are_neither_primary_nor_standby() {
        let mut m = memory(Some(0));
        let e = elect(&[NodeReport::default(), standby()], &mut m);
        assert_eq!(e.primary, None);
        assert_eq!(e.roles, [Role::Unknown, Role::Standby]);
    }

    fn of(id: u64, mut n: NodeReport) -> NodeReport {
        n.system_id = id;
        n
    }

    #[test]
    fn a_cluster_reinitialized_as_a_whole_is_followed_on_its_own_timelines() {
        let mut m = memory(Some(0));
        elect(&[primary(5), standby(), standby()], &mut m);
        assert_eq!((m.system_id, m.floor), (7, 5));
        // The whole cluster goes down and comes back from a new initdb,
        // one server at a time: timeline 1, another system identifier.
        let gone = [down(primary(5)), down(standby()), down(standby())];
        assert_eq!(elect(&gone, &mut m).primary, None);
        let e = elect(
            &[of(9, primary(1)), down(standby()), down(standby())],
            &mut m,
        );
        assert_eq!(
            e.primary,
            Some(0),
            "every server that answers is of the new cluster"
        );
        assert_eq!((m.system_id, m.floor), (9, 1));
        let e = elect(
            &[of(9, primary(1)), of(9, standby()), of(9, standby())],
            &mut m,
        );
        assert_eq!(e.roles, [Role::Primary, Role::Standby, Role::Standby]);
    }

    #[test]
    fn a_server_of_another_cluster_gets_no_traffic_whatever_its_timeline() {
        let mut m = memory(Some(0));
        elect(&[primary(2), standby(), standby()], &mut m);
        // A standby replaced by a fresh primary of its own, on a higher
        // timeline, and another one rebuilt from a different cluster.
        let e = elect(&[primary(2), of(9, primary(8)), of(9, standby())], &mut m);
        assert_eq!(e.primary, Some(0));
        assert_eq!(
            e.roles,
            [Role::Primary, Role::OtherCluster, Role::OtherCluster]
        );
        assert_eq!(m.system_id, 7, "the cluster followed stays");
        // Even once the followed primary is gone, the others are not taken.
        let e = elect(&[down(primary(2)), of(9, primary(8)), standby()], &mut m);
        assert_eq!(e.primary, None);
        assert_eq!(e.roles[1], Role::OtherCluster);
    }

    #[test]
    fn on_first_sight_the_cluster_most_servers_name_is_followed() {
        let mut m = memory(Some(2));
        let e = elect(&[primary(1), of(9, primary(1)), standby()], &mut m);
        assert_eq!(m.system_id, 7);
        assert_eq!(e.primary, Some(0));
        assert_eq!(e.roles[1], Role::OtherCluster);
        // Servers that do not name theirs (no privilege) are not judged.
        let mut m = memory(Some(0));
        let e = elect(&[of(0, primary(1)), standby()], &mut m);
        assert_eq!(e.primary, Some(0));
    }

    #[test]
    fn an_admin_can_accept_a_primary_below_the_remembered_timeline() {
        let mut m = memory(Some(0));
        elect(&[primary(1), primary(4), standby()], &mut m);
        // The timeline-4 server is gone for good; the operator accepts the
        // one restored on timeline 1.
        let nodes = [primary(1), down(primary(4)), standby()];
        assert_eq!(elect(&nodes, &mut m).primary, None);
        m.accept(0, &nodes[0]);
        assert_eq!(elect(&nodes, &mut m).primary, Some(0));
    }

    #[test]
    fn a_caught_up_standby_has_no_lag_however_old_its_last_transaction() {
        let lag = standby_lag(Some(1000), 1000, 1000, Some(60_000));
        assert_eq!(
            lag,
            Lag {
                bytes: 0,
                millis: 0
            }
        );
        // Ahead of a slightly stale primary sample: still no lag.
        assert_eq!(standby_lag(Some(900), 1000, 1000, Some(5)).bytes, 0);
    }

    #[test]
    fn a_delayed_standby_lags_by_the_age_of_what_it_last_applied() {
        let lag = standby_lag(Some(5000), 1000, 5000, Some(3_000));
        assert_eq!(
            lag,
            Lag {
                bytes: 4000,
                millis: 3_000
            }
        );
        assert!(!lag.within(16 << 20, 1_000));
        assert!(lag.within(16 << 20, 10_000));
        assert!(!lag.within(1000, 0), "byte limit alone");
        assert!(lag.within(0, 0), "both limits off");
    }

    #[test]
    fn without_a_primary_only_unapplied_wal_counts() {
        assert_eq!(standby_lag(None, 1000, 1000, Some(9_000)).millis, 0);
        assert_eq!(standby_lag(None, 1000, 2000, Some(9_000)).millis, 9_000);
    }
}
