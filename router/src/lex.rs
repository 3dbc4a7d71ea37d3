//! A small PostgreSQL lexer: just enough to find token boundaries, skip
//! comments and recognise literals.
//!
//! The cache key, the fast path and the fallback keyword scan all stand on
//! it, so it follows PostgreSQL's scanner (`scan.l`) where token boundaries
//! are concerned: nested block comments, `''` inside strings, backslash
//! escapes only in `E'...'`, dollar quoting, `$` as an identifier character.
//! Whatever it is unsure about comes out as [`Tok::Bad`], which makes callers
//! fall back to the slow, safe path.

/// Token classes. Keywords are plain words: callers compare them
/// case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    /// Unquoted identifier or keyword.
    Word,
    /// `"identifier"` or `U&"identifier"`.
    Quoted,
    /// Numeric constant.
    Number,
    /// `'...'` or `$tag$...$tag$`: its value never matters to routing.
    Str,
    /// `E'...'`, `B'...'`, `X'...'`, `N'...'`, `U&'...'`: the parser checks
    /// their contents, so cache keys keep them verbatim.
    Special,
    /// `$1`.
    Param,
    /// Any other single byte (operators, parentheses, `;`, `.`).
    Punct(u8),
    /// Unterminated string, identifier or comment, or a stray control byte.
    Bad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
    /// Whitespace or a comment separates this token from the previous one.
    pub gap: bool,
}

pub(crate) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

const SPACE: u8 = 1;
const IDENT_START: u8 = 2;
const IDENT_CONT: u8 = 4;

/// Byte classes, looked up once per byte in the hot loops.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            t[b] = SPACE;
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            t[b] = IDENT_START | IDENT_CONT;
        } else if c.is_ascii_digit() || c == b'$' {
            t[b] = IDENT_CONT;
        }
        b += 1;
    }
    t
};

#[inline]
pub(crate) fn is_space(b: u8) -> bool {
    CLASS[b as usize] & SPACE != 0
}

#[inline]
pub(crate) fn is_ident_start(b: u8) -> bool {
    CLASS[b as usize] & IDENT_START != 0
}

#[inline]
pub(crate) fn is_ident_cont(b: u8) -> bool {
    CLASS[b as usize] & IDENT_CONT != 0
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        Lexer { src, pos: 0 }
    }

    pub(crate) fn text(&self, t: &Token) -> &'a str {
        &self.src[t.start..t.end]
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn peek(&self, off: usize) -> u8 {
        self.bytes().get(self.pos + off).copied().unwrap_or(0)
    }

    /// Skips whitespace and comments. Returns `Err` at an unterminated
    /// block comment (having consumed the rest of the input).
    fn skip_trivia(&mut self) -> Result<(), ()> {
        let s = self.bytes();
        loop {
            while self.pos < s.len() && is_space(s[self.pos]) {
                self.pos += 1;
            }
            let b = self.peek(0);
            if b != b'-' && b != b'/' {
                return Ok(());
            }
            match (b, self.peek(1)) {
                // PostgreSQL ends a line comment at CR as well as LF.
                (b'-', b'-') => {
                    self.pos = match s[self.pos..]
                        .iter()
                        .position(|&b| matches!(b, b'\n' | b'\r'))
                    {
                        Some(n) => self.pos + n + 1,
                        None => s.len(),
                    };
                }
                (b'/', b'*') => match block_comment_end(s, self.pos) {
                    Some(end) => self.pos = end,
                    None => {
                        self.pos = s.len();
                        return Err(());
                    }
                },
                _ => return Ok(()),
            }
        }
    }

    /// Consumes a quoted run ending at `quote` (see [`quoted_end`]).
    fn quoted(&mut self, quote: u8, backslash: bool) -> bool {
        let s = self.bytes();
        match quoted_end(s, self.pos, quote, backslash) {
            Some(end) => {
                self.pos = end;
                true
            }
            None => {
                self.pos = s.len();
                false
            }
        }
    }

    /// At a `$`: a parameter, a dollar-quoted string, or a lone `$`.
    fn dollar(&mut self) -> Tok {
        let s = self.bytes();
        let start = self.pos;
        if self.peek(1).is_ascii_digit() {
            self.pos = digits_end(s, start + 1);
            return Tok::Param;
        }
        // A tag is an identifier without `$`; `$$` is the empty tag.
        let mut i = start + 1;
        if i < s.len() && is_ident_start(s[i]) {
            i += 1;
            while i < s.len() && is_ident_cont(s[i]) && s[i] != b'$' {
                i += 1;
            }
        }
        if s.get(i) != Some(&b'$') {
            self.pos += 1;
            return Tok::Punct(b'$');
        }
        let tag = &s[start..=i];
        match find(&s[i + 1..], tag) {
            Some(n) => {
                self.pos = i + 1 + n + tag.len();
                Tok::Str
            }
            None => {
                self.pos = s.len();
                Tok::Bad
            }
        }
    }

    fn number(&mut self) {
        self.pos = number_end(self.bytes(), self.pos);
    }

    /// At an identifier start: a word, or the prefix of a special string.
    fn word(&mut self) -> Tok {
        let s = self.bytes();
        let start = self.pos;
        while self.pos < s.len() && is_ident_cont(s[self.pos]) {
            self.pos += 1;
        }
        if self.pos - start == 1 {
            let ok = match (s[start].to_ascii_lowercase(), self.peek(0), self.peek(1)) {
                (b'e', b'\'', _) => self.quoted(b'\'', true),
                (b'b' | b'x' | b'n', b'\'', _) => self.quoted(b'\'', false),
                (b'u', b'&', q @ (b'\'' | b'"')) => {
                    self.pos += 1;
                    let ok = self.quoted(q, false);
                    if q == b'"' {
                        return if ok { Tok::Quoted } else { Tok::Bad };
                    }
                    ok
                }
                _ => return Tok::Word,
            };
            return if ok { Tok::Special } else { Tok::Bad };
        }
        Tok::Word
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let before = self.pos;
        let trivia = self.skip_trivia();
        let gap = self.pos != before;
        let start = self.pos;
        if trivia.is_err() {
            return Some(Token {
                tok: Tok::Bad,
                start,
                end: start,
                gap,
            });
        }
        let b = *self.bytes().get(start)?;
        let tok = match b {
            b'\'' => {
                if self.quoted(b'\'', false) {
                    Tok::Str
                } else {
                    Tok::Bad
                }
            }
            b'"' => {
                if self.quoted(b'"', false) {
                    Tok::Quoted
                } else {
                    Tok::Bad
                }
            }
            b'$' => self.dollar(),
            b'0'..=b'9' => {
                self.number();
                Tok::Number
            }
            b'.' if self.peek(1).is_ascii_digit() => {
                self.number();
                Tok::Number
            }
            b if is_ident_start(b) => self.word(),
            b if b < 0x20 || b == 0x7f => {
                self.pos += 1;
                Tok::Bad
            }
            b => {
                self.pos += 1;
                Tok::Punct(b)
            }
        };
        Some(Token {
            tok,
            start,
            end: self.pos,
            gap,
        })
    }
}

