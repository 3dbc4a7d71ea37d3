//! Checking a client's credentials against the configured users.

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use pgsplit_config::AuthMethod;
use pgsplit_protocol::auth::{md5_verify, ScramKeys, ScramSecret, ScramServer};
use pgsplit_protocol::frontend::{self, parse_password, parse_sasl_initial, FrontendMessage};
use pgsplit_protocol::{encode, Direction, Frame};
use sha2::{Digest, Sha256};

use super::socket::ClientStream;
use crate::backend::Credential;
use crate::errors::SessionError;
use crate::login::lookup::{Lookups, Stored};
use crate::login::{Login, UserAuth};

/// Password messages are small; a generous cap keeps a hostile client from
/// making the proxy buffer megabytes before it is even authenticated.
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// For a name pgsplit does not know: a SCRAM exchange against a secret
/// nothing matches, so the client gets the same 28P01 after the same steps
/// as for a wrong password and cannot probe which users exist. The error
/// (and so the log) says which it was.
pub async fn refuse_unknown(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    user_name: &str,
) -> SessionError {
    let unknown = || SessionError::UnknownUser(user_name.to_owned());
    match scram(stream, buf, mock_secret(user_name), unknown).await {
        Ok(_) => unknown(),
        Err(e) => e,
    }
}

/// Checks the client's credentials and returns what its session logs in
/// to servers with. AuthenticationOk is sent; nothing else is.
pub async fn authenticate(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    user_name: &str,
    user: &UserAuth,
    lookups: &Lookups,
) -> Result<Arc<Login>, SessionError> {
    let failed = || SessionError::AuthFailed(user_name.to_owned());
    let (mut out, proven) = if user.looked_up {
        let checked = check_looked_up(stream, buf, user_name, user.method, lookups).await;
        if checked.is_err() {
            lookups.forget(user_name);
        }
        checked?
    } else {
        match user.method {
            AuthMethod::Trust => (BytesMut::new(), Credential::None),
            AuthMethod::Md5 => {
                let source = user.md5_source.as_deref().ok_or_else(failed)?;
                md5(stream, buf, user_name, source, failed).await?;
                (BytesMut::new(), Credential::None)
            }
            AuthMethod::ScramSha256 => {
                let secret = user.scram.clone().ok_or_else(failed)?;
                (
                    scram(stream, buf, secret, failed).await?.0,
                    Credential::None,
                )
            }
        }
    };
    encode::auth_ok(&mut out);
    stream.send(&out).await?;
    Ok(user.login(user_name, proven))
}

/// Checks the client against the role's password as PostgreSQL stores it,
/// the way PostgreSQL would: a SCRAM verifier takes SCRAM whatever the
/// configured method (as `md5` in pg_hba.conf does), an md5 hash takes
/// md5 only. Returns the final SCRAM message, unsent, and what the client
/// proved.
async fn check_looked_up(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    user_name: &str,
    method: AuthMethod,
    lookups: &Lookups,
) -> Result<(BytesMut, Credential), SessionError> {
    let failed = || SessionError::AuthFailed(user_name.to_owned());
    let stored = lookups
        .get(user_name)
        .await
        .map_err(|e| SessionError::Lookup(user_name.to_owned(), e))?;
    match stored {
        Some(Stored::Scram(secret)) => {
            let (out, keys) = scram(stream, buf, secret, failed).await?;
            Ok((out, Credential::Scram(keys)))
        }
        Some(Stored::Md5(hash)) if method == AuthMethod::Md5 => {
            md5(stream, buf, user_name, &hash, failed).await?;
            Ok((BytesMut::new(), Credential::Md5Hash(hash)))
        }
        // An md5 hash cannot check SCRAM; no role, NOLOGIN or no password:
        // the same failure as a wrong password, after the same steps.
        _ => {
            let why = || SessionError::NoStoredPassword(user_name.to_owned());
            scram(stream, buf, mock_secret(user_name), why).await?;
            Err(why())
        }
    }
}

async fn md5(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    user_name: &str,
    source: &str,
    failed: impl Fn() -> SessionError,
) -> Result<(), SessionError> {
    let mut out = BytesMut::with_capacity(16);
    let salt: [u8; 4] = rand::random();
    encode::auth_md5(&mut out, salt);
    stream.send(&out).await?;
    let frame = password_frame(stream, buf).await?;
    let response = parse_password(password_body(&frame)?)?;
    if md5_verify(user_name, source, salt, response) {
        Ok(())
    } else {
        Err(failed())
    }
}

/// A SCRAM-SHA-256 exchange up to the server's final message, which is
/// returned unsent so that AuthenticationOk can go in the same write, with
/// the keys the client's proof revealed.
async fn scram(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    secret: Arc<ScramSecret>,
    failed: impl Fn() -> SessionError,
) -> Result<(BytesMut, ScramKeys), SessionError> {
    let mut out = BytesMut::with_capacity(256);
    let end_point = stream.end_point().map(<[u8]>::to_vec);
    let mut server = ScramServer::with_channel_binding(secret, end_point);
    encode::auth_sasl(&mut out, server.mechanisms());
    stream.send(&out).await?;
    out.clear();

    let frame = password_frame(stream, buf).await?;
    let (mechanism, data) = parse_sasl_initial(password_body(&frame)?)?;
    server.choose(mechanism).map_err(|_| failed())?;
    let server_first = server.client_first(data).map_err(|_| failed())?;
    encode::auth_sasl_continue(&mut out, &server_first);
    stream.send(&out).await?;
    out.clear();

    let frame = password_frame(stream, buf).await?;
    let server_final = server
        .client_final(password_body(&frame)?)
        .map_err(|_| failed())?;
    encode::auth_sasl_final(&mut out, &server_final);
    let keys = server.proven_keys().ok_or_else(failed)?;
    Ok((out, keys))
}

/// The same salt for every attempt with one name (a real user's does not
/// change either), different in every pgsplit process.
fn mock_secret(user_name: &str) -> Arc<ScramSecret> {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    let digest = Sha256::new()
        .chain_update(key)
        .chain_update(user_name.as_bytes())
        .finalize();
    let salt: [u8; 16] = digest[..16].try_into().expect("16 of 32 bytes");
    Arc::new(ScramSecret::mock(salt))
}

async fn password_frame(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<Frame, SessionError> {
    stream
        .read_frame(buf, Direction::Frontend, MAX_AUTH_MESSAGE)
        .await?
        .ok_or(SessionError::ClientTruncated)
}

fn password_body(frame: &Frame) -> Result<&[u8], SessionError> {
    match frontend::parse(frame)? {
        FrontendMessage::Password(body) => Ok(body),
        FrontendMessage::Terminate => Err(SessionError::ClientTruncated),
        _ => Err(SessionError::UnexpectedStartup("another message")),
    }
}
