//! Which functions force the primary, which are known to be harmless, and
//! which side effects some of them have on the session.
//!
//! Built-in lists are matched on the bare name after dropping a
//! `pg_catalog.` qualifier. Writers match whatever the schema (a user
//! function called `nextval` is assumed to behave like it: erring towards the
//! primary costs only load). Harmless names match only unqualified or in
//! `pg_catalog`: `myschema.count()` is somebody's own code.

use std::collections::HashSet;

use crate::known::{builtin_harmless, builtin_writer};
use crate::Effects;

/// What a function call means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FnClass {
    /// Must run on the primary; may carry session effects.
    Writer(Effects),
    /// Describes or acts on one server (`node_local.rs`): the primary,
    /// unless a hint says otherwise.
    NodeLocal,
    /// Safe on a standby.
    Harmless,
    /// In no list: the proxy checks `pg_proc.provolatile`.
    Unknown,
}

/// Session-level effects of a writer beyond "needs the primary".
fn writer_effects(name: &str) -> Effects {
    match name {
        "pg_advisory_lock"
        | "pg_advisory_lock_shared"
        | "pg_try_advisory_lock"
        | "pg_try_advisory_lock_shared" => Effects {
            pins_session: true,
            ..Effects::default()
        },
        // Answer for the connection that ran the session's nextval().
        "currval" | "lastval" => Effects {
            session_sequences: true,
            ..Effects::default()
        },
        // May change a session parameter (is_local = false); its arguments
        // are not inspected, so cached verdicts never depend on literals.
        "set_config" => Effects {
            set_session: true,
            ..Effects::default()
        },
        _ => Effects::default(),
    }
}

/// The built-in lists plus the user's own.
#[derive(Debug, Clone, Default)]
pub(crate) struct FunctionPolicy {
    write: HashSet<String>,
    read: HashSet<String>,
}

impl FunctionPolicy {
    pub(crate) fn new(write: &[String], read: &[String]) -> Self {
        let norm = |v: &[String]| v.iter().map(|s| s.trim().to_ascii_lowercase()).collect();
        FunctionPolicy {
            write: norm(write),
            read: norm(read),
        }
    }

    fn listed(set: &HashSet<String>, full: &str, bare: &str) -> bool {
        !set.is_empty() && (set.contains(full) || set.contains(bare))
    }

    /// Classifies a call by its name as PostgreSQL resolves it: `full` is
    /// the name with `pg_catalog.` dropped (`myschema.fn`, `nextval`).
    /// Matching is case-insensitive; `full` may be in any case.
    pub(crate) fn classify(&self, full: &str) -> FnClass {
        let mut buf = [0u8; 64];
        let lower: String;
        let full = if full.len() <= buf.len() && full.bytes().all(|b| !b.is_ascii_uppercase()) {
            full
        } else if full.len() <= buf.len() {
            buf[..full.len()].copy_from_slice(full.as_bytes());
            buf[..full.len()].make_ascii_lowercase();
            std::str::from_utf8(&buf[..full.len()]).expect("ASCII case change keeps UTF-8")
        } else {
            lower = full.to_ascii_lowercase();
            &lower
        };
        let qualified = full.contains('.');
        let bare = full.rsplit('.').next().unwrap_or(full);
        if Self::listed(&self.write, full, bare) || builtin_writer(bare) {
            return FnClass::Writer(writer_effects(bare));
        }
        if Self::listed(&self.read, full, bare) {
            return FnClass::Harmless;
        }
        match qualified {
            false if crate::node_local::function(bare) => FnClass::NodeLocal,
            false if builtin_harmless(bare) => FnClass::Harmless,
            _ => FnClass::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let p = FunctionPolicy::new(&["audit.log_read".into(), "bump".into()], &["myfn".into()]);
        let pins = Effects {
            pins_session: true,
            ..Effects::default()
        };
        assert_eq!(p.classify("nextval"), FnClass::Writer(Effects::default()));
        assert_eq!(p.classify("NEXTVAL"), FnClass::Writer(Effects::default()));
        assert_eq!(p.classify("pg_advisory_lock"), FnClass::Writer(pins));
        assert_eq!(
            p.classify("pg_advisory_xact_lock"),
            FnClass::Writer(Effects::default())
        );
        assert_eq!(
            p.classify("pg_stat_reset_shared"),
            FnClass::Writer(Effects::default())
        );
        assert_eq!(
            p.classify("dblink_exec"),
            FnClass::Writer(Effects::default())
        );
        assert_eq!(
            p.classify("other.nextval"),
            FnClass::Writer(Effects::default())
        );
        assert_eq!(p.classify("count"), FnClass::Harmless);
        assert_eq!(p.classify("pg_get_viewdef"), FnClass::Harmless);
        assert_eq!(p.classify("has_table_privilege"), FnClass::Harmless);
        assert_eq!(p.classify("jsonb_build_object"), FnClass::Harmless);
        assert_eq!(p.classify("pg_cancel_backend"), FnClass::NodeLocal);
        assert_eq!(p.classify("PG_STAT_GET_NUMSCANS"), FnClass::NodeLocal);
        assert_eq!(p.classify("myschema.pg_lock_status"), FnClass::Unknown);
        assert_eq!(p.classify("myschema.count"), FnClass::Unknown);
        assert_eq!(p.classify("myschema.myfn"), FnClass::Harmless);
        assert_eq!(p.classify("MyFn"), FnClass::Harmless);
        assert_eq!(
            p.classify("audit.log_read"),
            FnClass::Writer(Effects::default())
        );
        assert_eq!(p.classify("log_read"), FnClass::Unknown);
        assert_eq!(p.classify("x.bump"), FnClass::Writer(Effects::default()));
        assert_eq!(p.classify("frobnicate"), FnClass::Unknown);
    }
}
