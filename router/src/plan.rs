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
//! rule of the README's routing tables has a unit test in `router/tests/plan.rs`,
//! named after it.

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
    /// A statement reads the session's sequence state (`currval()`,
    /// `lastval()`): only the server connection of the session's last
    /// primary request can answer it.
    pub sequences: bool,
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
        self.sequences |= fx.session_sequences;
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
    /// It reads the session's sequence state (`currval()`, `lastval()`):
    /// the primary connection the pool holds for the session's writes,
    /// unless the pool was full and another client took it.
    Sequences,
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

impl Plan {
    /// Whether the request may write, so that read-your-writes must cover
    /// it: anything on the primary except a request with nothing to
    /// classify (a lone Close and Sync, as drivers send when they drop a
    /// statement, writes nothing).
    pub fn may_write(self) -> bool {
        matches!(
            self,
            Plan::Primary(
                PrimaryWhy::Writes
                    | PrimaryWhy::Pinned
                    | PrimaryWhy::Transaction
                    | PrimaryWhy::Sequences
            )
        )
    }
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
    if shape.sequences {
        return Plan::Primary(PrimaryWhy::Sequences);
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
        // A currval() joining the connection that runs the write before it
        // is just what it needs.
        Plan::Primary(PrimaryWhy::Writes | PrimaryWhy::Unclassified | PrimaryWhy::Sequences)
            if attached_to_primary =>
        {
            Join::AsWrite
        }
        Plan::Read(_) if !attached_to_primary && replica_meets(need()) => Join::AsRead,
        _ => Join::Wait,
    }
}
