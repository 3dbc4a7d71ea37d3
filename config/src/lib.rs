//! Typed, strict, validated configuration for pgsplit.
//!
//! A [`Config`] is built from three layers, each overriding the one before:
//!
//! 1. built-in defaults ([`Config::default`]),
//! 2. an optional TOML file,
//! 3. `PGSPLIT_*` environment variables, with `__` between nested keys:
//!    `PGSPLIT_LISTEN=127.0.0.1:6432`,
//!    `PGSPLIT_LIMITS__MAX_CLIENT_CONNECTIONS=500`,
//!    `PGSPLIT_TIMEOUTS__CONNECT=2s`. `PGSPLIT_CONFIG` and `PGSPLIT_LOG` are
//!    left to the binary (config path, log filter) and never read here.
//!
//! Unknown keys are errors, not warnings: a misspelt timeout silently left at
//! its default is worse than a refusal to start. After extraction,
//! [`Config::validate`] runs the cross-field rules and reports every problem
//! at once as a [`ConfigError`], one line per [`Problem`], each naming the
//! key, what is wrong and what would fix it.
//!
//! Main types: [`Config`] (root), [`Limits`], [`Timeouts`], [`Backend`] with
//! its [`RoleHint`], [`User`] with its [`AuthMethod`], and [`Secret`], a
//! password that never appears in `Debug`/`Display` output.
//!
//! This crate only describes configuration: it opens no sockets, keeps no
//! global state and never logs. The proxy loads a `Config`, then hands
//! snapshots (e.g. behind an `ArcSwap`) to whoever needs them, so reloads and
//! tests never share hidden state.

mod auth_query;
mod backend;
mod error;
mod health;
mod limits;
mod load;
mod pool;
mod routing;
mod secret;
mod tls;
mod user;
mod validate;

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use serde::{Deserialize, Serialize};

pub use auth_query::{AuthQuery, WILDCARD_USER};
pub use backend::{Backend, RoleHint};
pub use error::{ConfigError, Problem};
pub use health::Health;
pub use limits::{Limits, Timeouts};
pub use pool::{Pool, PoolMode};
pub use routing::{PrimaryReads, ReadYourWrites, Routing, Strategy};
pub use secret::{PasswordKind, Secret};
pub use tls::{ClientTls, ServerTls, Tls};
pub use user::{AuthMethod, User};

/// Everything pgsplit needs to run. Fields are public so a `Config` can also
/// be built in code; call [`Config::validate`] on one built that way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address clients connect to, as IP:port (`"[::]:5432"` for IPv6); host
    /// names are not resolved. Default: "0.0.0.0:5432".
    pub listen: String,
    /// Where Prometheus scrapes `GET /metrics` (IP:port), e.g.
    /// "127.0.0.1:9187". Default: none (no metrics listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Threads serving clients; 0 (default) picks half the CPUs, at least
    /// one. One thread spends the least CPU per query (no hand-offs between
    /// threads) and serves tens of thousands of queries a second; add
    /// threads when `pgsplit` alone keeps a core busy.
    pub worker_threads: usize,
    /// How log lines are written to stderr: "text" (default; coloured on
    /// a terminal only) or "json" (one object per line, for a collector).
    pub log_format: LogFormat,
    /// Message size and connection count bounds (`[limits]`).
    pub limits: Limits,
    /// Network and peer timeouts (`[timeouts]`).
    pub timeouts: Timeouts,
    /// Read/write splitting and load balancing (`[routing]`).
    pub routing: Routing,
    /// Server connection pooling (`[pool]`).
    pub pool: Pool,
    /// Health checks, role discovery and failover (`[health]`).
    pub health: Health,
    /// TLS certificates and modes (`[tls]`).
    pub tls: Tls,
    /// Credentials looked up in PostgreSQL for users without a password
    /// (`[auth_query]`).
    pub auth_query: AuthQuery,
    /// PostgreSQL servers, one `[[backends]]` table each. At least one is
    /// required.
    pub backends: Vec<Backend>,
    /// Roles clients may log in as, one `[[users]]` table each. At least one
    /// is required.
    pub users: Vec<User>,
}

