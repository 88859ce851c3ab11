//! What chorus knows about PostgreSQL functions without asking a server: which
//! built-ins are harmless on a follower, and which have side effects or are
//! volatile and so send a query to the leader at once.
//!
//! Everything else is reported in `Classification::functions` and checked by the
//! router against the leader's catalog (`pg_proc.provolatile`).

/// What a call to a function means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FunctionKind {
    /// Built-in, immutable or stable, no side effects: not even reported.
    Harmless,
    /// Side effects or volatile: the query goes to the leader.
    Volatile,
    /// A session-level advisory lock: leader, and the session stays there.
    SessionAdvisoryLock,
    /// `set_config(name, value, is_local)`: leader; pins unless `is_local` is true.
    SetConfig,
    /// Not known here: the router asks the catalog.
    Unknown,
}

/// Classify a function by its name parts, folded as PostgreSQL folds them
/// (unquoted lower-cased). Side effects are matched on the last part whatever
/// the schema (extensions such as uuid-ossp or dblink live in any schema);
/// harmlessness only for unqualified or `pg_catalog.` names, so a user's
/// `myschema.lower()` is never trusted.
pub(super) fn function_kind(parts: &[String]) -> FunctionKind {
    let Some(name) = parts.last() else { return FunctionKind::Unknown };
    let name = name.as_str();
    match name {
        "pg_advisory_lock" | "pg_advisory_lock_shared" | "pg_try_advisory_lock" | "pg_try_advisory_lock_shared" => {
            return FunctionKind::SessionAdvisoryLock;
        }
        "set_config" => return FunctionKind::SetConfig,
        _ => {}
    }
    if is_volatile(name) {
        return FunctionKind::Volatile;
    }
    let builtin_schema = match parts.len() {
        1 => true,
        2 => parts[0] == "pg_catalog",
        _ => false,
    };
    if builtin_schema && is_harmless(name) { FunctionKind::Harmless } else { FunctionKind::Unknown }
}

/// Functions whose calls change the database's data, so a statement calling
/// them is a write the replication log must carry (a `SELECT nextval(...)`
/// included). Other volatile built-ins (random, clock_timestamp, pg_notify,
/// advisory locks ...) change no table: a query calling them is not logged.
pub(super) fn changes_data(parts: &[String]) -> bool {
    let Some(name) = parts.last() else { return false };
    matches!(name.as_str(), "nextval" | "setval" | "dblink_exec" | "loread" | "lowrite") || name.starts_with("lo_")
}

/// Functions with side effects, session state or per-call results.
fn is_volatile(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "pg_advisory_",     // unlock, xact locks: transaction or session lock state
        "pg_try_advisory_", // pg_try_advisory_xact_lock...
        "lo_",              // large objects: lo_create, lo_import, lo_unlink, lo_put ...
        "dblink",           // remote execution
        "pg_stat_reset",
        "pg_create_", // replication slots, restore points
        "pg_replication_origin_",
        "pg_wal_replay_",
    ];
    matches!(
        name,
        "nextval"
            | "setval"
            | "currval"
            | "lastval"
            | "random"
            | "random_normal"
            | "setseed"
            | "gen_random_uuid"
            | "uuidv4"
            | "uuidv7"
            | "uuid_generate_v1"
            | "uuid_generate_v1mc"
            | "uuid_generate_v4"
            | "clock_timestamp"
            | "timeofday"
            | "txid_current"
            | "txid_current_if_assigned"
            | "pg_current_xact_id"
            | "pg_current_xact_id_if_assigned"
            | "pg_notify"
            | "pg_terminate_backend"
            | "pg_cancel_backend"
            | "pg_reload_conf"
            | "pg_rotate_logfile"
            | "pg_switch_wal"
            | "pg_switch_xlog"
            | "pg_drop_replication_slot"
            | "pg_replication_slot_advance"
            | "pg_logical_emit_message"
            | "pg_promote"
            | "pg_backup_start"
            | "pg_backup_stop"
            | "pg_import_system_collations"
            | "pg_file_write"
            | "pg_file_rename"
            | "pg_file_unlink"
            | "loread"
            | "lowrite"
    ) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Built-ins that are immutable or stable and have no side effects: running them