/// End offset of the quoted run opening at `start` and closing at `quote`,
/// where a doubled quote stands for itself and, if `backslash`, `\x`
/// escapes any byte. `None`: unterminated.
#[inline]
pub(crate) fn quoted_end(s: &[u8], start: usize, quote: u8, backslash: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < s.len() {
        let b = s[i];
        if backslash && b == b'\\' {
            i += 2;
        } else if b == quote {
            if s.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// End offset of the numeric constant starting at `start` (a digit, or a
/// `.` before one).
#[inline]
pub(crate) fn number_end(s: &[u8], start: usize) -> usize {
    let digits = |i| digits_end(s, i);
    let mut i = digits(start);
    if s.get(i) == Some(&b'.') && s.get(i + 1) != Some(&b'.') {
        i = digits(i + 1);
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        let j = if matches!(s.get(i + 1), Some(b'+' | b'-')) {
            i + 2
        } else {
            i + 1
        };
        if s.get(j).is_some_and(u8::is_ascii_digit) {
            i = digits(j);
        }
    }
    i
}

/// End offset of the run of ASCII digits starting at `start`.
#[inline]
pub(crate) fn digits_end(s: &[u8], mut start: usize) -> usize {
    while start < s.len() && s[start].is_ascii_digit() {
        start += 1;
    }
    start
}

/// End offset of the (possibly nested) block comment starting at `start`.
pub(crate) fn block_comment_end(s: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < s.len() {
        match (s[i], s[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Tok, &str)> {
        let mut lx = Lexer::new(sql);
        let mut out = Vec::new();
        while let Some(t) = lx.next() {
            out.push((t.tok, lx.text(&t)));
        }
        out
    }

    #[test]
    fn literals_and_words() {
        use Tok::*;
        assert_eq!(
            kinds("SELECT a1, 1.5e-3, .5, 'it''s', $1 FROM t"),
            vec![
                (Word, "SELECT"),
                (Word, "a1"),
                (Punct(b','), ","),
                (Number, "1.5e-3"),
                (Punct(b','), ","),
                (Number, ".5"),
                (Punct(b','), ","),
                (Str, "'it''s'"),
                (Punct(b','), ","),
                (Param, "$1"),
                (Word, "FROM"),
                (Word, "t"),
            ]
        );
    }

    #[test]
    fn prefixed_strings_and_dollar_quotes() {
        use Tok::*;
        assert_eq!(
            kinds(r"E'a\'b' x'1F' U&'d\0061' U&&x $$a;b$$ $t$ $x$ $t$ a$b"),
            vec![
                (Special, r"E'a\'b'"),
                (Special, "x'1F'"),
                (Special, r"U&'d\0061'"),
                (Word, "U"),
                (Punct(b'&'), "&"),
                (Punct(b'&'), "&"),
                (Word, "x"),
                (Str, "$$a;b$$"),
                (Str, "$t$ $x$ $t$"),
                (Word, "a$b"),
            ]
        );
    }

    #[test]
    fn comments_are_gaps() {
        let mut lx = Lexer::new("a/* x /* nested */ y */b -- c\nc");
        let t: Vec<_> = lx.by_ref().map(|t| t.gap).collect();
        assert_eq!(t, vec![false, true, true]);
    }

    #[test]
    fn unterminated_is_bad() {
        for sql in ["'abc", "\"abc", "/* x", "$q$ abc", "E'abc\\'", "a \u{1} b"] {
            assert!(kinds(sql).iter().any(|(t, _)| *t == Tok::Bad), "{sql}");
        }
    }
}
