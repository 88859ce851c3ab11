//! The follower side of MySQL replication against real MariaDB servers,
//! driving [`MyReplication`] directly. Each test plays the leader side of a
//! chorus session itself ([`Leader`]): every statement runs on the leader
//! under the context it logs (a timestamp, RAND() seeds, the AUTO_INCREMENT
//! value the OK packet reports, session variables), and each transaction
//! takes the next LSN and appends its entry to `_chorus.log` before COMMIT.
//!
//! Covered: NOW()/CURRENT_TIMESTAMP/UNIX_TIMESTAMP/RAND()/time zones giving
//! the same rows on every node; AUTO_INCREMENT ids (and LAST_INSERT_ID())
//! matching after a transaction rolled back on the leader; DDL entries; one
//! transaction across two databases; a statement failing on one follower
//! only (a divergence: it leaves the read rotation, the other keeps
//! applying); a follower down at startup and later killed mid-stream that
//! catches up (health checks see it go and come back; the log is trimmed);
//! a replication shut down and recreated that applies nothing twice.
//!
//! The shared cluster's tests run at once, each with its own MyReplication
//! on the same servers, as several chorus instances would: one applier per
//! follower applies (the apply lock), the others follow its progress.

use chorus::config::{Config, Dialect};
use chorus::replication::mysql::entry::{LogEntry, LoggedStatement, StatementContext, context_sql};
use chorus::replication::mysql::{MyReplication, SERVER_LOG};
use chorus::topology::Topology;
use integration_tests::*;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long anything may take before a test gives up (a failure, not a measurement).
const PATIENCE: Duration = Duration::from_secs(90);

/// The MySQL-only configuration chorus would run `cluster` with, plus `extra` TOML.
fn mysql_config(cluster: &MariaCluster, extra: &str) -> Config {
    let listen = "127.0.0.1:0".parse().unwrap();
    let toml = format!("{}\n{extra}", cluster.chorus_config_toml(listen, CHORUS_USER, CHORUS_PASSWORD));
    Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}")).for_dialect(Dialect::Mysql)
}

/// Replication of `cluster`, prepared and started.
async fn replicate(config: &Config) -> (Arc<Topology>, Arc<MyReplication>) {
    init_logging_from_env();
    let topology = Arc::new(Topology::new(config));
    let repl = Arc::new(MyReplication::new(config.clone(), topology.clone()));
    repl.prepare().await.unwrap_or_else(|e| panic!("prepare: {e}"));
    repl.start();
    (topology, repl)
}

/// Wait until `followers` followers applied `lsn`.
async fn wait_applied(repl: &MyReplication, followers: usize, lsn: i64) {
    let state = repl.state();
    if let Err(e) = state.wait_applied(SERVER_LOG, followers, lsn, PATIENCE).await {
        let applied: Vec<_> = state.followers().iter().map(|&f| state.applied(SERVER_LOG, f)).collect();
        panic!("{followers} follower(s) did not apply LSN {lsn} ({e}); applied: {applied:?}");
    }
}

/// Wait until follower `node` applied `lsn`.
async fn wait_node_applied(repl: &MyReplication, node: usize, lsn: i64) {
    let mut applied = repl.state().subscribe_applied(SERVER_LOG, node);
    let reached = tokio::time::timeout(PATIENCE, applied.wait_for(|a| a.is_some_and(|a| a >= lsn))).await.is_ok();
    assert!(reached, "node {node} did not apply LSN {lsn}: {:?}", *applied.borrow());
}

/// Poll `check` until it holds.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The rows `sql` returns on `node`, as the server sent them (text protocol).
async fn rows(node: &MariaNode, sql: &str) -> Vec<Vec<Value>> {
    let mut conn = node.connect("").await.unwrap();
    let rows: Vec<mysql_async::Row> = conn.query(sql).await.unwrap_or_else(|e| panic!("{sql} on {}: {e}", node.name()));
    conn.disconnect().await.unwrap();
    rows.into_iter().map(|r| r.unwrap()).collect()
}

/// `sql` returns the same (non-empty) rows on the leader and on `followers`.
async fn assert_same_on(cluster: &MariaCluster, followers: &[&MariaNode], sql: &str) -> Vec<Vec<Value>> {
    let expected = rows(cluster.leader(), sql).await;
    assert!(!expected.is_empty(), "nothing to compare: {sql}");
    for f in followers {
        assert_eq!(rows(f, sql).await, expected, "{} differs from the leader: {sql}", f.name());
    }
    expected
}

