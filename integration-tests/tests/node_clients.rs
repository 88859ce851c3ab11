//! Node.js drivers through chorus, on both dialects, as applications use
//! them: mysql2 and pg (integration-tests/node/clients.js; scripts/test.sh
//! installs Node.js and the drivers from npm into integration-tests/node/).
//! Every test ends with the followers compared to the leader.

use integration_tests::*;
use std::process::Command;

fn run_node(dialect: &str, url: String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/node");
    let mut cmd = Command::new("node");
    cmd.current_dir(dir).arg("clients.js").arg(dialect).arg(url);
    run_client(&mut cmd, "scripts/test.sh installs node and the drivers", 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_pg_parameters_prepared_statements_and_pools_converge() {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    run_node("postgresql", chorus.url(db.name()));
    assert_converged(&db).await;
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_mysql2_text_binary_bulk_pools_and_change_user_converge() {
    init_logging_from_env();
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    run_node("mysql", chorus.url(db.name()));
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}
