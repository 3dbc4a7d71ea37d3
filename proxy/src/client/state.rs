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
///
/// On servers a named statement is called `pgsplit_<hash>` after its text
/// and parameter types, so every session that prepares the same statement
/// shares one server-side copy per connection, whatever it named it.
pub struct Statement {
    /// Hash of the query text and parameter types.
    pub hash: u64,
    /// `pgsplit_<hash>`; empty for the unnamed statement.
    pub server_name: String,
    /// The Parse body after the statement name (query, parameter types),
    /// copied so it does not pin the read buffer it came from.
    pub body: Bytes,
    pub analysis: Arc<Analysis>,
    /// For `SET`/`RESET` statements: the command and its text, to record
    /// when an Execute of it succeeds.
    pub session_cmd: Option<(SessionCommand, Arc<str>)>,
    /// A pgsplit admin command: executions are answered by pgsplit.
    pub local: bool,
}

impl Statement {
    /// The query text from the Parse body.
    pub fn sql(&self) -> &[u8] {
        let end = self
            .body
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.body.len());
        &self.body[..end]
    }
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
    /// A Query too large to read was sent unread (`stream.rs`): what it did
    /// to the session is unknown.
    UnreadQuery,
}

/// A connection's settings fingerprint that matches no session: it must be
/// replayed in full (fingerprints are 0 or odd).
pub const UNKNOWN_SETTINGS: u64 = 2;

#[derive(Default)]
pub struct SessionState {
    /// SETs equivalent to the client's startup parameters: its defaults,
    /// which `RESET` returns to.
    baseline: Vec<Arc<str>>,
    /// Session-level SET statements in effect, one per parameter, in order.
    sets: Vec<(String, Arc<str>)>,
    /// Hash of the settings (0 = server defaults); connections remember the
    /// fingerprint they have applied, whichever session applied it.
    pub fingerprint: u64,
    pub pinned: Option<Pin>,
    /// `default_transaction_read_only` as the server last reported it.
    pub default_read_only: bool,
    pub statements: HashMap<Bytes, Arc<Statement>>,
    /// A `BEGIN` answered by pgsplit and not yet sent anywhere, so the
    /// transaction's first statement can still choose the server
    /// (`SET TRANSACTION READ ONLY` may run the whole transaction on a replica).
    pub deferred_begin: Option<String>,
}

impl SessionState {
    pub fn new(baseline: Vec<Arc<str>>) -> SessionState {
        let mut s = SessionState {
            baseline,
            ..SessionState::default()
        };
        s.refresh_fingerprint();
        s
    }

    pub fn has_baseline(&self) -> bool {
        !self.baseline.is_empty()
    }

    fn refresh_fingerprint(&mut self) {
        self.fingerprint = if self.baseline.is_empty() && self.sets.is_empty() {
            0
        } else {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&self.baseline, &mut h);
            for (_, sql) in &self.sets {
                std::hash::Hash::hash(sql, &mut h);
            }
            std::hash::Hasher::finish(&h) | 1
        };
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
            SessionCommand::Reset(name) => {
                self.sets.retain(|(n, _)| n != name);
                if is_placeholder(name) {
                    self.sets.push((name.clone(), reset_of(name)));
                }
            }
            SessionCommand::ResetAll => self.reset_all(),
            SessionCommand::DiscardAll => {
                self.reset_all();
                self.statements.clear();
                self.pinned = None;
            }
        }
        self.refresh_fingerprint();
    }

    /// `RESET ALL` (or `DISCARD ALL`): back to the startup parameters. A
    /// custom setting (`myapp.tenant`) stays defined, empty, as on the
    /// server: a connection that never had it would answer "unrecognized
    /// configuration parameter" to a later `SHOW`.
    fn reset_all(&mut self) {
        let custom: Vec<String> = self
            .sets
            .iter()
            .map(|(n, _)| n)
            .filter(|n| is_placeholder(n))
            .cloned()
            .collect();
        self.sets.clear();
        for name in custom {
            let reset = reset_of(&name);
            self.sets.push((name, reset));
        }
    }

    /// The query that brings a connection whose settings have fingerprint
    /// `applied` to this session's: everything is reset first, since the
    /// connection may carry another session's settings.
    pub fn replay_sql(&self, applied: u64) -> Option<String> {
        if applied == self.fingerprint {
            return None;
        }
        let mut sql = String::from("RESET ALL");
        for stmt in self.baseline.iter().chain(self.sets.iter().map(|(_, s)| s)) {
            sql.push_str("; ");
            sql.push_str(stmt.trim().trim_end_matches(';'));
        }
        Some(sql)
    }
}