async fn assert_same(cluster: &MariaCluster, sql: &str) -> Vec<Vec<Value>> {
    let followers: Vec<&MariaNode> = cluster.followers().iter().collect();
    assert_same_on(cluster, &followers, sql).await
}

fn text(v: &Value) -> String {
    match v {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Int(n) => n.to_string(),
        Value::UInt(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// The leader side of a chorus session, played by the test.
struct Leader {
    conn: Conn,
    /// The session's default database.
    db: Option<String>,
    /// Session variables to run (and log) the next statements under.
    session: Vec<(String, String)>,
    /// Variables set on the connection, with the values it started with:
    /// a variable no longer in `session` goes back to that.
    set: BTreeMap<String, String>,
    /// Statements so far: varies the rand seeds.
    n: u32,
    repl: Option<Arc<MyReplication>>,
}

impl Leader {
    async fn connect(cluster: &MariaCluster, repl: &Arc<MyReplication>) -> Leader {
        let conn = cluster.leader().connect("").await.unwrap();
        Leader { conn, db: None, session: Vec::new(), set: BTreeMap::new(), n: 0, repl: Some(repl.clone()) }
    }

    /// Run one statement with its context (in whatever transaction is open)
    /// and return it as the log holds it.
    async fn run(&mut self, db: Option<&str>, sql: &str) -> LoggedStatement {
        if let Some(db) = db
            && self.db.as_deref() != Some(db)
        {
            self.conn.query_drop(format!("USE `{db}`")).await.unwrap();
            self.db = Some(db.to_string());
        }
        let names: BTreeSet<&String> = self.session.iter().map(|(k, _)| k).collect();
        let stale: Vec<String> = self.set.keys().filter(|k| !names.contains(k)).cloned().collect();
        for name in stale {
            let initial = self.set.remove(&name).unwrap();
            self.conn.exec_drop(format!("SET @@session.{name} = ?"), (initial,)).await.unwrap();
        }
        for name in names {
            if !self.set.contains_key(name) {
                let initial: String = self.conn.query_first(format!("SELECT @@session.{name}")).await.unwrap().unwrap();
                self.set.insert(name.clone(), initial);
            }
        }
        self.n += 1;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let mut ctx = StatementContext {
            timestamp: format!("{}.{:06}", now.as_secs(), now.subsec_micros()),
            rand_seed1: (1_000_003 * u64::from(self.n) % 1_073_741_823) as u32,
            rand_seed2: (7_000_019 * u64::from(self.n) % 1_073_741_823) as u32,
            insert_id: None,
            last_insert_id: None,
            session: self.session.clone(),
            user_vars: Vec::new(),
        };
        if sql.contains("LAST_INSERT_ID()") {
            ctx.last_insert_id = self.conn.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
        }
        self.conn.query_drop(context_sql(&ctx)).await.unwrap();
        self.conn.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql} on the leader: {e}"));
        ctx.insert_id = self.conn.last_insert_id();
        LoggedStatement { sql: sql.to_string(), raw: None, infile: None, db: db.map(str::to_string), ctx }
    }

    /// One transaction of statements in `db`, logged. Returns its LSN.
    async fn commit(&mut self, db: &str, statements: &[&str]) -> i64 {
        let statements: Vec<(Option<&str>, &str)> = statements.iter().map(|s| (Some(db), *s)).collect();
        self.commit_in(&statements).await
    }

    /// One transaction of statements, each with its own default database.
    async fn commit_in(&mut self, statements: &[(Option<&str>, &str)]) -> i64 {
        self.conn.query_drop("START TRANSACTION").await.unwrap();
        let mut logged = Vec::new();
        for (db, sql) in statements {
            logged.push(self.run(*db, sql).await);
        }
        let lsn = self.log(LogEntry { statements: logged, ddl: false }).await;
        self.conn.query_drop("COMMIT").await.unwrap();
        self.notify();
        lsn
    }

    /// A transaction the leader rolls back: nothing is logged.
    async fn roll_back(&mut self, db: &str, statements: &[&str]) {
        self.conn.query_drop("START TRANSACTION").await.unwrap();
        for sql in statements {
            self.run(Some(db), sql).await;
        }
        self.conn.query_drop("ROLLBACK").await.unwrap();
    }

    /// A DDL statement (MySQL commits around it), then its entry, logged alone.
    async fn ddl(&mut self, db: &str, sql: &str) -> i64 {
        let statement = self.run(Some(db), sql).await;
        self.conn.query_drop("START TRANSACTION").await.unwrap();
        let lsn = self.log(LogEntry { statements: vec![statement], ddl: true }).await;
        self.conn.query_drop("COMMIT").await.unwrap();
        self.notify();
        lsn
    }

    /// Take the next LSN and append `entry`, in the open transaction.
    async fn log(&mut self, entry: LogEntry) -> i64 {
        self.conn.query_drop("UPDATE _chorus.lsn SET lsn = lsn + 1 WHERE id = 1").await.unwrap();
        let lsn: i64 = self.conn.query_first("SELECT lsn FROM _chorus.lsn WHERE id = 1").await.unwrap().unwrap();
        // A hex literal: whatever character_set_client the session has (a
        // string parameter would be converted from it), the bytes stay.
        let hex: String = entry.encode().iter().map(|b| format!("{b:02X}")).collect();
        self.conn
            .query_drop(format!(
                "INSERT INTO _chorus.log (lsn, committed_at, entry) VALUES ({lsn}, UTC_TIMESTAMP(6), X'{hex}')"
            ))
            .await
            .unwrap();
        lsn
    }

    fn notify(&self) {
        if let Some(r) = &self.repl {
            r.notify();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nondeterministic_functions_give_the_same_rows_everywhere() {
    let cluster = maria_cluster();
    let db = fresh_maria_database().await;
    let (_topology, repl) = replicate(&mysql_config(cluster, "")).await;
    let mut leader = Leader::connect(cluster, &repl).await;
    let d = db.name();
    leader
        .ddl(
            d,
            "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, \
             at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), \
             now6 DATETIME(6), unix BIGINT, day DATE, r DOUBLE, r2 DOUBLE, ts TIMESTAMP(6) NULL, note VARCHAR(40))",
        )
        .await;
    leader
        .commit(
            d,
            &[
                "INSERT INTO t (now6, unix, day, r, r2) VALUES (NOW(6), UNIX_TIMESTAMP(), CURDATE(), RAND(), RAND())",
                "INSERT INTO t (now6, r, note) VALUES (CURRENT_TIMESTAMP(6), RAND(), 'a'), \
                 (LOCALTIMESTAMP(6), RAND(), 'b'), (NOW(6) - INTERVAL 1 DAY, RAND(), 'c')",
            ],
        )
        .await;
    // Under another time zone: NOW() into DATETIME is local time there.
    // Under another time zone, sql_mode and connection character set: NOW()
    // into DATETIME is local time there, `||` concatenates, literals are latin1.
    leader.session = vec![
        ("time_zone".into(), "+05:00".into()),
        ("sql_mode".into(), "PIPES_AS_CONCAT".into()),
        ("character_set_connection".into(), "latin1".into()),
    ];
    leader
        .commit(
            d,
            &["INSERT INTO t (now6, ts, note) VALUES (NOW(6), NOW(6), CONCAT('t' || 'z', @@time_zone, CHARSET('x')))"],
        )
        .await;
    // A latin1 client: its bytes (UTF-8 for "é") are two latin1 characters.
    leader.session = vec![("character_set_client".into(), "latin1".into())];
    leader.commit(d, &["INSERT INTO t (note) VALUES ('é')"]).await;
    // Back to the defaults: the follower's session must be too.
    leader.session.clear();
    leader
        .commit(
            d,
            &[
                "INSERT INTO t (now6, ts, note) VALUES (NOW(6), NOW(6), CONCAT('d', @@time_zone, CHARSET('x')))",
                "UPDATE t SET r = RAND(), unix = UNIX_TIMESTAMP(NOW()) WHERE id <= 2",
                "INSERT INTO t (now6, r, note) SELECT now6 - INTERVAL id HOUR, RAND(), 'copied' FROM t WHERE id <= 3",
            ],
        )
        .await;
    let lsn = leader.commit(d, &["DELETE FROM t WHERE note = 'b'"]).await;
    wait_applied(&repl, SHARED_FOLLOWERS, lsn).await;
    let all = assert_same(cluster, &format!("SELECT * FROM `{d}`.t ORDER BY id")).await;
    assert_eq!(all.len(), 9);
    // The session context was there for the one statement, and only for it.
    let notes = assert_same(cluster, &format!("SELECT note FROM `{d}`.t WHERE id IN (5, 6, 7) ORDER BY id")).await;
    assert_eq!(text(&notes[0][0]), "tz+05:00latin1");
    assert_eq!(text(&notes[1][0]), "Ã©");
    let back = text(&notes[2][0]);
    assert!(!back.starts_with("d+05:00") && back.ends_with("utf8mb4"), "the session's own settings again: {back}");
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_increment_ids_match_after_a_rollback_on_the_leader() {
    let cluster = maria_cluster();
    let db = fresh_maria_database().await;
    let (_topology, repl) = replicate(&mysql_config(cluster, "")).await;
    let mut leader = Leader::connect(cluster, &repl).await;
    let mut other = Leader::connect(cluster, &repl).await;
    let d = db.name();
    leader.ddl(d, "CREATE TABLE a (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(10))").await;
    leader.ddl(d, "CREATE TABLE b (id BIGINT AUTO_INCREMENT PRIMARY KEY, a_id INT)").await;
    leader.commit(d, &["INSERT INTO a (v) VALUES ('one'), ('two')"]).await;
    // Consumes id 3 on the leader only.
    leader.roll_back(d, &["INSERT INTO a (v) VALUES ('lost')"]).await;
    leader.commit(d, &["INSERT INTO a (v) VALUES ('four')", "INSERT INTO b (a_id) VALUES (LAST_INSERT_ID())"]).await;
    // LAST_INSERT_ID() of the session, while another session inserted since:
    // the leader's rolled-back insert set it (to 7), which the followers
    // never saw; only the logged context tells them.
    leader.commit(d, &["INSERT INTO a (v) VALUES ('five')"]).await;
    other.commit(d, &["INSERT INTO a (v) VALUES ('six')"]).await;
    leader.roll_back(d, &["INSERT INTO a (v) VALUES ('lost'), ('lost')"]).await;
    leader
        .commit(d, &["INSERT INTO b (a_id) VALUES (LAST_INSERT_ID())", "INSERT INTO a (v) VALUES ('nine'), ('ten')"])
        .await;
    // An explicit id: the OK packet reports it, so it is logged as the
    // statement's INSERT_ID, which nothing takes on the follower; the next
    // entry's trigger must still get the id the leader's did.
    leader.ddl(d, "CREATE TABLE x (k INT PRIMARY KEY)").await;
    leader.ddl(d, "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, k INT)").await;
    leader.ddl(d, "CREATE TRIGGER x_audit AFTER INSERT ON x FOR EACH ROW INSERT INTO audit (k) VALUES (NEW.k)").await;
    leader.commit(d, &["INSERT INTO a (id, v) VALUES (100, 'explicit')"]).await;
    let lsn = other.commit(d, &["INSERT INTO x VALUES (1), (2)"]).await;
    wait_applied(&repl, SHARED_FOLLOWERS, lsn).await;
    let audit = assert_same(cluster, &format!("SELECT id, k FROM `{d}`.audit ORDER BY id")).await;
    assert_eq!(audit.iter().map(|r| text(&r[0])).collect::<Vec<_>>(), ["1", "2"]);
    let a = assert_same(cluster, &format!("SELECT id, v FROM `{d}`.a ORDER BY id")).await;
    let ids: Vec<String> = a.iter().map(|r| text(&r[0])).collect();
    assert_eq!(ids, ["1", "2", "4", "5", "6", "9", "10", "100"]);
    let b = assert_same(cluster, &format!("SELECT id, a_id FROM `{d}`.b ORDER BY id")).await;
    let b: Vec<(String, String)> = b.iter().map(|r| (text(&r[0]), text(&r[1]))).collect();
    assert_eq!(b, [("1".to_string(), "4".to_string()), ("2".to_string(), "7".to_string())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn ddl_entries_create_and_alter_tables() {
    let cluster = maria_cluster();
    let db = fresh_maria_database().await;
    let (_topology, repl) = replicate(&mysql_config(cluster, "")).await;
    let mut leader = Leader::connect(cluster, &repl).await;
    let d = db.name();
    leader.ddl(d, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB").await;
    leader.commit(d, &["INSERT INTO t VALUES (1, 'before')"]).await;
    let alter = leader.ddl(d, "ALTER TABLE t ADD COLUMN c INT NOT NULL DEFAULT 7, ADD INDEX by_v (v)").await;
    leader
        .commit(d, &["INSERT INTO t (id, v, c) VALUES (2, 'after', 8)", "INSERT INTO t (id, v) VALUES (3, 'dflt')"])
        .await;
    leader.ddl(d, "CREATE TABLE gone (id INT)").await;
    let lsn = leader.ddl(d, "DROP TABLE gone").await;
    wait_applied(&repl, SHARED_FOLLOWERS, lsn).await;
    assert_same(cluster, &format!("SELECT * FROM `{d}`.t ORDER BY id")).await;
    assert_same(
        cluster,
        &format!(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, COLUMN_KEY \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{d}' ORDER BY TABLE_NAME, ORDINAL_POSITION"
        ),
    )
    .await;
    let indexes = assert_same(
        cluster,
        &format!(
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = '{d}' ORDER BY 1, 2"
        ),
    )
    .await;
    assert_eq!(indexes.len(), 2, "PRIMARY and by_v");
    // Every node is migrated, and each follower keeps a copy of the entry.
    assert_same(cluster, "SELECT version, name FROM _chorus.migrations ORDER BY version").await;
    for f in cluster.followers() {
        let copy = rows(f, &format!("SELECT entry FROM _chorus.log WHERE lsn = {alter}")).await;
        let Value::Bytes(raw) = &copy[0][0] else { panic!("{copy:?}") };
        let entry = LogEntry::decode(raw).unwrap();
        assert!(entry.ddl && entry.statements[0].sql.starts_with("ALTER TABLE"), "{entry:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_transaction_across_two_databases() {
    let cluster = maria_cluster();
    let (one, two) = (fresh_maria_database().await, fresh_maria_database().await);
    let (a, b) = (one.name(), two.name());
    let (_topology, repl) = replicate(&mysql_config(cluster, "")).await;
    let mut leader = Leader::connect(cluster, &repl).await;
    leader.ddl(a, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))").await;
    leader.ddl(b, "CREATE TABLE u (id INT PRIMARY KEY, v VARCHAR(20))").await;
    let copy = format!("INSERT INTO u (id, v) SELECT id + 10, v FROM `{a}`.t");
    let qa = format!("UPDATE `{a}`.t SET v = CONCAT(v, '+') WHERE id = 1");
    let qb = format!("INSERT INTO `{b}`.u VALUES (3, 'qualified')");
    let lsn = leader
        .commit_in(&[
            (Some(a), "INSERT INTO t VALUES (1, 'in a'), (2, 'also a')"),
            (Some(b), "INSERT INTO u VALUES (1, 'in b')"),
            (Some(b), copy.as_str()),
            (None, qa.as_str()),
            (None, qb.as_str()),
            (Some(a), "DELETE FROM t WHERE id = 2"),
        ])
        .await;
    wait_applied(&repl, SHARED_FOLLOWERS, lsn).await;
    let t = assert_same(cluster, &format!("SELECT id, v FROM `{a}`.t ORDER BY id")).await;
    assert_eq!(t.len(), 1);
    let u = assert_same(cluster, &format!("SELECT id, v FROM `{b}`.u ORDER BY id")).await;
    assert_eq!(u.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_failing_on_one_follower_is_a_divergence() {
    let cluster = private_maria_cluster(2);
    let db = fresh_maria_database_on(&cluster).await;
    let d = db.name();
    let (topology, repl) = replicate(&mysql_config(&cluster, "")).await;
    let (f1, f2) = (topology.followers()[0], topology.followers()[1]);
    assert_eq!(&*topology.node(f1).name, "follower1");
    let mut leader = Leader::connect(&cluster, &repl).await;
    leader.ddl(d, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))").await;
    let lsn = leader.commit(d, &["INSERT INTO t VALUES (1, 'one')"]).await;
    wait_applied(&repl, 2, lsn).await;

    // A row only follower1 has: the leader's insert of the same key fails there.
    let mut direct = db.connect_node(&cluster.followers()[0]).await;
    direct.query_drop("INSERT INTO t VALUES (5, 'only here')").await.unwrap();
    direct.disconnect().await.unwrap();
    let bad = leader.commit(d, &["INSERT INTO t VALUES (4, 'four')", "INSERT INTO t VALUES (5, 'leader')"]).await;
    let after = leader.commit(d, &["INSERT INTO t VALUES (6, 'six')"]).await;
    wait_node_applied(&repl, f2, after).await;

    let state = repl.state();
    eventually("follower1's divergence is recorded", async || !state.divergences(SERVER_LOG).is_empty()).await;
    let divergences = state.divergences(SERVER_LOG);
    assert_eq!(divergences.len(), 1, "{divergences:?}");
    let div = &divergences[0];
    assert_eq!((div.node.as_str(), div.lsn, div.seq), ("follower1", bad, 1));
    assert_eq!(div.statement, "INSERT INTO t VALUES (5, 'leader')");
    assert!(div.error.contains("1062") && div.error.contains(d), "{}", div.error);
    assert!(topology.node(f1).is_diverged() && !topology.node(f1).is_readable());
    assert!(topology.node(f2).is_readable());
    assert!((0..4).all(|_| topology.pick_follower() == Some(f2)));

    // follower1 stopped before the entry: nothing of it committed there.
    assert_eq!(state.applied(SERVER_LOG, f1), Some(bad - 1));
    let f1_node = &cluster.followers()[0];
    assert_eq!(text(&rows(f1_node, "SELECT lsn FROM _chorus.applied").await[0][0]), (bad - 1).to_string());
    let f1_rows = rows(f1_node, &format!("SELECT id FROM `{d}`.t ORDER BY id")).await;
    assert_eq!(f1_rows.iter().map(|r| text(&r[0])).collect::<Vec<_>>(), ["1", "5"]);
    // The other follower goes on applying.
    let last = leader.commit(d, &["UPDATE t SET v = 'changed' WHERE id = 1"]).await;
    wait_node_applied(&repl, f2, last).await;
    assert_same_on(&cluster, &[&cluster.followers()[1]], &format!("SELECT * FROM `{d}`.t ORDER BY id")).await;
    assert_eq!(state.applied(SERVER_LOG, f1), Some(bad - 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_down_at_startup_and_killed_mid_stream_catches_up() {
    let cluster = private_maria_cluster(2);
    let db = fresh_maria_database_on(&cluster).await;
    let d = db.name().to_string();
    let config = mysql_config(
        &cluster,
        "[health]\ninterval = \"100ms\"\ntimeout = \"2s\"\n[replication]\nlog_retention = \"1s\"\n",
    );
    let follower1 = &cluster.followers()[0];
    // Down before chorus starts: prepare() skips it, its applier migrates it later.
    tokio::task::block_in_place(|| follower1.kill()).unwrap();
    let (topology, repl) = replicate(&config).await;
    let checks = chorus::health::mysql::spawn(topology.clone(), config.health.clone(), Duration::from_secs(2));
    let f1 = topology.followers()[0];
    eventually("follower1 is seen down", async || !topology.node(f1).is_healthy()).await;

    let mut leader = Leader::connect(&cluster, &repl).await;
    leader.ddl(&d, "CREATE TABLE counter (id INT PRIMARY KEY, n INT NOT NULL)").await;
    leader.ddl(&d, "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, r DOUBLE, at DATETIME(6))").await;
    leader.commit(&d, &["INSERT INTO counter VALUES (1, 0)"]).await;
    tokio::task::block_in_place(|| follower1.start()).unwrap();
    eventually("follower1 is healthy again", async || topology.node(f1).is_healthy()).await;

    // A stream of writes; follower1 is killed while applying it, and the
    // second half is written after the kill.
    const WRITES: usize = 300;
    let killed = Arc::new(tokio::sync::Notify::new());
    let writer = {
        let (d, mut leader, killed) = (d.clone(), leader, killed.clone());
        tokio::spawn(async move {
            let mut lsn = 0;
            for i in 0..WRITES {
                if i == WRITES / 2 {
                    killed.notified().await;
                }
                lsn = leader
                    .commit(
                        &d,
                        &["UPDATE counter SET n = n + 1 WHERE id = 1", "INSERT INTO t (r, at) VALUES (RAND(), NOW(6))"],
                    )
                    .await;
            }
            lsn
        })
    };
    let state = repl.state();
    let start = state.applied(SERVER_LOG, f1).unwrap_or(0);
    eventually("follower1 applies part of the stream", async || {
        state.applied(SERVER_LOG, f1).is_some_and(|a| a >= start + 30)
    })
    .await;
    tokio::task::block_in_place(|| follower1.kill()).unwrap();
    let at_kill = state.applied(SERVER_LOG, f1).unwrap();
    killed.notify_one();
    eventually("follower1 is seen down again", async || !topology.node(f1).is_healthy()).await;
    tokio::task::block_in_place(|| follower1.start()).unwrap();
    let last = writer.await.unwrap();
    assert!(at_kill < last, "the kill came after the stream ended");
    wait_applied(&repl, 2, last).await;
    eventually("follower1 is healthy at the end", async || topology.node(f1).is_healthy()).await;
    let counter = assert_same(&cluster, &format!("SELECT n FROM `{d}`.counter")).await;
    assert_eq!(text(&counter[0][0]), WRITES.to_string(), "every increment exactly once");
    assert_eq!(assert_same(&cluster, &format!("SELECT * FROM `{d}`.t ORDER BY id")).await.len(), WRITES);
    assert!(state.divergences(SERVER_LOG).is_empty(), "{:?}", state.divergences(SERVER_LOG));

    // Everything is applied and older than the 1 s retention: trimmed everywhere.
    for node in cluster.nodes() {
        eventually(&format!("{}'s log is trimmed", node.name()), async || {
            text(&rows(node, "SELECT COUNT(*) FROM _chorus.log").await[0][0]) == "0"
        })
        .await;
    }
    for c in checks {
        c.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_replication_resumes_without_applying_twice() {
    let cluster = maria_cluster();
    let db = fresh_maria_database().await;
    let d = db.name();
    let config = mysql_config(cluster, "");
    let (_topology, first) = replicate(&config).await;
    let mut leader = Leader::connect(cluster, &first).await;
    leader.ddl(d, "CREATE TABLE counter (id INT PRIMARY KEY, n INT NOT NULL)").await;
    leader.commit(d, &["INSERT INTO counter VALUES (1, 0)"]).await;
    let mut lsn = 0;
    for _ in 0..10 {
        lsn = leader.commit(d, &["UPDATE counter SET n = n + 1 WHERE id = 1"]).await;
    }
    wait_applied(&first, SHARED_FOLLOWERS, lsn).await;
    first.shutdown();
    leader.repl = None;
    drop(first);

    // Written while this chorus replicates nothing (another test's may).
    for _ in 0..10 {
        leader.commit(d, &["UPDATE counter SET n = n + 1 WHERE id = 1"]).await;
    }
    let (_topology, second) = replicate(&config).await;
    leader.repl = Some(second.clone());
    lsn = leader.commit(d, &["UPDATE counter SET n = n + 1 WHERE id = 1"]).await;
    wait_applied(&second, SHARED_FOLLOWERS, lsn).await;
    let counter = assert_same(cluster, &format!("SELECT n FROM `{d}`.counter")).await;
    assert_eq!(text(&counter[0][0]), "21");
    for f in cluster.followers() {
        let applied: i64 = text(&rows(f, "SELECT lsn FROM _chorus.applied").await[0][0]).parse().unwrap();
        assert!(applied >= lsn, "{}: {applied} < {lsn}", f.name());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_the_followers_and_apply_each_entry_once() {
    let cluster = maria_cluster();
    let db = fresh_maria_database().await;
    let d = db.name();
    let config = mysql_config(cluster, "");
    let (_ta, a) = replicate(&config).await;
    let (_tb, b) = replicate(&config).await;
    let mut via_a = Leader::connect(cluster, &a).await;
    let mut via_b = Leader::connect(cluster, &b).await;
    via_a.ddl(d, "CREATE TABLE counter (id INT PRIMARY KEY, n INT NOT NULL)").await;
    via_b.commit(d, &["INSERT INTO counter VALUES (1, 0)"]).await;
    let mut lsn = 0;
    for i in 0..20 {
        let leader = if i % 2 == 0 { &mut via_a } else { &mut via_b };
        lsn = leader.commit(d, &["UPDATE counter SET n = n + 1 WHERE id = 1"]).await;
    }
    // Whichever applies a follower, both instances know its progress.
    wait_applied(&a, SHARED_FOLLOWERS, lsn).await;
    wait_applied(&b, SHARED_FOLLOWERS, lsn).await;
    assert_eq!(text(&assert_same(cluster, &format!("SELECT n FROM `{d}`.counter")).await[0][0]), "20");

    // One goes away: the other applies from now on (taking over if it must).
    a.shutdown();
    via_a.repl = None;
    for _ in 0..5 {
        lsn = via_a.commit(d, &["UPDATE counter SET n = n + 1 WHERE id = 1"]).await;
    }
    lsn = via_b.commit(d, &["UPDATE counter SET n = n + 1 WHERE id = 1"]).await.max(lsn);
    wait_applied(&b, SHARED_FOLLOWERS, lsn).await;
    assert_eq!(text(&assert_same(cluster, &format!("SELECT n FROM `{d}`.counter")).await[0][0]), "26");
    assert!(a.state().divergences(SERVER_LOG).is_empty() && b.state().divergences(SERVER_LOG).is_empty());
}

/// The crash window of a DDL entry: the follower ran the DDL, and the
/// applier stopped before recording it (the DDL marker says so). Applied
/// again, the "already there" errors mean done: an ALTER's duplicate
/// column, and a DROP DATABASE whose USE finds its database gone.
#[tokio::test(flavor = "multi_thread")]
async fn interrupted_ddl_is_recorded_when_applied_again() {
    let cluster = maria_cluster();
    let db = fresh_maria_database().await;
    let (_topology, repl) = replicate(&mysql_config(cluster, "")).await;
    let mut leader = Leader::connect(cluster, &repl).await;
    let d = db.name();
    let gone = format!("{d}_x");
    leader.ddl(d, "CREATE TABLE t (id INT PRIMARY KEY)").await;
    let lsn = leader.ddl(d, &format!("CREATE DATABASE `{gone}`")).await;
    wait_applied(&repl, SHARED_FOLLOWERS, lsn).await;
    for (ddl_db, sql) in [
        (d.to_string(), "ALTER TABLE t ADD COLUMN c INT".to_string()),
        (gone.clone(), format!("DROP DATABASE `{gone}`")),
    ] {
        // Holding the LSN row: no other entry can take the next LSN meanwhile.
        let statement = leader.run(Some(&ddl_db), &sql).await;
        leader.conn.query_drop("START TRANSACTION").await.unwrap();
        leader.conn.query_drop("UPDATE _chorus.lsn SET lsn = lsn + 1 WHERE id = 1").await.unwrap();
        let next: i64 = leader.conn.query_first("SELECT lsn FROM _chorus.lsn WHERE id = 1").await.unwrap().unwrap();
        // Every entry before it (other tests' too) applied first: recording
        // one would clear the marker set below.
        wait_applied(&repl, SHARED_FOLLOWERS, next - 1).await;
        for f in cluster.followers() {
            // What the interrupted attempt left: the DDL ran, the marker is set.
            let mut c = f.connect(&ddl_db).await.unwrap();
            c.query_drop(&sql).await.unwrap();
            c.exec_drop("UPDATE _chorus.applied SET ddl_lsn = ? WHERE id = 1", (next,)).await.unwrap();
        }
        let hex: String =
            LogEntry { statements: vec![statement], ddl: true }.encode().iter().map(|b| format!("{b:02X}")).collect();
        leader
            .conn
            .query_drop(format!(
                "INSERT INTO _chorus.log (lsn, committed_at, entry) VALUES ({next}, UTC_TIMESTAMP(6), X'{hex}')"
            ))
            .await
            .unwrap();
        leader.conn.query_drop("COMMIT").await.unwrap();
        leader.notify();
        wait_applied(&repl, SHARED_FOLLOWERS, next).await;
    }
    assert!(repl.state().divergences(SERVER_LOG).is_empty(), "{:?}", repl.state().divergences(SERVER_LOG));
    let lsn = leader.commit(d, &["INSERT INTO t VALUES (1, 2)"]).await;
    wait_applied(&repl, SHARED_FOLLOWERS, lsn).await;
    assert_same(cluster, &format!("SELECT * FROM `{d}`.t ORDER BY id")).await;
    assert_same(cluster, &format!("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{gone}'"))
        .await;
}
