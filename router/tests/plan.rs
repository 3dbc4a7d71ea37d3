//! The routing rules of the README, one test per rule, with no server.

use pgsplit_router::plan::*;
use pgsplit_router::{Classifier, ClassifierConfig};

fn shape_of(sqls: &[&str], default_read_only: bool) -> RequestShape {
    let c = Classifier::new(ClassifierConfig::default());
    let mut s = RequestShape {
        complete: true,
        runs: true,
        ..RequestShape::default()
    };
    for sql in sqls {
        let a = c.classify(sql);
        if sqls.len() == 1 {
            s.bare_begin = a.statement_count == 1 && a.effects.begin && !a.effects.begin_read_only;
        }
        s.add_statement(&a, default_read_only, |_| Functions::NotKnownYet);
    }
    s
}

fn route(sql: &str) -> Plan {
    plan(&shape_of(&[sql], false), SessionFacts::default())
}

#[test]
fn writes_go_to_the_primary() {
    for sql in [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "CREATE TABLE x (a int)",
        "SELECT * FROM t FOR UPDATE",
        "SELECT nextval('s')",
        "LISTEN ch",
        "SET search_path = a",
    ] {
        assert_eq!(route(sql), Plan::Primary(PrimaryWhy::Writes), "{sql}");
    }
}

#[test]
fn plain_reads_are_load_balanced() {
    for sql in [
        "SELECT 1",
        "SELECT * FROM t",
        "VALUES (1)",
        "SHOW search_path",
    ] {
        assert_eq!(route(sql), Plan::Read(Weight::Runs), "{sql}");
    }
}

#[test]
fn a_query_string_with_a_write_goes_to_the_primary() {
    let s = shape_of(&["SELECT 1; INSERT INTO t VALUES (1)"], false);
    assert_eq!(
        plan(&s, SessionFacts::default()),
        Plan::Primary(PrimaryWhy::Writes)
    );
}

#[test]
fn a_batch_that_reads_then_writes_goes_to_the_primary() {
    let s = shape_of(&["SELECT 1", "INSERT INTO t VALUES (1)"], false);
    assert_eq!(
        plan(&s, SessionFacts::default()),
        Plan::Primary(PrimaryWhy::Writes)
    );
}

#[test]
fn an_unfinished_read_waits_for_the_rest_of_its_request() {
    let mut s = shape_of(&["SELECT 1"], false);
    s.complete = false;
    assert_eq!(plan(&s, SessionFacts::default()), Plan::NeedMore);
}

#[test]
fn a_write_is_decided_before_its_request_is_complete() {
    let mut s = shape_of(&["INSERT INTO t VALUES (1)"], false);
    s.complete = false;
    assert_eq!(
        plan(&s, SessionFacts::default()),
        Plan::Primary(PrimaryWhy::Writes)
    );
}

#[test]
fn replica_hint_sends_a_writer_function_call_to_a_replica() {
    assert_eq!(
        route("/* pgsplit:replica */ SELECT nextval('s')"),
        Plan::Read(Weight::Runs)
    );
}

#[test]
fn replica_hint_cannot_send_dml_to_a_replica() {
    assert_eq!(
        route("/* pgsplit:replica */ INSERT INTO t VALUES (1)"),
        Plan::Primary(PrimaryWhy::Writes)
    );
}

#[test]
fn primary_hint_sends_a_read_to_the_primary() {
    assert_eq!(
        route("/* pgsplit:primary */ SELECT 1"),
        Plan::Primary(PrimaryWhy::Writes)
    );
    assert_eq!(
        route("/*NO LOAD BALANCE*/ SELECT 1"),
        Plan::Primary(PrimaryWhy::Writes)
    );
}

#[test]
fn user_function_not_looked_up_yet_goes_to_the_primary() {
    assert_eq!(route("SELECT my_func()"), Plan::Primary(PrimaryWhy::Writes));
}

#[test]
fn stable_user_function_goes_to_a_replica() {
    let c = Classifier::new(ClassifierConfig::default());
    let mut s = RequestShape {
        complete: true,
        runs: true,
        ..RequestShape::default()
    };
    s.add_statement(&c.classify("SELECT my_func()"), false, |names| {
        assert_eq!(names, ["my_func"]);
        Functions::ReadOnly
    });
    assert_eq!(plan(&s, SessionFacts::default()), Plan::Read(Weight::Runs));
    let mut v = RequestShape::default();
    v.add_statement(&c.classify("SELECT my_func()"), false, |_| {
        Functions::MayWrite
    });
    assert!(v.writes);
}

