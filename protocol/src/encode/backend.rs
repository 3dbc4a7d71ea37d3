//! Messages a server sends: what pgsplit answers clients with.

use bytes::{BufMut, BytesMut};

use super::{cstr, message};
use crate::tag::backend as be;
use crate::TransactionStatus;

pub fn auth_ok(buf: &mut BytesMut) {
    message(buf, be::AUTHENTICATION, |b| b.put_i32(0));
}

pub fn auth_cleartext(buf: &mut BytesMut) {
    message(buf, be::AUTHENTICATION, |b| b.put_i32(3));
}

pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    message(buf, be::AUTHENTICATION, |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    message(buf, be::AUTHENTICATION, |b| {
        b.put_i32(10);
        for m in mechanisms {
            cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    message(buf, be::AUTHENTICATION, |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    message(buf, be::AUTHENTICATION, |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    message(buf, be::PARAMETER_STATUS, |b| {
        cstr(b, name.as_bytes());
        cstr(b, value.as_bytes());
    });
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    message(buf, be::BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    message(buf, be::READY_FOR_QUERY, |b| b.put_u8(status.as_byte()));
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    message(buf, be::COMMAND_COMPLETE, |b| cstr(b, tag.as_bytes()));
}

pub fn empty_query_response(buf: &mut BytesMut) {
    message(buf, be::EMPTY_QUERY_RESPONSE, |_| {});
}

/// ParseComplete: the reply to a Parse.
pub fn parse_complete(buf: &mut BytesMut) {
    message(buf, be::PARSE_COMPLETE, |_| {});
}

/// BindComplete: the reply to a Bind.
pub fn bind_complete(buf: &mut BytesMut) {
    message(buf, be::BIND_COMPLETE, |_| {});
}

/// CloseComplete: the reply to a Close (also when nothing had that name).
pub fn close_complete(buf: &mut BytesMut) {
    message(buf, be::CLOSE_COMPLETE, |_| {});
}

/// NoData: the described statement or portal returns no rows.
pub fn no_data(buf: &mut BytesMut) {
    message(buf, be::NO_DATA, |_| {});
}

/// PortalSuspended: Execute stopped at its row limit; the portal remains.
pub fn portal_suspended(buf: &mut BytesMut) {
    message(buf, be::PORTAL_SUSPENDED, |_| {});
}

/// ParameterDescription: the type OIDs of a described statement's
/// parameters (`&[]` for a statement without any), sent before its
/// RowDescription or NoData.
pub fn parameter_description(buf: &mut BytesMut, param_types: &[u32]) {
    message(buf, be::PARAMETER_DESCRIPTION, |b| {
        b.put_i16(param_types.len() as i16);
        for t in param_types {
            b.put_u32(*t);
        }
    });
}

/// Tells a client that asked for protocol 3.x (x > 0) or sent `_pq_.`
/// options what the proxy actually speaks, as PostgreSQL does.
pub fn negotiate_protocol_version(buf: &mut BytesMut, newest_minor: i32, unrecognized: &[&str]) {
    message(buf, be::NEGOTIATE_PROTOCOL_VERSION, |b| {
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
    let text: Vec<(&str, u32)> = columns.iter().map(|c| (*c, TEXT_OID)).collect();
    row_description_typed(buf, &text);
}

/// The type OIDs pgsplit's own results use.
pub const TEXT_OID: u32 = 25;
pub const INT4_OID: u32 = 23;
pub const INT8_OID: u32 = 20;
pub const NUMERIC_OID: u32 = 1700;
pub const TIMESTAMPTZ_OID: u32 = 1184;

/// Columns with a type each (an OID above); values are sent as text.
pub fn row_description_typed(buf: &mut BytesMut, columns: &[(&str, u32)]) {
    message(buf, be::ROW_DESCRIPTION, |b| {
        b.put_i16(columns.len() as i16);
        for (name, oid) in columns {
            let size: i16 = match *oid {
                INT4_OID => 4,
                INT8_OID | TIMESTAMPTZ_OID => 8,
                _ => -1,
            };
            cstr(b, name.as_bytes());
            b.put_i32(0); // table oid
            b.put_i16(0); // column number
            b.put_i32(*oid as i32);
            b.put_i16(size);
            b.put_i32(-1); // type modifier
            b.put_i16(0); // format: text
        }
    });
}

pub fn data_row(buf: &mut BytesMut, values: &[Option<&str>]) {
    message(buf, be::DATA_ROW, |b| {
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
    message(buf, be::ERROR_RESPONSE, |b| fields(b, e));
}

pub fn notice_response(buf: &mut BytesMut, e: &ErrorInfo) {
    message(buf, be::NOTICE_RESPONSE, |b| fields(b, e));
}