/// A custom (extension or application) setting: its name has a dot.
/// PostgreSQL keeps one defined once it was set, even after RESET.
fn is_placeholder(name: &str) -> bool {
    name.contains('.')
}

/// Defines `name` empty on a connection that lacks it, as RESET does.
fn reset_of(name: &str) -> Arc<str> {
    Arc::from(format!("RESET {}", quoted_name(name)))
}

/// `SET "name" TO 'value'`, whatever the value holds (a backslash makes
/// it an `E''` string, which means the same under either setting of
/// `standard_conforming_strings`).
pub(super) fn set_statement(name: &str, value: &str) -> String {
    let value = if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    };
    format!("SET {} TO {value}", quoted_name(name))
}

/// GUC names match case-insensitively even when quoted.
fn quoted_name(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_replay_keeps_the_last_value_per_parameter() {
        let set = |name: &str| SessionCommand::Set(name.into());
        let mut s = SessionState::new(vec!["SET application_name = 'app'".into()]);
        assert_ne!(s.fingerprint, 0);
        assert_eq!(s.replay_sql(s.fingerprint), None);
        s.apply(&set("search_path"), &"SET search_path = a".into());
        s.apply(&set("timezone"), &"SET TIME ZONE 'UTC';".into());
        s.apply(&set("search_path"), &"SET search_path = b".into());
        assert_eq!(
            s.replay_sql(0).unwrap(),
            "RESET ALL; SET application_name = 'app'; SET TIME ZONE 'UTC'; SET search_path = b"
        );
        assert_eq!(s.replay_sql(s.fingerprint), None);
        s.apply(
            &SessionCommand::Reset("timezone".into()),
            &"RESET timezone".into(),
        );
        assert_eq!(
            s.replay_sql(0).unwrap(),
            "RESET ALL; SET application_name = 'app'; SET search_path = b"
        );
        // RESET ALL returns to the startup parameters, not the server defaults.
        s.apply(&SessionCommand::ResetAll, &"RESET ALL".into());
        assert_eq!(
            s.replay_sql(0).unwrap(),
            "RESET ALL; SET application_name = 'app'"
        );
        // Another session with the same settings shares the fingerprint.
        let other = SessionState::new(vec!["SET application_name = 'app'".into()]);
        assert_eq!(other.fingerprint, s.fingerprint);
        assert_eq!(SessionState::new(Vec::new()).fingerprint, 0);
    }

    #[test]
    fn reset_custom_settings_stay_defined() {
        let mut s = SessionState::default();
        s.apply(
            &SessionCommand::Set("custom.my_guc".into()),
            &"SET custom.my_guc = 42".into(),
        );
        s.apply(
            &SessionCommand::Set("work_mem".into()),
            &"SET work_mem = '8MB'".into(),
        );
        s.apply(
            &SessionCommand::Reset("custom.my_guc".into()),
            &"RESET custom.my_guc".into(),
        );
        assert_eq!(
            s.replay_sql(0).unwrap(),
            "RESET ALL; SET work_mem = '8MB'; RESET \"custom.my_guc\""
        );
        s.apply(
            &SessionCommand::Set("app.tenant".into()),
            &"SET app.tenant = 'x'".into(),
        );
        s.apply(&SessionCommand::ResetAll, &"RESET ALL".into());
        assert_eq!(
            s.replay_sql(0).unwrap(),
            "RESET ALL; RESET \"custom.my_guc\"; RESET \"app.tenant\""
        );
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
