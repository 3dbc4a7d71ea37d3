//! One client session: startup, authentication, then relaying.
//!
//! Requests flow client → server frame by frame; responses flow back in
//! batches: every complete frame in the server read buffer is inspected in
//! place (only ReadyForQuery's status byte matters here) and the batch goes
//! to the client with one `split_to` and one write, never copied.
//!
//! `pending` counts the requests (Query, Sync, FunctionCall) that still await
//! a ReadyForQuery. Together with the transaction status that ReadyForQuery
//! reports, it says when the session is between requests and outside a
//! transaction: the only points where it may switch server connections.

use std::sync::Arc;

use bytes::BytesMut;
use pgsplit_protocol::backend::ready_status;
use pgsplit_protocol::frame::Frames;
use pgsplit_protocol::{encode, split_frame, Direction, TransactionStatus};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::auth::authenticate;
use super::startup::{forwarded_params, negotiate_version, read_opening, Opening};
use crate::backend::{BackendError, ConnectParams, ServerConn};
use crate::cancel::{CancelKey, CancelTarget};
use crate::errors::{Reply, SessionError};
use crate::io::fill;
use crate::shared::Shared;

struct Session {
    shared: Arc<Shared>,
    client: TcpStream,
    /// Client bytes not yet processed (a partial frame at most, between reads).
    rbuf: BytesMut,
    /// Bytes queued for the server, written once per client read.
    server_out: BytesMut,
    server: ServerConn,
    pending: usize,
    tx: TransactionStatus,
    cancel_key: CancelKey,
    _permit: OwnedSemaphorePermit,
}

enum Flow {
    Continue,
    Terminate,
}

/// Serves one client connection to the end. Never panics on client input;
/// every failure ends with an ErrorResponse where the client can still read it.
pub async fn serve_client(mut client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let mut rbuf = BytesMut::with_capacity(1024);
    let startup_timeout = shared.config.timeouts.client_startup;
    let opened = tokio::time::timeout(startup_timeout, establish(&mut client, &mut rbuf, &shared))
        .await
        .unwrap_or(Err(SessionError::StartupTimeout));
    let parts = match opened {
        Ok(Some(parts)) => parts,
        Ok(None) => return,
        Err(e) => {
            log_end(&e);
            report(&mut client, &e).await;
            return;
        }
    };
    let (server, cancel_key, permit) = parts;
    let mut session = Session {
        shared,
        client,
        rbuf,
        server_out: BytesMut::with_capacity(1024),
        server,
        pending: 0,
        tx: TransactionStatus::Idle,
        cancel_key,
        _permit: permit,
    };
    let result = session.run().await;
    if let Err(e) = &result {
        log_end(e);
        report(&mut session.client, e).await;
    }
    session.cancel_key.set_target(None);
    session.server.terminate().await;
}

type Established = (ServerConn, CancelKey, OwnedSemaphorePermit);

async fn establish(
    client: &mut TcpStream,
    rbuf: &mut BytesMut,
    shared: &Arc<Shared>,
) -> Result<Option<Established>, SessionError> {
    let startup = match read_opening(client, rbuf, shared).await? {
        Opening::Startup(m) => m,
        Opening::Cancel | Opening::Closed => return Ok(None),
    };
    // Cancel requests were served above even at the limit; real sessions wait
    // for a slot no longer than it takes to say no.
    let permit = Arc::clone(&shared.client_slots)
        .try_acquire_owned()
        .map_err(|_| SessionError::TooManyClients(shared.config.limits.max_client_connections))?;
    let mut out = BytesMut::with_capacity(512);
    negotiate_version(&startup, &mut out);
    if !out.is_empty() {
        client.write_all(&out).await?;
        out.clear();
    }
    let user_name = startup.user().ok_or(SessionError::NoUser)?.to_owned();
    let database = startup.database().unwrap_or(&user_name).to_owned();
    let extra = forwarded_params(&startup)?;
    let user = shared
        .users
        .get(&user_name)
        .ok_or_else(|| SessionError::UnknownUser(user_name.clone()))?;
    authenticate(client, rbuf, &user_name, user).await?;

    let cfg = &shared.config;
    let backend = &shared.backends[shared.primary];
    let server = ServerConn::connect(
        backend,
        &ConnectParams {
            user: &user.server_user,
            password: user.server_password.as_deref(),
            database: &database,
            extra: &extra,
            timeout: cfg.timeouts.connect,
            max_message_size: cfg.limits.max_message_size,
        },
    )
    .await?;

    let cancel_key = shared.cancel.register();
    cancel_key.set_target(Some(CancelTarget {
        addr: server.addr,
        server_pid: server.pid,
        server_secret: server.secret,
    }));
    for (name, value) in &server.params {
        encode::parameter_status(&mut out, name, value);
    }
    encode::backend_key_data(&mut out, cancel_key.pid, cancel_key.secret);
    encode::ready_for_query(&mut out, TransactionStatus::Idle);
    client.write_all(&out).await?;
    tracing::debug!(user = %user_name, %database, backend = %backend.name, "session started");
    Ok(Some((server, cancel_key, permit)))
}

