//! chorus itself killed with SIGKILL while MySQL clients write through it,
//! then restarted: no half transaction reaches any node, every commit a
//! client saw acknowledged is on the leader and every follower, and the
//! followers converge (every table compared, and `chorus verify`). The
//! MySQL twin of chorus_crash.rs (its own binary: it runs chorus as a
//! process and uses a private MariaDB cluster).

use integration_tests::*;
use mysql_async::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WRITERS: i32 = 4;
/// chorus is killed this many times.
const ROUNDS: i32 = 3;

fn spawn_chorus(config: &std::path::Path) -> Child {
    Command::new(chorus_binary())
        .args(["run", "--config", config.to_str().expect("utf-8 path")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start chorus")
}

/// mysql_async settings for `db` through chorus at `port`, over TCP only
/// (mysql_async's default would move to the server's own Unix socket).
fn opts(port: u16, db: &str) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(CHORUS_USER))
        .pass(Some(CHORUS_PASSWORD))
        .db_name(Some(db))
        .prefer_socket(false)
        .into()
}

async fn wait_connect(port: u16, db: &str) -> mysql_async::Conn {
    for _ in 0..300 {
        if let Ok(c) = mysql_async::Conn::new(opts(port, db)).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chorus did not come up on port {port}");
}

/// How a writer wrote one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `BEGIN`, two INSERTs (text protocol), an UPDATE of those rows and one
    /// of the writer's tally (prepared), `COMMIT`.
    Explicit,
    /// One two-row INSERT in autocommit mode (prepared).
    Autocommit,
}

fn kind_of(txn: i32) -> Kind {
    if txn % 2 == 1 { Kind::Explicit } else { Kind::Autocommit }
}

/// One transaction of writer `w`; `Ok` once the server's OK for its COMMIT
/// (or its autocommit statement) came back through chorus.
async fn write_one(c: &mut mysql_async::Conn, w: i32, txn: i32) -> Result<(), mysql_async::Error> {
    match kind_of(txn) {
        Kind::Explicit => {
            c.query_drop("BEGIN").await?;
            c.query_drop(format!("INSERT INTO pairs VALUES ({txn}, 1, 'open')")).await?;
            c.query_drop(format!("INSERT INTO pairs VALUES ({txn}, 2, 'open')")).await?;
            c.exec_drop("UPDATE pairs SET state = 'done' WHERE txn = ?", (txn,)).await?;
            c.exec_drop("UPDATE tally SET txns = txns + 1 WHERE writer = ?", (w,)).await?;
            c.query_drop("COMMIT").await
        }
        Kind::Autocommit => c.exec_drop("INSERT INTO pairs VALUES (?, 1, 'done'), (?, 2, 'done')", (txn, txn)).await,
    }
}

/// Transactions writer `w` writes in `round`: `w`'s millions, `round`'s
/// hundred thousands.
fn txn_id(w: i32, round: i32, i: i32) -> i32 {
    w * 1_000_000 + round * 100_000 + i
}

