//! Reading what a client message names, without parsing it whole: query
//! text, statement names, and whether a text is one of pgsplit's admin
//! commands.

use pgsplit_protocol::tag::frontend as fe;
use pgsplit_router::admin::parse_admin;

/// `b` up to its first NUL.
pub(super) fn until_nul(b: &[u8]) -> &[u8] {
    &b[..memchr::memchr(0, b).unwrap_or(b.len())]
}

/// The query text of a Query or Parse body.
pub(super) fn sql_of(tag: u8, body: &[u8]) -> &[u8] {
    let body = if tag == fe::PARSE {
        // Skip the statement name.
        let end = memchr::memchr(0, body).map_or(body.len(), |i| i + 1);
        &body[end..]
    } else {
        body
    };
    until_nul(body)
}

/// The statement a Bind or Describe refers to.
pub(super) fn statement_name(tag: u8, body: &[u8]) -> Option<&[u8]> {
    let body = match tag {
        // Bind: portal name, then statement name.
        fe::BIND => &body[body.iter().position(|&b| b == 0)? + 1..],
        // Describe: target byte, then name.
        _ => body.get(1..)?,
    };
    let end = body.iter().position(|&b| b == 0)?;
    Some(&body[..end])
}

/// Identifies a statement by database, text and parameter types: the same
/// statement prepared by any session shares one server-side copy.
pub(super) fn statement_hash(database: &str, parse_rest: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(database, &mut h);
    std::hash::Hash::hash(parse_rest, &mut h);
    std::hash::Hasher::finish(&h)
}

/// Compares the first word's bytes first: almost every statement fails
/// there, before the end of the text is looked for, any UTF-8 check, or
/// parsing. `text` may run on past a NUL that ends the statement.
pub(super) fn is_admin(text: &[u8]) -> bool {
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let rest = &text[start..];
    let word_len = rest
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == 0)
        .unwrap_or(rest.len());
    let word = &rest[..word_len];
    (word.eq_ignore_ascii_case(b"show") || word.eq_ignore_ascii_case(b"pgsplit"))
        && std::str::from_utf8(until_nul(text)).is_ok_and(|s| parse_admin(s).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_in_bind_describe_and_parse() {
        assert_eq!(
            statement_name(b'B', b"portal\0stmt\0\0\0"),
            Some(&b"stmt"[..])
        );
        assert_eq!(statement_name(b'B', b"\0\0"), Some(&b""[..]));
        assert_eq!(statement_name(b'D', b"Sname\0"), Some(&b"name"[..]));
        assert_eq!(statement_name(b'B', b"broken"), None);
        assert_eq!(sql_of(b'P', b"s1\0select 1\0\0\0"), b"select 1");
        assert_eq!(sql_of(b'Q', b"select 2\0"), b"select 2");
    }

    #[test]
    fn admin_text_is_recognised_cheaply() {
        assert!(is_admin(b"SHOW pool_nodes"));
        assert!(is_admin(b"  pgsplit promote 1"));
        assert!(!is_admin(b"SELECT 1"));
        assert!(!is_admin(b"SHOW search_path"));
        assert!(!is_admin(b""));
        // A Query's body: the text ends at its NUL.
        assert!(is_admin(b"SHOW pool_nodes\0"));
        assert!(!is_admin(b"SHOW\0pool_nodes\0"));
    }
}
