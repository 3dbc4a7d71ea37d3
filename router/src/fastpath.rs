//! The fast path: decide the hottest statement shapes with one token scan
//! and no allocation, before paying for sqlparser.
//!
//! It answers only when it is sure to say exactly what the parser would
//! (a test runs a corpus through both); otherwise it returns `None`. Shapes:
//! - `SELECT`/`VALUES`/`WITH` with no `FOR`, `INTO` or DML keyword anywhere
//!   (a writable CTE needs one) and every call being an unqualified,
//!   known-harmless function;
//! - `TABLE name`, `SHOW ...`;
//! - bare `BEGIN`/`START TRANSACTION`/`COMMIT`/`END`/`ROLLBACK`/`ABORT`;
//! - `SET name = ...`/`SET name TO ...`, `RESET name`;
//! - `INSERT`/`UPDATE`/`DELETE`/`MERGE` calling no function with session
//!   effects.
//!
//! Only single statements (trailing semicolons allowed) are handled.
//!
//! It recognises shapes, not grammar: a malformed statement that looks like
//! a plain `SELECT` (`SELECT FROM WHERE`) may be sent to a replica, which
//! answers with the same syntax error the primary would.

use crate::functions::{FnClass, FunctionPolicy};
use crate::lex::{Lexer, Tok, Token};
use crate::node_local;
use crate::verdict::{Kind, Outcome};
use crate::Effects;

/// Reserved words that may stand before `(` without being a function
/// call. Only reserved (or column-name-only) keywords qualify: anything
/// else could be the name of a user's function. Sorted for binary search.
#[rustfmt::skip]
pub(crate) const PAREN_KEYWORDS: &[&str] = &[
    "all", "and", "any", "array", "as", "between", "cast", "distinct", "else", "except", "exists",
    "from", "group", "having", "in", "intersect", "lateral", "limit", "not", "offset", "on",
    "only", "or", "select", "some", "then", "union", "using", "values", "when", "where", "window",
];

/// Unreserved words that are keywords, not calls, in one position each:
/// `agg(x) FILTER (`, `agg(x) OVER (`, `ORDER/GROUP/PARTITION BY (`.
fn soft_keyword(word: &str, before: Option<&str>) -> bool {
    match word {
        "filter" | "over" => before == Some(")"),
        "by" => before.is_some_and(|b| {
            ["order", "group", "partition"]
                .iter()
                .any(|k| b.eq_ignore_ascii_case(k))
        }),
        _ => false,
    }
}

/// Words that can turn a query into something other than a plain read:
/// row locks, `SELECT INTO`, and the DML a writable CTE needs.
const RISKY: &[&str] = &["delete", "for", "insert", "into", "merge", "update"];

/// Lower-cases a short word into `buf`; `None` if it is too long to be a
/// keyword or a listed function.
fn lower<'b>(word: &str, buf: &'b mut [u8; 64]) -> Option<&'b str> {
    let b = word.as_bytes();
    if b.len() > buf.len() {
        return None;
    }
    let out = &mut buf[..b.len()];
    out.copy_from_slice(b);
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// Tokens after the first word, remembering the last three.
struct Scan<'a> {
    lx: Lexer<'a>,
    hist: [Option<Token>; 3],
}

impl<'a> Scan<'a> {
    fn next(&mut self) -> Option<Token> {
        let t = self.lx.next()?;
        self.hist = [Some(t), self.hist[0], self.hist[1]];
        Some(t)
    }

    fn is_word(&self, t: Option<Token>, kw: &str) -> bool {
        matches!(t, Some(t) if t.tok == Tok::Word && self.lx.text(&t).eq_ignore_ascii_case(kw))
    }

    /// True when only semicolons remain.
    fn at_end(&mut self) -> bool {
        std::iter::from_fn(|| self.next()).all(|t| t.tok == Tok::Punct(b';'))
    }

    /// Consumes the rest of a single statement; false if another statement
    /// follows or a token is malformed.
    fn single_statement(&mut self) -> bool {
        while let Some(t) = self.next() {
            match t.tok {
                Tok::Bad => return false,
                Tok::Punct(b';') => return self.at_end(),
                _ => {}
            }
        }
        true
    }

    /// Called right after a `(`: what it calls. `Some(None)` for a call the
    /// fast path cannot judge (qualified or quoted name), `Some(Some(w))`
    /// for a plain word, `None` when the parenthesis follows no name.
    fn callee(&self) -> Option<Option<&'a str>> {
        let name = self.hist[1]?;
        match name.tok {
            Tok::Word if matches!(self.hist[2], Some(t) if t.tok == Tok::Punct(b'.')) => Some(None),
            Tok::Word => Some(Some(self.lx.text(&name))),
            Tok::Quoted => Some(None),
            _ => None,
        }
    }

    /// Scans a statement body; `ok_call` judges each plain-word call.
    fn body(&mut self, risky: &[&str], mut ok_call: impl FnMut(&str) -> bool) -> Option<()> {
        let mut buf = [0u8; 64];
        // Unbalanced parentheses are left to the parser to reject.
        let mut depth = 0u32;
        while let Some(t) = self.next() {
            match t.tok {
                Tok::Punct(b')') => depth = depth.checked_sub(1)?,
                Tok::Bad => return None,
                // A read of a view that describes one server goes to the
                // primary: left to the parser, which knows a relation from
                // a column.
                Tok::Word if !risky.is_empty() => {
                    let w = lower(self.lx.text(&t), &mut buf).unwrap_or("");
                    if risky.contains(&w) || node_local::relation(w) {
                        return None;
                    }
                }
                Tok::Quoted if !risky.is_empty() => {
                    let name = self.lx.text(&t).trim_matches('"');
                    if node_local::relation(name) {
                        return None;
                    }
                }
                Tok::Punct(b';') => return (depth == 0 && self.at_end()).then_some(()),
                Tok::Punct(b'(') => match self.callee() {
                    None => {}
                    Some(None) => return None,
                    Some(Some(name)) => {
                        let before = self.hist[2].map(|t| self.lx.text(&t));
                        let w = lower(name, &mut buf)?;
                        let keyword =
                            PAREN_KEYWORDS.binary_search(&w).is_ok() || soft_keyword(w, before);
                        if !keyword && !ok_call(w) {
                            return None;
                        }
                    }
                },
                _ => {}
            }
            if t.tok == Tok::Punct(b'(') {
                depth += 1;
            }
        }
        (depth == 0).then_some(())
    }
}

