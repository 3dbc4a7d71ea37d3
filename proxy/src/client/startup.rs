//! The startup phase of a client connection: the opening packets,
//! authentication, and the startup parameters the client is told about.

use std::sync::Arc;

use bytes::BytesMut;
use pgsplit_config::ClientTls;
use pgsplit_protocol::encode;
use pgsplit_protocol::startup::{split_startup, StartupMessage, StartupPacket};
use pgsplit_protocol::TransactionStatus;
use tokio::io::AsyncReadExt;
use tokio::sync::OwnedSemaphorePermit;

use super::attach::checkout;
use super::auth::{authenticate, refuse_unknown};
use super::socket::ClientStream;
use super::state::{set_statement, SessionState};
use crate::backend::pool::{ConnPool, PooledConn};
use crate::backend::BackendError;
use crate::cancel::{send_cancel, CancelKey};
use crate::errors::SessionError;
use crate::login::Login;
use crate::shared::Shared;
use crate::tls::{ClientTlsSetup, HANDSHAKE_RECORD};
use crate::topology::BackendId;

pub enum Opening {
    Startup(StartupMessage),
    /// The connection only carried a CancelRequest; it is done.
    Cancel,
    /// The client hung up before saying anything useful.
    Closed,
}

/// Reads startup-phase packets until a StartupMessage or CancelRequest.
/// TLS is negotiated on the way when `tls` offers it: by SSLRequest, or
/// directly when the first byte is a TLS handshake record. Otherwise an
/// encryption request is declined with 'N', after which libpq and other
/// drivers continue in plaintext (or give up if they require TLS).
pub async fn read_opening(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    shared: &Shared,
    tls: Option<&ClientTlsSetup>,
) -> Result<Opening, SessionError> {
    if let (Some(tls), ClientStream::Plain(tcp)) = (tls, &*stream) {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await? == 1 && first[0] == HANDSHAKE_RECORD {
            stream.upgrade(tls, true).await?;
        }
    }
    loop {
        match split_startup(buf)? {
            Some(packet @ (StartupPacket::SslRequest | StartupPacket::GssEncRequest)) => {
                // A client must not pipeline past an encryption request: bytes
                // already buffered would bypass the negotiation (CVE-2021-23214).
                if !buf.is_empty() {
                    return Err(SessionError::DataAfterEncryptionRequest);
                }
                if stream.is_tls() {
                    return Err(SessionError::EncryptionRequestInsideTls);
                }
                match tls {
                    Some(tls) if matches!(packet, StartupPacket::SslRequest) => {
                        stream
                            .send(pgsplit_protocol::startup::ENCRYPTION_ACCEPTED)
                            .await?;
                        stream.upgrade(tls, false).await?;
                    }
                    _ => {
                        stream
                            .send(pgsplit_protocol::startup::ENCRYPTION_DECLINED)
                            .await?
                    }
                }
            }
            Some(StartupPacket::Cancel { pid, secret }) => {
                if let Some(target) = shared.cancel.lookup(pid, secret) {
                    send_cancel(target, shared.config.timeouts.cancel).await;
                }
                return Ok(Opening::Cancel);
            }
            Some(StartupPacket::Startup(m)) => return Ok(Opening::Startup(m)),
            None => {
                buf.reserve(1024);
                if stream.read_buf(buf).await? == 0 {
                    return Ok(Opening::Closed);
                }
            }
        }
    }
}

/// Answers a request for a newer protocol minor version or `_pq_.` options
/// the way PostgreSQL does, so such clients fall back to 3.0.
pub fn negotiate_version(m: &StartupMessage, out: &mut BytesMut) {
    let options: Vec<&str> = m.protocol_options().collect();
    if m.minor_version > 0 || !options.is_empty() {
        encode::negotiate_protocol_version(out, 0, &options);
    }
}

/// Startup parameters passed on to servers: everything the client set except
/// what identifies the login, which pgsplit maps itself.
pub fn forwarded_params(m: &StartupMessage) -> Result<Vec<(String, String)>, SessionError> {
    let mut out = Vec::with_capacity(m.params.len());
    for (k, v) in &m.params {
        match k.as_str() {
            "user" | "database" => {}
            "replication" if v != "false" && v != "off" && v != "0" && v != "no" => {
                return Err(SessionError::Replication)
            }
            "replication" => {}
            k if k.starts_with("_pq_.") => {}
            _ => out.push((k.clone(), v.clone())),
        }
    }
    Ok(out)
}

