//! chorus's own schema (`_chorus`: the log, the LSN counter, the applied
//! position) in every replicated database on every node, and the database
//! itself on followers that do not have it yet.
//!
//! Migrations are the files `migrations/postgres/NNNN_name.sql`, embedded at
//! build time. Each is applied in one transaction that also records it in
//! `_chorus.migrations`, under a transaction-scoped advisory lock, so several
//! chorus processes starting at once apply each file exactly once.

use super::{ReplicationError, connect, query_error};
use crate::config::{Config, Node};
use crate::sql::quote::{quote_ident, quote_literal};
use std::time::Duration;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// One schema migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "log", sql: include_str!("../../migrations/postgres/0001_log.sql") },
    Migration { version: 2, name: "applied_at", sql: include_str!("../../migrations/postgres/0002_applied_at.sql") },
    Migration { version: 3, name: "capture", sql: include_str!("../../migrations/postgres/0003_capture.sql") },
    Migration { version: 4, name: "origin", sql: include_str!("../../migrations/postgres/0004_origin.sql") },
    Migration {
        version: 5,
        name: "trigger_rows",
        sql: include_str!("../../migrations/postgres/0005_trigger_rows.sql"),
    },
    Migration {
        version: 6,
        name: "quiet_notify",
        sql: include_str!("../../migrations/postgres/0006_quiet_notify.sql"),
    },
];

/// The advisory lock (per database) migrations run under: "chorusmg".
const LOCK_KEY: i64 = 0x6368_6f72_7573_6d67;

const BOOTSTRAP_SQL: &str = "CREATE SCHEMA IF NOT EXISTS _chorus; \
     CREATE TABLE IF NOT EXISTS _chorus.migrations (version int PRIMARY KEY, name text NOT NULL, \
     applied_at timestamptz NOT NULL DEFAULT now())";

/// Bring `_chorus` in database `db` on `node` to the latest version. Returns
/// how many migrations this call applied (0 when already current).
pub async fn migrate(node: &Node, db: &str, timeout: Duration) -> Result<usize, ReplicationError> {
    let mut client = connect(node, db, "chorus-migrate", timeout).await?;
    migrate_with(&mut client, node, db).await
}

/// A transaction holding the migration lock (so concurrent chorus instances
/// migrate one at a time).
async fn locked_transaction<'a>(
    client: &'a mut Client,
    node: &Node,
    db: &str,
) -> Result<tokio_postgres::Transaction<'a>, ReplicationError> {
    let txn = client.transaction().await.map_err(query_error(node, db, "BEGIN"))?;
    txn.execute("SELECT pg_catalog.pg_advisory_xact_lock($1)", &[&LOCK_KEY]).await.map_err(query_error(
        node,
        db,
        "taking the migration lock",
    ))?;
    Ok(txn)
}

/// [`migrate`] over an existing connection to `db` on `node`.
async fn migrate_with(client: &mut Client, node: &Node, db: &str) -> Result<usize, ReplicationError> {
    let applied: Vec<i32> = match client.query("SELECT version FROM _chorus.migrations", &[]).await {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) if matches!(e.code(), Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME) =>
        {
            let txn = locked_transaction(client, node, db).await?;
            txn.batch_execute(BOOTSTRAP_SQL).await.map_err(query_error(node, db, "creating schema _chorus"))?;
            txn.commit().await.map_err(query_error(node, db, "COMMIT"))?;
            Vec::new()
        }
        Err(e) => return Err(query_error(node, db, "reading _chorus.migrations")(e)),
    };
    let mut count = 0;
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let what = format!("migration {:04}_{}", m.version, m.name);
        let txn = locked_transaction(client, node, db).await?;
        // Another chorus may have applied it while we waited for the lock.
        let done = txn
            .query_opt("SELECT 1 FROM _chorus.migrations WHERE version = $1", &[&m.version])
            .await
            .map_err(query_error(node, db, &what))?;
        if done.is_none() {
            txn.batch_execute(m.sql).await.map_err(query_error(node, db, &what))?;
            txn.execute("INSERT INTO _chorus.migrations (version, name) VALUES ($1, $2)", &[&m.version, &m.name])
                .await
                .map_err(query_error(node, db, &what))?;
            count += 1;
        }
        txn.commit().await.map_err(query_error(node, db, &what))?;
        if done.is_none() {
            tracing::info!(node = %node.name, db, version = m.version, name = m.name, "migration applied");
        }
    }
    Ok(count)
}