/// Classifies `sql` if it has one of the hot shapes.
pub(crate) fn fast_path(sql: &str, policy: &FunctionPolicy) -> Option<Outcome> {
    let mut lx = Lexer::new(sql);
    let first = lx.next()?;
    if first.tok != Tok::Word {
        return None;
    }
    let mut buf = [0u8; 64];
    let verb = lower(lx.text(&first), &mut buf)?;
    let mut s = Scan {
        lx,
        hist: [None; 3],
    };
    let none = Effects::default();
    let (kind, effects) = match verb {
        "select" | "values" | "with" => {
            s.body(RISKY, |f| policy.classify(f) == FnClass::Harmless)?;
            (Kind::Read, none)
        }
        "insert" | "update" | "delete" | "merge" => {
            // Unknown functions do not matter in a write; session effects do.
            s.body(&[], |f| match policy.classify(f) {
                FnClass::Writer(fx) => fx.is_empty(),
                _ => true,
            })?;
            (Kind::Write, none)
        }
        "table" => {
            // `TABLE [schema.]name`: sqlparser does not know it at all.
            let is_name =
                |t: Option<Token>| matches!(t, Some(t) if matches!(t.tok, Tok::Word | Tok::Quoted));
            let mut name = s.next();
            if !is_name(name) {
                return None;
            }
            let mut t = s.next();
            if matches!(t, Some(d) if d.tok == Tok::Punct(b'.')) {
                let schema = name.map(|n| s.lx.text(&n).to_ascii_lowercase());
                name = s.next();
                if !is_name(name) {
                    return None;
                }
                if schema.as_deref() != Some("pg_catalog") {
                    // Another schema's table of any name is the user's.
                    name = None;
                }
                t = s.next();
            }
            let local = name.is_some_and(|n| {
                let text = s.lx.text(&n);
                match n.tok {
                    Tok::Quoted => node_local::relation(text.trim_matches('"')),
                    _ => lower(text, &mut buf).is_some_and(node_local::relation),
                }
            });
            let done = match t {
                None => true,
                Some(t) => t.tok == Tok::Punct(b';') && s.at_end(),
            };
            if !done {
                return None;
            }
            (if local { Kind::Primary } else { Kind::Read }, none)
        }
        "show" => {
            s.next()?;
            if !s.single_statement() {
                return None;
            }
            (Kind::Read, none)
        }
        "begin" | "start" | "commit" | "end" | "rollback" | "abort" => {
            let start = verb == "start";
            let mut t = s.next();
            if s.is_word(t, "transaction") || (!start && s.is_word(t, "work")) {
                t = s.next();
            } else if start {
                return None;
            }
            let done = match t {
                None => true,
                Some(t) => t.tok == Tok::Punct(b';') && s.at_end(),
            };
            if !done {
                return None;
            }
            let effects = if matches!(verb, "begin" | "start") {
                Effects {
                    begin: true,
                    ..none
                }
            } else {
                Effects {
                    commit_or_rollback: true,
                    ..none
                }
            };
            (Kind::Primary, effects)
        }
        "set" | "reset" => {
            let name = s.next()?;
            let mut b = [0u8; 64];
            let n = lower(s.lx.text(&name), &mut b)?;
            // Forms with their own meaning, left to the parser.
            let special = matches!(
                n,
                "local"
                    | "session"
                    | "transaction"
                    | "time"
                    | "role"
                    | "names"
                    | "constraints"
                    | "schema"
                    | "characteristics"
                    | "authorization"
            );
            if name.tok != Tok::Word || special {
                return None;
            }
            let ok = if verb == "reset" {
                s.at_end()
            } else {
                let op = s.next();
                let assign =
                    matches!(op, Some(t) if t.tok == Tok::Punct(b'=')) || s.is_word(op, "to");
                assign && s.single_statement()
            };
            if !ok {
                return None;
            }
            let effects = Effects {
                set_session: true,
                ..none
            };
            (Kind::Primary, effects)
        }
        _ => return None,
    };
    Some(Outcome::new(kind, effects))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_list_is_sorted() {
        assert!(PAREN_KEYWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn soft_keywords_only_in_position() {
        let p = FunctionPolicy::default();
        let fast = |sql: &str| fast_path(sql, &p).is_some();
        assert!(fast(
            "SELECT count(*) FILTER (WHERE a > 1) OVER (ORDER BY (a)) FROM t"
        ));
        assert!(fast("SELECT a FROM t GROUP BY (a) ORDER BY (a)"));
        assert!(!fast("SELECT filter(a) FROM t"));
        assert!(!fast("SELECT over(a) FROM t"));
        assert!(!fast("SELECT a, by(a) FROM t"));
        assert!(!fast("SELECT a FROM t WHERE like(a, b)"));
    }
}
