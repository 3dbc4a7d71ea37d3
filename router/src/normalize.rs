//! Cache keys: the statement text with comments dropped, whitespace
//! collapsed and literal values blanked out.
//!
//! Blanking literals lets `WHERE aid = 48271` and `WHERE aid = 17` share one
//! entry, which is what makes the cache useful for clients that interpolate
//! values (pgbench's default simple protocol, psycopg2, many ORMs). That is
//! sound only because routing never depends on a literal's value: the
//! analyzer is written so that it never looks at one. Tracing comments such
//! as `/* trace_id=abc */` vanish with the other comments; the routing hint
//! is extracted beforehand and kept beside the key.
//!
//! Two texts may share a key only if they differ in literal values, comments
//! and whitespace. Wherever the lexer might split tokens differently from
//! the parser, the text is declared uncacheable instead.

use crate::lex::{
    digits_end, is_ident_cont, is_ident_start, is_space, number_end, quoted_end, Lexer, Tok,
};

/// Stand-ins for literals: control characters, which the lexer never lets
/// through unescaped, so no real token can be confused with them. Literal
/// kinds that the parser accepts in different places get different
/// stand-ins: it reads type modifiers (`varchar(10)`) as `u64`/`i64`, so a
/// decimal or an over-long integer could fail where a short integer parses,
/// and a few rules accept `'...'` but not `$$...$$`.
const INTEGER: char = '\u{1}';
const STRING: char = '\u{2}';
const DECIMAL: char = '\u{3}';
const DOLLAR_STRING: char = '\u{4}';

/// The stand-in for a literal token, or `None` to keep the token verbatim.
fn replaced(tok: Tok, text: &str) -> Option<char> {
    match tok {
        Tok::Str if text.starts_with('$') => Some(DOLLAR_STRING),
        Tok::Str => Some(STRING),
        Tok::Number if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) => Some(DECIMAL),
        // Up to 18 digits fits both u64 and i64; longer ones stay verbatim.
        Tok::Number if text.len() <= 18 => Some(INTEGER),
        _ => None,
    }
}

/// A token that could fuse with a neighbouring literal if the two touch
/// (`1e'x'`, `date'2020-01-01'`, `1.x`). Such texts are left uncached.
fn sticky(tok: Tok) -> bool {
    !matches!(tok, Tok::Punct(b) if b != b'.' && b != b'$')
}

/// A normalized statement text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key<'a> {
    pub text: &'a str,
    /// No literal was blanked out: the key is real SQL text, its own normal
    /// form, so a query string equal to it shares its verdict.
    pub verbatim: bool,
}

/// The cache key for `sql` (hint excluded), or `None` when the text must not
/// be cached. Borrows from `sql` when it is already in normal form, and
/// otherwise builds the key in `out` (cleared first): a caller that keeps
/// one buffer makes this allocation-free.
pub(crate) fn cache_key<'a>(sql: &'a str, out: &'a mut String) -> Option<Key<'a>> {
    if let Some((made, verbatim)) = common_key(sql, out) {
        let text = match made {
            Made::Borrowed(start, end) => &sql[start..end],
            Made::Built => out.as_str(),
        };
        return Some(Key { text, verbatim });
    }
    token_key(sql, out)
}

/// Where [`common_key`] left the key.
enum Made {
    Borrowed(usize, usize),
    Built,
}

/// The key of the texts applications send most, in one pass over the bytes:
/// words, numbers, plain strings, quoted identifiers, parameters,
/// punctuation and whitespace. Anything else (comments, dollar quotes,
/// prefixed strings, a literal touching another token, control bytes) is
/// declined with `None` and goes to [`token_key`]. On every text it accepts
/// it builds exactly the key `token_key` would (tested against it); it only
/// skips the token-by-token machinery, which cost about 20 instructions per
/// byte.
fn common_key(sql: &str, out: &mut String) -> Option<(Made, bool)> {
    let b = sql.as_bytes();
    let n = b.len();
    out.clear();
    let mut i = 0;
    while i < n && is_space(b[i]) {
        i += 1;
    }
    // `sql[run..end]` is verbatim output not copied yet; `end` is where the
    // previous token ended.
    let mut run = i;
    let mut end = i;
    let (mut prev_literal, mut prev_sticky) = (false, false);
    let mut verbatim = true;
    while i < n {
        let c = b[i];
        // (end, stand-in if a literal, whether it fuses with a touching literal)
        let (tok_end, literal, sticky) = if is_ident_start(c) {
            let mut j = i + 1;
            while j < n && is_ident_cont(b[j]) {
                j += 1;
            }
            if j == i + 1 && j < n && matches!(b[j], b'\'' | b'&') {
                return None; // E'..', U&'..' and the like
            }
            (j, None, true)
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let j = number_end(b, i);
            let text = &sql[i..j];
            (j, replaced(Tok::Number, text), true)
        } else {
            match c {
                b'\'' => (quoted_end(b, i, b'\'', false)?, Some(STRING), true),
                b'"' => (quoted_end(b, i, b'"', false)?, None, true),
                b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    (digits_end(b, i + 1), None, true)
                }
                b'$' => return None,
                b'-' if b.get(i + 1) == Some(&b'-') => return None,
                b'/' if b.get(i + 1) == Some(&b'*') => return None,
                c if c < 0x20 || c == 0x7f => return None,
                c => (i + 1, None, c == b'.'),
            }
        };
        let gap = i != end;
        if !gap && ((prev_literal && sticky) || (literal.is_some() && prev_sticky)) {
            return None;
        }
        match literal {
            None => {
                // A single space in the source is already normal.
                if gap && !(i == end + 1 && b[end] == b' ') {
                    out.push_str(&sql[run..end]);
                    out.push(' ');
                    run = i;
                }
            }
            Some(stand_in) => {
                verbatim = false;
                out.push_str(&sql[run..end]);
                if gap {
                    out.push(' ');
                }
                out.push(stand_in);
                run = tok_end;
            }
        }
        prev_literal = literal.is_some();
        prev_sticky = sticky;
        end = tok_end;
        i = tok_end;
        while i < n && is_space(b[i]) {
            i += 1;
        }
    }
    if out.is_empty() {
        return Some((Made::Borrowed(run, end), verbatim));
    }
    out.push_str(&sql[run..end]);
    Some((Made::Built, verbatim))
}

