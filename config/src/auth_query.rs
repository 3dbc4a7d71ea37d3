//! Credentials looked up in PostgreSQL (`[auth_query]`): users configured
//! without a password, and the wildcard user entry.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::{PasswordKind, Secret};
use crate::{AuthMethod, Config, Problem};

/// The name of the `[[users]]` entry that stands for every role PostgreSQL
/// knows and no other entry names.
pub const WILDCARD_USER: &str = "*";

/// PgBouncer's default, and what a superuser (or a role with `SELECT` on
/// `pg_shadow`) can run.
const DEFAULT_QUERY: &str = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1";

/// The `[auth_query]` table: how pgsplit fetches a role's SCRAM verifier
/// or md5 hash from the primary, for users configured without a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthQuery {
    /// Role the lookups log in as. Setting it turns lookups on. It needs
    /// to read the credentials: a superuser, or (better) a role allowed to
    /// execute a SECURITY DEFINER function named in `query`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Plaintext password of `user`, if the servers ask it for one.
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Database the lookups connect to. Default: "postgres".
    pub database: String,
    /// Query with one parameter, `$1`, the role name, returning one row of
    /// two text columns: the name and its stored password (`rolpassword`:
    /// a SCRAM verifier or md5 hash), or no row / NULL when the role may not
    /// log in. Default: "SELECT usename, passwd FROM pg_shadow WHERE usename = $1".
    pub query: String,
    /// How long a looked-up credential is used before it is fetched again.
    /// A failed login drops it at once, so a changed password is picked up
    /// on the next attempt. "0s" looks up on every login. Default: "10s".
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

impl Default for AuthQuery {
    fn default() -> Self {
        AuthQuery {
            user: None,
            password: None,
            database: "postgres".into(),
            query: DEFAULT_QUERY.into(),
            cache_ttl: Duration::from_secs(10),
        }
    }
}

impl AuthQuery {
    /// Whether lookups are configured.
    pub fn enabled(&self) -> bool {
        self.user.is_some()
    }
}

pub(crate) fn check(config: &Config, out: &mut Vec<Problem>) {
    let a = &config.auth_query;
    if a.user.as_deref() == Some("") {
        out.push(Problem::new(
            "auth_query.user",
            "must not be empty; set the role lookups log in as, or remove the key",
        ));
    }
    if a.password.is_some() && a.user.is_none() {
        out.push(Problem::new(
            "auth_query.password",
            "is set without auth_query.user; set the user the lookups log in as",
        ));
    }
    if let Some(p) = &a.password {
        if p.kind() != PasswordKind::Plain || p.expose().is_empty() {
            out.push(Problem::new(
                "auth_query.password",
                "must be the plaintext password of auth_query.user (pgsplit logs in with it)",
            ));
        }
    }
    if !a.query.contains("$1") {
        out.push(Problem::new(
            "auth_query.query",
            "must take the role name as $1, e.g. \"SELECT usename, passwd FROM pg_shadow WHERE usename = $1\"",
        ));
    }
    if a.database.is_empty() {
        out.push(Problem::new(
            "auth_query.database",
            "must not be empty; remove it to use \"postgres\"",
        ));
    }
    for (i, u) in config.users.iter().enumerate() {
        if u.name == WILDCARD_USER {
            check_wildcard(u, i, a.enabled(), out);
        }
    }
}

/// The wildcard entry logs every role in as itself, with credentials
/// PostgreSQL holds: nothing in it may name one role's secrets or rights.
fn check_wildcard(u: &crate::User, i: usize, lookups: bool, out: &mut Vec<Problem>) {
    let key = |field: &str| format!("users[{i}].{field}");
    let fixed = [
        ("password", u.password.is_some()),
        ("server_user", u.server_user.is_some()),
        ("server_password", u.server_password.is_some()),
        ("admin", u.admin),
    ];
    for (field, set) in fixed {
        if set {
            out.push(Problem::new(
                key(field),
                "cannot be set on the wildcard entry (name = \"*\"), which logs each role in \
                 as itself with the credentials PostgreSQL holds; remove it, or add an entry \
                 for the role that needs it",
            ));
        }
    }
    if !lookups && u.auth != AuthMethod::Trust {
        out.push(Problem::new(
            key("name"),
            "the wildcard entry needs [auth_query] (set auth_query.user) to check passwords, \
             or auth = \"trust\"",
        ));
    }
}