impl Default for Config {
    /// Defaults for every optional setting; no backends and no users, so it
    /// does not validate until those are added.
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:5432".into(),
            metrics_listen: None,
            worker_threads: 0,
            log_format: LogFormat::Text,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            routing: Routing::default(),
            pool: Pool::default(),
            health: Health::default(),
            tls: Tls::default(),
            auth_query: AuthQuery::default(),
            backends: Vec::new(),
            users: Vec::new(),
        }
    }
}

impl Config {
    /// Reads defaults, then the TOML file at `path` (if given; it must
    /// exist), then `PGSPLIT_*` env vars, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::from_figment(Self::figment(path))
    }

    /// Defaults, the file at `path` and `PGSPLIT_*` variables, not yet
    /// validated, and whether they set `listen`: a base for a caller that
    /// fills in the rest (`pgsplit demo` adds its own backends and users)
    /// and then calls [`Config::validate`].
    pub fn load_base(path: Option<&Path>) -> Result<(Config, bool), ConfigError> {
        let config = load::extract(&Self::figment(path))?;
        Ok((config, load::sets(path, "listen")))
    }

    /// The layered provider used by [`Config::load`], exposed so callers can
    /// add layers (e.g. command-line overrides) before extracting.
    pub fn figment(path: Option<&Path>) -> Figment {
        load::figment(path)
    }

    /// Extracts a `Config` from any figment and validates it.
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config = load::extract(&figment)?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks. Reports every problem found, not only the first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = validate::check(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The parsed `listen` address.
    ///
    /// # Panics
    /// If `listen` is not a valid socket address, which [`Config::validate`]
    /// rules out: call this only on a validated config.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .parse()
            .expect("Config::listen_addr called on a config that failed validate()")
    }

    /// The number of client-serving threads `worker_threads` stands for.
    pub fn threads(&self) -> usize {
        match self.worker_threads {
            0 => default_threads(),
            n => n,
        }
    }

    /// The user entry clients log in as `name`, if configured: its own,
    /// else the wildcard entry (`name = "*"`).
    pub fn user(&self, name: &str) -> Option<&User> {
        let named = self.users.iter().find(|u| u.name == name);
        named.or_else(|| self.users.iter().find(|u| u.name == WILDCARD_USER))
    }

    /// The effective configuration as TOML with every password replaced by
    /// "********": safe to log or show in an admin console.
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        for p in [
            &mut masked.health.health_check_password,
            &mut masked.auth_query.password,
        ]
        .into_iter()
        .flatten()
        {
            *p = Secret::new(secret::MASK);
        }
        for user in &mut masked.users {
            for secret in [&mut user.password, &mut user.server_password]
                .into_iter()
                .flatten()
            {
                *secret = Secret::new(secret::MASK);
            }
        }
        // Only sizes beyond i64::MAX fail to serialize (TOML integers are
        // i64), and validate() rejects those; still never panic over a dump.
        toml::to_string_pretty(&masked)
            .unwrap_or_else(|e| format!("# configuration cannot be shown as TOML: {e}\n"))
    }
}

impl Config {
    /// Every setting as (dotted key, value), passwords masked, in key
    /// order: `pool.pool_size`, `backends[0].host`, ... (`SHOW CONFIG`).
    pub fn flat_settings(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Ok(toml::Value::Table(t)) = toml::from_str::<toml::Value>(&self.to_masked_toml()) {
            flatten("", &toml::Value::Table(t), &mut out);
        }
        out.sort();
        out
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::Array(items)
            if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
        {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// How pgsplit writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Half the CPUs, at least one: the proxy usually shares its machine with
/// clients or servers, and fewer threads hand work over less.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}
