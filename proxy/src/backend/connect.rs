//! Opening and authenticating one server connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use pgsplit_protocol::auth::{
    md5_response, salted_password, ScramClient, ScramError, SCRAM_SHA_256,
};
use pgsplit_protocol::backend::{self, Authentication, BackendMessage};
use pgsplit_protocol::pipeline::{Request, ResponseTracker};
use pgsplit_protocol::{encode, Direction, Frame};
use sha2::Digest;

use pgsplit_protocol::tag::backend as be;

use super::{BackendAddr, BackendError, Method};
use crate::io::ReadError;

/// What a server connection is opened with.
pub struct ConnectParams<'a> {
    pub user: &'a str,
    pub credential: &'a super::Credential,
    pub database: &'a str,
    /// Client startup parameters to pass on (application_name, options, GUCs).
    pub extra: &'a [(String, String)],
    pub timeout: Duration,
    pub max_message_size: usize,
    /// TCP keepalive idle time and `TCP_USER_TIMEOUT` (zero: off).
    pub keepalive: Duration,
    pub user_timeout: Duration,
}

/// An authenticated server connection that has reported ReadyForQuery.
pub struct ServerConn {
    pub(super) stream: super::negotiate::ServerStream,
    /// The socket's descriptor, registered in `BackendAddr::live`.
    pub(super) fd: std::os::fd::RawFd,
    /// Bytes read from the server not yet consumed; owned here so reads are
    /// cancel-safe and partial frames survive between calls.
    pub(super) rbuf: BytesMut,
    pub(super) backend: BackendAddr,
    pub(super) addr: SocketAddr,
    /// ParameterStatus values reported at startup, in order.
    pub(super) params: Vec<(String, String)>,
    pub(super) pid: i32,
    pub(super) secret: i32,
    /// Replies still owed for requests sent, and which of them the client
    /// asked for (the rest answer statements pgsplit injected).
    pub(super) tracker: ResponseTracker,
    /// pgsplit's prepared statements on this server.
    pub(super) prepared: super::Prepared,
    /// Fingerprint of the session settings applied here; 0 = server defaults.
    pub(super) settings: u64,
    /// Transaction status from the last ReadyForQuery.
    pub(super) tx: pgsplit_protocol::TransactionStatus,
    /// Bytes queued for this server, written once per batch.
    pub(super) out: BytesMut,
    /// Unique among the process's connections, and how many checkouts it
    /// has had: together they tell whether anyone used it since
    /// ([`super::pool::ConnToken`]).
    pub(super) serial: u64,
    pub(super) uses: u64,
    /// The session whose writes ran here since its sequence state (what
    /// `currval()` / `lastval()` answer from) was last cleared; 0: nobody's.
    pub(super) sequences_owner: u64,
    /// Answers owed to [`ServerConn::ask_position`].
    pub(super) positions_owed: u8,
    /// What it did since its checkout, for the pool's statistics.
    pub(super) traffic: super::pool::Traffic,
}

