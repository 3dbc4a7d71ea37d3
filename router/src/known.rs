//! The built-in function lists. Matched on the bare, lower-case name (no
//! schema); [`crate::functions`] decides how schemas and user lists combine.

/// Functions that write, need a primary, or read state that only the
/// session that created it has (`currval`/`lastval` after a `nextval` sent
/// to the primary). Sorted for binary search.
#[rustfmt::skip]
const WRITERS: &[&str] = &[
    "currval", "lastval", "lo_creat", "lo_create", "lo_export", "lo_from_bytea", "lo_import",
    "lo_open", "lo_put", "lo_truncate", "lo_truncate64", "lo_unlink", "lowrite", "nextval",
    "pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_unlock", "pg_advisory_unlock_all",
    "pg_advisory_unlock_shared", "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
    "pg_backup_start", "pg_backup_stop", "pg_copy_logical_replication_slot",
    "pg_copy_physical_replication_slot", "pg_create_logical_replication_slot",
    "pg_create_physical_replication_slot", "pg_create_restore_point", "pg_current_wal_flush_lsn",
    "pg_current_wal_insert_lsn", "pg_current_wal_lsn", "pg_current_xact_id",
    "pg_current_xact_id_if_assigned", "pg_current_xlog_flush_location",
    "pg_current_xlog_insert_location", "pg_current_xlog_location", "pg_drop_replication_slot",
    "pg_import_system_collations", "pg_log_standby_snapshot", "pg_logical_emit_message",
    "pg_logical_slot_get_binary_changes", "pg_logical_slot_get_changes", "pg_notify", "pg_promote",
    "pg_replication_slot_advance", "pg_start_backup", "pg_stop_backup", "pg_switch_wal",
    "pg_switch_xlog", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared", "pg_walfile_name",
    "pg_walfile_name_offset", "set_config", "setval", "txid_current", "txid_current_if_assigned",
];

/// Whole families of writers. `dblink*` is here because whether the remote
/// statement writes is unknowable; listing it in `read_functions` does not
/// override that (writers win), a replica hint does.
const WRITER_PREFIXES: &[&str] = &["dblink", "pg_replication_origin_", "pg_stat_reset"];

