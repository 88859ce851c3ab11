//! The MySQL twin of [`crate::workload`]: a seeded, randomized write workload
//! through chorus's MySQL frontend (mysql_async, text and binary protocol).
//! Many concurrent sessions mix autocommit and explicit transactions,
//! commits and rollbacks, savepoints, statements that fail on purpose
//! (duplicate keys, NULL into NOT NULL) in the middle of transactions,
//! conflicting updates of a few hot rows (and the deadlocks and lock waits
//! they cause), upserts, REPLACE, INSERT ... SELECT, deletes, AUTO_INCREMENT
//! and LAST_INSERT_ID(), the values chorus pins or generates (NOW(6),
//! CURRENT_TIMESTAMP, UNIX_TIMESTAMP(), RAND(), UUID(), UUID_SHORT(),
//! `DEFAULT CURRENT_TIMESTAMP(6)` and `ON UPDATE CURRENT_TIMESTAMP` columns),
//! prepared statements with parameters of many types, session settings that
//! change what statements mean (time_zone, sql_mode, character set,
//! div_precision_increment, auto_increment_increment, a client's own
//! TIMESTAMP), DDL, multi-statement queries, and statements chorus must
//! refuse (checked to be refused with 1235 and to change nothing).
//!
//! It checks what a client can see through chorus as it goes (reads see the
//! session's own writes; balances always add up; LAST_INSERT_ID() is the
//! session's), fails at once on any error it did not provoke or expect
//! (with the statement and the error), and leaves the comparison of the
//! followers with the leader to the caller.
//!
//! The seed is printed; `CHORUS_WORKLOAD_SEED=<seed>` replays a run's
//! choices (the interleaving of sessions is the scheduler's, so a failure may
//! need a few runs).

use crate::workload::{Rng, WorkloadOptions};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, Params, Row, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What happened, for the test's assertions and report.
#[derive(Debug, Default, Clone)]
pub struct MyWorkloadStats {
    /// Units of work that committed (explicitly or in autocommit mode).
    pub committed: u64,
    /// Units that ended in a ROLLBACK on purpose.
    pub rolled_back: u64,
    /// Statements that failed as intended (duplicate keys, NULL into NOT NULL).
    pub expected_failures: u64,
    /// Statements chorus refused (1235), as intended.
    pub refused: u64,
    /// Units ended by a deadlock (1213): the server rolled the transaction back.
    pub deadlocks: u64,
    /// Statements that gave up waiting for a lock (1205).
    pub lock_waits: u64,
    /// Sessions that lost their connection in a read on a follower that was
    /// killed (only with [`MysqlWorkload::follower_faults`]) and reconnected.
    pub reconnects: u64,
}

#[derive(Default)]
struct Counters {
    committed: AtomicU64,
    rolled_back: AtomicU64,
    expected_failures: AtomicU64,
    refused: AtomicU64,
    deadlocks: AtomicU64,
    lock_waits: AtomicU64,
    reconnects: AtomicU64,
    units: AtomicU64,
}

/// A run of the workload; [`MysqlWorkload::units_done`] tells a test
/// running it in the background how far it got.
pub struct MysqlWorkload {
    pub opts: WorkloadOptions,
    /// A follower may be killed during the run: a session whose read on it
    /// loses its connection (chorus ends that client connection, see the
    /// README) reconnects and goes on. Nothing else is tolerated.
    pub follower_faults: bool,
    counters: Counters,
}

const ACCOUNTS: i64 = 40;
const BALANCE: i64 = 1000;
const KEYS: u64 = 20;

/// The workload's tables, created through chorus one statement at a time.
fn schema() -> Vec<String> {
    let mut s: Vec<String> = [
        "CREATE TABLE w_accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL, note VARCHAR(200), \
         touched DATETIME(6), updated TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))",
        "CREATE TABLE w_events (id BIGINT PRIMARY KEY, session INT NOT NULL, kind VARCHAR(20) NOT NULL, \
         amount DECIMAL(12,2), at DATETIME(6), ts TIMESTAMP(6) NULL, day DATE, payload TEXT, \
         created DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6), KEY (session))",
        "CREATE TABLE w_kv (k VARCHAR(20) PRIMARY KEY, v INT NOT NULL, updated DATETIME(6), \
         changed TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP)",
        "CREATE TABLE w_seq (id INT AUTO_INCREMENT PRIMARY KEY, session INT NOT NULL, note VARCHAR(100) NOT NULL, \
         parent BIGINT, KEY (session))",
        "CREATE TABLE w_rand (id BIGINT AUTO_INCREMENT PRIMARY KEY, session INT NOT NULL, u CHAR(36), \
         us BIGINT UNSIGNED, r DOUBLE, at DATETIME(6), unix BIGINT, note VARCHAR(100), KEY (session))",
        "CREATE TABLE w_types (id BIGINT PRIMARY KEY, session INT NOT NULL, i8 TINYINT, u64 BIGINT UNSIGNED, \
         dm DECIMAL(22,6), f FLOAT, g DOUBLE, s VARCHAR(255), t TEXT, b MEDIUMBLOB, dt DATETIME(6), dt0 DATETIME, \
         d DATE, tm TIME(6), y YEAR, e ENUM('a','b','c'), j JSON, ts TIMESTAMP(6) NULL, \
         created TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))",
        "CREATE TABLE w_refuse (id INT PRIMARY KEY, v INT NOT NULL, s VARCHAR(100), at DATETIME(6))",
        // Triggers, stored functions and volatile defaults run again on the
        // followers: deterministic ones replay, the others are refused.
        "CREATE FUNCTION w_twice(x BIGINT) RETURNS BIGINT DETERMINISTIC RETURN x * 2",
        "CREATE TABLE w_seq_audit (seq_id INT PRIMARY KEY, session INT NOT NULL, at DATETIME(6), twice BIGINT)",
        "CREATE TRIGGER w_seq_audit_ins AFTER INSERT ON w_seq FOR EACH ROW \
         REPLACE INTO w_seq_audit VALUES (NEW.id, NEW.session, NOW(6), w_twice(NEW.id))",
        "CREATE TABLE w_docs (id BIGINT PRIMARY KEY, session INT NOT NULL, u CHAR(36) DEFAULT (UUID()), \
         made DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6))",
        "CREATE TABLE w_counter (id INT PRIMARY KEY, n BIGINT NOT NULL)",
        "INSERT INTO w_counter VALUES (1, 0)",
        "CREATE FUNCTION w_bump(by_n INT) RETURNS BIGINT MODIFIES SQL DATA BEGIN \
         UPDATE w_counter SET n = n + by_n WHERE id = 1; RETURN by_n; END",
        "CREATE TABLE w_refuse_trg (id INT PRIMARY KEY, token CHAR(36))",
        "CREATE TRIGGER w_refuse_trg_ins BEFORE INSERT ON w_refuse_trg FOR EACH ROW SET NEW.token = UUID()",
        "CREATE PROCEDURE w_refuse_proc() BEGIN UPDATE w_refuse SET s = UUID(); END",
        "CREATE PROCEDURE w_add_event(i BIGINT, s INT) BEGIN \
         INSERT INTO w_events (id, session, kind, at) VALUES (i, s, 'proc', NOW(6)); \
         UPDATE w_counter SET n = n + 1 WHERE id = 1; END",
        "INSERT INTO w_refuse VALUES (1, 10, 'one', '2020-01-01 00:00:00'), (2, 20, 'two', NULL), (3, 30, NULL, NULL)",
        // No primary key: no order chorus could give an unordered LIMIT.
        "CREATE TABLE w_heap (a INT, b INT)",
        "INSERT INTO w_heap VALUES (1, 1), (2, 2)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows: Vec<String> = (1..=ACCOUNTS).map(|i| format!("({i}, {BALANCE}, 'init')")).collect();
    s.push(format!("INSERT INTO w_accounts (id, balance, note) VALUES {}", rows.join(", ")));
    s
}

/// w_refuse as the schema leaves it: refused statements must not change it.
const REFUSE_ROWS: &str = "1|10|one|2020-01-01 00:00:00.000000;2|20|two|NULL;3|30|NULL|NULL";

/// Statements chorus refuses (1235) before they run, each with a word of the reason.
const REFUSED: &[(&str, &str)] = &[
    ("UPDATE w_heap SET b = b + 1 LIMIT 1", "ORDER BY"),
    ("DELETE FROM w_heap LIMIT 1", "ORDER BY"),
    ("INSERT INTO w_refuse (id, v) SELECT id + 100, v FROM w_refuse LIMIT 2", "ORDER BY"),
    ("UPDATE w_refuse SET at = SYSDATE() WHERE id = 1", "SYSDATE"),
    ("INSERT INTO w_refuse (id, v, s) SELECT id + 200, v, UUID() FROM w_refuse", "UUID"),
    ("UPDATE w_refuse SET s = UUID()", "UUID"),
    ("UPDATE w_refuse SET s = UUID_SHORT() WHERE id = 2", "UUID_SHORT"),
    ("UPDATE w_refuse SET v = CONNECTION_ID() WHERE id = 3", "CONNECTION_ID"),
    ("INSERT INTO w_refuse (id, v, s) VALUES (300, 1, USER())", "USER"),
    ("INSERT INTO w_refuse (id, v, s) VALUES (301, 1, CURRENT_USER)", "CURRENT_USER"),
    ("UPDATE w_refuse SET s = VERSION() WHERE id = 1", "VERSION"),
    ("UPDATE w_refuse SET v = FOUND_ROWS() WHERE id = 1", "FOUND_ROWS"),
    ("DELETE FROM w_refuse WHERE v = ROW_COUNT()", "ROW_COUNT"),
    ("UPDATE w_refuse SET s = @@hostname WHERE id = 1", "@@hostname"),
    ("INSERT INTO w_refuse (id, v) VALUES (302, RELEASE_LOCK('w'))", "RELEASE_LOCK"),
    ("INSERT INTO w_refuse (id, v) VALUES (303, 1); DELETE FROM w_refuse WHERE id = LAST_INSERT_ID()", "one at a time"),
    ("UPDATE w_refuse SET v = 0 WHERE id = 1; SELECT 1", "one at a time"),
    ("LOAD DATA INFILE '/nonexistent' INTO TABLE w_refuse", "LOAD DATA"),
    ("CALL w_refuse_proc()", "w_refuse_proc"),
    ("XA START 'w'", "XA"),
    ("PREPARE w_s FROM 'DELETE FROM w_refuse'", "PREPARE"),
    // Numbered in the order its SELECT finds the rows.
    ("CREATE TABLE w_ctas (n INT AUTO_INCREMENT PRIMARY KEY) SELECT id, v FROM w_refuse", "ORDER BY"),
    // A write could use rows of a transaction that then rolls back.
    ("SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED", "READ UNCOMMITTED"),
    ("SET @@session.tx_isolation = 'READ-UNCOMMITTED'", "READ UNCOMMITTED"),
    ("INSERT INTO w_refuse_trg (id) VALUES (1)", "trigger w_refuse_trg_ins"),
    ("INSERT INTO w_docs (id, session) SELECT 1, 1", "column u"),
];

/// Strings that are hard to quote: quotes, backslashes, SQL in a string,
/// wildcards, non-ASCII, control characters, trailing spaces, empty.
const STRINGS: &[&str] = &[
    "plain",
    "it's",
    "two '' quotes",
    "back\\slash",
    "ends with a backslash\\",
    "\\'",
    "double \" quote",
    "percent % under _",
    "ünïcödé 中文 🎉",
    "new\nline\ttab\r",
    "trailing space  ",
    "",
    "'; DROP TABLE w_kv; -- ",
    "semi;colon? /* not a comment */ # nor this",
    "a\\nb\\0c",
];

/// Session settings a unit switches to (and what they mean for how this
/// workload writes its literals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mode {
    /// NO_BACKSLASH_ESCAPES: a backslash in a literal is just a backslash.
    no_backslash: bool,
    /// STRICT_*: bad values fail instead of being adjusted with a warning.
    strict: bool,
}

