use thiserror::Error;

/// A violation of the wire protocol by the peer. Every variant is fatal for
/// the connection it came from: the byte stream can no longer be trusted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("message {tag:?} has invalid length {len} (minimum is 4)", tag = *.tag as char)]
    InvalidLength { tag: u8, len: u32 },
    #[error("message {tag:?} of {len} bytes exceeds the limit of {limit} bytes", tag = *.tag as char)]
    TooLarge { tag: u8, len: usize, limit: usize },
    #[error("startup packet has invalid length {0}")]
    InvalidStartupLength(u32),
    #[error("unsupported frontend protocol {major}.{minor}: pgsplit speaks protocol 3")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("malformed {what} message: {reason}")]
    Malformed {
        what: &'static str,
        reason: &'static str,
    },
}

impl ProtocolError {
    pub(crate) fn malformed(what: &'static str, reason: &'static str) -> ProtocolError {
        ProtocolError::Malformed { what, reason }
    }
}
