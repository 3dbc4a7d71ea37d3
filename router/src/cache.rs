//! The verdict cache, shared by every session.
//!
//! Sixteen shards, each a `Mutex` around a hash table, so concurrent
//! sessions rarely meet on a lock, and a lock is held only for one lookup or
//! one insertion: parsing always happens outside it. Each shard is bounded
//! by bytes (key plus an estimate of the verdict), not by entry count, so a
//! flood of distinct huge statements cannot grow it without limit.
//!
//! Eviction is CLOCK (second chance): a hit only sets a flag, where a true
//! LRU would relink a list node on every hit.

use std::hash::BuildHasher;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::{Analysis, Hint};

const SHARDS: usize = 16;

/// Counters reported by [`crate::Classifier::cache_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to classify (including texts too long or too odd
    /// to be cached).
    pub misses: u64,
    /// Verdicts currently held.
    pub entries: u64,
    /// Estimated bytes held (keys, verdicts, bookkeeping).
    pub bytes: u64,
}

struct Slot {
    hash: u64,
    hint: Option<Hint>,
    key: Box<str>,
    value: Arc<Analysis>,
    cost: usize,
    referenced: bool,
    /// The key is real SQL text (no literal was blanked out), so a query
    /// string equal to it may be answered by [`Cache::get_verbatim`].
    verbatim: bool,
}

#[derive(Default)]
struct Shard {
    table: HashTable<u32>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    hand: usize,
    bytes: usize,
    hits: u64,
    misses: u64,
}

impl Shard {
    fn find(&self, hash: u64, hint: Option<Hint>, key: &str) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(hash, |&i| {
                let s = slots[i as usize]
                    .as_ref()
                    .expect("table points at live slots");
                s.hint == hint && &*s.key == key
            })
            .copied()
    }

    fn evict_one(&mut self) -> bool {
        let n = self.slots.len();
        // Two sweeps clear every reference flag, so the loop always ends.
        for _ in 0..2 * n {
            let i = self.hand;
            self.hand = (self.hand + 1) % n;
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            let hash = slot.hash;
            if let Ok(e) = self.table.find_entry(hash, |&j| j as usize == i) {
                e.remove();
            }
            let slot = self.slots[i].take().expect("checked above");
            self.bytes -= slot.cost;
            self.free.push(i as u32);
            return true;
        }
        false
    }
}

/// Estimated memory held by one entry.
fn cost(key: &str, value: &Analysis) -> usize {
    let names: usize = value
        .unknown_functions
        .iter()
        .map(|s| s.len() + size_of::<String>())
        .sum();
    // Slot, its table index, the Arc header and the verdict itself.
    key.len()
        + names
        + size_of::<Option<Slot>>()
        + 2 * size_of::<u32>()
        + 16
        + size_of::<Analysis>()
}

pub(crate) struct Cache {
    shards: Box<[Mutex<Shard>]>,
    hasher: DefaultHashBuilder,
    shard_budget: usize,
    /// Lookups that skipped the cache (too long, uncacheable text, cache
    /// disabled): rare, so one shared counter is fine.
    bypassed: AtomicU64,
}

impl Cache {
    pub(crate) fn new(total_bytes: usize) -> Self {
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: DefaultHashBuilder::default(),
            shard_budget: total_bytes / SHARDS,
            bypassed: AtomicU64::new(0),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.shard_budget > 0
    }

    pub(crate) fn hash(&self, hint: Option<Hint>, key: &str) -> u64 {
        // Hashing the bare `str` is several times faster than hashing a
        // tuple; the hint is mixed in afterwards, into every bit range.
        let tag = match hint {
            None => 0u64,
            Some(Hint::Primary) => 1,
            Some(Hint::Replica) => 2,
        };
        self.hasher
            .hash_one(key)
            .wrapping_add(tag.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        // hashbrown takes bucket bits from the bottom and tag bits from the
        // top of the hash; the shard comes from bits neither uses.
        let i = (hash >> 32) as usize % SHARDS;
        // A panic inside a critical section could at worst orphan one slot;
        // the shard stays consistent enough to keep serving, so poisoning
        // is ignored rather than turned into a panic in every session.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, hash: u64, hint: Option<Hint>, key: &str) -> Option<Arc<Analysis>> {
        let mut sh = self.shard(hash);
        match sh.find(hash, hint, key) {
            Some(i) => {
                sh.hits += 1;
                let slot = sh.slots[i as usize].as_mut().expect("live slot");
                slot.referenced = true;
                Some(Arc::clone(&slot.value))
            }
            None => {
                sh.misses += 1;
                None
            }
        }
    }

    /// Looks `sql` up as it stands, before normalising it: a hit only on
    /// an entry whose key is real SQL text, so a string that happens to
    /// contain the literal stand-ins cannot match a blanked key. A miss is
    /// not counted (the normalised lookup that follows counts it).
    pub(crate) fn get_verbatim(&self, hash: u64, sql: &str) -> Option<Arc<Analysis>> {
        let mut sh = self.shard(hash);
        let i = sh.find(hash, None, sql)?;
        let slot = sh.slots[i as usize].as_mut().expect("live slot");
        if !slot.verbatim {
            return None;
        }
        slot.referenced = true;
        let value = Arc::clone(&slot.value);
        sh.hits += 1;
        Some(value)
    }

    /// Counts a miss for a lookup known to fail without doing it.
    pub(crate) fn note_miss(&self, hash: u64) {
        self.shard(hash).misses += 1;
    }

    /// Counts a lookup that bypassed the cache.
    pub(crate) fn note_bypass(&self) {
        self.bypassed.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores a verdict; `verbatim` says `key` contains no blanked literal.
    pub(crate) fn insert(
        &self,
        hash: u64,
        hint: Option<Hint>,
        key: &str,
        verbatim: bool,
        value: Arc<Analysis>,
    ) {
        let cost = cost(key, &value);
        if cost > self.shard_budget {
            return;
        }
        let mut guard = self.shard(hash);
        let sh = &mut *guard;
        // Another session may have classified the same text meanwhile.
        if sh.find(hash, hint, key).is_some() {
            return;
        }
        while sh.bytes + cost > self.shard_budget {
            if !sh.evict_one() {
                return;
            }
        }
        let slot = Slot {
            hash,
            hint,
            key: key.into(),
            value,
            cost,
            referenced: false,
            verbatim,
        };
        let i = match sh.free.pop() {
            Some(i) => {
                sh.slots[i as usize] = Some(slot);
                i
            }
            None => {
                sh.slots.push(Some(slot));
                (sh.slots.len() - 1) as u32
            }
        };
        let slots = &sh.slots;
        sh.table.insert_unique(hash, i, |&j| {
            slots[j as usize].as_ref().expect("live slot").hash
        });
        sh.bytes += cost;
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let mut st = CacheStats {
            misses: self.bypassed.load(Ordering::Relaxed),
            ..CacheStats::default()
        };
        for s in self.shards.iter() {
            let s = s.lock().unwrap_or_else(PoisonError::into_inner);
            st.hits += s.hits;
            st.misses += s.misses;
            st.entries += s.table.len() as u64;
            st.bytes += s.bytes as u64;
        }
        st
    }
}
