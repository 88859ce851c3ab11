//! The I/O half of `verify`: connect to one node and summarise its databases'
//! tables (columns and an order-independent content checksum).

use super::VerifyError;
use super::compare::{Column, Content, NodeSnapshot, TableName, TableSummary};
use crate::config::Node;
use crate::sql::quote::quote_ident;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// Schemas that are not replicated data: the system's and chorus's own
/// bookkeeping (`_chorus`: logs and applied positions legitimately differ).
/// Toast and temporary schemas are excluded by pattern in [`TABLES_SQL`].
const SKIPPED_SCHEMAS: &str = "'pg_catalog', 'information_schema', '_chorus'";

/// Every ordinary table (relkind 'r', which includes the leaves of partitioned
/// tables; a partitioned parent holds no rows of its own) and sequence ('S')
/// with its columns in attribute order. `format_type` includes typmods
/// (`varchar(10)`, `numeric(8,2)`).
fn tables_sql() -> String {
    format!(
        "SELECT n.nspname::text, c.relname::text, c.relkind = 'S', a.attname::text, \
         format_type(a.atttypid, a.atttypmod), a.attnotnull \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE c.relkind IN ('r', 'S') AND n.nspname NOT IN ({SKIPPED_SCHEMAS}) AND n.nspname !~ '^pg_(toast|temp_)' \
         ORDER BY 1, 2, a.attnum"
    )
}

/// The content checksum of one table: the row count, and the md5 of two sums,
/// over all rows, of the two 64-bit halves of md5(row text). A sum does not
/// depend on the order rows are read in, counts duplicate rows (unlike XOR),
/// and needs O(1) memory however large the table (`numeric` sums cannot
/// overflow). It is a checksum, not a cryptographic commitment: fine for
/// finding divergence, not for proving it cannot exist. `ONLY`: an
/// inheritance parent is compared on its own rows; each child on its own.
fn checksum_sql(table: &TableName) -> String {
    format!(
        "SELECT count(*)::int8, md5(coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::int8), 0)::text || '/' || \
         coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::int8), 0)::text) \
         FROM (SELECT md5((t.*)::text) AS h FROM ONLY {}.{} t) s",
        quote_ident(&table.schema),
        quote_ident(&table.table)
    )
}

/// A sequence's state. `log_cnt` is left out: it counts values pre-logged to
/// WAL, which differs between servers whose sequences are in the same state.
fn sequence_sql(seq: &TableName) -> String {
    format!("SELECT last_value, is_called FROM {}.{}", quote_ident(&seq.schema), quote_ident(&seq.table))
}

/// Session settings that change how values print as text. Fixed on every node,
/// so a row's text (and so its hash) depends only on its data, not on each
/// server's defaults (postgresql.conf may differ between nodes).
const SETTINGS_SQL: &str = "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET TimeZone = 'UTC'; \
     SET extra_float_digits = 3; SET bytea_output = 'hex'; SET lc_monetary = 'C'; \
     SET search_path = pg_catalog; SET statement_timeout = 0";

/// A connection to `db` on `node` with chorus's credentials for it.
pub(super) async fn connect(node: &Node, db: &str, timeout: Duration) -> Result<Client, VerifyError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&node.host)
        .port(node.port)
        .user(&node.user)
        .dbname(db)
        .application_name("chorus-verify")
        .connect_timeout(timeout);
    if let Some(p) = &node.password {
        cfg.password(p);
    }
    let (client, conn) = cfg.connect(NoTls).await.map_err(|source| VerifyError::Connect {
        node: node.name.clone(),
        database: db.to_string(),
        source,
    })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The databases on `node` that can hold replicated data: every database that
/// accepts connections and is not a template.
pub async fn databases(node: &Node, timeout: Duration) -> Result<Vec<String>, VerifyError> {
    let client = connect(node, &node.admin_database, timeout).await?;
    let rows = client
        .query(
            "SELECT datname::text FROM pg_catalog.pg_database WHERE NOT datistemplate AND datallowconn ORDER BY 1",
            &[],
        )
        .await
        .map_err(|source| VerifyError::Query {
            node: node.name.clone(),
            database: node.admin_database.clone(),
            what: "listing databases".into(),
            source,
        })?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Summaries of `dbs` on `node` (each must exist there), each database read in
/// one REPEATABLE READ snapshot so its tables are compared at one instant.
pub async fn snapshot(node: &Node, dbs: &[String], timeout: Duration) -> Result<NodeSnapshot, VerifyError> {
    let mut snap = NodeSnapshot { node: node.name.clone(), databases: BTreeMap::new() };
    for db in dbs {
        let client = connect(node, db, timeout).await?;
        let tables = summarise(&client).await.map_err(|(what, source)| VerifyError::Query {
            node: node.name.clone(),
            database: db.clone(),
            what,
            source,
        })?;
        snap.databases.insert(db.clone(), tables);
    }
    Ok(snap)
}

type QueryFailure = (String, tokio_postgres::Error);

async fn summarise(client: &Client) -> Result<BTreeMap<TableName, TableSummary>, QueryFailure> {
    let setup = format!("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {SETTINGS_SQL}");
    client.batch_execute(&setup).await.map_err(|e| ("preparing the session".to_string(), e))?;
    let rows = client.query(&tables_sql(), &[]).await.map_err(|e| ("listing tables".to_string(), e))?;
    let mut columns: BTreeMap<TableName, (bool, Vec<Column>)> = BTreeMap::new();
    for r in &rows {
        let (_, cols) = columns.entry(TableName::new(r.get(0), r.get(1))).or_insert_with(|| (r.get(2), Vec::new()));
        // A table without columns has one row of NULLs from the LEFT JOIN.
        if let Some(name) = r.get::<_, Option<String>>(3) {
            cols.push(Column { name, type_name: r.get(4), not_null: r.get(5) });
        }
    }
    let mut out = BTreeMap::new();
    for (table, (is_sequence, columns)) in columns {
        let sql = if is_sequence { sequence_sql(&table) } else { checksum_sql(&table) };
        let row = client.query_one(&sql, &[]).await.map_err(|e| (format!("checksumming {table}"), e))?;
        let content = if is_sequence {
            Content::Sequence { last_value: row.get(0), is_called: row.get(1) }
        } else {
            Content::Rows { rows: row.get(0), digest: row.get(1) }
        };
        out.insert(table, TableSummary { columns, content });
    }
    client.batch_execute("COMMIT").await.map_err(|e| ("committing".to_string(), e))?;
    Ok(out)
}