/// on a follower gives what the leader would (or, for the few per-server ones
/// like `pg_backend_pid`, something equally true and harmless).
fn is_harmless(name: &str) -> bool {
    matches!(
        name,
        // aggregates and window functions
        "count" | "sum" | "avg" | "min" | "max" | "array_agg" | "string_agg" | "json_agg" | "jsonb_agg"
            | "json_object_agg" | "jsonb_object_agg" | "bool_and" | "bool_or" | "every" | "bit_and" | "bit_or"
            | "stddev" | "stddev_pop" | "stddev_samp" | "variance" | "var_pop" | "var_samp"
            | "percentile_cont" | "percentile_disc" | "mode" | "row_number" | "rank" | "dense_rank"
            | "percent_rank" | "cume_dist" | "ntile" | "lag" | "lead" | "first_value" | "last_value"
            | "nth_value"
            // conditionals
            | "coalesce" | "nullif" | "greatest" | "least"
            // ARRAY(subquery), which the parser reads as a call of `array`
            // (a reserved word: no user function has that name unquoted)
            | "array"
            // strings
            | "lower" | "upper" | "initcap" | "length" | "char_length" | "character_length" | "octet_length"
            | "substr" | "substring" | "left" | "right" | "trim" | "btrim" | "ltrim" | "rtrim" | "lpad"
            | "rpad" | "replace" | "concat" | "concat_ws" | "format" | "position" | "strpos" | "split_part"
            | "reverse" | "repeat" | "translate" | "regexp_replace" | "regexp_match" | "regexp_matches"
            | "regexp_split_to_array" | "regexp_split_to_table" | "starts_with" | "md5" | "ascii" | "chr"
            | "quote_ident" | "quote_literal" | "quote_nullable" | "to_hex" | "encode" | "decode"
            | "string_to_array" | "array_to_string"
            // numbers
            | "abs" | "round" | "ceil" | "ceiling" | "floor" | "trunc" | "mod" | "power" | "sqrt" | "exp"
            | "ln" | "log" | "sign" | "div" | "pi"
            // dates and times (one value per statement or transaction: stable)
            | "now" | "current_timestamp" | "current_date" | "current_time" | "localtime" | "localtimestamp"
            | "transaction_timestamp" | "statement_timestamp" | "date_trunc" | "date_part" | "date_bin"
            | "extract" | "age" | "to_char" | "to_date" | "to_timestamp" | "to_number" | "make_date"
            | "make_time" | "make_timestamp" | "make_timestamptz" | "make_interval" | "justify_days"
            | "justify_hours" | "justify_interval" | "isfinite"
            // session information
            | "current_setting" | "version" | "current_user" | "session_user" | "user" | "current_role"
            | "current_schema" | "current_schemas" | "current_database" | "current_catalog"
            | "pg_backend_pid" | "pg_typeof" | "pg_sleep"
            // json
            | "to_json" | "to_jsonb" | "row_to_json" | "array_to_json" | "json_build_object"
            | "jsonb_build_object" | "json_build_array" | "jsonb_build_array" | "json_object" | "jsonb_object"
            | "jsonb_set" | "jsonb_insert" | "jsonb_strip_nulls" | "jsonb_pretty" | "json_typeof"
            | "jsonb_typeof" | "json_extract_path" | "jsonb_extract_path" | "json_extract_path_text"
            | "jsonb_extract_path_text" | "json_array_length" | "jsonb_array_length" | "json_each"
            | "jsonb_each" | "json_each_text" | "jsonb_each_text" | "json_array_elements"
            | "jsonb_array_elements" | "json_array_elements_text" | "jsonb_array_elements_text"
            | "jsonb_path_query" | "jsonb_path_exists"
            // arrays and sets
            | "generate_series" | "generate_subscripts" | "unnest" | "array_length" | "array_upper"
            | "array_lower" | "array_ndims" | "cardinality" | "array_position" | "array_positions"
            | "array_append" | "array_prepend" | "array_cat" | "array_remove" | "array_replace"
            // catalog helpers (psql's \d queries and friends)
            | "format_type" | "pg_get_expr" | "pg_get_userbyid" | "obj_description" | "col_description"
            | "shobj_description" | "pg_table_is_visible" | "pg_type_is_visible" | "pg_function_is_visible"
            | "pg_collation_is_visible" | "pg_opclass_is_visible" | "pg_get_indexdef"
            | "pg_get_constraintdef" | "pg_get_viewdef" | "pg_get_triggerdef" | "pg_get_functiondef"
            | "pg_get_function_arguments" | "pg_get_function_result" | "pg_get_function_identity_arguments"
            | "pg_get_ruledef" | "pg_get_partkeydef" | "pg_get_partition_constraintdef"
            | "pg_get_statisticsobjdef_columns" | "pg_get_serial_sequence" | "pg_encoding_to_char"
            | "pg_describe_object" | "pg_has_role" | "has_table_privilege" | "has_schema_privilege"
            | "has_database_privilege" | "has_column_privilege" | "has_function_privilege"
            | "pg_relation_size" | "pg_total_relation_size" | "pg_table_size" | "pg_indexes_size"
            | "pg_database_size" | "pg_size_pretty" | "pg_column_size" | "pg_tablespace_location"
            | "pg_relation_is_publishable" | "pg_is_in_recovery" | "pg_postmaster_start_time"
            | "pg_get_keywords" | "to_regclass" | "to_regtype" | "to_regproc"
    )
}

