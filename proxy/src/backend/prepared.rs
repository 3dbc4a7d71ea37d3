//! Which of pgsplit's prepared statements one server connection has: named
//! ones by content hash (the server name is `pgsplit_<hash>`), with a least
//! recently used order for eviction, and the statement in the unnamed slot.

use std::collections::HashMap;

#[derive(Default, Debug)]
pub struct Prepared {
    /// Content hash → when it was last used (a tick of `uses`).
    named: HashMap<u64, u64>,
    uses: u64,
    /// Content hash of the statement in the unnamed slot, if known.
    unnamed: Option<u64>,
}

/// What preparing a named statement takes.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepare {
    /// The connection has it: nothing to send.
    Present,
    /// Send a Parse; first a Close of `evict` (the least recently used
    /// statement) if the connection is at its limit.
    Needed { evict: Option<u64> },
}

impl Prepared {
    /// Marks `hash` used, recording it as prepared if it was not, with at
    /// most `max` named statements kept.
    pub fn use_named(&mut self, hash: u64, max: usize) -> Prepare {
        self.uses += 1;
        if let Some(used) = self.named.get_mut(&hash) {
            *used = self.uses;
            return Prepare::Present;
        }
        let evict = if self.named.len() >= max.max(1) {
            let victim = self
                .named
                .iter()
                .min_by_key(|(_, used)| **used)
                .map(|(&h, _)| h);
            if let Some(v) = victim {
                self.named.remove(&v);
            }
            victim
        } else {
            None
        };
        self.named.insert(hash, self.uses);
        Prepare::Needed { evict }
    }

    pub fn len(&self) -> usize {
        self.named.len()
    }

    pub fn is_empty(&self) -> bool {
        self.named.is_empty()
    }

    /// Whether the unnamed slot holds `hash`.
    pub fn has_unnamed(&self, hash: u64) -> bool {
        self.unnamed == Some(hash)
    }

    /// The unnamed slot now holds `hash` (`None`: unknown, e.g. after a
    /// simple Query replaced it).
    pub fn set_unnamed(&mut self, hash: Option<u64>) {
        self.unnamed = hash;
    }

    /// An error, `DEALLOCATE ALL` or `DISCARD ALL`: which statements
    /// survived is not known, so none are assumed to.
    pub fn forget(&mut self) {
        self.named.clear();
        self.unnamed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_prepared_once_per_connection() {
        let mut p = Prepared::default();
        assert_eq!(p.use_named(7, 10), Prepare::Needed { evict: None });
        assert_eq!(p.use_named(7, 10), Prepare::Present);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn the_least_recently_used_statement_is_evicted_at_the_limit() {
        let mut p = Prepared::default();
        p.use_named(1, 2);
        p.use_named(2, 2);
        // 1 is used again: 2 is now the oldest.
        assert_eq!(p.use_named(1, 2), Prepare::Present);
        assert_eq!(p.use_named(3, 2), Prepare::Needed { evict: Some(2) });
        assert_eq!(p.len(), 2);
        assert_eq!(p.use_named(2, 2), Prepare::Needed { evict: Some(1) });
    }

    #[test]
    fn forgetting_clears_named_and_unnamed() {
        let mut p = Prepared::default();
        p.use_named(1, 5);
        p.set_unnamed(Some(9));
        assert!(p.has_unnamed(9));
        p.forget();
        assert!(p.is_empty());
        assert!(!p.has_unnamed(9));
        assert_eq!(p.use_named(1, 5), Prepare::Needed { evict: None });
    }
}
