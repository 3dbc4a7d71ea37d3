//! Statements that may run on a replica, and unknown-function reporting.

mod common;

use common::*;
use pgsplit_router::{Classifier, ClassifierConfig, Route};

#[test]
fn pgbench_select() {
    plain_replica("SELECT abalance FROM pgbench_accounts WHERE aid = $1;");
    plain_replica("SELECT abalance FROM pgbench_accounts WHERE aid = 48271;");
}

#[test]
fn plain_selects() {
    for sql in [
        "SELECT 1",
        "select 1",
        "SeLeCt 1;",
        "   SELECT\n\t1   ;  ",
        "SELECT * FROM t",
        "SELECT a, b FROM s.t WHERE a = $1 AND b LIKE 'x%' ORDER BY 1 LIMIT 10 OFFSET 5",
        "SELECT $1::int, $2::text",
        "SELECT DISTINCT ON (a) a FROM t",
        "SELECT count(*) FROM t GROUP BY a HAVING count(*) > 1",
        "SELECT CASE WHEN a THEN 1 ELSE 2 END FROM t",
        "SELECT x::regclass, '1 day'::interval, interval '1 day', a->>'b', a @> '{}' FROM t",
        "SELECT * FROM t WHERE (a, b) = (1, 2) AND c BETWEEN 1 AND 2 AND d IS NOT NULL",
        "SELECT 1 FETCH FIRST 1 ROWS ONLY",
        "SELECT t.* FROM t",
        "SELECT 1 AS \"for\"",
        "SELECT 'for update', 'insert into t' FROM t",
        "SELECT 1 -- FOR UPDATE\n",
        "SELECT /* INSERT */ 1",
        "SELECT E'it\\'s', $$x; DELETE FROM t$$, U&'d\\0061t'",
        "SELECT current_date, current_timestamp, localtime, current_user, session_user",
    ] {
        plain_replica(sql);
    }
}

#[test]
fn joins_subqueries_and_set_operations() {
    for sql in [
        "SELECT * FROM a JOIN b USING (id) LEFT JOIN c ON c.id = b.id",
        "SELECT * FROM a, b, c WHERE a.id = b.id AND b.id = c.id",
        "SELECT * FROM a CROSS JOIN LATERAL (SELECT * FROM b WHERE b.a = a.id) x",
        "SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
        "SELECT a FROM t WHERE a IN (SELECT b FROM u)",
        "SELECT (SELECT max(x) FROM u) FROM t",
        "SELECT * FROM (SELECT * FROM t) sub",
        "SELECT 1 UNION ALL SELECT 2 EXCEPT SELECT 3",
        "SELECT ARRAY(SELECT 1), ROW(1, 2), a = ANY(ARRAY[1]) FROM t",
        "SELECT 1 WHERE 1 = ALL(SELECT 1)",
    ] {
        plain_replica(sql);
    }
}

#[test]
fn read_only_ctes() {
    plain_replica("WITH a AS (SELECT 1), b AS MATERIALIZED (SELECT 2) SELECT * FROM a, b");
    plain_replica("WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r");
    plain_replica(
        "WITH x AS (SELECT a FROM t1 JOIN t2 ON t1.id = t2.id) \
         SELECT * FROM x JOIN t3 ON t3.id = x.a",
    );
}

#[test]
fn values_table_show() {
    plain_replica("VALUES (1)");
    plain_replica("VALUES (1, 'a'), (2, 'b')");
    plain_replica("SELECT * FROM (VALUES (1)) v(a)");
    plain_replica("TABLE t");
    plain_replica("TABLE myschema.t;");
    plain_replica("SHOW search_path");
    plain_replica("SHOW ALL");
    plain_replica("SHOW TRANSACTION ISOLATION LEVEL");
}

#[test]
fn explain_of_reads() {
    plain_replica("EXPLAIN SELECT * FROM t");
    plain_replica("EXPLAIN ANALYZE SELECT * FROM t");
    plain_replica("EXPLAIN (ANALYZE, BUFFERS) SELECT 1");
    plain_replica("EXPLAIN (FORMAT JSON) SELECT 1");
}

#[test]
fn copy_to_stdout() {
    plain_replica("COPY t TO STDOUT");
    plain_replica("COPY t (a, b) TO STDOUT (FORMAT binary)");
    plain_replica("COPY (SELECT 1) TO STDOUT");
    plain_replica("COPY (SELECT * FROM t WHERE a > 1) TO STDOUT WITH (FORMAT csv)");
}

