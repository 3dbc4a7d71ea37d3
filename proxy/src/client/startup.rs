//! The startup phase of a client connection, up to (not including) auth.

use bytes::BytesMut;
use pgsplit_protocol::encode;
use pgsplit_protocol::startup::{split_startup, StartupMessage, StartupPacket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cancel::send_cancel;
use crate::errors::SessionError;
use crate::shared::Shared;

pub enum Opening {
    Startup(StartupMessage),
    /// The connection only carried a CancelRequest; it is done.
    Cancel,
    /// The client hung up before saying anything useful.
    Closed,
}

/// Reads startup-phase packets until a StartupMessage or CancelRequest.
/// Encryption requests are declined with 'N', after which libpq and other
/// drivers continue in plaintext (or give up if they require TLS).
pub async fn read_opening(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    shared: &Shared,
) -> Result<Opening, SessionError> {
    loop {
        match split_startup(buf)? {
            Some(StartupPacket::SslRequest) | Some(StartupPacket::GssEncRequest) => {
                // A client must not pipeline past an encryption request: bytes
                // already buffered would bypass the negotiation (CVE-2021-23214).
                if !buf.is_empty() {
                    return Err(SessionError::UnexpectedStartup(
                        "data after an encryption request",
                    ));
                }
                stream.write_all(b"N").await?;
            }
            Some(StartupPacket::Cancel { pid, secret }) => {
                if let Some(target) = shared.cancel.lookup(pid, secret) {
                    send_cancel(target, shared.config.timeouts.cancel).await;
                }
                return Ok(Opening::Cancel);
            }
            Some(StartupPacket::Startup(m)) => return Ok(Opening::Startup(m)),
            None => {
                buf.reserve(1024);
                if stream.read_buf(buf).await? == 0 {
                    return Ok(Opening::Closed);
                }
            }
        }
    }
}

/// Answers a request for a newer protocol minor version or `_pq_.` options
/// the way PostgreSQL does, so such clients fall back to 3.0.
pub fn negotiate_version(m: &StartupMessage, out: &mut BytesMut) {
    let options: Vec<&str> = m.protocol_options().collect();
    if m.minor_version > 0 || !options.is_empty() {
        encode::negotiate_protocol_version(out, 0, &options);
    }
}

/// Startup parameters passed on to servers: everything the client set except
/// what identifies the login, which pgsplit maps itself.
pub fn forwarded_params(m: &StartupMessage) -> Result<Vec<(String, String)>, SessionError> {
    let mut out = Vec::with_capacity(m.params.len());
    for (k, v) in &m.params {
        match k.as_str() {
            "user" | "database" => {}
            "replication" if v != "false" && v != "off" && v != "0" && v != "no" => {
                return Err(SessionError::Replication)
            }
            "replication" => {}
            k if k.starts_with("_pq_.") => {}
            _ => out.push((k.clone(), v.clone())),
        }
    }
    Ok(out)
}

/// SET statements equivalent to the client's startup parameters, so a pooled
/// server connection opened for someone else can be given this client's
/// defaults (`options` may carry several as `-c name=value`).
pub fn baseline_sets(params: &[(String, String)]) -> Vec<std::sync::Arc<str>> {
    let mut out = Vec::new();
    for (name, value) in params {
        if name == "options" {
            for (n, v) in parse_options(value) {
                out.push(set_statement(&n, &v).into());
            }
        } else {
            out.push(set_statement(name, value).into());
        }
    }
    out
}

fn set_statement(name: &str, value: &str) -> String {
    // GUC names match case-insensitively even when quoted.
    format!(
        "SET \"{}\" TO '{}'",
        name.replace('"', "\"\""),
        value.replace('\'', "''")
    )
}

/// `-c name=value` / `-cname=value` / `--name=value`, whitespace-separated,
/// with `\` escaping a space, as libpq's `options` carries them.
fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
        } else {
            w.strip_prefix("-c")
                .or_else(|| w.strip_prefix("--"))
                .map(str::to_owned)
        };
        if let Some((n, v)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            out.push((n.replace('-', "_"), v.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_parameters_become_set_statements() {
        let sets = baseline_sets(&[
            ("application_name".into(), "it's me".into()),
            (
                "options".into(),
                "-c search_path=a,b --statement-timeout=5s -cwork_mem=8MB -c x.y=with\\ space"
                    .into(),
            ),
        ]);
        let sets: Vec<&str> = sets.iter().map(|s| s.as_ref()).collect();
        assert_eq!(
            sets,
            [
                "SET \"application_name\" TO 'it''s me'",
                "SET \"search_path\" TO 'a,b'",
                "SET \"statement_timeout\" TO '5s'",
                "SET \"work_mem\" TO '8MB'",
                "SET \"x.y\" TO 'with space'",
            ]
        );
    }
}
