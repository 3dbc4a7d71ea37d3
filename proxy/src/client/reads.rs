//! Where a read goes: read-your-writes (a replica only once it has
//! replayed what the session, or anyone, wrote), waiting for a replica to
//! catch up, and pgsplit's own `pgsplit.read_your_writes` setting.

use std::sync::atomic::Ordering;

use pgsplit_config::ReadYourWrites as Mode;
use pgsplit_protocol::encode::{self, ErrorInfo};
use pgsplit_protocol::frontend::{self, FrontendMessage};
use pgsplit_protocol::{split_frame, Direction};
use pgsplit_router::Analysis;

use super::route::{no_reader_error, Decision};
use super::session::Session;
use crate::errors::SessionError;
use crate::shared::LagLimit;

#[derive(Clone, Copy)]
pub(super) enum SessionCommandKind {
    Set,
    Reset,
    Show,
}

/// pgsplit's own session settings.
#[derive(Clone, Copy, PartialEq, Eq)]
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

    fn name(self) -> &'static str {
        match self {
            OwnSetting::ReadYourWrites => "pgsplit.read_your_writes",
            OwnSetting::MaxReplicaLag => "pgsplit.max_replica_lag",
        }
    }
}

/// Whether a read runs anything: preparing a statement (Parse, Describe)
/// takes no turn in the rotation and goes where the next read will.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Weight {
    Runs,
    PrepareOnly,
}

/// What read-your-writes requires of the server for this session's next read.
#[derive(Clone, Copy)]
pub(super) enum ReadNeed {
    Any,
    /// A replica that has replayed at least this position, else the primary.
    AtLeast(u64),
    /// A replica that has replayed the primary's position as first read
    /// after this time ([`crate::shared::Shared::now_us`]), which no health
    /// check has read yet: for now only the primary qualifies.
    Unsampled(u64),
    Primary,
}

impl ReadNeed {
    /// The replay position a replica needs, once it is known.
    fn min_lsn(self, shared: &crate::shared::Shared) -> Option<u64> {
        match self {
            ReadNeed::Any => Some(0),
            ReadNeed::AtLeast(lsn) => Some(lsn),
            ReadNeed::Unsampled(t) => shared.primary_position_after(t),
            ReadNeed::Primary => None,
        }
    }
}

impl Session {
    /// Waits up to `routing.causal_wait` for a replica to meet `need`
    /// (first for the position it names to be read, if it is not yet),
    /// then routes the read there, or to the primary.
    pub(super) async fn wait_for_replica(&mut self, need: ReadNeed) -> Result<(), SessionError> {
        self.shared.ryw.waits.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.shared.config.routing.causal_wait;
        let mut min_lsn = u64::MAX;
        let backend = loop {
            let picked = need.min_lsn(&self.shared).and_then(|lsn| {
                min_lsn = lsn;
                self.shared
                    .pick_reader(self.avoid.as_slice(), lsn, self.lag_limit)
            });
            match picked {
                Some(b) if Some(b) != self.shared.primary() => break Some(b),
                _ if tokio::time::Instant::now() >= deadline => break None,
                _ => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
            }
        };
        self.read_min_lsn = min_lsn;
        let attached = match backend {
            Some(b) => self.attach(b, true).await,
            None => self.attach_primary(true).await,
        };
        match attached {
            Ok(()) => self.open_segment = true,
            Err(info) => self.reject(info)?,
        }
        Ok(())
    }

    pub(super) fn replica_satisfies(&self, replica: usize, need: ReadNeed) -> bool {
        match need {
            ReadNeed::Any => self.shared.standby_readable(replica, 0, self.lag_limit),
            ReadNeed::AtLeast(lsn) => self.shared.standby_readable(replica, lsn, self.lag_limit),
            ReadNeed::Unsampled(_) | ReadNeed::Primary => false,
        }
    }

