//! Writers for the messages pgsplit produces itself.
//!
//! Each appends one message to a caller-owned buffer, so a session can queue
//! several replies (ParameterStatus..., BackendKeyData, ReadyForQuery) and
//! write them with one syscall. Lengths are back-patched, never precomputed.

use bytes::{BufMut, BytesMut};

use crate::frontend::Target;
use crate::startup::{CANCEL_REQUEST_CODE, PROTOCOL_3_0};
use crate::TransactionStatus;

fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    at
}

fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

fn message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let at = begin(buf, tag);
    body(buf);
    finish(buf, at);
}

/// A message of `tag` whose body is `parts` concatenated: for rewriting a
/// client message (another statement name) without decoding the rest.
pub fn raw_message(buf: &mut BytesMut, tag: u8, parts: &[&[u8]]) {
    message(buf, tag, |b| {
        for p in parts {
            b.put_slice(p);
        }
    });
}

// ---- server to client -------------------------------------------------------

pub fn auth_ok(buf: &mut BytesMut) {
    message(buf, b'R', |b| b.put_i32(0));
}

pub fn auth_cleartext(buf: &mut BytesMut) {
    message(buf, b'R', |b| b.put_i32(3));
}

pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    message(buf, b'R', |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    message(buf, b'R', |b| {
        b.put_i32(10);
        for m in mechanisms {
            cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    message(buf, b'S', |b| {
        cstr(b, name.as_bytes());
        cstr(b, value.as_bytes());
    });
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    message(buf, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    message(buf, b'Z', |b| b.put_u8(status.as_byte()));
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    message(buf, b'C', |b| cstr(b, tag.as_bytes()));
}

pub fn empty_query_response(buf: &mut BytesMut) {
    message(buf, b'I', |_| {});
}

/// Tells a client that asked for protocol 3.x (x > 0) or sent `_pq_.`
/// options what the proxy actually speaks, as PostgreSQL does.
pub fn negotiate_protocol_version(buf: &mut BytesMut, newest_minor: i32, unrecognized: &[&str]) {
    message(buf, b'v', |b| {
        b.put_i32(newest_minor);
        b.put_i32(unrecognized.len() as i32);
        for o in unrecognized {
            cstr(b, o.as_bytes());
        }
    });
}

/// RowDescription for text columns of type `text` (OID 25), which is all the
/// proxy's own result sets (admin commands) need.
pub fn row_description(buf: &mut BytesMut, columns: &[&str]) {
    message(buf, b'T', |b| {
        b.put_i16(columns.len() as i16);
        for c in columns {
            cstr(b, c.as_bytes());
            b.put_i32(0); // table oid
            b.put_i16(0); // column number
            b.put_i32(25); // type oid: text
            b.put_i16(-1); // type size: variable
            b.put_i32(-1); // type modifier
            b.put_i16(0); // format: text
        }
    });
}

pub fn data_row(buf: &mut BytesMut, values: &[Option<&str>]) {
    message(buf, b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(s) => {
                    b.put_i32(s.len() as i32);
                    b.put_slice(s.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// What goes into an ErrorResponse or NoticeResponse that pgsplit writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    pub severity: &'static str,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ErrorInfo {
    pub fn new(severity: &'static str, code: &str, message: impl Into<String>) -> ErrorInfo {
        ErrorInfo {
            severity,
            code: code.to_owned(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn error(code: &str, message: impl Into<String>) -> ErrorInfo {
        ErrorInfo::new("ERROR", code, message)
    }

    pub fn fatal(code: &str, message: impl Into<String>) -> ErrorInfo {
        ErrorInfo::new("FATAL", code, message)
    }

    pub fn notice(code: &str, message: impl Into<String>) -> ErrorInfo {
        ErrorInfo::new("NOTICE", code, message)
    }

    pub fn detail(mut self, detail: impl Into<String>) -> ErrorInfo {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> ErrorInfo {
        self.hint = Some(hint.into());
        self
    }
}

fn fields(b: &mut BytesMut, e: &ErrorInfo) {
    for tag in [b'S', b'V'] {
        b.put_u8(tag);
        cstr(b, e.severity.as_bytes());
    }
    b.put_u8(b'C');
    cstr(b, e.code.as_bytes());
    b.put_u8(b'M');
    cstr(b, e.message.as_bytes());
    if let Some(d) = &e.detail {
        b.put_u8(b'D');
        cstr(b, d.as_bytes());
    }
    if let Some(h) = &e.hint {
        b.put_u8(b'H');
        cstr(b, h.as_bytes());
    }
    b.put_u8(0);
}

pub fn error_response(buf: &mut BytesMut, e: &ErrorInfo) {
    message(buf, b'E', |b| fields(b, e));
}

pub fn notice_response(buf: &mut BytesMut, e: &ErrorInfo) {
    message(buf, b'N', |b| fields(b, e));
}

// ---- client to server -------------------------------------------------------

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
    message(buf, b'p', |b| cstr(b, password));
}

pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    message(buf, b'p', |b| {
        cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'p', |b| b.put_slice(data));
}

pub fn query(buf: &mut BytesMut, sql: &str) {
    message(buf, b'Q', |b| cstr(b, sql.as_bytes()));
}

pub fn parse(buf: &mut BytesMut, name: &str, sql: &str, param_types: &[u32]) {
    message(buf, b'P', |b| {
        cstr(b, name.as_bytes());
        cstr(b, sql.as_bytes());
        b.put_i16(param_types.len() as i16);
        for t in param_types {
            b.put_u32(*t);
        }
    });
}

/// Bind with text-format parameters and text-format results.
pub fn bind(buf: &mut BytesMut, portal: &str, statement: &str, params: &[Option<&[u8]>]) {
    message(buf, b'B', |b| {
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

fn target_byte(t: Target) -> u8 {
    match t {
        Target::Statement => b'S',
        Target::Portal => b'P',
    }
}

pub fn describe(buf: &mut BytesMut, target: Target, name: &str) {
    message(buf, b'D', |b| {
        b.put_u8(target_byte(target));
        cstr(b, name.as_bytes());
    });
}

pub fn execute(buf: &mut BytesMut, portal: &str, max_rows: i32) {
    message(buf, b'E', |b| {
        cstr(b, portal.as_bytes());
        b.put_i32(max_rows);
    });
}

pub fn close(buf: &mut BytesMut, target: Target, name: &str) {
    message(buf, b'C', |b| {
        b.put_u8(target_byte(target));
        cstr(b, name.as_bytes());
    });
}

pub fn sync(buf: &mut BytesMut) {
    message(buf, b'S', |_| {});
}

pub fn flush(buf: &mut BytesMut) {
    message(buf, b'H', |_| {});
}

pub fn terminate(buf: &mut BytesMut) {
    message(buf, b'X', |_| {});
}

pub fn copy_data(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'd', |b| b.put_slice(data));
}

pub fn copy_done(buf: &mut BytesMut) {
    message(buf, b'c', |_| {});
}

pub fn copy_fail(buf: &mut BytesMut, reason: &str) {
    message(buf, b'f', |b| cstr(b, reason.as_bytes()));
}
