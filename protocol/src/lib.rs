//! PostgreSQL wire protocol for pgsplit: framing, message views, encoders and
//! authentication, over `bytes` and nothing else.
//!
//! The proxy's currency is a [`Frame`]: one whole message as it arrived,
//! cut from the session's read buffer without copying. Most frames (DataRow,
//! RowDescription, CopyData...) are forwarded untouched. For the few the proxy
//! must understand, [`frontend::parse`] and [`backend::parse`] give borrowed
//! views over the frame's bytes: no allocation, no copy.
//!
//! Messages pgsplit writes itself (its own errors, startup replies, admin
//! results, the startup and auth it sends to servers) are appended to a
//! caller-owned `BytesMut` by the functions in [`encode`], so a session can
//! batch several and flush once.
//!
//! [`tag`] names every message's tag byte, by direction
//! (`tag::frontend::PARSE`, `tag::backend::PARSE_COMPLETE`); code that writes
//! or matches a message uses those, never a bare byte.
//!
//! [`auth`] holds SCRAM-SHA-256 (server side, to check clients) and MD5.
//!
//! This crate never does I/O and never depends on an async runtime: sockets,
//! timeouts and sessions belong to the `pgsplit` binary.

pub mod auth;
pub mod backend;
pub mod encode;
mod error;
pub mod frame;
pub mod frontend;
pub mod pipeline;
pub mod startup;
pub mod tag;
mod wire;

pub use error::ProtocolError;
pub use frame::{split_frame, Direction, Frame, DEFAULT_MAX_MESSAGE_SIZE};

/// Transaction status from ReadyForQuery: the server's own word on whether a
/// connection is idle, inside a transaction, or inside a failed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TransactionStatus {
    pub fn from_byte(b: u8) -> Option<TransactionStatus> {
        match b {
            b'I' => Some(TransactionStatus::Idle),
            b'T' => Some(TransactionStatus::InTransaction),
            b'E' => Some(TransactionStatus::Failed),
            _ => None,
        }
    }

    pub fn as_byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}
