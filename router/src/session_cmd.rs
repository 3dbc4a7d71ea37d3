//! Recognising the statements that change session-level settings, so the
//! proxy can replay them on every server connection the session uses.
//!
//! Only the target is extracted; the statement text itself is what gets
//! replayed, so PostgreSQL stays the judge of what the value means.

/// A statement that changes session settings, by the parameter it touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCommand {
    /// `SET [SESSION] name ...`: the lower-cased parameter name.
    Set(String),
    /// `RESET name`.
    Reset(String),
    /// `RESET ALL`.
    ResetAll,
    /// `DISCARD ALL`: settings, prepared statements, temp tables, listens,
    /// advisory locks are all gone afterwards.
    DiscardAll,
}

/// Parses one statement (no trailing `;` handling needed beyond spaces).
/// `SET LOCAL` and `SET TRANSACTION` are transaction-scoped: None.
pub fn session_command(sql: &str) -> Option<SessionCommand> {
    let mut words = Words::new(sql);
    let first = words.next()?;
    if first.eq_ignore_ascii_case("discard") {
        let what = words.next()?;
        return what
            .eq_ignore_ascii_case("all")
            .then_some(SessionCommand::DiscardAll);
    }
    let is_set = first.eq_ignore_ascii_case("set");
    if !is_set && !first.eq_ignore_ascii_case("reset") {
        return None;
    }
    let mut name = words.next()?;
    if is_set {
        if name.eq_ignore_ascii_case("local") || name.eq_ignore_ascii_case("transaction") {
            return None;
        }
        if name.eq_ignore_ascii_case("session") {
            name = words.next()?;
        }
    }
    let canonical = match name.to_ascii_lowercase().as_str() {
        "all" if !is_set => return Some(SessionCommand::ResetAll),
        "time" => "timezone".to_owned(),
        "names" => "client_encoding".to_owned(),
        "schema" => "search_path".to_owned(),
        "authorization" => "session_authorization".to_owned(),
        "characteristics" => "default_transaction_characteristics".to_owned(),
        other => unquote(other),
    };
    // `SET name FROM CURRENT` takes whatever value the connection it runs
    // on has: replayed elsewhere it would mean another value.
    if is_set {
        let (a, b) = (words.next(), words.next());
        let from_current = a.is_some_and(|w| w.eq_ignore_ascii_case("from"))
            && b.is_some_and(|w| w.eq_ignore_ascii_case("current"));
        if from_current {
            return None;
        }
    }
    Some(if is_set {
        SessionCommand::Set(canonical)
    } else {
        SessionCommand::Reset(canonical)
    })
}

fn unquote(name: &str) -> String {
    name.trim_matches('"').to_owned()
}

/// Words of a statement, skipping whitespace and comments; a word ends at
/// whitespace, `=`, `;` or a quote.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    fn new(sql: &'a str) -> Self {
        Words { rest: sql }
    }

    fn skip_noise(&mut self) {
        loop {
            let t = self.rest.trim_start();
            if let Some(after) = t.strip_prefix("--") {
                self.rest = after.find('\n').map_or("", |i| &after[i + 1..]);
            } else if let Some(after) = t.strip_prefix("/*") {
                self.rest = after.find("*/").map_or("", |i| &after[i + 2..]);
            } else {
                self.rest = t;
                return;
            }
        }
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.skip_noise();
        let end = if self.rest.starts_with('"') {
            self.rest[1..].find('"').map_or(self.rest.len(), |i| i + 2)
        } else {
            self.rest
                .find(|c: char| c.is_whitespace() || matches!(c, '=' | ';' | '\'' | '('))
                .unwrap_or(self.rest.len())
        };
        if end == 0 {
            return None;
        }
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionCommand::*;

    #[test]
    fn from_current_is_not_replayable() {
        assert_eq!(session_command("SET work_mem FROM CURRENT"), None);
        assert_eq!(session_command("set search_path from  current;"), None);
        assert_eq!(
            session_command("SET work_mem = 'from'"),
            Some(Set("work_mem".into()))
        );
    }

    #[test]
    fn set_forms() {
        let cases = [
            (
                "SET search_path = app, public",
                Some(Set("search_path".into())),
            ),
            ("set search_path to app", Some(Set("search_path".into()))),
            (
                "SET SESSION statement_timeout='5s'",
                Some(Set("statement_timeout".into())),
            ),
            (
                "  /* c */ SET TIME ZONE 'UTC'",
                Some(Set("timezone".into())),
            ),
            ("SET NAMES 'UTF8'", Some(Set("client_encoding".into()))),
            ("SET SCHEMA 'app'", Some(Set("search_path".into()))),
            ("SET ROLE reporting", Some(Set("role".into()))),
            (
                "SET SESSION AUTHORIZATION bob",
                Some(Set("session_authorization".into())),
            ),
            ("SET myapp.tenant = '42'", Some(Set("myapp.tenant".into()))),
            ("SET \"MixedCase\" = 1", Some(Set("mixedcase".into()))),
            (
                "SET application_name='x'",
                Some(Set("application_name".into())),
            ),
            ("SET LOCAL search_path = x", None),
            ("SET TRANSACTION READ ONLY", None),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                Some(Set("default_transaction_characteristics".into())),
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(session_command(sql), want, "{sql}");
        }
    }

    #[test]
    fn reset_and_discard() {
        assert_eq!(
            session_command("RESET search_path"),
            Some(Reset("search_path".into()))
        );
        assert_eq!(session_command("reset all;"), Some(ResetAll));
        assert_eq!(
            session_command("RESET TIME ZONE"),
            Some(Reset("timezone".into()))
        );
        assert_eq!(session_command("DISCARD ALL"), Some(DiscardAll));
        assert_eq!(session_command("DISCARD PLANS"), None);
    }

    #[test]
    fn other_statements_are_not_session_commands() {
        for sql in [
            "SELECT 1",
            "",
            "   ",
            "-- only a comment",
            "SETTINGS",
            "INSERT INTO set VALUES (1)",
        ] {
            assert_eq!(session_command(sql), None, "{sql:?}");
        }
    }
}
