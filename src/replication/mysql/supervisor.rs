//! Starts and stops MySQL replication: `_chorus` on every node
//! ([`MyReplication::prepare`]), then one applier per follower and the
//! leader's log trimmer ([`MyReplication::start`]), all publishing to one
//! [`ReplicationState`] under [`SERVER_LOG`].
//!
//! Unlike PostgreSQL there is nothing per database to set up: the log is
//! server-wide, so everything starts once, at startup.

pub use super::conn::MyReplicationError;

use super::SERVER_LOG;
use super::apply::Applier;
use super::migrate::migrate;
use super::trim::trim_leader;
use crate::config::Config;
use crate::replication::ReplicationState;
use crate::topology::Topology;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// Replication of one MySQL/MariaDB cluster (leader + followers) by one chorus
/// process. Dropping it stops its tasks, as [`MyReplication::shutdown`] does.
pub struct MyReplication {
    config: Config,
    topology: Arc<Topology>,
    state: Arc<ReplicationState>,
    /// One per follower (in [`Topology::followers`] order): wakes its applier.
    wakes: Vec<Arc<Notify>>,
    tasks: parking_lot::Mutex<Vec<tokio::task::AbortHandle>>,
    /// The appliers, to wait for at [`MyReplication::stop`].
    appliers: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    started: AtomicBool,
    /// Set at stop: appliers finish the entry in hand and return.
    stopped: Arc<AtomicBool>,
}

impl MyReplication {
    /// `config`: the MySQL-only configuration (`Config::for_dialect(Dialect::Mysql)`),
    /// whose node indexes are `topology`'s. Nothing runs until [`MyReplication::start`].
    pub fn new(config: Config, topology: Arc<Topology>) -> MyReplication {
        let state = Arc::new(ReplicationState::new(topology.followers().to_vec()));
        let wakes = topology.followers().iter().map(|_| Arc::new(Notify::new())).collect();
        MyReplication {
            config,
            topology,
            state,
            wakes,
            tasks: parking_lot::Mutex::new(Vec::new()),
            appliers: parking_lot::Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Migrations on the leader (required: an error if it fails, since no
    /// session can log a write without `_chorus` there) and on every follower
    /// that answers (one that does not is migrated by its applier when it
    /// comes up, so it only warns here).
    pub async fn prepare(&self) -> Result<(), MyReplicationError> {
        let timeout = self.config.limits.connect_timeout;
        migrate(self.config.leader(), timeout).await?;
        let mut followers = tokio::task::JoinSet::new();
        for &i in self.topology.followers() {
            let node = self.topology.node(i).pool.node().clone();
            followers.spawn(async move {
                let result = migrate(&node, timeout).await;
                (node.name, result)
            });
        }
        while let Some(done) = followers.join_next().await {
            if let Ok((node, Err(e))) = done {
                tracing::warn!(node = %node, error = %e, "cannot prepare the follower yet; its applier will");
            }
        }
        Ok(())
    }

    /// Spawn one applier per follower and the leader's trimmer (needs a tokio
    /// runtime). Once only; nothing after [`MyReplication::shutdown`].
    pub fn start(&self) {
        if self.stopped.load(Ordering::Relaxed) || self.started.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut tasks = self.tasks.lock();
        let leader = self.config.leader().clone();
        let (retention, connect_timeout) = (self.config.replication.log_retention, self.config.limits.connect_timeout);
        for (&node, wake) in self.topology.followers().iter().zip(&self.wakes) {
            let applier = Applier {
                node,
                follower: self.topology.node(node).pool.node().clone(),
                leader: leader.clone(),
                topology: self.topology.clone(),
                state: self.state.clone(),
                wake: wake.clone(),
                connect_timeout,
                retention,
                stopping: self.stopped.clone(),
            };
            let handle = tokio::spawn(applier.run());
            tasks.push(handle.abort_handle());
            self.appliers.lock().push(handle);
        }
        let trimmer = trim_leader(leader, self.state.clone(), retention, connect_timeout);
        tasks.push(tokio::spawn(trimmer).abort_handle());
        tracing::info!(followers = self.wakes.len(), log = SERVER_LOG, "replicating the MySQL cluster");
    }

    /// Progress (applied LSNs, leader LSN, divergences), all under [`SERVER_LOG`].
    pub fn state(&self) -> Arc<ReplicationState> {
        self.state.clone()
    }

    /// A session committed a log entry: wake every applier now. An applier
    /// busy applying keeps the wake-up for when it next looks (nothing is lost).
    pub fn notify(&self) {
        for wake in &self.wakes {
            wake.notify_one();
        }
    }

    /// Stop gracefully: each applier finishes the entry it is applying (a
    /// DDL entry cannot roll back: stopped between its DDL and its record,
    /// the next start would run the DDL again) and returns; what is still
    /// running after `grace` is aborted.
    pub async fn stop(&self, grace: std::time::Duration) {
        self.stopped.store(true, Ordering::Relaxed);
        for wake in &self.wakes {
            wake.notify_one();
        }
        let appliers: Vec<_> = self.appliers.lock().drain(..).collect();
        let _ = tokio::time::timeout(grace, futures_join_all(appliers)).await;
        self.shutdown();
    }

    /// Stop every task at once. A follower transaction in progress rolls back
    /// with its connection; the next start resumes after the recorded position.
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

impl Drop for MyReplication {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn futures_join_all(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