#[test]
fn harmless_functions() {
    for sql in [
        "SELECT random()",
        "SELECT now(), clock_timestamp(), statement_timestamp(), timeofday()",
        "SELECT gen_random_uuid()",
        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn()",
        "SELECT pg_last_xact_replay_timestamp(), pg_backend_pid(), version()",
        "SELECT inet_server_port(), inet_server_addr(), inet_client_addr()",
        "SELECT current_setting('search_path'), pg_sleep(0)",
        "SELECT coalesce(a, b), nullif(a, b), greatest(1, 2), least(1, 2) FROM t",
        "SELECT to_char(now(), 'YYYY'), to_json(t), jsonb_build_object('a', 1) FROM t",
        "SELECT array_agg(x ORDER BY y), string_agg(x, ',') FROM t",
        "SELECT count(*) FILTER (WHERE a > 1) OVER (PARTITION BY b) FROM t",
        "SELECT row_number() OVER (ORDER BY a), lag(a) OVER w FROM t WINDOW w AS (ORDER BY a)",
        "SELECT pg_get_viewdef('v'::regclass), has_table_privilege('t', 'select')",
        "SELECT pg_catalog.now(), pg_catalog.count(*) FROM t",
        "SELECT upper(lower(trim(x))), length(x), substring(x from 1 for 2) FROM t",
        "SELECT extract(epoch FROM now()), date_trunc('day', now())",
        "SELECT * FROM generate_series(1, 10) g",
        "SELECT * FROM unnest(ARRAY[1, 2]) AS u(x)",
        "SELECT abs(round(random() * 10))",
    ] {
        plain_replica(sql);
    }
}

#[test]
fn unknown_functions_are_reported() {
    let a = replica("SELECT myschema.myfn()");
    assert_eq!(a.unknown_functions, vec!["myschema.myfn"]);
    let a = replica("SELECT MyFn(1) FROM t WHERE other_fn(a) > 0");
    assert_eq!(a.unknown_functions, vec!["myfn", "other_fn"]);
    let a = replica("SELECT \"MyFn\"(1)");
    assert_eq!(a.unknown_functions, vec!["MyFn"]);
    let a = replica("SELECT * FROM myschema.srf(1)");
    assert_eq!(a.unknown_functions, vec!["myschema.srf"]);
    let a = replica("SELECT * FROM t, LATERAL f(t.a) x");
    assert_eq!(a.unknown_functions, vec!["f"]);
    let a = replica("WITH x AS (SELECT f(1)) SELECT f(2), g(f(3)) FROM x");
    assert_eq!(a.unknown_functions, vec!["f", "g"]);
    let a = replica("SELECT myschema.count(*) FROM t");
    assert_eq!(a.unknown_functions, vec!["myschema.count"]);
    let a = replica("SELECT pg_catalog.obscure_builtin(1)");
    assert_eq!(a.unknown_functions, vec!["obscure_builtin"]);
    let a = replica("SELECT abs(f(1))");
    assert_eq!(a.unknown_functions, vec!["f"]);
}

#[test]
fn configured_read_functions() {
    let c = Classifier::new(ClassifierConfig {
        read_functions: vec!["MyFn".into(), "audit.peek".into()],
        ..ClassifierConfig::default()
    });
    let a = c.classify_uncached("SELECT myfn(1), other.myfn(2), audit.peek()");
    assert_eq!(a.route, Route::Replica);
    assert!(a.unknown_functions.is_empty(), "{a:?}");
    let a = c.classify_uncached("SELECT peek()");
    assert_eq!(a.unknown_functions, vec!["peek"]);
    // A configured reader cannot launder a writer.
    let c = Classifier::new(ClassifierConfig {
        read_functions: vec!["nextval".into()],
        ..ClassifierConfig::default()
    });
    assert_eq!(
        c.classify_uncached("SELECT nextval('s')").route,
        Route::Primary
    );
}

#[test]
fn declare_cursor_without_hold() {
    let a = replica("DECLARE c CURSOR FOR SELECT 1");
    assert!(!a.effects.pins_session);
}

#[test]
fn empty_and_comment_only() {
    for sql in ["", "   ", ";", "/* nothing */", "-- nothing"] {
        let a = classify(sql);
        assert_eq!(a.route, Route::Replica, "{sql:?}");
        assert_eq!(a.statement_count, 0, "{sql:?}");
    }
}
