//! Replication progress every part of chorus can watch: per database, each
//! follower's applied LSN and the leader's last known LSN, plus divergences.
//!
//! Appliers publish here; sessions read and wait (acknowledgements for
//! semi-sync/sync commits, read-your-writes), the trimmer takes the minimum,
//! tests and status output read divergences.

use super::Lsn;
use crate::consistency::FollowerView;
use crate::topology::Topology;
use dashmap::DashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Leader LSNs remembered with the moment they were first known, for the
/// followers' lag in time.
const COMMIT_TIMES: usize = 4096;

/// Why a follower stopped applying a database: the statement that failed
/// there (and only there) and what the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    pub node: String,
    pub database: String,
    pub lsn: Lsn,
    pub seq: i32,
    pub statement: String,
    pub error: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "follower {} diverged in database {} at LSN {} (seq {}): {:?} failed: {}",
            self.node, self.database, self.lsn, self.seq, self.statement, self.error
        )
    }
}

/// Progress of one database.
pub struct DbProgress {
    /// Node indexes of the followers (slot order).
    nodes: Vec<usize>,
    /// The leader's last committed LSN, as last read (None: not read yet).
    /// Only LSNs whose WAL is flushed: appliers fetch up to it.
    leader: watch::Sender<Option<Lsn>>,
    /// The highest LSN this chorus saw committed on the leader (its own
    /// sessions' commits, which the feed may not have read yet).
    committed: AtomicI64,
    /// Recent leader LSNs and when each was first known, oldest first.
    commit_times: parking_lot::Mutex<VecDeque<(Lsn, Instant)>>,
    /// Per follower (in [`ReplicationState::followers`] order): the applied LSN
    /// as last read or written by its applier (None: not known yet).
    applied: Vec<watch::Sender<Option<Lsn>>>,
    /// Per follower: the last LSN of the transaction its applier is
    /// committing (or last committed): an upper bound of what a read there sees.
    applying: Vec<AtomicI64>,
    /// Bumped on every change of `applied`: one thing for waiters to watch.
    changed: watch::Sender<u64>,
    divergences: parking_lot::Mutex<Vec<Divergence>>,
    /// This chorus's feed is the only one listening on the leader: its
    /// sessions' commits need not NOTIFY (migrations/postgres/0006).
    alone: std::sync::atomic::AtomicBool,
    /// Wakes this chorus's feed: a session committed an LSN whose flush it
    /// did not confirm, so the feed must look at the leader itself.
    feed_wake: tokio::sync::Notify,
}

impl DbProgress {
    fn new(nodes: Vec<usize>) -> DbProgress {
        let n = nodes.len();
        DbProgress {
            nodes,
            leader: watch::channel(None).0,
            committed: AtomicI64::new(0),
            commit_times: parking_lot::Mutex::new(VecDeque::with_capacity(COMMIT_TIMES)),
            applied: (0..n).map(|_| watch::channel(None).0).collect(),
            applying: (0..n).map(|_| AtomicI64::new(0)).collect(),
            changed: watch::channel(0).0,
            divergences: parking_lot::Mutex::new(Vec::new()),
            alone: std::sync::atomic::AtomicBool::new(false),
            feed_wake: tokio::sync::Notify::new(),
        }
    }

    fn count_at_least(&self, lsn: Lsn) -> usize {
        self.applied.iter().filter(|a| a.borrow().is_some_and(|v| v >= lsn)).count()
    }

    /// Is this chorus's feed the only one listening (see `alone`)?
    pub fn alone(&self) -> bool {
        self.alone.load(Ordering::Relaxed)
    }

    pub fn set_alone(&self, alone: bool) {
        self.alone.store(alone, Ordering::Relaxed);
    }

    /// Have the feed read the leader's LSN now (see `feed_wake`).
    pub fn wake_feed(&self) {
        self.feed_wake.notify_one();
    }

    /// Resolves when [`Self::wake_feed`] was called.
    pub async fn feed_woken(&self) {
        self.feed_wake.notified().await
    }

    /// Wakes on every change of a follower's applied LSN.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The highest LSN known committed on the leader.
    pub fn leader_committed(&self) -> Lsn {
        self.leader.borrow().unwrap_or(0).max(self.committed.load(Ordering::Relaxed))
    }

