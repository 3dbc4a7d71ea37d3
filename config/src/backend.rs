//! The PostgreSQL servers pgsplit routes to: `[[backends]]` tables.

use serde::{Deserialize, Serialize};

/// One PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Unique name used in logs, metrics and admin output. Required;
    /// letters, digits, `_` and `-` only.
    pub name: String,
    /// Host name or IP address of the server. Required.
    pub host: String,
    /// TCP port of the server, 1-65535. Default: 5432.
    #[serde(default = "default_port")]
    pub port: u16,
    /// What this server is expected to be: "primary" or "replica". Only a
    /// hint used until the first health check: the health loop asks each
    /// server (`pg_is_in_recovery()`) and follows failovers. At most one
    /// backend may carry the "primary" hint. Default: "replica".
    #[serde(default)]
    pub role: RoleHint,
    /// Share of load-balanced reads relative to the other replicas; 0 means
    /// the server never receives them (it still takes writes if it is the
    /// primary). Default: 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// TLS to this server ("disable" ... "verify-full"); default: the
    /// `[tls] server_tls` setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_tls: Option<crate::ServerTls>,
}

/// The role a backend is expected to have before the health loop has asked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleHint {
    /// Expected to accept writes.
    Primary,
    /// Expected to be a read-only standby.
    #[default]
    Replica,
}

fn default_port() -> u16 {
    5432
}

fn default_weight() -> u32 {
    1
}

impl Default for Backend {
    /// A replica on localhost:5432 with no name; set `name` before use.
    fn default() -> Self {
        Backend {
            name: String::new(),
            host: "localhost".into(),
            port: default_port(),
            role: RoleHint::default(),
            weight: default_weight(),
            server_tls: None,
        }
    }
}