/// With chorus running: open a transaction that writes and then waits, start
/// [`WRITERS`] writers, SIGKILL chorus once 100 more transactions were
/// acknowledged (recorded in `acked`), and wait for the writers to notice.
async fn kill_while_writing(chorus: &mut Child, port: u16, db: &str, round: i32, acked: &Arc<Mutex<BTreeSet<i32>>>) {
    // A transaction certainly open when chorus dies: it wrote, and waits.
    let held_txn = -10 - round;
    let mut held = mysql_async::Conn::new(opts(port, db)).await.unwrap();
    held.query_drop("START TRANSACTION").await.unwrap();
    held.query_drop(format!("INSERT INTO pairs VALUES ({held_txn}, 1, 'held'), ({held_txn}, 2, 'held')"))
        .await
        .unwrap();
    held.exec_drop("UPDATE tally SET txns = txns + 1 WHERE writer = ?", (-1,)).await.unwrap();

    let before = acked.lock().unwrap().len();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let acked = acked.clone();
        let opts = opts(port, db);
        writers.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(opts).await.expect("a writer connects through chorus");
            for i in 0..100_000 {
                let txn = txn_id(w, round, i);
                match write_one(&mut c, w, txn).await {
                    Ok(()) => {
                        acked.lock().unwrap().insert(txn);
                    }
                    Err(_) => return, // chorus is gone
                }
            }
        }));
    }
    // Kill it once transactions are flowing (some acknowledged, more in flight).
    for _ in 0..600 {
        if acked.lock().unwrap().len() >= before + 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    chorus.kill().expect("SIGKILL chorus");
    chorus.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    assert!(held.query_drop("COMMIT").await.is_err(), "a COMMIT went through a killed chorus");
    assert!(acked.lock().unwrap().len() > before, "round {round}: nothing committed before the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chorus_killed_mid_transaction_loses_nothing_acknowledged_and_replicates_no_half() {
    init_logging_from_env();
    let cluster = private_maria_cluster(2);
    let db = fresh_maria_database_on(&cluster).await;
    let port = chorus::localcluster::free_ports(1).expect("a free port")[0];
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = cluster.dir().join("chorus-crash");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("chorus.toml");
    std::fs::write(&config, cluster.chorus_config_toml(listen, CHORUS_USER, CHORUS_PASSWORD)).unwrap();

    let mut chorus = spawn_chorus(&config);
    let mut setup = wait_connect(port, db.name()).await;
    setup
        .query_drop(
            "CREATE TABLE pairs (txn INT NOT NULL, part INT NOT NULL, state VARCHAR(10) NOT NULL, \
             PRIMARY KEY (txn, part))",
        )
        .await
        .unwrap();
    setup.query_drop("CREATE TABLE tally (writer INT PRIMARY KEY, txns INT NOT NULL)").await.unwrap();
    let rows: Vec<String> = (-1..WRITERS).map(|w| format!("({w}, 0)")).collect();
    setup.query_drop(format!("INSERT INTO tally VALUES {}", rows.join(", "))).await.unwrap();
    drop(setup);

    // Each round: writers through a fresh chorus, killed while they write
    // (the earlier rounds' kills also interrupted the appliers).
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    for round in 0..ROUNDS {
        if round > 0 {
            chorus = spawn_chorus(&config);
            drop(wait_connect(port, db.name()).await);
        }
        kill_while_writing(&mut chorus, port, db.name(), round, &acked).await;
    }
    let acked = acked.lock().unwrap().clone();
    let kinds: BTreeSet<Kind> = acked.iter().map(|&t| kind_of(t)).collect();
    assert_eq!(kinds.len(), 2, "both kinds of transaction committed before the kills: {kinds:?}");
    eprintln!("{} transactions acknowledged in {ROUNDS} rounds", acked.len());

    // Restarted once more, chorus resumes replication where every follower
    // stopped.
    chorus = spawn_chorus(&config);
    let mut c = wait_connect(port, db.name()).await;
    c.query_drop("INSERT INTO pairs VALUES (-1, 1, 'done'), (-1, 2, 'done')").await.unwrap();
    c.query_drop("UPDATE tally SET txns = txns + 1 WHERE writer = -1").await.unwrap();
    drop(c);
    assert_maria_converged(&cluster, db.name()).await;
    let text = std::fs::read_to_string(&config).unwrap();
    let out = run_chorus(&["verify", "--config", config.to_str().unwrap(), "-d", db.name()], &[]);
    assert!(out.success(), "verify after the crash: {out:?}\n{text}");
    assert_eq!(out.stdout, "all nodes match (1 database, 2 tables, 3 nodes)\n", "{out:?}");
    chorus.kill().ok();
    chorus.wait().ok();

    for node in cluster.nodes() {
        let mut n = db.connect_node(node).await;
        let rows: Vec<(i32, i64, String)> = n
            .query("SELECT txn, COUNT(*), GROUP_CONCAT(DISTINCT state ORDER BY state) FROM pairs GROUP BY txn")
            .await
            .unwrap();
        let mut present = BTreeSet::new();
        let mut explicit_per_writer: BTreeMap<i32, i64> = BTreeMap::new();
        for (txn, parts, states) in rows {
            assert_eq!((parts, states.as_str()), (2, "done"), "{}: transaction {txn} is there by half", node.name());
            present.insert(txn);
            if txn >= 0 && kind_of(txn) == Kind::Explicit {
                *explicit_per_writer.entry(txn / 1_000_000).or_default() += 1;
            }
        }
        let held: Vec<_> = present.iter().filter(|&&t| t <= -10).collect();
        assert!(held.is_empty(), "{}: transactions open at a kill are there: {held:?}", node.name());
        if node.role() == chorus::config::Role::Leader {
            let unacked = present.iter().filter(|&&t| t >= 0 && !acked.contains(&t)).count();
            eprintln!("committed without an acknowledgement (the kill beat the OK): {unacked}");
        }
        let lost: Vec<_> = acked.difference(&present).collect();
        assert!(lost.is_empty(), "{}: acknowledged transactions missing: {lost:?}", node.name());
        // Each explicit transaction's UPDATE of the tally is there exactly
        // when its rows are.
        let tally: Vec<(i32, i64)> = n.query("SELECT writer, txns FROM tally ORDER BY writer").await.unwrap();
        for (w, txns) in tally {
            let want = if w < 0 { 1 } else { explicit_per_writer.get(&w).copied().unwrap_or(0) };
            assert_eq!(txns, want, "{}: writer {w}'s tally and its transactions' rows disagree", node.name());
        }
    }
}