/// SET statements equivalent to the client's startup parameters, so a pooled
/// server connection opened for someone else can be given this client's
/// defaults (`options` may carry several as `-c name=value`).
pub fn baseline_sets(params: &[(String, String)]) -> Vec<std::sync::Arc<str>> {
    let mut out = Vec::new();
    for (name, value) in params {
        if name == "options" {
            for (n, v) in parse_options(value) {
                out.push(set_statement(&n, &v).into());
            }
        } else {
            out.push(set_statement(name, value).into());
        }
    }
    out
}

/// `-c name=value` / `-cname=value` / `--name=value`, whitespace-separated,
/// with `\` escaping a space, as libpq's `options` carries them.
fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
        } else {
            w.strip_prefix("-c")
                .or_else(|| w.strip_prefix("--"))
                .map(str::to_owned)
        };
        if let Some((n, v)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            out.push((n.replace('-', "_"), v.to_owned()));
        }
    }
    out
}

/// Who a session's log lines are about, filled in as startup learns it.
#[derive(Default)]
pub(super) struct Who {
    pub addr: Option<std::net::SocketAddr>,
    pub user: Option<String>,
    pub database: Option<String>,
}

pub(super) struct Established {
    /// The connection startup used, if it needed one.
    pub conn: Option<PooledConn>,
    /// The backend and pool startup used, if it needed a connection.
    pub pool: Option<(BackendId, ConnPool)>,
    pub state: SessionState,
    pub cancel_key: CancelKey,
    pub permit: OwnedSemaphorePermit,
    pub user: String,
    /// What the session logs in to servers as.
    pub login: Arc<Login>,
    pub database: String,
    pub application_name: String,
    pub ryw: pgsplit_config::ReadYourWrites,
    /// Logged in to the admin console (`crate::console`), not a database.
    pub console: bool,
}

pub(super) async fn establish(
    client: &mut ClientStream,
    rbuf: &mut BytesMut,
    shared: &Arc<Shared>,
    who: &mut Who,
    permit: OwnedSemaphorePermit,
) -> Result<Option<Established>, SessionError> {
    let tls = shared.client_tls.offered().then_some(&shared.client_tls);
    let startup = match read_opening(client, rbuf, shared, tls).await? {
        Opening::Startup(m) => m,
        Opening::Cancel | Opening::Closed => return Ok(None),
    };
    if shared.client_tls.mode == ClientTls::Require && !client.is_tls() {
        return Err(SessionError::TlsRequired);
    }
    let mut out = BytesMut::with_capacity(512);
    negotiate_version(&startup, &mut out);
    if !out.is_empty() {
        client.send(&out).await?;
        out.clear();
    }
    let user_name = startup.user().ok_or(SessionError::NoUser)?.to_owned();
    let database = startup.database().unwrap_or(&user_name).to_owned();
    who.user = Some(user_name.clone());
    who.database = Some(database.clone());
    let params = forwarded_params(&startup)?;
    let Some(user) = shared.users.get(&user_name) else {
        return Err(refuse_unknown(client, rbuf, &user_name).await);
    };
    let login = authenticate(client, rbuf, &user_name, user, &shared.lookups).await?;
    if crate::console::is_console(&database) {
        if !shared.config.user(&user_name).is_some_and(|u| u.admin) {
            return Err(SessionError::ConsoleNotAllowed(user_name));
        }
        let cancel_key = shared.cancel.register();
        crate::console::startup_parameters(&mut out);
        encode::backend_key_data(&mut out, cancel_key.pid, cancel_key.secret);
        encode::ready_for_query(&mut out, TransactionStatus::Idle);
        client.send(&out).await?;
        return Ok(Some(Established {
            conn: None,
            pool: None,
            state: SessionState::new(Vec::new()),
            cancel_key,
            permit,
            ryw: shared.config.routing.read_your_writes,
            application_name: String::new(),
            console: true,
            user: user_name,
            login,
            database,
        }));
    }

    // The first client of a database, user and settings gets a primary
    // connection: it checks that the database and the server credentials
    // work, and gives the ParameterStatus values a server would send once it
    // carries this client's startup parameters. Later clients like it are
    // answered from the cache, so connecting never waits for the pool.
    let mut state = SessionState::new(baseline_sets(&params));
    let mut conn = None;
    let mut used_pool = None;
    let reported = match shared.cached_startup(&database, &login.server_user, state.fingerprint) {
        Some(cached) => cached,
        None => {
            // No server connection is opened while paused (bounded by
            // timeouts.client_startup, around the whole login).
            let s = shared.lifecycle.unpaused().await;
            if s.is_stopping() {
                return Err(SessionError::AdminShutdown {
                    cut: None,
                    in_flight: false,
                });
            }
            let first = first_connection(shared, &database, &login, &state).await;
            if first.is_err() && user.looked_up {
                // The server may hold a newer password than the one looked up.
                shared.lookups.forget(&user_name);
            }
            let first = first?;
            let params = first.conn.params().to_vec();
            let backend = first.backend;
            conn = Some(first.conn);
            used_pool = Some((backend, first.pool));
            if Some(backend) == shared.primary() {
                shared.cache_startup(&database, &login.server_user, state.fingerprint, params)
            } else {
                // A standby's parameters (in_hot_standby = on) are right
                // for this client only: later ones would think pgsplit
                // read-only (target_session_attrs=read-write).
                std::sync::Arc::new(params)
            }
        }
    };
    let cancel_key = shared.cancel.register();
    for (name, value) in reported.iter() {
        if name == "default_transaction_read_only" {
            state.default_read_only = value == "on";
        }
        encode::parameter_status(&mut out, name, value);
    }
    encode::backend_key_data(&mut out, cancel_key.pid, cancel_key.secret);
    encode::ready_for_query(&mut out, TransactionStatus::Idle);
    client.send(&out).await?;
    tracing::debug!(client = %super::session::Peer(who.addr), user = %user_name, %database, "session started");
    Ok(Some(Established {
        conn,
        pool: used_pool,
        state,
        cancel_key,
        permit,
        ryw: shared
            .config
            .user(&user_name)
            .and_then(|u| u.read_your_writes)
            .unwrap_or(shared.config.routing.read_your_writes),
        application_name: params
            .iter()
            .find(|(k, _)| k == "application_name")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        console: false,
        user: user_name,
        login,
        database,
    }))
}

