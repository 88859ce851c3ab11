//! Starts and stops replication: at startup every database on the leader gets
//! its bookkeeping schema, its feed and one applier per follower; a database
//! first seen later (a client connects to it) gets them through
//! [`Replication::ensure`].

use super::apply::Applier;
use super::feed::{self, Feed};
use super::migrate::ensure_database;
use super::state::ReplicationState;
use super::{Failures, ReplicationError, connect, query_error};
use crate::config::Config;
use crate::topology::Topology;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// After a failed setup, callers get the failure again for this long instead
/// of every new session paying for another attempt.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The last failed setup of a database: when, and why.
type LastFailure = Option<(Instant, String)>;

/// Replication of every database of one chorus process.
pub struct Replication {
    config: Config,
    topology: Arc<Topology>,
    state: Arc<ReplicationState>,
    /// Databases whose feed and appliers run.
    ready: Arc<DashMap<String, ()>>,
    /// One lock per database, so concurrent first callers share one setup.
    setups: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<LastFailure>>>>,
    tasks: parking_lot::Mutex<Vec<tokio::task::AbortHandle>>,
    stopped: AtomicBool,
}

impl Replication {
    /// Nothing runs until [`Replication::start`] or [`Replication::ensure`].
    pub fn new(config: Config, topology: Arc<Topology>) -> Replication {
        let state = Arc::new(ReplicationState::new(topology.followers().to_vec()));
        Replication {
            config,
            topology,
            state,
            ready: Arc::new(DashMap::new()),
            setups: parking_lot::Mutex::new(HashMap::new()),
            tasks: parking_lot::Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        }
    }

    /// Progress of every database (applied LSNs to wait on).
    pub fn state(&self) -> &Arc<ReplicationState> {
        &self.state
    }

    /// In the background: list the leader's databases and [`ensure`](Self::ensure)
    /// each replicated one, retrying (with backoff) the listing while the
    /// leader is unreachable and each database whose setup failed.
    pub fn start(self: &Arc<Self>) {
        let this = self.clone();
        let handle = tokio::spawn(async move {
            let mut backoff = feed::Backoff::default();
            let mut failures = Failures::default();
            let mut pending: Option<Vec<String>> = None;
            loop {
                let dbs = match pending.take() {
                    Some(dbs) => dbs,
                    None => match this.leader_databases().await {
                        Ok(dbs) => dbs.into_iter().filter(|d| this.config.replication.covers(d)).collect(),
                        Err(e) => {
                            let delay = backoff.next_delay();
                            if failures.record() {
                                tracing::warn!(error = %e, retry_in = ?delay, "cannot list the leader's databases");
                            }
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                    },
                };
                let mut failed = Vec::new();
                for db in dbs {
                    match this.ensure(&db).await {
                        Ok(()) => {}
                        Err(e) if e.is_missing_database() => {} // dropped meanwhile
                        Err(e) => {
                            if failures.record() {
                                tracing::warn!(db, error = %e, "cannot start replicating the database yet");
                            }
                            failed.push(db);
                        }
                    }
                }
                if failed.is_empty() {
                    return;
                }
                pending = Some(failed);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        });
        self.tasks.lock().push(handle.abort_handle());
    }

    async fn leader_databases(&self) -> Result<Vec<String>, ReplicationError> {
        let leader = self.config.leader();
        let admin = &leader.admin_database;
        let client = connect(leader, admin, "chorus-replication", self.config.limits.connect_timeout).await?;
        let rows = client
            .query(
                "SELECT datname::text FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
                &[],
            )
            .await
            .map_err(query_error(leader, admin, "listing databases"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Make sure `db` is replicated: its schema exists on every reachable node
    /// and its feed and appliers run. Cheap once done; concurrent callers share
    /// one setup; a database the configuration does not replicate is a no-op.
    /// Fails when the leader cannot be reached (a failure is remembered for
    /// 2 s, so a burst of sessions does not retry it each).
    pub async fn ensure(&self, db: &str) -> Result<(), ReplicationError> {
        if self.ready.contains_key(db) || !self.config.replication.covers(db) || self.stopped.load(Ordering::Relaxed) {
            return Ok(());
        }
        let setup = self.setups.lock().entry(db.to_string()).or_default().clone();
        let mut last_failure = setup.lock().await;
        if self.ready.contains_key(db) {
            return Ok(());
        }
        if let Some((at, why)) = &*last_failure
            && at.elapsed() < RETRY_AFTER
        {
            return Err(ReplicationError::Recent(why.clone()));
        }
        let leader = &self.topology.node(self.topology.leader());
        if !leader.is_healthy() {
            return Err(ReplicationError::LeaderDown(leader.name.to_string()));
        }
        match ensure_database(&self.config, db).await {
            Ok(()) => {
                *last_failure = None;
                self.start_database(db);
                Ok(())
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.to_string()));
                Err(e)
            }
        }
    }

    /// Spawn `db`'s feed and appliers. They stop when chorus shuts down, or
    /// when the database disappears from the leader.
    fn start_database(&self, db: &str) {
        let mut tasks = self.tasks.lock();
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let feed = Arc::new(Feed::default());
        let mut appliers = tokio::task::JoinSet::new();
        let leader = self.config.leader().clone();
        for &node in self.topology.followers() {
            let applier = Applier {
                db: db.to_string(),
                node,
                follower: self.topology.node(node).pool.node().clone(),
                leader: leader.clone(),
                topology: self.topology.clone(),
                state: self.state.clone(),
                feed: feed.clone(),
                connect_timeout: self.config.limits.connect_timeout,
                retention: self.config.replication.log_retention,
                durable: self.config.replication.ack != crate::config::AckMode::Async,
            };
            appliers.spawn(applier.run());
        }
        let (state, ready, name) = (self.state.clone(), self.ready.clone(), db.to_string());
        let retention = self.config.replication.log_retention;
        let timeout = self.config.limits.connect_timeout;
        let handle = tokio::spawn(async move {
            feed::run(leader, name.clone(), feed, state, retention, timeout).await;
            ready.remove(&name);
            drop(appliers); // aborts them
        });
        tasks.push(handle.abort_handle());
        self.ready.insert(db.to_string(), ());
        tracing::info!(db, followers = self.topology.followers().len(), "replicating the database");
    }

    /// Stop every feed and applier (chorus is shutting down).
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}
