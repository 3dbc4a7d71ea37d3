//! Choosing the server for a read.
//!
//! Pure and lock-free: the only shared state is one atomic counter, so
//! sessions never wait for each other here. The caller supplies each
//! candidate's weight, usability and current load.

use std::sync::atomic::{AtomicU64, Ordering};

/// How reads are spread (mirrors the `[routing] strategy` setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    RoundRobin,
    LeastConnections,
    Random,
}

/// Whether the primary takes reads (mirrors `[routing] primary_reads`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PrimaryReads {
    On,
    #[default]
    Fallback,
    Off,
}

/// One server as the balancer sees it at this moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub index: usize,
    pub is_primary: bool,
    /// Up, attached and not lagging too far; unusable servers never get reads.
    pub usable: bool,
    pub weight: u32,
    /// Sessions currently using the server (for least_connections).
    pub active: u64,
}

#[derive(Debug, Default)]
pub struct Balancer {
    strategy: Strategy,
    primary_reads: PrimaryReads,
    counter: AtomicU64,
}

impl Balancer {
    pub fn new(strategy: Strategy, primary_reads: PrimaryReads) -> Balancer {
        Balancer {
            strategy,
            primary_reads,
            counter: AtomicU64::new(0),
        }
    }

    /// Whether picks use the `random` argument: callers may pass anything
    /// otherwise and save drawing a number.
    pub fn uses_random(&self) -> bool {
        self.strategy == Strategy::Random
    }

    /// The server for the next read, or None when nothing may take it
    /// (`primary_reads = off` and no usable replica). `random` is a fresh
    /// random number, passed in so this stays deterministic under test.
    pub fn pick(&self, candidates: &[Candidate], random: u64) -> Option<usize> {
        self.choose(candidates, random, true)
    }

    /// Where the next `pick` would go, without taking the turn: for work
    /// that should land where the next real read does (preparing a
    /// statement that is executed next), so it does not skew the rotation.
    pub fn peek(&self, candidates: &[Candidate], random: u64) -> Option<usize> {
        self.choose(candidates, random, false)
    }

    fn choose(&self, candidates: &[Candidate], random: u64, advance: bool) -> Option<usize> {
        let eligible = |c: &&Candidate| {
            c.usable && c.weight > 0 && (!c.is_primary || self.primary_reads == PrimaryReads::On)
        };
        // Filtered again where needed rather than collected: a read
        // allocates nothing here.
        let pool = || candidates.iter().filter(eligible);
        let count = pool().count();
        if count == 0 {
            // Fallback: rather the primary than an error, unless told otherwise.
            return match self.primary_reads {
                PrimaryReads::Off => None,
                _ => candidates
                    .iter()
                    .find(|c| c.is_primary && c.usable)
                    .map(|c| c.index),
            };
        }
        Some(match self.strategy {
            Strategy::RoundRobin => {
                let n = if advance {
                    self.counter.fetch_add(1, Ordering::Relaxed)
                } else {
                    self.counter.load(Ordering::Relaxed)
                };
                weighted_slot(pool(), n)
            }
            Strategy::Random => weighted_slot(pool(), random),
            Strategy::LeastConnections => {
                // Lowest load per unit of weight; ties rotate so equal servers
                // share the work instead of the first one taking it all.
                let start = self.counter.fetch_add(1, Ordering::Relaxed) as usize % count;
                let mut best = pool().nth(start).expect("start is below the count");
                for c in pool().cycle().skip(start).take(count) {
                    if (c.active as u128) * (best.weight as u128)
                        < (best.active as u128) * (c.weight as u128)
                    {
                        best = c;
                    }
                }
                best.index
            }
        })
    }
}

