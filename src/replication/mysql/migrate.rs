//! chorus's bookkeeping schema on a MySQL/MariaDB node: the database
//! `_chorus` (LSN counter, log, applied position), from the files
//! `migrations/mysql/NNNN_name.sql`, embedded at build time.
//!
//! MySQL commits implicitly around DDL, so a migration cannot be one
//! transaction as in PostgreSQL: every statement of a migration file must be
//! idempotent on its own (`IF NOT EXISTS`, `INSERT IGNORE`), and a file that
//! stopped halfway (a crash, a lost connection) is simply run again from its
//! start. Its version is recorded in `_chorus.migrations` after its last
//! statement. Concurrent chorus processes take turns through the server-wide
//! named lock `GET_LOCK('chorus_migrate', 30)`, so each file runs once per
//! node even when several of them start at the same moment.

use super::conn::{MyReplicationError, connect, query_error};
use crate::config::Node;
use crate::replication::migrate::Migration;
use mysql_async::prelude::Queryable;
use std::time::Duration;

/// Every MySQL migration, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "log", sql: include_str!("../../../migrations/mysql/0001_log.sql") },
    Migration { version: 2, name: "ddl_marker", sql: include_str!("../../../migrations/mysql/0002_ddl_marker.sql") },
];

/// The named lock migrations run under (per server).
const LOCK: &str = "chorus_migrate";
/// How long to wait for another chorus's migration, in seconds.
const LOCK_WAIT_SECS: u32 = 30;

/// Where applied versions are recorded; created before any migration runs.
const BOOTSTRAP: [&str; 2] = [
    "CREATE DATABASE IF NOT EXISTS _chorus",
    "CREATE TABLE IF NOT EXISTS _chorus.migrations (version INT PRIMARY KEY, name VARCHAR(100) NOT NULL, \
     applied_at DATETIME(6) NOT NULL) ENGINE=InnoDB",
];

/// Bring `_chorus` on `node` to the latest version, over a connection of
/// its own. Returns how many migrations this call applied (0: already current).
pub async fn migrate(node: &Node, timeout: Duration) -> Result<usize, MyReplicationError> {
    let mut conn = connect(node, None, timeout).await?;
    let result = migrate_with(&mut conn, node).await;
    let _ = conn.disconnect().await;
    result
}

/// [`migrate`] over an existing connection (which it leaves without a
/// session change other than the named lock, taken and released).
pub async fn migrate_with(conn: &mut mysql_async::Conn, node: &Node) -> Result<usize, MyReplicationError> {
    if pending(conn, node).await?.is_empty() {
        return Ok(0);
    }
    let granted: Option<Option<i64>> = conn
        .query_first(format!("SELECT GET_LOCK('{LOCK}', {LOCK_WAIT_SECS})"))
        .await
        .map_err(query_error(node, "taking the migration lock"))?;
    if granted != Some(Some(1)) {
        return Err(MyReplicationError::Locked { node: node.name.clone(), lock: LOCK, secs: LOCK_WAIT_SECS });
    }
    let result = migrate_locked(conn, node).await;
    // Released with the connection anyway; an error here changes nothing.
    let _ = conn.query_drop(format!("DO RELEASE_LOCK('{LOCK}')")).await;
    result
}

/// The migrations not recorded on the node yet (all of them when `_chorus`
/// or its `migrations` table does not exist).
async fn pending(conn: &mut mysql_async::Conn, node: &Node) -> Result<Vec<&'static Migration>, MyReplicationError> {
    let applied: Vec<i32> = match conn.query("SELECT version FROM _chorus.migrations").await {
        Ok(v) => v,
        // 1049: unknown database; 1146: no such table.
        Err(mysql_async::Error::Server(e)) if e.code == 1049 || e.code == 1146 => Vec::new(),
        Err(e) => return Err(query_error(node, "reading _chorus.migrations")(e)),
    };
    Ok(MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)).collect())
}

