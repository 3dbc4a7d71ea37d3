//! Regression tests for findings of the fuzz targets in `fuzz/` (see
//! the Fuzzing section of the README). Each test reproduces one finding.

use pgsplit_router::{Classifier, ClassifierConfig, Hint, Route};

fn classifier() -> Classifier {
    Classifier::new(ClassifierConfig::default())
}

/// PostgreSQL ends a `--` comment at a carriage return as well as at a line
/// feed (`non_newline [^\n\r]` in scan.l), so `-- note\rDELETE ...` runs the
/// DELETE. The router's lexer read the whole line as a comment: the text
/// classified as an empty statement for the replicas, and its cache key was
/// that of any comment-only text (fuzz target `classifier`, "cache disagrees").
#[test]
fn a_carriage_return_ends_a_line_comment() {
    let c = classifier();
    for sql in [
        "-- note\rDELETE FROM t",
        "-- note\rINSERT INTO t VALUES (1)",
        "SELECT 1 -- note\r; UPDATE t SET a = 1",
        "-- pgsplit:replica\rDELETE FROM t",
    ] {
        let a = c.classify_uncached(sql);
        assert_eq!(a.route, Route::Primary, "{sql:?} -> {a:?}");
        assert_eq!(*c.classify(sql), a, "cached verdict of {sql:?}");
    }
    let a = c.classify_uncached("-- x\rSELECT 1");
    assert_eq!((a.route, a.statement_count), (Route::Replica, 1));
    // A hint in such a comment is the comment's text only.
    let a = c.classify("-- pgsplit:primary\rSELECT 1");
    assert_eq!((a.hint, a.route), (Some(Hint::Primary), Route::Primary));
}

/// The fuzz input that found it: a comment-only text fills the cache entry,
/// then a text that is not only comments once `\r` ends the first comment.
#[test]
fn comment_only_text_does_not_share_a_key_with_code_after_a_carriage_return() {
    let c = classifier();
    let empty = "--------\r-------- t----COPY  ";
    let code = "--------\r-\u{fffd}-------- t----COPY  ";
    assert_eq!(*c.classify(empty), c.classify_uncached(empty));
    assert_eq!(*c.classify(code), c.classify_uncached(code));
    assert_eq!(c.classify(code).route, Route::Primary);
    // The same, minimized by `cargo fuzz tmin` (fuzz/findings/).
    let c = classifier();
    let min = "--\r\u{1}";
    assert_eq!(*c.classify(min), c.classify_uncached(min));
}

/// sqlparser accepts a reserved word as a function name (`vers ~ on()`),
/// and the parser path reported `on` as an unknown function to look up,
/// while the fast path, which knows `ON (` is never a call, did not: the two
/// paths disagreed (fuzz target `classifier`, "fast path and parser
/// disagree"). PostgreSQL rejects the text either way.
#[test]
fn a_reserved_word_is_not_an_unknown_function() {
    let c = classifier();
    for sql in [
        "SELECT current_user, vers~on()",
        "SELECT a FROM t WHERE x = on()",
    ] {
        let parsed = c.classify_parsed(sql);
        assert!(parsed.unknown_functions.is_empty(), "{sql:?} -> {parsed:?}");
        if let Some(fast) = c.fast_path(sql) {
            assert_eq!(fast, parsed, "{sql:?}");
        }
    }
    // A quoted name is a real function's.
    let a = c.classify_parsed(r#"SELECT "on"()"#);
    assert_eq!(a.unknown_functions, vec!["on".to_owned()]);
}
