//! CREATE DATABASE and DROP DATABASE through chorus, as test runners (Django,
//! Rails, Prisma) send them: mirrored on every follower before the client
//! hears of them, in both protocols; a database created through chorus is
//! replicated at once, also as a copy of a replicated one (TEMPLATE); a drop
//! the leader refuses leaves replication running;
//! what chorus cannot mirror is refused or reported; a follower's copy left
//! over from a dropped database is never applied to as if it were the new
//! one. Every database written through chorus ends compared on every node.

use chorus::verify::{VerifyOptions, verify_with};
use integration_tests::*;
use tokio_postgres::error::SqlState;

/// Does `db` exist on `node`?
async fn exists_on(node: &PgNode, db: &str) -> bool {
    let c = node.connect("postgres").await.unwrap();
    c.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db]).await.unwrap().is_some()
}

/// Every follower of `cluster` holds exactly the leader's data in `db`.
async fn assert_db_converged(cluster: &PgCluster, db: &str) {
    let options = VerifyOptions { databases: vec![db.to_string()] };
    let report = verify_with(&chorus_config(cluster), &options).await.unwrap_or_else(|e| panic!("verify failed: {e}"));
    assert!(report.converged(), "{db} differs: {:#?}", report.differences);
    assert!(report.tables >= 1, "{report:#?}");
}

fn unique(name: &str) -> String {
    format!("{name}_{}", std::process::id())
}

/// Write a little through chorus into `db`: a table with a serial id and a
/// volatile default (what replication must get right from the first LSN).
async fn write_some(chorus: &Chorus, db: &str, rows: i32) {
    let c = chorus.connect(db).await;
    c.batch_execute("CREATE TABLE IF NOT EXISTS t (id serial PRIMARY KEY, v int, at timestamptz DEFAULT now())")
        .await
        .unwrap();
    for i in 0..rows {
        c.execute("INSERT INTO t (v) VALUES ($1)", &[&i]).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn databases_created_and_dropped_through_chorus_are_mirrored_on_every_follower() {
    init_logging_from_env();
    let cluster = cluster();
    let chorus = start_chorus(cluster);
    let admin = chorus.connect("postgres").await;
    let name = unique("Test Created");

    // Simple protocol, a quoted name: on every node as soon as it returns.
    admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
    for node in cluster.nodes() {
        assert!(exists_on(node, &name).await, "{name} missing on {}", node.name());
    }
    write_some(&chorus, &name, 20).await;
    assert_db_converged(cluster, &name).await;

    // A drop the leader refuses (a client still uses the database) keeps it
    // replicated: the open session writes on, and the followers follow.
    let user = chorus.connect(&name).await;
    user.batch_execute("INSERT INTO t (v) VALUES (-1)").await.unwrap();
    let e = admin.batch_execute(&format!("DROP DATABASE \"{name}\"")).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::OBJECT_IN_USE), "{e}");
    user.batch_execute("INSERT INTO t (v) VALUES (-2)").await.unwrap();
    drop(user);
    write_some(&chorus, &name, 5).await;
    assert_db_converged(cluster, &name).await;
    for node in cluster.nodes() {
        assert!(exists_on(node, &name).await, "{name} missing on {} after the refused drop", node.name());
    }

    // Once nobody uses it, the drop goes through, everywhere: chorus closes
    // its own connections to it first (the session of the client that just
    // hung up may still be ending). Extended protocol this time.
    admin.execute(&format!("DROP DATABASE \"{name}\""), &[]).await.unwrap();
    for node in cluster.nodes() {
        assert!(!exists_on(node, &name).await, "{name} still on {}", node.name());
    }

    // The same name again starts afresh: LSN 1, an empty table, converged.
    admin.execute(&format!("CREATE DATABASE \"{name}\""), &[]).await.unwrap();
    write_some(&chorus, &name, 3).await;
    let leader = cluster.leader().connect(&name).await.unwrap();
    let n: i64 = leader.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
    drop(leader);
    assert_db_converged(cluster, &name).await;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\"")).await.unwrap();
    for node in cluster.nodes() {
        assert!(!exists_on(node, &name).await, "{name} still on {}", node.name());
    }
    // IF EXISTS of nothing: the leader's notice, nothing else.
    admin.batch_execute("DROP DATABASE IF EXISTS chorus_no_such_database").await.unwrap();
    admin.batch_execute("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn what_cannot_be_mirrored_gets_a_clear_error() {
    init_logging_from_env();
    let cluster = cluster();
    let chorus = start_chorus(cluster);
    let admin = chorus.connect("postgres").await;
    let name = unique("test_refused");
    // In a transaction block the leader refuses, as it would without chorus.
    admin.batch_execute("BEGIN").await.unwrap();
    let e = admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::ACTIVE_SQL_TRANSACTION), "{e}");
    admin.batch_execute("ROLLBACK").await.unwrap();
    let e = admin.batch_execute(&format!("CREATE DATABASE {name}; SELECT 1")).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::ACTIVE_SQL_TRANSACTION), "{e}");
    // A copy of a database that does not exist: the leader's error.
    let e = admin.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE chorus_no_such_db")).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_DATABASE), "{e}");
    for node in cluster.nodes() {
        assert!(!exists_on(node, &name).await, "{name} exists on {}", node.name());
    }
    // The standard templates are fine; the session goes on.
    admin.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'")).await.unwrap();
    write_some(&chorus, &name, 2).await;
    assert_db_converged(cluster, &name).await;
    admin.batch_execute(&format!("DROP DATABASE {name}")).await.unwrap();
    for node in cluster.nodes() {
        assert!(!exists_on(node, &name).await, "{name} still on {}", node.name());
    }
}

