//! Who may connect through pgsplit and how pgsplit logs in on their behalf:
//! `[[users]]` tables.

use serde::{Deserialize, Serialize};

use crate::secret::{PasswordKind, Secret};

/// A role clients log in as. pgsplit authenticates the client itself, then
/// opens backend connections as `server_user` with `server_password`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User name clients send in their startup message. Required, unique.
    /// `"*"` is the wildcard entry: any role without an entry of its own
    /// logs in as itself, checked with `[auth_query]`.
    pub name: String,
    /// What clients are checked against: a plaintext password, a SCRAM
    /// verifier copied from `pg_authid.rolpassword`
    /// (`SCRAM-SHA-256$<iter>:<salt>$<storedkey>:<serverkey>`), or an md5
    /// hash ("md5" + 32 lowercase hex digits, i.e. md5(password || name)).
    /// Required unless `auth` is "trust" or `[auth_query]` is set up, in
    /// which case a user without one is checked against the password
    /// PostgreSQL stores for the role, and pgsplit logs in to the backends
    /// with what the client proved. A verifier or hash cannot log in to a
    /// backend, so it needs `server_password` next to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// How clients authenticate to pgsplit: "scram-sha-256" (needs a
    /// plaintext password or SCRAM verifier), "md5" (needs a plaintext
    /// password or md5 hash) or "trust" (no check: only for trusted networks).
    /// Default: "scram-sha-256".
    #[serde(default)]
    pub auth: AuthMethod,
    /// Role pgsplit uses on the backends. Default: same as `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_user: Option<String>,
    /// Plaintext password pgsplit sends to the backends. Default: `password`
    /// when that is plaintext; otherwise none, and the backends must then let
    /// `server_user` in without one (trust).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_password: Option<Secret>,
    /// This user's read-your-writes mode, overriding
    /// `routing.read_your_writes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_your_writes: Option<crate::ReadYourWrites>,
    /// May run pgsplit's admin commands (`PGSPLIT DETACH/ATTACH/PROMOTE`).
    /// Everyone may read `SHOW pool_nodes`. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// How a client proves its identity to pgsplit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (RFC 7677), PostgreSQL's default since version 14.
    // kebab-case alone would spell it "scram-sha256".
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// Legacy salted md5 challenge.
    Md5,
    /// No authentication at all.
    Trust,
}

impl User {
    /// Role to log in as on the backends.
    pub fn server_user(&self) -> &str {
        self.server_user.as_deref().unwrap_or(&self.name)
    }

    /// Password to send to the backends: `server_password`, else `password`
    /// if it is plaintext, else `None` (the backend must not ask for one).
    pub fn server_password(&self) -> Option<&str> {
        if let Some(explicit) = &self.server_password {
            return Some(explicit.expose());
        }
        self.password
            .as_ref()
            .filter(|p| p.kind() == PasswordKind::Plain)
            .map(Secret::expose)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "md5d41d8cd98f00b204e9800998ecf8427e";

    fn user(password: Option<&str>, server_password: Option<&str>) -> User {
        User {
            name: "app".into(),
            password: password.map(Secret::new),
            server_password: server_password.map(Secret::new),
            ..User::default()
        }
    }

    #[test]
    fn server_user_defaults_to_name() {
        let mut u = user(None, None);
        assert_eq!(u.server_user(), "app");
        u.server_user = Some("app_rw".into());
        assert_eq!(u.server_user(), "app_rw");
    }

    #[test]
    fn server_password_derivation() {
        assert_eq!(user(Some("pw"), None).server_password(), Some("pw"));
        assert_eq!(
            user(Some("pw"), Some("other")).server_password(),
            Some("other")
        );
        assert_eq!(user(Some(MD5), None).server_password(), None);
        assert_eq!(
            user(Some(MD5), Some("real")).server_password(),
            Some("real")
        );
        assert_eq!(
            user(Some("SCRAM-SHA-256$1:c2FsdA==$a:b"), None).server_password(),
            None
        );
        assert_eq!(user(None, None).server_password(), None);
        assert_eq!(user(None, Some("only")).server_password(), Some("only"));
    }
}
