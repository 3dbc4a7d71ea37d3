//! Views and functions that describe one server go to the primary (what
//! "the database" means to someone monitoring it through pgsplit); a
//! replica hint still sends them to a standby.

mod common;

use common::*;
use pgsplit_router::{Hint, Route};

#[test]
fn statistics_and_activity_views_read_on_the_primary() {
    for sql in [
        "SELECT * FROM pg_stat_user_tables WHERE relname = 't'",
        "SELECT seq_scan, n_tup_ins FROM pg_catalog.pg_stat_user_tables",
        "SELECT * FROM PG_STAT_ACTIVITY",
        "SELECT count(*) FROM pg_stat_wal_receiver",
        "SELECT * FROM pg_stat_replication",
        "SELECT heap_blks_read FROM pg_statio_user_tables",
        "SELECT * FROM pg_locks l JOIN pg_class c ON c.oid = l.relation",
        "SELECT gid FROM pg_prepared_xacts",
        "SELECT name FROM pg_backend_memory_contexts",
        "SELECT * FROM \"pg_locks\"",
        "SELECT * FROM t WHERE id IN (SELECT pid FROM pg_stat_activity)",
        "WITH a AS (SELECT * FROM pg_stat_activity) SELECT count(*) FROM a",
        "TABLE pg_stat_activity",
        "TABLE pg_catalog.pg_locks",
        "SELECT pg_stat_get_numscans('t'::regclass)",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'x'",
        "SELECT pg_reload_conf()",
        "SELECT pg_cancel_backend(12345)",
        "SELECT * FROM pg_ls_waldir()",
        "EXPLAIN SELECT * FROM pg_stat_activity",
    ] {
        let a = primary(sql);
        assert!(a.effects.is_empty(), "{sql:?}: {a:?}");
    }
}

#[test]
fn catalogs_and_lookalikes_still_read_on_replicas() {
    for sql in [
        "SELECT * FROM pg_class",
        "SELECT * FROM pg_stats WHERE tablename = 't'",
        "SELECT * FROM pg_statistic_ext",
        "SELECT * FROM pg_settings",
        "SELECT pg_stat_activity FROM t",
        "SELECT * FROM myschema.pg_locks",
        "SELECT 'pg_stat_activity'",
        "SELECT pg_backend_pid(), pg_relation_size('t')",
        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()",
        "TABLE myschema.pg_stat_activity",
        "TABLE t",
    ] {
        assert_route(sql, Route::Replica);
    }
}

#[test]
fn a_replica_hint_still_reads_them_on_a_standby() {
    for sql in [
        "/* pgsplit:replica */ SELECT * FROM pg_stat_wal_receiver",
        "/* pgsplit:replica */ SELECT pg_stat_get_numscans('t'::regclass)",
        "/* pgsplit:replica */ TABLE pg_stat_activity",
    ] {
        let a = classify(sql);
        assert_eq!(
            (a.hint, a.route),
            (Some(Hint::Replica), Route::Replica),
            "{sql:?}"
        );
    }
}