impl Session {
    async fn run(&mut self) -> Result<(), SessionError> {
        let max = self.shared.config.limits.max_message_size;
        loop {
            tokio::select! {
                r = fill(&mut self.client, &mut self.rbuf, Direction::Frontend, max) => {
                    if !r? {
                        return Ok(());
                    }
                    if let Flow::Terminate = self.take_client_frames()? {
                        return Ok(());
                    }
                    if !self.server_out.is_empty() {
                        self.server.send(&mut self.server_out).await?;
                    }
                }
                r = fill(&mut self.server.stream, &mut self.server.rbuf, Direction::Backend, max) => {
                    let more = r.map_err(|e| server_read_error(&self.server, e))?;
                    if !more {
                        return Err(BackendError::Closed { backend: self.server.backend.name.clone() }.into());
                    }
                    self.forward_server_frames().await?;
                }
            }
        }
    }

    /// Queues every complete client frame for the server.
    fn take_client_frames(&mut self) -> Result<Flow, SessionError> {
        let max = self.shared.config.limits.max_message_size;
        while let Some(frame) = split_frame(&mut self.rbuf, Direction::Frontend, max)? {
            match frame.tag() {
                // The proxy owns server connections; the client's goodbye ends
                // only its own session.
                b'X' => return Ok(Flow::Terminate),
                b'Q' | b'S' | b'F' => self.pending += 1,
                _ => {}
            }
            self.server_out.extend_from_slice(frame.as_bytes());
        }
        Ok(Flow::Continue)
    }

    /// Sends every complete server frame to the client in one write.
    async fn forward_server_frames(&mut self) -> Result<(), SessionError> {
        let max = self.shared.config.limits.max_message_size;
        let mut frames = Frames::new(&self.server.rbuf, Direction::Backend, max);
        for item in frames.by_ref() {
            let (tag, body) = item.map_err(|source| BackendError::Protocol {
                backend: self.server.backend.name.clone(),
                source,
            })?;
            if tag == b'Z' {
                self.tx = ready_status(body).map_err(|source| BackendError::Protocol {
                    backend: self.server.backend.name.clone(),
                    source,
                })?;
                self.pending = self.pending.saturating_sub(1);
            }
        }
        let n = frames.consumed();
        if n > 0 {
            let batch = self.server.rbuf.split_to(n);
            self.client.write_all(&batch).await?;
        }
        Ok(())
    }
}

fn server_read_error(server: &ServerConn, e: crate::io::ReadError) -> SessionError {
    let backend = server.backend.name.clone();
    match e {
        crate::io::ReadError::Io(source) => BackendError::Io { backend, source }.into(),
        crate::io::ReadError::Protocol(source) => BackendError::Protocol { backend, source }.into(),
        crate::io::ReadError::TruncatedMessage => BackendError::Closed { backend }.into(),
    }
}

async fn report(client: &mut TcpStream, e: &SessionError) {
    let mut out = BytesMut::new();
    match e.reply() {
        Reply::None => return,
        Reply::Error(info) => encode::error_response(&mut out, &info),
        Reply::Raw(frame) => out.extend_from_slice(frame.as_bytes()),
    }
    let _ = client.write_all(&out).await;
    let _ = client.shutdown().await;
}

fn log_end(e: &SessionError) {
    match e {
        SessionError::ClientIo(_) | SessionError::ClientTruncated => {
            tracing::debug!(error = %e, "client connection ended")
        }
        _ => tracing::warn!(error = %e, "session ended with an error"),
    }
}
