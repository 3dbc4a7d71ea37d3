//! Statements that must run on the primary.

mod common;

use common::*;
use pgsplit_router::{Classifier, ClassifierConfig, Route};

#[test]
fn pgbench_writes() {
    plain_primary("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;");
    plain_primary("UPDATE pgbench_tellers SET tbalance = tbalance + 5 WHERE tid = 3;");
    plain_primary(
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
         VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
    );
}

#[test]
fn dml() {
    for sql in [
        "INSERT INTO t VALUES (1)",
        "insert into t select * from u",
        "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = excluded.b RETURNING *",
        "UPDATE t SET a = 1 FROM u WHERE t.id = u.id",
        "DELETE FROM t WHERE id = $1 RETURNING id",
        "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE",
        "INSERT INTO t VALUES (myfn(1))",
    ] {
        plain_primary(sql);
    }
}

#[test]
fn ddl() {
    for sql in [
        "CREATE TABLE t (a int)",
        "CREATE INDEX i ON t (a)",
        "CREATE VIEW v AS SELECT 1",
        "CREATE SEQUENCE s",
        "CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql",
        "CREATE EXTENSION IF NOT EXISTS pgcrypto",
        "CREATE SCHEMA s",
        "ALTER TABLE t ADD COLUMN b int",
        "ALTER ROLE r SET search_path = x",
        "DROP TABLE t",
        "DROP INDEX IF EXISTS i",
        "TRUNCATE t",
        "TRUNCATE TABLE a, b",
        "COMMENT ON TABLE t IS 'x'",
        "GRANT SELECT ON t TO u",
        "REVOKE SELECT ON t FROM u",
        "CREATE ROLE r",
    ] {
        plain_primary(sql);
    }
    // Valid PostgreSQL that sqlparser does not know: still the primary.
    for sql in [
        "REFRESH MATERIALIZED VIEW v",
        "ALTER SYSTEM SET work_mem = '64MB'",
        "IMPORT FOREIGN SCHEMA x FROM SERVER s INTO y",
        "SECURITY LABEL ON TABLE t IS 'x'",
    ] {
        primary(sql);
    }
}

#[test]
fn copy_from_and_server_side_files() {
    plain_primary("COPY t FROM STDIN");
    plain_primary("COPY t (a, b) FROM STDIN WITH (FORMAT csv)");
    plain_primary("COPY t FROM '/tmp/data.csv'");
    plain_primary("COPY t FROM PROGRAM 'cat /tmp/x'");
    plain_primary("COPY t TO '/tmp/x'");
    plain_primary("COPY t TO PROGRAM 'gzip > /tmp/x.gz'");
    plain_primary("COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT");
}

#[test]
fn locking_reads() {
    for sql in [
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t WHERE id = $1 FOR UPDATE",
        "SELECT * FROM t FOR SHARE",
        "SELECT * FROM t FOR NO KEY UPDATE",
        "SELECT * FROM t FOR KEY SHARE",
        "SELECT * FROM t FOR UPDATE OF t NOWAIT",
        "SELECT * FROM t FOR SHARE OF t SKIP LOCKED",
        "SELECT 1 FOR UPDATE",
        "select * from t for update",
        "SELECT * FROM t WHERE a IN (SELECT b FROM u FOR UPDATE)",
        "WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x",
    ] {
        plain_primary(sql);
    }
}

#[test]
fn select_into() {
    plain_primary("SELECT * INTO newtable FROM t");
    plain_primary("SELECT a, b INTO t2 FROM t WHERE a > 1");
    plain_primary("SELECT 1 FROM t UNION ALL SELECT 2 INTO x");
}

#[test]
fn writable_ctes() {
    for sql in [
        "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x",
        "WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x",
        "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
        "WITH a AS (SELECT 1), b AS (DELETE FROM t RETURNING id) SELECT * FROM a, b",
    ] {
        plain_primary(sql);
    }
}

#[test]
fn explain() {
    plain_primary("EXPLAIN ANALYZE DELETE FROM t");
    plain_primary("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1");
    // Not executed, but routed like the write it explains (documented).
    plain_primary("EXPLAIN DELETE FROM t");
    plain_primary("EXPLAIN INSERT INTO t VALUES (1)");
    plain_primary("EXPLAIN SELECT * FROM t FOR UPDATE");
}

