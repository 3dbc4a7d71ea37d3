//! Serving one client connection: startup, then the session until the
//! client leaves, then giving its server connections back.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use pgsplit_protocol::{encode, TransactionStatus};
use pgsplit_router::ryw::Ryw;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::phase::Phase;
use super::session::{Client, Session};
use super::socket::ClientStream;
use super::startup::{establish, read_opening, Opening, Who};
use crate::admission::Ticket;
use crate::errors::{Reply, SessionError};
use crate::shared::{LagLimit, Shared};

/// Serves one client connection to the end. Never panics on client input;
/// every failure ends with an ErrorResponse where the client can still read it.
pub async fn serve_client(stream: TcpStream, shared: Arc<Shared>, ticket: Ticket) {
    let _ = stream.set_nodelay(true);
    let mut rbuf = BytesMut::with_capacity(1024);
    let mut who = Who {
        addr: stream.peer_addr().ok(),
        ..Who::default()
    };
    let local = stream.local_addr().ok();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let mut stream = ClientStream::Plain(stream);
    let permit = match ticket {
        Ticket::Client(permit) => permit,
        Ticket::OverLimit(_held) => return serve_over_limit(stream, rbuf, &shared, &who).await,
    };
    let opened = tokio::time::timeout(
        shared.config.timeouts.client_startup,
        establish(&mut stream, &mut rbuf, &shared, &mut who, permit),
    )
    .await
    .unwrap_or(Err(SessionError::StartupTimeout));
    let e = match opened {
        Ok(Some(e)) => e,
        Ok(None) => return,
        Err(e) => {
            log_end(&e, &who, &shared);
            report(&mut stream, &e).await;
            return;
        }
    };
    if e.console {
        return serve_console(stream, rbuf, &shared, e, &who, (local, fd)).await;
    }
    let backends = shared.topology.backends.len();
    let mode = super::own::mode_of(e.ryw);
    let buffer_share = crate::budget::Share::new(&shared.buffers);
    let peer_writes = shared.peer_writes(&e.user, &e.database);
    let shared_lifecycle = Arc::clone(&shared.lifecycle);
    let client_info = client_info(&e, &who, (local, fd), &stream);
    let mut c = Client {
        lag_limit: LagLimit::from_config(&shared.config.health),
        recheck: None,
        conns: (0..backends).map(|_| None).collect(),
        pools: (0..backends).map(|_| None).collect(),
        session_pooling: shared.config.pool.mode == pgsplit_config::PoolMode::Session,
        shared,
        stream,
        rbuf,
        wbuf: BytesMut::new(),
        tx: TransactionStatus::Idle,
        state: e.state,
        segments: VecDeque::new(),
        current_meta: None,
        tx_meta: Vec::new(),
        segment_failed: false,
        last_command_tag: None,
        events: Vec::new(),
        decided_query: None,
        ryw_mode: mode,
        default_ryw_mode: mode,
        ryw: Ryw::default(),
        user: e.user,
        login: e.login,
        last_primary: None,
        session_id: NEXT_SESSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        peer_writes,
        database: e.database,
        cancel_key: e.cancel_key,
        spare_frames: BytesMut::new(),
        buffer_share,
        streaming: 0,
        lifecycle: shared_lifecycle.listen(client_info),
        peer: super::session::Peer(who.addr),
        _permit: e.permit,
    };
    // In transaction pooling an idle client holds nothing: the startup
    // connection goes back to the pool now, not when the session ends.
    let mut startup_conn = e.conn;
    if let Some((backend, pool)) = e.pool {
        c.pools[backend.index()] = Some(pool);
        if c.session_pooling {
            c.conns[backend.index()] = startup_conn.take();
        }
    }
    drop(startup_conn);
    let mut session = Session {
        phase: Phase::IDLE,
        c,
    };
    let result = session.run().await;
    if let Err(e) = &result {
        log_end(e, &who, &session.c.shared);
        report(&mut session.c.stream, e).await;
    }
    session.close().await;
}

/// What `SHOW CLIENTS` tells of a logged-in client.
fn client_info(
    e: &super::startup::Established,
    who: &Who,
    (local, fd): (Option<std::net::SocketAddr>, std::os::fd::RawFd),
    stream: &ClientStream,
) -> crate::lifecycle::ClientInfo {
    crate::lifecycle::ClientInfo {
        addr: who.addr,
        local,
        fd: Some(fd),
        user: e.user.clone(),
        database: e.database.clone(),
        application_name: e.application_name.clone(),
        connected: Some(std::time::SystemTime::now()),
        tls: stream.is_tls(),
        pid: e.cancel_key.pid,
    }
}

/// A session on the admin console, which never touches a server.
async fn serve_console(
    mut stream: ClientStream,
    mut rbuf: BytesMut,
    shared: &Arc<Shared>,
    e: super::startup::Established,
    who: &Who,
    socket: (Option<std::net::SocketAddr>, std::os::fd::RawFd),
) {
    let listener = shared
        .lifecycle
        .listen(client_info(&e, who, socket, &stream));
    let is_admin = shared.config.user(&e.user).is_some_and(|u| u.admin);
    let served = crate::console::serve(&mut stream, &mut rbuf, shared, &listener, is_admin).await;
    if let Err(err) = served {
        log_end(&err, who, shared);
        report(&mut stream, &err).await;
    }
}

/// A socket over the client limit: a CancelRequest on it is served (the
/// query it cancels may be what keeps the others waiting); a startup is
/// told 53300. It gets a short while to say which.
async fn serve_over_limit(
    mut stream: ClientStream,
    mut rbuf: BytesMut,
    shared: &Shared,
    who: &Who,
) {
    let patience = shared
        .config
        .timeouts
        .client_startup
        .min(OVER_LIMIT_PATIENCE);
    let opening =
        tokio::time::timeout(patience, read_opening(&mut stream, &mut rbuf, shared, None)).await;
    if let Ok(Ok(Opening::Startup(_))) = opening {
        let e = SessionError::TooManyClients(shared.admission.limit);
        log_end(&e, who, shared);
        report(&mut stream, &e).await;
    }
}

/// How long a socket over the client limit may take to send its first packet.
const OVER_LIMIT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

async fn report(client: &mut ClientStream, e: &SessionError) {
    let mut out = BytesMut::new();
    match e.reply() {
        Reply::None => return,
        Reply::Error(info) => encode::error_response(&mut out, &info),
        Reply::Raw(frame) => out.extend_from_slice(frame.as_bytes()),
    }
    let _ = client.send(&out).await;
    let _ = client.shutdown().await;
    // Read what the client still sends (the rest of a refused message), so
    // that closing does not reset the connection and destroy the error
    // before the client has read it.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let mut sink = [0u8; 8192];
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

fn log_end(e: &SessionError, who: &Who, shared: &Shared) {
    shared.events.session_ended(e);
    let client = who.addr.map(|a| a.to_string()).unwrap_or_default();
    let user = who.user.as_deref().unwrap_or("");
    let database = who.database.as_deref().unwrap_or("");
    match e {
        SessionError::ClientIo(_)
        | SessionError::ClientTruncated
        | SessionError::TlsHandshake(_) => {
            tracing::debug!(%client, user, database, error = %e, "client connection ended")
        }
        SessionError::IdleSession(_)
        | SessionError::IdleInTransaction(_)
        | SessionError::AdminShutdown { .. } => {
            tracing::info!(%client, user, database, error = %e, "session ended")
        }
        _ => tracing::warn!(%client, user, database, error = %e, "session ended with an error"),
    }
}

/// Numbers sessions from 1 (0 stands for nobody).
static NEXT_SESSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
