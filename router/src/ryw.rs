//! Read-your-writes: what a session's next read requires, from what it
//! wrote and when.
//!
//! A commit is timed on the proxy's clock before the client hears of it.
//! The primary's position read by the first health check *sent after* that
//! moment is at least the commit's. Until such a check has come back the
//! read needs the primary ([`ReadNeed::Unsampled`]); then any replica that
//! has replayed that position will do.
//!
//! A causal session whose reads have come before that check is worth more:
//! the position of its later commits is read on the connection that ran
//! them, right after the commit ([`Ryw::wants_position`],
//! [`Ryw::position_read`]), so its next read may go to a replica at once.
//!
//! Pure: the clock and the health loop's samples come in through [`Env`].

use crate::plan::ReadNeed;

/// The guarantee a session asked for (`routing.read_your_writes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Pure load balancing.
    Off,
    /// Only reads inside the writing transaction see its writes.
    Transaction,
    /// After the session's first write, all its reads go to the primary.
    Session,
    /// Reads go to the primary for a while after each write.
    Sticky,
    /// A replica only once it has replayed the session's last write.
    #[default]
    Causal,
    /// A replica only once it has replayed every write made through this
    /// proxy before the read.
    Global,
    /// A replica only once it has replayed every write made through this
    /// proxy by sessions of the same user and database before the read.
    User,
}

/// What read-your-writes needs from the rest of the proxy.
pub trait Env {
    /// The proxy's monotonic clock, in microseconds.
    fn now_us(&self) -> u64;
    /// The primary's write position as read by a health check sent after
    /// `t_us`, once one has come back.
    fn primary_position_after(&self, t_us: u64) -> Option<u64>;
    /// When the last write through this proxy, by any session, committed
    /// (0: none yet).
    fn last_write_us(&self) -> u64;
    /// `routing.sticky_duration`, in microseconds.
    fn sticky_us(&self) -> u64;
    /// When the last write by a session of this session's user and
    /// database committed, this session's own included (0: none yet).
    fn peers_last_write_us(&self) -> u64;
}

/// One session's writes, as far as its reads care.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ryw {
    /// A write may be running: its commit is timed when the primary next
    /// reports the connection idle.
    pending: bool,
    /// A commit position at or after the session's last write (0: none).
    write_lsn: u64,
    /// When the last write committed while its position is not known yet
    /// (0: known, or none).
    write_at_us: u64,
    /// When the last write committed (0: never).
    last_write_us: u64,
    /// A read of this session came before its last commit was sampled.
    reads_follow_writes: bool,
}

impl Ryw {
    /// A request that may write was sent to the primary.
    pub fn write_sent(&mut self) {
        self.pending = true;
    }

    /// Whether a write may be running.
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// The primary said the connection is idle: whatever was written has
    /// committed, at `at_us`. `more` says a write pipelined behind it has
    /// not committed yet (its own idle report times it).
    pub fn committed(&mut self, at_us: u64, more: bool) {
        let at_us = at_us.max(1);
        self.last_write_us = at_us;
        self.write_at_us = at_us;
        self.pending = more;
    }

    /// Whether the commit just noted is worth reading the primary's
    /// position for, on the connection that ran it: only in causal mode
    /// (the other modes wait for other sessions' writes, timed) and only
    /// for a session whose reads have followed its writes before, so
    /// write-only traffic pays nothing.
    pub fn wants_position(&self, mode: Mode) -> bool {
        mode == Mode::Causal && self.reads_follow_writes && self.write_at_us != 0 && !self.pending
    }

    /// The primary's position, read on the connection of the session's last
    /// commit after it: at least that commit's. Ignored while a later write
    /// may be running (it was sent behind the position query).
    pub fn position_read(&mut self, lsn: u64) {
        if lsn != 0 && self.write_at_us != 0 && !self.pending {
            self.write_lsn = lsn;
            self.write_at_us = 0;
        }
    }

    /// Whether the session ever committed a write.
    pub fn ever_wrote(&self) -> bool {
        self.last_write_us != 0
    }

