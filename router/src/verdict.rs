//! The classifier's answer: where a query string may run and what it does to
//! session state.

use std::ops::{BitOr, BitOrAssign};

/// Where a query string may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Must run on the primary.
    Primary,
    /// Safe to load-balance on a read-only streaming standby.
    Replica,
}

/// A routing hint found in the query's leading comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hint {
    /// `/* pgsplit:primary */` or pgpool's `/*NO LOAD BALANCE*/`.
    Primary,
    /// `/* pgsplit:replica */`.
    Replica,
}

/// What a query string does to session or transaction state, so the proxy
/// can keep its own picture of the session in step.
///
/// A plain struct of flags; `|` merges the effects of several statements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Effects {
    /// `BEGIN` / `START TRANSACTION`.
    pub begin: bool,
    /// The transaction being started is `READ ONLY`.
    pub begin_read_only: bool,
    /// `COMMIT`, `END`, `ROLLBACK`, `ABORT` (not `ROLLBACK TO SAVEPOINT`).
    pub commit_or_rollback: bool,
    /// `SET TRANSACTION READ ONLY`.
    pub set_transaction_read_only: bool,
    /// A session-level parameter change: `SET`, `SET SESSION`, `RESET`,
    /// `SET ROLE`, `SET SESSION CHARACTERISTICS`, `set_config()`; not
    /// `SET LOCAL` nor `SET TRANSACTION`.
    pub set_session: bool,
    /// `DISCARD ALL`.
    pub discard_all: bool,
    /// State that cannot be replayed on another server connection: SQL
    /// `PREPARE`, `LISTEN`, temporary tables/sequences/views (including
    /// `SELECT ... INTO TEMP`), session-level advisory locks,
    /// `DECLARE ... WITH HOLD`, `LOAD`.
    pub pins_session: bool,
    /// `UNLISTEN *`.
    pub unlisten_all: bool,
    /// `DEALLOCATE ALL`.
    pub deallocate_all: bool,
    /// Reads the session's sequence state: `currval()`, `lastval()`, which
    /// answer for the server connection that ran the session's `nextval()`.
    pub session_sequences: bool,
}

impl Effects {
    /// True when the statement leaves session and transaction state alone.
    pub fn is_empty(&self) -> bool {
        *self == Effects::default()
    }
}

impl BitOr for Effects {
    type Output = Effects;

    fn bitor(self, o: Effects) -> Effects {
        Effects {
            begin: self.begin | o.begin,
            begin_read_only: self.begin_read_only | o.begin_read_only,
            commit_or_rollback: self.commit_or_rollback | o.commit_or_rollback,
            set_transaction_read_only: self.set_transaction_read_only | o.set_transaction_read_only,
            set_session: self.set_session | o.set_session,
            discard_all: self.discard_all | o.discard_all,
            pins_session: self.pins_session | o.pins_session,
            unlisten_all: self.unlisten_all | o.unlisten_all,
            deallocate_all: self.deallocate_all | o.deallocate_all,
            session_sequences: self.session_sequences | o.session_sequences,
        }
    }
}

impl BitOrAssign for Effects {
    fn bitor_assign(&mut self, o: Effects) {
        *self = *self | o;
    }
}

/// The verdict for one query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// Final route, after the hint has been applied.
    pub route: Route,
    /// The hint found in the leading comment, if any.
    pub hint: Option<Hint>,
    /// False when the statement could not be understood (parser error, or
    /// longer than `max_parse_len` and not decided by the token scan); the
    /// route is then Primary unless a hint says otherwise.
    pub parsed: bool,
    /// Union of the effects of every statement in the string.
    pub effects: Effects,
    /// Functions called that no list classifies, as PostgreSQL names them
    /// (unquoted parts lower-cased, `pg_catalog.` dropped, other schemas
    /// kept: `myschema.fn`). Only filled when `route` is Replica and no hint
    /// decided it: the proxy should look them up in `pg_proc.provolatile`
    /// and send the query to the primary if any is volatile.
    pub unknown_functions: Vec<String>,
    /// Number of statements in the string.
    pub statement_count: usize,
}

/// How sure the classifier is that one statement must not run on a replica.
/// Ordered: the strongest kind of a multi-statement string wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// Reads only (modulo unknown functions).
    Read,
    /// Sent to the primary by policy (transaction control, session state,
    /// writer functions, server-side files). A replica hint overrides it.
    Primary,
    /// Certainly writes or is rejected by a standby (DML, DDL, locking
    /// reads, `COPY FROM`, maintenance). A replica hint cannot override it:
    /// the standby would only answer with an error.
    Write,
}

/// Classification of a whole query string before the hint is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub kind: Kind,
    pub effects: Effects,
    pub unknown: Vec<String>,
    pub count: usize,
    pub parsed: bool,
}

impl Outcome {
    pub(crate) fn new(kind: Kind, effects: Effects) -> Self {
        Outcome {
            kind,
            effects,
            unknown: Vec::new(),
            count: 1,
            parsed: true,
        }
    }

    /// Applies the hint and produces the public verdict.
    pub(crate) fn finish(self, hint: Option<Hint>) -> Analysis {
        let route = match (hint, self.kind) {
            (Some(Hint::Primary), _) => Route::Primary,
            (_, Kind::Write) => Route::Primary,
            (Some(Hint::Replica), _) => Route::Replica,
            (None, Kind::Read) => Route::Replica,
            (None, Kind::Primary) => Route::Primary,
        };
        // Unknown functions matter only when the proxy still has a choice
        // to make; after a hint or a Primary verdict they are noise.
        let unknown_functions = if route == Route::Replica && hint.is_none() {
            self.unknown
        } else {
            Vec::new()
        };
        Analysis {
            route,
            hint,
            parsed: self.parsed,
            effects: self.effects,
            unknown_functions,
            statement_count: self.count,
        }
    }
}
