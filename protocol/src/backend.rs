//! Borrowed views of the server messages the proxy must understand.

use crate::tag::backend as be;
use crate::wire::Reader;
use crate::{Frame, ProtocolError, TransactionStatus};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication<'a> {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    /// Mechanism names, NUL-separated, as sent.
    Sasl {
        mechanisms: &'a [u8],
    },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    /// Kerberos, GSS, SSPI: methods pgsplit cannot perform.
    Unsupported(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage<'a> {
    Authentication(Authentication<'a>),
    ParameterStatus {
        name: &'a str,
        value: &'a str,
    },
    BackendKeyData {
        pid: i32,
        secret: i32,
    },
    ReadyForQuery(TransactionStatus),
    ErrorResponse(Fields<'a>),
    NoticeResponse(Fields<'a>),
    CommandComplete {
        tag: &'a [u8],
    },
    NegotiateProtocolVersion {
        newest_minor: i32,
    },
    /// Every other message: the proxy forwards it without looking inside.
    Other(u8),
}

pub fn parse(frame: &Frame) -> Result<BackendMessage<'_>, ProtocolError> {
    let body = frame.body();
    Ok(match frame.tag() {
        be::AUTHENTICATION => BackendMessage::Authentication(parse_auth(body)?),
        be::PARAMETER_STATUS => {
            let mut r = Reader::new(body, "ParameterStatus");
            let name = r.cstr_utf8()?;
            let value = r.cstr_utf8()?;
            r.finish()?;
            BackendMessage::ParameterStatus { name, value }
        }
        be::BACKEND_KEY_DATA => {
            let mut r = Reader::new(body, "BackendKeyData");
            let pid = r.i32()?;
            let secret = r.i32()?;
            r.finish()?;
            BackendMessage::BackendKeyData { pid, secret }
        }
        be::READY_FOR_QUERY => BackendMessage::ReadyForQuery(ready_status(body)?),
        be::ERROR_RESPONSE => BackendMessage::ErrorResponse(Fields::new(body)?),
        be::NOTICE_RESPONSE => BackendMessage::NoticeResponse(Fields::new(body)?),
        be::COMMAND_COMPLETE => {
            let mut r = Reader::new(body, "CommandComplete");
            let tag = r.cstr()?;
            r.finish()?;
            BackendMessage::CommandComplete { tag }
        }
        be::NEGOTIATE_PROTOCOL_VERSION => {
            let mut r = Reader::new(body, "NegotiateProtocolVersion");
            BackendMessage::NegotiateProtocolVersion {
                newest_minor: r.i32()?,
            }
        }
        other => BackendMessage::Other(other),
    })
}

/// The status byte of a ReadyForQuery body; the hottest check on the
/// response path, so it has its own entry point.
pub fn ready_status(body: &[u8]) -> Result<TransactionStatus, ProtocolError> {
    match body {
        [b] => TransactionStatus::from_byte(*b)
            .ok_or_else(|| ProtocolError::malformed("ReadyForQuery", "unknown status")),
        _ => Err(ProtocolError::malformed(
            "ReadyForQuery",
            "body must be one byte",
        )),
    }
}

/// `X/Y` as PostgreSQL prints a pg_lsn.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The value of a DataRow body with exactly one non-NULL column: what
/// pgsplit's own single-value queries return.
pub fn single_column(body: &[u8]) -> Option<&[u8]> {
    let (count, rest) = body.split_first_chunk::<2>()?;
    if i16::from_be_bytes(*count) != 1 {
        return None;
    }
    let (len, value) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(i32::from_be_bytes(*len)).ok()?;
    (value.len() == len).then_some(value)
}

fn parse_auth(body: &[u8]) -> Result<Authentication<'_>, ProtocolError> {
    let mut r = Reader::new(body, "Authentication");
    let code = r.i32()?;
    let auth = match code {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => {
            let s = r.take(4)?;
            Authentication::Md5Password {
                salt: [s[0], s[1], s[2], s[3]],
            }
        }
        10 => Authentication::Sasl {
            mechanisms: r.rest(),
        },
        11 => Authentication::SaslContinue(r.rest()),
        12 => Authentication::SaslFinal(r.rest()),
        other => return Ok(Authentication::Unsupported(other)),
    };
    r.finish()?;
    Ok(auth)
}

/// The parameter type OIDs of a ParameterDescription body, checked whole
/// before the first is returned.
pub fn parameter_types(body: &[u8]) -> Result<impl Iterator<Item = u32> + '_, ProtocolError> {
    let mut r = Reader::new(body, "ParameterDescription");
    let n = r.count16()?;
    let types = r.take(usize::from(n) * 4)?;
    r.finish()?;
    Ok(types
        .chunks_exact(4)
        .map(|t| u32::from_be_bytes([t[0], t[1], t[2], t[3]])))
}

