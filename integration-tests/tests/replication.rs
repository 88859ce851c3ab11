//! Statement replication end to end: real clients write through chorus, the
//! appliers replay the log on the followers, and `verify` (which waits for
//! every follower to reach the leader's LSN) finds no table that differs.

use chorus::verify::{Report, VerifyOptions, verify_with};
use integration_tests::*;

async fn verify_db(db: &TestDb<'_>) -> Report {
    let config = chorus_config(db.cluster());
    let options = VerifyOptions { databases: vec![db.name().to_string()] };
    verify_with(&config, &options).await.unwrap_or_else(|e| panic!("verify failed: {e}"))
}

fn workload_size() -> usize {
    std::env::var("CHORUS_WORKLOAD_TRANSACTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(40)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_randomized_workload_converges() {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let opts = WorkloadOptions::from_env(6, workload_size());
    let stats = run_workload(&chorus.url(db.name()), &opts).await;
    eprintln!("{stats:?}");
    assert!(stats.committed > 0, "{stats:?}");
    let report = verify_db(&db).await;
    assert!(report.converged(), "seed {}: {:#?}", opts.seed, report.differences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_init_and_tpcb_with_8_clients_converge() {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let url = chorus.url(db.name());
    pgbench(&url, &["-i", "-s", "1", "-q"]).assert_ok();
    let run = pgbench(&url, &["-c", "8", "-j", "2", "-t", "100"]);
    run.assert_ok();
    let report = verify_db(&db).await;
    assert!(report.converged(), "{:#?}", report.differences);
    // Every transaction reached the followers: 8 x 100 history rows each.
    for node in db.cluster().followers() {
        let c = db.connect_node(node).await;
        let n: i64 = c.query_one("SELECT count(*) FROM pgbench_history", &[]).await.unwrap().get(0);
        assert_eq!(n, 800, "{}", node.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_time_functions_are_the_leaders_on_every_node() {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let c = chorus.connect(db.name()).await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, a timestamptz, b timestamp, c date, d timestamptz(0))")
        .await
        .unwrap();
    c.batch_execute("SET TIME ZONE 'Asia/Kolkata'").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (1, now(), LOCALTIMESTAMP, CURRENT_DATE, CURRENT_TIMESTAMP(0))")
        .await
        .unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.execute("INSERT INTO t VALUES ($1, transaction_timestamp() - interval '1 day', now(), now(), now())", &[&2i32])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    c.batch_execute("UPDATE t SET a = now() WHERE id = 1").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    let report = verify_db(&db).await;
    assert!(report.converged(), "{:#?}", report.differences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_match_after_rollbacks_and_failed_inserts() {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let c = chorus.connect(db.name()).await;
    c.batch_execute("CREATE TABLE t (id serial PRIMARY KEY, v text NOT NULL)").await.unwrap();
    c.batch_execute("CREATE TABLE u (id int GENERATED ALWAYS AS IDENTITY, v int)").await.unwrap();
    c.batch_execute("INSERT INTO t (v) VALUES ('a'), ('b')").await.unwrap();
    c.batch_execute("BEGIN; INSERT INTO t (v) VALUES ('rolled back'); INSERT INTO u (v) VALUES (1); ROLLBACK")
        .await
        .unwrap();
    assert!(c.batch_execute("INSERT INTO t (v) VALUES (NULL)").await.is_err());
    c.batch_execute("INSERT INTO t (v) VALUES ('c')").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SAVEPOINT s").await.unwrap();
    assert!(c.batch_execute("INSERT INTO t (v) SELECT NULL FROM generate_series(1, 3)").await.is_err());
    c.batch_execute("ROLLBACK TO SAVEPOINT s").await.unwrap();
    c.batch_execute("INSERT INTO t (v) VALUES ('d')").await.unwrap();
    c.execute("SELECT nextval('u_id_seq')", &[]).await.unwrap();
    c.batch_execute("INSERT INTO u (v) VALUES (2)").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    // Values used by a transaction rolled back last are synced by the next.
    c.batch_execute("BEGIN; INSERT INTO t (v) VALUES ('gone'); ROLLBACK").await.unwrap();
    c.batch_execute("INSERT INTO u (v) VALUES (3)").await.unwrap();
    let report = verify_db(&db).await;
    assert!(report.converged(), "{:#?}", report.differences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_mid_workload_catches_up() {
    init_logging_from_env();
    let cluster = private_cluster(2);
    let db = fresh_database_on(&cluster).await;
    let chorus = start_chorus(&cluster);
    let url = chorus.url(db.name());
    let opts = WorkloadOptions::from_env(4, workload_size());
    let work = {
        let url = url.clone();
        let opts = opts.clone();
        tokio::spawn(async move { run_workload(&url, &opts).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let f = &cluster.followers()[0];
    f.kill().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    f.start().unwrap();
    let stats = work.await.expect("workload");
    assert!(stats.committed > 0, "{stats:?}");
    let report = verify_db(&db).await;
    assert!(report.converged(), "seed {}: {:#?}", opts.seed, report.differences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semi_sync_and_sync_commits_are_on_followers_when_they_return() {
    init_logging_from_env();
    let db = fresh_database().await;
    for (mode, needed) in [(chorus::config::AckMode::SemiSync, 1), (chorus::config::AckMode::Sync, SHARED_FOLLOWERS)] {
        let chorus = start_chorus_with(cluster(), |c| c.replication.ack = mode);
        let c = chorus.connect(db.name()).await;
        c.batch_execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, mode text)").await.unwrap();
        let followers: Vec<_> = futures_join(db.cluster().followers().iter().map(|f| db.connect_node(f))).await;
        for i in 0..20 {
            let id = i + if needed == 1 { 0 } else { 100 };
            if i % 2 == 0 {
                c.execute("INSERT INTO t VALUES ($1, $2)", &[&id, &format!("{mode:?}")]).await.unwrap();
            } else {
                c.batch_execute(&format!("BEGIN; INSERT INTO t VALUES ({id}, 'txn'); COMMIT")).await.unwrap();
            }
            let mut have = 0;
            for f in &followers {
                have += f.query("SELECT 1 FROM t WHERE id = $1", &[&id]).await.unwrap().len();
            }
            assert!(have >= needed, "{mode:?}: row {id} on {have} followers when COMMIT returned");
        }
    }
    assert_converged(&db).await;
}

async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in fs {
        out.push(f.await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_commit_without_followers_returns_after_the_timeout_with_a_warning() {
    init_logging_from_env();
    let cluster = private_cluster(1);
    let db = fresh_database_on(&cluster).await;
    let chorus = start_chorus_with(&cluster, |c| {
        c.replication.ack = chorus::config::AckMode::Sync;
        c.replication.ack_timeout = std::time::Duration::from_millis(300);
        // The follower stays in rotation: a down follower stops counting.
        c.health.interval = std::time::Duration::from_secs(600);
    });
    let url = chorus.url(db.name());
    psql_sql(&url, "CREATE TABLE t (id int)");
    // The follower's applier cannot apply while the follower is down; the
    // health check (every 10 minutes here) has not taken it out of rotation.
    cluster.followers()[0].stop().unwrap();
    let out = psql(&url, &["-c", "INSERT INTO t VALUES (1)"], None);
    assert!(out.success(), "{}", out.stderr);
    assert!(out.stderr.contains("WARNING") && out.stderr.contains("ack_timeout"), "{}", out.stderr);
    cluster.followers()[0].start().unwrap();
    assert_converged(&db).await;
}
