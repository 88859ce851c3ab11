//! chorus itself killed with SIGKILL in the middle of writing transactions,
//! then restarted: no half transaction reaches a follower, every commit a
//! client saw acknowledged is on every node, and `verify` finds no difference.
//! (Its own binary: it runs chorus as a process and uses a private cluster.)

use integration_tests::*;
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn spawn_chorus(config: &std::path::Path) -> Child {
    Command::new(chorus_binary())
        .args(["run", "--config", config.to_str().expect("utf-8 path")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start chorus")
}

async fn wait_connect(url: &str) -> tokio_postgres::Client {
    for _ in 0..300 {
        if let Ok(c) = try_connect(url).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chorus did not come up at {url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chorus_killed_mid_transaction_loses_nothing_acknowledged_and_replicates_no_half() {
    init_logging_from_env();
    let cluster = private_cluster(2);
    let db = fresh_database_on(&cluster).await;
    let port = chorus::localcluster::free_ports(1).expect("a free port")[0];
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = cluster.dir().join("chorus-crash");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("chorus.toml");
    std::fs::write(&config, cluster.chorus_config_toml(listen, CHORUS_USER, CHORUS_PASSWORD)).unwrap();
    let url = format!("postgres://{CHORUS_USER}:{CHORUS_PASSWORD}@127.0.0.1:{port}/{}", db.name());

    let mut chorus = spawn_chorus(&config);
    let setup = wait_connect(&url).await;
    setup
        .batch_execute("CREATE TABLE pairs (txn int NOT NULL, part int NOT NULL, PRIMARY KEY (txn, part))")
        .await
        .unwrap();

    // Writers: each transaction inserts two rows; a COMMIT that returned OK
    // is recorded as acknowledged.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let url = url.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let c = connect(&url).await;
            for i in 0..100_000 {
                let txn = w * 1_000_000 + i;
                let r = async {
                    c.batch_execute("BEGIN").await?;
                    c.execute("INSERT INTO pairs VALUES ($1, 1)", &[&txn]).await?;
                    c.execute("INSERT INTO pairs VALUES ($1, 2)", &[&txn]).await?;
                    c.batch_execute("COMMIT").await
                }
                .await;
                match r {
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
        if acked.lock().unwrap().len() >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    chorus.kill().expect("SIGKILL chorus");
    chorus.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "no transaction committed before the kill");

    // Restarted, chorus resumes replication where every follower stopped.
    let mut chorus = spawn_chorus(&config);
    let c = wait_connect(&url).await;
    c.batch_execute("INSERT INTO pairs VALUES (-1, 1), (-1, 2)").await.unwrap();
    assert_converged(&db).await;
    chorus.kill().ok();
    chorus.wait().ok();

    for node in cluster.nodes() {
        let n = db.connect_node(node).await;
        let rows = n.query("SELECT txn, count(*) FROM pairs GROUP BY txn", &[]).await.unwrap();
        let mut present = BTreeSet::new();
        for r in rows {
            let (txn, parts): (i32, i64) = (r.get(0), r.get(1));
            assert_eq!(parts, 2, "{}: transaction {txn} is there by half", node.name());
            present.insert(txn);
        }
        let lost: Vec<_> = acked.difference(&present).collect();
        assert!(lost.is_empty(), "{}: acknowledged transactions missing: {lost:?}", node.name());
    }
}
