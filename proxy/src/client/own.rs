//! pgsplit's own session settings, `pgsplit.read_your_writes` and
//! `pgsplit.max_replica_lag`: `SET`, `RESET` and `SHOW` of them are
//! answered by pgsplit over either protocol, and never reach a server.

use pgsplit_config::ReadYourWrites as Configured;
use pgsplit_router::ryw::Mode;
use pgsplit_router::session_cmd::{session_command, SessionCommand};

use super::session::Client;
use crate::admin::Outcome;
use crate::shared::LagLimit;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Verb {
    Set,
    Reset,
    Show,
}

/// pgsplit's own session settings.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum OwnSetting {
    ReadYourWrites,
    MaxReplicaLag,
}

impl OwnSetting {
    fn named(name: &str) -> Option<OwnSetting> {
        if name.eq_ignore_ascii_case("pgsplit.read_your_writes") {
            Some(OwnSetting::ReadYourWrites)
        } else if name.eq_ignore_ascii_case("pgsplit.max_replica_lag") {
            Some(OwnSetting::MaxReplicaLag)
        } else {
            None
        }
    }

    /// The one column `SHOW` answers with.
    pub(super) fn columns(self) -> &'static [&'static str] {
        match self {
            OwnSetting::ReadYourWrites => &["pgsplit.read_your_writes"],
            OwnSetting::MaxReplicaLag => &["pgsplit.max_replica_lag"],
        }
    }
}

/// The read-your-writes mode a configured one stands for.
pub(super) fn mode_of(c: Configured) -> Mode {
    match c {
        Configured::Off => Mode::Off,
        Configured::Transaction => Mode::Transaction,
        Configured::Session => Mode::Session,
        Configured::Sticky => Mode::Sticky,
        Configured::Causal => Mode::Causal,
        Configured::Global => Mode::Global,
        Configured::User => Mode::User,
    }
}