/// A follower that misses a DROP keeps its copy; when a database of that
/// name is created again, the copy is not taken for the new one's (its
/// applied LSN counts the old log): the client hears of it, the follower
/// leaves the read rotation, and once its copy is dropped there, chorus
/// builds the database anew on it.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_left_over_from_a_dropped_database_is_never_applied_to() {
    init_logging_from_env();
    let cluster = private_cluster(1);
    let chorus = start_chorus_with(&cluster, |c| c.health.interval = std::time::Duration::from_millis(100));
    let admin = chorus.connect("postgres").await;
    let name = "test_stale";
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    write_some(&chorus, name, 10).await;
    chorus.wait_caught_up(name).await;

    let follower = &cluster.followers()[0];
    follower.stop().unwrap();
    let notices = collect_notices(&chorus, &format!("DROP DATABASE {name}")).await;
    assert!(notices.iter().any(|n| n.contains("could not drop the copy on follower")), "{notices:?}");
    assert!(!exists_on(cluster.leader(), name).await);
    follower.start().unwrap();
    assert!(exists_on(follower, name).await, "the follower's copy should have survived");

    // Created again: the follower's copy is another database's.
    let notices = collect_notices(&chorus, &format!("CREATE DATABASE {name}")).await;
    assert!(notices.iter().any(|n| n.contains("left over from an earlier database")), "{notices:?}");
    write_some(&chorus, name, 4).await;
    let diverged = || chorus.context().topology.node(chorus.context().topology.followers()[0]).is_diverged();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !diverged() {
        assert!(std::time::Instant::now() < deadline, "the stale follower stayed in the read rotation");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The old rows are still there, untouched by the new database's log.
    let old = follower.connect(name).await.unwrap();
    let n: i64 = old.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 10);
    drop(old);

    // The operator drops the copy; a restarted chorus builds it anew.
    chorus.shutdown().unwrap();
    let direct = follower.connect("postgres").await.unwrap();
    direct.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
    let chorus = start_chorus(&cluster);
    let c = chorus.connect(name).await;
    c.batch_execute("INSERT INTO t (v) VALUES (100)").await.unwrap();
    assert_db_converged(&cluster, name).await;
    let copy = follower.connect(name).await.unwrap();
    let n: i64 = copy.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 5);
}

/// The notices (WARNINGs included) a statement sent through chorus to
/// database `postgres` produced.
async fn collect_notices(chorus: &Chorus, sql: &str) -> Vec<String> {
    let (client, mut conn) = tokio_postgres::connect(&chorus.url("postgres"), tokio_postgres::NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(m) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notice(n)) => {
                    let _ = tx.send(n.message().to_string());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = driver.await;
    let mut out = Vec::new();
    while let Ok(n) = rx.try_recv() {
        out.push(n);
    }
    out
}

/// CREATE DATABASE ... TEMPLATE of a replicated database, with one follower
/// behind on the template (its applier held up by a lock): every follower
/// copies its own template, and the lagging one's copy catches up from the
/// log the leader's copy carries. Both databases converge, and writes to
/// either go on replicating.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_copied_from_a_template_converges_even_from_a_lagging_follower() {
    init_logging_from_env();
    let cluster = cluster();
    let chorus = start_chorus(cluster);
    let admin = chorus.connect("postgres").await;
    let (source, copy) = (unique("test_template_src"), unique("test_template_copy"));
    admin.batch_execute(&format!("CREATE DATABASE {source}")).await.unwrap();
    write_some(&chorus, &source, 5).await;
    chorus.wait_caught_up(&source).await;

    // Hold the first follower's applier: it waits for this lock.
    let lagging = &cluster.followers()[0];
    let lock = lagging.connect(&source).await.unwrap();
    lock.batch_execute("BEGIN; LOCK TABLE t IN SHARE MODE").await.unwrap();
    write_some(&chorus, &source, 7).await;
    chorus.wait_caught_up_on(&source, &[1]).await;

    // The copy waits for nobody: the lagging follower's sessions on the
    // template are ended so it can be copied there.
    admin.batch_execute(&format!("CREATE DATABASE {copy} TEMPLATE {source}")).await.unwrap();
    drop(lock);
    for node in cluster.nodes() {
        assert!(exists_on(node, &copy).await, "{copy} missing on {}", node.name());
    }
    write_some(&chorus, &copy, 2).await;
    write_some(&chorus, &source, 1).await;
    assert_db_converged(cluster, &copy).await;
    assert_db_converged(cluster, &source).await;
    let leader = cluster.leader().connect(&copy).await.unwrap();
    let n: i64 = leader.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 5 + 7 + 2);
    drop(leader);
    for db in [&copy, &source] {
        if let Err(e) = admin.batch_execute(&format!("DROP DATABASE {db}")).await {
            let l = cluster.leader().connect("postgres").await.unwrap();
            let rows = l.query("SELECT application_name, state, query, backend_start::text FROM pg_stat_activity WHERE datname = $1", &[db]).await.unwrap();
            for r in rows { eprintln!("ACTIVITY {:?} {:?} {:?} {:?}", r.get::<_, Option<String>>(0), r.get::<_, Option<String>>(1), r.get::<_, Option<String>>(2), r.get::<_, Option<String>>(3)); }
            panic!("{e}");
        }
    }
}
