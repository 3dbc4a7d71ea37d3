//! Client-to-proxy bytes after startup: `split_frame` cuts them into frames
//! and `frontend::parse` (plus the Parse/Bind/SASL/password helpers) decodes
//! each one, as the proxy does.
//!
//! Invariants: no panic; each frame is exactly `1 + declared length` bytes
//! and the buffer shrinks by that much; `Ok(None)` consumes nothing;
//! `missing_bytes` and the `Frames` walker agree with `split_frame`; views
//! borrow from the frame's own body; rewriting a Parse/Bind name keeps the
//! rest of the message.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsplit_protocol::frame::{missing_bytes, Frames};
use pgsplit_protocol::frontend::{self, FrontendMessage};
use pgsplit_protocol::{encode, split_frame, Direction, Frame};

/// Small enough that oversized-message handling is reached by fuzzing too.
const MAX: usize = 1 << 16;

fn inside(frame: &Frame, part: &[u8]) -> bool {
    let body = frame.body();
    let (b, p) = (body.as_ptr() as usize, part.as_ptr() as usize);
    part.is_empty() || (p >= b && p + part.len() <= b + body.len())
}

fn check(frame: &Frame) {
    let msg = frontend::parse(frame);
    match &msg {
        Ok(FrontendMessage::Query { sql }) => assert!(inside(frame, sql)),
        Ok(FrontendMessage::Parse {
            name,
            sql,
            param_types,
        }) => {
            assert!(inside(frame, name) && inside(frame, sql));
            assert_eq!(
                frame.body().len(),
                name.len() + sql.len() + 4 + 4 * usize::from(*param_types)
            );
            let (n, rest) = frontend::split_parse_body(frame.body()).expect("valid Parse");
            assert_eq!(n, *name);
            let mut b = BytesMut::new();
            encode::parse_raw(&mut b, b"pgsplit_ffff", rest);
            let g = split_frame(&mut b, Direction::Frontend, usize::MAX)
                .unwrap()
                .unwrap();
            match frontend::parse(&g) {
                Ok(FrontendMessage::Parse {
                    name: n2,
                    sql: s2,
                    param_types: p2,
                }) => {
                    assert_eq!((n2, s2, p2), (&b"pgsplit_ffff"[..], *sql, *param_types));
                }
                other => panic!("renamed Parse: {other:?}"),
            }
        }
        Ok(FrontendMessage::Bind { portal, statement }) => {
            let body = frontend::split_bind_body(frame.body()).expect("valid Bind");
            assert_eq!((body.portal, body.statement), (*portal, *statement));
            let mut b = BytesMut::new();
            encode::bind_renamed(&mut b, body.portal, b"pgsplit_ffff", body.rest);
            let g = split_frame(&mut b, Direction::Frontend, usize::MAX)
                .unwrap()
                .unwrap();
            let again = frontend::split_bind_body(g.body()).unwrap();
            assert_eq!(
                (again.portal, again.statement, again.rest),
                (body.portal, &b"pgsplit_ffff"[..], body.rest)
            );
        }
        Ok(FrontendMessage::Password(body)) => {
            assert!(inside(frame, body));
            // The proxy reads a 'p' message as one of these, by auth state.
            let _ = frontend::parse_password(body);
            if let Ok((mech, data)) = frontend::parse_sasl_initial(body) {
                assert!(inside(frame, mech.as_bytes()) && inside(frame, data));
            }
        }
        Ok(FrontendMessage::CopyData(d)) => assert_eq!(d.len(), frame.body().len()),
        Ok(FrontendMessage::Unknown(t)) => assert_eq!(*t, frame.tag()),
        _ => {}
    }
    // Helpers the proxy may call on any frame body must not panic either.
    let _ = frontend::split_parse_body(frame.body());
    let _ = frontend::split_bind_body(frame.body());
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut walker = Frames::new(data, Direction::Frontend, MAX);
    loop {
        let before = buf.len();
        let missing = missing_bytes(&buf, Direction::Frontend, MAX);
        let walked = walker.next();
        match split_frame(&mut buf, Direction::Frontend, MAX) {
            Ok(Some(frame)) => {
                let declared = u32::from_be_bytes(frame.as_bytes()[1..5].try_into().unwrap());
                assert_eq!(frame.len(), declared as usize + 1);
                assert_eq!(before - buf.len(), frame.len());
                assert_eq!(missing, Ok(0));
                match walked {
                    Some(Ok((tag, body))) => assert_eq!((tag, body), (frame.tag(), frame.body())),
                    other => panic!("Frames disagrees with split_frame: {other:?}"),
                }
                check(&frame);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                assert!(matches!(missing, Ok(n) if n > 0));
                assert!(walked.is_none());
                assert_eq!(walker.consumed(), data.len() - buf.len());
                break;
            }
            Err(e) => {
                assert!(missing.is_err());
                assert_eq!(walked, Some(Err(e)));
                break;
            }
        }
    }
});