#[cfg(test)]
mod tests {
    use super::FunctionKind::*;
    use super::*;

    fn kind(name: &str) -> FunctionKind {
        let parts: Vec<String> = name.split('.').map(str::to_string).collect();
        function_kind(&parts)
    }

    #[test]
    fn kinds() {
        let cases: &[(&str, FunctionKind)] = &[
            ("count", Harmless),
            ("pg_catalog.count", Harmless),
            ("public.count", Unknown),
            ("a.b.count", Unknown),
            ("now", Harmless),
            ("current_setting", Harmless),
            ("pg_catalog.format_type", Harmless),
            ("pg_sleep", Harmless),
            ("pg_backend_pid", Harmless),
            ("nextval", Volatile),
            ("pg_catalog.nextval", Volatile),
            ("public.uuid_generate_v4", Volatile),
            ("gen_random_uuid", Volatile),
            ("random", Volatile),
            ("clock_timestamp", Volatile),
            ("txid_current", Volatile),
            ("pg_notify", Volatile),
            ("lo_import", Volatile),
            ("lo_unlink", Volatile),
            ("dblink_exec", Volatile),
            ("dblink", Volatile),
            ("pg_advisory_xact_lock", Volatile),
            ("pg_try_advisory_xact_lock_shared", Volatile),
            ("pg_advisory_unlock", Volatile),
            ("pg_advisory_unlock_all", Volatile),
            ("pg_advisory_lock", SessionAdvisoryLock),
            ("pg_advisory_lock_shared", SessionAdvisoryLock),
            ("pg_try_advisory_lock", SessionAdvisoryLock),
            ("pg_catalog.pg_try_advisory_lock_shared", SessionAdvisoryLock),
            ("set_config", SetConfig),
            ("pg_catalog.set_config", SetConfig),
            ("pg_terminate_backend", Volatile),
            ("pg_switch_wal", Volatile),
            ("my_func", Unknown),
            ("lower_bound", Unknown),
            ("uuid_generate_v5", Unknown),
            ("", Unknown),
        ];
        for (name, want) in cases {
            assert_eq!(kind(name), *want, "{name}");
        }
        assert_eq!(function_kind(&[]), Unknown);
    }

    #[test]
    fn functions_reported_for_the_catalog_check() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT 1", &[]),
            ("SELECT count(*), sum(a), max(b), coalesce(c, 0), lower(d), now() FROM t", &[]),
            ("SELECT CURRENT_TIMESTAMP, current_date, localtime, current_user, session_user", &[]),
            ("SELECT pg_catalog.now(), pg_catalog.format_type(1, 2)", &[]),
            ("SELECT count(*) FILTER (WHERE a > 1) OVER (PARTITION BY b) FROM t", &[]),
            ("SELECT * FROM generate_series(1, 3) g", &[]),
            ("SELECT my_func(1)", &["my_func"]),
            ("SELECT MY_FUNC(1), \"MyFunc\"(2), public.F(3), \"S\".g(4)", &["my_func", "MyFunc", "public.f", "S.g"]),
            ("SELECT public.lower('A')", &["public.lower"]),
            ("SELECT f(g(h(1)))", &["f", "g", "h"]),
            ("SELECT f(1), f(2), F(3)", &["f"]),
            ("SELECT * FROM t WHERE a = ANY(SELECT f(b) FROM u)", &["f"]),
            ("SELECT * FROM srf(1) AS s, LATERAL other_srf(s.a) AS o", &["srf", "other_srf"]),
            ("UPDATE t SET a = random() WHERE b = f(1)", &["random", "f"]),
            ("INSERT INTO t VALUES (nextval('s'), mine())", &["nextval", "mine"]),
            ("SELECT set_config('a.b', 'c', true)", &["set_config"]),
            ("EXPLAIN SELECT f(1)", &[]),
            ("EXPLAIN ANALYZE SELECT f(1)", &["f"]),
            ("PREPARE p AS SELECT f(1)", &[]),
            ("CREATE VIEW v AS SELECT f(1)", &[]),
            ("CREATE FUNCTION f() RETURNS int AS $$ SELECT g() $$ LANGUAGE sql", &[]),
            ("CALL proc(1)", &[]),
        ];
        for (sql, want) in cases {
            assert_eq!(super::super::classify(sql).functions, *want, "{sql}");
        }
    }
}
