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

#[derive(Clone, Copy)]
pub(super) enum SessionCommandKind {
    Set,
    Reset,
    Show,
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
    Primary,
}

impl Session {
    /// Waits up to `routing.causal_wait` for a replica to replay `min_lsn`,
    /// then routes the read there, or to the primary.
    pub(super) async fn wait_for_replica(&mut self, min_lsn: u64) -> Result<(), SessionError> {
        self.shared.ryw.waits.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.shared.config.routing.causal_wait;
        let backend = loop {
            match self.shared.pick_reader(&[], min_lsn) {
                Some(b) if b != self.shared.primary => break b,
                _ if tokio::time::Instant::now() >= deadline => break self.shared.primary,
                _ => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
            }
        };
        self.read_min_lsn = min_lsn;
        match self.attach(backend, true).await {
            Ok(()) => self.open_segment = true,
            Err(info) => self.reject(info)?,
        }
        Ok(())
    }

    pub(super) fn replica_satisfies(&self, replica: usize, need: ReadNeed) -> bool {
        match need {
            ReadNeed::Any => true,
            ReadNeed::AtLeast(lsn) => self.shared.positions[replica].lsn() >= lsn,
            ReadNeed::Primary => false,
        }
    }

    pub(super) fn read_target(&mut self, need: ReadNeed, weight: Weight) -> Decision {
        let primary = self.shared.primary;
        let min_lsn = match need {
            ReadNeed::Any => 0,
            ReadNeed::AtLeast(lsn) => lsn,
            ReadNeed::Primary => {
                self.read_min_lsn = u64::MAX;
                return Decision::Target {
                    backend: primary,
                    read: true,
                };
            }
        };
        self.read_min_lsn = min_lsn;
        let picked = match weight {
            Weight::Runs => self.shared.pick_reader(&[], min_lsn),
            Weight::PrepareOnly => self.shared.peek_reader(min_lsn),
        };
        match picked {
            Some(backend) if backend != primary || min_lsn == 0 => Decision::Target {
                backend,
                read: true,
            },
            // No replica has this session's writes yet.
            _ if min_lsn > 0 => {
                if self.shared.config.routing.causal_wait.is_zero() {
                    Decision::Target {
                        backend: primary,
                        read: true,
                    }
                } else {
                    Decision::WaitForReplica { min_lsn }
                }
            }
            _ => Decision::Reject(no_reader_error()),
        }
    }

    pub(super) fn read_need(&self) -> ReadNeed {
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
            Mode::Causal if self.write_lsn == 0 => ReadNeed::Any,
            Mode::Causal => ReadNeed::AtLeast(self.write_lsn),
            Mode::Global => {
                // A write whose position is still being read may be newer
                // than anything a replica has.
                if self.shared.captures_in_flight.load(Ordering::Acquire) > 0 {
                    return ReadNeed::Primary;
                }
                match self.shared.global_write_lsn.load(Ordering::Acquire) {
                    0 => ReadNeed::Any,
                    lsn => ReadNeed::AtLeast(lsn),
                }
            }
        }
    }

    /// Answers `SET`, `RESET` and `SHOW` of pgsplit's own settings, which
    /// no server knows about.
    pub(super) fn answer_setting(&mut self, kind: SessionCommandKind) -> Result<(), SessionError> {
        let max = self.shared.config.limits.max_message_size;
        let frame = split_frame(&mut self.rbuf, Direction::Frontend, max)?
            .expect("decide() saw a complete Query");
        let FrontendMessage::Query { sql } = frontend::parse(&frame)? else {
            unreachable!("settings arrive as a Query");
        };
        let sql = String::from_utf8_lossy(sql);
        self.decided_query = None;
        match kind {
            SessionCommandKind::Show => {
                encode::row_description(&mut self.wbuf, &["pgsplit.read_your_writes"]);
                encode::data_row(&mut self.wbuf, &[Some(ryw_name(self.ryw))]);
                encode::command_complete(&mut self.wbuf, "SHOW");
            }
            SessionCommandKind::Reset => {
                self.ryw = self.default_ryw;
                encode::command_complete(&mut self.wbuf, "RESET");
            }
            SessionCommandKind::Set => match parse_ryw(&sql) {
                Some(mode) => {
                    self.set_ryw(mode);
                    encode::command_complete(&mut self.wbuf, "SET");
                }
                None => encode::error_response(
                    &mut self.wbuf,
                    &ErrorInfo::error("22023", format!("pgsplit: invalid value in {sql:?}"))
                        .hint("pgsplit.read_your_writes takes off, transaction, session, sticky, causal or global."),
                ),
            },
        }
        encode::ready_for_query(&mut self.wbuf, self.tx);
        Ok(())
    }
}

/// Whether a Query is `SET`/`RESET`/`SHOW pgsplit.read_your_writes`.
pub(super) fn own_setting(a: &Analysis, sql: &[u8]) -> Option<SessionCommandKind> {
    if a.statement_count != 1 {
        return None;
    }
    let text = std::str::from_utf8(sql).ok()?;
    let is_ours = |name: &str| name.eq_ignore_ascii_case("pgsplit.read_your_writes");
    match pgsplit_router::session_cmd::session_command(text) {
        Some(pgsplit_router::session_cmd::SessionCommand::Set(n)) if is_ours(&n) => {
            Some(SessionCommandKind::Set)
        }
        Some(pgsplit_router::session_cmd::SessionCommand::Reset(n)) if is_ours(&n) => {
            Some(SessionCommandKind::Reset)
        }
        _ => {
            let mut words = text.split_whitespace();
            let show = words.next()?.eq_ignore_ascii_case("show");
            let name = words.next()?.trim_end_matches(';');
            (show && is_ours(name)).then_some(SessionCommandKind::Show)
        }
    }
}

/// The mode in `SET pgsplit.read_your_writes = 'mode'` (or `TO mode`).
pub(super) fn parse_ryw(sql: &str) -> Option<pgsplit_config::ReadYourWrites> {
    let lower = sql.to_ascii_lowercase();
    let value = lower
        .split_once('=')
        .map(|(_, v)| v)
        .or_else(|| lower.split_once(" to ").map(|(_, v)| v))?;
    Some(
        match value
            .trim()
            .trim_end_matches(';')
            .trim()
            .trim_matches('\'')
            .trim_matches('"')
        {
            "off" => Mode::Off,
            "transaction" => Mode::Transaction,
            "session" => Mode::Session,
            "sticky" => Mode::Sticky,
            "causal" => Mode::Causal,
            "global" => Mode::Global,
            _ => return None,
        },
    )
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
}
