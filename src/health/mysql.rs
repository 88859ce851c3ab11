//! Periodic health checks of MySQL/MariaDB nodes: the twin of
//! [`crate::health::spawn`] over a mysql_async connection to each node's
//! admin database. A node that stops answering leaves the read rotation and
//! comes back when it answers again (a diverged follower stays out: see
//! [`Topology::set_diverged`]).

use crate::config::Health;
use crate::replication::mysql::conn;
use crate::topology::Topology;
use mysql_async::prelude::Queryable;
use std::sync::Arc;
use std::time::Duration;

/// Check every node of `topology` (a MySQL-only one) forever, until the
/// tasks are aborted.
pub fn spawn(topology: Arc<Topology>, health: Health, connect_timeout: Duration) -> Vec<tokio::task::JoinHandle<()>> {
    (0..topology.nodes().len())
        .map(|i| {
            let topology = topology.clone();
            let health = health.clone();
            tokio::spawn(async move { check_loop(topology, i, health, connect_timeout).await })
        })
        .collect()
}

/// `SELECT 1` on the node's connection, connecting first if there is none.
async fn check_once(
    conn: &mut Option<mysql_async::Conn>,
    topology: &Topology,
    i: usize,
    connect_timeout: Duration,
) -> Result<(), String> {
    if conn.is_none() {
        let node = topology.node(i).pool.node();
        let c = conn::connect(node, Some(&node.admin_database), connect_timeout).await.map_err(|e| e.to_string())?;
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("just connected");
    c.query_drop("SELECT 1").await.map_err(|e| conn::my_text(&e))
}

async fn check_loop(topology: Arc<Topology>, i: usize, health: Health, connect_timeout: Duration) {
    let mut conn: Option<mysql_async::Conn> = None;
    let mut failures = 0u32;
    let mut ticker = tokio::time::interval(health.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result =
            match tokio::time::timeout(health.timeout, check_once(&mut conn, &topology, i, connect_timeout)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", health.timeout)),
            };
        let name = topology.node(i).name.clone();
        match result {
            Ok(()) => {
                failures = 0;
                if topology.set_healthy(i, true) {
                    tracing::info!(node = %name, "node is healthy again");
                }
            }
            Err(e) => {
                // A connection that failed once is not trusted again
                // (dropping it closes it).
                conn = None;
                failures += 1;
                if failures >= health.failures_before_down && topology.set_healthy(i, false) {
                    tracing::warn!(node = %name, error = %e, "node is down; removed from rotation");
                }
            }
        }
    }
}
