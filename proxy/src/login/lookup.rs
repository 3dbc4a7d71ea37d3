//! `[auth_query]`: a role's stored password (SCRAM verifier or md5 hash)
//! fetched from PostgreSQL, so users need no password in pgsplit's config.
//!
//! One connection, as `auth_query.user`, to the primary (any standby when
//! there is none: the catalog is replicated, and clients can still log in
//! for reads during a failover) runs the prepared query. Results are kept
//! for `cache_ttl`; a failed login drops its role's entry, so a changed
//! password is fetched on the next attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgsplit_config::{Config, PasswordKind, Secret};
use pgsplit_protocol::auth::ScramSecret;
use tokio_postgres::{Client, Statement};

use crate::backend::negotiate::ClientError;
use crate::topology::{BackendId, Topology};

/// Bounds the cache when many role names are tried.
const MAX_CACHED: usize = 10_000;

/// A role's stored password, as it can check a client.
#[derive(Clone, Debug)]
pub enum Stored {
    Scram(Arc<ScramSecret>),
    /// `md5` + md5(password || role name).
    Md5(String),
}

/// Why no answer could be had.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No server to ask, or it did not answer: worth a retry.
    #[error("cannot reach a server to look the role up: {0}")]
    Unreachable(String),
    /// The server refused the lookup's login or query: a setup problem.
    #[error("the server refused the lookup: {0}")]
    Refused(String),
}

struct Cached {
    fetched: Instant,
    stored: Option<Stored>,
}

/// The lookup connection and its prepared query.
#[derive(Clone)]
struct Connected {
    backend: BackendId,
    client: Arc<Client>,
    query: Statement,
}

pub struct Lookups {
    config: Arc<Config>,
    topology: Arc<Topology>,
    cache: Mutex<HashMap<String, Cached>>,
    /// Held while connecting, so a burst of logins opens one connection.
    connected: tokio::sync::Mutex<Option<Connected>>,
}

impl Lookups {
    pub fn new(config: Arc<Config>, topology: Arc<Topology>) -> Lookups {
        Lookups {
            config,
            topology,
            cache: Mutex::default(),
            connected: tokio::sync::Mutex::new(None),
        }
    }

    /// What `role` logs in with, or `None` if it may not log in (no such
    /// role, NOLOGIN, no password, or one stored in a form that cannot
    /// check a client).
    pub async fn get(&self, role: &str) -> Result<Option<Stored>, LookupError> {
        let ttl = self.config.auth_query.cache_ttl;
        if let Some(c) = self.cache.lock().unwrap().get(role) {
            if c.fetched.elapsed() < ttl {
                return Ok(c.stored.clone());
            }
        }
        let stored = self.fetch(role).await?;
        if !ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap();
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, c| c.fetched.elapsed() < ttl);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            let fetched = Instant::now();
            let entry = Cached {
                fetched,
                stored: stored.clone(),
            };
            cache.insert(role.to_owned(), entry);
        }
        Ok(stored)
    }

    /// A login as `role` failed, with the client or a server: the next one
    /// asks PostgreSQL again (the password may have changed).
    pub fn forget(&self, role: &str) {
        self.cache.lock().unwrap().remove(role);
    }

    async fn fetch(&self, role: &str) -> Result<Option<Stored>, LookupError> {
        let limit = self.config.timeouts.connect.min(Duration::from_secs(5));
        let run = async {
            // A connection found closed (server restarted, failover) is
            // replaced once.
            for _ in 0..2 {
                let c = self.connection(limit).await?;
                match c.client.query_opt(&c.query, &[&role]).await {
                    Ok(row) => return Ok(row.and_then(|r| stored(role, &r))),
                    Err(e) if e.is_closed() => self.disconnect(&c).await,
                    Err(e) => return Err(LookupError::Refused(describe(&e))),
                }
            }
            Err(LookupError::Unreachable(
                "the connection kept closing".into(),
            ))
        };
        match tokio::time::timeout(limit, run).await {
            Ok(r) => r,
            Err(_) => Err(LookupError::Unreachable(format!(
                "no answer within {limit:?}"
            ))),
        }
    }

    /// The lookup connection to the server to ask now, opened if needed.
    async fn connection(&self, limit: Duration) -> Result<Connected, LookupError> {
        let target = self.target()?;
        let mut held = self.connected.lock().await;
        if let Some(c) = held.as_ref() {
            if c.backend == target && !c.client.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = self.connect(target, limit).await?;
        *held = Some(c.clone());
        Ok(c)
    }

    async fn disconnect(&self, c: &Connected) {
        let mut held = self.connected.lock().await;
        if held
            .as_ref()
            .is_some_and(|h| Arc::ptr_eq(&h.client, &c.client))
        {
            *held = None;
        }
    }

    /// The primary, else any usable standby.
    fn target(&self) -> Result<BackendId, LookupError> {
        let t = &self.topology;
        t.primary()
            .or_else(|| {
                t.backends
                    .iter()
                    .find(|b| b.node.serves_as_standby() && t.is_usable(b.id))
                    .map(|b| b.id)
            })
            .ok_or_else(|| LookupError::Unreachable("no server is up".into()))
    }

    async fn connect(&self, backend: BackendId, limit: Duration) -> Result<Connected, LookupError> {
        let a = &self.config.auth_query;
        let mut config = tokio_postgres::Config::new();
        config
            .user(a.user.as_deref().unwrap_or_default())
            .dbname(&a.database)
            .application_name("pgsplit auth_query");
        if let Some(p) = &a.password {
            config.password(p.expose());
        }
        let addr = &self.topology.backends[backend].addr;
        let timeouts = &self.config.timeouts;
        let client = crate::backend::negotiate::postgres_client(addr, &config, limit, timeouts)
            .await
            .map_err(|e| match e {
                // The server answered: a wrong password, a missing database.
                ClientError::Postgres(e) if e.as_db_error().is_some() => {
                    LookupError::Refused(describe(&e))
                }
                e => LookupError::Unreachable(e.to_string()),
            })?;
        let query = client
            .prepare(&a.query)
            .await
            .map_err(|e| LookupError::Refused(describe(&e)))?;
        if query.columns().len() != 2 {
            return Err(LookupError::Refused(format!(
                "auth_query.query returns {} columns; it must return two: the role name and its password",
                query.columns().len()
            )));
        }
        Ok(Connected {
            backend,
            client: Arc::new(client),
            query,
        })
    }
}

/// The password column as a credential pgsplit can check a client with.
fn stored(role: &str, row: &tokio_postgres::Row) -> Option<Stored> {
    let password: Option<String> = match row.try_get(1) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(role, error = %e, "auth_query.query's second column is not text");
            return None;
        }
    };
    let secret = Secret::new(password?);
    match secret.kind() {
        PasswordKind::ScramVerifier => match ScramSecret::parse(secret.expose()) {
            Some(s) => Some(Stored::Scram(Arc::new(s))),
            None => {
                tracing::warn!(
                    role,
                    "the role's SCRAM verifier is malformed; refusing its logins"
                );
                None
            }
        },
        PasswordKind::Md5Hash => Some(Stored::Md5(secret.expose().to_owned())),
        PasswordKind::Plain => {
            tracing::warn!(role, "the role's password is stored in plaintext, which auth_query does not use; refusing its logins");
            None
        }
    }
}

/// The server's own message, not tokio-postgres' "db error".
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