/// Maps `n` onto the candidates in proportion to their weights, spreading
/// consecutive values so a 1:3 split goes A B B B rather than in long runs.
fn weighted_slot<'a>(pool: impl Iterator<Item = &'a Candidate> + Clone, n: u64) -> usize {
    let total: u64 = pool.clone().map(|c| c.weight as u64).sum();
    let mut slot = n % total;
    for c in pool {
        if slot < c.weight as u64 {
            return c.index;
        }
        slot -= c.weight as u64;
    }
    unreachable!("slot is below the total weight")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(index: usize, is_primary: bool, weight: u32) -> Candidate {
        Candidate {
            index,
            is_primary,
            usable: true,
            weight,
            active: 0,
        }
    }

    fn shares(b: &Balancer, nodes: &[Candidate], n: u64) -> Vec<u64> {
        let mut counts = vec![0; nodes.len()];
        for i in 0..n {
            counts[b
                .pick(nodes, i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_follows_weights_exactly() {
        let b = Balancer::new(Strategy::RoundRobin, PrimaryReads::Fallback);
        let nodes = [node(0, true, 1), node(1, false, 1), node(2, false, 1)];
        assert_eq!(shares(&b, &nodes, 300), vec![0, 150, 150]);
        let b = Balancer::new(Strategy::RoundRobin, PrimaryReads::Fallback);
        let nodes = [node(0, true, 1), node(1, false, 1), node(2, false, 3)];
        assert_eq!(shares(&b, &nodes, 400), vec![0, 100, 300]);
    }

    #[test]
    fn primary_reads_on_makes_the_primary_a_read_server() {
        let b = Balancer::new(Strategy::RoundRobin, PrimaryReads::On);
        let nodes = [node(0, true, 1), node(1, false, 1)];
        assert_eq!(shares(&b, &nodes, 100), vec![50, 50]);
    }

    #[test]
    fn fallback_and_off_when_no_replica_is_usable() {
        let mut nodes = [node(0, true, 1), node(1, false, 1), node(2, false, 0)];
        nodes[1].usable = false;
        let fallback = Balancer::new(Strategy::RoundRobin, PrimaryReads::Fallback);
        assert_eq!(fallback.pick(&nodes, 0), Some(0), "weight 0 never reads");
        let off = Balancer::new(Strategy::RoundRobin, PrimaryReads::Off);
        assert_eq!(off.pick(&nodes, 0), None);
        nodes[0].usable = false;
        assert_eq!(fallback.pick(&nodes, 0), None, "nothing usable at all");
    }

    #[test]
    fn least_connections_prefers_the_idlest_per_weight() {
        let b = Balancer::new(Strategy::LeastConnections, PrimaryReads::Fallback);
        let mut nodes = [node(0, true, 1), node(1, false, 1), node(2, false, 2)];
        nodes[1].active = 3;
        nodes[2].active = 4; // 2 per unit of weight: lighter than node 1's 3
        for i in 0..10 {
            assert_eq!(b.pick(&nodes, i), Some(2));
        }
        nodes[2].active = 6; // now 3 per unit: a tie, which rotates
        let picks: Vec<_> = (0..4).map(|i| b.pick(&nodes, i).unwrap()).collect();
        assert!(picks.contains(&1) && picks.contains(&2), "{picks:?}");
    }

    #[test]
    fn peek_shows_the_next_pick_without_taking_it() {
        let b = Balancer::new(Strategy::RoundRobin, PrimaryReads::Fallback);
        let nodes = [node(0, true, 1), node(1, false, 1), node(2, false, 1)];
        for _ in 0..4 {
            let next = b.peek(&nodes, 0);
            assert_eq!(b.peek(&nodes, 0), next, "peeking twice changes nothing");
            assert_eq!(b.pick(&nodes, 0), next);
        }
    }

    #[test]
    fn random_is_weighted() {
        let b = Balancer::new(Strategy::Random, PrimaryReads::Fallback);
        let nodes = [node(0, true, 1), node(1, false, 1), node(2, false, 3)];
        let counts = shares(&b, &nodes, 4000);
        assert_eq!(counts[0], 0);
        let share = counts[2] as f64 / 4000.0;
        assert!((0.70..0.80).contains(&share), "{counts:?}");
    }
}
