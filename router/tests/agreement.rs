//! The fast path must say exactly what the parser says, whenever it answers.

use pgsplit_router::{Classifier, ClassifierConfig, Route};

/// Statements of many shapes, fast-pathable or not.
const CORPUS: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 42",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
    "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2;",
    "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2;",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
    "BEGIN;",
    "BEGIN",
    "begin work",
    "BEGIN TRANSACTION",
    "START TRANSACTION",
    "BEGIN READ ONLY",
    "END;",
    "END TRANSACTION",
    "COMMIT",
    "commit work;",
    "ROLLBACK",
    "ROLLBACK TRANSACTION",
    "ABORT",
    "ROLLBACK TO SAVEPOINT a",
    "SET search_path = x",
    "SET search_path TO x, y",
    "set application_name = 'x';",
    "SET statement_timeout TO 1000",
    "SET LOCAL search_path = x",
    "SET SESSION search_path = x",
    "SET TIME ZONE 'UTC'",
    "SET ROLE foo",
    "SET TRANSACTION READ ONLY",
    "RESET search_path",
    "RESET ALL",
    "SHOW search_path",
    "SHOW ALL",
    "SHOW TRANSACTION ISOLATION LEVEL",
    "SELECT 1",
    "SELECT 1;",
    "SELECT 1;;",
    "SELECT * FROM t",
    "select a, b from s.t where a = $1 and b like 'x%' order by 1 limit 10 offset 5",
    "SELECT count(*) FROM t GROUP BY a HAVING count(*) > 1",
    "SELECT count(*) FILTER (WHERE a > 1) OVER (PARTITION BY b) FROM t",
    "SELECT row_number() OVER (ORDER BY a) FROM t",
    "SELECT * FROM a JOIN b USING (id) LEFT JOIN c ON c.id = b.id",
    "SELECT * FROM a JOIN (SELECT * FROM b) x ON x.id = a.id",
    "SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
    "SELECT a FROM t WHERE a IN (1, 2, 3) AND b NOT IN (SELECT b FROM u)",
    "SELECT ARRAY(SELECT 1), ROW(1, 2), a = ANY(ARRAY[1]) FROM t",
    "SELECT 1 WHERE 1 = ALL(SELECT 1)",
    "SELECT DISTINCT ON (a) a FROM t",
    "SELECT CAST(a AS int), a::numeric(10, 2), a::varchar(10) FROM t",
    "SELECT extract(epoch FROM now()), substring('abc' FROM 1 FOR 2)",
    "SELECT position('a' IN 'b'), trim(both ' ' FROM x), overlay('a' PLACING 'b' FROM 1) FROM t",
    "SELECT coalesce(a, b), nullif(a, b), greatest(1, 2), least(1, 2) FROM t",
    "SELECT now(), random(), gen_random_uuid(), version()",
    "SELECT * FROM generate_series(1, 10) AS g",
    "SELECT * FROM generate_series(1, 10) AS g(x)",
    "SELECT * FROM unnest(ARRAY[1, 2]) AS u(x)",
    "SELECT * FROM t, LATERAL (SELECT 1) x",
    "SELECT CASE WHEN a > 0 THEN 'pos' ELSE 'neg' END FROM t",
    "SELECT a FROM t UNION SELECT b FROM u INTERSECT SELECT c FROM v",
    "SELECT jsonb_build_object('a', 1) -> 'a', to_char(now(), 'YYYY')",
    "SELECT myfn(1)",
    "SELECT myschema.myfn(1)",
    "SELECT \"MyFn\"(1)",
    "SELECT pg_catalog.now()",
    "SELECT nextval('s')",
    "SELECT * FROM t WHERE id = nextval('s')",
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_advisory_xact_lock(1)",
    "SELECT set_config('a', 'b', false)",
    "SELECT * FROM t FOR UPDATE",
    "SELECT * FROM t FOR SHARE",
    "SELECT * INTO t2 FROM t",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
    "WITH a AS MATERIALIZED (SELECT now()), b AS (SELECT random()) SELECT * FROM a, b",
    "WITH x AS (SELECT myfn(1)) SELECT * FROM x",
    "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
    "WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x",
    "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
    "WITH x AS (SELECT 1) SELECT * FROM x FOR UPDATE",
    "SELECT * FROM generate_series(1, 3) WITH ORDINALITY AS g(x, n)",
    "VALUES (1)",
    "VALUES (1, 'a'), (2, 'b')",
    "VALUES (nextval('s'))",
    "INSERT INTO t VALUES (1)",
    "INSERT INTO t VALUES (nextval('s'))",
    "INSERT INTO t VALUES (pg_advisory_lock(1))",
    "INSERT INTO t VALUES (pg_catalog.pg_advisory_lock(1))",
    "INSERT INTO t SELECT * FROM u WHERE myfn(u.a)",
    "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = excluded.b RETURNING *",
    "UPDATE t SET a = 1 FROM u WHERE t.id = u.id",
    "update t set a = set_config('x', 'y', true)",
    "DELETE FROM t WHERE id = $1 RETURNING id",
    "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE",
    "SELECT 1; SELECT 2",
    "BEGIN; SELECT 1",
    "SET a = 1; SET b = 2",
    "TABLE t",
    "TABLE pg_locks",
    "TABLE pg_catalog.pg_stat_activity",
    "SELECT * FROM pg_stat_activity",
    "SELECT count(*) FROM \"pg_locks\"",
    "SELECT pg_stat_get_numscans(1)",
    "EXPLAIN SELECT 1",
    "COPY t TO STDOUT",
    "CREATE TABLE t (a int)",
    "DISCARD ALL",
    "LISTEN ch",
];