    pub(super) fn read_target(&mut self, need: ReadNeed, weight: Weight) -> Decision {
        let primary = self.shared.primary();
        let min_lsn = match need {
            ReadNeed::Any => 0,
            ReadNeed::AtLeast(lsn) => lsn,
            ReadNeed::Unsampled(_) if !self.shared.config.routing.causal_wait.is_zero() => {
                return Decision::WaitForReplica(need);
            }
            ReadNeed::Unsampled(_) | ReadNeed::Primary => {
                self.read_min_lsn = u64::MAX;
                return Decision::Primary { read: true };
            }
        };
        self.read_min_lsn = min_lsn;
        let picked = match weight {
            Weight::Runs => self
                .shared
                .pick_reader(self.avoid.as_slice(), min_lsn, self.lag_limit),
            Weight::PrepareOnly => {
                self.shared
                    .peek_reader(self.avoid.as_slice(), min_lsn, self.lag_limit)
            }
        };
        match picked {
            Some(backend) if Some(backend) != primary || min_lsn == 0 => Decision::Target {
                backend,
                read: true,
            },
            // No replica has this session's writes yet.
            _ if min_lsn > 0 => {
                if self.shared.config.routing.causal_wait.is_zero() {
                    Decision::Primary { read: true }
                } else {
                    Decision::WaitForReplica(need)
                }
            }
            _ => Decision::Reject(no_reader_error()),
        }
    }

    pub(super) fn read_need(&mut self) -> ReadNeed {
        match self.ryw {
            Mode::Off | Mode::Transaction => ReadNeed::Any,
            Mode::Session if self.ever_wrote => ReadNeed::Primary,
            Mode::Session => ReadNeed::Any,
            Mode::Sticky => match self.last_write {
                Some(t) if t.elapsed() < self.shared.config.routing.sticky_duration => {
                    ReadNeed::Primary
                }
                _ => ReadNeed::Any,
            },
            Mode::Causal => {
                if self.write_at_us != 0 {
                    match self.shared.primary_position_after(self.write_at_us) {
                        // Kept: later reads need not look again.
                        Some(lsn) => {
                            self.write_lsn = lsn;
                            self.write_at_us = 0;
                        }
                        None => return ReadNeed::Unsampled(self.write_at_us),
                    }
                }
                match self.write_lsn {
                    0 => ReadNeed::Any,
                    lsn => ReadNeed::AtLeast(lsn),
                }
            }
            Mode::Global => match self.shared.last_write_us.load(Ordering::Acquire) {
                0 => ReadNeed::Any,
                t => match self.shared.primary_position_after(t) {
                    Some(lsn) => ReadNeed::AtLeast(lsn),
                    None => ReadNeed::Unsampled(t),
                },
            },
        }
    }

    /// Answers `SET`, `RESET` and `SHOW` of pgsplit's own settings, which
    /// no server knows about.
    pub(super) fn answer_setting(
        &mut self,
        kind: SessionCommandKind,
        which: OwnSetting,
    ) -> Result<(), SessionError> {
        let max = self.shared.config.limits.max_message_size;
        let frame = split_frame(&mut self.rbuf, Direction::Frontend, max)?
            .expect("decide() saw a complete Query");
        let FrontendMessage::Query { sql } = frontend::parse(&frame)? else {
            unreachable!("settings arrive as a Query");
        };
        let sql = String::from_utf8_lossy(sql);
        self.decided_query = None;
        match (kind, which) {
            (SessionCommandKind::Show, _) => {
                let value = match which {
                    OwnSetting::ReadYourWrites => ryw_name(self.ryw).to_owned(),
                    OwnSetting::MaxReplicaLag => lag_text(self.lag_limit),
                };
                encode::row_description(&mut self.wbuf, &[which.name()]);
                encode::data_row(&mut self.wbuf, &[Some(&value)]);
                encode::command_complete(&mut self.wbuf, "SHOW");
            }
            (SessionCommandKind::Reset, OwnSetting::ReadYourWrites) => {
                self.ryw = self.default_ryw;
                encode::command_complete(&mut self.wbuf, "RESET");
            }
            (SessionCommandKind::Reset, OwnSetting::MaxReplicaLag) => {
                self.lag_limit = LagLimit::from_config(&self.shared.config.health);
                encode::command_complete(&mut self.wbuf, "RESET");
            }
            (SessionCommandKind::Set, _) => match self.apply_own_setting(which, &sql) {
                Ok(()) => encode::command_complete(&mut self.wbuf, "SET"),
                Err(info) => encode::error_response(&mut self.wbuf, &info),
            },
        }
        encode::ready_for_query(&mut self.wbuf, self.tx);
        Ok(())
    }
}

