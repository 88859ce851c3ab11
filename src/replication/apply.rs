//! One follower's applier for one database: replays the leader's log there,
//! in log order, one follower transaction per LSN or per group of small LSNs
//! (see [`txn`]), resuming after the follower's recorded position.
//!
//! Connection problems (follower down or restarting, leader unreachable) are
//! retried with backoff. A logged statement that fails on the follower is a
//! divergence: the applier stops, the follower leaves the read rotation (for
//! good, see [`crate::topology::Topology::set_diverged`]) and one error line
//! names the node, database, LSN, seq, statement and the server's error.

use super::feed::{self, Backoff, Feed, LoggedTxn, trim_every};
use super::migrate::{DatabaseSpec, database_spec, ensure_on_follower};
use super::state::{Divergence, ReplicationState};
use super::txn::{self, Outcome, POSITION_MOVED, Unit};
use super::{Failures, Lsn, ReplicationError};
use crate::backend::{BackendError, ServerConn};
use crate::config::Node;
use crate::protocol::ServerError;
use crate::topology::Topology;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this many LSNs are fetched from the leader at once.
pub const BATCH: Lsn = 200;

/// Everything one applier needs.
pub struct Applier {
    pub db: String,
    /// The follower's index in the topology.
    pub node: usize,
    pub follower: Node,
    pub leader: Node,
    pub topology: Arc<Topology>,
    pub state: Arc<ReplicationState>,
    pub feed: Arc<Feed>,
    pub connect_timeout: Duration,
    pub retention: Duration,
    /// Whether the follower must flush each apply transaction before it counts
    /// as applied (`semi-sync`/`sync` acknowledge on it). With `async` it need
    /// not: a follower that crashes loses a suffix of applied transactions
    /// together with the matching `_chorus.applied`, and applies them again.
    pub durable: bool,
}

