//! `chorus status` for PostgreSQL nodes: each replicated database's LSN on
//! the leader, applied LSN and lag on each follower, read from the nodes.

use super::{Row, down};
use crate::config::{Config, Node, Role};
use std::time::Duration;

/// A client for `db` on `node` (the connecting shared with replication:
/// the whole handshake is bounded by `timeout`).
async fn connect(node: &Node, db: &str, timeout: Duration) -> Result<tokio_postgres::Client, String> {
    crate::replication::connect(node, db, "chorus-status", timeout).await.map_err(|e| e.to_string())
}

/// One number from `sql`, or None when it returns no row or chorus's schema
/// is missing.
async fn number(c: &tokio_postgres::Client, sql: &str, arg: Option<i64>) -> Result<Option<i64>, String> {
    let r = match arg {
        Some(a) => c.query_opt(sql, &[&a]).await,
        None => c.query_opt(sql, &[]).await,
    };
    match r {
        Ok(row) => Ok(row.and_then(|r| r.get::<_, Option<i64>>(0))),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Every PostgreSQL node's view of the replicated databases (`databases`,
/// or every database on the leader that holds chorus's schema).
pub(super) async fn collect(config: &Config, databases: &[String], timeout: Duration) -> Result<Vec<Row>, String> {
    let leader = config.leader();
    let dbs: Vec<String> = if databases.is_empty() {
        let admin = connect(leader, &leader.admin_database, timeout)
            .await
            .map_err(|e| format!("leader {}: {e}", leader.name))?;
        let rows = admin
            .query(
                "SELECT datname::text FROM pg_catalog.pg_database WHERE NOT datistemplate AND datallowconn ORDER BY 1",
                &[],
            )
            .await
            .map_err(|e| format!("leader {}: listing databases: {e}", leader.name))?;
        let all: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        all.into_iter().filter(|d| config.replication.covers(d)).collect()
    } else {
        databases.to_vec()
    };
    let mut out = Vec::new();
    for db in &dbs {
        let lc = match connect(leader, db, timeout).await {
            Ok(c) => c,
            Err(e) => {
                out.push(down(leader, "leader", db, e));
                continue;
            }
        };
        let Some(lsn) = number(&lc, "SELECT lsn FROM _chorus.lsn", None).await? else {
            continue; // not replicated (yet): chorus never wrote its schema here
        };
        out.push(Row {
            node: leader.name.clone(),
            role: "leader",
            state: "up".into(),
            database: db.clone(),
            position: Some(lsn),
            lag_txns: None,
            lag: None,
        });
        for f in config.nodes.iter().filter(|n| n.role == Role::Follower) {
            let fc = match connect(f, db, timeout).await {
                Ok(c) => c,
                Err(e) => {
                    out.push(down(f, "follower", db, e));
                    continue;
                }
            };
            let applied = number(&fc, "SELECT lsn FROM _chorus.applied", None).await?;
            let lag = match applied {
                Some(a) if a < lsn => {
                    let micros = number(
                        &lc,
                        "SELECT (extract(epoch FROM pg_catalog.clock_timestamp() - committed_at) * 1e6)::int8 \
                         FROM _chorus.log WHERE lsn = $1 ORDER BY seq LIMIT 1",
                        Some(a + 1),
                    )
                    .await?;
                    micros.map(|m| Duration::from_micros(m.max(0) as u64))
                }
                Some(_) => Some(Duration::ZERO),
                None => None,
            };
            out.push(Row {
                node: f.name.clone(),
                role: "follower",
                state: if applied.is_some() { "up" } else { "not set up" }.into(),
                database: db.clone(),
                position: applied,
                lag_txns: applied.map(|a| (lsn - a).max(0)),
                lag,
            });
        }
    }
    Ok(out)
}
