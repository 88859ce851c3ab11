//! Routing through chorus, proven by the port of the server that answered: reads
//! spread over the followers; writes, DDL, locking reads, volatile functions,
//! writable CTEs and read-write transactions run on the leader; read-only
//! transactions stay on one follower; session state that exists on one server
//! only (temp tables, LISTEN, PREPARE, advisory locks) pins the session to the
//! leader.

use futures_util::StreamExt;
use integration_tests::*;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, Client};

/// (port, backend pid) of the server connection that ran a simple query.
async fn port_and_pid(client: &Client) -> (String, String) {
    let rows = simple_rows(client, "SELECT current_setting('port'), pg_backend_pid()").await;
    let row = &rows[0];
    (row[0].clone().unwrap(), row[1].clone().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_reads_are_spread_over_both_followers() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)").await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;

    // Each routed request takes the next follower. tokio-postgres's query()
    // adds requests of its own (prepare, close) whose pipelining depends on
    // timing, so each loop sends one kind of request only.
    let mut simple = BTreeSet::new();
    for _ in 0..10 {
        let port = simple_value(&client, "SELECT current_setting('port') FROM t LIMIT 1").await.unwrap();
        simple.insert(port);
    }
    let stmt = client.prepare("SELECT current_setting('port'), count(*) FROM t").await.unwrap();
    let mut extended = BTreeSet::new();
    for _ in 0..10 {
        let row = client.query_one(&stmt, &[]).await.unwrap();
        assert_eq!(row.get::<_, i64>(1), 2);
        extended.insert(row.get::<_, String>(0));
    }
    assert_eq!(simple, db.follower_ports(), "simple-protocol reads, leader is {}", db.leader_port());
    assert_eq!(extended, db.follower_ports(), "extended-protocol reads, leader is {}", db.leader_port());
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_and_ddl_go_to_the_leader() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE t (id int PRIMARY KEY, port text)").await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;
    let leader = db.leader_port();

    let rows = client
        .query("INSERT INTO t VALUES (1, 'inserted'), (2, 'x') RETURNING current_setting('port')", &[])
        .await
        .unwrap();
    let ports: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ports, vec![leader.clone(), leader.clone()], "INSERT");
    let port =
        simple_value(&client, "UPDATE t SET port = 'y' WHERE id = 2 RETURNING current_setting('port')").await.unwrap();
    assert_eq!(port, leader, "UPDATE");
    let port = simple_value(&client, "DELETE FROM t WHERE id = 2 RETURNING current_setting('port')").await.unwrap();
    assert_eq!(port, leader, "DELETE");
    // Writes without RETURNING land on the leader too.
    client.execute("INSERT INTO t VALUES (3, 'plain')", &[]).await.unwrap();
    client.batch_execute("UPDATE t SET port = 'updated' WHERE id = 3").await.unwrap();

    // DDL: only the leader has the new objects.
    client.batch_execute("CREATE TABLE made_here AS SELECT 'made'::text AS port").await.unwrap();
    client.batch_execute("ALTER TABLE t ADD COLUMN extra int").await.unwrap();
    client.batch_execute("CREATE INDEX t_port ON t (port)").await.unwrap();

    assert_eq!(
        db.value_on_leader("SELECT string_agg(id || ':' || port, ',' ORDER BY id) FROM t").await.as_deref(),
        Some("1:inserted,3:updated")
    );
    assert_eq!(db.value_on_leader("SELECT port FROM made_here").await.as_deref(), Some("made"));
    assert_eq!(
        db.value_on_leader("SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'extra'")
            .await
            .as_deref(),
        Some("1")
    );
    // Replicated: every follower ends up with the same rows and objects.
    assert_converged(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn locking_reads_sequences_and_writable_ctes_go_to_the_leader() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE t (id int); INSERT INTO t VALUES (1); CREATE SEQUENCE s").await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;
    let leader = db.leader_port();

    for sql in [
        "SELECT current_setting('port') FROM t FOR UPDATE",
        "SELECT current_setting('port') FROM t FOR SHARE",
        "SELECT current_setting('port') FROM t FOR NO KEY UPDATE SKIP LOCKED",
    ] {
        for _ in 0..3 {
            assert_eq!(simple_value(&client, sql).await.unwrap(), leader, "{sql}");
            let row = client.query_one(sql, &[]).await.unwrap();
            assert_eq!(row.get::<_, String>(0), leader, "{sql} (extended)");
        }
    }

    for expected in 1..=4i64 {
        let row = client.query_one("SELECT nextval('s'), current_setting('port')", &[]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), expected, "nextval numbering");
        assert_eq!(row.get::<_, String>(1), leader, "nextval");
    }
    assert_eq!(db.value_on_leader("SELECT last_value FROM s").await.as_deref(), Some("4"));

    let sql = "WITH ins AS (INSERT INTO t VALUES (2) RETURNING id) SELECT current_setting('port'), id FROM ins";
    let row = client.query_one(sql, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), leader, "writable CTE");
    let rows = simple_rows(
        &client,
        "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING id) SELECT current_setting('port') FROM d",
    )
    .await;
    assert_eq!(rows, vec![vec![Some(leader.clone())]], "writable CTE (simple)");
    assert_eq!(db.value_on_leader("SELECT string_agg(id::text, ',') FROM t").await.as_deref(), Some("2"));
    // Replicated, sequence state included.
    assert_converged(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_functions_route_by_volatility() {
    let db = fresh_database().await;
    db.execute_on_all(
        "CREATE FUNCTION vol_port() RETURNS text VOLATILE LANGUAGE sql AS $$ SELECT current_setting('port') $$;
         CREATE FUNCTION stable_port() RETURNS text STABLE LANGUAGE sql AS $$ SELECT current_setting('port') $$;
         CREATE FUNCTION imm_add(a int, b int) RETURNS int IMMUTABLE LANGUAGE sql AS $$ SELECT a + b $$;
         CREATE SCHEMA app;
         CREATE FUNCTION app.vol_port() RETURNS text VOLATILE LANGUAGE sql AS $$ SELECT current_setting('port') $$;",
    )
    .await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;
    let leader = db.leader_port();

    for _ in 0..3 {
        assert_eq!(simple_value(&client, "SELECT vol_port()").await.unwrap(), leader, "VOLATILE function");
        let row = client.query_one("SELECT app.vol_port()", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), leader, "schema-qualified VOLATILE function");
    }
    // The VOLATILE calls were logged (they may write): until both followers
    // have applied them, the session's reads avoid the one behind.
    chorus.wait_caught_up(db.name()).await;
    // Each session's reads rotate over the followers, one step per routed
    // request: keep the loops free of other requests so both are visited.
    let mut stable_ports = BTreeSet::new();
    for _ in 0..4 {
        stable_ports.insert(simple_value(&client, "SELECT stable_port()").await.unwrap());
    }
    // One prepared statement (tokio-postgres closes a dropped one with a request
    // of its own, which shifts the rotation).
    let stmt = client.prepare("SELECT imm_add($1, 2), current_setting('port')").await.unwrap();
    let mut immutable_ports = BTreeSet::new();
    for _ in 0..4 {
        let row = client.query_one(&stmt, &[&40i32]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 42);
        immutable_ports.insert(row.get::<_, String>(1));
    }
    assert_eq!(immutable_ports, db.follower_ports(), "IMMUTABLE functions run on followers");
    assert_eq!(stable_ports, db.follower_ports(), "STABLE functions run on followers");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_write_transaction_stays_on_one_leader_connection() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE t (id int)").await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;
    let leader = db.leader_port();

    // Simple protocol.
    client.batch_execute("BEGIN").await.unwrap();
    let first = port_and_pid(&client).await;
    assert_eq!(first.0, leader);
    let ts1 = simple_value(&client, "SELECT now()::text").await;
    client.batch_execute("SELECT pg_sleep(0.02)").await.unwrap();
    let ts2 = simple_value(&client, "SELECT now()::text").await;
    assert_eq!(ts1, ts2, "now() moved: the statements did not run in one transaction");
    for _ in 0..5 {
        assert_eq!(port_and_pid(&client).await, first, "a statement left the transaction's connection");
    }
    client.batch_execute("COMMIT").await.unwrap();

    // Extended protocol, through tokio-postgres's Transaction.
    let mut client = client;
    let txn = client.transaction().await.unwrap();
    let mut seen = BTreeSet::new();
    for i in 0..5 {
        let row = txn
            .query_one("SELECT current_setting('port'), pg_backend_pid(), txid_current_if_assigned()", &[])
            .await
            .unwrap();
        seen.insert((row.get::<_, String>(0), row.get::<_, i32>(1)));
        if i == 2 {
            txn.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
        }
    }
    assert_eq!(seen.len(), 1, "transaction spread over connections: {seen:?}");
    assert_eq!(seen.iter().next().unwrap().0, leader);
    // Our own uncommitted insert is visible inside the transaction.
    let n: i64 = txn.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    txn.rollback().await.unwrap();
    assert_eq!(db.value_on_leader("SELECT count(*) FROM t").await.as_deref(), Some("0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_transactions_stay_on_one_follower() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE t (id int); INSERT INTO t VALUES (1)").await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;

    let mut followers_used = BTreeSet::new();
    for begin in ["BEGIN READ ONLY", "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"] {
        for _ in 0..3 {
            client.batch_execute(begin).await.unwrap();
            let first = port_and_pid(&client).await;
            assert!(db.is_follower_port(&first.0), "{begin}: answered by {}", first.0);
            followers_used.insert(first.0.clone());
            let ts1 = simple_value(&client, "SELECT now()::text").await;
            let row = client
                .query_one(
                    "SELECT current_setting('port'), pg_backend_pid()::text, current_setting('transaction_read_only')",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), first, "{begin}: left the follower");
            assert_eq!(row.get::<_, String>(2), "on");
            assert_eq!(port_and_pid(&client).await, first);
            assert_eq!(simple_value(&client, "SELECT now()::text").await, ts1, "{begin}: not one transaction");
            client.batch_execute("COMMIT").await.unwrap();
        }
    }
    assert_eq!(followers_used, db.follower_ports(), "read-only transactions are spread too");

    // BEGIN; SET TRANSACTION READ ONLY: the whole transaction on a follower.
    client.batch_execute("BEGIN").await.unwrap();
    client.batch_execute("SET TRANSACTION READ ONLY").await.unwrap();
    let first = port_and_pid(&client).await;
    assert!(db.is_follower_port(&first.0), "SET TRANSACTION READ ONLY: answered by {}", first.0);
    assert_eq!(simple_value(&client, "SELECT count(*) FROM t").await.as_deref(), Some("1"));
    assert_eq!(port_and_pid(&client).await, first);
    client.batch_execute("COMMIT").await.unwrap();

    // tokio-postgres's builder sends "START TRANSACTION READ ONLY".
    let mut client = client;
    let txn = client.build_transaction().read_only(true).start().await.unwrap();
    let a: String = txn.query_one("SELECT current_setting('port')", &[]).await.unwrap().get(0);
    let b: String = txn.query_one("SELECT current_setting('port')", &[]).await.unwrap().get(0);
    assert!(db.is_follower_port(&a), "builder read-only transaction on {a}");
    assert_eq!(a, b);
    txn.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_in_a_follower_transaction_is_refused() {
    let db = fresh_database().await;
    db.execute_on_all(
        "CREATE TABLE t (id int);
         CREATE FUNCTION writer() RETURNS int VOLATILE LANGUAGE sql AS $$ INSERT INTO t VALUES (99) RETURNING id $$",
    )
    .await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;

    // (how the transaction starts, a statement that must not run on the follower)
    let cases = [
        ("BEGIN READ ONLY", "INSERT INTO t VALUES (1)"),
        ("BEGIN READ ONLY", "CREATE TABLE u (x int)"),
        ("BEGIN; SET TRANSACTION READ ONLY", "UPDATE t SET id = 2"),
        ("BEGIN READ ONLY", "SELECT writer()"),
        // PostgreSQL allows these before the transaction's first query: they
        // would make the follower's transaction writable.
        ("BEGIN READ ONLY", "SET TRANSACTION READ WRITE"),
        ("BEGIN READ ONLY", "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE"),
        ("BEGIN READ ONLY", "SET LOCAL transaction_read_only = off"),
        ("BEGIN; SET TRANSACTION READ ONLY", "SET TRANSACTION READ WRITE; SELECT writer()"),
        ("BEGIN READ ONLY", "SET transaction_read_only = off"),
        ("BEGIN READ ONLY", "SET default_transaction_read_only = off"),
    ];
    for (begin, stmt) in cases {
        for s in begin.split("; ") {
            client.batch_execute(s).await.unwrap();
        }
        if !stmt.starts_with("SET") {
            let port = answering_port(&client).await;
            assert!(db.is_follower_port(&port), "{begin}: on {port}");
        }
        let e = match client.batch_execute(stmt).await {
            Ok(()) => panic!("{begin}; {stmt}: succeeded on {}", answering_port(&client).await),
            Err(e) => e,
        };
        assert_eq!(sqlstate(&e), "25006", "{begin}; {stmt}: {}", error_text(&e));
        if stmt.starts_with("SET") {
            // Even if the SET had gone through, a write must still fail.
            let e = client.batch_execute("SELECT writer()").await.expect_err("writer() after SET");
            assert!(["25006", "25P02"].contains(&sqlstate(&e).as_str()), "{begin}; {stmt}: {}", error_text(&e));
        }
        client.batch_execute("ROLLBACK").await.unwrap();
    }
    // The extended protocol is guarded as well.
    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    let e = client.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "25006", "extended: {}", error_text(&e));
    client.batch_execute("ROLLBACK").await.unwrap();

    for (node, v) in db.value_on_each("SELECT count(*) || '/' || (to_regclass('u') IS NULL)::text FROM t").await {
        assert_eq!(v.as_deref(), Some("0/true"), "{node} changed");
    }
    // The session goes on normally.
    assert!(db.is_follower_port(&answering_port(&client).await));
    client.execute("INSERT INTO t VALUES (7)", &[]).await.unwrap();
    assert_eq!(db.value_on_leader("SELECT string_agg(id::text, ',') FROM t").await.as_deref(), Some("7"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_temp_table_pins_the_session_to_the_leader() {
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let pinned = chorus.connect(db.name()).await;
    let other = chorus.connect(db.name()).await;
    assert!(db.is_follower_port(&answering_port(&pinned).await));

    pinned.batch_execute("CREATE TEMP TABLE scratch (v int)").await.unwrap();
    pinned.execute("INSERT INTO scratch VALUES (1), (2)", &[]).await.unwrap();
    let (_, pid) = port_and_pid(&pinned).await;
    for _ in 0..6 {
        assert_eq!(port_and_pid(&pinned).await, (db.leader_port(), pid.clone()), "pinned session left the leader");
        let row = pinned.query_one("SELECT sum(v)::int, current_setting('port') FROM scratch", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 3);
        assert_eq!(row.get::<_, String>(1), db.leader_port());
    }
    let mut ports = BTreeSet::new();
    for _ in 0..6 {
        ports.insert(answering_port(&other).await);
    }
    assert_eq!(ports, db.follower_ports(), "another session was pinned too");
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_pins_and_notifications_arrive() {
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let (listener, mut connection) =
        tokio_postgres::connect(&chorus.url(db.name()), tokio_postgres::NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string(), n.process_id()));
            }
        }
    });
    let notifier = chorus.connect(db.name()).await;

    listener.batch_execute("LISTEN chorus_events").await.unwrap();
    let (port, pid) = port_and_pid(&listener).await;
    assert_eq!(port, db.leader_port(), "LISTEN did not pin the session");
    assert_eq!(answering_port(&listener).await, db.leader_port());

    // The listener is idle: chorus must pass the notification on unprompted.
    for i in 0..3 {
        notifier.batch_execute(&format!("NOTIFY chorus_events, 'hello {i}'")).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("notification {i} not delivered within 5 s"))
            .unwrap();
        assert_eq!((got.0.as_str(), got.1.as_str()), ("chorus_events", format!("hello {i}").as_str()));
        assert_ne!(got.2.to_string(), pid, "the sender is the notifier's server process");
    }
    // pg_notify() is volatile: it reaches the leader too.
    notifier.query("SELECT pg_notify('chorus_events', 'via function')", &[]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!(got.1, "via function");
    // A notification to a channel nobody listens to is not delivered.
    notifier.batch_execute("NOTIFY other_channel, 'x'").await.unwrap();
    listener.batch_execute("UNLISTEN *").await.unwrap();
    notifier.batch_execute("NOTIFY chorus_events, 'after unlisten'").await.unwrap();
    assert_eq!(answering_port(&listener).await, db.leader_port(), "still pinned");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_err(),
        "a notification arrived that should not have"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_prepare_and_execute_pin_to_the_leader() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE t (id int, name text); INSERT INTO t VALUES (1, 'one'), (2, 'two')").await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;

    client
        .batch_execute("PREPARE by_id(int) AS SELECT name, current_setting('port') FROM t WHERE id = $1")
        .await
        .unwrap();
    for (id, name) in [(1, "one"), (2, "two"), (1, "one")] {
        let rows = simple_rows(&client, &format!("EXECUTE by_id({id})")).await;
        assert_eq!(rows, vec![vec![Some(name.to_string()), Some(db.leader_port())]]);
        assert_eq!(answering_port(&client).await, db.leader_port(), "PREPARE did not pin");
    }
    assert_eq!(simple_value(&client, "SELECT count(*) FROM pg_prepared_statements").await.as_deref(), Some("1"));
    client.batch_execute("DEALLOCATE by_id").await.unwrap();
    let e = client.batch_execute("EXECUTE by_id(1)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "26000", "{}", error_text(&e));
}

#[tokio::test(flavor = "multi_thread")]
async fn advisory_locks_pin_to_the_leader() {
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let holder = chorus.connect(db.name()).await;
    let other = chorus.connect(db.name()).await;

    assert!(db.is_follower_port(&answering_port(&other).await));
    holder.batch_execute("SELECT pg_advisory_lock(4242)").await.unwrap();
    assert!(db.is_follower_port(&answering_port(&other).await), "the other session is pinned too");
    let (port, pid) = port_and_pid(&holder).await;
    assert_eq!(port, db.leader_port(), "an advisory lock did not pin the session");
    // The lock is held on the leader: another session cannot take it.
    let got: bool = other.query_one("SELECT pg_try_advisory_lock(4242)", &[]).await.unwrap().get(0);
    assert!(!got, "another session took a lock that is held");
    let lockers = db
        .value_on_leader("SELECT string_agg(pid::text, ',') FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242")
        .await;
    assert_eq!(lockers, Some(pid.clone()), "the lock is held by the pinned connection");
    // Unlock from the same server connection.
    let released: bool = holder.query_one("SELECT pg_advisory_unlock(4242)", &[]).await.unwrap().get(0);
    assert!(released);
    let got: bool = other.query_one("SELECT pg_try_advisory_lock(4242)", &[]).await.unwrap().get(0);
    assert!(got);
}

/// Synchronized snapshots (what `pg_dump -j` and parallel exporters do): a
/// read-only transaction exports its snapshot on the follower it runs on;
/// every transaction that imports it runs on that same follower (the only
/// server where it exists) and sees exactly its data, also after later
/// commits. Several importers, so that plain rotation would have sent some
/// of them to the other follower.
#[tokio::test(flavor = "multi_thread")]
async fn transactions_importing_a_snapshot_run_where_it_was_exported() {
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let writer = chorus.connect(db.name()).await;
    writer.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)").await.unwrap();
    chorus.wait_caught_up(db.name()).await;

    let exporter = chorus.connect(db.name()).await;
    exporter.batch_execute("BEGIN").await.unwrap();
    exporter.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").await.unwrap();
    let row = &simple_rows(&exporter, "SELECT pg_export_snapshot(), current_setting('port')").await[0];
    let (id, port) = (row[0].clone().unwrap(), row[1].clone().unwrap());
    assert!(db.is_follower_port(&port), "the exporting read-only transaction ran on {port}");
    assert_eq!(simple_value(&exporter, "SELECT count(*) FROM t").await.as_deref(), Some("2"));

    // Committed after the export: importers must not see it.
    writer.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    chorus.wait_caught_up(db.name()).await;

    for i in 0..4 {
        let importer = chorus.connect(db.name()).await;
        importer.batch_execute("BEGIN").await.unwrap();
        importer.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").await.unwrap();
        importer
            .batch_execute(&format!("SET TRANSACTION SNAPSHOT '{id}'"))
            .await
            .unwrap_or_else(|e| panic!("importer {i}: {}", error_text(&e)));
        let row = &simple_rows(&importer, "SELECT count(*), current_setting('port') FROM t").await[0];
        assert_eq!(row[0].as_deref(), Some("2"), "importer {i} sees the exported snapshot");
        assert_eq!(row[1].as_deref(), Some(port.as_str()), "importer {i} ran where the snapshot lives");
        importer.batch_execute("COMMIT").await.unwrap();
    }
    exporter.batch_execute("COMMIT").await.unwrap();
    // Without a snapshot, read-only transactions go on being spread.
    let mut ports = BTreeSet::new();
    for _ in 0..4 {
        writer.batch_execute("BEGIN").await.unwrap();
        writer.batch_execute("SET TRANSACTION READ ONLY").await.unwrap();
        ports.insert(answering_port(&writer).await);
        writer.batch_execute("COMMIT").await.unwrap();
    }
    assert_eq!(ports, db.follower_ports());
    assert_converged(&db).await;
}

