//! The I/O half of MySQL `verify`: connect to one node and summarise its
//! databases' base tables (columns and an order-independent content checksum).

use crate::config::Node;
use crate::verify::{Column, Content, NodeSnapshot, TableName, TableSummary, VerifyError};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::collections::BTreeMap;
use std::time::Duration;

/// Databases that are not replicated data: the server's own and chorus's
/// bookkeeping (`_chorus`: logs and applied positions legitimately differ).
const SKIPPED_DATABASES: &str = "'mysql', 'information_schema', 'performance_schema', 'sys', '_chorus'";

/// Session settings fixed on every node before reading, so what is hashed
/// depends only on the data: TIMESTAMP values print in the session time zone
/// (server defaults may differ between nodes); REPEATABLE READ with a
/// consistent snapshot reads every (InnoDB) table of every database at one
/// instant.
const SNAPSHOT_SQL: &str = "SET time_zone = '+00:00'; SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; \
     START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";

/// A connection to `node` with chorus's credentials for it, no default
/// database.
pub(super) async fn connect(node: &Node, timeout: Duration) -> Result<Conn, VerifyError> {
    let opts = OptsBuilder::default()
        .ip_or_hostname(node.host.clone())
        .tcp_port(node.port)
        .user(Some(node.user.clone()))
        .pass(node.password.clone())
        // Otherwise mysql_async, connected to a server on this machine, moves
        // to its unix socket, where other accounts and settings may apply.
        .prefer_socket(false);
    let failed = |source| VerifyError::MysqlConnect { node: node.name.clone(), source };
    // mysql_async has no connect timeout of its own.
    match tokio::time::timeout(timeout, Conn::new(opts)).await {
        Ok(conn) => conn.map_err(failed),
        Err(_) => Err(failed(
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {}", humantime::format_duration(timeout)),
            )
            .into(),
        )),
    }
}

/// Close `conn` politely. Its results are already read, so a failure here
/// changes no verdict.
pub(super) async fn disconnect(conn: Conn) {
    let _ = conn.disconnect().await;
}