/// The migrations, once holding the lock. Re-reads what is applied: another
/// chorus may have migrated while we waited for the lock.
async fn migrate_locked(conn: &mut mysql_async::Conn, node: &Node) -> Result<usize, MyReplicationError> {
    for sql in BOOTSTRAP {
        conn.query_drop(sql).await.map_err(query_error(node, "creating _chorus.migrations"))?;
    }
    let mut count = 0;
    for m in pending(conn, node).await? {
        let what = format!("migration {:04}_{}", m.version, m.name);
        for statement in split_statements(m.sql) {
            conn.query_drop(statement).await.map_err(query_error(node, &what))?;
        }
        conn.exec_drop(
            "INSERT INTO _chorus.migrations (version, name, applied_at) VALUES (?, ?, NOW(6))",
            (m.version, m.name),
        )
        .await
        .map_err(query_error(node, &what))?;
        count += 1;
        tracing::info!(node = %node.name, version = m.version, name = m.name, "migration applied");
    }
    Ok(count)
}

/// The statements of a migration file: split at each `;` that ends a line
/// (trailing spaces or a `--` comment allowed) outside quotes and comments.
/// Pieces with nothing but comments and whitespace are dropped (the server
/// would answer "Query was empty").
pub fn split_statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    let mut has_code = false;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"' | b'`') => {
                has_code = true;
                i += 1;
                while i < bytes.len() {
                    let escaped = bytes[i] == b'\\' && q != b'`';
                    let doubled = bytes[i] == q && bytes.get(i + 1) == Some(&q);
                    if escaped || doubled {
                        i += 2;
                    } else if bytes[i] == q {
                        break;
                    } else {
                        i += 1;
                    }
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => i = line_end(bytes, i),
            b'#' => i = line_end(bytes, i),
            b';' if ends_line(&sql[i + 1..]) => {
                if has_code {
                    out.push(sql[start..i].trim());
                }
                has_code = false;
                i += 1;
                start = i;
            }
            b => {
                has_code |= !b.is_ascii_whitespace();
                i += 1;
            }
        }
    }
    if has_code {
        out.push(sql[start..].trim());
    }
    out
}

/// The index of the newline ending the line at `i` (or the end).
fn line_end(bytes: &[u8], i: usize) -> usize {
    bytes[i..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |p| i + p)
}

/// True when `rest` (what follows a `;`) holds only whitespace or a `--`
/// comment up to its first newline.
fn ends_line(rest: &str) -> bool {
    let line = rest.split('\n').next().unwrap_or("").trim();
    line.is_empty() || line.starts_with("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_match_their_files() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1);
            assert!(!split_statements(m.sql).is_empty());
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/mysql");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let expected: Vec<String> = MIGRATIONS.iter().map(|m| format!("{:04}_{}.sql", m.version, m.name)).collect();
        assert_eq!(files, expected, "every migrations/mysql/*.sql file must be listed in MIGRATIONS");
    }

    #[test]
    fn statements_split_at_line_ends_outside_quotes_and_comments() {
        let sql = "-- header; not a statement\nCREATE DATABASE IF NOT EXISTS a;\n\
                   INSERT INTO t VALUES ('x;\ny', \"q\"\"; \", 'it''s;\n', 'back\\';\n');  -- trailing; comment\n\
                   # hash comment;\n\
                   CREATE TABLE b (\n  id INT -- the key;\n) ENGINE=InnoDB;\nSELECT 1; SELECT 2;\n-- only a comment;\n";
        assert_eq!(
            split_statements(sql),
            [
                "-- header; not a statement\nCREATE DATABASE IF NOT EXISTS a",
                "INSERT INTO t VALUES ('x;\ny', \"q\"\"; \", 'it''s;\n', 'back\\';\n')",
                "-- trailing; comment\n# hash comment;\nCREATE TABLE b (\n  id INT -- the key;\n) ENGINE=InnoDB",
                "SELECT 1; SELECT 2",
            ]
        );
        let first = split_statements(MIGRATIONS[0].sql);
        assert_eq!(first.len(), 6, "{first:#?}");
        assert!(first[0].ends_with("CREATE DATABASE IF NOT EXISTS _chorus"));
        assert!(first.iter().all(|s| !s.ends_with(';')));
    }
}