#[test]
fn locks_and_maintenance() {
    for sql in [
        "LOCK t",
        "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
        "VACUUM t",
        "VACUUM (VERBOSE, ANALYZE) t",
        "ANALYZE t",
        "REINDEX TABLE t",
        "CLUSTER t",
        "CHECKPOINT",
    ] {
        plain_primary(sql);
    }
}

#[test]
fn procedures_and_sql_level_statements() {
    plain_primary("CALL p(1)");
    plain_primary("DO $$ BEGIN PERFORM 1; END $$");
    plain_primary("DO LANGUAGE plpgsql $$ BEGIN END $$");
    plain_primary("EXECUTE foo(1)");
    plain_primary("DEALLOCATE foo");
    plain_primary("DEALLOCATE PREPARE foo");
    plain_primary("FETCH 10 FROM c");
    plain_primary("CLOSE c");
    plain_primary("NOTIFY ch, 'payload'");
    plain_primary("UNLISTEN ch");
    plain_primary("SAVEPOINT a");
    plain_primary("RELEASE SAVEPOINT a");
    plain_primary("ROLLBACK TO SAVEPOINT a");
}

#[test]
fn writer_functions_anywhere() {
    for sql in [
        "SELECT nextval('s')",
        "SELECT NEXTVAL('s')",
        "SELECT * FROM t WHERE id = nextval('s')",
        "select pg_catalog.setval('s', 42, true)",
        "SELECT currval('s')",
        "SELECT lastval()",
        "SELECT coalesce(nextval('s'), 0)",
        "SELECT (SELECT nextval('s'))",
        "SELECT * FROM t WHERE id IN (SELECT nextval('s'))",
        "WITH x AS (SELECT nextval('s') AS id) SELECT * FROM x",
        "SELECT * FROM t CROSS JOIN LATERAL (SELECT nextval('s')) x",
        "SELECT * FROM t ORDER BY setval('s', 1)",
        "SELECT count(*) FROM t GROUP BY a HAVING max(nextval('s')) > 0",
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT pg_advisory_unlock(1)",
        "SELECT pg_advisory_unlock_all()",
        "SELECT pg_notify('ch', 'x')",
        "SELECT txid_current()",
        "SELECT pg_current_xact_id()",
        "SELECT pg_switch_wal()",
        "SELECT pg_create_restore_point('x')",
        "SELECT pg_create_physical_replication_slot('s')",
        "SELECT pg_drop_replication_slot('s')",
        "SELECT pg_logical_emit_message(true, 'p', 'm')",
        "SELECT lo_create(0), lo_import('/x'), lo_unlink(1)",
        "SELECT lo_open(1, 131072)",
        "SELECT lowrite(0, 'x')",
        "SELECT dblink_exec('c', 'DELETE FROM t')",
        "SELECT * FROM dblink('c', 'SELECT 1') AS t(a int)",
        "SELECT pg_stat_reset()",
        "SELECT pg_stat_reset_shared('bgwriter')",
        "SELECT pg_promote()",
        "SELECT pg_backup_start('x')",
        "SELECT pg_replication_origin_create('o')",
        "SELECT pg_current_wal_lsn()",
        "SELECT myschema.nextval('s')",
        "EXPLAIN SELECT nextval('s')",
    ] {
        let a = primary(sql);
        assert!(a.unknown_functions.is_empty(), "{sql:?} -> {a:?}");
    }
}

#[test]
fn configured_write_functions() {
    let c = Classifier::new(ClassifierConfig {
        write_functions: vec!["Audit.Log".into(), "bump_counter".into()],
        ..ClassifierConfig::default()
    });
    for sql in [
        "SELECT audit.log('x')",
        "SELECT bump_counter()",
        "SELECT * FROM t WHERE a = other.bump_counter()",
    ] {
        assert_eq!(c.classify_uncached(sql).route, Route::Primary, "{sql}");
        assert_eq!(c.classify(sql).route, Route::Primary, "{sql}");
    }
    let a = c.classify_uncached("SELECT log('x')");
    assert_eq!(a.route, Route::Replica, "log() is the built-in logarithm");
}

#[test]
fn multi_statement() {
    let a = primary("SELECT 1; INSERT INTO t VALUES (1)");
    assert_eq!(a.statement_count, 2);
    let a = primary("INSERT INTO t VALUES (1); SELECT 1;");
    assert_eq!(a.statement_count, 2);
    let a = replica("SELECT 1; SELECT 2; VALUES (3)");
    assert_eq!(a.statement_count, 3);
    primary("SELECT 1; SELECT nextval('s')");
    primary("SELECT 1; SHOW x; COPY t FROM STDIN");
}