    /// One of this chorus's sessions committed `lsn` on the leader.
    pub fn note_committed(&self, lsn: Lsn) {
        if self.committed.fetch_max(lsn, Ordering::Relaxed) < lsn {
            self.record_commit_time(lsn);
        }
    }

    /// One of this chorus's sessions committed `lsn` and its flush step
    /// confirmed the WAL flush past that commit. The LSN row lock orders
    /// commits, so every lower LSN is committed and flushed too: the
    /// appliers may fetch up to it now, without waiting for the feed's
    /// notification and its own look at the flush position.
    pub fn note_flushed(&self, lsn: Lsn) {
        self.advance_leader(lsn);
    }

    /// Move the flushed leader LSN forward (never back: the feed's read may
    /// have started before a session published a later one).
    fn advance_leader(&self, lsn: Lsn) {
        self.record_commit_time(lsn);
        self.leader.send_if_modified(|v| {
            let newer = v.is_none_or(|c| c < lsn);
            if newer {
                *v = Some(lsn);
            }
            newer
        });
    }

    /// An upper bound of the state a read on `node` saw, if it ended now:
    /// what the follower's applier may have committed, or, for the leader
    /// (any node that is not a follower here), its last known commit.
    pub fn upper_bound(&self, node: usize) -> Lsn {
        match self.nodes.iter().position(|&n| n == node) {
            Some(slot) => {
                let applied = self.applied[slot].borrow().unwrap_or(0);
                applied.max(self.applying[slot].load(Ordering::Relaxed))
            }
            None => self.leader_committed(),
        }
    }

    /// Every follower as routing sees it. `with_lag`: also work out the lag
    /// in time (a look-up in the recent commits).
    pub fn views(&self, topology: &Topology, with_lag: bool) -> Vec<FollowerView> {
        let leader = self.leader_committed();
        let now = Instant::now();
        self.nodes
            .iter()
            .enumerate()
            .map(|(slot, &node)| {
                let applied = *self.applied[slot].borrow();
                let a = applied.unwrap_or(0);
                let lag = if with_lag && a < leader { self.age_of_first_after(a, now) } else { Duration::ZERO };
                FollowerView {
                    node,
                    readable: topology.node(node).is_readable(),
                    applied,
                    lag_txns: leader.saturating_sub(a).max(0) as u64,
                    lag,
                }
            })
            .collect()
    }

    /// How long ago the first LSN after `applied` was known committed.
    fn age_of_first_after(&self, applied: Lsn, now: Instant) -> Duration {
        let times = self.commit_times.lock();
        let i = times.partition_point(|&(l, _)| l <= applied);
        // The first remembered LSN after `applied` (when that is the oldest
        // remembered, the one really missing may be older still: at least
        // that old). None remembered: only just learned of.
        let at = times.get(i).map_or(now, |&(_, t)| t);
        now.saturating_duration_since(at)
    }

    fn record_commit_time(&self, lsn: Lsn) {
        let mut times = self.commit_times.lock();
        if times.back().is_some_and(|&(l, _)| l >= lsn) {
            return;
        }
        if times.len() == COMMIT_TIMES {
            times.pop_front();
        }
        times.push_back((lsn, Instant::now()));
    }
}

/// Replication progress of every database, shared through [`crate::context::Context`].
pub struct ReplicationState {
    /// Node indexes of the followers, in configuration order.
    followers: Vec<usize>,
    dbs: DashMap<String, Arc<DbProgress>>,
}

impl ReplicationState {
    pub fn new(followers: Vec<usize>) -> ReplicationState {
        ReplicationState { followers, dbs: DashMap::new() }
    }

    /// The databases progress is known for.
    pub fn databases(&self) -> Vec<String> {
        let mut dbs: Vec<String> = self.dbs.iter().map(|e| e.key().clone()).collect();
        dbs.sort();
        dbs
    }

    /// Forget `db` (dropped): a database created later under its name starts
    /// from LSN 0.
    pub fn forget(&self, db: &str) {
        self.dbs.remove(db);
    }

