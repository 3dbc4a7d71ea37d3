//! The slow path: parse with sqlparser's PostgreSQL dialect and decide per
//! statement.
//!
//! Anything not recognised as a read or as transaction/session control is
//! treated as a certain write, so a new kind of statement can only err
//! towards the primary.

use sqlparser::ast::{
    CopyTarget, DiscardObject, Expr, Set, Statement, TransactionAccessMode, TransactionMode,
    UtilityOption, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::functions::FunctionPolicy;
use crate::verdict::{Kind, Outcome};
use crate::walk::Walker;
use crate::Effects;

/// Parses and classifies `sql`; `None` when the parser rejects it.
pub(crate) fn analyze(sql: &str, policy: &FunctionPolicy) -> Option<Outcome> {
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut all = Walker::new(policy, Kind::Read);
    for st in &stmts {
        all.absorb(statement(st, policy));
    }
    Some(Outcome {
        kind: all.kind,
        effects: all.effects,
        unknown: all.unknown,
        count: stmts.len(),
        parsed: true,
    })
}

fn statement<'p>(st: &Statement, policy: &'p FunctionPolicy) -> Walker<'p> {
    let mut w = Walker::new(policy, Kind::Primary);
    let fx = &mut w.effects;
    match st {
        Statement::Query(q) => {
            w.kind = Kind::Read;
            w.walk(q);
        }
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_) => {
            w.kind = Kind::Write;
            // Only for effects such as a session advisory lock in VALUES.
            w.walk(st);
        }
        Statement::Explain {
            analyze,
            options,
            statement: inner,
            ..
        } => {
            // EXPLAIN takes the inner statement's route (a plain EXPLAIN of
            // a write would work on a standby, but the plan that matters is
            // the primary's); only EXPLAIN ANALYZE runs it, so only then do
            // its effects and functions count.
            let inner = statement(inner, policy);
            if *analyze || options.as_deref().is_some_and(analyze_option) {
                w = inner;
            } else {
                w.kind = inner.kind.min(Kind::Primary);
            }
        }
        Statement::ExplainTable { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. } => w.kind = Kind::Read,
        Statement::Copy {
            source, to, target, ..
        } => {
            w.kind = match (to, target) {
                (false, _) => Kind::Write,
                (true, CopyTarget::Stdout) => Kind::Read,
                // The file or program lives on whichever server runs it.
                (true, _) => Kind::Primary,
            };
            w.walk(source);
        }
        Statement::StartTransaction { modes, .. } => {
            fx.begin = true;
            fx.begin_read_only = read_only(modes);
        }
        Statement::Commit { .. } => fx.commit_or_rollback = true,
        Statement::Rollback { savepoint, .. } => fx.commit_or_rollback = savepoint.is_none(),
        Statement::Savepoint { .. } | Statement::ReleaseSavepoint { .. } => {}
        Statement::Set(set) => set_effects(set, fx),
        Statement::Reset(_) => fx.set_session = true,
        Statement::Discard { object_type } => {
            fx.discard_all = matches!(object_type, DiscardObject::ALL);
        }
        // PREPARE does not run its statement, so nothing inside matters.
        Statement::Prepare { .. } | Statement::Load { .. } => fx.pins_session = true,
        Statement::Deallocate { name, .. } => {
            fx.deallocate_all =
                name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all");
        }
        Statement::Execute { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Call(_) => {}
        // A standby refuses LISTEN and NOTIFY outright (UNLISTEN it allows).
        Statement::LISTEN { .. } => {
            w.kind = Kind::Write;
            fx.pins_session = true;
        }
        Statement::UNLISTEN { channel } => {
            fx.unlisten_all = channel.quote_style.is_none() && channel.value == "*";
        }
        Statement::Declare { stmts } => {
            // A cursor runs where it was declared: route by its query.
            w.kind = Kind::Read;
            for d in stmts {
                w.effects.pins_session |= d.hold == Some(true);
                match &d.for_query {
                    Some(q) => w.walk(q),
                    None => w.raise(Kind::Primary),
                }
            }
        }
        Statement::CreateTable(t) => {
            w.kind = Kind::Write;
            fx.pins_session = t.temporary;
        }
        Statement::CreateView(v) => {
            w.kind = Kind::Write;
            fx.pins_session = v.temporary;
        }
        Statement::CreateSequence { temporary, .. } => {
            w.kind = Kind::Write;
            fx.pins_session = *temporary;
        }
        _ => w.kind = Kind::Write,
    }
    w
}

/// `EXPLAIN (ANALYZE ...)`: executes unless the argument says no. Literal
/// arguments (`ANALYZE 0`, `ANALYZE 'off'`) count as yes so the verdict never
/// depends on a literal's value (cache keys blank them out).
fn analyze_option(opts: &[UtilityOption]) -> bool {
    opts.iter()
        .filter(|o| o.name.value.eq_ignore_ascii_case("analyze"))
        .any(|o| match &o.arg {
            None => true,
            Some(Expr::Value(v)) => !matches!(v.value, Value::Boolean(false)),
            Some(Expr::Identifier(id)) => {
                !(id.value.eq_ignore_ascii_case("off") || id.value.eq_ignore_ascii_case("false"))
            }
            Some(_) => true,
        })
}

fn read_only(modes: &[TransactionMode]) -> bool {
    // The last access mode wins, as in PostgreSQL.
    modes
        .iter()
        .rev()
        .find_map(|m| match m {
            TransactionMode::AccessMode(a) => Some(*a == TransactionAccessMode::ReadOnly),
            TransactionMode::IsolationLevel(_) => None,
        })
        .unwrap_or(false)
}

fn set_effects(set: &Set, fx: &mut Effects) {
    use sqlparser::ast::ContextModifier::Local;
    match set {
        Set::SingleAssignment { scope, .. } => fx.set_session = *scope != Some(Local),
        Set::SetRole {
            context_modifier, ..
        } => fx.set_session = *context_modifier != Some(Local),
        Set::SetTimeZone { local, .. } => fx.set_session = !local,
        Set::SetSessionAuthorization(p) => fx.set_session = p.scope != Local,
        // SET SESSION CHARACTERISTICS AS TRANSACTION changes the session's
        // defaults; SET TRANSACTION only the current transaction.
        Set::SetTransaction { modes, session, .. } => {
            if *session {
                fx.set_session = true;
            } else {
                fx.set_transaction_read_only = read_only(modes);
            }
        }
        _ => fx.set_session = true,
    }
}
