//! Borrowed views of the client messages the proxy must understand.
//!
//! SQL text and statement names are returned as raw bytes: the client's
//! encoding need not be UTF-8, and the proxy forwards them unchanged anyway.

use crate::tag::frontend as fe;
use crate::wire::Reader;
use crate::{Frame, ProtocolError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

impl Target {
    /// The byte naming the target in a Describe or Close body: `b'S'` for a
    /// prepared statement, `b'P'` for a portal.
    pub const fn as_byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }

    fn from_byte(b: u8, what: &'static str) -> Result<Target, ProtocolError> {
        match b {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            _ => Err(ProtocolError::malformed(what, "target must be 'S' or 'P'")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage<'a> {
    Query {
        sql: &'a [u8],
    },
    Parse {
        name: &'a [u8],
        sql: &'a [u8],
        param_types: u16,
    },
    Bind {
        portal: &'a [u8],
        statement: &'a [u8],
    },
    Describe {
        target: Target,
        name: &'a [u8],
    },
    Execute {
        portal: &'a [u8],
        max_rows: i32,
    },
    Close {
        target: Target,
        name: &'a [u8],
    },
    Sync,
    Flush,
    Terminate,
    CopyData(&'a [u8]),
    CopyDone,
    CopyFail {
        message: &'a [u8],
    },
    /// PasswordMessage, SASLInitialResponse and SASLResponse share the tag
    /// 'p'; only the authentication state tells them apart.
    Password(&'a [u8]),
    FunctionCall,
    /// A tag the protocol does not define for clients.
    Unknown(u8),
}

/// Decodes the frame's body. Cheap: no allocation, strings are borrowed.
pub fn parse(frame: &Frame) -> Result<FrontendMessage<'_>, ProtocolError> {
    let body = frame.body();
    let msg = match frame.tag() {
        fe::QUERY => {
            let mut r = Reader::new(body, "Query");
            let sql = r.cstr()?;
            r.finish()?;
            FrontendMessage::Query { sql }
        }
        fe::PARSE => {
            let mut r = Reader::new(body, "Parse");
            let name = r.cstr()?;
            let sql = r.cstr()?;
            let n = r.count16()?;
            r.take(usize::from(n) * 4)?;
            r.finish()?;
            FrontendMessage::Parse {
                name,
                sql,
                param_types: n,
            }
        }
        fe::BIND => {
            // Only the names are needed for routing; parameter values pass
            // through untouched and PostgreSQL validates them.
            let mut r = Reader::new(body, "Bind");
            let portal = r.cstr()?;
            let statement = r.cstr()?;
            FrontendMessage::Bind { portal, statement }
        }
        fe::DESCRIBE => {
            let mut r = Reader::new(body, "Describe");
            let target = Target::from_byte(r.u8()?, "Describe")?;
            let name = r.cstr()?;
            r.finish()?;
            FrontendMessage::Describe { target, name }
        }
        fe::EXECUTE => {
            let mut r = Reader::new(body, "Execute");
            let portal = r.cstr()?;
            let max_rows = r.i32()?;
            r.finish()?;
            FrontendMessage::Execute { portal, max_rows }
        }
        fe::CLOSE => {
            let mut r = Reader::new(body, "Close");
            let target = Target::from_byte(r.u8()?, "Close")?;
            let name = r.cstr()?;
            r.finish()?;
            FrontendMessage::Close { target, name }
        }
        fe::SYNC => empty(body, "Sync", FrontendMessage::Sync)?,
        fe::FLUSH => empty(body, "Flush", FrontendMessage::Flush)?,
        fe::TERMINATE => empty(body, "Terminate", FrontendMessage::Terminate)?,
        fe::COPY_DONE => empty(body, "CopyDone", FrontendMessage::CopyDone)?,
        fe::COPY_DATA => FrontendMessage::CopyData(body),
        fe::COPY_FAIL => {
            let mut r = Reader::new(body, "CopyFail");
            let message = r.cstr()?;
            r.finish()?;
            FrontendMessage::CopyFail { message }
        }
        fe::PASSWORD => FrontendMessage::Password(body),
        fe::FUNCTION_CALL => FrontendMessage::FunctionCall,
        other => FrontendMessage::Unknown(other),
    };
    Ok(msg)
}

fn empty<'a>(
    body: &[u8],
    what: &'static str,
    msg: FrontendMessage<'a>,
) -> Result<FrontendMessage<'a>, ProtocolError> {
    Reader::new(body, what).finish()?;
    Ok(msg)
}

/// A Parse body cut after the statement name: `(name, rest)`, where `rest`
/// (query text, NUL, parameter types) is what `encode::parse_raw` takes to
/// write the same statement under another name.
pub fn split_parse_body(body: &[u8]) -> Result<(&[u8], &[u8]), ProtocolError> {
    let mut r = Reader::new(body, "Parse");
    let name = r.cstr()?;
    Ok((name, r.rest()))
}

/// A Bind body cut after its two names; see [`split_bind_body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindBody<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// Everything after the names (parameter formats, values, result
    /// formats), as `encode::bind_renamed` takes it.
    pub rest: &'a [u8],
}

/// A Bind body cut after the portal and statement names, so the Bind can be
/// re-sent from another statement name with `encode::bind_renamed`.
pub fn split_bind_body(body: &[u8]) -> Result<BindBody<'_>, ProtocolError> {
    let mut r = Reader::new(body, "Bind");
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    Ok(BindBody {
        portal,
        statement,
        rest: r.rest(),
    })
}