impl Default for Mode {
    fn default() -> Self {
        Mode { no_backslash: false, strict: true }
    }
}

/// sql_mode values the settings unit picks from, with what they imply.
const SQL_MODES: &[(&str, Mode)] = &[
    ("DEFAULT", Mode { no_backslash: false, strict: true }),
    ("''", Mode { no_backslash: false, strict: false }),
    ("'STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES'", Mode { no_backslash: true, strict: true }),
    ("'NO_BACKSLASH_ESCAPES'", Mode { no_backslash: true, strict: false }),
    ("'PIPES_AS_CONCAT,STRICT_ALL_TABLES,ANSI_QUOTES'", Mode { no_backslash: false, strict: true }),
    ("'TRADITIONAL'", Mode { no_backslash: false, strict: true }),
];

const TIME_ZONES: &[&str] = &["'+00:00'", "'+05:30'", "'-08:00'", "'SYSTEM'", "'+13:00'"];

/// A statement that failed, with its text.
#[derive(Debug)]
struct Failure {
    sql: String,
    error: mysql_async::Error,
    /// A plain read outside a transaction: it may have run on a follower.
    read: bool,
}

type R<T = ()> = Result<T, Failure>;

fn code_of(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// A deadlock: 1213, or 1467 (InnoDB's answer when the lock it deadlocked
/// on was a table's AUTO-INC lock; the transaction is rolled back all the same).
fn is_deadlock(f: &Failure) -> bool {
    matches!(code_of(&f.error), Some(1213 | 1467))
}

fn is_lock_wait(f: &Failure) -> bool {
    code_of(&f.error) == Some(1205)
}

/// The connection to chorus ended (or chorus said it could not reach a server).
fn is_connection_loss(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(s) => s.code == 1429,
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        _ => false,
    }
}

impl MysqlWorkload {
    pub fn new(opts: WorkloadOptions, follower_faults: bool) -> MysqlWorkload {
        MysqlWorkload { opts, follower_faults, counters: Counters::default() }
    }

    /// Units of work finished so far, by all sessions.
    pub fn units_done(&self) -> u64 {
        self.counters.units.load(Ordering::Relaxed)
    }

    /// Units of work the run does in all.
    pub fn units_total(&self) -> u64 {
        (self.opts.sessions * self.opts.transactions) as u64
    }

