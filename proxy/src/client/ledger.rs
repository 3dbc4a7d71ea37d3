//! What requests in flight will change once they succeed, and what the
//! server's replies said about them.

use std::sync::Arc;

use pgsplit_protocol::TransactionStatus;
use pgsplit_router::session_cmd::SessionCommand;

/// What one request changes, recorded once it has succeeded.
#[derive(Default)]
pub(super) struct SegmentMeta {
    pub commands: Vec<(SessionCommand, Arc<str>)>,
    /// Statements the server parsed for it: known good from then on.
    pub parsed: Vec<u64>,
}

/// What a batch of server replies said, applied once the batch is read.
pub(super) enum Event {
    Ready(TransactionStatus),
    Error,
    DefaultReadOnly(bool),
    Tag(String),
    /// Client Syncs the server swallowed during COPY FROM STDIN.
    IgnoredSyncs(usize, usize),
    /// The primary's write position, read after the session's commit.
    Position(u64),
}
