//! Before comparing a MySQL cluster: wait until every follower has applied the
//! leader's last committed LSN, so `verify` compares the same point of history
//! on every node instead of reporting replication lag as divergence.
//!
//! chorus keeps one log per MySQL server (migrations/mysql/0001_log.sql): the
//! leader's `_chorus.lsn` holds the last committed LSN, each follower's
//! `_chorus.applied` the last one it applied. A node without them (replication
//! never ran there) is at LSN 0: a leader at 0 means nothing to wait for.

use super::collect::{connect, disconnect, query_failed};
use crate::config::Node;
use crate::verify::wait::POLL;
use crate::verify::{Behind, VerifyError};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::time::{Duration, Instant};

/// `_chorus.<table>.lsn` (row 1) on the connected server; `None` when the
/// server has no such table or row.
async fn position(conn: &mut Conn, node: &Node, table: &str) -> Result<Option<i64>, VerifyError> {
    let failed = || query_failed(node, format!("reading _chorus.{table}"));
    let exists: Option<i64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '_chorus' AND TABLE_NAME = ?",
            (table,),
        )
        .await
        .map_err(failed())?;
    if exists.unwrap_or(0) == 0 {
        return Ok(None);
    }
    conn.query_first(format!("SELECT lsn FROM _chorus.{table} WHERE id = 1")).await.map_err(failed())
}

/// The followers (name, applied LSN) that have not applied `target`; one
/// without `_chorus` counts as LSN 0.
fn behind(target: i64, applied: Vec<(String, Option<i64>)>) -> Vec<Behind> {
    applied
        .into_iter()
        .filter(|(_, lsn)| lsn.unwrap_or(0) < target)
        .map(|(node, applied)| Behind { node, applied })
        .collect()
}

/// Wait (at most `wait`) until each of `followers` has applied the `leader`'s
/// current LSN; [`VerifyError::MysqlBehind`] names those that did not.
pub(super) async fn wait_for_followers(
    leader: &Node,
    followers: &[Node],
    wait: Duration,
    timeout: Duration,
) -> Result<(), VerifyError> {
    let mut conn = connect(leader, timeout).await?;
    let target = position(&mut conn, leader, "lsn").await?.unwrap_or(0);
    disconnect(conn).await;
    if target == 0 {
        return Ok(());
    }
    let mut conns = Vec::with_capacity(followers.len());
    for f in followers {
        conns.push(connect(f, timeout).await?);
    }
    let deadline = Instant::now() + wait;
    let result = loop {
        let mut applied = Vec::with_capacity(followers.len());
        for (f, c) in followers.iter().zip(&mut conns) {
            applied.push((f.name.clone(), position(c, f, "applied").await?));
        }
        let behind = behind(target, applied);
        if behind.is_empty() {
            break Ok(());
        }
        if Instant::now() >= deadline {
            break Err(VerifyError::MysqlBehind { leader_lsn: target, waited: wait, behind });
        }
        tokio::time::sleep(POLL).await;
    };
    for c in conns {
        disconnect(c).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_is_behind_until_it_applied_the_target() {
        let applied = vec![
            ("f1".to_string(), Some(7)),
            ("f2".to_string(), Some(6)),
            ("f3".to_string(), None),
            ("f4".to_string(), Some(8)),
        ];
        let names: Vec<String> = behind(7, applied.clone()).iter().map(ToString::to_string).collect();
        assert_eq!(names, ["f2 is at LSN 6", "f3 has no _chorus schema yet"]);
        assert_eq!(behind(6, applied.clone()).len(), 1);
        assert!(behind(0, applied).is_empty());
    }
}
