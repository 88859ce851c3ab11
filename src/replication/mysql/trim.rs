//! Trimming the MySQL log: applied entries older than the retention leave
//! the leader's `_chorus.log` (one task per chorus, [`trim_leader`]) and each
//! follower's copy (by its applier, for what it applied itself).
//!
//! Entries a follower has not applied are never deleted from the leader: it
//! could not catch up without them (an applier that finds its next entry
//! gone reports a divergence).

use super::SERVER_LOG;
use super::conn::{MyReplicationError, connect, query_error};
use crate::config::Node;
use crate::replication::feed::trim_every;
use crate::replication::{Failures, ReplicationState};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::sync::Arc;
use std::time::Duration;

/// The statement that deletes applied entries (up to the LSN given as its
/// parameter) older than `retention`. `committed_at` is UTC (written with
/// `UTC_TIMESTAMP(6)`): it then means the same whatever a session's time zone.
pub fn trim_sql(retention: Duration) -> String {
    format!(
        "DELETE FROM _chorus.log WHERE lsn <= ? AND committed_at < UTC_TIMESTAMP(6) - INTERVAL {} MICROSECOND",
        retention.as_micros()
    )
}

/// The leader's side of trimming (one task per chorus): every few seconds,
/// delete the entries every follower has applied that are older than the
/// retention. Never trims while a follower's position is unknown.
pub async fn trim_leader(leader: Node, state: Arc<ReplicationState>, retention: Duration, connect_timeout: Duration) {
    let mut conn: Option<Conn> = None;
    let mut failures = Failures::default();
    let sql = trim_sql(retention);
    loop {
        tokio::time::sleep(trim_every(retention)).await;
        let Some(upto) = state.min_applied(SERVER_LOG) else { continue };
        let result = async {
            if conn.is_none() {
                let mut c = connect(&leader, None, connect_timeout).await?;
                // No gap locks: the trim must not hold up sessions appending entries.
                c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await
                    .map_err(query_error(&leader, "setting the isolation level"))?;
                conn = Some(c);
            }
            let c = conn.as_mut().expect("connected");
            c.exec_drop(sql.as_str(), (upto,)).await.map_err(query_error(&leader, "trimming the log"))?;
            Ok::<u64, MyReplicationError>(c.affected_rows())
        }
        .await;
        match result {
            Ok(deleted) => {
                failures.reset();
                tracing::debug!(node = %leader.name, upto, deleted, "trimmed the leader's log");
            }
            Err(e) => {
                conn = None;
                if failures.record() {
                    tracing::warn!(node = %leader.name, error = %e, "cannot trim the leader's log; retrying later");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_compared_in_utc_microseconds() {
        assert_eq!(
            trim_sql(Duration::from_millis(1500)),
            "DELETE FROM _chorus.log WHERE lsn <= ? AND committed_at < UTC_TIMESTAMP(6) - INTERVAL 1500000 MICROSECOND"
        );
    }
}