#[test]
fn bare_begin_is_deferred() {
    assert_eq!(route("BEGIN"), Plan::DeferBegin);
    assert_eq!(route("START TRANSACTION"), Plan::DeferBegin);
}

#[test]
fn begin_read_only_runs_the_transaction_on_a_replica() {
    assert_eq!(route("BEGIN READ ONLY"), Plan::Read(Weight::Runs));
    assert_eq!(
        route("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
        Plan::Read(Weight::Runs)
    );
}

#[test]
fn deferred_transaction_declared_read_only_goes_to_a_replica() {
    let s = shape_of(&["SET TRANSACTION READ ONLY"], false);
    let facts = SessionFacts {
        deferred_begin: true,
        ..SessionFacts::default()
    };
    assert_eq!(plan(&s, facts), Plan::Read(Weight::Runs));
}

#[test]
fn deferred_transaction_starting_with_a_read_runs_on_the_primary() {
    let s = shape_of(&["SELECT 1"], false);
    let facts = SessionFacts {
        deferred_begin: true,
        ..SessionFacts::default()
    };
    assert_eq!(plan(&s, facts), Plan::Primary(PrimaryWhy::Transaction));
}

#[test]
fn default_transaction_read_only_runs_transactions_on_a_replica() {
    let s = shape_of(&["BEGIN"], true);
    let facts = SessionFacts {
        default_read_only: true,
        ..SessionFacts::default()
    };
    assert_eq!(plan(&s, facts), Plan::Read(Weight::Runs));
}

#[test]
fn pinned_session_stays_on_the_primary() {
    let s = shape_of(&["SELECT 1"], false);
    let facts = SessionFacts {
        pinned: true,
        ..SessionFacts::default()
    };
    assert_eq!(plan(&s, facts), Plan::Primary(PrimaryWhy::Pinned));
}

#[test]
fn pinning_statements_go_to_the_primary() {
    for sql in [
        "CREATE TEMP TABLE t (a int)",
        "SELECT pg_advisory_lock(1)",
        "PREPARE p AS SELECT 1",
        "LOAD 'x'",
    ] {
        assert_eq!(route(sql), Plan::Primary(PrimaryWhy::Writes), "{sql}");
    }
}

#[test]
fn known_prepares_are_answered_by_pgsplit() {
    let s = RequestShape {
        known_prepares: true,
        ..RequestShape::default()
    };
    assert_eq!(plan(&s, SessionFacts::default()), Plan::AnswerPrepare);
}

#[test]
fn a_prepare_only_read_takes_no_turn() {
    let mut s = shape_of(&["SELECT 1"], false);
    s.runs = false;
    assert_eq!(
        plan(&s, SessionFacts::default()),
        Plan::Read(Weight::PrepareOnly)
    );
}

#[test]
fn an_unclassifiable_request_goes_to_the_primary() {
    let s = RequestShape {
        complete: true,
        ..RequestShape::default()
    };
    assert_eq!(
        plan(&s, SessionFacts::default()),
        Plan::Primary(PrimaryWhy::Unclassified)
    );
}

#[test]
fn a_request_with_nothing_to_classify_is_not_a_write_for_read_your_writes() {
    let nothing = RequestShape {
        complete: true,
        ..RequestShape::default()
    };
    assert!(!plan(&nothing, SessionFacts::default()).may_write());
    let writes = RequestShape {
        writes: true,
        ..nothing
    };
    assert!(plan(&writes, SessionFacts::default()).may_write());
    let pinned = SessionFacts {
        pinned: true,
        ..SessionFacts::default()
    };
    assert!(
        plan(&nothing, pinned).may_write(),
        "a pinned session's request may write"
    );
    assert!(!Plan::Read(Weight::Runs).may_write());
    assert!(!Plan::DeferBegin.may_write());
}

#[test]
fn read_with_no_need_goes_to_the_picked_replica() {
    assert_eq!(
        place_read(ReadNeed::Any, Some(0), false, |lsn| {
            assert_eq!(lsn, 0);
            Some(1)
        }),
        (ReadPlace::Server(1), 0)
    );
}

#[test]
fn read_falls_back_to_the_primary_the_balancer_picked() {
    assert_eq!(
        place_read(ReadNeed::Any, Some(0), false, |_| Some(0)),
        (ReadPlace::Server(0), 0)
    );
}

#[test]
fn read_with_no_server_at_all_is_refused() {
    assert_eq!(
        place_read(ReadNeed::Any, Some(0), false, |_| None),
        (ReadPlace::Refuse, 0)
    );
}

#[test]
fn causal_read_goes_to_a_replica_that_has_the_write() {
    assert_eq!(
        place_read(ReadNeed::AtLeast(500), Some(0), false, |lsn| {
            assert_eq!(lsn, 500);
            Some(2)
        }),
        (ReadPlace::Server(2), 500)
    );
}

#[test]
fn causal_read_no_replica_has_goes_to_the_primary() {
    assert_eq!(
        place_read(ReadNeed::AtLeast(500), Some(0), false, |_| Some(0)),
        (ReadPlace::Primary, 500)
    );
    assert_eq!(
        place_read(ReadNeed::AtLeast(500), Some(0), false, |_| None),
        (ReadPlace::Primary, 500)
    );
}

#[test]
fn causal_read_no_replica_has_waits_with_causal_wait() {
    assert_eq!(
        place_read(ReadNeed::AtLeast(500), Some(0), true, |_| None),
        (ReadPlace::Wait, 500)
    );
}

#[test]
fn read_right_after_a_write_whose_position_is_unsampled_goes_to_the_primary() {
    let never = |_| -> Option<usize> { panic!("no pick without a position") };
    assert_eq!(
        place_read(ReadNeed::Unsampled(7), Some(0), false, never),
        (ReadPlace::Primary, u64::MAX)
    );
    assert_eq!(
        place_read(ReadNeed::Unsampled(7), Some(0), true, never),
        (ReadPlace::Wait, u64::MAX)
    );
}

#[test]
fn read_that_needs_the_primary_goes_there() {
    assert_eq!(
        place_read(ReadNeed::Primary, Some(0), true, |_| Some(1)),
        (ReadPlace::Primary, u64::MAX)
    );
}

#[test]
fn pipelined_write_joins_a_primary_connection() {
    let p = Plan::Primary(PrimaryWhy::Writes);
    assert_eq!(join(p, || ReadNeed::Any, true, |_| true), Join::AsWrite);
    assert_eq!(join(p, || ReadNeed::Any, false, |_| true), Join::Wait);
}

#[test]
fn pipelined_read_joins_a_replica_that_meets_its_need() {
    let p = Plan::Read(Weight::Runs);
    assert_eq!(join(p, || ReadNeed::Any, false, |_| true), Join::AsRead);
    assert_eq!(
        join(p, || ReadNeed::AtLeast(9), false, |n| n == ReadNeed::Any),
        Join::Wait
    );
}

#[test]
fn pipelined_read_after_a_write_waits_for_the_primary_connection() {
    // Routed afresh once the write's reply is in: read-your-writes then
    // knows the session wrote.
    let p = Plan::Read(Weight::Runs);
    assert_eq!(join(p, || ReadNeed::Any, true, |_| true), Join::Wait);
}

#[test]
fn pipelined_local_answers_and_deferred_begins_wait() {
    for p in [Plan::AnswerPrepare, Plan::DeferBegin, Plan::NeedMore] {
        assert_eq!(join(p, || ReadNeed::Any, true, |_| true), Join::Wait);
    }
}

#[test]
fn currval_and_lastval_need_the_connection_of_the_sessions_last_write() {
    for sql in [
        "SELECT currval('s')",
        "SELECT lastval()",
        "SELECT pg_catalog.currval('public.s'::regclass)",
        "SELECT * FROM t WHERE id = currval('s')",
        "INSERT INTO t VALUES (nextval('s')); SELECT currval('s')",
    ] {
        assert_eq!(route(sql), Plan::Primary(PrimaryWhy::Sequences), "{sql}");
        assert!(route(sql).may_write(), "{sql}");
    }
    // In a transaction or a pinned session the held connection answers.
    let s = shape_of(&["SELECT currval('s')"], false);
    let pinned = SessionFacts {
        pinned: true,
        ..SessionFacts::default()
    };
    assert_eq!(plan(&s, pinned), Plan::Primary(PrimaryWhy::Pinned));
    // Joining the write it follows in a pipeline is what it needs.
    let joined = join(
        Plan::Primary(PrimaryWhy::Sequences),
        || ReadNeed::Any,
        true,
        |_| false,
    );
    assert_eq!(joined, Join::AsWrite);
    // nextval itself is an ordinary write.
    assert_eq!(
        route("SELECT nextval('s')"),
        Plan::Primary(PrimaryWhy::Writes)
    );
}