/// The error for a failed `what` on `node`.
pub(super) fn query_failed(node: &Node, what: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> VerifyError {
    let (node, what) = (node.name.clone(), what.into());
    move |source| VerifyError::MysqlQuery { node, what, source }
}

/// The databases on `node` that can hold replicated data.
pub async fn databases(node: &Node, timeout: Duration) -> Result<Vec<String>, VerifyError> {
    let mut conn = connect(node, timeout).await?;
    let dbs = list_databases(&mut conn, node).await?;
    disconnect(conn).await;
    Ok(dbs)
}

async fn list_databases(conn: &mut Conn, node: &Node) -> Result<Vec<String>, VerifyError> {
    let sql = format!(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({SKIPPED_DATABASES}) ORDER BY 1"
    );
    conn.query(sql).await.map_err(query_failed(node, "listing databases"))
}

/// Every base table of `dbs` with its columns in order: name, `COLUMN_TYPE`
/// (with lengths, precision, `unsigned`, enum members), nullability and
/// `DATA_TYPE` (which decides how a value is hashed). MariaDB's
/// system-versioned tables are base tables too (their period columns are
/// hidden, so they are compared on their current rows).
fn tables_sql(dbs: usize) -> String {
    let placeholders = vec!["?"; dbs].join(", ");
    format!(
        "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, c.COLUMN_TYPE, c.IS_NULLABLE, c.DATA_TYPE \
         FROM information_schema.TABLES t \
         JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME \
         WHERE t.TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') AND t.TABLE_SCHEMA IN ({placeholders}) \
         ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION"
    )
}

/// A backquoted identifier (backquotes inside doubled).
fn quote_name(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A column as read for the checksum: its name and `DATA_TYPE`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    name: String,
    data_type: String,
}

/// One value of `column` (of table alias `t`) as hex text, or NULL. HEX of
/// the stored bytes, not the value's text: no charset conversion or collation
/// can make two different strings hash alike (`'a' = 'A'` in most
/// collations). Except for the types HEX treats as a number, which it rounds
/// to an integer first (`HEX(1.25) = HEX(1.30) = '1'`): DECIMAL and DOUBLE
/// are hashed as their exact text, FLOAT as its text once widened to DOUBLE
/// (a FLOAT prints with 6 digits only, so two close values would look alike).
fn value_hex(column: &Source) -> String {
    let col = format!("t.{}", quote_name(&column.name));
    match column.data_type.to_ascii_lowercase().as_str() {
        "decimal" | "double" | "real" => format!("HEX(CAST({col} AS CHAR))"),
        "float" => format!("HEX(CAST({col} + 0e0 AS CHAR))"),
        _ => format!("HEX({col})"),
    }
}

/// The content checksum of `db`.`table`: the row count, and the MD5 of two
/// sums, over all rows, of the two 64-bit halves of MD5(row), where a row is
/// its values' hex (see [`value_hex`]) joined by `#`, NULL as `NULL` (neither
/// can occur in hex, so NULL stays distinct from any value and the fields
/// from each other; no backslash, so `NO_BACKSLASH_ESCAPES` cannot change
/// the query). A sum does not depend on the order rows are read in, counts
/// duplicate rows (unlike XOR), cannot overflow (MySQL sums BIGINT UNSIGNED
/// as DECIMAL) and needs O(1) memory however large the table. A checksum for
/// finding divergence, not a cryptographic proof of equality.
fn checksum_sql(db: &str, table: &str, columns: &[Source]) -> String {
    let mut values: Vec<String> = columns.iter().map(|c| format!("IFNULL({}, 'NULL')", value_hex(c))).collect();
    if values.is_empty() {
        // (MySQL tables have columns; CONCAT_WS needs one argument.)
        values.push("''".into());
    }
    format!(
        "SELECT COUNT(*), MD5(CONCAT(COALESCE(SUM(s.a), 0), '/', COALESCE(SUM(s.b), 0))) \
         FROM (SELECT CAST(CONV(SUBSTRING(r.h, 1, 16), 16, 10) AS UNSIGNED) AS a, \
                      CAST(CONV(SUBSTRING(r.h, 17, 16), 16, 10) AS UNSIGNED) AS b \
               FROM (SELECT MD5(CONCAT_WS('#', {})) AS h FROM {}.{} t) r) s",
        values.join(", "),
        quote_name(db),
        quote_name(table)
    )
}

/// A summary of the databases on `node` (of `selected`; empty: all), read in
/// one consistent snapshot. Every database listed is in the snapshot, with or
/// without tables.
pub async fn snapshot(node: &Node, selected: &[String], timeout: Duration) -> Result<NodeSnapshot, VerifyError> {
    let mut conn = connect(node, timeout).await?;
    conn.query_drop(SNAPSHOT_SQL).await.map_err(query_failed(node, "starting a consistent snapshot"))?;
    let mut dbs = list_databases(&mut conn, node).await?;
    if !selected.is_empty() {
        dbs.retain(|d| selected.contains(d));
    }
    let mut snap =
        NodeSnapshot { node: node.name.clone(), databases: dbs.iter().map(|d| (d.clone(), BTreeMap::new())).collect() };
    if dbs.is_empty() {
        disconnect(conn).await;
        return Ok(snap);
    }

    let rows: Vec<(String, String, String, String, String, String)> =
        conn.exec(tables_sql(dbs.len()), dbs).await.map_err(query_failed(node, "listing tables"))?;
    let mut tables: BTreeMap<(String, String), (Vec<Column>, Vec<Source>)> = BTreeMap::new();
    for (db, table, name, column_type, nullable, data_type) in rows {
        let (columns, sources) = tables.entry((db, table)).or_default();
        sources.push(Source { name: name.clone(), data_type });
        columns.push(Column { name, type_name: column_type, not_null: nullable == "NO" });
    }
    for ((db, table), (columns, sources)) in tables {
        let what = || format!("checksumming {db}.{table}");
        let (rows, digest): (i64, String) = conn
            .query_first(checksum_sql(&db, &table, &sources))
            .await
            .map_err(query_failed(node, what()))?
            .ok_or_else(|| query_failed(node, what())(mysql_async::Error::Other("no result row".into())))?;
        let summary = TableSummary { columns, content: Content::Rows { rows, digest } };
        snap.databases.entry(db).or_default().insert(TableName::unqualified(&table), summary);
    }
    conn.query_drop("COMMIT").await.map_err(query_failed(node, "committing"))?;
    disconnect(conn).await;
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, data_type: &str) -> Source {
        Source { name: name.into(), data_type: data_type.into() }
    }

    #[test]
    fn names_are_backquoted_with_backquotes_doubled() {
        assert_eq!(quote_name("t"), "`t`");
        assert_eq!(quote_name("odd `name`"), "`odd ``name```");
    }

    #[test]
    fn values_are_hashed_as_bytes_except_where_hex_would_round() {
        let cases = [
            ("varchar", "HEX(t.`c`)"),
            ("blob", "HEX(t.`c`)"),
            ("int", "HEX(t.`c`)"),
            ("bigint", "HEX(t.`c`)"),
            ("datetime", "HEX(t.`c`)"),
            ("decimal", "HEX(CAST(t.`c` AS CHAR))"),
            ("DOUBLE", "HEX(CAST(t.`c` AS CHAR))"),
            ("float", "HEX(CAST(t.`c` + 0e0 AS CHAR))"),
        ];
        for (data_type, expected) in cases {
            assert_eq!(value_hex(&col("c", data_type)), expected, "{data_type}");
        }
    }

    #[test]
    fn the_checksum_query_names_every_column_of_its_table() {
        let sql = checksum_sql("shop`s", "my table", &[col("id", "int"), col("h", "decimal")]);
        assert!(
            sql.contains(
                "MD5(CONCAT_WS('#', IFNULL(HEX(t.`id`), 'NULL'), IFNULL(HEX(CAST(t.`h` AS CHAR)), 'NULL'))) AS h \
                 FROM `shop``s`.`my table` t"
            ),
            "{sql}"
        );
        assert!(sql.starts_with("SELECT COUNT(*), MD5(CONCAT(COALESCE(SUM(s.a), 0), '/', COALESCE(SUM(s.b), 0)))"));
        assert!(checksum_sql("d", "t", &[]).contains("CONCAT_WS('#', '')"));
    }

    #[test]
    fn the_table_query_has_one_placeholder_per_database() {
        assert!(tables_sql(1).contains("t.TABLE_SCHEMA IN (?)"));
        assert!(tables_sql(3).contains("t.TABLE_SCHEMA IN (?, ?, ?)"));
    }
}
