//! One follower's applier for a MySQL/MariaDB cluster: replays the leader's
//! server-wide log (`_chorus.log`) on the follower in LSN order, each entry
//! in ONE follower transaction that also keeps a copy of the entry and
//! advances `_chorus.applied`, so a restart (of chorus or of the follower)
//! continues exactly after the last entry that committed there.
//!
//! Wake-ups: the leader-side sessions of this chorus call
//! [`MyReplication::notify`](super::supervisor::MyReplication::notify) after
//! each commit (in-process push); entries written by other chorus instances
//! sharing the leader are found by a poll every [`POLL_EVERY`]. While entries
//! keep coming the applier fetches again at once.
//!
//! Several chorus instances may front the same servers: on each follower one
//! applier at a time holds the server-wide named lock `chorus_apply` and
//! applies; the others only follow its progress (they read `_chorus.applied`
//! and publish it to their sessions) and take over when its connection ends.
//!
//! Connection problems (leader or follower down, restarting, a transient
//! server condition such as a deadlock or a shutdown) are retried with
//! backoff, resuming after the recorded applied LSN. A logged statement the
//! follower refuses is a *divergence*: the applier rolls back, records a
//! [`Divergence`] under [`SERVER_LOG`], takes the follower out of the read
//! rotation (for good, see [`Topology::set_diverged`]), logs one error and stops.
//!
//! Trimming of the follower's copy of the log happens here too (between
//! entries, see [`super::trim`]).

use super::SERVER_LOG;
use super::conn::{MyReplicationError, connect, query_error, quote_name};
use super::entry::{LogEntry, LoggedStatement};
use super::migrate::migrate;
use super::replay::{Failed, STATEMENT, Session, is_transient};
use super::trim::trim_sql;
use crate::config::Node;
use crate::replication::feed::{Backoff, trim_every};
use crate::replication::{Divergence, Failures, Lsn, ReplicationState};
use crate::topology::Topology;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// At most this many entries are fetched from the leader at once.
pub const BATCH: usize = 64;
const FETCH: &str = "SELECT lsn, committed_at, entry FROM _chorus.log WHERE lsn > ? ORDER BY lsn LIMIT 64";

/// How often an idle applier looks for entries nobody told it about
/// (written through another chorus instance).
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// The named lock (per follower server) the one applying applier holds.
const APPLY_LOCK: &str = "chorus_apply";

/// Everything one applier needs.
pub struct Applier {
    /// The follower's index in the topology.
    pub node: usize,
    pub follower: Node,
    pub leader: Node,
    pub topology: Arc<Topology>,
    pub state: Arc<ReplicationState>,
    /// Notified by the leader-side sessions after each commit.
    pub wake: Arc<Notify>,
    pub connect_timeout: Duration,
    pub retention: Duration,
    /// Set when chorus stops: return after the entry in hand.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
}

/// One row of the leader's `_chorus.log`.
struct Fetched {
    lsn: Lsn,
    committed_at: Value,
    raw: Vec<u8>,
}

/// Why a round of applying stopped early; the failing side's connection is
/// dropped (a follower transaction in progress rolls back with it).
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Leader(MyReplicationError),
    #[error(transparent)]
    Follower(MyReplicationError),
}

enum Progress {
    /// Nothing to apply right now (or another chorus applies).
    Idle,
    /// Applied something; look again at once.
    Applied,
    /// Diverged: the applier stops.
    Stop,
}

/// The follower connection and what the applier knows about its session.
struct Follower {
    conn: Conn,
    /// The last LSN committed on the follower, as this applier knows it.
    applied: Lsn,
    /// Its session as replayed statements left it.
    session: Session,
    /// Holds [`APPLY_LOCK`]; otherwise another chorus applies and we follow.
    owner: bool,
    /// Nothing applied on this connection yet (a DDL entry that fails now may
    /// be one that ran just before a crash: see [`Applier::apply_ddl`]).
    fresh: bool,
    last_trim: Instant,
}