    /// The followers' node indexes this state tracks.
    pub fn followers(&self) -> &[usize] {
        &self.followers
    }

    fn db(&self, db: &str) -> Arc<DbProgress> {
        if let Some(p) = self.dbs.get(db) {
            return p.clone();
        }
        self.dbs.entry(db.to_string()).or_insert_with(|| Arc::new(DbProgress::new(self.followers.clone()))).clone()
    }

    /// The progress of one database, to keep and read without look-ups.
    pub fn progress(&self, db: &str) -> Arc<DbProgress> {
        self.db(db)
    }

    fn slot(&self, node: usize) -> usize {
        self.followers.iter().position(|&f| f == node).unwrap_or_else(|| panic!("node {node} is not a follower"))
    }

    /// Record a follower's applied LSN (it only moves forward).
    pub fn set_applied(&self, db: &str, node: usize, lsn: Lsn) {
        let p = self.db(db);
        let moved = p.applied[self.slot(node)].send_if_modified(|v| {
            let newer = v.is_none_or(|old| lsn > old);
            if newer {
                *v = Some(lsn);
            }
            newer
        });
        if moved {
            p.changed.send_modify(|n| *n += 1);
        }
    }

    /// A follower's applier is about to commit everything up to `lsn`.
    pub fn set_applying(&self, db: &str, node: usize, lsn: Lsn) {
        self.db(db).applying[self.slot(node)].fetch_max(lsn, Ordering::Relaxed);
    }

    /// A follower's applied LSN, as last known.
    pub fn applied(&self, db: &str, node: usize) -> Option<Lsn> {
        *self.db(db).applied[self.slot(node)].borrow()
    }

    /// Watch a follower's applied LSN.
    pub fn subscribe_applied(&self, db: &str, node: usize) -> watch::Receiver<Option<Lsn>> {
        self.db(db).applied[self.slot(node)].subscribe()
    }

    /// The lowest applied LSN over every follower, or None while any is
    /// unknown (a follower chorus has not reached yet may be far behind).
    pub fn min_applied(&self, db: &str) -> Option<Lsn> {
        let p = self.db(db);
        p.applied.iter().map(|a| *a.borrow()).try_fold(Lsn::MAX, |m, v| v.map(|v| m.min(v)))
    }

    /// Record the leader's last committed (and flushed) LSN; an older one
    /// than already known is ignored.
    pub fn set_leader_lsn(&self, db: &str, lsn: Lsn) {
        self.db(db).advance_leader(lsn);
    }

    pub fn leader_lsn(&self, db: &str) -> Option<Lsn> {
        *self.db(db).leader.borrow()
    }

    /// Watch the leader's last committed LSN.
    pub fn subscribe_leader(&self, db: &str) -> watch::Receiver<Option<Lsn>> {
        self.db(db).leader.subscribe()
    }

    /// Record (and keep, for status and tests) a follower's divergence.
    pub fn record_divergence(&self, d: Divergence) {
        let p = self.db(&d.database);
        p.divergences.lock().push(d);
    }

    /// Divergences found in `db` since chorus started.
    pub fn divergences(&self, db: &str) -> Vec<Divergence> {
        self.db(db).divergences.lock().clone()
    }