/// Ordinary built-in functions that only compute or read. Not exhaustive:
/// anything missing is reported as unknown and resolved by the proxy.
/// Sorted for binary search.
#[rustfmt::skip]
const HARMLESS: &[&str] = &[
    "abs", "acos", "acosd", "acosh", "age", "any_value", "array", "ascii", "asin", "asind",
    "asinh", "atan", "atan2", "atan2d", "atand", "atanh", "avg", "bit_and", "bit_count",
    "bit_length", "bit_or", "bit_xor", "bool", "bool_and", "bool_or", "btrim", "bytea",
    "cardinality", "casefold", "cbrt", "ceil", "ceiling", "char_length", "character_length", "chr",
    "cidr", "clock_timestamp", "coalesce", "col_description", "concat", "concat_ws", "convert",
    "convert_from", "convert_to", "corr", "cos", "cosd", "cosh", "cot", "cotd", "count",
    "covar_pop", "covar_samp", "crc32", "crc32c", "cume_dist", "current_catalog",
    "current_database", "current_date", "current_role", "current_schema", "current_schemas",
    "current_setting", "current_time", "current_timestamp", "current_user", "daterange", "decode",
    "degrees", "dense_rank", "div", "encode", "erf", "erfc", "every", "exp", "extract",
    "factorial", "family", "first_value", "float4", "float8", "floor", "format", "format_type",
    "gcd", "gen_random_uuid", "generate_series", "generate_subscripts", "get_bit", "get_byte",
    "greatest", "grouping", "host", "hostmask", "inet", "inet_client_addr", "inet_client_port",
    "inet_server_addr", "inet_server_port", "initcap", "int2", "int4", "int4range", "int8",
    "int8range", "interval", "isempty", "isfinite", "justify_days", "justify_hours",
    "justify_interval", "lag", "last_value", "lcm", "lead", "least", "left", "length", "ln",
    "localtime", "localtimestamp", "log", "log10", "lower", "lower_inc", "lower_inf", "lpad",
    "ltrim", "masklen", "max", "md5", "min", "min_scale", "mod", "mode", "netmask", "network",
    "normalize", "now", "nth_value", "ntile", "nullif", "numeric", "numnode", "numrange",
    "obj_description", "octet_length", "overlay", "parse_ident", "percent_rank", "percentile_cont",
    "percentile_disc", "pg_backend_pid", "pg_column_compression", "pg_column_size", "pg_current_snapshot",
    "pg_database_size", "pg_export_snapshot", "pg_indexes_size", "pg_jit_available",
    "pg_listening_channels", "pg_my_temp_schema", "pg_notification_queue_usage",
    "pg_relation_filenode", "pg_relation_filepath", "pg_relation_size",
    "pg_sleep", "pg_sleep_for",
    "pg_sleep_until", "pg_snapshot_xip", "pg_snapshot_xmax", "pg_snapshot_xmin", "pg_table_size",
    "pg_tablespace_size", "pg_total_relation_size", "pg_trigger_depth",
    "pg_typeof", "pg_visible_in_snapshot", "pg_wal_replay_pause", "pg_wal_replay_resume",
    "pg_xact_status", "phraseto_tsquery", "pi", "plainto_tsquery", "position", "pow", "power",
    "querytree", "quote_ident", "quote_literal", "quote_nullable", "radians", "random",
    "random_normal", "range_agg", "range_intersect_agg", "rank", "repeat", "replace", "reverse",
    "right", "round", "row", "row_number", "row_to_json", "rpad", "rtrim", "scale", "session_user",
    "set_bit", "set_byte", "setweight", "sha224", "sha256", "sha384", "sha512",
    "shobj_description", "sign", "sin", "sind", "sinh", "split_part", "sqrt", "starts_with",
    "statement_timestamp", "stddev", "stddev_pop", "stddev_samp", "strip", "strpos", "substr",
    "substring", "sum", "tan", "tand", "tanh", "text", "time", "timeofday", "timestamp",
    "timestamptz", "timezone", "transaction_timestamp", "translate", "trim", "trim_array",
    "trim_scale", "trunc", "tsrange", "tstzrange", "tsvector_to_array", "txid_current_snapshot",
    "txid_snapshot_xip", "txid_snapshot_xmax", "txid_snapshot_xmin", "txid_status",
    "txid_visible_in_snapshot", "unistr", "unnest", "upper", "upper_inc", "upper_inf", "user",
    "uuid", "uuid_generate_v4", "uuidv4", "uuidv7", "var_pop", "var_samp", "varchar", "variance",
    "version", "websearch_to_tsquery", "width_bucket",
];

/// Families of harmless built-ins.
const HARMLESS_PREFIXES: &[&str] = &[
    "array_", "date_", "json", "make_", "pg_get_", "pg_has_", "pg_is_", "pg_last_", "pg_size_",
    "regexp_", "regr_", "string_", "to_", "ts_", "xml",
];

/// `bare` is in the sorted list `exact` or starts with one of `prefixes`.
pub(crate) fn listed(bare: &str, exact: &[&str], prefixes: &[&str]) -> bool {
    exact.binary_search(&bare).is_ok() || prefixes.iter().any(|p| bare.starts_with(p))
}

pub(crate) fn builtin_writer(bare: &str) -> bool {
    listed(bare, WRITERS, WRITER_PREFIXES)
}

pub(crate) fn builtin_harmless(bare: &str) -> bool {
    listed(bare, HARMLESS, HARMLESS_PREFIXES)
        || (bare.starts_with("has_") && bare.ends_with("_privilege"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_lowercase_and_disjoint() {
        for list in [WRITERS, HARMLESS] {
            assert!(
                list.windows(2).all(|w| w[0] < w[1]),
                "unsorted or duplicate"
            );
            assert!(list
                .iter()
                .all(|s| s.bytes().all(|b| !b.is_ascii_uppercase())));
        }
        for w in WRITERS {
            assert!(!HARMLESS.contains(w), "{w} in both lists");
        }
    }
}