    /// What the session's next read requires under `mode`.
    pub fn need(&mut self, mode: Mode, env: &impl Env) -> ReadNeed {
        match mode {
            Mode::Off | Mode::Transaction => ReadNeed::Any,
            Mode::Session if self.ever_wrote() => ReadNeed::Primary,
            Mode::Session => ReadNeed::Any,
            Mode::Sticky if self.ever_wrote() => {
                if env.now_us().saturating_sub(self.last_write_us) < env.sticky_us() {
                    ReadNeed::Primary
                } else {
                    ReadNeed::Any
                }
            }
            Mode::Sticky => ReadNeed::Any,
            Mode::Causal => self.causal_need(env),
            Mode::Global => after(env.last_write_us(), env),
            Mode::User => after(env.peers_last_write_us(), env),
        }
    }

    fn causal_need(&mut self, env: &impl Env) -> ReadNeed {
        if self.write_at_us != 0 {
            match env.primary_position_after(self.write_at_us) {
                // Kept: later reads need not look again.
                Some(lsn) => {
                    self.write_lsn = lsn;
                    self.write_at_us = 0;
                }
                None => {
                    self.reads_follow_writes = true;
                    return ReadNeed::Unsampled(self.write_at_us);
                }
            }
        }
        match self.write_lsn {
            0 => ReadNeed::Any,
            lsn => ReadNeed::AtLeast(lsn),
        }
    }
}

