//! Periodic health checks: a node that stops answering leaves the read rotation
//! and comes back when it answers again (a diverged follower stays out: see
//! [`Topology::set_diverged`]). One loop for both dialects; what differs is
//! the [`Probe`]: a PostgreSQL connection here, a MySQL one in [`mysql`].

pub mod mysql;

use crate::backend::ServerConn;
use crate::config::Health;
use crate::topology::Topology;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// One node's check, over a connection it keeps between checks.
pub(crate) trait Probe: Send + 'static {
    /// `SELECT 1` (connecting first when there is no connection).
    fn check<'a>(
        &'a mut self,
        topology: &'a Topology,
        node: usize,
        connect_timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
    /// Drop the connection: one that failed once is not trusted again.
    fn forget(&mut self);
}

/// Check every PostgreSQL node forever (until the task is aborted).
pub fn spawn(topology: Arc<Topology>, health: Health, connect_timeout: Duration) -> Vec<tokio::task::JoinHandle<()>> {
    spawn_with(topology, health, connect_timeout, || PgProbe(None))
}

/// Check every node of `topology` with a probe of its own, forever.
pub(crate) fn spawn_with<P: Probe>(
    topology: Arc<Topology>,
    health: Health,
    connect_timeout: Duration,
    probe: impl Fn() -> P,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..topology.nodes().len())
        .map(|i| {
            let topology = topology.clone();
            let health = health.clone();
            let probe = probe();
            tokio::spawn(async move { check_loop(probe, topology, i, health, connect_timeout).await })
        })
        .collect()
}

struct PgProbe(Option<ServerConn>);

impl Probe for PgProbe {
    fn check<'a>(
        &'a mut self,
        topology: &'a Topology,
        i: usize,
        connect_timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            if self.0.is_none() {
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
                self.0 = Some(c);
            }
            let c = self.0.as_mut().expect("just connected");
            c.simple_oob("SELECT 1").await.map_err(|e| e.to_string())
        })
    }

    fn forget(&mut self) {
        self.0 = None;
    }
}

async fn check_loop<P: Probe>(
    mut probe: P,
    topology: Arc<Topology>,
    i: usize,
    health: Health,
    connect_timeout: Duration,
) {
    let mut failures = 0u32;
    let mut ticker = tokio::time::interval(health.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = match tokio::time::timeout(health.timeout, probe.check(&topology, i, connect_timeout)).await {
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
                probe.forget();
                failures += 1;
                if failures >= health.failures_before_down && topology.set_healthy(i, false) {
                    tracing::warn!(node = %name, error = %e, "node is down; removed from rotation");
                }
            }
        }
    }
}
