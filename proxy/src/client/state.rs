//! What a client session has set up that every server connection it uses
//! must reflect: session settings, protocol-level prepared statements, and
//! whether it holds state that cannot be moved (and so is pinned).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use pgsplit_router::session_cmd::SessionCommand;
use pgsplit_router::Analysis;

/// A statement the client prepared with Parse, kept so it can be prepared
/// again on any other server connection before a Bind or Describe uses it.
pub struct Statement {
    /// Unique within the session: tells a re-Parse of the same name apart.
    pub id: u64,
    /// The client's Parse message, copied (not a view into a read buffer,
    /// which would pin the whole buffer in memory).
    pub parse: Bytes,
    pub analysis: Arc<Analysis>,
    /// For `SET`/`RESET` statements: the command and its text, to record
    /// when an Execute of it succeeds.
    pub session_cmd: Option<(SessionCommand, Arc<str>)>,
}

/// Why a session must stay on the primary connection it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// LISTEN, temporary objects, session advisory locks, SQL PREPARE,
    /// `DECLARE ... WITH HOLD`, LOAD.
    UnmovableState,
    /// A settings change pgsplit cannot replay exactly (`set_config()`, or
    /// SET combined with other statements in one query string).
    UnreplayableSetting,
}

#[derive(Default)]
pub struct SessionState {
    /// Session-level SET statements in effect, one per parameter, in order.
    sets: Vec<(String, Arc<str>)>,
    /// Bumped on every settings change; connections remember the version
    /// they have applied.
    pub version: u64,
    pub pinned: Option<Pin>,
    /// `default_transaction_read_only` as the server last reported it.
    pub default_read_only: bool,
    pub statements: HashMap<Bytes, Arc<Statement>>,
    next_statement_id: u64,
    /// A `BEGIN` answered by pgsplit and not yet sent anywhere, so the
    /// transaction's first statement can still choose the server
    /// (`SET TRANSACTION READ ONLY` may run the whole transaction on a replica).
    pub deferred_begin: Option<String>,
}

impl SessionState {
    pub fn new(default_read_only: bool) -> SessionState {
        SessionState {
            default_read_only,
            ..SessionState::default()
        }
    }

    pub fn next_statement_id(&mut self) -> u64 {
        self.next_statement_id += 1;
        self.next_statement_id
    }

    pub fn pin(&mut self, why: Pin) {
        if self.pinned.is_none() {
            tracing::debug!(?why, "session pinned to its primary connection");
            self.pinned = Some(why);
        }
    }

    /// Records a settings command that succeeded.
    pub fn apply(&mut self, cmd: &SessionCommand, sql: &Arc<str>) {
        match cmd {
            SessionCommand::Set(name) => {
                self.sets.retain(|(n, _)| n != name);
                self.sets.push((name.clone(), Arc::clone(sql)));
            }
            SessionCommand::Reset(name) => self.sets.retain(|(n, _)| n != name),
            SessionCommand::ResetAll => self.sets.clear(),
            SessionCommand::DiscardAll => {
                self.sets.clear();
                self.statements.clear();
                self.pinned = None;
            }
        }
        self.version += 1;
    }

    /// The query that brings a connection at `from_version` to the session's
    /// settings: everything is reset first, since the connection may carry
    /// settings this session has since reset.
    pub fn replay_sql(&self, from_version: u64) -> Option<String> {
        if from_version == self.version {
            return None;
        }
        let mut sql = String::from("RESET ALL");
        for (_, stmt) in &self.sets {
            sql.push_str("; ");
            sql.push_str(stmt.trim().trim_end_matches(';'));
        }
        Some(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_replay_keeps_the_last_value_per_parameter() {
        let mut s = SessionState::default();
        assert_eq!(s.replay_sql(0), None);
        s.apply(
            &SessionCommand::Set("search_path".into()),
            &"SET search_path = a".into(),
        );
        s.apply(
            &SessionCommand::Set("timezone".into()),
            &"SET TIME ZONE 'UTC';".into(),
        );
        s.apply(
            &SessionCommand::Set("search_path".into()),
            &"SET search_path = b".into(),
        );
        assert_eq!(
            s.replay_sql(0).unwrap(),
            "RESET ALL; SET TIME ZONE 'UTC'; SET search_path = b"
        );
        assert_eq!(s.replay_sql(s.version), None);
        s.apply(
            &SessionCommand::Reset("timezone".into()),
            &"RESET timezone".into(),
        );
        assert_eq!(s.replay_sql(1).unwrap(), "RESET ALL; SET search_path = b");
        s.apply(&SessionCommand::ResetAll, &"RESET ALL".into());
        assert_eq!(s.replay_sql(1).unwrap(), "RESET ALL");
    }

    #[test]
    fn discard_all_unpins_and_forgets_statements() {
        let mut s = SessionState::default();
        s.pin(Pin::UnmovableState);
        s.apply(&SessionCommand::DiscardAll, &"DISCARD ALL".into());
        assert_eq!(s.pinned, None);
        assert!(s.statements.is_empty());
    }
}