/// What a read needs to see every write committed by `t_us` (0: none).
fn after(t_us: u64, env: &impl Env) -> ReadNeed {
    match t_us {
        0 => ReadNeed::Any,
        t => match env.primary_position_after(t) {
            Some(lsn) => ReadNeed::AtLeast(lsn),
            None => ReadNeed::Unsampled(t),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock and a health loop frozen at chosen values.
    #[derive(Default)]
    struct Fixed {
        now: u64,
        /// A check sent after this time read this position.
        sample: Option<(u64, u64)>,
        last_write: u64,
        peers_write: u64,
    }

    impl Env for Fixed {
        fn now_us(&self) -> u64 {
            self.now
        }
        fn primary_position_after(&self, t_us: u64) -> Option<u64> {
            self.sample.filter(|&(at, _)| at > t_us).map(|(_, lsn)| lsn)
        }
        fn last_write_us(&self) -> u64 {
            self.last_write
        }
        fn sticky_us(&self) -> u64 {
            2_000_000
        }
        fn peers_last_write_us(&self) -> u64 {
            self.peers_write
        }
    }

    #[test]
    fn user_mode_waits_for_the_writes_of_the_users_other_sessions() {
        // This session never wrote; another of the same user did, at 50.
        let mut r = Ryw::default();
        let unsampled = Fixed {
            peers_write: 50,
            last_write: 70,
            sample: Some((40, 1)),
            ..Fixed::default()
        };
        assert_eq!(r.need(Mode::User, &unsampled), ReadNeed::Unsampled(50));
        let sampled = Fixed {
            peers_write: 50,
            sample: Some((60, 321)),
            ..Fixed::default()
        };
        assert_eq!(r.need(Mode::User, &sampled), ReadNeed::AtLeast(321));
        // Other users' writes do not count.
        let others_only = Fixed {
            last_write: 70,
            ..Fixed::default()
        };
        assert_eq!(r.need(Mode::User, &others_only), ReadNeed::Any);
    }

    #[test]
    fn a_session_that_never_wrote_reads_anywhere() {
        let env = Fixed::default();
        for mode in [
            Mode::Off,
            Mode::Transaction,
            Mode::Session,
            Mode::Sticky,
            Mode::Causal,
        ] {
            assert_eq!(Ryw::default().need(mode, &env), ReadNeed::Any, "{mode:?}");
        }
    }

    #[test]
    fn causal_read_right_after_a_commit_needs_the_primary_until_a_check_samples_it() {
        let mut r = Ryw::default();
        r.write_sent();
        r.committed(100, false);
        let env = Fixed {
            sample: Some((90, 5)),
            ..Fixed::default()
        };
        assert_eq!(r.need(Mode::Causal, &env), ReadNeed::Unsampled(100));
    }

    #[test]
    fn causal_read_after_the_sample_needs_a_replica_at_that_position() {
        let mut r = Ryw::default();
        r.committed(100, false);
        let env = Fixed {
            sample: Some((150, 777)),
            ..Fixed::default()
        };
        assert_eq!(r.need(Mode::Causal, &env), ReadNeed::AtLeast(777));
        // Remembered: a later sample does not move the requirement.
        let later = Fixed {
            sample: Some((900, 999)),
            ..Fixed::default()
        };
        assert_eq!(r.need(Mode::Causal, &later), ReadNeed::AtLeast(777));
    }

    #[test]
    fn a_pipelined_write_keeps_the_session_pending() {
        let mut r = Ryw::default();
        r.write_sent();
        r.committed(100, true);
        assert!(r.pending());
        r.committed(120, false);
        assert!(!r.pending());
    }

    #[test]
    fn session_mode_reads_on_the_primary_after_the_first_write() {
        let mut r = Ryw::default();
        r.committed(5, false);
        let env = Fixed {
            now: 10_000_000_000,
            ..Fixed::default()
        };
        assert_eq!(r.need(Mode::Session, &env), ReadNeed::Primary);
    }

    #[test]
    fn sticky_mode_reads_on_the_primary_for_the_sticky_duration() {
        let mut r = Ryw::default();
        r.committed(1_000_000, false);
        let soon = Fixed {
            now: 2_500_000,
            ..Fixed::default()
        };
        assert_eq!(r.need(Mode::Sticky, &soon), ReadNeed::Primary);
        let later = Fixed {
            now: 3_000_001,
            ..Fixed::default()
        };
        assert_eq!(r.need(Mode::Sticky, &later), ReadNeed::Any);
    }

    #[test]
    fn global_mode_waits_for_everyones_writes() {
        let mut r = Ryw::default();
        let unsampled = Fixed {
            last_write: 50,
            sample: Some((40, 1)),
            ..Fixed::default()
        };
        assert_eq!(r.need(Mode::Global, &unsampled), ReadNeed::Unsampled(50));
        let sampled = Fixed {
            last_write: 50,
            sample: Some((60, 321)),
            ..Fixed::default()
        };
        assert_eq!(r.need(Mode::Global, &sampled), ReadNeed::AtLeast(321));
        assert_eq!(r.need(Mode::Global, &Fixed::default()), ReadNeed::Any);
    }

    #[test]
    fn a_position_read_after_the_commit_lets_a_replica_serve_at_once() {
        let mut r = Ryw::default();
        let unsampled = Fixed::default();
        r.write_sent();
        r.committed(100, false);
        // Write-only so far: nothing worth a query.
        assert!(!r.wants_position(Mode::Causal));
        assert_eq!(r.need(Mode::Causal, &unsampled), ReadNeed::Unsampled(100));
        // Its reads follow its writes: the next commit's position is asked.
        r.write_sent();
        r.committed(200, false);
        assert!(r.wants_position(Mode::Causal));
        assert!(!r.wants_position(Mode::User));
        assert!(!r.wants_position(Mode::Global));
        r.position_read(4242);
        assert_eq!(r.need(Mode::Causal, &unsampled), ReadNeed::AtLeast(4242));
        assert!(!r.wants_position(Mode::Causal), "asked once per commit");
    }

    #[test]
    fn a_position_read_before_a_later_write_commits_is_not_that_writes() {
        let mut r = Ryw::default();
        let unsampled = Fixed::default();
        r.committed(100, false);
        r.need(Mode::Causal, &unsampled);
        // The position query was queued; a write joined behind it.
        r.write_sent();
        r.position_read(4242);
        r.committed(300, false);
        assert_eq!(r.need(Mode::Causal, &unsampled), ReadNeed::Unsampled(300));
        // A stray reply with nothing to time is ignored too.
        r.position_read(0);
        assert_eq!(r.need(Mode::Causal, &unsampled), ReadNeed::Unsampled(300));
    }

    #[test]
    fn off_and_transaction_modes_ignore_writes() {
        let mut r = Ryw::default();
        r.committed(100, false);
        let env = Fixed::default();
        assert_eq!(r.need(Mode::Off, &env), ReadNeed::Any);
        assert_eq!(r.need(Mode::Transaction, &env), ReadNeed::Any);
    }
}
