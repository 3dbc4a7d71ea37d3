//! Walks a parsed statement looking for anything that makes an otherwise
//! read-only statement unfit for a standby: data-modifying CTEs, row locks,
//! `SELECT INTO`, and calls to writer or unknown functions — wherever they
//! hide (subqueries, CTEs, `FROM` functions, arguments of other functions).

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, ObjectName, ObjectNamePart, Query, Select, SetExpr, Statement, TableFactor, Visit,
    Visitor,
};

use crate::fastpath::PAREN_KEYWORDS;
use crate::functions::{FnClass, FunctionPolicy};
use crate::verdict::Kind;
use crate::Effects;

/// Accumulates the verdict of one statement.
pub(crate) struct Walker<'p> {
    policy: &'p FunctionPolicy,
    pub kind: Kind,
    pub effects: Effects,
    pub unknown: Vec<String>,
}

impl<'p> Walker<'p> {
    pub(crate) fn new(policy: &'p FunctionPolicy, kind: Kind) -> Self {
        Walker {
            policy,
            kind,
            effects: Effects::default(),
            unknown: Vec::new(),
        }
    }

    pub(crate) fn raise(&mut self, kind: Kind) {
        self.kind = self.kind.max(kind);
    }

    /// Visits every expression, query and table factor under `node`.
    pub(crate) fn walk<T: Visit>(&mut self, node: &T) {
        let _ = node.visit(self);
    }

    /// Merges another statement's verdict into this one.
    pub(crate) fn absorb(&mut self, other: Walker<'_>) {
        self.raise(other.kind);
        self.effects |= other.effects;
        for name in other.unknown {
            self.note_unknown(name);
        }
    }

    fn note_unknown(&mut self, name: String) {
        if !self.unknown.contains(&name) {
            self.unknown.push(name);
        }
    }

    fn call(&mut self, name: &ObjectName) {
        // The parser takes some reserved words for function names
        // (`x ~ on()`); PostgreSQL never calls an unquoted reserved word, so
        // there is nothing to look up, as the fast path also says.
        let reserved = matches!(
            &name.0[..],
            [ObjectNamePart::Identifier(id)] if id.quote_style.is_none()
                && PAREN_KEYWORDS.binary_search(&id.value.to_lowercase().as_str()).is_ok()
        );
        let name = function_name(name);
        match self.policy.classify(&name) {
            FnClass::Writer(effects) => {
                self.raise(Kind::Primary);
                self.effects |= effects;
            }
            FnClass::NodeLocal => self.raise(Kind::Primary),
            FnClass::Harmless => {}
            FnClass::Unknown if reserved => {}
            FnClass::Unknown => self.note_unknown(name),
        }
    }
}

/// The name PostgreSQL would look up (a function's or a relation's):
/// unquoted parts folded to lower case,
/// quoted parts kept, a leading `pg_catalog` dropped.
pub(crate) fn function_name(name: &ObjectName) -> String {
    let mut parts: Vec<String> = name
        .0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(id) if id.quote_style.is_none() => id.value.to_lowercase(),
            ObjectNamePart::Identifier(id) => id.value.clone(),
            other => other.to_string(),
        })
        .collect();
    if parts.len() > 1 && parts[0] == "pg_catalog" {
        parts.remove(0);
    }
    parts.join(".")
}

impl Visitor for Walker<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        // Row locks are refused by a standby; a DML body is a writable CTE
        // or `COPY (DELETE ... RETURNING) TO`.
        let dml_body = matches!(
            *q.body,
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
        );
        if !q.locks.is_empty() || dml_body {
            self.raise(Kind::Write);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if let Some(into) = &s.into {
            self.raise(Kind::Write);
            self.effects.pins_session |= into.temporary;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, st: &Statement) -> ControlFlow<()> {
        if matches!(
            st,
            Statement::Insert(_)
                | Statement::Update(_)
                | Statement::Delete(_)
                | Statement::Merge(_)
        ) {
            self.raise(Kind::Write);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            self.call(&f.name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        match tf {
            // `FROM generate_series(1, 3)` parses as a table with arguments.
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.call(name),
            TableFactor::Table { name, .. }
                if crate::node_local::relation(&function_name(name)) =>
            {
                self.raise(Kind::Primary)
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
