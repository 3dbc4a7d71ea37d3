//! Server-to-proxy bytes: `split_frame` in the backend direction, then
//! `backend::parse` and the helpers the proxy calls on particular messages
//! (`ready_status`, `parameter_types`, `error_fields`).
//!
//! Invariants: no panic; frame length equals what was consumed; `Ok(None)`
//! consumes nothing; error fields validated once iterate without failing
//! and every field's value lies inside the body.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsplit_protocol::backend::{self, Authentication, BackendMessage};
use pgsplit_protocol::tag::backend as be;
use pgsplit_protocol::{split_frame, Direction, Frame};

const MAX: usize = 1 << 16;

fn check(frame: &Frame) {
    let body = frame.body();
    match backend::parse(frame) {
        Ok(BackendMessage::ErrorResponse(f)) | Ok(BackendMessage::NoticeResponse(f)) => {
            let n = f.iter().count();
            let total: usize = f.iter().map(|(_, v)| v.len() + 2).sum();
            assert_eq!(total + 1, body.len(), "{n} fields must cover the body");
            let _ = (f.code(), f.message(), f.severity());
        }
        Ok(BackendMessage::ReadyForQuery(s)) => {
            assert_eq!(backend::ready_status(body), Ok(s));
            assert_eq!(body, &[s.as_byte()]);
        }
        Ok(BackendMessage::Authentication(a)) => match a {
            Authentication::Sasl { mechanisms } => assert_eq!(mechanisms.len() + 4, body.len()),
            Authentication::SaslContinue(d) | Authentication::SaslFinal(d) => {
                assert_eq!(d.len() + 4, body.len())
            }
            _ => {}
        },
        Ok(BackendMessage::Other(t)) => assert_eq!(t, frame.tag()),
        _ => {}
    }
    if frame.tag() == be::PARAMETER_DESCRIPTION {
        if let Ok(types) = backend::parameter_types(body) {
            let n = types.count();
            assert_eq!(2 + 4 * n, body.len());
        }
    }
    let _ = backend::ready_status(body);
    if let Ok(f) = backend::error_fields(body) {
        let _ = f.iter().count();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match split_frame(&mut buf, Direction::Backend, MAX) {
            Ok(Some(frame)) => {
                let declared = u32::from_be_bytes(frame.as_bytes()[1..5].try_into().unwrap());
                assert_eq!(frame.len(), declared as usize + 1);
                assert_eq!(before - buf.len(), frame.len());
                check(&frame);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                break;
            }
            Err(_) => break,
        }
    }
});
