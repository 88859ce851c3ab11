//! The follower side of replication against real servers: transactions
//! written straight into the leader's `_chorus.log` (as the leader side of a
//! session logs them: header, simple queries, an extended statement with a
//! binary parameter and a user-type parameter, a COPY, a client encoding
//! other than UTF-8) reach every follower;
//! a follower that was down catches up; a database that exists only on the
//! leader is created on the followers; a statement that fails on one follower
//! only is a divergence that takes it out of the read rotation, also when the
//! follower applies it in a group with other transactions.

use chorus::verify::{VerifyError, VerifyOptions, verify_waiting, verify_with};
use integration_tests::*;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// One log row to write (seq is its position).
struct Entry {
    kind: u8,
    sql: String,
    types: Option<Vec<u32>>,
    params: Option<Vec<u8>>,
}

fn entry(kind: u8, sql: &str) -> Entry {
    Entry { kind, sql: sql.to_string(), types: None, params: None }
}

/// The session context the leader side logs as the header.
const HEADER: &str =
    "RESET ALL; SELECT pg_catalog.set_config('DateStyle', 'ISO, DMY', false); SET search_path = app, public";

/// Run `run` on the leader and log `entries` for it, in one transaction that
/// takes the next LSN first, as a chorus session does. Returns the LSN.
async fn commit_logged(leader: &mut Client, run: &str, entries: &[Entry]) -> i64 {
    let txn = leader.transaction().await.unwrap();
    let lsn: i64 = txn.query_one("UPDATE _chorus.lsn SET lsn = lsn + 1 RETURNING lsn", &[]).await.unwrap().get(0);
    txn.batch_execute(run).await.unwrap_or_else(|e| panic!("{run}: {}", error_text(&e)));
    for (seq, e) in entries.iter().enumerate() {
        txn.execute(
            "INSERT INTO _chorus.log (lsn, seq, kind, sql, param_types, params) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&lsn, &(seq as i32), &(e.kind as i8), &e.sql, &e.types, &e.params],
        )
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();
    lsn
}

/// The tail of a Bind message: format codes, values, no result formats.
fn bind_tail(formats: &[i16], values: &[&[u8]]) -> Vec<u8> {
    let values: Vec<Option<&[u8]>> = values.iter().map(|v| Some(*v)).collect();
    chorus::protocol::build::bind_tail(formats, &values, &[])
}

/// Connect through chorus once, so it sets the database up (schema `_chorus`
/// on every node, feed and appliers) before the test writes its log.
async fn replicated(chorus: &Chorus, db: &str) {
    let c = chorus.connect(db).await;
    c.simple_query("SELECT 1").await.unwrap();
}

async fn wait_applied(chorus: &Chorus, db: &str, followers: usize, lsn: i64, within: Duration) {
    let state = chorus.context().replication.state().clone();
    if let Err(e) = state.wait_applied(db, followers, lsn, within).await {
        let applied: Vec<_> = state.followers().iter().map(|&f| state.applied(db, f)).collect();
        panic!("{followers} follower(s) did not apply LSN {lsn} in {within:?} ({e}); applied: {applied:?}");
    }
}

async fn position(client: &Client, table: &str) -> i64 {
    client.query_one(&format!("SELECT lsn FROM _chorus.{table}"), &[]).await.unwrap().get(0)
}

async fn rows(client: &Client) -> Vec<String> {
    let rows = client.query("SELECT (t.*)::text FROM app.t t ORDER BY id", &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

async fn assert_converged(chorus: &Chorus, db: &str) {
    let options = VerifyOptions { databases: vec![db.to_string()] };
    let report = verify_with(chorus.config(), &options).await.unwrap_or_else(|e| panic!("verify: {e}"));
    assert!(report.converged(), "{:#?}", report.differences);
}

#[tokio::test(flavor = "multi_thread")]
async fn logged_transactions_reach_every_follower() {
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    replicated(&chorus, db.name()).await;
    let mut leader = db.connect_leader().await;

    // DDL and a date read under the header's DateStyle (DMY), an extended
    // statement with a binary int4, a COPY (also DMY).
    let mut x = entry(b'x', "INSERT INTO t (id, v) VALUES ($1, 'extended')");
    x.types = Some(vec![23]);
    x.params = Some(bind_tail(&[1], &[&2i32.to_be_bytes()]));
    let mut c = entry(b'c', "COPY t (id, v, d) FROM STDIN");
    c.params = Some(b"3\tthree\t03/04/2024\n4\t\\N\t\\N\n".to_vec());
    let lsn1 = commit_logged(
        &mut leader,
        "SET LOCAL DateStyle = 'ISO, DMY'; SET LOCAL search_path = app, public; \
         CREATE SCHEMA app; CREATE TYPE mood AS ENUM ('ok', 'bad'); \
         CREATE TABLE t (id int PRIMARY KEY, v text, d date, m mood); \
         INSERT INTO t VALUES (1, 'one', '01/02/2024', 'ok'); INSERT INTO t (id, v) VALUES (2, 'extended'); \
         INSERT INTO t (id, v, d) VALUES (3, 'three', '2024-04-03'), (4, NULL, NULL)",
        &[
            entry(b'h', HEADER),
            entry(
                b'q',
                "CREATE SCHEMA app; CREATE TYPE mood AS ENUM ('ok', 'bad'); \
                 CREATE TABLE t (id int PRIMARY KEY, v text, d date, m mood)",
            ),
            entry(b'q', "INSERT INTO t VALUES (1, 'one', '01/02/2024', 'ok')"),
            x,
            c,
        ],
    )
    .await;

    // A parameter of a user-defined type: its OID is the leader's own.
    let mood: u32 = leader.query_one("SELECT 'app.mood'::regtype::oid", &[]).await.unwrap().get(0);
    let mut x = entry(b'x', "UPDATE t SET m = $1 WHERE id = $2");
    x.types = Some(vec![mood, 23]);
    x.params = Some(bind_tail(&[0], &[b"bad", b"3"]));
    let lsn2 = commit_logged(&mut leader, "UPDATE app.t SET m = 'bad' WHERE id = 3", &[entry(b'h', HEADER), x]).await;
    assert_eq!(lsn2, lsn1 + 1);

    // A client using LATIN1: the follower must read 'é' as the leader did.
    let insert = "INSERT INTO app.t (id, v) VALUES (5, 'café')";
    let latin1 = "RESET ALL; SELECT pg_catalog.set_config('client_encoding', 'LATIN1', false)";
    let lsn3 = commit_logged(&mut leader, insert, &[entry(b'h', latin1), entry(b'q', insert)]).await;

    wait_applied(&chorus, db.name(), SHARED_FOLLOWERS, lsn3, Duration::from_secs(30)).await;
    let expected = rows(&leader).await;
    assert_eq!(
        expected,
        ["(1,one,2024-02-01,ok)", "(2,extended,,)", "(3,three,2024-04-03,bad)", "(4,,,)", "(5,café,,)"]
    );
    let log_rows: i64 = leader.query_one("SELECT count(*) FROM _chorus.log", &[]).await.unwrap().get(0);
    for node in cluster().followers() {
        let f = db.connect_node(node).await;
        assert_eq!(rows(&f).await, expected, "{}", node.name());
        assert_eq!(position(&f, "applied").await, lsn3, "{}", node.name());
        assert_eq!(position(&f, "lsn").await, lsn3, "{}: a promoted follower continues from here", node.name());
        let copied: i64 = f.query_one("SELECT count(*) FROM _chorus.log", &[]).await.unwrap().get(0);
        assert_eq!(copied, log_rows, "{} keeps a copy of the log", node.name());
    }
    assert_converged(&chorus, db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_that_was_down_catches_up_and_missing_databases_are_created() {
    let cluster = private_cluster(2);
    // Only on the leader: chorus creates it on the followers.
    let name = "only_on_leader";
    cluster
        .leader()
        .connect("postgres")
        .await
        .unwrap()
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    // Trim applied log rows at once (every second), to see what is kept.
    let chorus = start_chorus_with(&cluster, |c| c.replication.log_retention = Duration::ZERO);
    replicated(&chorus, name).await;
    for node in cluster.followers() {
        let f = node.connect(name).await.unwrap_or_else(|e| panic!("{} has no {name}: {e}", node.name()));
        assert_eq!(position(&f, "applied").await, 0);
    }
    let mut leader = cluster.leader().connect(name).await.unwrap();
    let create = "CREATE SCHEMA app; CREATE TABLE app.t (id int PRIMARY KEY, v text)";
    let lsn1 = commit_logged(&mut leader, create, &[entry(b'q', create)]).await;
    wait_applied(&chorus, name, 2, lsn1, Duration::from_secs(30)).await;

    let down = &cluster.followers()[0];
    down.stop().unwrap();
    let mut last = lsn1;
    for i in 0..3 {
        let insert = format!("INSERT INTO app.t VALUES ({i}, 'while down')");
        last = commit_logged(&mut leader, &insert, &[entry(b'q', &insert)]).await;
    }
    wait_applied(&chorus, name, 1, last, Duration::from_secs(30)).await;
    let state = chorus.context().replication.state().clone();
    let down_index = chorus.context().topology.nodes().iter().position(|n| *n.name == *down.name()).unwrap();
    assert!(state.applied(name, down_index).is_some_and(|a| a < last));
    // What every follower applied is trimmed; what the stopped one still needs is not.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let split = "SELECT count(*) FILTER (WHERE lsn <= $1), count(*) FILTER (WHERE lsn > $1) FROM _chorus.log";
    let counts = leader.query_one(split, &[&lsn1]).await.unwrap();
    assert_eq!((counts.get::<_, i64>(0), counts.get::<_, i64>(1)), (0, 3));

    down.start().unwrap();
    wait_applied(&chorus, name, 2, last, Duration::from_secs(60)).await;
    let f = down.connect(name).await.unwrap();
    assert_eq!(position(&f, "applied").await, last);
    assert_eq!(rows(&f).await.len(), 3);
    assert_converged(&chorus, name).await;

    // Once everybody has applied everything, the leader and the followers' copies trim it all.
    let mut clients = vec![leader];
    for node in cluster.followers() {
        clients.push(node.connect(name).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for c in &clients {
        while c.query_one("SELECT count(*) FROM _chorus.log", &[]).await.unwrap().get::<_, i64>(0) > 0 {
            assert!(Instant::now() < deadline, "log rows not trimmed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_failing_on_one_follower_only_is_a_divergence() {
    let cluster = private_cluster(2);
    let db = fresh_database_on(&cluster).await;
    let chorus = start_chorus(&cluster);
    replicated(&chorus, db.name()).await;
    let (bad, good) = (&cluster.followers()[0], &cluster.followers()[1]);
    // The follower differs before the statement arrives.
    db.connect_node(bad).await.batch_execute("CREATE TABLE clash (id int)").await.unwrap();

    let mut leader = db.connect_leader().await;
    let create = "CREATE TABLE clash (id int)";
    let lsn1 = commit_logged(&mut leader, create, &[entry(b'h', "RESET ALL"), entry(b'q', create)]).await;
    let next = "CREATE TABLE later (id int)";
    let lsn2 = commit_logged(&mut leader, next, &[entry(b'q', next)]).await;
    wait_applied(&chorus, db.name(), 1, lsn2, Duration::from_secs(30)).await;

    let state = chorus.context().replication.state().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let divergence = loop {
        if let Some(d) = state.divergences(db.name()).pop() {
            break d;
        }
        assert!(Instant::now() < deadline, "no divergence recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((divergence.node.as_str(), divergence.lsn, divergence.seq), (bad.name(), lsn1, 1));
    assert_eq!(divergence.statement, create);
    assert!(divergence.error.contains("42P07"), "{divergence}");

    let topology = &chorus.context().topology;
    let bad_index = topology.nodes().iter().position(|n| *n.name == *bad.name()).unwrap();
    assert!(topology.node(bad_index).is_diverged());
    // Nothing of the failed transaction stayed; the follower stopped there.
    let f = db.connect_node(bad).await;
    assert_eq!(position(&f, "applied").await, lsn1 - 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(position(&f, "applied").await, lsn1 - 1, "the applier stopped");
    assert_eq!(position(&db.connect_node(good).await, "applied").await, lsn2);

    // Reads no longer go to the diverged follower (health checks do not bring it back).
    let client = chorus.connect(db.name()).await;
    for _ in 0..8 {
        let port = answering_port(&client).await;
        assert_ne!(port, bad.port().to_string(), "a read went to the diverged follower");
    }

    // verify names the follower that is behind instead of comparing.
    let options = VerifyOptions { databases: vec![db.name().to_string()] };
    match verify_waiting(chorus.config(), &options, Duration::from_millis(300)).await {
        Err(VerifyError::Behind { database, leader_lsn, behind, .. }) => {
            assert_eq!((database.as_str(), leader_lsn), (db.name(), lsn2));
            assert_eq!(behind.len(), 1, "{behind:?}");
            assert_eq!((behind[0].node.as_str(), behind[0].applied), (bad.name(), Some(lsn1 - 1)));
        }
        other => panic!("expected the follower to be reported behind: {other:?}"),
    }
    assert_no_chorus_panics();
}

/// A follower that was down applies what it missed in groups of LSNs per
/// transaction; a statement failing inside a group is still attributed to its
/// own LSN, and what came before it is applied.
#[tokio::test(flavor = "multi_thread")]
async fn a_divergence_inside_a_group_names_its_lsn_and_keeps_what_came_before() {
    let cluster = private_cluster(2);
    let db = fresh_database_on(&cluster).await;
    let chorus = start_chorus(&cluster);
    replicated(&chorus, db.name()).await;
    let (bad, good) = (&cluster.followers()[0], &cluster.followers()[1]);
    db.connect_node(bad).await.batch_execute("CREATE TABLE clash (id int)").await.unwrap();
    bad.stop().unwrap();

    let mut leader = db.connect_leader().await;
    let first = "CREATE TABLE before_clash (id int); INSERT INTO before_clash VALUES (1)";
    let lsn1 = commit_logged(&mut leader, first, &[entry(b'h', "RESET ALL"), entry(b'q', first)]).await;
    let create = "CREATE TABLE clash (id int)";
    let lsn2 = commit_logged(&mut leader, create, &[entry(b'h', "RESET ALL"), entry(b'q', create)]).await;
    let next = "CREATE TABLE after_clash (id int)";
    let lsn3 = commit_logged(&mut leader, next, &[entry(b'h', "RESET ALL"), entry(b'q', next)]).await;
    wait_applied(&chorus, db.name(), 1, lsn3, Duration::from_secs(30)).await;
    bad.start().unwrap();

    let state = chorus.context().replication.state().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let divergence = loop {
        if let Some(d) = state.divergences(db.name()).pop() {
            break d;
        }
        assert!(Instant::now() < deadline, "no divergence recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((divergence.node.as_str(), divergence.lsn, divergence.seq), (bad.name(), lsn2, 1));
    assert_eq!(divergence.statement, create);
    assert!(divergence.error.contains("42P07"), "{divergence}");
    let f = db.connect_node(bad).await;
    assert_eq!(position(&f, "applied").await, lsn1, "the transaction before the failing one is applied");
    let n: i64 = f.query_one("SELECT count(*) FROM before_clash", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    assert!(f.query_one("SELECT 1 FROM after_clash", &[]).await.is_err(), "nothing after the failing LSN");
    assert_eq!(position(&db.connect_node(good).await, "applied").await, lsn3);
    assert_no_chorus_panics();
}

/// Two chorus processes in front of the same servers. Alone, a chorus's
/// sessions send no NOTIFY with their commits (they hand their LSNs to
/// their own feed); once another chorus feeds the database, both send it
/// again, so each learns of the other's commits at once. Both write, each
/// session reading what the other wrote through a carried position, and the
/// follower converges; when one goes, the other is alone again.
#[tokio::test(flavor = "multi_thread")]
async fn two_chorus_processes_wake_each_other_and_converge() {
    init_logging_from_env();
    let cluster = private_cluster(1);
    let a = start_chorus(&cluster);
    a.connect("postgres").await.batch_execute("CREATE DATABASE multi").await.unwrap();
    let ca = a.connect("multi").await;
    ca.batch_execute("CREATE TABLE t (id int PRIMARY KEY, by text)").await.unwrap();
    let alone = |c: &Chorus| c.context().replication.state().progress("multi").alone();
    async fn until(what: &str, ok: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    until("the only chorus sees it is alone", || alone(&a)).await;
    for i in 0..20 {
        ca.execute("INSERT INTO t VALUES ($1, 'a')", &[&i]).await.unwrap();
    }

    let b = start_chorus(&cluster);
    let cb = b.connect("multi").await;
    until("both see the other", || !alone(&a) && !alone(&b)).await;
    let (wa, wb) = tokio::join!(
        async {
            for i in 100..160 {
                ca.execute("INSERT INTO t VALUES ($1, 'a')", &[&i]).await.unwrap();
            }
        },
        async {
            for i in 200..260 {
                cb.execute("INSERT INTO t VALUES ($1, 'b')", &[&i]).await.unwrap();
            }
        }
    );
    let _ = (wa, wb);
    // What one wrote, the other's session reads once it carries the position.
    let pos: String = simple_value(&ca, "SHOW chorus.position").await.unwrap();
    cb.batch_execute(&format!("SET chorus.position = '{pos}'")).await.unwrap();
    let n: i64 = cb.query_one("SELECT count(*) FROM t WHERE by = 'a'", &[]).await.unwrap().get(0);
    assert_eq!(n, 80);
    assert_converged(&b, "multi").await;

    drop((cb, b));
    until("the remaining chorus is alone again", || alone(&a)).await;
    ca.execute("INSERT INTO t VALUES (999, 'a')", &[]).await.unwrap();
    assert_converged(&a, "multi").await;
}
