//! What the whole proxy is doing: serving, paused (`PGSPLIT PAUSE`), or
//! shutting down in phases. Sessions look at it between requests and
//! while they wait for their client.
//!
//! ```text
//!   Running ⇄ Paused          (PAUSE / RESUME)
//!   Running | Paused → Draining → Closing   (SIGTERM, SIGINT, SHUTDOWN;
//!                                            then shutdown_timeout)
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum State {
    Running = 0,
    /// New requests wait; running transactions finish.
    Paused = 1,
    /// No new clients; idle sessions are told 57P01, the others finish
    /// their transaction first.
    Draining = 2,
    /// `shutdown_timeout` is over: every session ends now.
    Closing = 3,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Draining => "draining",
            State::Closing => "closing",
        }
    }

    pub fn is_stopping(self) -> bool {
        self >= State::Draining
    }

    /// Whether a session ends in this state: every session once closing,
    /// and one with nothing running (`idle`) once draining.
    pub fn ends_session(self, idle: bool) -> bool {
        self == State::Closing || (idle && self == State::Draining)
    }

    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Running,
            1 => State::Paused,
            2 => State::Draining,
            _ => State::Closing,
        }
    }
}

/// The proxy's state: an atomic for the per-request look, a watch
/// channel for requests waiting out a pause, and one waker per session for
/// the shutdown, which must reach sessions waiting for their client.
pub struct Lifecycle {
    state: AtomicU8,
    changes: watch::Sender<State>,
    sessions: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
}

struct Entry {
    waker: Arc<AtomicWaker>,
    client: Arc<ClientInfo>,
}

/// A logged-in client, for the admin console's `SHOW CLIENTS`.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub addr: Option<std::net::SocketAddr>,
    pub local: Option<std::net::SocketAddr>,
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub connected: Option<std::time::SystemTime>,
    pub tls: bool,
    /// The process id pgsplit told it (BackendKeyData).
    pub pid: i32,
    /// Its socket, whose reading side closing shuts down; open while
    /// the session is registered.
    pub fd: Option<std::os::fd::RawFd>,
}

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        Lifecycle {
            state: AtomicU8::new(State::Running as u8),
            changes: watch::Sender::new(State::Running),
            sessions: Mutex::default(),
            next: AtomicU64::new(0),
        }
    }
}

impl Lifecycle {
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves to `to`, unless shutdown has gone further already (a shutdown
    /// is never undone, and PAUSE / RESUME do nothing once it started).
    /// The state before.
    pub fn advance(&self, to: State) -> State {
        let mut before = State::Running;
        let changed = self.changes.send_if_modified(|s| {
            before = *s;
            let allowed = !s.is_stopping() || to > *s;
            if allowed && *s != to {
                *s = to;
                self.state.store(to as u8, Ordering::Release);
                true
            } else {
                false
            }
        });
        if changed && to.is_stopping() {
            for entry in self.sessions.lock().unwrap().values() {
                if to == State::Closing {
                    if let Some(fd) = entry.client.fd {
                        // SAFETY: the session leaves the registry (under
                        // this lock) before its socket closes.
                        unsafe { libc::shutdown(fd, libc::SHUT_RD) };
                    }
                }
                entry.waker.wake();
            }
        }
        before
    }

    /// Completes once a shutdown has begun.
    pub async fn stopping(&self) {
        let mut rx = self.changes.subscribe();
        let _ = rx.wait_for(|s| s.is_stopping()).await;
    }

    /// Waits while the proxy is paused; returns the state that ended the
    /// wait (Running, or a shutdown phase).
    pub async fn unpaused(&self) -> State {
        if self.state() != State::Paused {
            return self.state();
        }
        let mut rx = self.changes.subscribe();
        let ended = match rx.wait_for(|s| *s != State::Paused).await {
            Ok(s) => *s,
            Err(_) => State::Closing,
        };
        ended
    }

    /// A session's place in the shutdown: registered once, so waiting on
    /// it costs a session one atomic exchange per wait, not a lock.
    pub fn listen(self: &Arc<Self>, client: ClientInfo) -> Listener {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let waker = Arc::new(AtomicWaker::new());
        let entry = Entry {
            waker: Arc::clone(&waker),
            client: Arc::new(client),
        };
        self.sessions.lock().unwrap().insert(id, entry);
        Listener {
            lifecycle: Arc::clone(self),
            waker,
            id,
        }
    }

    pub fn sessions(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    /// Every session's client, in no particular order.
    pub fn clients(&self) -> Vec<Arc<ClientInfo>> {
        let sessions = self.sessions.lock().unwrap();
        sessions.values().map(|e| Arc::clone(&e.client)).collect()
    }
}

/// A session's registration with the [`Lifecycle`]; removed on drop.
pub struct Listener {
    lifecycle: Arc<Lifecycle>,
    waker: Arc<AtomicWaker>,
    id: u64,
}

impl Listener {
    /// Completes once the proxy is in a state in which a session that is
    /// `idle` (or not) ends.
    pub fn session_ends(&self, idle: bool) -> SessionEnds<'_> {
        SessionEnds {
            listener: self,
            idle,
        }
    }

    pub fn state(&self) -> State {
        self.lifecycle.state()
    }

    /// Whether the proxy is in a state that ends a session with nothing
    /// running; if not, the task of `cx` is woken when that may change.
    pub fn poll_ends(&self, cx: &mut Context<'_>) -> bool {
        // Registered before the look, so a change made in between wakes it.
        self.waker.register(cx.waker());
        self.state().ends_session(true)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.lifecycle.sessions.lock().unwrap().remove(&self.id);
    }
}

pub struct SessionEnds<'a> {
    listener: &'a Listener,
    idle: bool,
}

