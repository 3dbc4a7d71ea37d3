//! Where a request goes: the routing decision as pure functions.
//!
//! The proxy walks the messages of one request (a simple Query, or
//! extended-protocol messages up to Sync), classifies each statement and
//! folds it into a [`RequestShape`]. [`plan`] then says what kind of server
//! the request needs, given the session's own state ([`SessionFacts`]);
//! for a read, [`place_read`] picks the server from what read-your-writes
//! requires ([`ReadNeed`], computed by [`crate::ryw::Ryw::need`]) and the
//! topology; a request arriving while the previous one still owes replies
//! asks [`join`] whether it may share that server connection.
//!
//! Nothing here does I/O or reads a clock: every input is a value, so each
//! rule of the README's routing tables has a unit test below, named after it.

use crate::{Analysis, Route};

/// What the messages of one request add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestShape {
    /// A statement needs the primary: it writes, locks, changes session
    /// state, pins the session, could not be classified, is a FunctionCall,
    /// or calls a function that may write (or is not looked up yet).
    pub writes: bool,
    /// A statement only reads.
    pub reads: bool,
    /// It declares its transaction read-only: `BEGIN READ ONLY`, `SET
    /// TRANSACTION READ ONLY`, or any `BEGIN` under
    /// `default_transaction_read_only = on`.
    pub read_only_transaction: bool,
    /// It is one simple Query holding one bare `BEGIN`.
    pub bare_begin: bool,
    /// Only named Parses of statements some server has accepted, then a
    /// Sync: pgsplit can answer it without a server.
    pub known_prepares: bool,
    /// It runs something (Query, Execute, FunctionCall); otherwise it only
    /// prepares or describes, which takes no turn in the read rotation.
    pub runs: bool,
    /// Its end has arrived (Query, Sync, Flush, FunctionCall), or so much
    /// of it is buffered that it is decided without waiting for the rest.
    pub complete: bool,
}

/// How a classified statement's functions stand, as the proxy's catalog
/// of user functions knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Functions {
    /// Every function it calls only reads (or it calls none unknown).
    ReadOnly,
    /// One of them is volatile: it may write.
    MayWrite,
    /// One of them is still being looked up: the primary is safe meanwhile.
    NotKnownYet,
}

impl RequestShape {
    /// Folds one classified statement in. `functions` is asked only when
    /// the statement calls functions the classifier does not know.
    pub fn add_statement(
        &mut self,
        a: &Analysis,
        default_read_only: bool,
        functions: impl FnOnce(&[String]) -> Functions,
    ) {
        let fx = &a.effects;
        if fx.begin_read_only || (fx.begin && default_read_only) || fx.set_transaction_read_only {
            self.read_only_transaction = true;
        } else if a.route == Route::Primary
            || fx.pins_session
            || (!a.unknown_functions.is_empty()
                && functions(&a.unknown_functions) != Functions::ReadOnly)
        {
            self.writes = true;
        } else {
            self.reads = true;
        }
    }

    /// Whether the primary is already certain: the rest of the request
    /// need not be waited for (unless it may still be answered locally).
    pub fn settled_on_primary(&self) -> bool {
        self.writes
    }
}

/// What the session itself holds that routing must respect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionFacts {
    /// The session holds state only its primary connection has.
    pub pinned: bool,
    /// pgsplit answered a bare `BEGIN` that no server has seen yet.
    pub deferred_begin: bool,
    /// `default_transaction_read_only` is on for this session.
    pub default_read_only: bool,
}

/// Why a request goes to the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrimaryWhy {
    /// A statement writes, locks or changes session state.
    Writes,
    /// The session is pinned to its primary connection.
    Pinned,
    /// The first statement of a deferred transaction that did not declare
    /// itself read-only: the whole transaction runs on the primary.
    Transaction,
    /// Nothing in it could be classified (a lone Sync, a Bind of a
    /// statement pgsplit does not know): the primary is always right.
    Unclassified,
}

/// Whether a read runs anything: preparing a statement takes no turn in the
/// rotation and goes where the next read will.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weight {
    Runs,
    PrepareOnly,
}

/// The kind of server a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The request is not complete and nothing settles it yet.
    NeedMore,
    /// Known-good Parses and their Sync: answered by pgsplit.
    AnswerPrepare,
    /// A bare `BEGIN`: answered by pgsplit; the transaction starts where
    /// its first statement goes.
    DeferBegin,
    Primary(PrimaryWhy),
    /// A read: load-balanced, within what read-your-writes allows.
    Read(Weight),
}

