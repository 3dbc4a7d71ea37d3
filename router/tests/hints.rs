//! Leading-comment hints and how they combine with verdicts.

mod common;

use common::*;
use pgsplit_router::{Hint, Route};

#[track_caller]
fn hinted(sql: &str, hint: Hint, route: Route) {
    let a = classify(sql);
    assert_eq!(a.hint, Some(hint), "{sql:?}");
    assert_eq!(a.route, route, "{sql:?}");
}

#[test]
fn primary_hint_forms() {
    for sql in [
        "/* pgsplit:primary */ SELECT 1",
        "/*pgsplit:primary*/SELECT 1",
        "  /* PgSplit : PRIMARY */\nSELECT 1",
        "-- pgsplit:primary\nSELECT 1",
        "/*NO LOAD BALANCE*/ SELECT 1",
        "/* no load balance */ SELECT * FROM t",
        "/* trace_id=abc */ /* pgsplit:primary */ SELECT 1",
    ] {
        hinted(sql, Hint::Primary, Route::Primary);
    }
}

#[test]
fn replica_hint_forms() {
    for sql in [
        "/* pgsplit:replica */ SELECT 1",
        "/*PGSPLIT:REPLICA*/ SELECT 1",
        "-- pgsplit: replica\nSELECT 1",
    ] {
        hinted(sql, Hint::Replica, Route::Replica);
    }
}

#[test]
fn replica_hint_overrides_policy_verdicts() {
    hinted(
        "/* pgsplit:replica */ SELECT nextval('s')",
        Hint::Replica,
        Route::Replica,
    );
    hinted(
        "/* pgsplit:replica */ SELECT * FROM dblink('c', 'SELECT 1') AS t(a int)",
        Hint::Replica,
        Route::Replica,
    );
    let a = classify("/* pgsplit:replica */ BEGIN READ ONLY");
    assert_eq!(a.route, Route::Replica);
    assert!(a.effects.begin && a.effects.begin_read_only);
    hinted(
        "/* pgsplit:replica */ SET search_path = x",
        Hint::Replica,
        Route::Replica,
    );
    hinted(
        "/* pgsplit:replica */ EXPLAIN DELETE FROM t",
        Hint::Replica,
        Route::Replica,
    );
}

#[test]
fn replica_hint_cannot_send_a_write_to_a_standby() {
    for sql in [
        "/* pgsplit:replica */ INSERT INTO t VALUES (1)",
        "/* pgsplit:replica */ UPDATE t SET a = 1",
        "/* pgsplit:replica */ DELETE FROM t",
        "/* pgsplit:replica */ CREATE TABLE t (a int)",
        "/* pgsplit:replica */ TRUNCATE t",
        "/* pgsplit:replica */ SELECT * FROM t FOR UPDATE",
        "/* pgsplit:replica */ SELECT * FROM t FOR NO KEY UPDATE",
        "/* pgsplit:replica */ SELECT * INTO t2 FROM t",
        "/* pgsplit:replica */ WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
        "/* pgsplit:replica */ COPY t FROM STDIN",
        "/* pgsplit:replica */ EXPLAIN ANALYZE DELETE FROM t",
        "/* pgsplit:replica */ LISTEN ch",
        "/* pgsplit:replica */ SELECT 1; INSERT INTO t VALUES (1)",
        "/* pgsplit:replica */ REFRESH MATERIALIZED VIEW v",
        "/* pgsplit:replica */ VACUUM t",
    ] {
        hinted(sql, Hint::Replica, Route::Primary);
    }
}

#[test]
fn hint_clears_unknown_functions() {
    let a = classify("/* pgsplit:replica */ SELECT myfn()");
    assert_eq!(a.route, Route::Replica);
    assert!(a.unknown_functions.is_empty());
    let a = classify("SELECT myfn()");
    assert_eq!(a.unknown_functions, vec!["myfn"]);
}

#[test]
fn replica_hint_on_unparsed_read() {
    // sqlparser cannot parse this valid read; the hint still applies.
    let a = classify("/* pgsplit:replica */ SELECT collation for ('x')");
    assert!(!a.parsed);
    assert_eq!(a.route, Route::Replica);
    let a = classify("SELECT collation for ('x')");
    assert_eq!(a.route, Route::Primary);
}

#[test]
fn non_leading_comments_are_not_hints() {
    for sql in [
        "SELECT 1 /* pgsplit:replica */",
        "SELECT nextval('s') /* pgsplit:replica */",
        "SELECT 1; /* pgsplit:primary */ SELECT 2",
        "SELECT '/* pgsplit:primary */'",
        "/* pgsplit:replica and something else */ SELECT nextval('s')",
    ] {
        assert_eq!(classify(sql).hint, None, "{sql:?}");
    }
    assert_eq!(
        classify("SELECT 1 /* pgsplit:primary */").route,
        Route::Replica
    );
}

#[test]
fn replica_hint_on_statements_a_standby_accepts() {
    // UNLISTEN, cursors and prepared statements work on a standby.
    for sql in [
        "/* pgsplit:replica */ UNLISTEN *",
        "/* pgsplit:replica */ FETCH 10 FROM c",
        "/* pgsplit:replica */ EXECUTE p(1)",
        "/* pgsplit:replica */ DISCARD ALL",
        "/* pgsplit:replica */ CALL read_only_proc()",
    ] {
        hinted(sql, Hint::Replica, Route::Replica);
    }
}
