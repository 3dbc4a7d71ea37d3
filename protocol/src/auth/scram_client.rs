//! SCRAM-SHA-256 as the client, for logging in to backends, with the
//! salted password kept by the caller.
//!
//! The salted password is PBKDF2 over 4 096 (or more) HMAC rounds: about a
//! millisecond of CPU with SHA extensions and several without, during which
//! the thread serving clients does nothing else. It depends only on the
//! password, the role's salt and the iteration count, which a server keeps
//! until the password changes, so a proxy that opens many connections for
//! the same role derives it once ([`ScramClient::server_first`] takes the
//! derivation as a closure for that).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::scram::{attribute, ScramError, ScramKeys};

type HmacSha256 = Hmac<Sha256>;

/// No channel binding: `n,,` (base64 `biws`), as libpq sends without TLS.
const GS2_HEADER: &str = "n,,";

/// An iteration count above this is refused: a hostile server could
/// otherwise make a login burn many seconds of CPU. Hardened setups use
/// around 600 000 (PostgreSQL's `scram_iterations`); pgsplit derives the
/// key once per role, so such counts cost one pause, not one per login.
const MAX_ITERATIONS: u32 = 1_000_000;

enum State {
    First,
    Final {
        server_key: [u8; 32],
        auth_message: String,
    },
    Done,
}

/// What the client proves its identity with.
enum Credential {
    /// The password after SASLprep.
    Password(Vec<u8>),
    /// Keys recovered from another client's proof: valid only with the
    /// salt and iteration count they came with.
    Keys(ScramKeys),
}

/// One client-side SCRAM exchange.
pub struct ScramClient {
    nonce: String,
    credential: Credential,
    state: State,
}

impl ScramClient {
    pub fn new(password: &str) -> ScramClient {
        Self::with(Credential::Password(normalize(password)))
    }

    /// Logs in with the keys a client proved ([`super::ScramServer::proven_keys`])
    /// instead of a password.
    pub fn with_keys(keys: ScramKeys) -> ScramClient {
        Self::with(Credential::Keys(keys))
    }

    fn with(credential: Credential) -> ScramClient {
        let mut raw = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut raw);
        ScramClient {
            nonce: B64.encode(raw),
            credential,
            state: State::First,
        }
    }

    /// The client-first-message. The user name is left empty: PostgreSQL
    /// takes the startup packet's.
    pub fn client_first(&self) -> String {
        format!("{GS2_HEADER}n=,r={}", self.nonce)
    }

    /// Takes the server-first-message and returns the client-final-message.
    /// `salted(password, salt, iterations)` returns the salted password:
    /// [`salted_password`], or a copy kept from an earlier login.
    pub fn server_first(
        &mut self,
        data: &[u8],
        salted: impl FnOnce(&[u8], &[u8], u32) -> [u8; 32],
    ) -> Result<String, ScramError> {
        if !matches!(self.state, State::First) {
            return Err(ScramError::OutOfOrder);
        }
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let nonce = attribute(msg, 'r')?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Malformed("server nonce does not extend ours"));
        }
        let salt = B64
            .decode(attribute(msg, 's')?)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = attribute(msg, 'i')?
            .parse()
            .ok()
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or(ScramError::Malformed("iteration count out of range"))?;
        let (client_key, server_key) = match &self.credential {
            Credential::Password(password) => {
                let salted = salted(password, &salt, iterations);
                (hmac(&salted, b"Client Key"), hmac(&salted, b"Server Key"))
            }
            Credential::Keys(k) if k.salt == salt && k.iterations == iterations => {
                (k.client_key, k.server_key)
            }
            Credential::Keys(_) => return Err(ScramError::OtherVerifier),
        };
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c={},r={nonce}", B64.encode(GS2_HEADER));
        let auth_message = format!("n=,r={},{msg},{without_proof}", self.nonce);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        self.state = State::Final {
            server_key,
            auth_message,
        };
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final-message: the server proves it knew the
    /// password too.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), ScramError> {
        let State::Final {
            server_key,
            auth_message,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Ok(e) = attribute(msg, 'e') {
            return Err(ScramError::Server(e.to_owned()));
        }
        let verifier = B64
            .decode(attribute(msg, 'v')?)
            .map_err(|_| ScramError::Malformed("server signature is not base64"))?;
        let expected = hmac(&server_key, auth_message.as_bytes());
        if !super::constant_time_eq(&verifier, &expected) {
            return Err(ScramError::BadServerSignature);
        }
        Ok(())
    }
}

/// SCRAM's `Hi()`: PBKDF2-HMAC-SHA-256 with one output block. The keyed
/// HMAC state is built once and cloned per round, which halves the
/// compressions against keying it every round.
pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = HmacSha256::new_from_slice(password).expect("HMAC takes any key length");
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut round: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = round;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&round);
        round = mac.finalize().into_bytes().into();
        for (o, r) in out.iter_mut().zip(round) {
            *o ^= r;
        }
    }
    out
}

