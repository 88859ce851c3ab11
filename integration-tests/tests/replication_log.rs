//! The leader side of statement replication: what chorus writes into the
//! leader's `_chorus.log` for each kind of request, and that the followers
//! converge once the appliers have replayed it.

use integration_tests::*;

/// The log rows on the leader, as (lsn, seq, kind, sql).
async fn log_rows(db: &TestDb<'_>) -> Vec<(i64, i32, String, Option<String>)> {
    let leader = db.connect_leader().await;
    leader
        .query("SELECT lsn, seq, kind::text, sql FROM _chorus.log ORDER BY lsn, seq", &[])
        .await
        .expect("read the log")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

async fn setup() -> (TestDb<'static>, Chorus) {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    (db, chorus)
}

#[tokio::test]
async fn autocommit_writes_are_logged_once_each_with_their_lsn() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (1, 'a')").await.unwrap();
    c.execute("INSERT INTO t VALUES ($1, $2)", &[&2i32, &"b"]).await.unwrap();
    // A read is not logged.
    c.query("SELECT 1", &[]).await.unwrap();
    // A failing write leaves nothing in the log.
    assert!(c.batch_execute("INSERT INTO t VALUES (1, 'dup')").await.is_err());
    let rows = log_rows(&db).await;
    let lsns: Vec<i64> = rows.iter().filter(|r| r.1 == 0).map(|r| r.0).collect();
    assert_eq!(lsns, vec![1, 2, 3], "{rows:?}");
    let kinds: Vec<&str> = rows.iter().filter(|r| r.1 > 0).map(|r| r.2.as_str()).collect();
    assert_eq!(kinds, vec!["q", "q", "x"], "{rows:?}");
    assert_eq!(rows.iter().find(|r| r.0 == 3 && r.1 == 1).unwrap().3.as_deref(), Some("INSERT INTO t VALUES ($1, $2)"));
    // The session is fine after the failed write.
    c.batch_execute("SELECT 1").await.unwrap();
    let leader = db.connect_leader().await;
    let n: i64 = leader.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_transaction_is_one_entry_and_rolled_back_work_is_not_logged() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    c.batch_execute("SAVEPOINT s").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    assert!(c.batch_execute("INSERT INTO t VALUES (2)").await.is_err());
    c.batch_execute("ROLLBACK TO SAVEPOINT s").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    // Rolled back whole: no entry, and the LSN it took is given back.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (4); ROLLBACK").await.unwrap();
    c.batch_execute("BEGIN; INSERT INTO t VALUES (5); COMMIT").await.unwrap();
    let rows = log_rows(&db).await;
    let entry = |lsn: i64| -> Vec<String> {
        rows.iter().filter(|r| r.0 == lsn && r.1 > 0).map(|r| r.3.clone().unwrap_or_default()).collect()
    };
    assert_eq!(entry(2), vec!["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (3)"], "{rows:?}");
    assert_eq!(entry(3), vec!["INSERT INTO t VALUES (5)"], "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r.1 == 0).count(), 3, "{rows:?}");
    // Nothing is left open or held: the session goes on.
    c.batch_execute("SELECT 1").await.unwrap();
    let leader = db.connect_leader().await;
    let n: i64 = leader.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
}

#[tokio::test]
async fn copy_from_stdin_logs_its_data() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute("CREATE TABLE t (id int, v text)").await.unwrap();
    let sink = c.copy_in("COPY t FROM STDIN").await.unwrap();
    use futures_util::SinkExt;
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from_static(b"1\tone\n2\ttwo\n")).await.unwrap();
    let n = sink.as_mut().finish().await.unwrap();
    assert_eq!(n, 2);
    let leader = db.connect_leader().await;
    let row = leader
        .query_one("SELECT kind::text, sql, params FROM _chorus.log WHERE lsn = 2 AND seq = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "c");
    assert_eq!(row.get::<_, Vec<u8>>(2), b"1\tone\n2\ttwo\n".to_vec());
}