/// The connection the first client of a database, user and settings
/// logs in with, carrying the client's startup parameters.
struct FirstConnection {
    backend: BackendId,
    pool: ConnPool,
    conn: PooledConn,
}

async fn first_connection(
    shared: &Arc<Shared>,
    database: &str,
    login: &Login,
    state: &SessionState,
) -> Result<FirstConnection, SessionError> {
    let backend = startup_backend(shared).await;
    let user = &login.server_user;
    let pool = shared
        .pools
        .pool(backend, database, user, &login.credential);
    let mut c = checkout(shared, &pool, backend, database, user).await?;
    if let Some(sql) = state.replay_sql(c.settings()) {
        match c.exchange(&sql).await? {
            Ok(changed) => {
                for (name, value) in changed {
                    c.set_param(name, value);
                }
                c.set_settings(state.fingerprint);
            }
            Err(error) => {
                let backend = c.backend_name().to_owned();
                return Err(BackendError::Refused { backend, error }.into());
            }
        }
    }
    Ok(FirstConnection {
        backend,
        pool,
        conn: c,
    })
}

/// The server a new client's first connection goes to: the primary, once
/// there is one (waiting a little for it during a failover), else any
/// standby, else the primary anyway, so the client gets the real error.
async fn startup_backend(shared: &Shared) -> BackendId {
    let patience = shared
        .config
        .health
        .failover_timeout
        .min(std::time::Duration::from_secs(2));
    let t = &shared.topology;
    if let Some(p) = t
        .wait_for_primary(tokio::time::Instant::now() + patience)
        .await
    {
        return p;
    }
    t.backends
        .iter()
        .find(|b| b.node.serves_as_standby() && t.is_usable(b.id))
        .map(|b| b.id)
        .or(t.primary())
        .unwrap_or(BackendId::nth(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_parameters_become_set_statements() {
        let sets = baseline_sets(&[
            ("application_name".into(), "it's me".into()),
            (
                "options".into(),
                "-c search_path=a,b --statement-timeout=5s -cwork_mem=8MB -c x.y=with\\ space"
                    .into(),
            ),
        ]);
        let sets: Vec<&str> = sets.iter().map(|s| s.as_ref()).collect();
        assert_eq!(
            sets,
            [
                "SET \"application_name\" TO 'it''s me'",
                "SET \"search_path\" TO 'a,b'",
                "SET \"statement_timeout\" TO '5s'",
                "SET \"work_mem\" TO '8MB'",
                "SET \"x.y\" TO 'with space'",
            ]
        );
    }
}