/// SASLInitialResponse: mechanism name and the client-first-message.
pub fn parse_sasl_initial(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.cstr_utf8()?;
    let len = r.i32()?;
    let data = if len < 0 {
        &[][..]
    } else {
        r.take(len as usize)?
    };
    r.finish()?;
    Ok((mechanism, data))
}

/// PasswordMessage: a NUL-terminated password (cleartext or md5 response).
pub fn parse_password(body: &[u8]) -> Result<&[u8], ProtocolError> {
    let mut r = Reader::new(body, "PasswordMessage");
    let pw = r.cstr()?;
    r.finish()?;
    Ok(pw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;
    use crate::frame::{split_frame, Direction};
    use bytes::BytesMut;

    fn one(buf: &mut BytesMut) -> Frame {
        let f = split_frame(buf, Direction::Frontend, 1 << 20)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty(), "frame left {} bytes behind", buf.len());
        f
    }

    #[test]
    fn every_message_round_trips() {
        let mut b = BytesMut::new();
        encode::query(&mut b, "select 1");
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            FrontendMessage::Query { sql: b"select 1" }
        );

        encode::parse(&mut b, "s1", "select $1", &[23]);
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            FrontendMessage::Parse {
                name: b"s1",
                sql: b"select $1",
                param_types: 1
            }
        );

        encode::bind(&mut b, "p", "s1", &[Some(b"42".as_slice()), None]);
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            FrontendMessage::Bind {
                portal: b"p",
                statement: b"s1"
            }
        );

        encode::describe(&mut b, Target::Portal, "p");
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            FrontendMessage::Describe {
                target: Target::Portal,
                name: b"p"
            }
        );

        encode::execute(&mut b, "p", 10);
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            FrontendMessage::Execute {
                portal: b"p",
                max_rows: 10
            }
        );

        encode::close(&mut b, Target::Statement, "s1");
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            FrontendMessage::Close {
                target: Target::Statement,
                name: b"s1"
            }
        );

        encode::sync(&mut b);
        assert_eq!(parse(&one(&mut b)).unwrap(), FrontendMessage::Sync);
        encode::flush(&mut b);
        assert_eq!(parse(&one(&mut b)).unwrap(), FrontendMessage::Flush);
        encode::terminate(&mut b);
        assert_eq!(parse(&one(&mut b)).unwrap(), FrontendMessage::Terminate);
        encode::copy_data(&mut b, b"1\t2\n");
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            FrontendMessage::CopyData(b"1\t2\n")
        );
        encode::copy_done(&mut b);
        assert_eq!(parse(&one(&mut b)).unwrap(), FrontendMessage::CopyDone);
        encode::copy_fail(&mut b, "nope");
        assert_eq!(
            parse(&one(&mut b)).unwrap(),
            FrontendMessage::CopyFail { message: b"nope" }
        );
        encode::password(&mut b, b"secret");
        let f = one(&mut b);
        let FrontendMessage::Password(body) = parse(&f).unwrap() else {
            panic!()
        };
        assert_eq!(parse_password(body).unwrap(), b"secret");

        encode::sasl_initial_response(&mut b, "SCRAM-SHA-256", b"n,,n=,r=abc");
        let f = one(&mut b);
        let FrontendMessage::Password(body) = parse(&f).unwrap() else {
            panic!()
        };
        assert_eq!(
            parse_sasl_initial(body).unwrap(),
            ("SCRAM-SHA-256", &b"n,,n=,r=abc"[..])
        );
    }

    #[test]
    fn rewritten_parse_and_bind_round_trip() {
        let mut b = BytesMut::new();
        // A client's Parse, cut after its name, re-encoded under another one.
        encode::parse(&mut b, "client_s1", "select $1, $2", &[23, 25]);
        let f = one(&mut b);
        let (name, rest) = split_parse_body(f.body()).unwrap();
        assert_eq!(name, b"client_s1");
        encode::parse_raw(&mut b, b"pgsplit_00ff", rest);
        let g = one(&mut b);
        assert_eq!(
            parse(&g).unwrap(),
            FrontendMessage::Parse {
                name: b"pgsplit_00ff",
                sql: b"select $1, $2",
                param_types: 2
            }
        );
        assert_eq!(
            split_parse_body(g.body()).unwrap(),
            (&b"pgsplit_00ff"[..], rest)
        );
        // The unnamed statement.
        encode::parse_raw(&mut b, b"", rest);
        let g = one(&mut b);
        assert_eq!(
            parse(&g).unwrap(),
            FrontendMessage::Parse {
                name: b"",
                sql: b"select $1, $2",
                param_types: 2
            }
        );

        encode::bind(&mut b, "p1", "client_s1", &[Some(b"42".as_slice()), None]);
        let f = one(&mut b);
        let original = split_bind_body(f.body()).unwrap();
        assert_eq!(
            (original.portal, original.statement),
            (&b"p1"[..], &b"client_s1"[..])
        );
        encode::bind_renamed(&mut b, original.portal, b"pgsplit_00ff", original.rest);
        let g = one(&mut b);
        assert_eq!(
            parse(&g).unwrap(),
            FrontendMessage::Bind {
                portal: b"p1",
                statement: b"pgsplit_00ff"
            }
        );
        assert_eq!(
            split_bind_body(g.body()).unwrap(),
            BindBody {
                portal: b"p1",
                statement: b"pgsplit_00ff",
                rest: original.rest
            },
            "parameters and formats pass through unchanged"
        );
        assert!(g.body().ends_with(original.rest));
    }

    #[test]
    fn split_bodies_need_their_names() {
        assert!(split_parse_body(b"no terminator").is_err());
        assert!(split_bind_body(b"portal\0no terminator").is_err());
        let empty = split_bind_body(b"\0\0").unwrap();
        assert_eq!(
            (empty.portal, empty.statement, empty.rest),
            (&b""[..], &b""[..], &b""[..])
        );
    }

    #[test]
    fn unknown_tags_are_reported_not_rejected() {
        let mut b = BytesMut::from(&[b'z', 0, 0, 0, 4][..]);
        assert_eq!(parse(&one(&mut b)).unwrap(), FrontendMessage::Unknown(b'z'));
    }

    #[test]
    fn parse_takes_up_to_65535_parameter_types() {
        // psycopg's bulk inserts: 16 384 rows of 2 columns, and beyond.
        for n in [32_768usize, 40_000, 65_535] {
            let mut body = b"s\0insert\0".to_vec();
            body.extend_from_slice(&(n as u16).to_be_bytes());
            body.extend(std::iter::repeat_n([0, 0, 0, 23], n).flatten());
            let mut v = vec![fe::PARSE];
            v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            v.extend_from_slice(&body);
            let f = Frame::from_bytes(v.into());
            match parse(&f) {
                Ok(FrontendMessage::Parse { param_types, .. }) => {
                    assert_eq!(usize::from(param_types), n)
                }
                other => panic!("{n} parameter types: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let bad: &[(u8, &[u8])] = &[
            (fe::QUERY, b"no terminator"),
            (fe::QUERY, b"select 1\0extra"),
            (fe::PARSE, b"s\0select\0"),                 // missing count
            (fe::PARSE, b"s\0select\0\0\x05\0\0\0\x17"), // count larger than the bytes left
            (fe::PARSE, b"s\0select\0\xff\xff"),         // 65 535 types, none sent
            (fe::DESCRIBE, b"Xname\0"),
            (fe::EXECUTE, b"p\0\0\0"),
            (fe::SYNC, b"x"),
            (fe::CLOSE, b"S"),
        ];
        for (tag, body) in bad {
            let mut v = vec![*tag];
            v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            v.extend_from_slice(body);
            let f = Frame::from_bytes(v.into());
            assert!(parse(&f).is_err(), "{:?} {:?} accepted", *tag as char, body);
        }
    }
}
