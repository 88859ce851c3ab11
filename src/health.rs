//! Periodic health checks: a node that stops answering leaves the read rotation
//! and comes back when it answers again.

pub mod mysql;

use crate::backend::ServerConn;
use crate::config::Health;
use crate::topology::Topology;
use std::sync::Arc;
use std::time::Duration;

/// Check every node forever (until the task is aborted).
pub fn spawn(topology: Arc<Topology>, health: Health, connect_timeout: Duration) -> Vec<tokio::task::JoinHandle<()>> {
    (0..topology.nodes().len())
        .map(|i| {
            let topology = topology.clone();
            let health = health.clone();
            tokio::spawn(async move { check_loop(topology, i, health, connect_timeout).await })
        })
        .collect()
}

async fn check_once(
    conn: &mut Option<ServerConn>,
    topology: &Topology,
    i: usize,
    connect_timeout: Duration,
) -> Result<(), String> {
    if conn.is_none() {
        let node = topology.node(i).pool.node().clone();
        let c = ServerConn::connect(
            i,
            &node,
            &node.admin_database,
            &[("application_name", "chorus-health")],
            connect_timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("just connected");
    c.simple_oob("SELECT 1").await.map_err(|e| e.to_string())
}

async fn check_loop(topology: Arc<Topology>, i: usize, health: Health, connect_timeout: Duration) {
    let mut conn: Option<ServerConn> = None;
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
                conn = None;
                failures += 1;
                if failures >= health.failures_before_down && topology.set_healthy(i, false) {
                    tracing::warn!(node = %name, error = %e, "node is down; removed from rotation");
                }
            }
        }
    }
}
