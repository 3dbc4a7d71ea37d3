//! Session and transaction effects reported to the proxy.

mod common;

use common::*;
use pgsplit_router::{Effects, Route};

#[track_caller]
fn effects(sql: &str, want: Effects) {
    let a = primary(sql);
    assert_eq!(a.effects, want, "{sql:?}");
}

fn begin() -> Effects {
    fx(|e| e.begin = true)
}

fn begin_ro() -> Effects {
    fx(|e| {
        e.begin = true;
        e.begin_read_only = true;
    })
}

fn end() -> Effects {
    fx(|e| e.commit_or_rollback = true)
}

fn set() -> Effects {
    fx(|e| e.set_session = true)
}

fn pins() -> Effects {
    fx(|e| e.pins_session = true)
}

#[test]
fn transaction_start() {
    for sql in [
        "BEGIN",
        "BEGIN;",
        "begin work",
        "BEGIN TRANSACTION",
        "START TRANSACTION",
    ] {
        effects(sql, begin());
    }
    effects("BEGIN ISOLATION LEVEL SERIALIZABLE", begin());
    effects("BEGIN READ WRITE", begin());
    effects("BEGIN READ ONLY; BEGIN READ WRITE", begin_ro());
}

#[test]
fn read_only_transaction_start() {
    for sql in [
        "BEGIN READ ONLY",
        "START TRANSACTION READ ONLY",
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        // sqlparser rejects DEFERRABLE; the keyword scan still sees it.
        "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
    ] {
        effects(sql, begin_ro());
    }
    effects("BEGIN READ ONLY READ WRITE", begin());
}

#[test]
fn transaction_end() {
    for sql in [
        "COMMIT",
        "END;",
        "END",
        "END TRANSACTION",
        "COMMIT WORK",
        "ROLLBACK",
        "ROLLBACK WORK",
        "ABORT",
        "COMMIT AND CHAIN",
    ] {
        effects(sql, end());
    }
    effects("ROLLBACK TO SAVEPOINT a", Effects::default());
    effects("ROLLBACK TO a", Effects::default());
    effects("SAVEPOINT a", Effects::default());
    effects("RELEASE a", Effects::default());
    effects("PREPARE TRANSACTION 'x'", Effects::default());
    effects("COMMIT PREPARED 'x'", Effects::default());
}

#[test]
fn set_and_reset() {
    for sql in [
        "SET search_path = x",
        "SET search_path TO x, y",
        "set search_path to default",
        "SET SESSION search_path = x",
        "SET application_name = 'app'",
        "SET TIME ZONE 'UTC'",
        "SET ROLE foo",
        "SET SESSION AUTHORIZATION foo",
        "SET my.custom = 1",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        "RESET search_path",
        "RESET ALL",
        "SELECT set_config('search_path', 'x', false)",
    ] {
        effects(sql, set());
    }
    for sql in [
        "SET LOCAL search_path = x",
        "SET LOCAL ROLE foo",
        "SET LOCAL TIME ZONE 'UTC'",
        "SET CONSTRAINTS ALL DEFERRED",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    ] {
        effects(sql, Effects::default());
    }
    effects(
        "SET TRANSACTION READ ONLY",
        fx(|e| e.set_transaction_read_only = true),
    );
    effects(
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        fx(|e| e.set_transaction_read_only = true),
    );
}

#[test]
fn discard_deallocate_unlisten() {
    effects("DISCARD ALL", fx(|e| e.discard_all = true));
    effects("discard all;", fx(|e| e.discard_all = true));
    effects("DISCARD PLANS", Effects::default());
    effects("DISCARD TEMP", Effects::default());
    effects("DEALLOCATE ALL", fx(|e| e.deallocate_all = true));
    effects("DEALLOCATE PREPARE ALL", fx(|e| e.deallocate_all = true));
    effects("DEALLOCATE foo", Effects::default());
    effects("UNLISTEN *", fx(|e| e.unlisten_all = true));
    effects("UNLISTEN ch", Effects::default());
}

#[test]
fn pinning_statements() {
    for sql in [
        "PREPARE foo AS SELECT 1",
        "PREPARE p (int) AS UPDATE t SET a = $1",
        "LISTEN ch",
        "CREATE TEMP TABLE t (a int)",
        "CREATE TEMPORARY TABLE t (a int)",
        "CREATE TEMP TABLE t AS SELECT 1",
        "CREATE LOCAL TEMP TABLE t (a int)",
        "CREATE TEMPORARY SEQUENCE s",
        "CREATE TEMP VIEW v AS SELECT 1",
        "SELECT * INTO TEMP newt FROM t",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_advisory_lock_shared(1)",
        "SELECT pg_try_advisory_lock(1, 2)",
        "SELECT pg_catalog.pg_try_advisory_lock_shared(1)",
        "SELECT * FROM t WHERE pg_try_advisory_lock(t.id)",
        "LOAD 'auto_explain'",
        "EXPLAIN ANALYZE SELECT pg_advisory_lock(1)",
    ] {
        effects(sql, pins());
    }
    // Transaction-scoped locks and unlocking do not pin.
    for sql in [
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT pg_try_advisory_xact_lock(1)",
        "SELECT pg_advisory_unlock(1)",
        "CREATE TABLE t (a int)",
        "EXPLAIN SELECT pg_advisory_lock(1)",
    ] {
        effects(sql, Effects::default());
    }
}

#[test]
fn cursors() {
    let a = replica("DECLARE c CURSOR WITH HOLD FOR SELECT 1");
    assert_eq!(a.effects, pins());
    let a = replica("DECLARE c CURSOR FOR SELECT 1");
    assert_eq!(a.effects, Effects::default());
    let a = replica("DECLARE c SCROLL CURSOR WITHOUT HOLD FOR SELECT * FROM t");
    assert_eq!(a.effects, Effects::default());
    effects(
        "DECLARE c CURSOR FOR SELECT nextval('s')",
        Effects::default(),
    );
    effects(
        "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t FOR UPDATE",
        pins(),
    );
}

#[test]
fn multi_statement_union() {
    let a = primary("BEGIN; SET LOCAL x = 1; SELECT 1; COMMIT");
    assert_eq!(a.effects, begin() | end());
    assert_eq!(a.statement_count, 4);
    let a = primary("SET search_path = x; LISTEN ch; DISCARD ALL");
    let want = set() | pins() | fx(|e| e.discard_all = true);
    assert_eq!(a.effects, want);
    assert!(!a.effects.is_empty());
    assert!(Effects::default().is_empty());
}

#[test]
fn transaction_control_routes_to_primary() {
    for sql in ["BEGIN", "COMMIT", "SET x = 1", "RESET x", "DISCARD ALL"] {
        assert_eq!(classify(sql).route, Route::Primary, "{sql}");
    }
}
