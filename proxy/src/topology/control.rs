//! Which backend is the primary, and what the election remembers between
//! reports. The election itself runs in `crate::health`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use pgsplit_router::topology::Memory;
use tokio::sync::watch;

use super::BackendId;

pub(crate) const NO_PRIMARY: usize = usize::MAX;

/// The elected primary and what the election remembers.
pub struct Control {
    pub(crate) primary: AtomicUsize,
    pub(crate) state: Mutex<State>,
    /// Bumped on every change of primary: writers waiting for one watch it.
    pub(crate) topology: watch::Sender<u64>,
    /// Times the primary changed (including to "none").
    pub primary_changes: AtomicU64,
    /// Promotions pgsplit itself carried out (auto_promote or PGSPLIT PROMOTE).
    pub promotions: AtomicU64,
}

pub(crate) struct State {
    pub memory: Memory,
    /// Since when no server has been the primary (for auto_promote).
    pub no_primary_since: Option<Instant>,
    /// A promotion pgsplit started has not been seen to finish.
    pub promoting: bool,
    /// The old primary of the switchover just done: its fencing is planned,
    /// not a split brain.
    pub switched_from: Option<usize>,
}

impl Control {
    /// Starts with no primary: the first election waits for every server's
    /// first check, so a stale primary is never trusted for lack of news
    /// from a newer one. `hint` (the configured primary) wins ties.
    pub fn new(hint: Option<BackendId>) -> Control {
        Control {
            primary: AtomicUsize::new(NO_PRIMARY),
            state: Mutex::new(State {
                memory: Memory {
                    trusted: hint.map(BackendId::index),
                    ..Memory::default()
                },
                no_primary_since: None,
                promoting: false,
                switched_from: None,
            }),
            topology: watch::channel(0).0,
            primary_changes: AtomicU64::new(0),
            promotions: AtomicU64::new(0),
        }
    }

    pub fn primary(&self) -> Option<BackendId> {
        match self.primary.load(Ordering::SeqCst) {
            NO_PRIMARY => None,
            p => Some(BackendId::nth(p)),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.topology.subscribe()
    }
}
