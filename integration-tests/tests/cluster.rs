//! The harness itself: real servers start, each answers on its own port, fixtures
//! reach every node, psql and pgbench work, a follower survives SIGKILL and
//! restarts, and chorus starts and stops in-process.

use integration_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_node_answers_on_its_own_port() {
    let db = fresh_database().await;
    assert_eq!(cluster().followers().len(), SHARED_FOLLOWERS);
    for node in cluster().nodes() {
        let client = db.connect_node(node).await;
        let row = client.query_one("SELECT current_setting('port')", &[]).await.unwrap();
        let port: String = row.get(0);
        assert_eq!(port, node.port().to_string(), "{} answered on another port", node.name());
        assert_eq!(db.node_by_port(&port).map(|n| n.name()), Some(node.name()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fixtures_reach_every_node_and_psql_reads_them() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3)").await;
    for url in std::iter::once(db.leader_url()).chain(db.follower_urls()) {
        assert_eq!(psql_sql(&url, "SELECT count(*) FROM t"), "3");
    }
    let copied = psql(&db.leader_url(), &["-c", "\\copy t FROM STDIN"], Some(b"4\n5\n"));
    assert!(copied.success(), "{}", copied.stderr);
    assert_eq!(psql_sql(&db.leader_url(), "SELECT sum(id) FROM t"), "15");
    let failed = psql(&db.leader_url(), &["-c", "SELECT * FROM no_such_table"], None);
    assert!(!failed.success() && failed.stderr.contains("no_such_table"), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbench_runs_against_a_node() {
    let db = fresh_database().await;
    pgbench(&db.leader_url(), &["-i", "-s", "1", "-q"]).assert_ok();
    let run = pgbench(&db.leader_url(), &["-S", "-c", "2", "-T", "1"]);
    run.assert_ok();
    assert!(run.tps.is_some_and(|t| t > 0.0), "no tps in:\n{}", run.output.stdout);
    assert!(run.processed.is_some_and(|n| n > 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_follower_restarts() {
    // A cluster of its own: the shared one must stay whole for the other tests.
    let cluster = private_cluster(1);
    let follower = &cluster.followers()[0];
    let db = fresh_database_on(&cluster).await;
    db.execute_on_all("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before')").await;
    let client = db.connect_node(follower).await;

    follower.kill().unwrap();
    assert!(!follower.is_running());
    assert!(client.simple_query("SELECT 1").await.is_err(), "a killed server still answered");
    assert!(try_connect(&follower.url()).await.is_err());

    follower.start().unwrap();
    assert!(follower.is_running());
    let client = db.connect_node(follower).await;
    let row = client.query_one("SELECT current_setting('port'), (SELECT v FROM kept)", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), follower.port().to_string());
    assert_eq!(row.get::<_, String>(1), "before", "crash recovery lost committed data");

    follower.restart().unwrap();
    let client = db.connect_node(follower).await;
    client.simple_query("SELECT 1").await.unwrap();
    follower.stop().unwrap();
    assert!(!follower.is_running());
    // The leader was never disturbed.
    db.connect_leader().await.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn chorus_starts_and_stops_in_process() {
    let chorus = start_chorus(cluster());
    assert_ne!(chorus.port(), 0);
    assert_eq!(chorus.config().nodes.len(), 1 + SHARED_FOLLOWERS);
    assert!(chorus.url("db").starts_with(&format!("postgres://{CHORUS_USER}:")));
    chorus.shutdown().unwrap();
}