/// SASLprep, as libpq applies it; a password it rejects is used as given,
/// as PostgreSQL does when it stores one.
fn normalize(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(p) => p.into_owned().into_bytes(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::{ScramSecret, ScramServer};

    fn login(secret: &ScramSecret, password: &str) -> Result<(), ScramError> {
        let mut server = ScramServer::new(Arc::new(secret.clone()));
        let mut client = ScramClient::new(password);
        let server_first = server.client_first(client.client_first().as_bytes())?;
        let client_final = client.server_first(&server_first, salted_password)?;
        let server_final = server.client_final(client_final.as_bytes())?;
        client.server_final(&server_final)
    }

    #[test]
    fn logs_in_to_a_scram_server_with_the_right_password_only() {
        // rust-postgres made this verifier, as PostgreSQL stores them.
        let secret = ScramSecret::from_password("s3cret");
        assert_eq!(login(&secret, "s3cret"), Ok(()));
        assert_eq!(login(&secret, "wrong"), Err(ScramError::BadProof));
        // SASLprep maps a non-ASCII space to a plain one, on both sides.
        let secret = ScramSecret::from_password("pass word");
        assert_eq!(login(&secret, "pass\u{a0}word"), Ok(()));
    }

    #[test]
    fn the_salted_password_is_the_one_rust_postgres_derives() {
        let verifier = postgres_protocol::password::scram_sha_256(b"pw");
        let secret = ScramSecret::parse(&verifier).unwrap();
        let salted = salted_password(b"pw", secret.salt(), secret.iterations());
        let stored: [u8; 32] = Sha256::digest(hmac(&salted, b"Client Key")).into();
        assert_eq!(&stored, secret.stored_key());
    }

    #[test]
    fn a_kept_salted_password_is_used_instead_of_deriving_one() {
        let secret = ScramSecret::from_password("kept");
        let kept = salted_password(b"kept", secret.salt(), secret.iterations());
        let mut server = ScramServer::new(Arc::new(secret.clone()));
        let mut client = ScramClient::new("ignored: the kept key decides");
        let server_first = server
            .client_first(client.client_first().as_bytes())
            .unwrap();
        let client_final = client.server_first(&server_first, |_, _, _| kept).unwrap();
        let server_final = server.client_final(client_final.as_bytes()).unwrap();
        assert_eq!(client.server_final(&server_final), Ok(()));
    }

    /// A client logs in to a proxy-side server; the keys its proof
    /// reveals then log in to the real server, which holds the same
    /// verifier, and only to that one.
    #[test]
    fn proven_keys_log_in_where_the_verifier_is_the_same() {
        let secret = Arc::new(ScramSecret::from_password("pw"));
        let mut proxy = ScramServer::new(secret.clone());
        let mut client = ScramClient::new("pw");
        let first = proxy
            .client_first(client.client_first().as_bytes())
            .unwrap();
        assert!(proxy.proven_keys().is_none(), "nothing proven yet");
        let last = client.server_first(&first, salted_password).unwrap();
        let done = proxy.client_final(last.as_bytes()).unwrap();
        client.server_final(&done).unwrap();
        let keys = proxy.proven_keys().expect("the proof checked out");

        let server_login = |server_secret: &ScramSecret| {
            let mut server = ScramServer::new(Arc::new(server_secret.clone()));
            let mut proxy = ScramClient::with_keys(keys.clone());
            let first = server.client_first(proxy.client_first().as_bytes())?;
            let last = proxy.server_first(&first, |_, _, _| unreachable!("no password"))?;
            let done = server.client_final(last.as_bytes())?;
            proxy.server_final(&done)
        };
        assert_eq!(server_login(&secret), Ok(()));
        // The same password with another salt: another verifier.
        let other = ScramSecret::from_password("pw");
        assert_eq!(server_login(&other), Err(ScramError::OtherVerifier));
    }

    #[test]
    fn a_failed_proof_reveals_no_keys() {
        let secret = Arc::new(ScramSecret::from_password("pw"));
        let mut proxy = ScramServer::new(secret);
        let mut client = ScramClient::new("wrong");
        let first = proxy
            .client_first(client.client_first().as_bytes())
            .unwrap();
        let last = client.server_first(&first, salted_password).unwrap();
        assert_eq!(
            proxy.client_final(last.as_bytes()),
            Err(ScramError::BadProof)
        );
        assert!(proxy.proven_keys().is_none());
    }

    #[test]
    fn refuses_a_server_that_does_not_play_by_the_rules() {
        let mut c = ScramClient::new("x");
        let bad_nonce = "r=someone-else,s=c2FsdA==,i=4096";
        assert!(c
            .server_first(bad_nonce.as_bytes(), salted_password)
            .is_err());
        let mut c = ScramClient::new("x");
        let costly = format!("r={}more,s=c2FsdA==,i=10000000", c.nonce);
        assert!(c.server_first(costly.as_bytes(), salted_password).is_err());
        let mut c = ScramClient::new("x");
        let first = format!("r={}more,s=c2FsdA==,i=4096", c.nonce);
        c.server_first(first.as_bytes(), salted_password).unwrap();
        assert_eq!(
            c.server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(ScramError::BadServerSignature)
        );
        let mut c = ScramClient::new("x");
        assert_eq!(c.server_final(b"v=AAAA"), Err(ScramError::OutOfOrder));
    }
}
