//! SCRAM-SHA-256 (RFC 5802/7677) as the server, the way PostgreSQL does it:
//! the user name inside the exchange is ignored (the startup packet's wins).
//! On TLS connections SCRAM-SHA-256-PLUS is offered too, with channel
//! binding `tls-server-end-point` (the hash of the server's certificate):
//! a client that binds proves it talks to the holder of that certificate,
//! not to someone relaying the TLS session.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use thiserror::Error;

pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The only channel binding type PostgreSQL (and pgsplit) supports.
const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding negotiation failed")]
    ChannelBinding,
    #[error("password authentication failed")]
    BadProof,
    #[error("SCRAM message out of order")]
    OutOfOrder,
    #[error("the server's signature does not match: it does not know the password")]
    BadServerSignature,
    #[error("the server ended the exchange: {0}")]
    Server(String),
    #[error("the server keeps another verifier for this role (another salt or iteration count) than the one the client proved its password against: the password differs on this server, or was just changed")]
    OtherVerifier,
}

/// What a server must know to check a SCRAM login: never the password itself.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramSecret(********)")
    }
}

impl ScramSecret {
    /// Parses PostgreSQL's stored form:
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(verifier: &str) -> Option<ScramSecret> {
        let rest = verifier.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(ScramSecret {
            iterations: iterations.parse().ok().filter(|&i| i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn stored_key(&self) -> &[u8; 32] {
        &self.stored_key
    }

    /// A secret no password matches, for a user that does not exist: the
    /// exchange runs to its end and fails as a wrong password does, so a
    /// client cannot tell the two apart. The caller picks a salt that is
    /// the same for every attempt with one name, as a real user's is.
    pub fn mock(salt: [u8; 16]) -> ScramSecret {
        let mut keys = [0u8; 64];
        rand::thread_rng().fill_bytes(&mut keys);
        ScramSecret {
            iterations: 4096,
            salt: salt.to_vec(),
            stored_key: keys[..32].try_into().expect("32 bytes"),
            server_key: keys[32..].try_into().expect("32 bytes"),
        }
    }

    /// Derives a secret from a plaintext password with a fresh random salt.
    /// Costly on purpose (PBKDF2): do it once per user at startup, not per login.
    pub fn from_password(password: &str) -> ScramSecret {
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        ScramSecret::parse(&verifier).expect("postgres-protocol produced a valid verifier")
    }
}

/// What a client's valid proof reveals: its ClientKey (proof XOR
/// ClientSignature), with the verifier's salt, iteration count and
/// ServerKey. It logs in to any server holding the same verifier, as the
/// client would, without the password; streaming replicas share the
/// primary's catalog and so its verifiers.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub(super) iterations: u32,
    pub(super) salt: Vec<u8>,
    pub(super) client_key: [u8; 32],
    pub(super) server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeys(********)")
    }
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal {
        client_first_bare: String,
        server_first: String,
        /// What the client-final's `c=` must carry: the gs2 header, then
        /// the channel binding data if the client binds.
        binding: Vec<u8>,
        nonce: String,
    },
    Done,
}

/// One server-side SCRAM exchange.
pub struct ScramServer {
    secret: Arc<ScramSecret>,
    state: State,
    /// `tls-server-end-point` data when the connection offers binding.
    end_point: Option<Vec<u8>>,
    plus: bool,
    /// The client's ClientKey, once its proof checked out.
    proven: Option<[u8; 32]>,
}

impl ScramServer {
    pub fn new(secret: Arc<ScramSecret>) -> ScramServer {
        ScramServer::with_channel_binding(secret, None)
    }

    /// An exchange on a TLS connection whose certificate gives `end_point`
    /// (see [`super::tls_server_end_point`]): SCRAM-SHA-256-PLUS is offered.
    pub fn with_channel_binding(
        secret: Arc<ScramSecret>,
        end_point: Option<Vec<u8>>,
    ) -> ScramServer {
        ScramServer {
            secret,
            state: State::AwaitingClientFirst,
            end_point,
            plus: false,
            proven: None,
        }
    }

    /// The mechanisms to offer, preferred first.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        if self.end_point.is_some() {
            &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        } else {
            &[SCRAM_SHA_256]
        }
    }

    /// The mechanism the client chose (its SASLInitialResponse), before
    /// [`ScramServer::client_first`].
    pub fn choose(&mut self, mechanism: &str) -> Result<(), ScramError> {
        if !self.mechanisms().contains(&mechanism) {
            return Err(ScramError::Malformed("mechanism not offered"));
        }
        self.plus = mechanism == SCRAM_SHA_256_PLUS;
        Ok(())
    }

