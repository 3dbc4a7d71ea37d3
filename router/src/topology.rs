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
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::StalePrimary => "stale_primary",
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
}

/// Decides the primary and every server's role, and updates `memory`.
pub fn elect(nodes: &[NodeReport], memory: &mut Memory) -> Election {
    let claims = |i: usize| nodes[i].pg_role == PgRole::Primary;
    let eligible = |i: usize| {
        let n = &nodes[i];
        claims(i) && n.up && !n.detached && n.timeline >= memory.floor && memory.excluded != Some(i)
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
        }
    }

    fn standby() -> NodeReport {
        NodeReport {
            up: true,
            detached: false,
            pg_role: PgRole::Standby,
            timeline: 0,
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
        assert_eq!(e.roles[0], Role::StalePrimary);
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
