//! Starts and stops replication: at startup every database on the leader gets
//! its bookkeeping schema, its feed and one applier per follower; a database
//! first seen later (a client connects to it, or creates it through chorus)
//! gets them through [`Replication::ensure`]; one dropped through chorus
//! loses them ([`Replication::retire`], [`Replication::dropped`]).

use super::apply::Applier;
use super::feed::{self, Feed};
use super::migrate::{copy_on_follower, drop_on_follower, end_own_connections, ensure_database};
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
    /// Each database's feed task (its appliers stop with it).
    feeds: parking_lot::Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Databases being dropped: [`Replication::ensure`] leaves them alone.
    retiring: DashMap<String, ()>,
    /// Followers the last setup of a database could not prepare, and why.
    unprepared: DashMap<String, Vec<(String, String)>>,
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
            feeds: parking_lot::Mutex::new(HashMap::new()),
            retiring: DashMap::new(),
            unprepared: DashMap::new(),
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
        let skip = |s: &Self| {
            s.ready.contains_key(db)
                || !s.config.replication.covers(db)
                || s.stopped.load(Ordering::Relaxed)
                || s.retiring.contains_key(db)
        };
        if skip(self) {
            return Ok(());
        }
        let setup = self.setup_lock(db);
        let mut last_failure = setup.lock().await;
        if skip(self) {
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
            Ok(unprepared) => {
                *last_failure = None;
                let unprepared = unprepared.into_iter().map(|(n, e)| (n, e.to_string())).collect();
                self.unprepared.insert(db.to_string(), unprepared);
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
        let mut feeds = self.feeds.lock();
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
            feed::run(leader, name.clone(), feed, state.clone(), retention, timeout).await;
            // The database is gone (or replaced by another of its name): a
            // later one starts afresh.
            ready.remove(&name);
            appliers.shutdown().await;
            state.forget(&name);
        });
        feeds.insert(db.to_string(), handle);
        self.ready.insert(db.to_string(), ());
        tracing::info!(db, followers = self.topology.followers().len(), "replicating the database");
    }

    /// Stop every feed and applier (chorus is shutting down).
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        for (_, f) in self.feeds.lock().drain() {
            f.abort();
        }
    }

    /// The lock a database's setup runs under.
    fn setup_lock(&self, db: &str) -> Arc<tokio::sync::Mutex<LastFailure>> {
        self.setups.lock().entry(db.to_string()).or_default().clone()
    }

    /// The followers the last setup of `db` could not prepare, with why.
    pub fn unprepared_followers(&self, db: &str) -> Vec<(String, String)> {
        self.unprepared.get(db).map_or_else(Vec::new, |u| u.clone())
    }

    /// `db` is about to be dropped or copied: stop replicating it, and keep
    /// it stopped (its connections to every node closed) until
    /// [`Replication::dropped`] or [`Replication::reinstate`]. Other chorus
    /// processes' connections of their own to it on the leader are ended too.
    pub async fn retire(&self, db: &str) {
        self.retiring.insert(db.to_string(), ());
        let setup = self.setup_lock(db);
        let _setup = setup.lock().await; // a setup in progress finishes first
        let feed = self.feeds.lock().remove(db);
        if let Some(feed) = feed {
            feed.abort();
            let _ = feed.await;
        }
        self.ready.remove(db);
        let leader = self.config.leader();
        match end_own_connections(leader, db, self.config.limits.connect_timeout).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(db, ended = n, "ended other chorus connections to the database"),
            Err(e) => tracing::warn!(db, error = %e, "cannot end other chorus connections to the database"),
        }
    }

    /// The leader dropped `db` (after [`Replication::retire`]): drop every
    /// follower's copy and forget its progress, so a database created later
    /// under that name starts afresh. Returns the followers whose copy
    /// could not be dropped, and why.
    pub async fn dropped(&self, db: &str) -> Vec<(String, String)> {
        let timeout = self.config.limits.connect_timeout;
        let mut failed = Vec::new();
        for &node in self.topology.followers() {
            let follower = self.topology.node(node).pool.node().clone();
            if let Err(e) = drop_on_follower(&follower, db, timeout).await {
                tracing::warn!(node = %follower.name, db, error = %e, "cannot drop the follower's copy of a dropped database");
                failed.push((follower.name.clone(), e.to_string()));
            }
        }
        self.state.forget(db);
        self.unprepared.remove(db);
        self.setups.lock().remove(db);
        self.retiring.remove(db);
        tracing::info!(db, "database dropped; its replication stopped");
        failed
    }

    /// The leader created `db` as a copy of `source` (retired meanwhile):
    /// copy every follower's `source` the same way. Returns the followers
    /// whose copy failed, and why.
    pub async fn copied(&self, db: &str, source: &str) -> Vec<(String, String)> {
        let timeout = self.config.limits.connect_timeout;
        let mut failed = Vec::new();
        for &node in self.topology.followers() {
            let follower = self.topology.node(node).pool.node().clone();
            if let Err(e) = copy_on_follower(&follower, db, source, timeout).await {
                tracing::warn!(node = %follower.name, db, source, error = %e, "cannot copy the database on the follower");
                failed.push((follower.name.clone(), e.to_string()));
            }
        }
        failed
    }

    /// The leader did not drop `db` after all: replicate it again.
    pub async fn reinstate(&self, db: &str) {
        self.retiring.remove(db);
        if let Err(e) = self.ensure(db).await
            && !e.is_missing_database()
        {
            tracing::warn!(db, error = %e, "cannot resume replicating the database");
        }
    }
}