/// Numbers every server connection the process opens.
static SERIALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The local end of the socket `fd`, which stays open.
fn local_addr(fd: std::os::fd::RawFd) -> Option<SocketAddr> {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` is this connection's open socket; ManuallyDrop keeps
    // the temporary std socket from closing it.
    let socket = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    socket.local_addr().ok()
}

impl Drop for ServerConn {
    fn drop(&mut self) {
        self.backend.live.remove(self.fd);
    }
}

impl ServerConn {
    pub async fn connect(
        backend: &BackendAddr,
        p: &ConnectParams<'_>,
    ) -> Result<ServerConn, BackendError> {
        match tokio::time::timeout(p.timeout, Self::connect_inner(backend, p)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout {
                backend: backend.name.clone(),
                secs: p.timeout.as_secs_f64(),
            }),
        }
    }

    async fn connect_inner(
        backend: &BackendAddr,
        p: &ConnectParams<'_>,
    ) -> Result<ServerConn, BackendError> {
        let (stream, addr, fd) =
            super::negotiate::open(backend, p.keepalive, p.user_timeout).await?;
        backend.live.add(fd);
        let mut conn = ServerConn {
            stream,
            fd,
            rbuf: BytesMut::with_capacity(crate::io::READ_CHUNK),
            backend: backend.clone(),
            addr,
            params: Vec::new(),
            pid: 0,
            secret: 0,
            tracker: ResponseTracker::default(),
            prepared: super::Prepared::default(),
            settings: 0,
            tx: pgsplit_protocol::TransactionStatus::Idle,
            out: BytesMut::new(),
            serial: SERIALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            uses: 0,
            sequences_owner: 0,
            positions_owed: 0,
            traffic: Default::default(),
        };
        let mut out = BytesMut::with_capacity(256);
        let mut startup: Vec<(&str, &str)> = vec![("user", p.user), ("database", p.database)];
        startup.extend(p.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        encode::startup_message(&mut out, &startup);
        conn.send(&mut out).await?;
        conn.authenticate(p).await?;
        conn.await_ready().await?;
        backend.live.describe(
            fd,
            crate::topology::ServerInfo {
                database: p.database.to_owned(),
                user: p.user.to_owned(),
                pid: conn.pid,
                local: local_addr(fd),
                remote: addr,
                connected: std::time::SystemTime::now(),
                tls: conn.stream.is_tls(),
            },
        );
        Ok(conn)
    }

    pub async fn send(&mut self, out: &mut BytesMut) -> Result<(), BackendError> {
        let r = self.stream.send(out).await;
        out.clear();
        r.map_err(|source| BackendError::Io {
            backend: self.backend.name.clone(),
            source,
        })
    }

    pub async fn recv(&mut self, max: usize) -> Result<Frame, BackendError> {
        match self
            .stream
            .read_frame(&mut self.rbuf, Direction::Backend, max)
            .await
        {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(BackendError::Closed {
                backend: self.backend.name.clone(),
            }),
            Err(e) => Err(self.read_error(e)),
        }
    }

    /// Writes everything queued in `out`.
    pub async fn flush(&mut self) -> Result<(), BackendError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.stream.send(&self.out).await;
        self.traffic.sent += self.out.len() as u64;
        self.out.clear();
        r.map_err(|source| BackendError::Io {
            backend: self.backend.name.clone(),
            source,
        })
    }

    pub fn read_error(&self, e: ReadError) -> BackendError {
        let backend = self.backend.name.clone();
        match e {
            ReadError::Io(source) => BackendError::Io { backend, source },
            ReadError::Protocol(source) => BackendError::Protocol { backend, source },
            ReadError::TruncatedMessage => BackendError::Closed { backend },
        }
    }

    /// Whether an idle connection is still usable: the server may have
    /// closed it (restart, idle timeout, admin termination) while the
    /// session was not looking. Never blocks.
    pub fn is_alive(&mut self) -> bool {
        loop {
            self.rbuf.reserve(1024);
            match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(0) => return false,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return false,
            }
        }
        // Anything an idle server says unprompted other than notices and
        // parameter changes is a FATAL goodbye.
        pgsplit_protocol::frame::Frames::new(&self.rbuf, Direction::Backend, 1 << 20).all(|f| {
            matches!(
                f,
                Ok((
                    be::NOTICE_RESPONSE | be::PARAMETER_STATUS | be::NOTIFICATION_RESPONSE,
                    _
                ))
            )
        })
    }

    fn protocol_err(&self, what: &'static str) -> BackendError {
        BackendError::Protocol {
            backend: self.backend.name.clone(),
            source: pgsplit_protocol::ProtocolError::Malformed {
                what,
                reason: "unexpected message during startup",
            },
        }
    }

    fn parse<'f>(&self, f: &'f Frame) -> Result<BackendMessage<'f>, BackendError> {
        backend::parse(f).map_err(|source| BackendError::Protocol {
            backend: self.backend.name.clone(),
            source,
        })
    }

    async fn authenticate(&mut self, p: &ConnectParams<'_>) -> Result<(), BackendError> {
        let mut out = BytesMut::new();
        let mut scram: Option<ScramClient> = None;
        loop {
            let f = self.recv(p.max_message_size).await?;
            let missing = |method| BackendError::NoPassword {
                backend: self.backend.name.clone(),
                user: p.user.to_owned(),
                method,
                why: p.credential.limits(),
            };
            let scram_err = |e: ScramError| BackendError::Scram {
                backend: self.backend.name.clone(),
                reason: e.to_string(),
            };
            match self.parse(&f)? {
                BackendMessage::Authentication(a) => match a {
                    // A server that skips SCRAM's last step has not proven
                    // that it knows the password.
                    Authentication::Ok if scram.is_some() => return Err(BackendError::Scram {
                        backend: self.backend.name.clone(),
                        reason:
                            "the server ended the exchange without proving it knows the password"
                                .to_owned(),
                    }),
                    Authentication::Ok => return Ok(()),
                    Authentication::CleartextPassword => {
                        let cleartext = p.credential.cleartext();
                        let pw = cleartext.ok_or_else(|| missing(Method::Cleartext))?;
                        encode::password(&mut out, pw.as_bytes());
                    }
                    Authentication::Md5Password { salt } => {
                        let source = p.credential.md5_source();
                        let source = source.ok_or_else(|| missing(Method::Md5))?;
                        let resp = md5_response(p.user, source, salt);
                        encode::password(&mut out, resp.as_bytes());
                    }
                    Authentication::Sasl { mechanisms } => {
                        let offered = mechanisms
                            .split(|&b| b == 0)
                            .any(|m| m == SCRAM_SHA_256.as_bytes());
                        if !offered {
                            return Err(BackendError::UnsupportedAuth {
                                backend: self.backend.name.clone(),
                                method: String::from_utf8_lossy(mechanisms)
                                    .replace('\0', " ")
                                    .trim()
                                    .to_owned(),
                            });
                        }
                        let client = p.credential.scram_client();
                        let client = client.ok_or_else(|| missing(Method::Scram))?;
                        let first = client.client_first();
                        encode::sasl_initial_response(&mut out, SCRAM_SHA_256, first.as_bytes());
                        scram = Some(client);
                    }
                    Authentication::SaslContinue(data) => {
                        let client = scram.as_mut().ok_or_else(|| self.protocol_err("SASL"))?;
                        let last = client
                            .server_first(data, kept_salted_password)
                            .map_err(scram_err)?;
                        encode::sasl_response(&mut out, last.as_bytes());
                    }
                    Authentication::SaslFinal(data) => {
                        let mut client = scram.take().ok_or_else(|| self.protocol_err("SASL"))?;
                        client.server_final(data).map_err(scram_err)?;
                        continue;
                    }
                    Authentication::Unsupported(code) => {
                        return Err(BackendError::UnsupportedAuth {
                            backend: self.backend.name.clone(),
                            method: format!("code {code} (GSS/SSPI/Kerberos)"),
                        })
                    }
                },
                BackendMessage::ErrorResponse(_) => {
                    return Err(BackendError::Refused {
                        backend: self.backend.name.clone(),
                        error: f,
                    })
                }
                BackendMessage::NegotiateProtocolVersion { .. } => continue,
                _ => return Err(self.protocol_err("Authentication")),
            }
            self.send(&mut out).await?;
        }
    }

    async fn await_ready(&mut self) -> Result<(), BackendError> {
        loop {
            let f = self.recv(1 << 20).await?;
            match self.parse(&f)? {
                BackendMessage::ParameterStatus { name, value } => {
                    self.params.push((name.to_owned(), value.to_owned()));
                }
                BackendMessage::BackendKeyData { pid, secret } => {
                    self.pid = pid;
                    self.secret = secret;
                }
                BackendMessage::ReadyForQuery(_) => return Ok(()),
                BackendMessage::NoticeResponse(_) => {}
                BackendMessage::ErrorResponse(_) => {
                    return Err(BackendError::Refused {
                        backend: self.backend.name.clone(),
                        error: f,
                    })
                }
                _ => return Err(self.protocol_err("startup")),
            }
        }
    }

    /// Records a ParameterStatus value, so a later session given this
    /// connection reports what the server would.
    pub fn set_param(&mut self, name: String, value: String) {
        match self.params.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.params.push((name, value)),
        }
    }

    /// After `DISCARD ALL`: no settings, no prepared statements.
    pub fn forget_session_state(&mut self) {
        self.prepared.forget();
        self.settings = 0;
        self.sequences_owner = 0;
    }

    /// Between requests and outside a transaction: safe to hand to anyone.
    pub fn is_clean(&self) -> bool {
        self.tracker.is_idle() && self.tx == pgsplit_protocol::TransactionStatus::Idle
    }

    /// Runs `sql` as a simple query and waits for its ReadyForQuery,
    /// returning the ParameterStatus values it produced, or the server's
    /// ErrorResponse. For pgsplit's own statements on an idle connection.
    pub async fn exchange(
        &mut self,
        sql: &str,
    ) -> Result<Result<Vec<(String, String)>, Frame>, BackendError> {
        let mut out = BytesMut::new();
        encode::query(&mut out, sql);
        // Tracked like any request, so a connection abandoned mid-exchange
        // (a timeout) is never handed out with replies still coming.
        self.tracker.push(Request::UntilReady, false);
        self.send(&mut out).await?;
        let mut params = Vec::new();
        let mut error = None;
        loop {
            let f = self.recv(1 << 20).await?;
            self.tracker.on_message(f.tag());
            match self.parse(&f)? {
                BackendMessage::ParameterStatus { name, value } => {
                    params.push((name.to_owned(), value.to_owned()))
                }
                BackendMessage::ErrorResponse(_) => error = Some(f.clone()),
                BackendMessage::ReadyForQuery(status) => {
                    self.tx = status;
                    return Ok(match error {
                        Some(e) => Err(e),
                        None => Ok(params),
                    });
                }
                _ => {}
            }
        }
    }

    /// Reads and discards what the server still owes for requests already
    /// sent (the client that made them is gone), until the connection is
    /// between requests. Callers bound it with a timeout: a server waiting
    /// for COPY data never gets there.
    pub async fn drain(&mut self) -> Result<(), BackendError> {
        while !self.tracker.is_idle() {
            while self.tracker.take_synthetic().is_some() {}
            if self.tracker.is_idle() {
                break;
            }
            let f = self.recv(usize::MAX >> 1).await?;
            self.tracker.on_message(f.tag());
            if f.tag() == be::READY_FOR_QUERY {
                self.tx =
                    backend::ready_status(f.body()).map_err(|source| BackendError::Protocol {
                        backend: self.backend.name.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Politely ends the server session; errors are irrelevant at this point.
    pub async fn terminate(mut self) {
        let mut out = BytesMut::with_capacity(5);
        encode::terminate(&mut out);
        let _ = self.stream.send(&out).await;
    }
}

/// Salted passwords by (password, salt, iterations). Deriving one blocks
/// the thread serving clients for a millisecond or more (PBKDF2, 4 096
/// rounds), and a role's salt stays the same on every server of a
/// replicated cluster until its password changes: so every pool that grows,
/// and every reconnection after a failover, would pay it again. Holding it
/// is no weaker than holding the password itself, which pgsplit does.
static SALTED: Mutex<Option<HashMap<SaltedKey, [u8; 32]>>> = Mutex::new(None);

/// (SHA-256 of the password after SASLprep, salt, iterations): the map
/// does not hold passwords, which may outlive a configuration change.
type SaltedKey = ([u8; 32], Vec<u8>, u32);

/// Bounds the map when passwords or salts keep changing.
const MAX_SALTED: usize = 256;

fn kept_salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let key: SaltedKey = (
        sha2::Sha256::digest(password).into(),
        salt.to_vec(),
        iterations,
    );
    if let Some(salted) = SALTED.lock().unwrap().get_or_insert_default().get(&key) {
        return *salted;
    }
    // Derived outside the lock: other logins go on meanwhile.
    let salted = salted_password(password, salt, iterations);
    let mut map = SALTED.lock().unwrap();
    let map = map.get_or_insert_default();
    if map.len() >= MAX_SALTED {
        map.clear();
    }
    map.insert(key, salted);
    salted
}
