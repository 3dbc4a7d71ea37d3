//! Checking a client's credentials against the configured users.

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use pgsplit_config::AuthMethod;
use pgsplit_protocol::auth::{md5_verify, ScramSecret, ScramServer};
use pgsplit_protocol::frontend::{self, parse_password, parse_sasl_initial, FrontendMessage};
use pgsplit_protocol::{encode, Direction, Frame};
use sha2::{Digest, Sha256};

use super::socket::ClientStream;
use crate::errors::SessionError;
use crate::shared::UserAuth;

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

pub async fn authenticate(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    user_name: &str,
    user: &UserAuth,
) -> Result<(), SessionError> {
    let mut out = BytesMut::with_capacity(256);
    let failed = || SessionError::AuthFailed(user_name.to_owned());
    match user.method {
        AuthMethod::Trust => {}
        AuthMethod::Md5 => {
            let source = user.md5_source.as_deref().ok_or_else(failed)?;
            let salt: [u8; 4] = rand::random();
            encode::auth_md5(&mut out, salt);
            stream.send(&out).await?;
            out.clear();
            let frame = password_frame(stream, buf).await?;
            let response = parse_password(password_body(&frame)?)?;
            if !md5_verify(user_name, source, salt, response) {
                return Err(failed());
            }
        }
        AuthMethod::ScramSha256 => {
            let secret = user.scram.clone().ok_or_else(failed)?;
            out = scram(stream, buf, secret, failed).await?;
        }
    }
    encode::auth_ok(&mut out);
    stream.send(&out).await?;
    Ok(())
}

/// A SCRAM-SHA-256 exchange up to the server's final message, which is
/// returned unsent so that AuthenticationOk can go in the same write.
async fn scram(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    secret: Arc<ScramSecret>,
    failed: impl Fn() -> SessionError,
) -> Result<BytesMut, SessionError> {
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
    Ok(out)
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
