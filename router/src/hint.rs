//! Routing hints in the leading comments of a query string.
//!
//! Accepted (case-insensitive, whitespace inside the comment ignored):
//! `/* pgsplit:primary */`, `/* pgsplit:replica */`, pgpool's
//! `/*NO LOAD BALANCE*/`, and the same words in `--` line comments. Only
//! comments before the first token count, so a hint cannot be smuggled into
//! a later statement of a multi-statement string. When leading comments
//! disagree, Primary wins.

use crate::lex::block_comment_end;
use crate::Hint;

/// The hint in the comments that precede the first token, if any.
pub(crate) fn leading_hint(sql: &str) -> Option<Hint> {
    let s = sql.as_bytes();
    let mut i = 0;
    let mut found = None;
    loop {
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        let body = match s.get(i..i + 2) {
            Some(b"/*") => {
                let end = block_comment_end(s, i)?;
                let body = &s[i + 2..end - 2];
                i = end;
                body
            }
            Some(b"--") => {
                let end = s[i..]
                    .iter()
                    .position(|&b| matches!(b, b'\n' | b'\r'))
                    .map_or(s.len(), |n| i + n);
                let body = &s[i + 2..end];
                i = end;
                body
            }
            _ => return found,
        };
        match parse_hint(body) {
            Some(Hint::Primary) => return Some(Hint::Primary),
            Some(h) => found = Some(h),
            None => {}
        }
    }
}

fn parse_hint(body: &[u8]) -> Option<Hint> {
    // Longest accepted hint is "pgsplit:primary" (15 bytes); anything that
    // is longer once spaces are dropped is an ordinary comment.
    let mut buf = [0u8; 16];
    let mut n = 0;
    for &b in body {
        if b.is_ascii_whitespace() {
            continue;
        }
        if n == buf.len() {
            return None;
        }
        buf[n] = b.to_ascii_lowercase();
        n += 1;
    }
    match &buf[..n] {
        b"pgsplit:primary" | b"noloadbalance" => Some(Hint::Primary),
        b"pgsplit:replica" => Some(Hint::Replica),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let cases = [
            ("/* pgsplit:primary */ SELECT 1", Some(Hint::Primary)),
            ("/*pgsplit:replica*/SELECT 1", Some(Hint::Replica)),
            ("  \n/* PGSPLIT : Replica */ SELECT 1", Some(Hint::Replica)),
            ("/*NO LOAD BALANCE*/ SELECT 1", Some(Hint::Primary)),
            ("/* no load balance */ SELECT 1", Some(Hint::Primary)),
            ("-- pgsplit:replica\nSELECT 1", Some(Hint::Replica)),
            (
                "/* trace_id=abc */ /* pgsplit:replica */ SELECT 1",
                Some(Hint::Replica),
            ),
            (
                "/* pgsplit:replica */ /* pgsplit:primary */ SELECT 1",
                Some(Hint::Primary),
            ),
            ("SELECT 1 /* pgsplit:replica */", None),
            ("SELECT 1; /* pgsplit:replica */ SELECT 2", None),
            ("/* pgsplit:replica and more */ SELECT 1", None),
            ("/* pgsplit:replica", None),
            ("/* trace_id=abc */ SELECT 1", None),
            ("", None),
        ];
        for (sql, want) in cases {
            assert_eq!(leading_hint(sql), want, "{sql}");
        }
    }
}
