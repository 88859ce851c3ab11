//! Before comparing: wait until every follower has applied the leader's log
//! position, so `verify` compares the same point of history on every node
//! instead of reporting replication lag as divergence.

use super::VerifyError;
use super::collect::connect;
use crate::config::Node;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// How often followers' positions are read while waiting (MySQL's wait too).
pub(super) const POLL: Duration = Duration::from_millis(100);

/// A follower that had not applied the leader's position when the wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    pub node: String,
    /// Its applied LSN; `None` when its database has no `_chorus` yet.
    pub applied: Option<i64>,
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.applied {
            Some(lsn) => write!(f, "{} is at LSN {lsn}", self.node),
            None => write!(f, "{} has no _chorus schema yet", self.node),
        }
    }
}

/// `_chorus.<table>.lsn` in the connected database, `None` when the database
/// has no such table (it is not replicated).
async fn position(client: &Client, node: &Node, db: &str, table: &str) -> Result<Option<i64>, VerifyError> {
    let failed = |source| VerifyError::Query {
        node: node.name.clone(),
        database: db.to_string(),
        what: format!("reading _chorus.{table}"),
        source,
    };
    let exists = client
        .query_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[&format!("_chorus.{table}")])
        .await
        .map_err(failed)?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    let row = client.query_opt(&format!("SELECT lsn FROM _chorus.{table}"), &[]).await.map_err(failed)?;
    Ok(row.map(|r| r.get(0)))
}

/// Wait (at most `wait`) until each of `followers` (the nodes that have
/// database `db`) has applied the leader's current LSN in `db`. A database
/// without `_chorus` on the leader is not replicated: no wait.
pub async fn wait_for_followers(
    leader: &Node,
    followers: &[Node],
    db: &str,
    wait: Duration,
    timeout: Duration,
) -> Result<(), VerifyError> {
    let client = connect(leader, db, timeout).await?;
    let target = match position(&client, leader, db, "lsn").await? {
        None | Some(0) => return Ok(()),
        Some(lsn) => lsn,
    };
    let mut clients = Vec::with_capacity(followers.len());
    for f in followers {
        clients.push(connect(f, db, timeout).await?);
    }
    let deadline = Instant::now() + wait;
    loop {
        let mut behind = Vec::new();
        for (f, c) in followers.iter().zip(&clients) {
            let applied = position(c, f, db, "applied").await?;
            if applied.is_none_or(|a| a < target) {
                behind.push(Behind { node: f.name.clone(), applied });
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(VerifyError::Behind { database: db.to_string(), leader_lsn: target, waited: wait, behind });
        }
        tokio::time::sleep(POLL).await;
    }
}