/// Why a round of applying stopped early.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// The follower connection is unusable (dropped, then reconnected).
    #[error(transparent)]
    Follower(#[from] BackendError),
    #[error(transparent)]
    Prepare(#[from] ReplicationError),
    /// The follower refused a bookkeeping step (not a logged statement).
    #[error("LSN {lsn}: {what} failed on the follower: {error}")]
    Bookkeeping { lsn: Lsn, what: &'static str, error: ServerError },
}

enum Progress {
    /// Nothing to apply right now.
    Idle,
    /// Applied something; look again at once.
    Applied,
    /// Diverged: the applier stops.
    Stop,
}

/// The follower's connection and what the applier knows about it.
struct Follower {
    conn: ServerConn,
    applied: Lsn,
}

impl Applier {
    /// Apply until aborted, or until the follower diverges.
    pub async fn run(self) {
        let mut backoff = Backoff::default();
        let mut failures = Failures::default();
        let mut follower: Option<Follower> = None;
        let mut spec: Option<DatabaseSpec> = None;
        let mut leader_lsn = self.state.subscribe_leader(&self.db);
        let mut last_trim = Instant::now();
        loop {
            let result = self.step(&mut follower, &mut spec, &mut last_trim).await;
            match result {
                Ok(Progress::Applied) => {
                    backoff.reset();
                    failures.reset();
                }
                Ok(Progress::Idle) => {
                    backoff.reset();
                    failures.reset();
                    let _ = tokio::time::timeout(feed::POLL_EVERY, leader_lsn.changed()).await;
                }
                Ok(Progress::Stop) => {
                    if let Some(f) = follower.take() {
                        f.conn.terminate().await;
                    }
                    return;
                }
                Err(StepError::Prepare(e @ ReplicationError::Stale { .. })) => {
                    self.stale(&e.to_string());
                    return;
                }
                Err(StepError::Prepare(ReplicationError::Replaced { .. })) => {
                    // The feed sees it too, and replication of the new
                    // database starts over.
                    tracing::info!(node = %self.follower.name, db = %self.db,
                        "the leader's database was replaced; this applier stops");
                    return;
                }
                Err(e) => {
                    if matches!(e, StepError::Follower(_) | StepError::Prepare(_) | StepError::Bookkeeping { .. })
                        && let Some(f) = follower.take()
                    {
                        tokio::spawn(f.conn.terminate());
                    }
                    let delay = backoff.next_delay();
                    let (node, db) = (&self.follower.name, &self.db);
                    let warn = failures.record();
                    if warn && matches!(e, StepError::Bookkeeping { .. }) {
                        tracing::error!(node = %node, db = %db, error = %e, retry_in = ?delay, "applier failed");
                    } else if warn {
                        tracing::warn!(node = %node, db = %db, error = %e, retry_in = ?delay, "applier cannot proceed; retrying");
                    } else {
                        tracing::debug!(node = %node, db = %db, error = %e, retry_in = ?delay, "applier still cannot proceed");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn connect(&self, spec: &mut Option<DatabaseSpec>) -> Result<Follower, StepError> {
        // Read again at every connect: the leader's database may have been
        // dropped and created again under its name meanwhile (by another
        // chorus), and this applier's progress is about the old one.
        let now = database_spec(&self.leader, &self.db, self.connect_timeout).await?;
        if spec.as_ref().is_some_and(|s| s.origin != now.origin) {
            return Err(ReplicationError::Replaced { database: self.db.clone() }.into());
        }
        let spec = spec.insert(now);
        ensure_on_follower(&self.follower, &self.db, spec, self.connect_timeout).await?;
        // Startup values are what the header's RESET ALL returns to: UTF-8 as
        // on the session's leader connections, and writable even if the
        // server makes transactions read-only by default.
        let options = if self.durable {
            "-c default_transaction_read_only=off"
        } else {
            "-c default_transaction_read_only=off -c synchronous_commit=off"
        };
        let params = [("client_encoding", "UTF8"), ("application_name", "chorus-apply"), ("options", options)];
        let mut conn = ServerConn::connect(self.node, &self.follower, &self.db, &params, self.connect_timeout).await?;
        let applied = match txn::query_lsn(&mut conn, "SELECT lsn FROM _chorus.applied").await? {
            Ok(Some(lsn)) => lsn,
            Ok(None) => 0,
            Err(error) => return Err(StepError::Bookkeeping { lsn: 0, what: "reading _chorus.applied", error }),
        };
        self.state.set_applied(&self.db, self.node, applied);
        tracing::debug!(node = %self.follower.name, db = %self.db, applied, "applier connected");
        Ok(Follower { conn, applied })
    }

    async fn step(
        &self,
        follower: &mut Option<Follower>,
        spec: &mut Option<DatabaseSpec>,
        last_trim: &mut Instant,
    ) -> Result<Progress, StepError> {
        if follower.as_mut().is_none_or(|f| f.conn.is_dead()) {
            *follower = Some(self.connect(spec).await?);
        }
        let f = follower.as_mut().expect("connected");
        if last_trim.elapsed() >= trim_every(self.retention) {
            *last_trim = Instant::now();
            self.trim(f).await?;
        }
        let Some(leader_lsn) = self.state.leader_lsn(&self.db) else { return Ok(Progress::Idle) };
        if leader_lsn <= f.applied {
            return Ok(Progress::Idle);
        }
        let Some(client) = self.feed.client() else { return Ok(Progress::Idle) };
        let upto = leader_lsn.min(f.applied + BATCH);
        let txns = match feed::fetch(&client, &self.leader, &self.db, f.applied, upto).await {
            Ok(t) => t,
            Err(e) => {
                // The leader's problem: the feed reconnects; keep the follower connection.
                tracing::debug!(node = %self.leader.name, db = %self.db, error = %e, "cannot fetch the log");
                return Ok(Progress::Idle);
            }
        };
        // Every committed LSN has at least its header row: a missing entry was
        // trimmed before this follower's copy needed it (a follower added, or
        // its copy recreated, after the leader had trimmed it), or written
        // before chorus logged the database. The follower cannot be built
        // from the log; applying the rest would leave it silently different.
        if let Some(t) = txns.iter().find(|t| t.rows.is_empty()) {
            self.diverged(
                t,
                0,
                "",
                "the leader's log no longer holds this LSN (trimmed before this follower's copy needed it): the \
                 copy cannot be built from the log; make it a copy of the leader's database (e.g. pg_dump and \
                 restore, with _chorus.applied set to the leader's _chorus.lsn) and restart chorus",
            );
            return Ok(Progress::Stop);
        }
        let mut rest = &txns[..];
        while !rest.is_empty() {
            let n = group_len(rest);
            let (group, tail) = rest.split_at(n);
            rest = tail;
            let outcome = if n == 1 { self.apply_one(f, &group[0]).await? } else { self.apply_group(f, group).await? };
            match outcome {
                Some(Progress::Stop) => return Ok(Progress::Stop),
                Some(_) => break,
                None => {}
            }
        }
        Ok(Progress::Applied)
    }

    /// Apply several transactions in one follower transaction. If that
    /// fails, apply them one by one instead, which says which LSN and
    /// statement failed (or gets past a transient error).
    async fn apply_group(&self, f: &mut Follower, group: &[LoggedTxn]) -> Result<Option<Progress>, StepError> {
        let last = group.last().map_or(f.applied, |t| t.lsn);
        if let Ok(plan) = txn::plan(group) {
            // Reads on this follower may see these from now on (read consistency).
            self.state.set_applying(&self.db, self.node, last);
            match txn::execute(&mut f.conn, &plan).await? {
                Outcome::Committed => {
                    f.applied = last;
                    self.state.set_applied(&self.db, self.node, last);
                    return Ok(None);
                }
                Outcome::Failed { unit, error } => {
                    tracing::debug!(node = %self.follower.name, db = %self.db, first = group[0].lsn, last,
                        ?unit, error = %error, "a group of transactions failed; applying them one by one");
                    if f.conn.status != b'I' && !f.conn.broken {
                        f.conn.simple_oob("ROLLBACK").await?;
                    }
                    if f.conn.broken {
                        return Err(BackendError::Server(error).into());
                    }
                }
            }
        }
        for t in group {
            if let Some(p) = self.apply_one(f, t).await? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Apply one transaction. `None`: applied, go on; `Some(Idle)`: the
    /// position moved under us, re-read it; `Some(Stop)`: diverged.
    async fn apply_one(&self, f: &mut Follower, t: &LoggedTxn) -> Result<Option<Progress>, StepError> {
        let plan = match txn::plan(std::slice::from_ref(t)) {
            Ok(p) => p,
            Err(e) => {
                let seq = e.seq;
                self.diverged(t, seq, "", &e.to_string());
                return Ok(Some(Progress::Stop));
            }
        };
        self.state.set_applying(&self.db, self.node, t.lsn);
        let outcome = txn::execute(&mut f.conn, &plan).await?;
        let (unit, error) = match outcome {
            Outcome::Committed => {
                f.applied = t.lsn;
                self.state.set_applied(&self.db, self.node, t.lsn);
                return Ok(None);
            }
            Outcome::Failed { unit, error } => (unit, error),
        };
        if f.conn.status != b'I' && !f.conn.broken {
            f.conn.simple_oob("ROLLBACK").await?;
        }
        let lsn = t.lsn;
        match unit {
            Unit::Row { row, .. } if !is_transient(&error) => {
                let row = &t.rows[row];
                self.diverged(t, row.seq, row.sql.as_deref().unwrap_or(""), &error.to_string());
                Ok(Some(Progress::Stop))
            }
            Unit::Guard if error.code == POSITION_MOVED => {
                // Someone else (another chorus) applied it: re-read where the follower is.
                tracing::info!(node = %self.follower.name, db = %self.db, lsn, "follower already past this LSN; re-reading its position");
                match txn::query_lsn(&mut f.conn, "SELECT lsn FROM _chorus.applied").await? {
                    Ok(Some(applied)) => {
                        f.applied = applied;
                        self.state.set_applied(&self.db, self.node, applied);
                        Ok(Some(Progress::Idle))
                    }
                    Ok(None) | Err(_) => Err(StepError::Bookkeeping { lsn, what: "re-reading _chorus.applied", error }),
                }
            }
            Unit::Row { .. } => Err(BackendError::Server(error).into()),
            Unit::Begin | Unit::Guard => Err(StepError::Bookkeeping { lsn, what: "starting the transaction", error }),
            Unit::Reset => Err(StepError::Bookkeeping { lsn, what: "resetting the session", error }),
            Unit::LogCopy => Err(StepError::Bookkeeping { lsn, what: "copying the log rows", error }),
            Unit::Commit => Err(StepError::Bookkeeping { lsn, what: "COMMIT", error }),
        }
    }

    fn diverged(&self, t: &LoggedTxn, seq: i32, statement: &str, error: &str) {
        crate::metrics::error("divergence");
        let d = Divergence {
            node: self.follower.name.clone(),
            database: self.db.clone(),
            lsn: t.lsn,
            seq,
            statement: statement.chars().take(2000).collect(),
            error: error.to_string(),
        };
        tracing::error!(
            node = %d.node, db = %d.database, lsn = d.lsn, seq = d.seq, statement = %d.statement, error = %d.error,
            "follower diverged: a logged statement failed there; it stops applying this database and leaves the read rotation"
        );
        self.topology.set_diverged(self.node);
        self.state.record_divergence(d);
    }

    /// The follower's database is a leftover of an earlier one (see
    /// [`ReplicationError::Stale`]): as good as diverged.
    fn stale(&self, why: &str) {
        crate::metrics::error("divergence");
        tracing::error!(node = %self.follower.name, db = %self.db, error = why,
            "follower not applied to: it leaves the read rotation");
        self.topology.set_diverged(self.node);
        self.state.record_divergence(Divergence {
            node: self.follower.name.clone(),
            database: self.db.clone(),
            lsn: 0,
            seq: 0,
            statement: String::new(),
            error: why.to_string(),
        });
    }

    /// Delete the follower's copies of log rows every follower has applied
    /// and that are older than the retention (the leader's rule).
    async fn trim(&self, f: &mut Follower) -> Result<(), StepError> {
        let Some(min) = self.state.min_applied(&self.db) else { return Ok(()) };
        let sql = format!(
            "DELETE FROM _chorus.log WHERE lsn <= {min} AND committed_at < pg_catalog.now() - interval '{} seconds'",
            self.retention.as_secs_f64()
        );
        match f.conn.simple_oob(&sql).await {
            Ok(()) => Ok(()),
            Err(BackendError::Server(error)) => {
                Err(StepError::Bookkeeping { lsn: min, what: "trimming the log", error })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// How many of `txns` (at least one) to apply in the next follower
/// transaction: consecutive groupable ones, up to the group limits.
fn group_len(txns: &[LoggedTxn]) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for t in txns.iter().take(txn::GROUP_LSNS) {
        bytes += txn::size(t);
        if !txn::groupable(t) || (n > 0 && bytes > txn::GROUP_BYTES) {
            break;
        }
        n += 1;
    }
    n.max(1)
}

/// Errors that say nothing about the data: the server is shutting down, out
/// of resources, a lock or serialization conflict, a cancel. Retried.
fn is_transient(e: &ServerError) -> bool {
    e.severity == "FATAL"
        || e.severity == "PANIC"
        || ["08", "40", "53", "57", "58"].iter().any(|class| e.code.starts_with(class))
        || e.code == "55P03"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_diverge_and_server_trouble_is_retried() {
        let err = |severity: &str, code: &str| ServerError {
            severity: severity.into(),
            code: code.into(),
            message: String::new(),
        };
        assert!(!is_transient(&err("ERROR", "42P07")), "relation exists: the follower differs");
        assert!(!is_transient(&err("ERROR", "23505")));
        assert!(is_transient(&err("FATAL", "57P01")), "admin shutdown");
        assert!(is_transient(&err("ERROR", "40P01")), "deadlock");
        assert!(is_transient(&err("ERROR", "57014")), "canceled");
        assert!(is_transient(&err("ERROR", "53100")), "disk full");
    }
}
