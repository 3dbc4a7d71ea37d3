//! The listener: accepts clients and runs one task per session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pgsplit_config::Config;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::admission::{self, Throttle};
use crate::client::serve_client;
use crate::lifecycle::State;
use crate::shared::{Core, Shared};

/// Once `shutdown_timeout` is over, how long sessions get to tell their
/// clients 57P01 and give their connections back before they are dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A running proxy. Dropping it does not stop it; call [`ProxyHandle::shutdown`].
pub struct ProxyHandle {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    core: Arc<Core>,
    task: tokio::task::JoinHandle<()>,
}

impl ProxyHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `GET /metrics` is served, if `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The newest generation (see [`Shared`]).
    ///
    /// # Panics
    /// After the proxy stopped (`shutdown` consumes the handle, so only
    /// once a `PGSPLIT SHUTDOWN` has finished).
    pub fn shared(&self) -> Arc<Shared> {
        self.core.current().expect("the proxy is running")
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Shuts down in phases (see [`crate::lifecycle`]) and returns once
    /// every session has ended and the pools are closed.
    pub async fn shutdown(self) {
        self.core.lifecycle.advance(State::Draining);
        let _ = self.task.await;
    }

    /// Completes when a shutdown has begun (`PGSPLIT SHUTDOWN`, or
    /// [`ProxyHandle::shutdown`]).
    pub async fn shutdown_requested(&self) {
        self.core.lifecycle.stopping().await;
    }
}

/// Binds the configured address and starts serving. The config must have
/// passed `validate()`. Port 0 picks a free port (tests).
/// An error names the setting at fault and what to do.
pub async fn start(config: Config) -> std::io::Result<ProxyHandle> {
    let addr = config.listen_addr();
    let listener = listen(addr).map_err(|e| cannot_listen(e, addr, "listen", "PGSPLIT_LISTEN"))?;
    start_with_listener(listener, config)
}

fn cannot_listen(e: std::io::Error, addr: SocketAddr, key: &str, env: &str) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!("cannot listen on {addr} ({key}): {e}; free the port or change `{key}` ({env})"),
    )
}

/// Binds with a deep accept backlog: tokio's default of 128 drops
/// connection attempts when an application fleet reconnects at once, and
/// each dropped attempt costs the client a one-second SYN retry.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

pub fn start_with_listener(listener: TcpListener, config: Config) -> std::io::Result<ProxyHandle> {
    let local_addr = listener.local_addr()?;
    // Two descriptors per client at most (its socket, and a server socket
    // while it holds one) plus the pools and some slack.
    let pools = config.pool.pool_size * config.backends.len() * config.users.len().max(1);
    let server = admission::server_descriptors(pools);
    let wanted = config.limits.max_client_connections;
    let open_files =
        admission::raise_open_files((wanted + admission::OVER_LIMIT_SOCKETS + server) as u64);
    let client_limit = admission::client_limit(wanted, open_files, server);
    if client_limit < wanted {
        tracing::warn!(
            open_files,
            reserved_for_servers = server,
            serving = client_limit,
            "the open-file limit leaves room for {client_limit} clients, not \
             limits.max_client_connections = {wanted}: more get 53300; raise the limit \
             (ulimit -n, LimitNOFILE=) or lower max_client_connections"
        );
    }
    let client_tls =
        crate::tls::ClientTlsSetup::load(&config.tls).map_err(std::io::Error::other)?;
    let server_tls =
        crate::tls::ServerTlsSetup::load_all(&config).map_err(std::io::Error::other)?;
    let shared = Arc::new(Shared::new(config, client_limit, client_tls, server_tls));
    // Bound before anything starts, so a taken port fails cleanly.
    let metrics_addr = match shared.config.metrics_listen.as_deref() {
        Some(addr) => {
            let addr: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| cannot_listen(e, addr, "metrics_listen", "PGSPLIT_METRICS_LISTEN"))?;
            l.set_nonblocking(true)?;
            let l = TcpListener::from_std(l)?;
            let bound = l.local_addr()?;
            Some((l, bound))
        }
        None => None,
    };
    // Nothing can fail from here: the core holds the generation until the
    // shutdown's end lets go of it.
    let core = Arc::clone(&shared.core);
    core.set_current(&shared);
    drop(shared);
    let task = tokio::spawn(accept_loop(listener, Arc::clone(&core)));
    tokio::spawn(reap_idle_connections(Arc::downgrade(&core)));
    tokio::spawn(watch_certificates(Arc::downgrade(&core)));
    crate::health::spawn(&core.topology);
    let metrics_addr = metrics_addr.map(|(l, bound)| {
        tokio::spawn(crate::http::serve(l, Arc::downgrade(&core)));
        bound
    });

    tracing::info!(%local_addr, "pgsplit listening");
    Ok(ProxyHandle {
        local_addr,
        metrics_addr,
        core,
        task,
    })
}

async fn accept_loop(listener: TcpListener, core: Arc<Core>) {
    let mut sessions = JoinSet::new();
    let mut accept_errors = Throttle::new(Duration::from_secs(10));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::trace!(%peer, "client connected");
                    match (core.admission.admit(), core.current()) {
                        (Some(ticket), Some(shared)) => {
                            sessions.spawn(serve_client(stream, shared, ticket));
                        }
                        _ => refuse_at_once(stream, &core),
                    }
                }
                Err(e) => {
                    // Out of file descriptors or a connection reset during the
                    // handshake: existing sessions are unaffected, so back off
                    // briefly and keep accepting.
                    if let Some(held_back) = accept_errors.allow() {
                        tracing::warn!(error = %e, held_back, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = core.lifecycle.stopping() => break,
        }
        while sessions.try_join_next().is_some() {}
    }
    drop(listener);
    drain(sessions, &core).await;
    core.clear_current();
}

/// The shutdown after the listener closed: sessions with nothing running
/// have been told 57P01; the others get `shutdown_timeout` to end their
/// transactions, then are ended the same way; then the pools close.
async fn drain(mut sessions: JoinSet<()>, core: &Core) {
    let timeout = core
        .current()
        .map_or(Duration::ZERO, |s| s.config.timeouts.shutdown_timeout);
    tracing::info!(
        phase = "draining",
        sessions = sessions.len(),
        shutdown_timeout = %humantime::format_duration(timeout),
        "shutting down: stopped accepting; idle clients are told 57P01, transactions may finish"
    );
    if !all_ended(&mut sessions, timeout).await {
        core.lifecycle.advance(State::Closing);
        tracing::warn!(
            phase = "closing",
            sessions = sessions.len(),
            "shutdown_timeout over: ending the sessions still inside a transaction (57P01, rolled back)"
        );
        if !all_ended(&mut sessions, CLOSE_GRACE).await {
            sessions.shutdown().await;
        }
    }
    let closed = core.pools.close_idle().await;
    tracing::info!(
        phase = "stopped",
        server_connections_closed = closed,
        "pgsplit stopped"
    );
}

/// Whether every session ended within `limit`.
async fn all_ended(sessions: &mut JoinSet<()>, limit: Duration) -> bool {
    let ended = async { while sessions.join_next().await.is_some() {} };
    tokio::time::timeout(limit, ended).await.is_ok()
}

/// A socket beyond the client limit and the over-limit allowance: told
/// 53300 if its buffer takes it without waiting, and closed.
fn refuse_at_once(stream: tokio::net::TcpStream, core: &Core) {
    core.events.over_limit();
    let mut out = bytes::BytesMut::new();
    if let crate::errors::Reply::Error(info) =
        crate::errors::SessionError::TooManyClients(core.admission.limit).reply()
    {
        pgsplit_protocol::encode::error_response(&mut out, &info);
    }
    // Whatever the client sent already is read first: closing a socket with
    // unread data resets it, and the reset could destroy the error.
    let mut sink = [0u8; 1024];
    let _ = stream.try_read(&mut sink);
    let _ = stream.try_write(&out);
}

/// Closes idle server connections past their idle timeout or lifetime;
/// ends with the proxy.
async fn reap_idle_connections(core: std::sync::Weak<Core>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        match core.upgrade() {
            // Paused: servers may be restarting, and PAUSE promised none
            // of their connections open.
            Some(s) => {
                let running = || s.lifecycle.state() == State::Running;
                s.pools.maintain(running).await
            }
            None => return,
        }
    }
}

/// Looks at every certificate file every `tls::WATCH_EVERY` while the
/// proxy runs, and reads again the ones that changed.
async fn watch_certificates(core: std::sync::Weak<Core>) {
    let mut tick = tokio::time::interval(crate::tls::WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = core.upgrade().and_then(|c| c.current()) else {
            return;
        };
        let config = &shared.config;
        shared.client_tls.reload_if_changed(&config.tls);
        let mut done: Vec<&Arc<crate::tls::ServerTlsSetup>> = Vec::new();
        for b in shared.topology.backends.iter() {
            let tls = &b.addr.tls;
            if !done.iter().any(|d| Arc::ptr_eq(d, tls)) {
                tls.reload_if_changed(&config.tls);
                done.push(tls);
            }
        }
    }
}
