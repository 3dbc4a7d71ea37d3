//! What pgsplit logs in to servers with, for one server user.

use pgsplit_protocol::auth::{ScramClient, ScramKeys};

/// A server login's proof of identity.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credential {
    /// Nothing: the servers must let the role in without a password.
    #[default]
    None,
    /// A plaintext password from the configuration: answers every method.
    Password(String),
    /// The role's stored md5 hash, looked up with `[auth_query]`: answers an
    /// md5 challenge only.
    Md5Hash(String),
    /// Keys a client proved with SCRAM against the role's verifier, looked
    /// up with `[auth_query]`: answer SCRAM-SHA-256 on servers holding that
    /// verifier, no other method.
    Scram(ScramKeys),
}

impl Credential {
    /// The answer to a cleartext password request.
    pub fn cleartext(&self) -> Option<&str> {
        match self {
            Credential::Password(p) => Some(p),
            _ => None,
        }
    }

    /// What an md5 response is computed from: the password or its hash.
    pub fn md5_source(&self) -> Option<&str> {
        match self {
            Credential::Password(p) | Credential::Md5Hash(p) => Some(p),
            _ => None,
        }
    }

    /// A SCRAM-SHA-256 exchange as this login.
    pub fn scram_client(&self) -> Option<ScramClient> {
        match self {
            Credential::Password(p) => Some(ScramClient::new(p)),
            Credential::Scram(keys) => Some(ScramClient::with_keys(keys.clone())),
            _ => None,
        }
    }

    /// What this can answer, for an error about a method it cannot.
    pub fn limits(&self) -> &'static str {
        match self {
            Credential::None => "no password is configured for this user",
            Credential::Md5Hash(_) => {
                "only the role's md5 hash is known (from [auth_query]), which answers md5 only"
            }
            Credential::Scram(_) => {
                "only the client's SCRAM keys are known (from [auth_query]), which answer scram-sha-256 only"
            }
            Credential::Password(_) => "the password answers every method",
        }
    }
}

/// How a server asks a login to prove itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Method {
    Cleartext,
    Md5,
    Scram,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::None => "Credential::None",
            Credential::Password(_) => "Credential::Password(********)",
            Credential::Md5Hash(_) => "Credential::Md5Hash(********)",
            Credential::Scram(_) => "Credential::Scram(********)",
        })
    }
}
