//! Views and functions that describe one server, not the database: its
//! statistics, activity, locks, prepared transactions, memory and files. On a standby they describe the standby (`pg_stat_user_tables`
//! counters all zero, its own WAL receiver), so they go to the primary,
//! which is what someone monitoring "the database" through pgsplit means; a
//! replica hint still sends them to a standby.
//!
//! Matched on the bare, lower-case name, unqualified or in `pg_catalog`
//! (the walker drops that schema); a user's own `myschema.pg_locks` is not
//! PostgreSQL's.

use crate::known::listed;

/// Relations (views) by exact name. Sorted for binary search.
#[rustfmt::skip]
const RELATIONS: &[&str] = &[
    "pg_backend_memory_contexts", "pg_file_settings", "pg_hba_file_rules",
    "pg_ident_file_mappings", "pg_locks", "pg_prepared_xacts", "pg_replication_origin_status",
    "pg_replication_slots", "pg_shmem_allocations",
];

/// Families of per-server views: `pg_stat_activity`, `pg_stat_replication`,
/// `pg_stat_wal_receiver`, `pg_stat_user_tables`, `pg_statio_*`, ...
const RELATION_PREFIXES: &[&str] = &["pg_stat_", "pg_statio_"];

/// Functions by exact name: the ones behind those views, and those that act
/// on or read one server's processes (by the pids those views show) and
/// files. Recovery functions (`pg_is_in_recovery()`, `pg_last_wal_*`) are
/// not here: they answer "is the server that runs this a standby", which
/// is what people ask them through a proxy. Sorted for binary search.
#[rustfmt::skip]
const FUNCTIONS: &[&str] = &[
    "pg_blocking_pids", "pg_cancel_backend", "pg_conf_load_time", "pg_current_logfile",
    "pg_get_backend_memory_contexts", "pg_get_replication_slots", "pg_get_shmem_allocations",
    "pg_hba_file_rules", "pg_lock_status", "pg_log_backend_memory_contexts",
    "pg_postmaster_start_time", "pg_prepared_xact", "pg_read_binary_file", "pg_read_file",
    "pg_reload_conf", "pg_safe_snapshot_blocking_pids", "pg_show_all_file_settings",
    "pg_stat_file", "pg_terminate_backend",
];

/// Families: `pg_stat_get_*` (every statistics accessor) and `pg_ls_*`
/// directory listings.
const FUNCTION_PREFIXES: &[&str] = &["pg_ls_", "pg_stat_get_"];

/// A view that describes one server. `bare` is lower case, without schema.
pub(crate) fn relation(bare: &str) -> bool {
    bare.starts_with("pg_") && listed(bare, RELATIONS, RELATION_PREFIXES)
}

/// A function that describes or acts on one server.
pub(crate) fn function(bare: &str) -> bool {
    bare.starts_with("pg_") && listed(bare, FUNCTIONS, FUNCTION_PREFIXES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_and_lowercase() {
        for list in [RELATIONS, FUNCTIONS] {
            assert!(
                list.windows(2).all(|w| w[0] < w[1]),
                "unsorted or duplicate"
            );
            assert!(list
                .iter()
                .all(|s| s.starts_with("pg_") && !s.bytes().any(|b| b.is_ascii_uppercase())));
        }
    }

    #[test]
    fn families_and_exact_names() {
        for v in [
            "pg_stat_activity",
            "pg_stat_user_tables",
            "pg_statio_all_indexes",
            "pg_locks",
        ] {
            assert!(relation(v), "{v}");
        }
        for v in [
            "pg_class",
            "pg_settings",
            "pg_stats",
            "pg_statistic",
            "locks",
        ] {
            assert!(!relation(v), "{v}");
        }
        for f in [
            "pg_stat_get_numscans",
            "pg_lock_status",
            "pg_ls_waldir",
            "pg_terminate_backend",
        ] {
            assert!(function(f), "{f}");
        }
        for f in [
            "pg_get_viewdef",
            "pg_backend_pid",
            "pg_is_in_recovery",
            "pg_last_wal_replay_lsn",
        ] {
            assert!(!function(f), "{f}");
        }
    }
}
