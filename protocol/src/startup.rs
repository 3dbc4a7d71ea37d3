//! The startup phase: the only messages without a tag byte.
//!
//! A new connection opens with `len:u32, code:u32, ...`; the code says whether
//! it is an SSLRequest, a GSSENCRequest, a CancelRequest or a StartupMessage.

use bytes::{Buf, BytesMut};

use crate::wire::Reader;
use crate::ProtocolError;

/// PostgreSQL's own ceiling for a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET: usize = 10_000;

pub const SSL_REQUEST_CODE: u32 = 80_877_103;

/// The one-byte answer declining an SSLRequest or GSSENCRequest: the
/// client goes on unencrypted (or gives up, if it requires encryption).
pub const ENCRYPTION_DECLINED: &[u8] = b"N";
/// The answer to SSLRequest when the TLS handshake follows.
pub const ENCRYPTION_ACCEPTED: &[u8] = b"S";
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
pub const PROTOCOL_3_0: u32 = 3 << 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    /// Sent on a fresh connection to cancel the query running in the session
    /// identified by the key data the server (here: the proxy) handed out.
    Cancel {
        pid: i32,
        secret: i32,
    },
    Startup(StartupMessage),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    /// Minor protocol version the client asked for; major is always 3 here.
    pub minor_version: u16,
    /// Parameters in the order the client sent them (`user`, `database`,
    /// `application_name`, `options`, GUCs, and `_pq_.` protocol options).
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn user(&self) -> Option<&str> {
        self.param("user")
    }

    /// The database, which defaults to the user name as in PostgreSQL.
    pub fn database(&self) -> Option<&str> {
        self.param("database").or_else(|| self.user())
    }

    /// `_pq_.*` options the client proposed; pgsplit supports none of them and
    /// must list them in NegotiateProtocolVersion.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with("_pq_."))
    }
}

/// Cuts one startup-phase packet from `buf`; `Ok(None)` means "read more".
pub fn split_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if !(8..=MAX_STARTUP_PACKET as u32).contains(&len) {
        return Err(ProtocolError::InvalidStartupLength(len));
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len);
    parse_startup(&packet[4..]).map(Some)
}

fn parse_startup(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    let mut r = Reader::new(body, "startup");
    let code = r.i32()? as u32;
    match code {
        SSL_REQUEST_CODE => {
            r.finish()?;
            Ok(StartupPacket::SslRequest)
        }
        GSSENC_REQUEST_CODE => {
            r.finish()?;
            Ok(StartupPacket::GssEncRequest)
        }
        CANCEL_REQUEST_CODE => {
            let pid = r.i32()?;
            // Protocol 3.2 allows longer secrets; pgsplit hands out 4-byte keys,
            // so anything else cannot be one of ours.
            let secret_bytes = r.rest();
            if secret_bytes.len() != 4 {
                return Err(ProtocolError::malformed(
                    "cancel",
                    "secret key must be 4 bytes",
                ));
            }
            let secret = (&secret_bytes[..]).get_i32();
            Ok(StartupPacket::Cancel { pid, secret })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(ProtocolError::UnsupportedProtocol { major, minor });
            }
            let mut params = Vec::new();
            loop {
                let key = r.cstr_utf8()?;
                if key.is_empty() {
                    break;
                }
                let value = r.cstr_utf8()?;
                params.push((key.to_owned(), value.to_owned()));
            }
            r.finish()?;
            Ok(StartupPacket::Startup(StartupMessage {
                minor_version: minor,
                params,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;

    #[test]
    fn startup_round_trip_with_split_reads() {
        let mut wire = BytesMut::new();
        encode::startup_message(
            &mut wire,
            &[
                ("user", "app"),
                ("database", "db1"),
                ("application_name", "t"),
            ],
        );
        let whole = wire.clone();
        let mut buf = BytesMut::new();
        for b in &whole[..whole.len() - 1] {
            buf.extend_from_slice(&[*b]);
            assert_eq!(split_startup(&mut buf).unwrap(), None);
        }
        buf.extend_from_slice(&whole[whole.len() - 1..]);
        let StartupPacket::Startup(m) = split_startup(&mut buf).unwrap().unwrap() else {
            panic!("not a startup message");
        };
        assert!(buf.is_empty());
        assert_eq!(m.minor_version, 0);
        assert_eq!(m.user(), Some("app"));
        assert_eq!(m.database(), Some("db1"));
        assert_eq!(m.param("application_name"), Some("t"));
    }

    #[test]
    fn database_defaults_to_user() {
        let mut wire = BytesMut::new();
        encode::startup_message(&mut wire, &[("user", "bob")]);
        let Some(StartupPacket::Startup(m)) = split_startup(&mut wire).unwrap() else {
            panic!()
        };
        assert_eq!(m.database(), Some("bob"));
    }

    #[test]
    fn ssl_gss_and_cancel_requests() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&8u32.to_be_bytes());
        buf.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
        buf.extend_from_slice(&8u32.to_be_bytes());
        buf.extend_from_slice(&GSSENC_REQUEST_CODE.to_be_bytes());
        encode::cancel_request(&mut buf, 42, -7);
        assert_eq!(
            split_startup(&mut buf).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        assert_eq!(
            split_startup(&mut buf).unwrap(),
            Some(StartupPacket::GssEncRequest)
        );
        assert_eq!(
            split_startup(&mut buf).unwrap(),
            Some(StartupPacket::Cancel {
                pid: 42,
                secret: -7
            })
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn newer_minor_version_and_protocol_options_are_reported() {
        let mut buf = BytesMut::new();
        let body = b"user\0u\0_pq_.test\0x\0\0";
        buf.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
        buf.extend_from_slice(&(PROTOCOL_3_0 | 2).to_be_bytes());
        buf.extend_from_slice(body);
        let Some(StartupPacket::Startup(m)) = split_startup(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(m.minor_version, 2);
        assert_eq!(m.protocol_options().collect::<Vec<_>>(), vec!["_pq_.test"]);
    }

    #[test]
    fn malformed_startup_packets_are_errors() {
        // Length too small, too large, wrong protocol, missing terminators.
        let cases: Vec<Vec<u8>> = vec![
            vec![0, 0, 0, 4, 0, 0, 0, 0],
            vec![0, 1, 0, 0, 0, 3, 0, 0],
            [
                &12u32.to_be_bytes()[..],
                &(2u32 << 16).to_be_bytes(),
                b"a\0\0\0",
            ]
            .concat(),
            [
                &13u32.to_be_bytes()[..],
                &PROTOCOL_3_0.to_be_bytes(),
                b"user\0",
            ]
            .concat(),
            [
                &13u32.to_be_bytes()[..],
                &PROTOCOL_3_0.to_be_bytes(),
                b"user\0u",
            ]
            .concat(),
            [
                &12u32.to_be_bytes()[..],
                &CANCEL_REQUEST_CODE.to_be_bytes(),
                &[0, 0, 0, 1],
            ]
            .concat(),
            [
                &12u32.to_be_bytes()[..],
                &SSL_REQUEST_CODE.to_be_bytes(),
                &[0, 0, 0, 1],
            ]
            .concat(),
        ];
        for (i, case) in cases.into_iter().enumerate() {
            let mut buf = BytesMut::from(&case[..]);
            assert!(
                split_startup(&mut buf).is_err(),
                "case {i} accepted: {case:?}"
            );
        }
    }

    #[test]
    fn invalid_utf8_in_parameters_is_rejected() {
        let body = b"user\0\xff\xfe\0\0";
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
        buf.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        buf.extend_from_slice(body);
        assert!(split_startup(&mut buf).is_err());
    }
}