/// A session pinned to the leader (pg_dump's `set_config` pins it) runs its
/// READ ONLY transactions there: volatile functions in them are reads, not
/// writes to log (taking the LSN would fail: the transaction is read-only).
/// If the transaction is made read-write before its first query, what it
/// then writes through a volatile function is logged and replicated.
#[tokio::test(flavor = "multi_thread")]
async fn read_only_transactions_on_the_leader_call_volatile_functions() {
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let c = chorus.connect(db.name()).await;
    c.batch_execute(
        "CREATE TABLE w (v int);
         CREATE FUNCTION addw() RETURNS int VOLATILE LANGUAGE sql AS $$ INSERT INTO w VALUES (1) RETURNING v $$",
    )
    .await
    .unwrap();
    c.batch_execute("SELECT set_config('search_path', 'public', false)").await.unwrap();
    for begin in ["BEGIN READ ONLY", "BEGIN; SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"] {
        for s in begin.split("; ") {
            c.batch_execute(s).await.unwrap();
        }
        let row = &simple_rows(&c, "SELECT pg_export_snapshot() IS NOT NULL, random() < 2, current_setting('port')").await[0];
        assert_eq!(row[0].as_deref(), Some("t"), "{begin}");
        assert!(db.is_leader_port(row[2].as_deref().unwrap()), "{begin}: a pinned session stays on the leader");
        let e = c.batch_execute("SELECT addw()").await.unwrap_err();
        assert_eq!(sqlstate(&e), "25006", "{begin}: {}", error_text(&e));
        c.batch_execute("ROLLBACK").await.unwrap();
    }
    // Made read-write before its first query: the write is logged.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SET TRANSACTION READ ONLY").await.unwrap();
    c.batch_execute("SET TRANSACTION READ WRITE").await.unwrap();
    assert_eq!(simple_value(&c, "SELECT addw()").await.as_deref(), Some("1"));
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    c.batch_execute("SET TRANSACTION READ WRITE").await.unwrap();
    assert_eq!(simple_value(&c, "SELECT addw()").await.as_deref(), Some("1"));
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(db.value_on_leader("SELECT count(*) FROM w").await.as_deref(), Some("2"));
    assert_converged(&db).await;
}