/// How the leader's database was created, so a follower's copy sorts and
/// encodes text the same way, and which database it is (see
/// `migrations/postgres/0004_origin.sql`).
#[derive(Debug, Clone)]
pub struct DatabaseSpec {
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// The leader's database's id (a uuid, as text).
    pub origin: String,
}

/// Bring `_chorus` in `db` on the leader up to date and read how `db` was
/// created there (which also proves it exists), giving it its id if it has none.
pub async fn database_spec(leader: &Node, db: &str, timeout: Duration) -> Result<DatabaseSpec, ReplicationError> {
    let mut client = connect(leader, db, "chorus-migrate", timeout).await?;
    migrate_with(&mut client, leader, db).await?;
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text \
             FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()",
            &[],
        )
        .await
        .map_err(query_error(leader, db, "reading the database's encoding"))?;
    // Only the first call writes (the row lock is then free for writers again).
    client
        .execute(
            "UPDATE _chorus.lsn SET origin = pg_catalog.md5(pg_catalog.random()::text || \
             pg_catalog.clock_timestamp()::text)::uuid WHERE origin IS NULL",
            &[],
        )
        .await
        .map_err(query_error(leader, db, "giving the database its id"))?;
    let origin = read_origin(&client, leader, db).await?.unwrap_or_default();
    Ok(DatabaseSpec { encoding: row.get(0), collate: row.get(1), ctype: row.get(2), origin })
}

async fn read_origin(client: &Client, node: &Node, db: &str) -> Result<Option<String>, ReplicationError> {
    let row = client
        .query_one("SELECT origin::text FROM _chorus.lsn", &[])
        .await
        .map_err(query_error(node, db, "reading the database's id"))?;
    Ok(row.get(0))
}

/// Make `db` exist on follower `node` (created like the leader's if missing),
/// bring its `_chorus` schema up to date and check that it is a copy of the
/// leader's database: one left over from a dropped database of the same
/// name is [`ReplicationError::Stale`] (a copy made before chorus gave
/// databases ids takes the leader's).
pub async fn ensure_on_follower(
    node: &Node,
    db: &str,
    spec: &DatabaseSpec,
    timeout: Duration,
) -> Result<(), ReplicationError> {
    let mut client = match connect(node, db, "chorus-migrate", timeout).await {
        Ok(c) => c,
        Err(e) if e.is_missing_database() => {
            create(node, db, spec, timeout).await?;
            connect(node, db, "chorus-migrate", timeout).await?
        }
        Err(e) => return Err(e),
    };
    migrate_with(&mut client, node, db).await?;
    client
        .execute("UPDATE _chorus.lsn SET origin = $1::text::uuid WHERE origin IS NULL", &[&spec.origin])
        .await
        .map_err(query_error(node, db, "giving the database the leader's id"))?;
    match read_origin(&client, node, db).await? {
        Some(o) if o == spec.origin => Ok(()),
        _ => Err(ReplicationError::Stale { node: node.name.clone(), database: db.to_string() }),
    }
}

/// `CREATE DATABASE db` on `node`, like the leader's; someone else creating
/// it at the same time is fine.
async fn create(node: &Node, db: &str, spec: &DatabaseSpec, timeout: Duration) -> Result<(), ReplicationError> {
    let admin = &node.admin_database;
    let client = connect(node, admin, "chorus-migrate", timeout).await?;
    let base =
        format!("CREATE DATABASE {} TEMPLATE template0 ENCODING {}", quote_ident(db), quote_literal(&spec.encoding));
    let full = format!("{base} LC_COLLATE {} LC_CTYPE {}", quote_literal(&spec.collate), quote_literal(&spec.ctype));
    let duplicate = |e: &tokio_postgres::Error| e.code() == Some(&SqlState::DUPLICATE_DATABASE);
    match client.batch_execute(&full).await {
        Ok(()) => {}
        Err(e) if duplicate(&e) => return Ok(()),
        Err(e) => {
            // The leader's locale may not exist on this server: same encoding,
            // the server's default locale, and say so.
            tracing::warn!(node = %node.name, db, error = %super::pg_text(&e), locale = %spec.collate,
                "cannot create the database with the leader's locale; using the server's default");
            match client.batch_execute(&base).await {
                Ok(()) => {}
                Err(e) if duplicate(&e) => return Ok(()),
                Err(e) => return Err(query_error(node, admin, "CREATE DATABASE")(e)),
            }
        }
    }
    tracing::info!(node = %node.name, db, "database created on the follower");
    Ok(())
}

