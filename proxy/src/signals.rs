//! The signals an operator sends: SIGTERM and SIGINT shut down in phases
//! (a second one ends every session at once), SIGHUP reloads the
//! configuration (`crate::reload`).

use std::pin::pin;
use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::app::ProxyHandle;
use crate::lifecycle::State;

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// What a signal asks for.
enum Asked {
    Stop,
    Reload,
}

impl Signals {
    fn install() -> Signals {
        let handler = |kind| signal(kind).expect("install a signal handler");
        Signals {
            term: handler(SignalKind::terminate()),
            int: handler(SignalKind::interrupt()),
            hup: handler(SignalKind::hangup()),
        }
    }

    async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.term.recv() => Asked::Stop,
            _ = self.int.recv() => Asked::Stop,
            _ = self.hup.recv() => Asked::Reload,
        }
    }
}

/// Serves until SIGTERM, SIGINT or `PGSPLIT SHUTDOWN`, then shuts down
/// in phases and returns once everything is closed.
pub async fn serve_until_stopped(proxy: ProxyHandle) {
    let mut signals = Signals::install();
    loop {
        tokio::select! {
            asked = signals.next() => match asked {
                Asked::Stop => break,
                Asked::Reload => crate::reload::on_signal(proxy.core()),
            },
            _ = proxy.shutdown_requested() => break,
        }
    }
    let lifecycle = Arc::clone(&proxy.core().lifecycle);
    let mut shutdown = pin!(proxy.shutdown());
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            asked = signals.next() => match asked {
                Asked::Stop => {
                    tracing::warn!("second stop signal: ending every session now");
                    lifecycle.advance(State::Closing);
                }
                Asked::Reload => {
                    tracing::warn!("SIGHUP during the shutdown: nothing is reloaded")
                }
            },
        }
    }
}