/// Whether `text` (a Query or Parse text, maybe NUL-terminated) is one
/// `SET`, `RESET` or `SHOW` of one of pgsplit's settings. Checked for
/// every statement: the common case is ruled out by the first word.
pub(super) fn own_command(text: &[u8]) -> Option<(Verb, OwnSetting)> {
    let start = text.iter().position(|b| !b.is_ascii_whitespace())?;
    let word = text.get(start..start + 5)?;
    let plausible = word[..3].eq_ignore_ascii_case(b"set")
        || word[..4].eq_ignore_ascii_case(b"show")
        || word.eq_ignore_ascii_case(b"reset");
    if !plausible {
        return None;
    }
    let text = super::text::until_nul(text);
    if !text.windows(8).any(|w| w.eq_ignore_ascii_case(b"pgsplit.")) {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    // One statement only: a trailing `;` at most.
    let body = text.trim_end().trim_end_matches(';');
    if body.contains(';') {
        return None;
    }
    match session_command(body) {
        Some(SessionCommand::Set(n)) => OwnSetting::named(&n).map(|w| (Verb::Set, w)),
        Some(SessionCommand::Reset(n)) => OwnSetting::named(&n).map(|w| (Verb::Reset, w)),
        _ => {
            let mut words = body.split_whitespace();
            let show = words.next()?.eq_ignore_ascii_case("show");
            let which = OwnSetting::named(words.next()?)?;
            (show && words.next().is_none()).then_some((Verb::Show, which))
        }
    }
}

impl Client {
    /// Runs `SET`, `RESET` or `SHOW` of one of pgsplit's settings.
    pub(super) fn own_outcome(&mut self, verb: Verb, which: OwnSetting, sql: &str) -> Outcome {
        match (verb, which) {
            (Verb::Show, OwnSetting::ReadYourWrites) => show(which, ryw_name(self.ryw_mode)),
            (Verb::Show, OwnSetting::MaxReplicaLag) => show(which, &lag_text(self.lag_limit)),
            (Verb::Reset, OwnSetting::ReadYourWrites) => {
                self.ryw_mode = self.default_ryw_mode;
                done("RESET")
            }
            (Verb::Reset, OwnSetting::MaxReplicaLag) => {
                self.lag_limit = LagLimit::from_config(&self.shared.config.health);
                done("RESET")
            }
            (Verb::Set, OwnSetting::ReadYourWrites) => match parse_ryw(sql) {
                Some(mode) => {
                    self.ryw_mode = mode;
                    done("SET")
                }
                None => Outcome::Error(crate::errors::invalid_own_setting(
                    sql,
                    "pgsplit.read_your_writes takes off, transaction, session, sticky, causal or global.",
                )),
            },
            (Verb::Set, OwnSetting::MaxReplicaLag) => match parse_lag(sql, self.lag_limit) {
                Some(limit) => {
                    self.lag_limit = limit;
                    done("SET")
                }
                None => Outcome::Error(crate::errors::invalid_own_setting(
                    sql,
                    "pgsplit.max_replica_lag takes a time like '1s' or '500ms', or a size like '16MB'; 0 turns that limit off.",
                )),
            },
        }
    }
}

fn show(which: OwnSetting, value: &str) -> Outcome {
    Outcome::Rows {
        columns: which.columns(),
        rows: vec![vec![Some(value.to_owned())]],
    }
}

fn done(tag: &'static str) -> Outcome {
    Outcome::Done { tag, note: None }
}

/// The value of a SET statement (`= v` or `TO v`), unquoted and lowercase.
fn set_value(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    let value = lower
        .split_once('=')
        .map(|(_, v)| v)
        .or_else(|| lower.split_once(" to ").map(|(_, v)| v))?;
    Some(
        value
            .trim()
            .trim_end_matches(';')
            .trim()
            .trim_matches('\'')
            .trim_matches('"')
            .trim()
            .to_owned(),
    )
}

/// `'1s'` sets the time limit, `'16MB'` the byte limit; the other stays.
fn parse_lag(sql: &str, current: LagLimit) -> Option<LagLimit> {
    let value = set_value(sql)?;
    if value == "0" {
        return Some(LagLimit {
            bytes: 0,
            millis: 0,
        });
    }
    let digits = value
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .trim();
    let unit = value[digits.len()..].trim();
    let bytes_per = match unit {
        "b" => Some(1u64),
        "kb" => Some(1 << 10),
        "mb" => Some(1 << 20),
        "gb" => Some(1 << 30),
        _ => None,
    };
    if let Some(per) = bytes_per {
        let n: u64 = digits.parse().ok()?;
        return Some(LagLimit {
            bytes: n.checked_mul(per)?,
            ..current
        });
    }
    let d = humantime::parse_duration(&value).ok()?;
    Some(LagLimit {
        millis: d.as_millis() as u64,
        ..current
    })
}

fn lag_text(l: LagLimit) -> String {
    let time = if l.millis == 0 {
        "off".to_owned()
    } else {
        humantime::format_duration(std::time::Duration::from_millis(l.millis)).to_string()
    };
    let bytes = if l.bytes == 0 {
        "off".to_owned()
    } else {
        format!("{} bytes", l.bytes)
    };
    format!("{time}, {bytes}")
}

/// The mode in `SET pgsplit.read_your_writes = 'mode'` (or `TO mode`).
pub(super) fn parse_ryw(sql: &str) -> Option<Mode> {
    Some(match set_value(sql)?.as_str() {
        "off" => Mode::Off,
        "transaction" => Mode::Transaction,
        "session" => Mode::Session,
        "sticky" => Mode::Sticky,
        "causal" => Mode::Causal,
        "global" => Mode::Global,
        "user" => Mode::User,
        _ => return None,
    })
}

fn ryw_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Off => "off",
        Mode::Transaction => "transaction",
        Mode::Session => "session",
        Mode::Sticky => "sticky",
        Mode::Causal => "causal",
        Mode::Global => "global",
        Mode::User => "user",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_commands_are_told_apart_from_server_settings() {
        let cmd = |t: &str| own_command(t.as_bytes());
        use OwnSetting::*;
        assert_eq!(
            cmd("SET pgsplit.read_your_writes = 'off'"),
            Some((Verb::Set, ReadYourWrites))
        );
        assert_eq!(
            cmd("  reset pgsplit.max_replica_lag;"),
            Some((Verb::Reset, MaxReplicaLag))
        );
        assert_eq!(
            cmd("show PGSPLIT.read_your_writes\0"),
            Some((Verb::Show, ReadYourWrites))
        );
        assert_eq!(cmd("SET search_path = a"), None);
        assert_eq!(cmd("SHOW search_path"), None);
        assert_eq!(cmd("SELECT 'pgsplit.read_your_writes'"), None);
        assert_eq!(cmd("SET pgsplit.read_your_writes = 'off'; SELECT 1"), None);
        assert_eq!(cmd("SET pgsplit.other = 1"), None);
        assert_eq!(cmd("SET"), None);
    }

    #[test]
    fn read_your_writes_values_parse() {
        assert_eq!(
            parse_ryw("SET pgsplit.read_your_writes = 'off'"),
            Some(Mode::Off)
        );
        assert_eq!(
            parse_ryw("set pgsplit.read_your_writes to global;"),
            Some(Mode::Global)
        );
        assert_eq!(
            parse_ryw("SET pgsplit.read_your_writes = \"Session\""),
            Some(Mode::Session)
        );
        assert_eq!(
            parse_ryw("SET pgsplit.read_your_writes = 'sometimes'"),
            None
        );
    }

    #[test]
    fn lag_limits_parse_as_time_or_size() {
        let base = LagLimit {
            bytes: 100,
            millis: 10_000,
        };
        let set = |v: &str| parse_lag(&format!("SET pgsplit.max_replica_lag = {v}"), base);
        assert_eq!(
            set("'1s'"),
            Some(LagLimit {
                bytes: 100,
                millis: 1000
            })
        );
        assert_eq!(
            set("'250ms'"),
            Some(LagLimit {
                bytes: 100,
                millis: 250
            })
        );
        assert_eq!(
            set("'16MB'"),
            Some(LagLimit {
                bytes: 16 << 20,
                millis: 10_000
            })
        );
        assert_eq!(
            set("0"),
            Some(LagLimit {
                bytes: 0,
                millis: 0
            })
        );
        assert_eq!(set("'soon'"), None);
        assert_eq!(
            lag_text(LagLimit {
                bytes: 0,
                millis: 1500
            }),
            "1s 500ms, off"
        );
    }
}