impl Future for SessionEnds<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before the look, so a change made in between wakes it.
        self.listener.waker.register(cx.waker());
        if self.listener.state().ends_session(self.idle) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_and_resume_move_freely_until_shutdown_which_only_goes_forward() {
        let l = Lifecycle::default();
        assert_eq!(l.advance(State::Paused), State::Running);
        assert_eq!(l.state(), State::Paused);
        l.advance(State::Running);
        assert_eq!(l.state(), State::Running);
        l.advance(State::Draining);
        l.advance(State::Running);
        l.advance(State::Paused);
        assert_eq!(l.state(), State::Draining, "a shutdown is never undone");
        l.advance(State::Closing);
        l.advance(State::Draining);
        assert_eq!(l.state(), State::Closing);
    }

    #[test]
    fn draining_ends_idle_sessions_and_closing_ends_all() {
        assert!(State::Draining.ends_session(true));
        assert!(!State::Draining.ends_session(false));
        assert!(State::Closing.ends_session(false));
        assert!(!State::Paused.ends_session(true));
        assert!(!State::Running.ends_session(true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_wait_ends_at_resume_or_shutdown() {
        let l = Arc::new(Lifecycle::default());
        assert_eq!(l.unpaused().await, State::Running);
        l.advance(State::Paused);
        let waiter = tokio::spawn({
            let l = Arc::clone(&l);
            async move { l.unpaused().await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "a paused request waits");
        l.advance(State::Running);
        assert_eq!(waiter.await.unwrap(), State::Running);
        l.advance(State::Paused);
        let waiter = tokio::spawn({
            let l = Arc::clone(&l);
            async move { l.unpaused().await }
        });
        tokio::task::yield_now().await;
        l.advance(State::Draining);
        assert_eq!(waiter.await.unwrap(), State::Draining);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_session_hears_of_draining_a_busy_one_only_of_closing() {
        let l = Arc::new(Lifecycle::default());
        let idle = l.listen(ClientInfo::default());
        let busy = l.listen(ClientInfo::default());
        let (l2, idle_waits) = (
            Arc::clone(&l),
            tokio::spawn(async move {
                idle.session_ends(true).await;
            }),
        );
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(
            !idle_waits.is_finished(),
            "nothing ends a session while running"
        );
        l2.advance(State::Draining);
        idle_waits.await.unwrap();
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(5), busy.session_ends(false)).await;
        assert!(waited.is_err(), "a busy session keeps going while draining");
        let busy_waits = tokio::spawn(async move { busy.session_ends(false).await });
        tokio::task::yield_now().await;
        l.advance(State::Closing);
        busy_waits.await.unwrap();
        assert_eq!(l.sessions(), 0, "listeners leave the registry when dropped");
    }
}