/// The general path: any text the lexer can split.
fn token_key<'a>(sql: &'a str, out: &'a mut String) -> Option<Key<'a>> {
    let bytes = sql.as_bytes();
    out.clear();
    let mut verbatim = true;
    // Output is copied from `sql` in runs: `sql[run..end]` is pending.
    let mut run: Option<usize> = None;
    let mut end = 0;
    let mut first = None;
    // The previous token, and whether it was blanked out.
    let mut prev: Option<(Tok, bool)> = None;
    for t in Lexer::new(sql) {
        if t.tok == Tok::Bad {
            return None;
        }
        let repl = replaced(t.tok, &sql[t.start..t.end]);
        verbatim &= repl.is_none();
        let Some((p, p_lit)) = prev else {
            first = Some(t.start);
            prev = Some((t.tok, repl.is_some()));
            end = t.end;
            match repl {
                Some(c) => out.push(c),
                None => run = Some(t.start),
            }
            continue;
        };
        if !t.gap && ((p_lit && sticky(t.tok)) || (repl.is_some() && sticky(p))) {
            return None;
        }
        prev = Some((t.tok, repl.is_some()));
        // A single space in the source is already normal: keep copying.
        let single_space = t.start == end + 1 && bytes[end] == b' ';
        if repl.is_none() && (!t.gap || single_space) {
            if run.is_none() {
                run = Some(end);
            }
            end = t.end;
            continue;
        }
        if let Some(r) = run.take() {
            out.push_str(&sql[r..end]);
        }
        if t.gap {
            out.push(' ');
        }
        match repl {
            Some(c) => out.push(c),
            None => run = Some(t.start),
        }
        end = t.end;
    }
    let Some(first) = first else {
        return Some(Key { text: "", verbatim });
    };
    let text = match run {
        Some(r) if out.is_empty() => &sql[r.max(first)..end],
        Some(r) => {
            out.push_str(&sql[r..end]);
            out.as_str()
        }
        None => out.as_str(),
    };
    Some(Key { text, verbatim })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sql: &str) -> Option<String> {
        let mut buf = String::new();
        cache_key(sql, &mut buf).map(|k| {
            assert_eq!(
                k.verbatim,
                !k.text.contains(['\u{1}', '\u{2}', '\u{3}', '\u{4}'])
            );
            k.text
                .replace(INTEGER, "#")
                .replace(DECIMAL, "#.#")
                .replace(STRING, "'?'")
                .replace(DOLLAR_STRING, "$?$")
        })
    }

    #[test]
    fn borrows_normal_text() {
        let mut buf = String::new();
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
        let k = cache_key(sql, &mut buf).unwrap();
        assert!(k.verbatim && std::ptr::eq(k.text, sql));
        let padded = "  SELECT $1  ";
        let k = cache_key(padded, &mut buf).unwrap();
        assert_eq!(k.text, "SELECT $1");
        assert!(std::ptr::eq(k.text.as_ptr(), padded[2..].as_ptr()));
        assert!(buf.is_empty(), "normal text needs no buffer");
    }

    #[test]
    fn strips_comments_and_whitespace() {
        let want = Some("SELECT a FROM t WHERE b = $1".to_string());
        assert_eq!(key("/* trace_id=abc */ SELECT a FROM t WHERE b = $1"), want);
        assert_eq!(key("SELECT  a\n\tFROM t -- why\nWHERE b = $1"), want);
        assert_eq!(key("SELECT a/* x */FROM t WHERE b = $1"), want);
        assert_eq!(
            key("SELECT a FROM t WHERE b=$1").as_deref(),
            Some("SELECT a FROM t WHERE b=$1")
        );
    }

    #[test]
    fn blanks_literals() {
        assert_eq!(
            key("SELECT 1, 'x', $$y$$, 2.5, 1e3").as_deref(),
            Some("SELECT #, '?', $?$, #.#, #.#")
        );
        assert_ne!(key("SELECT 1"), key("SELECT 1.0"));
        assert_ne!(key("SELECT 'x'"), key("SELECT $$x$$"));
        assert_eq!(
            key("SELECT 1234567890123456789").as_deref(),
            Some("SELECT 1234567890123456789")
        );
        assert_eq!(
            key("SELECT * FROM t WHERE id = 48271"),
            key("SELECT * FROM t WHERE id = 17")
        );
        assert_ne!(key("SELECT 1"), key("SELECT '1'"));
        assert_ne!(key("SELECT E'a'"), key("SELECT E'b'"));
        assert_ne!(key("SELECT \"a\""), key("SELECT \"b\""));
        assert_ne!(key("SELECT a ? 'k'"), key("SELECT a 'x' 'k'"));
    }

    /// A key's text and whether it is verbatim.
    type Owned = Option<(String, bool)>;

    /// Both paths' keys for `sql`: (common pass, if it accepts; token path).
    fn both(sql: &str) -> (Owned, Owned) {
        let mut buf = String::new();
        let common = common_key(sql, &mut buf).map(|(made, verbatim)| {
            let text = match made {
                Made::Borrowed(a, b) => sql[a..b].to_owned(),
                Made::Built => buf.clone(),
            };
            (text, verbatim)
        });
        let mut buf = String::new();
        let token = token_key(sql, &mut buf).map(|k| (k.text.to_owned(), k.verbatim));
        (common, token)
    }

    #[test]
    fn the_common_pass_takes_what_applications_send() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48271;",
            "UPDATE pgbench_accounts SET abalance = abalance + -4711 WHERE aid = 17;",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP);",
            "SELECT \"t\".\"id\", \"t\".\"name\" FROM \"app_user\" \"t\" WHERE \"t\".\"email\" = 'a@b.c' LIMIT 21",
            "select * from t where a = $1 and b in (1, 2.5, 'x''y')",
            "  SELECT 1  ",
            "",
        ] {
            let (common, token) = both(sql);
            assert!(common.is_some(), "declined: {sql}");
            assert_eq!(common, token, "{sql}");
        }
        for sql in [
            "SELECT 1 -- c",
            "SELECT /* c */ 1",
            "SELECT $$x$$",
            "SELECT E'x'",
        ] {
            assert!(both(sql).0.is_none(), "accepted: {sql}");
        }
    }

    /// Random texts from tricky pieces: wherever the common pass accepts a
    /// text, its key is the token path's, byte for byte.
    #[test]
    fn the_common_pass_agrees_with_the_token_path() {
        const PIECES: &[&str] = &[
            "SELECT",
            "a",
            "_b1",
            "\u{e9}t\u{e9}",
            "1",
            "42",
            "1234567890123456789",
            "1.5",
            ".5",
            "1e3",
            "1e",
            "2.",
            "1..2",
            "'x'",
            "'it''s'",
            "''",
            "'open",
            "\"Q\"",
            "\"q\"\"q\"",
            "\"open",
            "$1",
            "$12",
            "$",
            "$$d$$",
            "E'e'",
            "e",
            "U&'u'",
            "u&",
            "x",
            "(",
            ")",
            ",",
            ".",
            ";",
            "=",
            "-",
            "--c\n",
            "/",
            "/*c*/",
            "*",
            "::",
            "+",
            "&",
            "\\",
            "\u{1}",
            "\t",
        ];
        const SPACES: &[&str] = &["", "", " ", "  ", "\n", " \t "];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut accepted = 0;
        for _ in 0..50_000 {
            let mut sql = String::new();
            for _ in 0..1 + next(8) {
                sql.push_str(SPACES[next(SPACES.len())]);
                sql.push_str(PIECES[next(PIECES.len())]);
            }
            sql.push_str(SPACES[next(SPACES.len())]);
            let (common, token) = both(&sql);
            if let Some(c) = common {
                accepted += 1;
                assert_eq!(Some(c), token, "{sql:?}");
            }
        }
        // Not vacuous: most such texts take the common pass.
        assert!(accepted > 10_000, "only {accepted} accepted");
    }

    #[test]
    fn refuses_ambiguous_text() {
        for sql in [
            "SELECT 1e'x'",
            "SELECT date'2020-01-01'",
            "SELECT 1.x",
            "SELECT 'a",
            "SELECT 1 /* x",
        ] {
            assert_eq!(key(sql), None, "{sql}");
        }
    }
}