impl Session {
    /// `SET pgsplit.<name> = value`, from either protocol.
    pub(super) fn apply_own_setting(
        &mut self,
        which: OwnSetting,
        sql: &str,
    ) -> Result<(), ErrorInfo> {
        match which {
            OwnSetting::ReadYourWrites => match parse_ryw(sql) {
                Some(mode) => {
                    self.ryw = mode;
                    Ok(())
                }
                None => Err(ErrorInfo::error("22023", format!("pgsplit: invalid value in {sql:?}"))
                    .hint("pgsplit.read_your_writes takes off, transaction, session, sticky, causal or global.")),
            },
            OwnSetting::MaxReplicaLag => match parse_lag(sql, self.lag_limit) {
                Some(limit) => {
                    self.lag_limit = limit;
                    Ok(())
                }
                None => Err(ErrorInfo::error("22023", format!("pgsplit: invalid value in {sql:?}"))
                    .hint("pgsplit.max_replica_lag takes a time like '1s' or '500ms', or a size like '16MB'; 0 turns that limit off.")),
            },
        }
    }
}

/// Whether a Query is `SET`/`RESET`/`SHOW` of one of pgsplit's settings.
pub(super) fn own_setting(a: &Analysis, sql: &[u8]) -> Option<(SessionCommandKind, OwnSetting)> {
    // Checked on every simple query, so first rule out the common case
    // without looking at the text: only SET, RESET and SHOW qualify.
    let show = || {
        let start = sql
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(0);
        sql.get(start..start + 4)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"show"))
    };
    if a.statement_count != 1 || !(a.effects.set_session || show()) {
        return None;
    }
    let text = std::str::from_utf8(sql).ok()?;
    match pgsplit_router::session_cmd::session_command(text) {
        Some(pgsplit_router::session_cmd::SessionCommand::Set(n)) => {
            OwnSetting::named(&n).map(|w| (SessionCommandKind::Set, w))
        }
        Some(pgsplit_router::session_cmd::SessionCommand::Reset(n)) => {
            OwnSetting::named(&n).map(|w| (SessionCommandKind::Reset, w))
        }
        _ => {
            let mut words = text.split_whitespace();
            let show = words.next()?.eq_ignore_ascii_case("show");
            let name = words.next()?.trim_end_matches(';');
            let which = OwnSetting::named(name)?;
            show.then_some((SessionCommandKind::Show, which))
        }
    }
}

/// The setting name in a `SET` the extended protocol carries, if it is
/// one of pgsplit's.
pub(super) fn own_setting_named(name: &str) -> Option<OwnSetting> {
    OwnSetting::named(name)
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
pub(super) fn parse_ryw(sql: &str) -> Option<pgsplit_config::ReadYourWrites> {
    Some(match set_value(sql)?.as_str() {
        "off" => Mode::Off,
        "transaction" => Mode::Transaction,
        "session" => Mode::Session,
        "sticky" => Mode::Sticky,
        "causal" => Mode::Causal,
        "global" => Mode::Global,
        _ => return None,
    })
}

fn ryw_name(mode: pgsplit_config::ReadYourWrites) -> &'static str {
    match mode {
        Mode::Off => "off",
        Mode::Transaction => "transaction",
        Mode::Session => "session",
        Mode::Sticky => "sticky",
        Mode::Causal => "causal",
        Mode::Global => "global",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