    /// Wait until at least `needed` followers have applied `lsn` in `db`, for
    /// at most `timeout`. Returns how many had when the wait ended; `Err` when
    /// the time ran out first. `needed` 0 returns at once.
    pub async fn wait_applied(
        &self,
        db: &str,
        needed: usize,
        lsn: Lsn,
        timeout: Duration,
    ) -> Result<usize, tokio::time::error::Elapsed> {
        let p = self.db(db);
        let mut changed = p.changed.subscribe();
        tokio::time::timeout(timeout, async move {
            loop {
                changed.borrow_and_update();
                let n = p.count_at_least(lsn);
                if n >= needed {
                    return n;
                }
                if changed.changed().await.is_err() {
                    // The sender lives in `p`, which we hold: cannot happen.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_applied_counts_followers_that_reached_the_lsn() {
        let state = Arc::new(ReplicationState::new(vec![1, 2, 3]));
        let short = Duration::from_millis(20);
        assert_eq!(state.wait_applied("db", 0, 5, short).await.unwrap(), 0);
        assert!(state.wait_applied("db", 1, 5, short).await.is_err(), "nobody applied anything yet");
        assert_eq!(state.min_applied("db"), None);

        state.set_applied("db", 1, 7);
        state.set_applied("db", 2, 4);
        assert_eq!(state.wait_applied("db", 1, 5, short).await.unwrap(), 1);
        assert!(state.wait_applied("db", 2, 5, short).await.is_err());
        assert_eq!(state.min_applied("db"), None, "follower 3 still unknown");
        state.set_applied("db", 3, 9);
        assert_eq!(state.min_applied("db"), Some(4));

        // A waiter wakes when a follower catches up later.
        let waiter = {
            let state = state.clone();
            tokio::spawn(async move { state.wait_applied("db", 3, 6, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        state.set_applied("db", 2, 6);
        assert_eq!(waiter.await.unwrap().unwrap(), 3);

        // Applied positions never go back; databases are independent.
        state.set_applied("db", 1, 3);
        assert_eq!(state.applied("db", 1), Some(7));
        assert_eq!(state.applied("other", 1), None);
    }

    #[test]
    fn the_flushed_leader_lsn_only_moves_forward_and_wakes_appliers() {
        let state = ReplicationState::new(vec![1]);
        let p = state.progress("db");
        let mut watch = state.subscribe_leader("db");
        p.note_flushed(7);
        assert!(watch.has_changed().unwrap());
        watch.mark_unchanged();
        // The feed's read that started before the session's commit.
        state.set_leader_lsn("db", 5);
        assert_eq!(state.leader_lsn("db"), Some(7));
        assert!(!watch.has_changed().unwrap(), "no wake-up for an older LSN");
        state.set_leader_lsn("db", 9);
        assert_eq!(state.leader_lsn("db"), Some(9));
    }

    #[test]
    fn lag_in_time_is_the_age_of_the_first_commit_a_follower_lacks() {
        let state = ReplicationState::new(vec![1]);
        let p = state.progress("db");
        state.set_leader_lsn("db", 3);
        std::thread::sleep(Duration::from_millis(30));
        state.set_leader_lsn("db", 5);
        p.note_committed(6);
        let now = Instant::now();
        let (from_0, from_3) = (p.age_of_first_after(0, now), p.age_of_first_after(3, now));
        assert!(
            from_0 >= from_3 + Duration::from_millis(30),
            "LSN 3 is missing longer than LSN 5: {from_0:?} {from_3:?}"
        );
        assert_eq!(p.age_of_first_after(6, now), Duration::ZERO, "nothing missing");
        assert_eq!(p.leader_committed(), 6);
        state.set_applied("db", 1, 5);
        let v = p.views(
            &crate::topology::Topology::new(
                &crate::config::Config::from_toml_str(
                    "[[nodes]]\nname = \"l\"\nrole = \"leader\"\nhost = \"h\"\nport = 1\nuser = \"u\"\n\
             [[nodes]]\nname = \"f\"\nrole = \"follower\"\nhost = \"h\"\nport = 2\nuser = \"u\"\n\
             [[users]]\nname = \"app\"\nauth = \"trust\"\n",
                )
                .unwrap(),
            ),
            true,
        );
        assert_eq!((v[0].applied, v[0].lag_txns), (Some(5), 1));
        // A read there saw at most what the applier was committing.
        state.set_applying("db", 1, 7);
        assert_eq!(p.upper_bound(1), 7);
        assert_eq!(p.upper_bound(0), 6, "the leader: its last known commit");
    }

    #[test]
    fn leader_lsn_and_divergences_are_per_database() {
        let state = ReplicationState::new(vec![1]);
        state.set_leader_lsn("a", 3);
        assert_eq!((state.leader_lsn("a"), state.leader_lsn("b")), (Some(3), None));
        let d = Divergence {
            node: "f".into(),
            database: "a".into(),
            lsn: 3,
            seq: 1,
            statement: "INSERT".into(),
            error: "ERROR 23505: dup".into(),
        };
        state.record_divergence(d.clone());
        assert_eq!(state.divergences("a"), [d]);
        assert!(state.divergences("b").is_empty());
    }
}