impl Applier {
    /// Apply until aborted, or until the follower diverges.
    pub async fn run(self) {
        let mut backoff = Backoff::default();
        let mut failures = Failures::default();
        let mut leader: Option<Conn> = None;
        let mut follower: Option<Follower> = None;
        loop {
            if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(f) = follower.take() {
                    let _ = f.conn.disconnect().await;
                }
                return;
            }
            match self.step(&mut leader, &mut follower).await {
                Ok(Progress::Applied) => {
                    backoff.reset();
                    failures.reset();
                }
                Ok(Progress::Idle) => {
                    backoff.reset();
                    failures.reset();
                    let _ = tokio::time::timeout(POLL_EVERY, self.wake.notified()).await;
                }
                Ok(Progress::Stop) => {
                    if let Some(f) = follower.take() {
                        let _ = f.conn.disconnect().await;
                    }
                    if let Some(l) = leader.take() {
                        let _ = l.disconnect().await;
                    }
                    return;
                }
                Err(e) => {
                    // Dropping a connection closes it (mysql_async spawns the
                    // disconnect); the server rolls back what it had open.
                    match e {
                        StepError::Leader(_) => leader = None,
                        StepError::Follower(_) => follower = None,
                    }
                    let delay = backoff.next_delay();
                    let node = &self.follower.name;
                    if failures.record() {
                        tracing::warn!(node = %node, error = %e, retry_in = ?delay, "applier cannot proceed; retrying");
                    } else {
                        tracing::debug!(node = %node, error = %e, retry_in = ?delay, "applier still cannot proceed");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn step(&self, leader: &mut Option<Conn>, follower: &mut Option<Follower>) -> Result<Progress, StepError> {
        if follower.is_none() {
            *follower = Some(self.connect_follower().await.map_err(StepError::Follower)?);
        }
        let f = follower.as_mut().expect("connected");
        let standby = !f.owner && !self.take_over(f).await.map_err(StepError::Follower)?;
        if leader.is_none() {
            *leader = Some(connect(&self.leader, None, self.connect_timeout).await.map_err(StepError::Leader)?);
        }
        let l = leader.as_mut().expect("connected");
        if standby {
            let lsn = leader_lsn(l, &self.leader).await.map_err(StepError::Leader)?;
            self.publish_leader_lsn(lsn);
            return Ok(Progress::Idle);
        }
        if f.last_trim.elapsed() >= trim_every(self.retention) {
            f.last_trim = Instant::now();
            self.trim_copy(f).await.map_err(StepError::Follower)?;
        }
        let mut entries = fetch(l, &self.leader, f.applied).await.map_err(StepError::Leader)?;
        if entries.is_empty() {
            let lsn = leader_lsn(l, &self.leader).await.map_err(StepError::Leader)?;
            self.publish_leader_lsn(lsn);
            if lsn < f.applied {
                let why = format!(
                    "the follower applied LSN {} but the leader's counter is at {lsn}: the leader's _chorus \
                     was reset or replaced",
                    f.applied
                );
                self.diverged(f.applied, 0, "", why);
                return Ok(Progress::Stop);
            }
            if lsn == f.applied {
                return Ok(Progress::Idle);
            }
            // Entries up to `lsn` committed before the counter was read (one
            // transaction writes both): a fetch now must see them.
            entries = fetch(l, &self.leader, f.applied).await.map_err(StepError::Leader)?;
        }
        if let Some(last) = entries.last() {
            self.publish_leader_lsn(last.lsn);
        }
        if entries.first().is_none_or(|e| e.lsn != f.applied + 1) {
            return Ok(self.missing(f.applied + 1));
        }
        for e in &entries {
            if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            if e.lsn != f.applied + 1 {
                return Ok(self.missing(f.applied + 1));
            }
            if let Progress::Stop = self.apply_entry(f, e).await? {
                return Ok(Progress::Stop);
            }
        }
        Ok(Progress::Applied)
    }

    /// Connect to the follower: its `_chorus` brought up to date (a follower
    /// that was down at startup is migrated here), the apply lock tried, the
    /// applied position read and published.
    async fn connect_follower(&self) -> Result<Follower, MyReplicationError> {
        migrate(&self.follower, self.connect_timeout).await?;
        let mut conn = connect(&self.follower, None, self.connect_timeout).await?;
        let owner = try_apply_lock(&mut conn, &self.follower).await?;
        let applied = read_applied(&mut conn, &self.follower).await?;
        self.state.set_applied(SERVER_LOG, self.node, applied);
        if owner {
            tracing::debug!(node = %self.follower.name, applied, "applier connected");
        } else {
            tracing::info!(node = %self.follower.name, applied,
                "another chorus applies to this follower; following its progress until it stops");
        }
        let now = Instant::now();
        Ok(Follower { conn, applied, session: Session::default(), owner, fresh: true, last_trim: now })
    }

    /// Not the owner: try to become it; meanwhile publish the owner's progress.
    async fn take_over(&self, f: &mut Follower) -> Result<bool, MyReplicationError> {
        f.owner = try_apply_lock(&mut f.conn, &self.follower).await?;
        f.applied = read_applied(&mut f.conn, &self.follower).await?;
        self.state.set_applied(SERVER_LOG, self.node, f.applied);
        if f.owner {
            tracing::info!(node = %self.follower.name, applied = f.applied, "applier took over the follower");
        }
        Ok(f.owner)
    }

    async fn apply_entry(&self, f: &mut Follower, e: &Fetched) -> Result<Progress, StepError> {
        let entry = match LogEntry::decode(&e.raw) {
            Ok(entry) => entry,
            Err(err) => {
                self.diverged(e.lsn, 0, "", format!("cannot decode the log entry: {err}"));
                return Ok(Progress::Stop);
            }
        };
        if entry.ddl { self.apply_ddl(f, e, &entry).await } else { self.apply_txn(f, e, &entry).await }
    }

    /// A transaction's statements, the log copy and the applied position, in
    /// one follower transaction: all of it commits, or none.
    async fn apply_txn(&self, f: &mut Follower, e: &Fetched, entry: &LogEntry) -> Result<Progress, StepError> {
        let node = &self.follower;
        f.conn
            .query_drop("START TRANSACTION")
            .await
            .map_err(query_error(node, "START TRANSACTION"))
            .map_err(StepError::Follower)?;
        for (seq, stmt) in entry.statements.iter().enumerate() {
            if let Err(failed) = f.session.run(&mut f.conn, stmt).await {
                return self.statement_failed(f, e.lsn, seq, stmt, failed, false).await;
            }
        }
        self.record(f, e).await.map_err(StepError::Follower)?;
        self.commit(f, e.lsn).await
    }

    /// A DDL entry: MySQL commits implicitly before and after DDL, so its
    /// statement runs in autocommit, and the log copy and applied position
    /// are recorded afterwards, in a transaction of their own.
    ///
    /// That leaves a crash window: if the follower (or chorus, or the
    /// connection) goes away after the DDL committed and before the record
    /// did, the applier resumes at the same LSN and runs the DDL again. A
    /// repeatable statement (`CREATE TABLE IF NOT EXISTS`, `DROP TABLE IF
    /// EXISTS`, MariaDB's `ADD COLUMN IF NOT EXISTS` ...) just succeeds; any
    /// other fails ("table exists", "duplicate column") and is reported as a
    /// divergence whose error says so (when it is the first entry after a
    /// reconnect, the only time it can be that): an operator who finds the
    /// follower's schema already as the statement leaves it sets
    /// `_chorus.applied.lsn` to the entry's LSN and restarts chorus.
    async fn apply_ddl(&self, f: &mut Follower, e: &Fetched, entry: &LogEntry) -> Result<Progress, StepError> {
        // Visible on the follower as soon as it ran.
        self.state.set_applying(SERVER_LOG, self.node, e.lsn);
        let node = &self.follower;
        // Did an earlier attempt start this very DDL (and stop before recording it)?
        let marker: Option<i64> = f
            .conn
            .query_first("SELECT ddl_lsn FROM _chorus.applied WHERE id = 1")
            .await
            .map_err(query_error(node, "reading the DDL marker"))
            .map_err(StepError::Follower)?;
        let again = marker == Some(e.lsn);
        f.conn
            .exec_drop("UPDATE _chorus.applied SET ddl_lsn = ? WHERE id = 1", (e.lsn,))
            .await
            .map_err(query_error(node, "setting the DDL marker"))
            .map_err(StepError::Follower)?;
        for (seq, stmt) in entry.statements.iter().enumerate() {
            if let Err(failed) = f.session.run(&mut f.conn, stmt).await {
                let done = match failed.step {
                    super::replay::STATEMENT => already_done(&failed.error),
                    // The earlier run dropped the very database it ran in.
                    super::replay::USE => is_unknown_database(&failed.error) && drops_own_database(stmt),
                    _ => false,
                };
                if again && done {
                    tracing::info!(node = %node.name, lsn = e.lsn, "DDL entry ran before the applier stopped; recording it");
                    continue;
                }
                return self.statement_failed(f, e.lsn, seq, stmt, failed, true).await;
            }
        }
        f.session.forget_db();
        let node = &self.follower;
        f.conn
            .query_drop("START TRANSACTION")
            .await
            .map_err(query_error(node, "START TRANSACTION"))
            .map_err(StepError::Follower)?;
        self.record(f, e).await.map_err(StepError::Follower)?;
        self.commit(f, e.lsn).await
    }

    /// In the open follower transaction: the copy of the entry and the new
    /// applied position, guarded by the old one (nothing else may have moved it).
    async fn record(&self, f: &mut Follower, e: &Fetched) -> Result<(), MyReplicationError> {
        let node = &self.follower;
        // The statements froze NOW(); applied_at is the real time.
        f.conn.query_drop("SET TIMESTAMP = DEFAULT").await.map_err(query_error(node, "resetting TIMESTAMP"))?;
        f.conn
            .exec_drop(
                "REPLACE INTO _chorus.log (lsn, committed_at, entry) VALUES (?, ?, ?)",
                (e.lsn, e.committed_at.clone(), e.raw.as_slice()),
            )
            .await
            .map_err(query_error(node, "copying the log entry"))?;
        f.conn
            .exec_drop(
                "UPDATE _chorus.applied SET lsn = ?, applied_at = NOW(6) WHERE id = 1 AND lsn = ?",
                (e.lsn, f.applied),
            )
            .await
            .map_err(query_error(node, "advancing _chorus.applied"))?;
        if f.conn.affected_rows() != 1 {
            let _ = f.conn.query_drop("ROLLBACK").await;
            return Err(MyReplicationError::PositionMoved { node: node.name.clone(), expected: f.applied });
        }
        Ok(())
    }

    async fn commit(&self, f: &mut Follower, lsn: Lsn) -> Result<Progress, StepError> {
        // Reads on this follower may see the entry from now on.
        self.state.set_applying(SERVER_LOG, self.node, lsn);
        f.conn
            .query_drop("COMMIT")
            .await
            .map_err(query_error(&self.follower, "COMMIT"))
            .map_err(StepError::Follower)?;
        f.applied = lsn;
        f.fresh = false;
        self.state.set_applied(SERVER_LOG, self.node, lsn);
        Ok(Progress::Applied)
    }

    /// A statement of entry `lsn` failed: a divergence if the server refused
    /// it for what it is (data, schema, settings), else a connection problem
    /// to retry after reconnecting.
    async fn statement_failed(
        &self,
        f: &mut Follower,
        lsn: Lsn,
        seq: usize,
        stmt: &LoggedStatement,
        failed: Failed,
        ddl: bool,
    ) -> Result<Progress, StepError> {
        let server = match &failed.error {
            mysql_async::Error::Server(s) if !is_transient(s.code) => s.clone(),
            _ => {
                let what = format!("LSN {lsn} statement {seq} ({})", failed.step);
                return Err(StepError::Follower(query_error(&self.follower, &what)(failed.error)));
            }
        };
        let _ = f.conn.query_drop("ROLLBACK").await;
        let mut error =
            if failed.step == STATEMENT { server.to_string() } else { format!("{}: {server}", failed.step) };
        if let Some(db) = &stmt.db {
            error.push_str(&format!(" (default database {})", quote_name(db)));
        }
        if ddl && f.fresh {
            error.push_str(&format!(
                "; this DDL entry is the first since the applier (re)connected: if the follower stopped right \
                 after running it last time, it ran already; if its schema already matches, set \
                 _chorus.applied.lsn to {lsn} there and restart chorus"
            ));
        }
        self.diverged(lsn, seq, &stmt.sql, error);
        Ok(Progress::Stop)
    }

    /// The leader's log has no entry for `lsn`, which the follower needs next.
    fn missing(&self, lsn: Lsn) -> Progress {
        let why = format!(
            "the leader's log holds no entry for LSN {lsn} (trimmed before this follower applied it, \
             or the LSN was taken without an entry)"
        );
        self.diverged(lsn, 0, "", why);
        Progress::Stop
    }

    /// Record the divergence (under [`SERVER_LOG`]: the state keys
    /// divergences by their `database`, so it holds the log's key, and the
    /// statement's default database is named in the error) and take the
    /// follower out of the read rotation.
    fn diverged(&self, lsn: Lsn, seq: usize, statement: &str, error: String) {
        crate::metrics::error("divergence");
        let d = Divergence {
            node: self.follower.name.clone(),
            database: SERVER_LOG.to_string(),
            lsn,
            seq: seq as i32,
            statement: statement.chars().take(2000).collect(),
            error,
        };
        tracing::error!(
            node = %d.node, lsn = d.lsn, seq = d.seq, statement = %d.statement, error = %d.error,
            "follower diverged: a logged statement failed there; it stops applying and leaves the read rotation"
        );
        self.topology.set_diverged(self.node);
        self.state.record_divergence(d);
    }

    /// The leader's counter only moves forward; several appliers publish it.
    fn publish_leader_lsn(&self, lsn: Lsn) {
        if self.state.leader_lsn(SERVER_LOG).is_none_or(|known| lsn > known) {
            self.state.set_leader_lsn(SERVER_LOG, lsn);
        }
    }

    /// Delete the follower's copies of entries it applied that are older
    /// than the retention.
    async fn trim_copy(&self, f: &mut Follower) -> Result<(), MyReplicationError> {
        let node = &self.follower;
        f.conn.query_drop("SET TIMESTAMP = DEFAULT").await.map_err(query_error(node, "resetting TIMESTAMP"))?;
        f.conn
            .exec_drop(trim_sql(self.retention), (f.applied,))
            .await
            .map_err(query_error(node, "trimming the log"))?;
        tracing::debug!(node = %node.name, upto = f.applied, deleted = f.conn.affected_rows(), "trimmed the log copy");
        Ok(())
    }
}

/// Take [`APPLY_LOCK`] on the follower if free (never waits).
async fn try_apply_lock(conn: &mut Conn, node: &Node) -> Result<bool, MyReplicationError> {
    let granted: Option<Option<i64>> = conn
        .query_first(format!("SELECT GET_LOCK('{APPLY_LOCK}', 0)"))
        .await
        .map_err(query_error(node, "taking the apply lock"))?;
    Ok(granted == Some(Some(1)))
}

async fn read_applied(conn: &mut Conn, node: &Node) -> Result<Lsn, MyReplicationError> {
    let lsn: Option<i64> = conn
        .query_first("SELECT lsn FROM _chorus.applied WHERE id = 1")
        .await
        .map_err(query_error(node, "reading _chorus.applied"))?;
    Ok(lsn.unwrap_or(0))
}

/// The leader's LSN counter: the last LSN committed there.
async fn leader_lsn(conn: &mut Conn, node: &Node) -> Result<Lsn, MyReplicationError> {
    let lsn: Option<i64> = conn
        .query_first("SELECT lsn FROM _chorus.lsn WHERE id = 1")
        .await
        .map_err(query_error(node, "reading _chorus.lsn"))?;
    Ok(lsn.unwrap_or(0))
}

/// The next [`BATCH`] entries after `after`, in order.
async fn fetch(conn: &mut Conn, node: &Node, after: Lsn) -> Result<Vec<Fetched>, MyReplicationError> {
    let rows: Vec<(i64, Value, Vec<u8>)> =
        conn.exec(FETCH, (after,)).await.map_err(query_error(node, "fetching the log"))?;
    Ok(rows.into_iter().map(|(lsn, committed_at, raw)| Fetched { lsn, committed_at, raw }).collect())
}

/// A DDL error that says its change is there already (the object exists, or
/// is gone): what re-running an interrupted DDL entry gives.
fn already_done(e: &mysql_async::Error) -> bool {
    // ER_DB_CREATE_EXISTS, ER_DB_DROP_EXISTS, ER_TABLE_EXISTS_ERROR,
    // ER_BAD_TABLE_ERROR, ER_DUP_FIELDNAME, ER_DUP_KEYNAME,
    // ER_CANT_DROP_FIELD_OR_KEY, ER_NO_SUCH_TABLE, ER_SP_ALREADY_EXISTS,
    // ER_SP_DOES_NOT_EXIST, ER_TRG_ALREADY_EXISTS, ER_TRG_DOES_NOT_EXIST,
    // ER_CANNOT_USER (CREATE/DROP USER).
    matches!(e, mysql_async::Error::Server(s) if matches!(
        s.code,
        1007 | 1008 | 1050 | 1051 | 1060 | 1061 | 1091 | 1146 | 1304 | 1305 | 1359 | 1360 | 1396
    ))
}

fn is_unknown_database(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1049) // ER_BAD_DB_ERROR
}

/// `DROP {DATABASE|SCHEMA} [IF EXISTS] name` where name is the statement's
/// own default database.
fn drops_own_database(stmt: &LoggedStatement) -> bool {
    use crate::sql::mysql::lex::{Token, tokens};
    let Some(db) = &stmt.db else { return false };
    let toks: Vec<Token<'_>> = tokens(&stmt.sql, true).into_iter().filter(|t| !matches!(t, Token::End(_))).collect();
    let word = |i: usize, w: &str| matches!(toks.get(i), Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
    if !(word(0, "DROP") && (word(1, "DATABASE") || word(1, "SCHEMA"))) {
        return false;
    }
    let at = if word(2, "IF") && word(3, "EXISTS") { 4 } else { 2 };
    let name = match toks.get(at) {
        Some(Token::Word(w)) => w.to_string(),
        Some(Token::Quoted(q)) if q.len() >= 2 => q[1..q.len() - 1].replace("``", "`"),
        _ => return false,
    };
    toks.len() == at + 1 && name == *db
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_of_the_statements_own_database_is_recognized() {
        let stmt = |sql: &str, db: Option<&str>| LoggedStatement {
            sql: sql.into(),
            raw: None,
            infile: None,
            db: db.map(String::from),
            ctx: Default::default(),
        };
        assert!(drops_own_database(&stmt("DROP DATABASE `sh``op`", Some("sh`op"))));
        assert!(drops_own_database(&stmt("drop schema if exists shop;", Some("shop"))));
        assert!(!drops_own_database(&stmt("DROP DATABASE other", Some("shop"))));
        assert!(!drops_own_database(&stmt("DROP DATABASE shop", None)));
        assert!(!drops_own_database(&stmt("DROP TABLE shop", Some("shop"))));
    }

    #[test]
    fn the_fetch_takes_a_batch() {
        assert_eq!(FETCH.rsplit(' ').next(), Some(BATCH.to_string().as_str()));
    }
}