    pub fn stats(&self) -> MyWorkloadStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MyWorkloadStats {
            committed: l(&c.committed),
            rolled_back: l(&c.rolled_back),
            expected_failures: l(&c.expected_failures),
            refused: l(&c.refused),
            deadlocks: l(&c.deadlocks),
            lock_waits: l(&c.lock_waits),
            reconnects: l(&c.reconnects),
        }
    }

    /// Create the tables through chorus (`conn` names the database), run the
    /// sessions to the end, check what must hold through chorus afterwards.
    pub async fn run(self: &Arc<Self>, conn: Opts) -> MyWorkloadStats {
        let o = &self.opts;
        eprintln!(
            "mysql workload seed {} ({} sessions x {} transactions): CHORUS_WORKLOAD_SEED={} replays it",
            o.seed, o.sessions, o.transactions, o.seed
        );
        let mut setup = Conn::new(conn.clone()).await.unwrap_or_else(|e| panic!("connect through chorus: {e}"));
        for sql in schema() {
            setup.query_drop(&sql).await.unwrap_or_else(|e| panic!("workload schema: {sql}: {e}"));
        }
        let mut tasks = Vec::new();
        for s in 0..o.sessions {
            let this = self.clone();
            let conn = conn.clone();
            let seed = o.seed ^ ((s as u64 + 1) * 0x1000_0000_0001);
            tasks.push(tokio::spawn(async move {
                let mut w = Worker::connect(this.clone(), conn, s as i64, seed).await;
                for n in 0..this.opts.transactions {
                    w.one(n).await;
                    this.counters.units.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            if let Err(e) = t.await {
                // The session's panic message (printed above) names the statement.
                std::panic::resume_unwind(e.into_panic());
            }
        }
        // Transfers move money, nothing creates or destroys it.
        let total: Option<i64> =
            setup.query_first("SELECT CAST(SUM(balance) AS SIGNED) FROM w_accounts").await.unwrap();
        assert_eq!(total, Some(ACCOUNTS * BALANCE), "seed {}: the balances do not add up", o.seed);
        let rows: Vec<Row> = setup.query("SELECT * FROM w_refuse ORDER BY id").await.unwrap();
        assert_eq!(render(&rows), REFUSE_ROWS, "seed {}: a refused statement changed w_refuse", o.seed);
        let _ = setup.disconnect().await;
        let stats = self.stats();
        eprintln!("mysql workload seed {}: {stats:?}", o.seed);
        stats
    }
}

/// Rows as `a|b|c;...` (NULL for NULL), for comparisons in messages.
fn render(rows: &[Row]) -> String {
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.as_ref(i) {
                    Some(Value::NULL) | None => "NULL".to_string(),
                    Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(v) => v.as_sql(false).trim_matches('\'').to_string(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect::<Vec<_>>()
        .join(";")
}

enum Outcome {
    Committed,
    RolledBack,
}

struct Worker {
    run: Arc<MysqlWorkload>,
    conn: Conn,
    opts: Opts,
    rng: Rng,
    id: i64,
    next_id: i64,
    mode: Mode,
    /// An explicit transaction is open (as far as this session knows).
    in_txn: bool,
    /// What the previous units did, for a failure's message.
    history: Vec<String>,
}

impl Worker {
    async fn connect(run: Arc<MysqlWorkload>, opts: Opts, id: i64, seed: u64) -> Worker {
        let conn = Self::open(&opts).await;
        Worker {
            run,
            conn,
            opts,
            rng: Rng(seed),
            id,
            next_id: 0,
            mode: Mode::default(),
            in_txn: false,
            history: vec![],
        }
    }

    async fn open(opts: &Opts) -> Conn {
        let mut conn = Conn::new(opts.clone()).await.unwrap_or_else(|e| panic!("connect through chorus: {e}"));
        // Lock waits end with 1205 (counted) instead of the default 50 s.
        conn.query_drop("SET SESSION innodb_lock_wait_timeout = 10").await.expect("set lock wait timeout");
        conn
    }

    fn counters(&self) -> &Counters {
        &self.run.counters
    }

    fn fresh_id(&mut self) -> i64 {
        self.next_id += 1;
        (self.id + 1) * 1_000_000_000 + self.next_id * 1000
    }

    fn account(&mut self) -> i64 {
        // Half the picks hit the same five hot rows.
        if self.rng.below(2) == 0 { 1 + self.rng.below(5) as i64 } else { 1 + self.rng.below(ACCOUNTS as u64) as i64 }
    }

    fn key(&mut self) -> String {
        format!("k{}", self.rng.below(KEYS))
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.rng.below(from.len() as u64) as usize]
    }

    fn string(&mut self) -> &'static str {
        STRINGS[self.rng.below(STRINGS.len() as u64) as usize]
    }

    /// `s` as a string literal under the session's current sql_mode.
    fn lit(&self, s: &str) -> String {
        let mut o = String::with_capacity(s.len() + 2);
        o.push('\'');
        for c in s.chars() {
            match c {
                '\'' => o.push_str("''"),
                '\\' if !self.mode.no_backslash => o.push_str("\\\\"),
                c => o.push(c),
            }
        }
        o.push('\'');
        o
    }

    // --- statements --------------------------------------------------------

    async fn q(&mut self, sql: impl Into<String>) -> R {
        let sql = sql.into();
        match self.conn.query_drop(&sql).await {
            Ok(()) => Ok(()),
            Err(error) => Err(Failure { sql, error, read: false }),
        }
    }

    /// A read (text protocol); outside a transaction it may run on a follower.
    async fn read<T: FromRow + Send + 'static>(&mut self, sql: impl Into<String>) -> R<Vec<T>> {
        let sql = sql.into();
        let read = !self.in_txn;
        self.conn.query(&sql).await.map_err(|error| Failure { sql, error, read })
    }

    async fn x(&mut self, sql: &str, params: impl Into<Params> + Send) -> R {
        self.conn.exec_drop(sql, params).await.map_err(|error| Failure { sql: sql.to_string(), error, read: false })
    }

    async fn begin(&mut self) -> R {
        let sql = if self.rng.below(2) == 0 { "BEGIN" } else { "START TRANSACTION" };
        self.q(sql).await?;
        self.in_txn = true;
        Ok(())
    }

    async fn commit(&mut self) -> R<Outcome> {
        self.q("COMMIT").await?;
        self.in_txn = false;
        Ok(Outcome::Committed)
    }

    async fn rollback(&mut self) -> R<Outcome> {
        self.q("ROLLBACK").await?;
        self.in_txn = false;
        Ok(Outcome::RolledBack)
    }

    /// `sql` must fail with one of `codes` (anything else fails the test,
    /// except contention, which ends the unit).
    async fn fails(&mut self, sql: impl Into<String>, params: Option<Params>, codes: &[u16]) -> R {
        let sql = sql.into();
        let r = match params {
            Some(p) => self.conn.exec_drop(&sql, p).await,
            None => self.conn.query_drop(&sql).await,
        };
        match r {
            Ok(()) => panic!("session {}: {sql:?} succeeded; it must fail with {codes:?}", self.id),
            Err(e) if code_of(&e).is_some_and(|c| codes.contains(&c)) => {
                self.counters().expected_failures.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => Err(Failure { sql, error, read: false }),
        }
    }

    /// `sql` must be refused by chorus (1235) with a message naming `says`.
    async fn refused(&mut self, sql: &str, says: &str) {
        let e = match self.conn.query_drop(sql).await {
            Ok(()) => panic!("session {}: {sql:?} ran; chorus must refuse it", self.id),
            Err(e) => e,
        };
        assert_eq!(code_of(&e), Some(1235), "session {}: {sql:?} must be refused with 1235: {e}", self.id);
        assert!(e.to_string().contains(says), "session {}: {sql:?}: the reason should name {says:?}: {e}", self.id);
        self.counters().refused.fetch_add(1, Ordering::Relaxed);
    }

    // --- the unit loop -----------------------------------------------------

    async fn one(&mut self, n: usize) {
        let unit = self.rng.below(23);
        let started = std::time::Instant::now();
        let (name, r) = match unit {
            0..=2 => ("transfer", self.transfer().await),
            3 | 22 => ("hot rows", self.hot_rows().await),
            4 => ("autocommit text", self.autocommit_text().await),
            5 => ("upsert", self.upsert().await),
            6 => ("rollback", self.rollback_unit().await),
            7 => ("duplicate", self.duplicate().await),
            8 => ("savepoint", self.savepoint().await),
            9 => ("multi-statement", self.multi_statement().await),
            10 => ("delete and reinsert", self.delete_and_reinsert().await),
            11 => ("insert select", self.insert_select().await),
            12 | 13 => ("nondeterministic", self.nondeterministic().await),
            14 => ("auto increment", self.auto_increment().await),
            15 | 16 => ("typed parameters", self.typed_parameters().await),
            17 => ("settings", self.settings().await),
            18 => ("refused", self.refusals().await),
            19 => ("ddl", self.ddl().await),
            20 => ("deletes", self.deletes().await),
            _ => ("reads", self.reads().await),
        };
        if started.elapsed() > std::time::Duration::from_secs(2) {
            // Lock waits, or chorus stalled: worth knowing when a run is slow.
            eprintln!("session {}: unit {n} ({name}) took {:?}", self.id, started.elapsed());
        }
        let c = &self.run.counters;
        match r {
            Ok(Outcome::Committed) => {
                c.committed.fetch_add(1, Ordering::Relaxed);
                self.history.push(format!("{n}: {name} committed"));
            }
            Ok(Outcome::RolledBack) => {
                c.rolled_back.fetch_add(1, Ordering::Relaxed);
                self.history.push(format!("{n}: {name} rolled back"));
            }
            Err(f) if is_deadlock(&f) || is_lock_wait(&f) => {
                if is_deadlock(&f) { &c.deadlocks } else { &c.lock_waits }.fetch_add(1, Ordering::Relaxed);
                self.history.push(format!("{n}: {name}: {} on {:?}", f.error, f.sql));
                // A deadlock rolled the whole transaction back on the server; a
                // lock wait only the statement. Either way the unit ends here.
                // The unit may have stopped before undoing its SET NAMES or SET TIMESTAMP.
                for sql in ["ROLLBACK", "SET NAMES utf8mb4", "SET TIMESTAMP = DEFAULT"] {
                    if let Err(e) = self.conn.query_drop(sql).await {
                        self.fail(name, sql, &format!("{e} (after {} in {:?})", f.error, f.sql));
                    }
                }
                self.in_txn = false;
            }
            Err(f) if self.run.follower_faults && f.read && is_connection_loss(&f.error) => {
                c.reconnects.fetch_add(1, Ordering::Relaxed);
                self.history.push(format!("{n}: {name}: lost the connection in {:?}: {}", f.sql, f.error));
                eprintln!("session {}: reconnecting after {:?} failed: {}", self.id, f.sql, f.error);
                self.conn = Self::open(&self.opts).await;
                self.mode = Mode::default();
                self.in_txn = false;
            }
            Err(f) => self.fail(name, &f.sql, &f.error.to_string()),
        }
    }

    fn fail(&self, unit: &str, sql: &str, error: &str) -> ! {
        let recent: Vec<&String> = self.history.iter().rev().take(8).collect();
        panic!(
            "mysql workload (seed {}) session {}: unexpected error in unit {unit:?}\n  statement: {sql}\n  error: \
             {error}\n  mode: {:?}\n  recent units (newest first): {recent:#?}",
            self.run.opts.seed, self.id, self.mode
        )
    }

    // --- units -------------------------------------------------------------

    /// An explicit transaction of prepared statements with parameters that
    /// moves money between two (often hot) accounts.
    async fn transfer(&mut self) -> R<Outcome> {
        let (a, b) = (self.account(), self.account());
        let amount = self.rng.below(100) as i64;
        let id = self.fresh_id();
        self.begin().await?;
        self.x("UPDATE w_accounts SET balance = balance - ? WHERE id = ?", (amount, a)).await?;
        self.x("UPDATE w_accounts SET balance = balance + ?, touched = NOW(6) WHERE id = ?", (amount, b)).await?;
        self.x(
            "INSERT INTO w_events (id, session, kind, amount, at, ts, day) \
             VALUES (?, ?, 'transfer', ? / 3, CURRENT_TIMESTAMP(6), NOW(6), CURDATE())",
            (id, self.id, amount),
        )
        .await?;
        if self.rng.below(8) == 0 { self.rollback().await } else { self.commit().await }
    }

    /// Several hot rows updated in a random order in one transaction: the
    /// sessions deadlock each other.
    async fn hot_rows(&mut self) -> R<Outcome> {
        let mut ids: Vec<i64> = (1..=5).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, self.rng.below(i as u64 + 1) as usize);
        }
        let k = self.key();
        self.begin().await?;
        let local = self.rng.below(2) == 0;
        for (n, id) in ids.iter().take(3).enumerate() {
            let d = if n % 2 == 0 { 1 } else { -1 };
            self.q(format!("UPDATE w_accounts SET balance = balance + {d}, touched = NOW(6) WHERE id = {id}")).await?;
            if n == 0 && local {
                // A statement that runs on the leader and commits nothing.
                self.q("DO 0").await?;
            }
            if n == 1 && self.rng.below(2) == 0 {
                // Hold the rows a little: the sessions cross each other more.
                let _: Vec<i64> = self.read("SELECT SLEEP(0.01)").await?;
            }
        }
        let (first, second) = (ids[0], ids[1]);
        // Money stays where it was: one more -1 where the +1s outnumber.
        self.q(format!("UPDATE w_accounts SET balance = balance - 1 WHERE id = {first}")).await?;
        self.q(format!(
            "UPDATE w_kv SET v = v + (SELECT balance FROM w_accounts WHERE id = {second}) % 7, updated = NOW(6) \
             WHERE k = {}",
            self.lit(&k)
        ))
        .await?;
        self.commit().await
    }

    /// Autocommit writes in the text protocol, with hard literals.
    async fn autocommit_text(&mut self) -> R<Outcome> {
        let a = self.account();
        let s = self.string();
        let lit = self.lit(s);
        match self.rng.below(4) {
            0 => {
                self.q(format!(
                    "UPDATE w_accounts SET note = LEFT(CONCAT({lit}, ' ', IFNULL(note, '')), 200), touched = NOW(6) \
                     WHERE id = {a}"
                ))
                .await?
            }
            1 => {
                self.q(format!("UPDATE w_accounts SET note = CONCAT('r', ROUND(RAND() * 1000000)) WHERE id = {a}"))
                    .await?
            }
            2 => {
                // Rows matched but none changed: nothing to replay.
                self.q(format!("UPDATE w_accounts SET balance = balance WHERE id = {a}")).await?
            }
            _ => {
                let id = self.fresh_id();
                self.q(format!(
                    "INSERT INTO w_events (id, session, kind, payload, at, day) VALUES \
                     ({id}, {}, 'text', {lit}, UTC_TIMESTAMP(6), UTC_DATE())",
                    self.id
                ))
                .await?;
                // Read-your-writes: the read may go to a follower, which must have it.
                let got: Vec<Option<String>> =
                    self.read(format!("SELECT payload FROM w_events WHERE id = {id}")).await?;
                assert_eq!(
                    got,
                    [Some(s.to_string())],
                    "session {}: read after own autocommit insert of {id} (mode {:?})",
                    self.id,
                    self.mode
                );
            }
        }
        Ok(Outcome::Committed)
    }

    async fn upsert(&mut self) -> R<Outcome> {
        let k = self.key();
        match self.rng.below(4) {
            0 => {
                self.x(
                    "INSERT INTO w_kv (k, v, updated) VALUES (?, 1, NOW(6)) \
                     ON DUPLICATE KEY UPDATE v = v + 1, updated = NOW(6)",
                    (k,),
                )
                .await?
            }
            1 => {
                self.q(format!(
                    "INSERT INTO w_kv (k, v) VALUES ({}, 5), ({}, 7) ON DUPLICATE KEY UPDATE v = VALUES(v) + w_kv.v",
                    self.lit(&k),
                    self.lit(&format!("k{}", self.id % KEYS as i64))
                ))
                .await?
            }
            2 => {
                let at = Value::Date(2026, 1 + self.rng.below(12) as u8, 1, 12, 0, 0, self.rng.below(1_000_000) as u32);
                self.x("REPLACE INTO w_kv (k, v, updated) VALUES (?, ?, ?)", (k, self.id, at)).await?
            }
            _ => {
                // An upsert of an AUTO_INCREMENT table: an id used by another session, or a new one.
                let id = 1 + self.rng.below(30) as i64;
                self.x(
                    "INSERT INTO w_seq (id, session, note) VALUES (?, ?, 'upsert') \
                     ON DUPLICATE KEY UPDATE note = LEFT(CONCAT(note, '+'), 100)",
                    (id, self.id),
                )
                .await?;
                self.q(format!("INSERT IGNORE INTO w_seq (id, session, note) VALUES ({id}, {}, 'ignored')", self.id))
                    .await?;
            }
        }
        Ok(Outcome::Committed)
    }

    /// Writes undone by ROLLBACK (AUTO_INCREMENT values they took are gone
    /// on the leader only), then an insert that takes the next id.
    async fn rollback_unit(&mut self) -> R<Outcome> {
        let a = self.account();
        let id = self.fresh_id();
        self.begin().await?;
        self.x("UPDATE w_accounts SET balance = 0 WHERE id = ?", (a,)).await?;
        self.x("INSERT INTO w_events (id, session, kind) VALUES (?, ?, 'never')", (id, self.id)).await?;
        self.q(format!("INSERT INTO w_seq (session, note) VALUES ({0}, 'rolled back'), ({0}, 'rolled back')", self.id))
            .await?;
        self.rollback().await?;
        self.q(format!("INSERT INTO w_seq (session, note) VALUES ({}, 'after rollback')", self.id)).await?;
        Ok(Outcome::RolledBack)
    }

    /// Statements that fail on the leader, in autocommit mode and inside a
    /// transaction that goes on and commits: nothing of them may reach a follower.
    async fn duplicate(&mut self) -> R<Outcome> {
        let (id, id2) = (self.fresh_id(), self.fresh_id());
        let me = self.id;
        self.q(format!("INSERT INTO w_events (id, session, kind) VALUES ({id}, {me}, 'dup')")).await?;
        self.fails(format!("INSERT INTO w_events (id, session, kind) VALUES ({id}, 0, 'dup2')"), None, &[1062]).await?;
        self.fails(format!("INSERT INTO w_seq (session, note) VALUES ({me}, NULL)"), None, &[1048]).await?;
        self.begin().await?;
        self.x("INSERT INTO w_events (id, session, kind) VALUES (?, ?, 'dup-txn')", (id2, me)).await?;
        if self.mode.strict {
            // A multi-row insert failing on its last row takes AUTO_INCREMENT
            // values on the leader (without strict mode the NULL becomes '').
            self.fails(
                format!("INSERT INTO w_seq (session, note) VALUES ({me}, 'x'), ({me}, 'y'), ({me}, NULL)"),
                None,
                &[1048],
            )
            .await?;
        }
        self.fails(
            "INSERT INTO w_events (id, session, kind) VALUES (?, ?, 'dup-prep')",
            Some(Params::from((id2, me))),
            &[1062],
        )
        .await?;
        self.q(format!("INSERT INTO w_seq (session, note) VALUES ({me}, 'after failures')")).await?;
        self.commit().await
    }

    async fn savepoint(&mut self) -> R<Outcome> {
        let (id, id2) = (self.fresh_id(), self.fresh_id());
        let a = self.account();
        let me = self.id;
        self.begin().await?;
        self.q(format!("INSERT INTO w_events (id, session, kind) VALUES ({id}, {me}, 'sp')")).await?;
        self.q("SAVEPOINT s1").await?;
        self.q(format!("UPDATE w_accounts SET balance = balance + 1 WHERE id = {a}")).await?;
        self.q(format!("INSERT INTO w_seq (session, note) VALUES ({me}, 'undone by savepoint')")).await?;
        self.fails(format!("INSERT INTO w_events (id, session, kind) VALUES ({id}, 0, 'x')"), None, &[1062]).await?;
        self.q("ROLLBACK TO SAVEPOINT s1").await?;
        self.q("SAVEPOINT s3").await?;
        self.q(format!("UPDATE w_events SET kind = 'sp-undone' WHERE id = {id}")).await?;
        self.q("ROLLBACK WORK TO s3").await?;
        self.q(format!("INSERT INTO w_seq (session, note) VALUES ({me}, 'after savepoint')")).await?;
        self.q("SAVEPOINT s2").await?;
        self.x("INSERT INTO w_events (id, session, kind, at) VALUES (?, ?, 'sp2', NOW(6))", (id2, me)).await?;
        if self.rng.below(2) == 0 {
            self.q("RELEASE SAVEPOINT s2").await?;
        } else {
            // Same name again: the old one goes, the new one is set.
            self.q("SAVEPOINT s1").await?;
            self.q(format!("UPDATE w_events SET kind = 'sp1-again' WHERE id = {id2}")).await?;
            self.q("ROLLBACK TO SAVEPOINT s1").await?;
        }
        if self.rng.below(5) == 0 { self.rollback().await } else { self.commit().await }
    }

    /// Multi-statement COM_QUERY: reads and session statements run as one
    /// query; one that writes is refused.
    async fn multi_statement(&mut self) -> R<Outcome> {
        let me = self.id;
        let sql = format!(
            "SELECT COUNT(*) FROM w_events WHERE session = {me}; SELECT k, v FROM w_kv ORDER BY k; DO 1; \
             SELECT 'a;b', '?'"
        );
        let sql = if self.mode.no_backslash { sql } else { format!("{sql}; SELECT 'e\\';f'") };
        let mut result = self.conn.query_iter(&sql).await.map_err(|error| Failure {
            sql: sql.clone(),
            error,
            read: !self.in_txn,
        })?;
        let mut sets = 0;
        while !result.is_empty() {
            let _: Vec<Row> =
                result.collect().await.map_err(|error| Failure { sql: sql.clone(), error, read: false })?;
            sets += 1;
        }
        drop(result);
        assert!(sets >= 4, "session {me}: {sql:?} gave {sets} result sets");
        let several: Vec<(&str, &str)> = REFUSED.iter().copied().filter(|(_, says)| *says == "one at a time").collect();
        let (sql, says) = *self.pick(&several);
        self.refused(sql, says).await;
        Ok(Outcome::Committed)
    }

    async fn delete_and_reinsert(&mut self) -> R<Outcome> {
        let k = self.key();
        self.begin().await?;
        self.x("DELETE FROM w_kv WHERE k = ?", (k.clone(),)).await?;
        self.x(
            "INSERT INTO w_kv (k, v, updated) SELECT ?, COUNT(*), NOW(6) FROM w_events WHERE session = ?",
            (k, self.id),
        )
        .await?;
        self.commit().await
    }

    /// INSERT ... SELECT and REPLACE ... SELECT from tables other sessions write.
    async fn insert_select(&mut self) -> R<Outcome> {
        let base = self.fresh_id();
        let a = 1 + self.rng.below(ACCOUNTS as u64 - 3) as i64;
        let autocommit = self.rng.below(2) == 0;
        if !autocommit {
            self.begin().await?;
        }
        self.x(
            "INSERT INTO w_events (id, session, kind, amount, at, day) \
             SELECT ? + id, ?, 'copied', balance / 7, NOW(6), CURDATE() FROM w_accounts \
             WHERE id BETWEEN ? AND ? ORDER BY id",
            (base, self.id, a, a + 3),
        )
        .await?;
        self.q(format!(
            "REPLACE INTO w_kv (k, v, updated) SELECT CONCAT('k', id % {KEYS}), balance, touched FROM w_accounts \
             WHERE id = {a}"
        ))
        .await?;
        if self.rng.below(3) == 0 {
            // Per-row RAND() and NOW() in a multi-row INSERT ... SELECT (seeded by chorus).
            self.q(format!(
                "INSERT INTO w_rand (session, r, at, note) SELECT {}, RAND(), NOW(6), 'per row' FROM w_accounts \
                 WHERE id <= {} ORDER BY id LIMIT 3",
                self.id,
                a + 5
            ))
            .await?;
        }
        if autocommit { Ok(Outcome::Committed) } else { self.commit().await }
    }

    /// Values that differ per server unless chorus pins or generates them.
    async fn nondeterministic(&mut self) -> R<Outcome> {
        let me = self.id;
        match self.rng.below(12) {
            11 => {
                // User variables computed on the leader, read by writes
                // (chorus logs their values), one of them assigned per row.
                self.q("SET @w_r = RAND(), @w_at = NOW(6), @w_n = 0, @w_s = CONCAT('v', UUID_SHORT())").await?;
                self.q(format!(
                    "INSERT INTO w_rand (session, r, at, note) VALUES ({me}, @w_r, @w_at, @w_s), ({me}, @w_r * 2, @w_at, 'vars')"
                ))
                .await?;
                self.x(
                    "UPDATE w_rand SET us = (@w_n := @w_n + 1) WHERE session = ? ORDER BY id DESC LIMIT 3",
                    (me,),
                )
                .await?
            }
            9 => {
                // A deterministic procedure: replicated as its CALL.
                let id = self.fresh_id();
                if self.rng.below(2) == 0 {
                    self.q(format!("CALL w_add_event({id}, {me})")).await?
                } else {
                    self.x("CALL w_add_event(?, ?)", (id, me)).await?
                }
            }
            7 => {
                // DEFAULT (UUID()) left out: chorus writes a literal per row.
                let (a, b) = (self.fresh_id(), self.fresh_id());
                self.q(format!("INSERT INTO w_docs (id, session) VALUES ({a}, {me}), ({b}, {me})")).await?
            }
            8 => {
                // A read that writes through a function: logged like a write.
                let by = 1 + self.rng.below(5);
                let got: Vec<u64> = self.read(format!("SELECT w_bump({by})")).await?;
                assert_eq!(got, [by], "session {me}: SELECT w_bump({by})");
            }
            0 => {
                self.q(format!(
                    "INSERT INTO w_rand (session, u, us, r, at, unix, note) VALUES \
                     ({me}, UUID(), UUID_SHORT(), RAND(), NOW(6), UNIX_TIMESTAMP(), 'uuid'), \
                     ({me}, uuid(), uuid_short(), RAND(), CURRENT_TIMESTAMP(6), UNIX_TIMESTAMP(NOW(6)), 'uuid')"
                ))
                .await?;
            }
            1 => {
                let seed = self.rng.below(1000);
                self.x(
                    "INSERT INTO w_rand (session, r, at, unix, note) VALUES (?, RAND(?), NOW(6), UNIX_TIMESTAMP(), ?)",
                    (me, seed, "seeded rand"),
                )
                .await?
            }
            2 => {
                let k = self.rng.below(3);
                self.x(
                    "UPDATE w_rand SET r = RAND(), at = NOW(6), us = FLOOR(RAND() * 1000000) \
                     WHERE session = ? AND id % 3 = ?",
                    (me, k),
                )
                .await?
            }
            10 => {
                // Prepared, with UUID() and an omitted DEFAULT (UUID()): run as text.
                let id = self.fresh_id();
                self.x("INSERT INTO w_rand (session, u, note) VALUES (?, UUID(), ?)", (me, "prepared uuid")).await?;
                self.x("INSERT INTO w_docs (id, session) VALUES (?, ?)", (id, me)).await?
            }
            3 => {
                // The client generates the UUID: a parameter.
                let u = format!("{:08x}-0000-4000-8000-{:012x}", self.rng.next() as u32, self.rng.next() >> 16);
                self.x("INSERT INTO w_rand (session, u, at) VALUES (?, ?, LOCALTIMESTAMP(6))", (me, u)).await?
            }
            4 => {
                self.begin().await?;
                self.q(format!("INSERT INTO w_rand (session, u, note) VALUES ({me}, UUID(), 'in txn')")).await?;
                self.q(format!(
                    "UPDATE w_rand SET note = CONCAT('t', UNIX_TIMESTAMP(NOW(6)) - UNIX_TIMESTAMP(at) >= 0) \
                     WHERE session = {me} ORDER BY id DESC LIMIT 2"
                ))
                .await?;
                let id = self.fresh_id();
                self.q(format!(
                    "INSERT INTO w_events (id, session, kind, at, ts, day) VALUES ({id}, {me}, 'times', \
                     CURRENT_TIMESTAMP(6) - INTERVAL 1 DAY, UTC_TIMESTAMP(6), CURRENT_DATE)"
                ))
                .await?;
                return self.commit().await;
            }
            5 => {
                // The client pins TIMESTAMP itself: NOW() is its value everywhere.
                let at = 1_700_000_000 + self.rng.below(100_000_000);
                self.q(format!("SET TIMESTAMP = {at}.123456")).await?;
                self.q(format!(
                    "INSERT INTO w_rand (session, at, unix, note) VALUES ({me}, NOW(6), UNIX_TIMESTAMP(), 'pinned')"
                ))
                .await?;
                let a = self.account();
                self.x("UPDATE w_accounts SET touched = NOW(6) WHERE id = ?", (a,)).await?;
                self.q("SET TIMESTAMP = DEFAULT").await?;
                self.q(format!(
                    "INSERT INTO w_rand (session, at, unix, note) VALUES ({me}, NOW(6), UNIX_TIMESTAMP(), 'unpinned')"
                ))
                .await?;
            }
            _ => {
                self.q(format!(
                    "INSERT INTO w_rand (session, r, note) VALUES ({me}, RAND(), 'a'), ({me}, RAND(), 'b'), ({me}, RAND(), 'c')"
                ))
                .await?
            }
        }
        Ok(Outcome::Committed)
    }

    /// AUTO_INCREMENT inserts (single and multi-row, in and out of
    /// transactions) and LAST_INSERT_ID(), read and used in writes.
    async fn auto_increment(&mut self) -> R<Outcome> {
        let me = self.id;
        let txn = self.rng.below(2) == 0;
        if txn {
            self.begin().await?;
        }
        self.x("INSERT INTO w_seq (session, note) VALUES (?, ?)", (me, "parent")).await?;
        let id = self.conn.last_insert_id().expect("an insert id");
        let read: Vec<u64> = self.read("SELECT LAST_INSERT_ID()").await?;
        assert_eq!(read, [id], "session {me}: LAST_INSERT_ID() after an insert");
        self.q(format!("INSERT INTO w_seq (session, note, parent) VALUES ({me}, 'child', LAST_INSERT_ID())")).await?;
        // The child's own id is LAST_INSERT_ID() now.
        let child = self.conn.last_insert_id().expect("an insert id");
        self.x("INSERT INTO w_seq (session, note, parent) VALUES (?, 'child2', LAST_INSERT_ID())", (me,)).await?;
        let parents: Vec<Option<u64>> = self
            .read(format!("SELECT parent FROM w_seq WHERE session = {me} AND id > {id} ORDER BY id LIMIT 2"))
            .await?;
        assert_eq!(parents, [Some(id), Some(child)], "session {me}: LAST_INSERT_ID() in later writes");
        self.q(format!("INSERT INTO w_seq (session, note) VALUES ({me}, 'm1'), ({me}, 'm2'), ({me}, 'm3')")).await?;
        // The counter idiom: LAST_INSERT_ID(expr) sets the value the next LAST_INSERT_ID() returns.
        let k = self.key();
        self.x("UPDATE w_kv SET v = LAST_INSERT_ID(v + 1) WHERE k = ?", (k.clone(),)).await?;
        let changed = self.conn.affected_rows();
        let v: Vec<u64> = self.read("SELECT LAST_INSERT_ID()").await?;
        if changed == 1 {
            self.q(format!("INSERT INTO w_seq (session, note, parent) VALUES ({me}, 'counter', LAST_INSERT_ID())"))
                .await?;
            let parent: Vec<Option<u64>> = self
                .read(format!("SELECT parent FROM w_seq WHERE id = {}", self.conn.last_insert_id().unwrap_or(0)))
                .await?;
            assert_eq!(parent, [Some(v[0])], "session {me}: LAST_INSERT_ID(expr) then LAST_INSERT_ID()");
        }
        if txn {
            if self.rng.below(4) == 0 {
                return self.rollback().await;
            }
            return self.commit().await;
        }
        Ok(Outcome::Committed)
    }

    fn date(&mut self, micros: bool) -> Value {
        let us = if micros && self.rng.below(3) != 0 { self.rng.below(1_000_000) as u32 } else { 0 };
        let (h, mi, s) = if self.rng.below(4) == 0 {
            (0, 0, 0)
        } else {
            (self.rng.below(24) as u8, self.rng.below(60) as u8, self.rng.below(60) as u8)
        };
        Value::Date(
            1971 + self.rng.below(60) as u16,
            1 + self.rng.below(12) as u8,
            1 + self.rng.below(28) as u8,
            h,
            mi,
            s,
            us,
        )
    }

    /// Prepared statements (binary protocol) with parameters of many
    /// types, which chorus inlines as literals for the followers; and the
    /// same values written in the text protocol.
    async fn typed_parameters(&mut self) -> R<Outcome> {
        let id = self.fresh_id();
        let me = self.id;
        let s = self.string().to_string();
        let t: String = (0..1 + self.rng.below(3)).map(|_| self.string()).collect::<Vec<_>>().join("\n");
        let blob: Vec<u8> = match self.rng.below(4) {
            0 => vec![0, 0x27, 0x5c, 0x22, 0xff, 0xfe, 0x0a, 0x1a],
            1 => (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect(),
            2 => Vec::new(),
            _ => "ünï 'q' \\".as_bytes().to_vec(),
        };
        let dm = match self.rng.below(4) {
            0 => "-1234567890123456.654321".to_string(),
            1 => "0.000001".to_string(),
            2 => format!("{}.{:02}", self.rng.below(100000), self.rng.below(100)),
            _ => "1e3".to_string(),
        };
        let f = (self.rng.below(10_000) as f32 - 5000.0) / 7.0;
        let g = match self.rng.below(4) {
            0 => 1.0 / 3.0,
            1 => -2.5e-300,
            2 => 1.7976931348623157e308,
            _ => (self.rng.next() >> 11) as f64 / (1u64 << 53) as f64,
        };
        let tm = Value::Time(
            self.rng.below(2) == 0,
            self.rng.below(3) as u32,
            self.rng.below(24) as u8,
            self.rng.below(60) as u8,
            self.rng.below(60) as u8,
            if self.rng.below(2) == 0 { 0 } else { self.rng.below(1_000_000) as u32 },
        );
        let e = Value::Int(1 + self.rng.below(3) as i64);
        let j = format!("{{\"s\": {}, \"n\": {id}}}", serde_json_string(&s));
        let u64v = if self.rng.below(3) == 0 { u64::MAX } else { self.rng.next() };
        // Not -128: the UPDATE below negates it, and 128 is out of TINYINT's range.
        let i8v = (self.rng.below(255) as i64 - 127) as i8;
        let params: Vec<Value> = vec![
            id.into(),
            me.into(),
            i8v.into(),
            u64v.into(),
            Value::Bytes(dm.clone().into_bytes()),
            f.into(),
            g.into(),
            s.clone().into(),
            t.clone().into(),
            Value::Bytes(blob.clone()),
            self.date(true),
            self.date(true),
            self.date(false),
            tm,
            Value::Int(1901 + self.rng.below(254) as i64),
            e,
            j.clone().into(),
            self.date(true),
        ];
        let nulls = self.rng.below(4) == 0;
        let params: Vec<Value> = params
            .into_iter()
            .enumerate()
            .map(|(i, v)| if nulls && i >= 2 && i % 3 == 0 { Value::NULL } else { v })
            .collect();
        self.x(
            "INSERT INTO w_types (id, session, i8, u64, dm, f, g, s, t, b, dt, dt0, d, tm, y, e, j, ts) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            Params::Positional(params),
        )
        .await?;
        match self.rng.below(3) {
            0 => {
                let d = self.date(true);
                self.x(
                    "UPDATE w_types SET s = ?, g = g * ?, dt = ?, i8 = -i8, tm = ? WHERE id = ?",
                    (s.clone() + "+", 0.5f64, d, Value::Time(false, 0, 1, 2, 3, 4), id),
                )
                .await?;
                // Temporal parameters where a string goes: their text is the server's.
                let (d, tm) = (self.date(true), Value::Time(false, 0, 5, 6, 7, 0));
                self.x("UPDATE w_types SET t = ?, s = CONCAT(?, '') WHERE id = ?", (d, tm, id)).await?
            }
            1 => {
                // The same kinds of values in the text protocol.
                let sql = format!(
                    "INSERT INTO w_types (id, session, i8, u64, dm, f, g, s, t, b, dt, dt0, d, tm, y, e, j) VALUES \
                     ({}, {me}, -128, 18446744073709551615, {dm}, {f:e}, {g:e}, {}, {}, X'00275C22FF', \
                     '2024-02-29 23:59:59.999999', '2024-02-29 12:00:00.5', '2024-02-29', '-838:59:59', 2155, 'c', {})",
                    id + 1,
                    self.lit(&s),
                    self.lit(&t),
                    self.lit(&j)
                );
                self.q(sql).await?
            }
            _ => {
                let row: Vec<(i64, Option<String>)> = self
                    .conn
                    .exec("SELECT id, s FROM w_types WHERE id = ? AND session = ?", (id, me))
                    .await
                    .map_err(|error| Failure { sql: "SELECT id, s FROM w_types ...".into(), error, read: false })?;
                assert_eq!(row.len(), 1, "session {me}: prepared read of its own insert {id}");
                if !nulls {
                    assert_eq!(row[0].1.as_deref(), Some(s.as_str()), "session {me}: the string parameter came back");
                }
                self.x("DELETE FROM w_types WHERE id = ? AND b <=> ?", (id, Value::Bytes(blob))).await?
            }
        }
        Ok(Outcome::Committed)
    }

    /// Session settings that change what later statements mean, then
    /// writes under them; some inside a transaction, some right before its COMMIT.
    async fn settings(&mut self) -> R<Outcome> {
        let me = self.id;
        let txn = self.rng.below(3) == 0;
        if txn {
            self.begin().await?;
            let id = self.fresh_id();
            // Text that JSON escapes (newline, quotes, backslash) in the log entry.
            self.q(format!(
                "INSERT INTO w_events (id, session, kind, payload) VALUES ({id}, {me}, 'before set', {})",
                self.lit("line\none \"two\" back\\slash")
            ))
            .await?;
        }
        match self.rng.below(7) {
            0 | 1 => {
                let &(mode, m) = self.pick(SQL_MODES);
                let form = if self.rng.below(2) == 0 { "SET sql_mode = " } else { "SET @@session.sql_mode = " };
                self.q(format!("{form}{mode}")).await?;
                self.mode = m;
            }
            2 => {
                let tz = *self.pick(TIME_ZONES);
                let form = if self.rng.below(2) == 0 { "SET time_zone = " } else { "SET @@session.time_zone = " };
                self.q(format!("{form}{tz}")).await?;
            }
            3 => {
                let n = self.rng.below(6);
                self.q(format!("SET div_precision_increment = {n}")).await?;
            }
            4 => {
                let (inc, off) = if self.rng.below(2) == 0 { (1, 1) } else { (5, 1 + self.rng.below(5)) };
                self.q(format!("SET auto_increment_increment = {inc}, auto_increment_offset = {off}")).await?;
            }
            5 => {
                // READ COMMITTED (Django's default) for the session or the next
                // transaction only (which cannot be chosen inside one).
                let level = *self.pick(&["READ COMMITTED", "REPEATABLE READ", "READ COMMITTED", "SERIALIZABLE"]);
                let scope = if txn || self.rng.below(3) != 0 { "SESSION " } else { "" };
                self.q(format!("SET {scope}TRANSACTION ISOLATION LEVEL {level}")).await?;
            }
            _ => {
                // Another character set for a while: the text means the same on every node.
                self.q("SET NAMES latin1").await?;
                let a = self.account();
                self.q(format!("UPDATE w_accounts SET note = {} WHERE id = {a}", self.lit("latin1 ü é"))).await?;
                self.x("UPDATE w_accounts SET note = CONCAT(note, ?) WHERE id = ?", ("+ß", a)).await?;
                self.q("SET NAMES utf8mb4").await?;
            }
        }
        if txn && self.rng.below(2) == 0 {
            // COMMIT right after the SET: the entry goes into the log under the new settings.
            return self.commit().await;
        }
        // Right after the change: statements whose meaning depends on it.
        let id = self.fresh_id();
        let s = self.string();
        self.q(format!(
            "INSERT INTO w_events (id, session, kind, payload, at, ts, amount) VALUES \
             ({id}, {me}, 'settings', CONCAT({}, ' ', 1/7, ' ', '1' || '0'), '2026-03-29 02:30:00', \
             '2026-03-29 02:30:00.5', 10/3)",
            self.lit(s)
        ))
        .await?;
        // A string ending in a backslash before a UUID(): lexed under the new mode.
        self.q(format!(
            "INSERT INTO w_rand (session, note, u, at) VALUES ({me}, {}, UUID(), FROM_UNIXTIME(1700000000.25))",
            self.lit("end\\")
        ))
        .await?;
        let (a, b) = (self.date(true), self.date(true));
        self.x("UPDATE w_types SET ts = ?, dt = ? WHERE session = ? ORDER BY id DESC LIMIT 1", (a, b, me)).await?;
        self.q(format!("INSERT INTO w_seq (session, note) VALUES ({me}, 'settings a'), ({me}, 'settings b')")).await?;
        if !self.mode.strict {
            // Adjusted with a warning instead of failing: the same on every node.
            let id = self.fresh_id();
            self.q(format!(
                "INSERT INTO w_events (id, session, kind, amount, day) VALUES ({id}, {me}, 'far too long for twenty', \
                 'not a number', '2026-02-30')"
            ))
            .await?;
        }
        if txn { self.commit().await } else { Ok(Outcome::Committed) }
    }

    /// Statements chorus refuses, in and out of transactions: they must not
    /// run (w_refuse stays as the schema made it) and the transaction goes on.
    async fn refusals(&mut self) -> R<Outcome> {
        let txn = self.rng.below(2) == 0;
        if txn {
            self.begin().await?;
            self.q(format!("INSERT INTO w_seq (session, note) VALUES ({}, 'before refusal')", self.id)).await?;
        }
        for _ in 0..2 {
            let (sql, says) = *self.pick(REFUSED);
            self.refused(sql, says).await;
        }
        // A prepared statement with UUID() and RETURNING is refused at prepare.
        match self.conn.prep("INSERT INTO w_refuse (id, v, s) VALUES (?, 1, UUID()) RETURNING id").await {
            Ok(_) => panic!("session {}: a prepared UUID() with RETURNING was accepted", self.id),
            Err(e) => assert_eq!(code_of(&e), Some(1235), "session {}: prepared UUID(): {e}", self.id),
        }
        if self.rng.below(3) == 0 {
            // A temporary table: written with what only the leader computes,
            // never replicated; a regular table cannot be written from it.
            let me = self.id;
            self.q("CREATE TEMPORARY TABLE IF NOT EXISTS w_tmp (id INT PRIMARY KEY, r DOUBLE, u CHAR(36))").await?;
            self.q(format!("REPLACE INTO w_tmp VALUES ({me}, RAND(), UUID())")).await?;
            self.q("UPDATE w_tmp SET r = r + RAND() LIMIT 1").await?;
            let n: Vec<u64> = self.read(format!("SELECT COUNT(*) FROM w_tmp WHERE id = {me}")).await?;
            assert_eq!(n, [1], "session {me}: its temporary table");
            self.refused("INSERT INTO w_refuse (id, v) SELECT id + 400, 1 FROM w_tmp", "temporary").await;
            if self.rng.below(2) == 0 {
                self.q("DROP TEMPORARY TABLE w_tmp").await?;
            }
        }
        self.counters().refused.fetch_add(1, Ordering::Relaxed);
        if txn {
            self.q(format!("INSERT INTO w_seq (session, note) VALUES ({}, 'after refusal')", self.id)).await?;
            return self.commit().await;
        }
        let rows: Vec<Row> = self.read("SELECT * FROM w_refuse ORDER BY id").await?;
        assert_eq!(render(&rows), REFUSE_ROWS, "session {}: a refused statement changed w_refuse", self.id);
        Ok(Outcome::Committed)
    }

    /// DDL: tables of the session's own (created, written, altered,
    /// truncated, dropped), shared tables altered in ways the other
    /// sessions' statements do not depend on (session 0 only), and DDL in
    /// the middle of a transaction, which commits it.
    async fn ddl(&mut self) -> R<Outcome> {
        let me = self.id;
        let n = self.next_id;
        let t = format!("w_ddl_{me}_{n}");
        self.fresh_id();
        // Several lines, quotes: the statement's text as JSON has escapes.
        self.q(format!(
            "CREATE TABLE {t} (\n  id INT AUTO_INCREMENT PRIMARY KEY,\n  v VARCHAR(100) DEFAULT 'it''s',\n  \
             at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6) -- a comment\n) COMMENT 'made by session {me}'"
        ))
        .await?;
        let v = self.string();
        self.q(format!("INSERT INTO {t} (v) VALUES ('a'), (NULL), ({})", self.lit(v))).await?;
        self.q(format!("ALTER TABLE {t} ADD COLUMN extra INT NOT NULL DEFAULT 7, ADD INDEX (v)")).await?;
        // CREATE TABLE ... SELECT of values only (one that reads a table is refused).
        self.q(format!(
            "CREATE TABLE {t}_values AS SELECT {me} AS session, NOW(6) AS at, UNIX_TIMESTAMP() AS unix, 'it''s' AS s"
        ))
        .await?;
        self.q(format!("INSERT INTO {t} (v, extra) SELECT v, id FROM {t} ORDER BY id")).await?;
        match self.rng.below(4) {
            0 => self.q(format!("DROP TABLE {t}")).await?,
            1 => self.q(format!("TRUNCATE TABLE {t}")).await?,
            2 => self.q(format!("RENAME TABLE {t} TO {t}_renamed")).await?,
            _ => {}
        }
        if me == 0 && self.rng.below(2) == 0 {
            let c = self.rng.below(4);
            self.q(format!("ALTER TABLE w_kv ADD COLUMN IF NOT EXISTS c{c} INT DEFAULT {c}")).await?;
            self.q(format!("CREATE INDEX IF NOT EXISTS w_events_day{c} ON w_events (day)")).await?;
        }
        // DDL inside a transaction commits what came before it.
        let id = self.fresh_id();
        self.begin().await?;
        self.q(format!("INSERT INTO w_events (id, session, kind) VALUES ({id}, {me}, 'before ddl')")).await?;
        self.q(format!("CREATE TABLE IF NOT EXISTS w_ddl_{me}_keep (id INT PRIMARY KEY)")).await?;
        self.in_txn = false;
        self.q("ROLLBACK").await?;
        let got: Vec<String> = self.read(format!("SELECT kind FROM w_events WHERE id = {id}")).await?;
        assert_eq!(got, ["before ddl"], "session {me}: the DDL committed the insert before it");
        Ok(Outcome::Committed)
    }

    async fn deletes(&mut self) -> R<Outcome> {
        let me = self.id;
        let k = self.rng.below(7);
        self.x("DELETE FROM w_events WHERE session = ? AND id % 7 = ?", (me, k)).await?;
        self.q(format!("DELETE FROM w_rand WHERE session = {me} ORDER BY id LIMIT 2")).await?;
        // Unordered: chorus orders it by the primary key.
        self.q(format!("UPDATE w_rand SET note = 'limited' WHERE session = {me} LIMIT 2")).await?;
        self.x("DELETE FROM w_rand WHERE session = ? LIMIT 1", (me,)).await?;
        self.q(format!("DELETE FROM w_seq WHERE session = {me} AND note LIKE 'm%' ORDER BY id DESC LIMIT 1")).await?;
        if self.rng.below(3) == 0 {
            self.q(format!(
                "DELETE t FROM w_types t JOIN w_accounts a ON a.id = t.i8 WHERE t.session = {me} AND a.balance > 1000"
            ))
            .await?;
        }
        Ok(Outcome::Committed)
    }

    /// Reads through chorus: balances always add up on whichever node
    /// answers (the followers apply whole transactions), and the session's
    /// own rows are there.
    async fn reads(&mut self) -> R<Outcome> {
        let total: Vec<Option<i64>> = self.read("SELECT CAST(SUM(balance) AS SIGNED) FROM w_accounts").await?;
        assert_eq!(total, [Some(ACCOUNTS * BALANCE)], "session {}: the balances do not add up in a read", self.id);
        let id = self.fresh_id();
        self.x("INSERT INTO w_events (id, session, kind, at) VALUES (?, ?, 'read', NOW(6))", (id, self.id)).await?;
        let n: Vec<i64> = self.read(format!("SELECT COUNT(*) FROM w_events WHERE id = {id}")).await?;
        assert_eq!(n, [1], "session {}: read-your-writes of {id}", self.id);
        Ok(Outcome::Committed)
    }
}

/// `s` as a JSON string.
fn serde_json_string(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}