#[test]
fn fast_path_agrees_with_parser() {
    let c = Classifier::new(ClassifierConfig {
        read_functions: vec!["reader".into()],
        write_functions: vec!["writer".into()],
        ..ClassifierConfig::default()
    });
    let extra = [
        "SELECT reader(1)",
        "SELECT writer(1)",
        "INSERT INTO t VALUES (writer())",
    ];
    let mut fast = 0;
    let mut disagree = Vec::new();
    for sql in CORPUS.iter().chain(extra.iter()) {
        let Some(f) = c.fast_path(sql) else { continue };
        fast += 1;
        let p = c.classify_parsed(sql);
        if p.parsed {
            if f != p {
                disagree.push(format!("{sql:?}\n  fast:   {f:?}\n  parser: {p:?}"));
            }
        } else {
            // Parser gaps: the fast path may know better, but must never
            // send a certain write to a replica.
            assert!(f.route == Route::Primary || !sql.to_lowercase().contains("insert"));
        }
        // With a hint both paths must still agree.
        let hinted = format!("/* pgsplit:replica */ {sql}");
        if p.parsed {
            assert_eq!(
                c.fast_path(&hinted),
                Some(c.classify_parsed(&hinted)),
                "{hinted:?}"
            );
        }
    }
    assert!(
        disagree.is_empty(),
        "fast path and parser disagree:\n{}",
        disagree.join("\n")
    );
    assert!(fast >= 50, "fast path answered only {fast} statements");
}

#[test]
fn hot_shapes_take_the_fast_path() {
    let c = Classifier::new(ClassifierConfig::default());
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
        "BEGIN;",
        "END;",
        "COMMIT",
        "ROLLBACK",
        "SET search_path = x",
        "RESET ALL",
        "SHOW search_path",
        "SELECT count(*) FROM t WHERE a IN (1, 2, 3)",
        "TABLE t",
        "VALUES (1)",
        "WITH x AS (SELECT 1) SELECT * FROM x",
    ] {
        assert!(c.fast_path(sql).is_some(), "{sql:?} should take the fast path");
    }
    for sql in [
        "SELECT * FROM t FOR UPDATE",
        "SELECT * INTO x FROM t",
        "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
        "SELECT nextval('s')",
        "SELECT myfn()",
        "SELECT s.fn()",
        "SELECT 1; SELECT 2",
        "BEGIN READ ONLY",
        "SET LOCAL a = 1",
        "INSERT INTO t VALUES (pg_advisory_lock(1))",
        "SELECT 'unterminated",
    ] {
        assert!(c.fast_path(sql).is_none(), "{sql:?} must go to the parser");
    }
}