/// Everything a database needs before chorus replicates it: `_chorus` on the
/// leader, and on every follower the database itself and `_chorus`. A
/// follower that cannot be prepared is skipped with a warning (its applier
/// prepares it when it comes back) and returned with why; a leader that
/// cannot be reached is an error.
pub async fn ensure_database(config: &Config, db: &str) -> Result<Vec<(String, ReplicationError)>, ReplicationError> {
    let timeout = config.limits.connect_timeout;
    let spec = database_spec(config.leader(), db, timeout).await?;
    let followers: Vec<&Node> = config.nodes.iter().filter(|n| n.role == crate::config::Role::Follower).collect();
    let results = futures_join(followers.iter().map(|f| ensure_on_follower(f, db, &spec, timeout))).await;
    let mut failed = Vec::new();
    for (f, r) in followers.iter().zip(results) {
        if let Err(e) = r {
            tracing::warn!(node = %f.name, db, error = %e, "cannot prepare the database on the follower yet");
            failed.push((f.name.clone(), e));
        }
    }
    Ok(failed)
}

/// `CREATE DATABASE db TEMPLATE source` on follower `node`: the copy of its
/// own `source`, which holds what the leader's did when the leader copied it
/// (or less: the copy's applier replays the rest from the copied log).
/// Sessions still reading `source` there are ended (it cannot be copied
/// while in use; on the leader nobody used it, or the copy would have failed).
pub async fn copy_on_follower(node: &Node, db: &str, source: &str, timeout: Duration) -> Result<(), ReplicationError> {
    let admin = &node.admin_database;
    let client = connect(node, admin, "chorus-migrate", timeout).await?;
    let sql = format!("CREATE DATABASE {} TEMPLATE {}", quote_ident(db), quote_ident(source));
    let mut attempt = 0;
    loop {
        match client.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) && attempt < 3 => {
                attempt += 1;
                client
                    .execute(
                        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                         WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()",
                        &[&source],
                    )
                    .await
                    .map_err(query_error(node, admin, "ending sessions on the template"))?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(query_error(node, admin, "CREATE DATABASE ... TEMPLATE")(e)),
        }
    }
}

/// The connections chorus processes keep for their own work (feeds,
/// migrations, catalog reads, status, verify), by application_name; client
/// sessions carry their clients' names.
const OWN_CONNECTIONS: &str = "'chorus-feed', 'chorus-migrate', 'chorus-catalog', 'chorus-status', 'chorus-verify'";

/// End every connection a chorus process keeps to `db` on `node` for its
/// own work (another chorus in front of the same servers feeds every
/// database too), so it can be dropped or copied. Such a process notices
/// the database is gone when it reconnects.
pub async fn end_own_connections(node: &Node, db: &str, timeout: Duration) -> Result<u64, ReplicationError> {
    let admin = &node.admin_database;
    let client = connect(node, admin, "chorus-migrate", timeout).await?;
    let sql = format!(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
         WHERE datname = $1 AND application_name IN ({OWN_CONNECTIONS}) AND pid <> pg_catalog.pg_backend_pid()"
    );
    let rows = client.query(&sql, &[&db]).await.map_err(query_error(node, admin, "ending chorus's connections"))?;
    Ok(rows.len() as u64)
}

/// `DROP DATABASE db` on follower `node` (its copy of a database the
/// leader dropped), ending whatever sessions still use it there.
pub async fn drop_on_follower(node: &Node, db: &str, timeout: Duration) -> Result<(), ReplicationError> {
    let admin = &node.admin_database;
    let client = connect(node, admin, "chorus-migrate", timeout).await?;
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(db));
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(()),
        // Before PostgreSQL 13 there is no FORCE.
        Err(e) if e.code() == Some(&SqlState::SYNTAX_ERROR) => client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(db)))
            .await
            .map_err(query_error(node, admin, "DROP DATABASE")),
        Err(e) => Err(query_error(node, admin, "DROP DATABASE")(e)),
    }
}

/// Run futures concurrently on this task, results in order.
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|o| o.expect("every future completed")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_match_their_files() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1);
            assert!(!m.sql.trim().is_empty());
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let expected: Vec<String> = MIGRATIONS.iter().map(|m| format!("{:04}_{}.sql", m.version, m.name)).collect();
        assert_eq!(files, expected, "every migrations/postgres/*.sql file must be listed in MIGRATIONS");
    }
}
