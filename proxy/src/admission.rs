//! Which client sockets get served, and the open-file budget behind it.
//!
//! A socket holds a client slot from the moment it is accepted, not from its
//! startup packet: sockets that never say anything would otherwise use up
//! the descriptors that server connections need. Over the limit, a few more
//! sockets are read briefly, since one may carry a CancelRequest for a
//! running query; beyond those a socket is told 53300 and closed at once.
//! Descriptors for server connections are kept out of the clients' share.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Sockets over the client limit that are read for a CancelRequest.
pub const OVER_LIMIT_SOCKETS: usize = 16;

/// Descriptors kept for everything but client sockets beyond the pools
/// themselves: listeners, health checks, cancel forwarding, logs.
const SPARE_DESCRIPTORS: usize = 64;

/// What an accepted socket may do.
pub enum Ticket {
    /// Be served as a client; the permit is its slot.
    Client(OwnedSemaphorePermit),
    /// Over the limit: only a CancelRequest is served.
    OverLimit(OwnedSemaphorePermit),
}

pub struct Admission {
    slots: Arc<Semaphore>,
    over: Arc<Semaphore>,
    /// How many client sockets are served at once.
    pub limit: usize,
}

impl Admission {
    pub fn new(limit: usize) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(limit)),
            over: Arc::new(Semaphore::new(OVER_LIMIT_SOCKETS)),
            limit,
        }
    }

    /// The ticket of a socket just accepted; None: close it at once.
    pub fn admit(&self) -> Option<Ticket> {
        if let Ok(p) = Arc::clone(&self.slots).try_acquire_owned() {
            return Some(Ticket::Client(p));
        }
        Arc::clone(&self.over)
            .try_acquire_owned()
            .ok()
            .map(Ticket::OverLimit)
    }

    /// Client sockets open now, logged in or not.
    pub fn in_use(&self) -> usize {
        self.limit - self.slots.available_permits()
    }
}

/// Descriptors the server side may need: every pool full, plus spares.
pub fn server_descriptors(pools: usize) -> usize {
    pools + SPARE_DESCRIPTORS
}

/// The client limit that fits in `open_files` descriptors after the server
/// side's share and the over-limit sockets: `configured` if it fits, else
/// what does (at least 1).
pub fn client_limit(configured: usize, open_files: u64, server: usize) -> usize {
    let open_files = usize::try_from(open_files).unwrap_or(usize::MAX);
    let room = open_files.saturating_sub(server + OVER_LIMIT_SOCKETS);
    configured.min(room).max(1)
}

/// Raises the soft open-file limit towards `needed`, as far as the hard
/// limit allows; returns the limit in force.
pub fn raise_open_files(needed: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return u64::MAX;
    }
    if lim.rlim_cur >= needed {
        return lim.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: needed.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return lim.rlim_cur;
    }
    tracing::debug!(
        from = lim.rlim_cur,
        to = raised.rlim_cur,
        "raised the open-file limit"
    );
    raised.rlim_cur
}

/// A log line that may repeat quickly (an accept loop out of descriptors):
/// written at most once per `every`, with how many were held back.
pub struct Throttle {
    every: Duration,
    last: Option<tokio::time::Instant>,
    held_back: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// Some(number held back since the last one) if a line may be written now.
    pub fn allow(&mut self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|t| now < t + self.every) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_limit_leaves_room_for_servers_and_over_limit_sockets() {
        assert_eq!(client_limit(10_000, 1 << 20, 164), 10_000);
        assert_eq!(client_limit(10_000, 1024, 164), 1024 - 164 - 16);
        assert_eq!(client_limit(100, 1024, 164), 100);
        assert_eq!(client_limit(100, 50, 164), 1, "never zero");
    }

    #[test]
    fn every_socket_takes_a_slot_then_a_few_more_may_cancel_then_none() {
        let a = Admission::new(2);
        let clients: Vec<_> = (0..2).map(|_| a.admit().unwrap()).collect();
        assert!(clients.iter().all(|t| matches!(t, Ticket::Client(_))));
        assert_eq!(a.in_use(), 2);
        let over: Vec<_> = (0..OVER_LIMIT_SOCKETS)
            .map(|_| a.admit().unwrap())
            .collect();
        assert!(over.iter().all(|t| matches!(t, Ticket::OverLimit(_))));
        assert!(a.admit().is_none());
        drop(clients);
        assert!(matches!(a.admit(), Some(Ticket::Client(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_line_is_written_once_per_period_with_the_count_held_back() {
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.allow(), Some(0));
        for _ in 0..5 {
            tokio::time::advance(Duration::from_millis(50)).await;
            assert_eq!(t.allow(), None);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(t.allow(), Some(5));
        assert_eq!(t.allow(), None);
    }
}
