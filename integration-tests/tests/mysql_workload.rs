//! The randomized MySQL workload ([`MysqlWorkload`]) through chorus in front
//! of real MariaDB servers: every follower ends with exactly the leader's
//! rows, also when one of them is killed (SIGKILL) in the middle of it.
//!
//! `CHORUS_WORKLOAD_SEED=<seed>` replays a run's choices;
//! `CHORUS_WORKLOAD_TRANSACTIONS=<n>` sets the units per session.

use integration_tests::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn workload_size() -> usize {
    std::env::var("CHORUS_WORKLOAD_TRANSACTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(40)
}

/// `chorus verify` (the command) agrees that `db` converged.
fn chorus_verify(cluster: &MariaCluster, chorus: &MyChorus, db: &str) {
    let config = tests_root().join(format!("verify-{}-{db}.toml", std::process::id()));
    std::fs::write(&config, cluster.chorus_config_toml(chorus.addr(), CHORUS_USER, CHORUS_PASSWORD)).unwrap();
    let out = run_chorus(&["verify", "--config", config.to_str().unwrap(), "-d", db], &[]);
    let _ = std::fs::remove_file(&config);
    assert!(out.success(), "chorus verify: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_randomized_mysql_workload_converges() {
    init_logging_from_env();
    let started = Instant::now();
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let work = Arc::new(MysqlWorkload::new(WorkloadOptions::from_env(6, workload_size()), false));
    let stats = work.run(chorus.opts(db.name()).into()).await;
    let seed = work.opts.seed;
    assert!(stats.committed > 0 && stats.rolled_back > 0, "seed {seed}: {stats:?}");
    assert!(stats.expected_failures > 0 && stats.refused > 0, "seed {seed}: {stats:?}");
    assert_eq!(stats.reconnects, 0, "seed {seed}");
    eprintln!("workload ran in {:?}", started.elapsed());
    chorus.assert_converged(maria_cluster(), db.name()).await;
    chorus_verify(maria_cluster(), &chorus, db.name());
    eprintln!("seed {seed}: converged after {:?}", started.elapsed());
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_mid_mysql_workload_catches_up() {
    init_logging_from_env();
    let started = Instant::now();
    let cluster = private_maria_cluster(2);
    let db = fresh_maria_database_on(&cluster).await;
    let chorus = start_mysql_chorus_with(&cluster, |c| c.health.interval = Duration::from_millis(200));
    let work = Arc::new(MysqlWorkload::new(WorkloadOptions::from_env(4, workload_size() * 3 / 2), true));
    let seed = work.opts.seed;
    let running = {
        let (work, opts) = (work.clone(), chorus.opts(db.name()).into());
        tokio::spawn(async move { work.run(opts).await })
    };
    // Kill a follower a quarter of the way in, bring it back half-way.
    let wait_for = async |units: u64| {
        while work.units_done() < units && !running.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    wait_for(work.units_total() / 4).await;
    let f = &cluster.followers()[0];
    let killed_at = work.units_done();
    tokio::task::block_in_place(|| f.kill()).unwrap();
    wait_for(work.units_total() / 2).await;
    tokio::task::block_in_place(|| f.start()).unwrap();
    let restarted_at = work.units_done();
    let stats = running.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    eprintln!("seed {seed}: killed after {killed_at} units, restarted after {restarted_at}: {stats:?}");
    assert!(restarted_at < work.units_total(), "seed {seed}: the workload ended before the follower came back");
    assert!(stats.committed > 0, "seed {seed}: {stats:?}");
    chorus.assert_converged(&cluster, db.name()).await;
    chorus_verify(&cluster, &chorus, db.name());
    eprintln!("seed {seed}: converged after {:?}", started.elapsed());
    assert_no_chorus_panics();
}
