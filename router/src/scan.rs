//! Best-effort verdict from keywords alone, for text the parser rejected
//! (valid PostgreSQL that sqlparser does not know, such as
//! `BEGIN ... DEFERRABLE`, `DO`, `REINDEX`) or was never given because it is
//! longer than `max_parse_len`.
//!
//! The result is never a read: text that was not understood goes to the
//! primary unless hinted. What the scan adds is the session effects the
//! proxy must not miss, and whether the text certainly writes, so that a
//! replica hint on it is still refused.

use crate::functions::{FnClass, FunctionPolicy};
use crate::lex::{Lexer, Tok};
use crate::verdict::{Kind, Outcome};
use crate::Effects;

/// First words of statements that a standby refuses.
const WRITE_VERBS: &[&str] = &[
    "alter",
    "analyze",
    "checkpoint",
    "cluster",
    "comment",
    "create",
    "delete",
    "drop",
    "grant",
    "import",
    "insert",
    "listen",
    "lock",
    "merge",
    "notify",
    "reassign",
    "refresh",
    "reindex",
    "revoke",
    "security",
    "truncate",
    "update",
    "vacuum",
];

/// What one statement's tokens revealed.
#[derive(Default)]
struct Stmt<'a> {
    words: [&'a str; 4],
    nwords: usize,
    tokens: usize,
    depth: i32,
    /// Last access mode seen (`READ ONLY` = true, `READ WRITE` = false).
    read_only: bool,
    prev_word: &'a str,
    star_second: bool,
    locking: bool,
    into: bool,
    into_temp: bool,
    dml_word: bool,
    from_at_top: bool,
    with_hold: bool,
    to_word: bool,
    effects: Effects,
}

impl<'a> Stmt<'a> {
    fn word(&self, i: usize) -> &'a str {
        self.words[i]
    }

    fn is(&self, i: usize, kw: &str) -> bool {
        self.words[i].eq_ignore_ascii_case(kw)
    }

    fn see_word(&mut self, w: &'a str) {
        let prev = self.prev_word;
        let is = |kw: &str| w.eq_ignore_ascii_case(kw);
        let prev_is = |kw: &str| prev.eq_ignore_ascii_case(kw);
        if prev_is("read") && (is("only") || is("write")) {
            self.read_only = is("only");
        }
        if prev_is("for") && (is("update") || is("share") || is("no") || is("key")) {
            self.locking = true;
        }
        if prev_is("into") && (is("temp") || is("temporary")) {
            self.into_temp = true;
        }
        if prev_is("with") && is("hold") {
            self.with_hold = true;
        }
        self.into |= is("into");
        self.to_word |= is("to");
        self.dml_word |= is("insert") || is("update") || is("delete") || is("merge");
        self.from_at_top |= self.depth == 0 && is("from");
        if self.nwords < self.words.len() {
            self.words[self.nwords] = w;
            self.nwords += 1;
        }
        self.prev_word = w;
    }

    /// Kind and effects of the finished statement.
    fn finish(self) -> (Kind, Effects) {
        let first = self.word(0).to_ascii_lowercase();
        let mut fx = self.effects;
        let mut kind = Kind::Primary;
        match first.as_str() {
            "begin" | "start" => {
                fx.begin = true;
                fx.begin_read_only = self.read_only;
            }
            "commit" | "end" | "abort" => fx.commit_or_rollback = !self.is(1, "prepared"),
            "rollback" => fx.commit_or_rollback = !self.is(1, "prepared") && !self.to_word,
            "set" => {
                if self.is(1, "transaction") {
                    fx.set_transaction_read_only = self.read_only;
                } else if !self.is(1, "local") && !self.is(1, "constraints") {
                    fx.set_session = true;
                }
            }
            "reset" => fx.set_session = true,
            "discard" => fx.discard_all = self.is(1, "all"),
            "prepare" => fx.pins_session = !self.is(1, "transaction"),
            "deallocate" => {
                fx.deallocate_all = self
                    .word(self.nwords.saturating_sub(1))
                    .eq_ignore_ascii_case("all")
            }
            "load" => fx.pins_session = true,
            "declare" => fx.pins_session |= self.with_hold,
            "unlisten" => fx.unlisten_all = self.star_second,
            "copy" if self.from_at_top => kind = Kind::Write,
            _ => {}
        }
        match first.as_str() {
            "listen" => fx.pins_session = true,
            "create" => {
                let temp = self.words[1..self.nwords]
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case("temp") || w.eq_ignore_ascii_case("temporary"));
                fx.pins_session |= temp;
            }
            _ => {}
        }
        if WRITE_VERBS.contains(&first.as_str()) || self.locking || self.dml_word {
            kind = Kind::Write;
        }
        if self.into && matches!(first.as_str(), "select" | "with") {
            kind = Kind::Write;
            fx.pins_session |= self.into_temp;
        }
        (kind, fx)
    }
}

/// Classifies `sql` from keywords only. Never a read.
pub(crate) fn scan(sql: &str, policy: &FunctionPolicy) -> Outcome {
    let mut out = Outcome::new(Kind::Primary, Effects::default());
    out.parsed = false;
    out.count = 0;
    let mut lx = Lexer::new(sql);
    let mut st = Stmt::default();
    let mut prev: Option<(Tok, &str)> = None;
    let finish = |st: Stmt<'_>, out: &mut Outcome| {
        if st.tokens > 0 {
            let (kind, fx) = st.finish();
            out.kind = out.kind.max(kind);
            out.effects |= fx;
            out.count += 1;
        }
    };
    while let Some(t) = lx.next() {
        let text = lx.text(&t);
        match t.tok {
            Tok::Punct(b';') => {
                finish(std::mem::take(&mut st), &mut out);
                prev = None;
                continue;
            }
            Tok::Word => st.see_word(text),
            Tok::Punct(b'(') => {
                st.depth += 1;
                if let Some((Tok::Word, name)) = prev {
                    if let FnClass::Writer(fx) = policy.classify(name) {
                        st.effects |= fx;
                    }
                }
            }
            Tok::Punct(b')') => st.depth -= 1,
            Tok::Punct(b'*') if st.tokens == 1 => st.star_second = true,
            _ => {}
        }
        st.tokens += 1;
        prev = Some((t.tok, text));
    }
    finish(st, &mut out);
    out
}
