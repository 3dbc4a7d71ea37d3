//! WAL positions read on a session's own server connection, for
//! read-your-writes: the primary's right after a commit (queued as soon
//! as the client's reply is read, its replies dropped on the way to the
//! client), and a replica's replay
//! position before a read that its last health check does not cover.

use pgsplit_protocol::backend::{parse_lsn, single_column};
use pgsplit_protocol::encode;
use pgsplit_protocol::frontend::Target;
use pgsplit_protocol::pipeline::Request;
use pgsplit_protocol::tag::backend as be;

use super::{BackendError, ServerConn};

/// Schema-qualified: a session's `search_path` cannot shadow them.
const WRITE_POSITION: &str = "SELECT pg_catalog.pg_current_wal_lsn()";
const REPLAY_POSITION: &str = "SELECT pg_catalog.pg_last_wal_replay_lsn()";
/// The name they are prepared under, for one round trip each.
const STATEMENT: &str = "pgsplit_position";

impl ServerConn {
    /// Queues a read of the primary's write position behind what this
    /// connection just committed; [`ServerConn::position_reply`] picks the
    /// answer out of the replies, which the client never sees. Only between
    /// requests and outside a transaction: it would otherwise take the
    /// transaction's snapshot.
    pub fn ask_position(&mut self) {
        debug_assert!(self.is_clean());
        self.queue_single_value(WRITE_POSITION);
        self.positions_owed = self.positions_owed.saturating_add(1);
    }

    /// The position in a DataRow the client is not sent, when one is owed
    /// to [`ServerConn::ask_position`] (pgsplit's other injected queries
    /// return no rows).
    pub fn position_reply(&mut self, body: &[u8]) -> Option<u64> {
        if self.positions_owed == 0 {
            return None;
        }
        self.positions_owed -= 1;
        lsn_of(body)
    }

    /// The replay position of the standby at the other end, asked now (one
    /// round trip, on an idle connection); `None` on a server that is not
    /// in recovery.
    pub async fn replay_position(&mut self) -> Result<Option<u64>, BackendError> {
        // Tracked like any request: abandoned mid-way (a timeout), the
        // connection is never handed out with replies still coming.
        self.queue_single_value(REPLAY_POSITION);
        self.flush().await?;
        let mut position = None;
        loop {
            let f = self.recv(1 << 16).await?;
            self.tracker.on_message(f.tag());
            match f.tag() {
                be::DATA_ROW => position = lsn_of(f.body()),
                be::READY_FOR_QUERY => {
                    self.tx =
                        pgsplit_protocol::backend::ready_status(f.body()).map_err(|source| {
                            BackendError::Protocol {
                                backend: self.backend.name.clone(),
                                source,
                            }
                        })?;
                    return Ok(position);
                }
                _ => {}
            }
        }
    }

    /// Queues `sql` over the extended protocol under a name of pgsplit's
    /// own, closed again in the same round trip: a simple Query would
    /// replace the client's unnamed statement (psql's `\gdesc` prepares
    /// one, then describes it in a second request), and a statement left
    /// behind would show in its `pg_prepared_statements`. The first Close
    /// clears one that a failed round left. Its replies are not forwarded.
    fn queue_single_value(&mut self, sql: &str) {
        let out = &mut self.out;
        encode::close(out, Target::Statement, STATEMENT);
        encode::parse(out, STATEMENT, sql, &[]);
        encode::bind(out, "", STATEMENT, &[]);
        encode::execute(out, "", 0);
        encode::close(out, Target::Statement, STATEMENT);
        encode::sync(out);
        for request in [
            Request::Close,
            Request::Parse,
            Request::Bind,
            Request::Execute,
            Request::Close,
            Request::UntilReady,
        ] {
            self.tracker.push(request, false);
        }
    }
}

/// A one-column DataRow holding a pg_lsn as text.
fn lsn_of(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(single_column(body)?).ok()?;
    parse_lsn(text).filter(|&lsn| lsn != 0)
}