/// The fields of an ErrorResponse or NoticeResponse body.
pub fn error_fields(body: &[u8]) -> Result<Fields<'_>, ProtocolError> {
    Fields::new(body)
}

/// Fields of an ErrorResponse or NoticeResponse, borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields<'a> {
    body: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(body: &'a [u8]) -> Result<Fields<'a>, ProtocolError> {
        // Validate the structure once so iteration cannot fail later.
        let mut r = Reader::new(body, "ErrorResponse");
        loop {
            if r.u8()? == 0 {
                break;
            }
            r.cstr()?;
        }
        r.finish()?;
        Ok(Fields { body })
    }

    pub fn iter(&self) -> impl Iterator<Item = (u8, &'a [u8])> {
        let mut rest = self.body;
        std::iter::from_fn(move || {
            let (&code, tail) = rest.split_first()?;
            if code == 0 {
                return None;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            rest = &tail[end + 1..];
            Some((code, &tail[..end]))
        })
    }

    pub fn get(&self, code: u8) -> Option<&'a str> {
        self.iter()
            .find(|(c, _)| *c == code)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The SQLSTATE ('C' field).
    pub fn code(&self) -> Option<&'a str> {
        self.get(b'C')
    }

    pub fn message(&self) -> Option<&'a str> {
        self.get(b'M')
    }

    /// Non-localized severity ('V'), falling back to the localized one.
    pub fn severity(&self) -> Option<&'a str> {
        self.get(b'V').or_else(|| self.get(b'S'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{self, ErrorInfo};
    use crate::frame::{split_frame, Direction};
    use bytes::BytesMut;

    #[test]
    fn single_column_takes_one_non_null_value_only() {
        let row = |values: &[Option<&str>]| {
            let mut b = bytes::BytesMut::new();
            crate::encode::data_row(&mut b, values);
            b[5..].to_vec()
        };
        assert_eq!(
            single_column(&row(&[Some("0/16B3748")])),
            Some(&b"0/16B3748"[..])
        );
        assert_eq!(single_column(&row(&[Some("")])), Some(&b""[..]));
        assert_eq!(single_column(&row(&[None])), None);
        assert_eq!(single_column(&row(&[Some("a"), Some("b")])), None);
        assert_eq!(single_column(&row(&[])), None);
        // A length that does not match the body.
        assert_eq!(single_column(&[0, 1, 0, 0, 0, 9, b'x']), None);
        assert_eq!(single_column(&[0]), None);
    }

    fn one(buf: &mut BytesMut) -> Frame {
        let f = split_frame(buf, Direction::Backend, 1 << 20)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty());
        f
    }

    #[test]
    fn parameter_descriptions_count_up_to_65535() {
        let types: Vec<u32> = (0..40_000).map(|i| 23 + i % 2).collect();
        let mut b = BytesMut::new();
        encode::parameter_description(&mut b, &types);
        let f = split_frame(&mut b, Direction::Backend, 1 << 20)
            .unwrap()
            .unwrap();
        let got: Vec<u32> = parameter_types(f.body()).unwrap().collect();
        assert_eq!(got, types);
    }

    #[test]
    fn every_message_round_trips() {
        let mut b = BytesMut::new();
        encode::auth_ok(&mut b);
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            BackendMessage::Authentication(Authentication::Ok)
        );
        encode::auth_md5(&mut b, [1, 2, 3, 4]);
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            BackendMessage::Authentication(Authentication::Md5Password { salt: [1, 2, 3, 4] })
        );
        encode::auth_cleartext(&mut b);
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            BackendMessage::Authentication(Authentication::CleartextPassword)
        );
        encode::auth_sasl(&mut b, &["SCRAM-SHA-256"]);
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            BackendMessage::Authentication(Authentication::Sasl {
                mechanisms: b"SCRAM-SHA-256\0\0"
            })
        );
        encode::auth_sasl_continue(&mut b, b"r=x,s=y,i=1");
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            BackendMessage::Authentication(Authentication::SaslContinue(b"r=x,s=y,i=1"))
        );
        encode::auth_sasl_final(&mut b, b"v=abc");
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            BackendMessage::Authentication(Authentication::SaslFinal(b"v=abc"))
        );
        encode::parameter_status(&mut b, "TimeZone", "UTC");
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            BackendMessage::ParameterStatus {
                name: "TimeZone",
                value: "UTC"
            }
        );
        encode::backend_key_data(&mut b, 7, -9);
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            BackendMessage::BackendKeyData { pid: 7, secret: -9 }
        );
        for s in [
            TransactionStatus::Idle,
            TransactionStatus::InTransaction,
            TransactionStatus::Failed,
        ] {
            encode::ready_for_query(&mut b, s);
            assert_eq!(
                parse(&one(&mut b)).unwrap(),
                BackendMessage::ReadyForQuery(s)
            );
        }
        encode::command_complete(&mut b, "SELECT 1");
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            BackendMessage::CommandComplete { tag: b"SELECT 1" }
        );
        encode::negotiate_protocol_version(&mut b, 0, &["_pq_.x"]);
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            BackendMessage::NegotiateProtocolVersion { newest_minor: 0 }
        );
    }

    #[test]
    fn acknowledgements_round_trip() {
        let mut b = BytesMut::new();
        type Encoder = fn(&mut BytesMut);
        let named: [(Encoder, u8); 6] = [
            (encode::parse_complete, be::PARSE_COMPLETE),
            (encode::bind_complete, be::BIND_COMPLETE),
            (encode::close_complete, be::CLOSE_COMPLETE),
            (encode::no_data, be::NO_DATA),
            (encode::portal_suspended, be::PORTAL_SUSPENDED),
            (encode::empty_query_response, be::EMPTY_QUERY_RESPONSE),
        ];
        for (write, tag) in named {
            write(&mut b);
            let f = one(&mut b);
            assert_eq!(parse(&f).unwrap(), BackendMessage::Other(tag));
            assert_eq!(f.body(), b"");
            // The same bytes from the tag alone, as for a synthetic reply.
            encode::empty_message(&mut b, tag);
            assert_eq!(one(&mut b), f);
        }
        encode::empty_message(&mut b, be::COPY_DONE);
        let f = one(&mut b);
        assert_eq!((f.tag(), f.body()), (be::COPY_DONE, &b""[..]));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not an empty-bodied server message")]
    fn empty_message_refuses_a_tag_with_a_body() {
        encode::empty_message(&mut BytesMut::new(), be::READY_FOR_QUERY);
    }

    #[test]
    fn parameter_description_round_trips() {
        let mut b = BytesMut::new();
        for types in [&[][..], &[23], &[23, 25, 0xffff_ffff]] {
            encode::parameter_description(&mut b, types);
            let f = one(&mut b);
            assert_eq!(f.tag(), be::PARAMETER_DESCRIPTION);
            assert_eq!(
                parse(&f).unwrap(),
                BackendMessage::Other(be::PARAMETER_DESCRIPTION)
            );
            assert_eq!(
                parameter_types(f.body()).unwrap().collect::<Vec<_>>(),
                types
            );
        }
        // What the proxy writes for a statement without parameters.
        encode::parameter_description(&mut b, &[]);
        assert_eq!(one(&mut b).body(), &[0, 0]);
        for bad in [&b""[..], b"\0", b"\0\x01\0\0\0", b"\xff\xff", b"\0\0\0"] {
            assert!(parameter_types(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn error_and_notice_fields() {
        let mut b = BytesMut::new();
        encode::error_response(
            &mut b,
            &ErrorInfo::error("28P01", "password authentication failed").hint("check it"),
        );
        let f = one(&mut b);
        let BackendMessage::ErrorResponse(fields) = parse(&f).unwrap() else {
            panic!()
        };
        assert_eq!(fields.code(), Some("28P01"));
        assert_eq!(fields.severity(), Some("ERROR"));
        assert_eq!(fields.message(), Some("password authentication failed"));
        assert_eq!(fields.get(b'H'), Some("check it"));

        encode::notice_response(&mut b, &ErrorInfo::notice("00000", "hello"));
        let f = one(&mut b);
        let BackendMessage::NoticeResponse(fields) = parse(&f).unwrap() else {
            panic!()
        };
        assert_eq!(fields.severity(), Some("NOTICE"));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let bad: &[(u8, &[u8])] = &[
            (be::READY_FOR_QUERY, b""),
            (be::READY_FOR_QUERY, b"X"),
            (be::READY_FOR_QUERY, b"II"),
            (be::BACKEND_KEY_DATA, b"\0\0\0\x01"),
            (be::PARAMETER_STATUS, b"name\0"),
            (be::ERROR_RESPONSE, b"Cabc"),
            (be::ERROR_RESPONSE, b"Cabc\0"),
            (be::AUTHENTICATION, b"\0\0\0\x05\x01"),
            (be::AUTHENTICATION, b"\0\0"),
        ];
        for (tag, body) in bad {
            let mut v = vec![*tag];
            v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            v.extend_from_slice(body);
            let f = Frame::from_bytes(v.into());
            assert!(parse(&f).is_err(), "{:?} {:?} accepted", *tag as char, body);
        }
    }

    #[test]
    fn forwarded_messages_are_not_inspected() {
        let f = Frame::from_bytes(bytes::Bytes::from_static(&[be::DATA_ROW, 0, 0, 0, 6, 0, 0]));
        assert_eq!(parse(&f).unwrap(), BackendMessage::Other(be::DATA_ROW));
    }
}
