//! Pure: synchronized snapshots (`pg_export_snapshot()` in one session,
//! `SET TRANSACTION SNAPSHOT 'id'` in others, what `pg_dump -j` does). A
//! snapshot exists on the server that exported it, so chorus routes each
//! import to that server (`session::snapshots`); this module reads the
//! statements and the ids.

/// Does the query call `pg_export_snapshot` (its result row holds an id)?
/// A byte search, no allocation: it runs for every routed query.
pub fn exports(sql: &str) -> bool {
    const NAME: &[u8] = b"pg_export_snapshot";
    sql.len() >= NAME.len() && sql.as_bytes().windows(NAME.len()).any(|w| w.eq_ignore_ascii_case(NAME))
}

/// The id of `SET TRANSACTION SNAPSHOT 'id'`, if that is the statement.
pub fn imported(sql: &str) -> Option<String> {
    let mut words = sql.split_ascii_whitespace();
    let (set, txn) = (words.next()?, words.next()?);
    if !set.eq_ignore_ascii_case("set") || !txn.eq_ignore_ascii_case("transaction") {
        return None;
    }
    let rest = sql.trim_start()[set.len()..].trim_start()[txn.len()..].trim_start();
    let rest = rest.get(..8).filter(|k| k.eq_ignore_ascii_case("snapshot")).map(|_| rest[8..].trim_start())?;
    let literal = rest.strip_prefix('\'')?;
    let end = literal.find('\'')?;
    let id = &literal[..end];
    let tail = literal[end + 1..].trim_start();
    (is_id(id) && (tail.is_empty() || tail == ";")).then(|| id.to_string())
}

/// Looks like an id `pg_export_snapshot` returns (`0000000A-0000001B-1`:
/// hexadecimal, dashes, digits; nothing to quote).
pub fn is_id(s: &str) -> bool {
    (3..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') && s.contains('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_are_found_in_any_case() {
        assert!(exports("SELECT pg_catalog.pg_export_snapshot()"));
        assert!(exports("select PG_EXPORT_SNAPSHOT()"));
        assert!(!exports("SELECT 1"));
        assert!(!exports("SELECT pg_export"));
    }

    #[test]
    fn imports_name_their_snapshot() {
        let cases: &[(&str, Option<&str>)] = &[
            ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", Some("00000003-0000001B-1")),
            ("set transaction  snapshot '00000003-0000001B-1';", Some("00000003-0000001B-1")),
            ("  SET\tTRANSACTION\nSNAPSHOT '0000000A-00000002-12' ", Some("0000000A-00000002-12")),
            ("SET    TRANSACTION   SNAPSHOT   '0000000A-00000002-12'", Some("0000000A-00000002-12")),
            ("SET TRANSACTION SNAPSHOT 'ü-1'", None),
            ("SET TRANSACTION SNAPSHOTü '1-1'", None),
            ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", None),
            ("SET TRANSACTION SNAPSHOT 'not an id'", None),
            ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'; SELECT 1", None),
            ("SET TRANSACTION SNAPSHOT", None),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", None),
        ];
        for (sql, want) in cases {
            assert_eq!(imported(sql).as_deref(), *want, "{sql}");
        }
    }
}
