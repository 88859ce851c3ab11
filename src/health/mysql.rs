//! Health checks of MySQL/MariaDB nodes: the [`Probe`] for
//! [`crate::health`]'s loop, a mysql_async connection to each node's admin
//! database.

use super::Probe;
use crate::config::Health;
use crate::replication::mysql::conn;
use crate::topology::Topology;
use mysql_async::prelude::Queryable;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Check every node of `topology` (a MySQL-only one) forever, until the
/// tasks are aborted.
pub fn spawn(topology: Arc<Topology>, health: Health, connect_timeout: Duration) -> Vec<tokio::task::JoinHandle<()>> {
    super::spawn_with(topology, health, connect_timeout, || MyProbe(None))
}

struct MyProbe(Option<mysql_async::Conn>);

impl Probe for MyProbe {
    fn check<'a>(
        &'a mut self,
        topology: &'a Topology,
        i: usize,
        connect_timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            if self.0.is_none() {
                let node = topology.node(i).pool.node();
                let c = conn::connect(node, Some(&node.admin_database), connect_timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                self.0 = Some(c);
            }
            let c = self.0.as_mut().expect("just connected");
            c.query_drop("SELECT 1").await.map_err(|e| conn::my_text(&e))
        })
    }

    fn forget(&mut self) {
        // Dropping it closes it.
        self.0 = None;
    }
}
