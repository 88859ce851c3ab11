//! The names the scanner looks for: the functions it refuses, the keywords
//! that read the clock, the types that make a special string plain text.

use super::Target;

/// Functions whose value chorus cannot know: per statement, row or call, or per server.
pub(super) const NONDETERMINISTIC: &[&str] = &[
    "statement_timestamp",
    "clock_timestamp",
    "timeofday",
    "random",
    "random_normal",
    "setseed",
    "gen_random_uuid",
    "uuidv4",
    "uuidv7",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "gen_random_bytes",
    "gen_salt",
    "txid_current",
    "txid_current_if_assigned",
    "txid_current_snapshot",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_current_snapshot",
    "mxid_age",
    "pg_backend_pid",
    "inet_client_addr",
    "inet_client_port",
    "inet_server_addr",
    "inet_server_port",
    "pg_postmaster_start_time",
    "pg_conf_load_time",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
];

/// Text-like types: a special string typed so is just a word.
pub(super) const TEXT_TYPES: &[&str] = &[
    "text",
    "varchar",
    "char",
    "character",
    "bpchar",
    "name",
    "citext",
    "json",
    "jsonb",
    "xml",
    "tsvector",
    "tsquery",
];

/// The SQL keyword forms of the clock: their type, and whether they take a precision.
pub(super) fn keyword_clock(word: &[u8]) -> Option<(Target, bool)> {
    let is = |s: &str| word.eq_ignore_ascii_case(s.as_bytes());
    if is("current_timestamp") {
        Some((Target::Timestamptz, true))
    } else if is("localtimestamp") {
        Some((Target::Timestamp, true))
    } else if is("current_date") {
        Some((Target::Date, false))
    } else if is("current_time") {
        Some((Target::Timetz, true))
    } else if is("localtime") {
        Some((Target::Time, true))
    } else {
        None
    }
}