    /// Takes the client-first-message, returns the server-first-message.
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::AwaitingClientFirst) {
            return Err(ScramError::OutOfOrder);
        }
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (gs2_header, client_first_bare) = split_gs2(msg)?;
        let binding = self.binding_for(gs2_header)?;
        let client_nonce = attribute(client_first_bare, 'r')?;
        let mut raw = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut raw);
        let nonce = format!("{client_nonce}{}", B64.encode(raw));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.secret.salt),
            self.secret.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal {
            client_first_bare: client_first_bare.to_owned(),
            server_first,
            binding,
            nonce,
        };
        Ok(reply)
    }

    /// Checks the client's channel binding flag against what was offered
    /// and chosen, as PostgreSQL does; returns what `c=` must decode to.
    fn binding_for(&self, gs2_header: &str) -> Result<Vec<u8>, ScramError> {
        let mut binding = gs2_header.as_bytes().to_vec();
        match gs2_header.as_bytes()[0] {
            b'p' => {
                let name = gs2_header[..gs2_header.find(',').unwrap_or(0)].strip_prefix("p=");
                match (&self.end_point, self.plus, name) {
                    (Some(data), true, Some(TLS_SERVER_END_POINT)) => {
                        binding.extend_from_slice(data)
                    }
                    _ => return Err(ScramError::ChannelBinding),
                }
            }
            // "Binds, but thinks the server cannot": a downgrade when
            // PLUS was offered.
            b'y' if self.end_point.is_some() => return Err(ScramError::ChannelBinding),
            // PLUS chosen without binding.
            _ if self.plus => return Err(ScramError::ChannelBinding),
            _ => {}
        }
        Ok(binding)
    }

    /// Takes the client-final-message; on a valid proof returns the
    /// server-final-message (which proves the server knew the secret too).
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::AwaitingClientFinal {
            client_first_bare,
            server_first,
            binding: expected,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof_b64) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let binding = attribute(without_proof, 'c')?;
        if B64.decode(binding).ok().as_deref() != Some(&expected[..]) {
            return Err(ScramError::Malformed("channel binding data does not match"));
        }
        if attribute(without_proof, 'r')? != nonce {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof: [u8; 32] = B64
            .decode(proof_b64)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed(
                "proof is not 32 base64-encoded bytes",
            ))?;

        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&self.secret.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ client_signature[i];
        }
        let derived: [u8; 32] = Sha256::digest(client_key).into();
        if !super::constant_time_eq(&derived, &self.secret.stored_key) {
            return Err(ScramError::BadProof);
        }
        self.proven = Some(client_key);
        let server_signature = hmac(&self.secret.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }

    /// After [`ScramServer::client_final`] accepted the proof: the keys
    /// that log in to servers as this client.
    pub fn proven_keys(&self) -> Option<ScramKeys> {
        self.proven.map(|client_key| ScramKeys {
            iterations: self.secret.iterations,
            salt: self.secret.salt.clone(),
            client_key,
            server_key: self.secret.server_key,
        })
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Splits `gs2-header` (`n,,` / `y,,` / `p=tls-server-end-point,,` /
/// `n,a=authzid,`) from the bare message.
fn split_gs2(msg: &str) -> Result<(&str, &str), ScramError> {
    let flag = msg
        .as_bytes()
        .first()
        .ok_or(ScramError::Malformed("empty"))?;
    if !matches!(flag, b'n' | b'y' | b'p') {
        return Err(ScramError::Malformed("bad channel binding flag"));
    }
    let first = msg
        .find(',')
        .ok_or(ScramError::Malformed("no gs2 header"))?;
    let second = msg[first + 1..]
        .find(',')
        .map(|i| i + first + 1)
        .ok_or(ScramError::Malformed("no gs2 header"))?;
    Ok((&msg[..=second], &msg[second + 1..]))
}

pub(super) fn attribute(msg: &str, name: char) -> Result<&str, ScramError> {
    msg.split(',')
        .find_map(|part| part.strip_prefix(name).and_then(|p| p.strip_prefix('=')))
        .ok_or(ScramError::Malformed("missing attribute"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256 as ScramClient};

    fn login(secret: &ScramSecret, password: &str) -> Result<(), ScramError> {
        let mut server = ScramServer::new(Arc::new(secret.clone()));
        let mut client = ScramClient::new(password.as_bytes(), ChannelBinding::unsupported());
        let server_first = server.client_first(client.message())?;
        client
            .update(&server_first)
            .expect("client accepts server-first");
        let server_final = server.client_final(client.message())?;
        client
            .finish(&server_final)
            .expect("client verifies the server signature");
        Ok(())
    }

    #[test]
    fn real_client_logs_in_with_the_right_password_only() {
        let secret = ScramSecret::from_password("s3cret");
        assert_eq!(login(&secret, "s3cret"), Ok(()));
        assert_eq!(login(&secret, "wrong"), Err(ScramError::BadProof));
    }

    #[test]
    fn parses_a_verifier_made_by_postgresql() {
        // SET password_encryption = 'scram-sha-256'; CREATE ROLE .. PASSWORD 'pw';
        let v = postgres_protocol::password::scram_sha_256(b"pw");
        let secret = ScramSecret::parse(&v).unwrap();
        assert_eq!(secret.iterations, 4096);
        assert_eq!(login(&secret, "pw"), Ok(()));
    }

    #[test]
    fn rejects_malformed_verifiers() {
        for v in [
            "",
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB",
            "SCRAM-SHA-256$0:c2FsdA==$",
            "md5abc",
        ] {
            assert!(ScramSecret::parse(v).is_none(), "{v:?} accepted");
        }
    }

    #[test]
    fn refuses_channel_binding_and_garbage() {
        let secret = Arc::new(ScramSecret::from_password("x"));
        let mut s = ScramServer::new(secret.clone());
        assert_eq!(
            s.client_first(b"p=tls-server-end-point,,n=,r=abc"),
            Err(ScramError::ChannelBinding)
        );
        let mut s = ScramServer::new(secret.clone());
        assert!(s.client_first(b"n,,n=").is_err());
        let mut s = ScramServer::new(secret.clone());
        assert!(
            s.client_final(b"c=biws,r=x,p=AAAA").is_err(),
            "final before first"
        );
        let mut s = ScramServer::new(secret);
        s.client_first(b"n,,n=,r=abc").unwrap();
        assert!(matches!(
            s.client_final(b"c=biws,r=WRONGNONCE,p=AAAA"),
            Err(ScramError::Malformed(_))
        ));
    }

    /// A login by SCRAM-SHA-256-PLUS; the client binds to `client_sees`,
    /// the server to `server_has`.
    fn login_plus(server_has: &[u8], client_sees: &[u8]) -> Result<(), ScramError> {
        let secret = Arc::new(ScramSecret::from_password("pw"));
        let mut server = ScramServer::with_channel_binding(secret, Some(server_has.to_vec()));
        assert_eq!(server.mechanisms(), [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
        server.choose(SCRAM_SHA_256_PLUS)?;
        let binding = ChannelBinding::tls_server_end_point(client_sees.to_vec());
        let mut client = ScramClient::new(b"pw", binding);
        let server_first = server.client_first(client.message())?;
        client.update(&server_first).expect("server-first");
        let server_final = server.client_final(client.message())?;
        client.finish(&server_final).expect("server signature");
        Ok(())
    }

    #[test]
    fn channel_binding_to_the_same_certificate_only() {
        assert_eq!(login_plus(b"cert hash", b"cert hash"), Ok(()));
        assert_eq!(
            login_plus(b"cert hash", b"another certificate"),
            Err(ScramError::Malformed("channel binding data does not match"))
        );
    }

    #[test]
    fn binding_flags_must_match_what_was_offered_and_chosen() {
        let secret = Arc::new(ScramSecret::from_password("x"));
        let offered = || ScramServer::with_channel_binding(secret.clone(), Some(vec![1; 32]));
        // The client binds but believes the server cannot: a downgrade.
        let mut s = offered();
        s.choose(SCRAM_SHA_256).unwrap();
        assert_eq!(
            s.client_first(b"y,,n=,r=abc"),
            Err(ScramError::ChannelBinding)
        );
        // PLUS chosen, then no binding.
        let mut s = offered();
        s.choose(SCRAM_SHA_256_PLUS).unwrap();
        assert_eq!(
            s.client_first(b"n,,n=,r=abc"),
            Err(ScramError::ChannelBinding)
        );
        // A binding type other than tls-server-end-point.
        let mut s = offered();
        s.choose(SCRAM_SHA_256_PLUS).unwrap();
        assert_eq!(
            s.client_first(b"p=tls-unique,,n=,r=abc"),
            Err(ScramError::ChannelBinding)
        );
        // Plain SCRAM on a TLS connection is fine.
        let mut s = offered();
        s.choose(SCRAM_SHA_256).unwrap();
        assert!(s.client_first(b"n,,n=,r=abc").is_ok());
        // PLUS is not offered without TLS.
        let mut s = ScramServer::new(secret.clone());
        assert!(s.choose(SCRAM_SHA_256_PLUS).is_err());
        assert_eq!(s.mechanisms(), [SCRAM_SHA_256]);
    }

    #[test]
    fn debug_never_shows_key_material() {
        assert_eq!(
            format!("{:?}", ScramSecret::from_password("x")),
            "ScramSecret(********)"
        );
    }
}
