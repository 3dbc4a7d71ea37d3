//! Statement classification for pgsplit: may this query string run on a
//! streaming replica, and what does it do to session state?
//!
//! The proxy hands every simple-protocol Query string (possibly several
//! statements) and every Parse'd statement to [`Classifier::classify`] and
//! gets back an [`Analysis`]: a [`Route`], the [`Effects`] it must track
//! (transaction start/end, `SET`, state that pins the session to one server
//! connection), and the functions it still has to look up in `pg_proc`.
//!
//! This crate is pure logic: no I/O, no async, no global state. A
//! [`Classifier`] is `Send + Sync` and meant to be shared behind an `Arc`.
//!
//! # Rules
//! * **Primary**: `INSERT`/`UPDATE`/`DELETE`/`MERGE`, all DDL, `COPY ... FROM`,
//!   `SELECT ... FOR UPDATE/SHARE/...`, `SELECT ... INTO`, data-modifying
//!   CTEs, `LOCK`, maintenance commands, `CALL`/`DO`, SQL-level
//!   `PREPARE`/`EXECUTE`/`DEALLOCATE`, cursors' `FETCH`/`CLOSE`,
//!   `LISTEN`/`UNLISTEN`/`NOTIFY`, transaction control, `SET`/`RESET`/
//!   `DISCARD`, `COPY ... TO` a server file or program, and any statement
//!   calling a writer function (`nextval`, advisory locks, `set_config`, ...
//!   plus [`ClassifierConfig::write_functions`]) anywhere in it.
//! * **Primary, by policy**: reads of views and functions that describe
//!   one server (`pg_stat_*`, `pg_statio_*`, `pg_locks`,
//!   `pg_prepared_xacts`, `pg_stat_get_*`, `pg_is_in_recovery()`, ...; see
//!   `node_local.rs`): on a standby they would describe the standby.
//! * **Replica**: `SELECT`/`VALUES`/`TABLE`/`SHOW`, `COPY ... TO STDOUT`, and
//!   `EXPLAIN` of any of these. Functions in neither list are reported in
//!   [`Analysis::unknown_functions`] with the route left at Replica: the
//!   proxy knows their volatility, this crate does not.
//! * `EXPLAIN` takes the route of the statement it explains. Without
//!   `ANALYZE` nothing runs, so no effects or unknown functions are
//!   reported; `EXPLAIN` of a write still goes to the primary (conservative:
//!   its plan is the one that matters).
//! * `DECLARE` takes the route of its query (a cursor is used inside a
//!   transaction that the proxy already keeps on one server).
//! * Several statements: Primary if any is; effects are the union.
//! * Text the parser rejects goes to the primary with `parsed = false`; a
//!   keyword scan still reports its effects. Text longer than
//!   [`ClassifierConfig::max_parse_len`] is never parsed: the token fast
//!   path may still decide it (a long `IN (...)` read stays on replicas),
//!   otherwise it is treated as unparsed.
//!
//! # Hints
//! A leading comment `/* pgsplit:primary */`, `/* pgsplit:replica */` or
//! pgpool's `/*NO LOAD BALANCE*/` overrides the verdict, with one exception:
//! a replica hint on a statement that certainly writes or that a standby
//! refuses outright (DML, DDL, row locks, `SELECT INTO`, `COPY FROM`,
//! `LISTEN`/`NOTIFY`, `LOCK`, maintenance) still goes to the primary, since a
//! standby would only return an error. A replica hint does override
//! policy-based verdicts: writer functions (the user may know that this
//! `dblink` call only reads), transaction control and session commands.
//!
//! # Performance
//! Verdicts are cached by the statement text with comments, redundant
//! whitespace and literal values removed (the hint is kept beside the key),
//! in a sharded, byte-bounded cache. Before the parser, a token scan decides
//! the hottest shapes (plain `SELECT`, DML, `BEGIN`/`COMMIT`, `SET`) without
//! allocating.
//!
//! # Limits
//! Routing never looks at a literal's value, which is what makes caching
//! with blanked literals sound; the price is that `set_config(...)` always
//! reports [`Effects::set_session`], even with `is_local = true`, and
//! `EXPLAIN (ANALYZE 0)` counts as `ANALYZE`. Strings are lexed as with
//! `standard_conforming_strings = on` (the default since PostgreSQL 9.1).
//! User-defined operators and triggers are invisible here.

pub mod admin;
mod analyze;
pub mod balance;
mod cache;
mod classifier;
mod fastpath;
mod functions;
mod hint;
mod known;
mod lex;
mod node_local;
mod normalize;
pub mod plan;
pub mod ryw;
mod scan;
pub mod session_cmd;
pub mod topology;
mod verdict;
mod walk;

pub use cache::CacheStats;
pub use classifier::{Classifier, ClassifierConfig, ConfigError};
pub use verdict::{Analysis, Effects, Hint, Route};