#[tokio::test]
async fn refused_writes_get_a_clear_error_and_leave_the_session_usable() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute("CREATE TABLE t (id int)").await.unwrap();
    let e = c.batch_execute("INSERT INTO t VALUES (1); COMMIT").await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    let e = c.batch_execute("PREPARE TRANSACTION 'x'").await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    c.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    let leader = db.connect_leader().await;
    let n: i64 = leader.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);

    // Values chorus cannot know, where it cannot capture the rows written
    // (an UPDATE of a table without a primary key): refused before the leader
    // runs them. (tests/replication_capture.rs has the writes it captures.)
    for sql in
        ["UPDATE t SET id = extract(epoch FROM clock_timestamp())::int", "UPDATE t SET id = (random() * 100)::int"]
    {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "0A000", "{sql}: {e}");
        assert!(error_text(&e).contains("cannot replicate"), "{sql}: {}", error_text(&e));
    }
    // ... also through the extended protocol, and inside a transaction (which it aborts).
    let e = c.execute("UPDATE t SET id = $1 + (random() * 0)::int", &[&3i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (4)").await.unwrap();
    let e = c.batch_execute("UPDATE t SET id = (random() * 100)::int").await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    let e = c.batch_execute("INSERT INTO t VALUES (5)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    // A SELECT that writes nothing may use them.
    c.batch_execute("SELECT random(), gen_random_uuid(), clock_timestamp()").await.unwrap();

    c.batch_execute("CREATE TABLE d (id int PRIMARY KEY, at timestamptz DEFAULT now(), n int DEFAULT 7)")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO d (id, at) VALUES (1, now())").await.unwrap();
    c.execute("INSERT INTO d (id, at) VALUES ($1, CURRENT_TIMESTAMP)", &[&2i32]).await.unwrap();
    c.batch_execute("UPDATE d SET n = n + 1").await.unwrap();
    // DDL on such a table is not a row write.
    c.batch_execute("ALTER TABLE d ADD COLUMN m int DEFAULT 5").await.unwrap();
    assert_converged(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_autocommit_writes_in_a_row() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute("CREATE TABLE s (id serial PRIMARY KEY, note text NOT NULL)").await.unwrap();
    c.batch_execute("CREATE TABLE e (id int PRIMARY KEY)").await.unwrap();
    let mut tasks = Vec::new();
    for k in 0..4 {
        let url = chorus.url(db.name());
        tasks.push(tokio::spawn(async move {
            let c = connect(&url).await;
            for i in 0..20 {
                let id = k * 1000 + i;
                c.batch_execute(&format!("INSERT INTO e VALUES ({id})")).await.unwrap();
                let r = c.batch_execute(&format!("INSERT INTO e VALUES ({id})")).await;
                assert_eq!(sqlstate(&r.unwrap_err()), "23505");
                let r = c.batch_execute("INSERT INTO s (note) VALUES (NULL)").await;
                assert_eq!(sqlstate(&r.unwrap_err()), "23502");
                c.batch_execute("INSERT INTO s (note) VALUES ('x')").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_tables_stay_on_the_leader_and_do_not_break_replication() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    for session in 0..2 {
        let s = chorus.connect(db.name()).await;
        s.batch_execute("CREATE TEMP TABLE scratch (id int)").await.unwrap();
        s.batch_execute("INSERT INTO scratch VALUES (1), (2)").await.unwrap();
        s.execute("UPDATE scratch SET id = id + $1", &[&10i32]).await.unwrap();
        s.batch_execute("CREATE TEMP TABLE copied AS SELECT * FROM t").await.unwrap();
        // Captured: the rows the leader wrote reach the followers.
        s.batch_execute(&format!("INSERT INTO t SELECT id + 100 * {session} FROM scratch")).await.unwrap();
        // Statements of one query are judged one by one.
        s.batch_execute(&format!(
            "INSERT INTO t VALUES ({}); SELECT count(*) FROM scratch; INSERT INTO scratch VALUES (5)",
            50 + session
        ))
        .await
        .unwrap();
        s.batch_execute(&format!("INSERT INTO t VALUES ({session})")).await.unwrap();
        s.batch_execute("DROP TABLE scratch").await.unwrap();
    }
    assert_converged(&db).await;
}

/// Clients that send everything through the extended protocol (JDBC,
/// psycopg 3) create their temporary objects that way too; temporary views,
/// sequences and `SELECT INTO TEMP` are temporary as well. None of it may
/// reach a follower's applier, whose one session would keep them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_objects_of_every_kind_and_protocol_stay_on_the_leader() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int DEFAULT 0)").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (100), (200)").await.unwrap();
    for session in 0..2 {
        let s = chorus.connect(db.name()).await;
        s.execute("CREATE TEMP TABLE scratch (id int)", &[]).await.unwrap();
        s.execute("INSERT INTO scratch VALUES ($1), ($2)", &[&1i32, &2i32]).await.unwrap();
        s.execute("UPDATE scratch SET id = id + $1", &[&10i32]).await.unwrap();
        s.execute("CREATE TEMPORARY SEQUENCE tseq", &[]).await.unwrap();
        s.execute("CREATE TEMP VIEW tview AS SELECT id FROM scratch", &[]).await.unwrap();
        s.execute("SELECT * INTO TEMP tcopy FROM t", &[]).await.unwrap();
        s.execute("CREATE TABLE pg_temp.qualified (id int)", &[]).await.unwrap();
        s.execute("INSERT INTO pg_temp.qualified SELECT nextval('tseq') FROM tview", &[]).await.unwrap();
        let n: i64 = s.query_one("SELECT count(*) FROM qualified", &[]).await.unwrap().get(0);
        assert_eq!(n, 2);
        s.batch_execute("BEGIN").await.unwrap();
        s.execute("CREATE TEMP TABLE gone (id int) ON COMMIT DROP", &[]).await.unwrap();
        s.execute("INSERT INTO gone VALUES ($1)", &[&1i32]).await.unwrap();
        s.execute("INSERT INTO t VALUES ($1)", &[&session]).await.unwrap();
        s.batch_execute("COMMIT").await.unwrap();
        // Rows computed from a temporary table reach the followers as the rows
        // the leader wrote; a write chorus cannot capture is refused.
        s.execute("INSERT INTO t SELECT id + 1000 * $1 FROM tcopy", &[&(session + 1)]).await.unwrap();
        let k = 1000 * (session + 1);
        s.batch_execute(&format!("UPDATE t SET v = tcopy.id FROM tcopy WHERE t.id = tcopy.id + {k}")).await.unwrap();
        s.batch_execute(&format!(
            "INSERT INTO t SELECT id + {k} * 5 FROM tcopy; INSERT INTO t VALUES ({})",
            9000 + session
        ))
        .await
        .unwrap();
        let e = s.batch_execute("UPDATE t SET id = t.id + 70000 FROM tcopy WHERE t.id = tcopy.id").await.unwrap_err();
        assert_eq!(sqlstate(&e), "0A000", "{e}");
        // Once dropped, the name means the regular table again: a table of
        // that name created later is replicated like any other.
        s.execute("DROP VIEW tview", &[]).await.unwrap();
        s.execute("DROP TABLE scratch", &[]).await.unwrap();
        s.execute("CREATE TABLE scratch (id int PRIMARY KEY)", &[]).await.unwrap();
        s.execute("INSERT INTO scratch VALUES ($1)", &[&(session + 7)]).await.unwrap();
        s.execute("DROP TABLE scratch", &[]).await.unwrap();
    }
    assert_converged(&db).await;
    // 2 rows, then session 0 adds 1 + 2 + 2 + 1 (its tcopy holds 2 rows) and
    // session 1 adds 1 + 8 + 8 + 1 (its tcopy holds the 8 rows t had by then).
    let n: i64 = db.connect_leader().await.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 26);
}

/// Migration tools build indexes with CONCURRENTLY, which cannot run in a
/// transaction block: it runs on the leader as sent, and the followers get
/// the plain statement in a logged transaction of its own, before the
/// client hears of success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_built_and_dropped_concurrently_reach_the_followers() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, a int, b text)").await.unwrap();
    c.batch_execute("INSERT INTO t SELECT g, g % 10, 'x' || g FROM generate_series(1, 200) g").await.unwrap();
    c.batch_execute("CREATE INDEX CONCURRENTLY t_a ON t (a)").await.unwrap();
    // Through the extended protocol (JDBC, psycopg 3), and written in lower case.
    c.execute("create unique index concurrently if not exists t_b on t (lower(b))", &[]).await.unwrap();
    // A partial index: its predicate's literal reaches the followers as written.
    c.batch_execute("CREATE INDEX CONCURRENTLY t_part ON t (a) WHERE b <> 'x1'").await.unwrap();
    // The next write comes after the index in the log.
    c.batch_execute("INSERT INTO t VALUES (201, 1, 'y')").await.unwrap();
    // A build that fails leaves an invalid index on the leader only; dropping
    // it must not break a follower.
    let e = c.batch_execute("CREATE UNIQUE INDEX CONCURRENTLY t_bad ON t (a)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "23505", "{e}");
    c.batch_execute("DROP INDEX CONCURRENTLY t_bad").await.unwrap();
    // In a transaction block the leader refuses it itself; the session goes on.
    c.batch_execute("BEGIN").await.unwrap();
    let e = c.batch_execute("CREATE INDEX CONCURRENTLY t_c ON t (b)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25001", "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    let e = c.batch_execute("CREATE INDEX CONCURRENTLY t_c ON t (b); SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    c.batch_execute("DROP INDEX CONCURRENTLY IF EXISTS t_a").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (202, 2, 'z')").await.unwrap();
    assert_converged(&db).await;
    let indexes = "SELECT string_agg(indexname::text, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = 't'";
    let on_leader: String = db.connect_leader().await.query_one(indexes, &[]).await.unwrap().get(0);
    assert_eq!(on_leader, "t_b,t_part,t_pkey");
    let definition = "SELECT indexdef FROM pg_indexes WHERE indexname = 't_part'";
    let leader_definition: String = db.connect_leader().await.query_one(definition, &[]).await.unwrap().get(0);
    assert!(leader_definition.contains("'x1'"), "{leader_definition}");
    for node in db.cluster().followers() {
        let f = db.connect_node(node).await;
        let on_follower: String = f.query_one(indexes, &[]).await.unwrap().get(0);
        assert_eq!(on_follower, on_leader, "{}", node.name());
        let follower_definition: String = f.query_one(definition, &[]).await.unwrap().get(0);
        assert_eq!(follower_definition, leader_definition, "{}", node.name());
        let unique: bool = f
            .query_one("SELECT indisunique AND indisvalid FROM pg_index WHERE indexrelid = 't_b'::regclass", &[])
            .await
            .unwrap()
            .get(0);
        assert!(unique);
    }
}

/// Logged transactions commit without waiting for the WAL flush (the LSN row
/// lock would otherwise serialize every writer's flush); the client hears of
/// its commit only after chorus flushed it.
#[tokio::test]
async fn a_commit_is_answered_only_once_its_wal_is_flushed() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    let leader = db.connect_leader().await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)").await.unwrap();
    // The leader's WAL insert position where the statement runs (declared
    // IMMUTABLE so chorus takes it for a harmless function: it only reads).
    c.batch_execute(
        "CREATE FUNCTION wal_at() RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT pg_current_wal_insert_lsn()::text'",
    )
    .await
    .unwrap();
    let flushed_past = |at: String| {
        let leader = &leader;
        async move {
            let sql = "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn";
            leader.query_one(sql, &[&at]).await.unwrap().get::<_, bool>(0)
        }
    };
    for i in 0..20 {
        // Explicit transaction: the client's COMMIT.
        c.batch_execute("BEGIN").await.unwrap();
        c.execute("INSERT INTO t VALUES ($1, 'x')", &[&(2 * i)]).await.unwrap();
        let at: String = c.query_one("SELECT wal_at()", &[]).await.unwrap().get(0);
        c.batch_execute("COMMIT").await.unwrap();
        assert!(flushed_past(at).await, "COMMIT {i} answered before its WAL was flushed");
        // Autocommit: chorus's own COMMIT around the write.
        let row = c.query_one("INSERT INTO t VALUES ($1, 'y') RETURNING wal_at()", &[&(2 * i + 1)]).await.unwrap();
        assert!(flushed_past(row.get(0)).await, "autocommit write {i} answered before its WAL was flushed");
    }
    assert_converged(&db).await;
}
