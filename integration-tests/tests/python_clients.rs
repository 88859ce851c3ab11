//! Python's PostgreSQL drivers through chorus, as applications use them
//! (scripts in integration-tests/python/; scripts/test.sh installs psycopg).

use integration_tests::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_executemany_pipelines_and_temporary_staging_converge() {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/psycopg3_pipelines.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(chorus.url(db.name())).arg(db.leader_url());
    run_client(&mut cmd, "scripts/test.sh installs python3 and psycopg", 120);
    assert_converged(&db).await;
}
