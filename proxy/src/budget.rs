//! The memory that clients' buffered messages may take, shared by every
//! session: a few clients sending huge messages at once must not get the
//! whole proxy killed for memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What each session may buffer without asking: a batch of ordinary
/// messages and a read chunk.
pub const FREE: usize = 64 << 10;

pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by sessions now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u + n <= self.limit).then_some(u + n)
            })
            .is_ok()
    }
}

/// One session's part of the budget, given back when it is dropped.
pub struct Share {
    budget: Arc<Budget>,
    held: usize,
}

impl Share {
    pub fn new(budget: &Arc<Budget>) -> Share {
        Share {
            budget: Arc::clone(budget),
            held: 0,
        }
    }

    /// Makes the share cover a buffer of `need` bytes (the first [`FREE`]
    /// are free); false if the budget cannot, and then nothing changes.
    /// Covering less than is held gives the difference back.
    pub fn cover(&mut self, need: usize) -> bool {
        let want = need.saturating_sub(FREE);
        if want > self.held {
            if !self.budget.take(want - self.held) {
                return false;
            }
        } else {
            self.budget
                .used
                .fetch_sub(self.held - want, Ordering::AcqRel);
        }
        self.held = want;
        true
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.cover(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_come_out_of_one_budget_and_go_back_to_it() {
        let b = Budget::new(10 << 20);
        let mut a = Share::new(&b);
        let mut c = Share::new(&b);
        assert!(a.cover(FREE), "the first 64 KiB are free");
        assert_eq!(b.used(), 0);
        assert!(a.cover((6 << 20) + FREE));
        assert!(!c.cover((6 << 20) + FREE), "over the budget: refused");
        assert_eq!(c.held(), 0);
        assert!(c.cover((4 << 20) + FREE), "what is left can be had");
        assert_eq!(b.used(), 10 << 20);
        assert!(a.cover((1 << 20) + FREE), "shrinking gives back");
        assert_eq!(b.used(), 5 << 20);
        drop(a);
        drop(c);
        assert_eq!(b.used(), 0);
    }
}
