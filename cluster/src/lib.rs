//! A throwaway local PostgreSQL cluster — one primary and N streaming
//! replicas — built from the installed server binaries.
//!
//! pgsplit's integration tests and `pgsplit demo` need real servers: a proxy
//! that splits reads from writes can only be tested against replicas that
//! really refuse writes and really lag. [`Cluster::start`] runs `initdb`,
//! starts the primary, creates one role per authentication method
//! ([`TRUST_USER`], [`MD5_USER`], [`SCRAM_USER`]), clones each replica with
//! `pg_basebackup` and returns once every replica is streaming.
//!
//! Main types:
//! - [`Cluster`]: the running nodes; node 0 starts as the primary, `1..=n`
//!   as replicas. Stop, start, promote, delay replay, run SQL through
//!   `psql`, and rebuild the topology after a failover the way a manager
//!   would ([`Cluster::follow`], [`Cluster::rejoin_as_standby`]).
//! - [`ClusterOptions`]: replica count, superuser credentials, extra
//!   `postgresql.conf` settings.
//! - [`ClusterError`]: what failed, with the tail of the node's server log.
//!
//! The crate is deliberately synchronous and client-free: it drives
//! everything through `pg_ctl`, `pg_basebackup` and `psql` from the same
//! bindir, so it never links a PostgreSQL client that could mask a bug in the
//! proxy under test. When run as root, every server-side command runs as the
//! `postgres` OS user, because PostgreSQL refuses to run as root.
//!
//! Cleanup must survive a test binary that never drops its cluster (statics
//! are never dropped) or that gets killed: a detached watchdog stops the
//! servers and removes the base directory once this process is gone.
//! Never point it at data you care about — the base directory is deleted.

mod bindir;
mod cluster;
mod error;
mod exec;
mod ports;
mod setup;
mod sql;
mod topology;
mod watchdog;

pub use bindir::find_bindir;
pub use cluster::Cluster;
pub use error::ClusterError;

use std::path::PathBuf;

/// Role that logs in without a password (`trust` in `pg_hba.conf`).
pub const TRUST_USER: &str = "trustuser";
/// Role whose password is stored as an MD5 hash and checked with `md5`.
pub const MD5_USER: &str = "md5user";
/// Password of [`MD5_USER`].
pub const MD5_PASSWORD: &str = "md5pass";
/// Role whose password is stored as a SCRAM verifier (`scram-sha-256`).
pub const SCRAM_USER: &str = "scramuser";
/// Password of [`SCRAM_USER`].
pub const SCRAM_PASSWORD: &str = "scrampass";

/// How the cluster is built. Every field has a sensible default.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of streaming replicas (nodes `1..=replicas`). Default 2.
    pub replicas: usize,
    /// Bootstrap superuser created by `initdb`. Default `postgres`.
    pub superuser: String,
    /// Superuser password, stored as a SCRAM verifier. Default `postgres`.
    pub password: String,
    /// `postgresql.conf` settings appended on the primary after the harness's
    /// own; replicas inherit them through `pg_basebackup`. Values are plain
    /// (`("log_statement", "all")`) and quoted by the harness; a value that is
    /// already single-quoted is written as is.
    pub extra_conf: Vec<(String, String)>,
    /// TLS on every server with this certificate; replicas get it by
    /// `pg_basebackup`. Default: none (ssl off).
    pub tls: Option<ServerCert>,
    /// Every login over loopback is trusted, whatever the role (`host all
    /// all 127.0.0.1/32 trust` instead of the per-method rules), for clients
    /// that log in as roles they create without a password, such as
    /// PostgreSQL's own regression suite. Default: false.
    pub trust_all: bool,
}

/// A certificate and key for the servers, as PEM.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// Clients other than replication must use TLS (`hostssl` rules only).
    pub hostssl_only: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            replicas: 2,
            superuser: "postgres".to_owned(),
            password: "postgres".to_owned(),
            extra_conf: Vec::new(),
            tls: None,
            trust_all: false,
        }
    }
}

/// Where one node lives and listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// 0 for the primary, `1..=n` for replicas.
    pub index: usize,
    /// Always `127.0.0.1`: nodes listen on loopback TCP only.
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Server log (`pg_ctl -l`); error messages quote its tail.
    pub log_file: PathBuf,
}

/// `pg_ctl stop` shutdown mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Abort without a checkpoint, like a crash; restart runs crash recovery.
    Immediate,
    /// Disconnect clients and shut down cleanly.
    Fast,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Immediate => "immediate",
            StopMode::Fast => "fast",
        }
    }
}