/// The routing rules, in the order they apply.
pub fn plan(shape: &RequestShape, session: SessionFacts) -> Plan {
    if shape.known_prepares {
        return Plan::AnswerPrepare;
    }
    if !shape.writes && !shape.complete {
        return Plan::NeedMore;
    }
    if session.pinned {
        return Plan::Primary(PrimaryWhy::Pinned);
    }
    let weight = if shape.runs {
        Weight::Runs
    } else {
        Weight::PrepareOnly
    };
    if session.deferred_begin {
        // The deferred transaction runs on a replica only if it declared
        // itself read-only before doing anything.
        return if shape.read_only_transaction && !shape.writes {
            Plan::Read(weight)
        } else {
            Plan::Primary(PrimaryWhy::Transaction)
        };
    }
    if shape.bare_begin && !session.default_read_only {
        return Plan::DeferBegin;
    }
    if shape.writes {
        return Plan::Primary(PrimaryWhy::Writes);
    }
    if shape.reads || shape.read_only_transaction {
        return Plan::Read(weight);
    }
    Plan::Primary(PrimaryWhy::Unclassified)
}

/// What read-your-writes requires of the server for the session's next read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadNeed {
    Any,
    /// A replica that has replayed at least this position, else the primary.
    AtLeast(u64),
    /// A replica that has replayed the primary's position as first read
    /// after this time (microseconds of the proxy's clock), which no health
    /// check has read yet: for now only the primary qualifies.
    Unsampled(u64),
    Primary,
}

/// Where a read goes; `Id` names a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPlace<Id> {
    /// This server (a replica, or the primary when it takes reads).
    Server(Id),
    /// Whichever server is the primary when the read is sent.
    Primary,
    /// Wait up to `routing.causal_wait` for a replica to meet the need.
    Wait,
    /// No server may take it (`primary_reads = "off"` and no replica).
    Refuse,
}

/// Places a read: `pick(min_lsn)` asks the balancer for a server that has
/// replayed `min_lsn` (0: any); `primary` is the elected primary.
/// Returns the place and the replay position the read requires (`u64::MAX`:
/// only the primary will do), which a retry elsewhere must respect too.
pub fn place_read<Id: Copy + Eq>(
    need: ReadNeed,
    primary: Option<Id>,
    causal_wait: bool,
    pick: impl FnOnce(u64) -> Option<Id>,
) -> (ReadPlace<Id>, u64) {
    let min_lsn = match need {
        ReadNeed::Any => 0,
        ReadNeed::AtLeast(lsn) => lsn,
        ReadNeed::Unsampled(_) if causal_wait => return (ReadPlace::Wait, u64::MAX),
        ReadNeed::Unsampled(_) | ReadNeed::Primary => return (ReadPlace::Primary, u64::MAX),
    };
    let place = match pick(min_lsn) {
        Some(b) if Some(b) != primary || min_lsn == 0 => ReadPlace::Server(b),
        // No replica has this session's writes yet.
        _ if min_lsn > 0 && causal_wait => ReadPlace::Wait,
        _ if min_lsn > 0 => ReadPlace::Primary,
        _ => ReadPlace::Refuse,
    };
    (place, min_lsn)
}

/// Whether a request may share the server connection that still owes
/// replies to the session's previous request (a pipeline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    /// A write joining a connection to the primary.
    AsWrite,
    /// A read joining a replica that meets its need.
    AsRead,
    /// It waits until the connection is free, then is routed afresh (a
    /// read after a write then knows it wrote).
    Wait,
}

/// `attached_to_primary`: the held connection is to the elected primary;
/// `replica_meets`: whether the held replica meets a read's need.
pub fn join(
    plan: Plan,
    need: impl FnOnce() -> ReadNeed,
    attached_to_primary: bool,
    replica_meets: impl FnOnce(ReadNeed) -> bool,
) -> Join {
    match plan {
        Plan::Primary(PrimaryWhy::Writes | PrimaryWhy::Unclassified) if attached_to_primary => {
            Join::AsWrite
        }
        Plan::Read(_) if !attached_to_primary && replica_meets(need()) => Join::AsRead,
        _ => Join::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Classifier, ClassifierConfig};

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
                s.bare_begin =
                    a.statement_count == 1 && a.effects.begin && !a.effects.begin_read_only;
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
}
