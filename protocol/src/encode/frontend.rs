//! Messages a client sends: what pgsplit sends servers (its own startup,
//! authentication and queries, and client messages it rewrites).

use bytes::{BufMut, BytesMut};

use super::{cstr, message};
use crate::frontend::Target;
use crate::startup::{CANCEL_REQUEST_CODE, PROTOCOL_3_0};
use crate::tag::frontend as fe;

pub fn startup_message(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let at = buf.len();
    buf.put_u32(0);
    buf.put_u32(PROTOCOL_3_0);
    for (k, v) in params {
        cstr(buf, k.as_bytes());
        cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn cancel_request(buf: &mut BytesMut, pid: i32, secret: i32) {
    buf.put_u32(16);
    buf.put_u32(CANCEL_REQUEST_CODE);
    buf.put_i32(pid);
    buf.put_i32(secret);
}

pub fn password(buf: &mut BytesMut, password: &[u8]) {
    message(buf, fe::PASSWORD, |b| cstr(b, password));
}

pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    message(buf, fe::SASL_INITIAL_RESPONSE, |b| {
        cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    message(buf, fe::SASL_RESPONSE, |b| b.put_slice(data));
}

pub fn query(buf: &mut BytesMut, sql: &str) {
    message(buf, fe::QUERY, |b| cstr(b, sql.as_bytes()));
}

pub fn parse(buf: &mut BytesMut, name: &str, sql: &str, param_types: &[u32]) {
    message(buf, fe::PARSE, |b| {
        cstr(b, name.as_bytes());
        cstr(b, sql.as_bytes());
        b.put_i16(param_types.len() as i16);
        for t in param_types {
            b.put_u32(*t);
        }
    });
}

/// A Parse of statement `name` whose body after the name is `rest`, as a
/// client sent it: the query text with its NUL, the parameter type count and
/// the types (`frontend::split_parse_body` cuts a Parse body there). For
/// preparing a client's statement under another name, or again, without
/// decoding it.
pub fn parse_raw(buf: &mut BytesMut, name: &[u8], rest: &[u8]) {
    message(buf, fe::PARSE, |b| {
        cstr(b, name);
        b.put_slice(rest);
    });
}

/// Bind with text-format parameters and text-format results.
pub fn bind(buf: &mut BytesMut, portal: &str, statement: &str, params: &[Option<&[u8]>]) {
    message(buf, fe::BIND, |b| {
        cstr(b, portal.as_bytes());
        cstr(b, statement.as_bytes());
        b.put_i16(0);
        b.put_i16(params.len() as i16);
        for p in params {
            match p {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        b.put_i16(0);
    });
}

/// A client's Bind re-addressed: `portal` from statement `statement`,
/// followed by `rest`, the original body after the two names (parameter
/// formats, values and result formats, untouched; see
/// `frontend::split_bind_body`).
pub fn bind_renamed(buf: &mut BytesMut, portal: &[u8], statement: &[u8], rest: &[u8]) {
    message(buf, fe::BIND, |b| {
        cstr(b, portal);
        cstr(b, statement);
        b.put_slice(rest);
    });
}

pub fn describe(buf: &mut BytesMut, target: Target, name: &str) {
    message(buf, fe::DESCRIBE, |b| {
        b.put_u8(target.as_byte());
        cstr(b, name.as_bytes());
    });
}

pub fn execute(buf: &mut BytesMut, portal: &str, max_rows: i32) {
    message(buf, fe::EXECUTE, |b| {
        cstr(b, portal.as_bytes());
        b.put_i32(max_rows);
    });
}

pub fn close(buf: &mut BytesMut, target: Target, name: &str) {
    message(buf, fe::CLOSE, |b| {
        b.put_u8(target.as_byte());
        cstr(b, name.as_bytes());
    });
}

pub fn sync(buf: &mut BytesMut) {
    message(buf, fe::SYNC, |_| {});
}

pub fn flush(buf: &mut BytesMut) {
    message(buf, fe::FLUSH, |_| {});
}

pub fn terminate(buf: &mut BytesMut) {
    message(buf, fe::TERMINATE, |_| {});
}

/// CopyData, in either direction (the tag is the same).
pub fn copy_data(buf: &mut BytesMut, data: &[u8]) {
    message(buf, fe::COPY_DATA, |b| b.put_slice(data));
}

/// CopyDone, in either direction (the tag and the empty body are the same).
pub fn copy_done(buf: &mut BytesMut) {
    message(buf, fe::COPY_DONE, |_| {});
}

pub fn copy_fail(buf: &mut BytesMut, reason: &str) {
    message(buf, fe::COPY_FAIL, |b| cstr(b, reason.as_bytes()));
}
