//! COPY both ways (tokio-postgres, text and binary; psql's \copy), pgbench's own
//! initialisation, select-only and TPC-B runs in every query mode, and a scripted
//! psql session that must print exactly what it prints against the leader.

use bytes::Bytes;
use futures_util::{SinkExt, TryStreamExt};
use integration_tests::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutStream};
use tokio_postgres::types::Type;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, name text, score float8)";

async fn copy_out_bytes(client: &tokio_postgres::Client, sql: &str) -> Vec<u8> {
    let stream = client.copy_out(sql).await.unwrap_or_else(|e| panic!("{sql}: {}", error_text(&e)));
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap_or_else(|e| panic!("{sql}: {}", error_text(&e)));
    chunks.concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_from_stdin_lands_on_the_leader() {
    let db = fresh_database().await;
    db.execute_on_all(TABLE).await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;

    // Text format, in several chunks.
    let sink = client.copy_in::<_, Bytes>("COPY t (id, name, score) FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\tone\t1.5\n2\ttwo\t")).await.unwrap();
    sink.send(Bytes::from_static(b"2.5\n3\t\\N\t\\N\n")).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 3);

    // Binary format.
    let sink = client.copy_in("COPY t (id, name, score) FROM STDIN (FORMAT binary)").await.unwrap();
    let writer = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT, Type::FLOAT8]);
    futures_util::pin_mut!(writer);
    for id in 10..20i32 {
        let name = format!("bin {id}");
        writer.as_mut().write(&[&id, &name, &(id as f64 / 4.0)]).await.unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), 10);

    // A big one: 100k rows in 1000-row chunks.
    let sink = client.copy_in::<_, Bytes>("COPY t (id, name) FROM STDIN WITH (FORMAT csv)").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in 0..100 {
        let mut data = String::new();
        for i in 0..1000 {
            let id = 1000 + chunk * 1000 + i;
            data.push_str(&format!("{id},\"csv, {id}\"\n"));
        }
        sink.send(Bytes::from(data)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 100_000);

    assert_eq!(
        db.value_on_leader("SELECT count(*) || ' ' || sum(id) || ' ' || sum(score) FROM t").await.as_deref(),
        Some(format!("100013 {} 40.25", 6 + 145 + (1000..101_000i64).sum::<i64>()).as_str())
    );
    assert_eq!(db.value_on_leader("SELECT name FROM t WHERE id = 3 AND score IS NULL AND name IS NULL").await, None);
    assert_eq!(db.value_on_leader("SELECT name FROM t WHERE id = 5000").await.as_deref(), Some("csv, 5000"));
    // Replicated: every follower holds the copied rows.
    assert_converged(&db).await;
    // The session reads from followers again afterwards.
    assert!(db.is_follower_port(&answering_port(&client).await));
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_to_stdout_returns_the_data() {
    let db = fresh_database().await;
    db.execute_on_all(TABLE).await;
    db.execute_on_all("INSERT INTO t SELECT i, 'name ' || i, i / 8.0 FROM generate_series(1, 20000) i").await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;
    let direct = db.connect_leader().await;

    for sql in [
        "COPY t TO STDOUT",
        "COPY t (id, name) TO STDOUT WITH (FORMAT csv, HEADER)",
        "COPY (SELECT id, md5(name) FROM t WHERE id % 3 = 0 ORDER BY id) TO STDOUT",
        "COPY (SELECT i, repeat('x', i % 100) FROM generate_series(1, 200000) i) TO STDOUT",
        "COPY t TO STDOUT (FORMAT binary)",
    ] {
        let through = copy_out_bytes(&client, sql).await;
        let reference = copy_out_bytes(&direct, sql).await;
        assert!(through.len() > 1000, "{sql}: {} bytes", through.len());
        assert!(through == reference, "{sql}: {} bytes through chorus, {} direct", through.len(), reference.len());
    }
    let text =
        String::from_utf8(copy_out_bytes(&client, "COPY (SELECT * FROM t WHERE id <= 2 ORDER BY id) TO STDOUT").await)
            .unwrap();
    assert_eq!(text, "1\tname 1\t0.125\n2\tname 2\t0.25\n");

    // COPY TO is a read: followers serve it.
    // (One statement, prepared once: each COPY is then one routed request.)
    let copy_port = client.prepare("COPY (SELECT current_setting('port')) TO STDOUT").await.unwrap();
    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let chunks: Vec<Bytes> = client.copy_out(&copy_port).await.unwrap().try_collect().await.unwrap();
        ports.insert(String::from_utf8(chunks.concat()).unwrap().trim().to_string());
    }
    assert_eq!(ports, db.follower_ports());

    // Binary COPY decoded.
    let stream = client
        .copy_out("COPY (SELECT id, name FROM t WHERE id <= 3 ORDER BY id) TO STDOUT (FORMAT binary)")
        .await
        .unwrap();
    let rows: Vec<_> = BinaryCopyOutStream::new(stream, &[Type::INT4, Type::TEXT]).try_collect().await.unwrap();
    let decoded: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(decoded, vec![(1, "name 1".into()), (2, "name 2".into()), (3, "name 3".into())]);

    // Interleaved with ordinary queries on the same session.
    for _ in 0..3 {
        let n: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
        assert_eq!(n, 20000);
        assert_eq!(copy_out_bytes(&client, "COPY (SELECT 1) TO STDOUT").await, b"1\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_copy_reports_the_server_error_and_the_session_goes_on() {
    let db = fresh_database().await;
    db.execute_on_all(TABLE).await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;

    // A bad row: the server's error, nothing inserted.
    let sink = client.copy_in::<_, Bytes>("COPY t (id, name) FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\tok\nnot-a-number\tbad\n3\tok\n")).await.unwrap();
    let e = sink.finish().await.unwrap_err();
    assert_eq!(sqlstate(&e), "22P02", "{}", error_text(&e));
    assert!(error_text(&e).contains("not-a-number"), "{}", error_text(&e));
    assert_eq!(simple_value(&client, "SELECT 'alive'").await.as_deref(), Some("alive"));

    // A duplicate key, found at the end.
    let sink = client.copy_in::<_, Bytes>("COPY t (id, name) FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\ta\n1\tb\n")).await.unwrap();
    let e = sink.finish().await.unwrap_err();
    assert_eq!(sqlstate(&e), "23505", "{}", error_text(&e));

    // The client gives up half-way (tokio-postgres sends CopyFail on drop).
    {
        let sink = client.copy_in::<_, Bytes>("COPY t (id, name) FROM STDIN").await.unwrap();
        futures_util::pin_mut!(sink);
        sink.send(Bytes::from_static(b"5\tfive\n")).await.unwrap();
    }
    // A COPY into a table that does not exist fails before any data (simple
    // protocol: tokio-postgres's copy_in loses track of its connection when
    // the statement fails to prepare, even directly against PostgreSQL).
    let e = client.batch_execute("COPY nope FROM STDIN").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42P01");
    // COPY inside a transaction that rolls back.
    client.batch_execute("BEGIN").await.unwrap();
    let sink = client.copy_in::<_, Bytes>("COPY t (id, name) FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"7\tseven\n")).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);
    assert_eq!(simple_value(&client, "SELECT count(*) FROM t").await.as_deref(), Some("1"));
    client.batch_execute("ROLLBACK").await.unwrap();

    for (node, v) in db.value_on_each("SELECT count(*) FROM t").await {
        assert_eq!(v.as_deref(), Some("0"), "{node}");
    }
    // Still a working session: a good COPY, then reads and writes.
    let sink = client.copy_in::<_, Bytes>("COPY t (id, name) FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"8\teight\n")).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);
    client.execute("INSERT INTO t (id) VALUES (9)", &[]).await.unwrap();
    assert_eq!(db.value_on_leader("SELECT string_agg(id::text, ',' ORDER BY id) FROM t").await.as_deref(), Some("8,9"));
    assert!(db.is_follower_port(&answering_port(&client).await));
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_copy_both_ways() {
    let db = fresh_database().await;
    db.execute_on_all(TABLE).await;
    db.execute_on_all("INSERT INTO t VALUES (1, 'everywhere', 1)").await;
    let chorus = start_chorus(cluster());
    let url = chorus.url(db.name());

    let data: String = (2..=1001).map(|i| format!("{i}\tpsql {i}\t{}\n", i as f64 / 2.0)).collect();
    let out = psql(&url, &["-c", "\\copy t FROM STDIN"], Some(data.as_bytes()));
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout.trim(), "COPY 1000");
    assert_eq!(db.value_on_leader("SELECT count(*) FROM t").await.as_deref(), Some("1001"));
    assert_converged(&db).await;

    // \copy TO: from a follower, which has every row now.
    let out = psql(&url, &["-c", "\\copy (SELECT * FROM t ORDER BY id) TO STDOUT"], None);
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.stdout, format!("1\teverywhere\t1\n{data}"));
    let out = psql(
        &url,
        &["-c", "\\copy (SELECT id, upper(name) FROM t WHERE id < 3 ORDER BY id) TO STDOUT WITH (FORMAT csv)"],
        None,
    );
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "1,EVERYWHERE\n2,PSQL 2\n");
    // Inside a transaction: the leader, with the copied rows.
    let out = psql(&url, &["-c", "BEGIN", "-c", "\\copy (SELECT count(*) FROM t) TO STDOUT", "-c", "COMMIT"], None);
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "BEGIN\n1001\nCOMMIT\n");

    // A bad row: psql shows the server's error and exits non-zero.
    let out = psql(&url, &["-c", "\\copy t FROM STDIN"], Some(b"5000\tok\t1\nbad\trow\t2\n"));
    assert!(!out.success());
    assert!(out.stderr.contains("invalid input syntax for type integer: \"bad\""), "{}", out.stderr);
    assert_eq!(db.value_on_leader("SELECT count(*) FROM t WHERE id = 5000").await.as_deref(), Some("0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbench_initialises_and_runs_tpcb_through_chorus() {
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let url = chorus.url(db.name());

    // Initialisation: DROP/CREATE, COPY FROM STDIN, VACUUM, primary keys,
    // replicated to the followers (which pgbench reads the scale from).
    let init = pgbench(&url, &["-i", "-s", "1", "-q"]);
    assert!(init.output.success(), "{}\n{}", init.output.stdout, init.output.stderr);
    assert_eq!(db.value_on_leader("SELECT count(*) FROM pgbench_accounts").await.as_deref(), Some("100000"));
    assert_eq!(
        db.value_on_leader("SELECT count(*) FROM pg_indexes WHERE indexname = 'pgbench_accounts_pkey'")
            .await
            .as_deref(),
        Some("1")
    );
    assert_converged(&db).await;

    // TPC-B in each query mode: every transaction is a read-write one, on the
    // leader. -n: pgbench would otherwise empty pgbench_history before each run.
    let mut processed = 0;
    for mode in ["simple", "extended", "prepared"] {
        let run = pgbench(&url, &["-n", "-c", "4", "-j", "2", "-t", "50", "-M", mode]);
        run.assert_ok();
        let n = run.processed.unwrap_or(0);
        assert_eq!(n, 200, "-M {mode}\n{}", run.output.stdout);
        processed += n;
    }
    // Every transaction left one history row, and all balances agree: no
    // statement of a transaction went astray.
    let totals = db
        .value_on_leader(
            "SELECT (SELECT count(*) FROM pgbench_history) || ' ' || \
             ((SELECT sum(delta) FROM pgbench_history) = (SELECT sum(abalance) FROM pgbench_accounts) AND \
              (SELECT sum(delta) FROM pgbench_history) = (SELECT sum(bbalance) FROM pgbench_branches) AND \
              (SELECT sum(delta) FROM pgbench_history) = (SELECT sum(tbalance) FROM pgbench_tellers))",
        )
        .await;
    assert_eq!(totals, Some(format!("{processed} true")));
    assert_converged(&db).await;
}

/// Transactions committed in `db` on each node, by node name.
async fn commits(db: &TestDb<'_>) -> BTreeMap<String, i64> {
    let sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()";
    let mut out = BTreeMap::new();
    for (node, v) in db.value_on_each(sql).await {
        out.insert(node, v.unwrap().parse().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbench_select_only_is_served_by_the_followers() {
    let db = fresh_database().await;
    // Without replication, every node gets the data directly.
    for url in std::iter::once(db.leader_url()).chain(db.follower_urls()) {
        pgbench(&url, &["-i", "-s", "1", "-q"]).assert_ok();
    }

    for mode in ["simple", "extended", "prepared"] {
        // A chorus per run: stopping it ends its server connections, and a
        // server publishes a backend's statistics when it exits (a busy one
        // only about once a second, an idle one within 10 s).
        let chorus = start_chorus(cluster());
        let url = chorus.url(db.name());
        // -n: no VACUUM before the run, so nothing at all needs the leader.
        let args = ["-S", "-n", "-c", "4", "-j", "2", "-M", mode];
        // Warm chorus's pools first: new server connections (SCRAM in a debug
        // build) would take much of a short run.
        pgbench(&url, &[&args[..], &["-t", "10"]].concat()).assert_ok();
        let before = commits(&db).await;
        // A fixed amount of work, not a duration: 4 clients x 250 transactions.
        let run = pgbench(&url, &[&args[..], &["-t", "250"]].concat());
        chorus.shutdown().unwrap();
        run.assert_ok();
        let n = run.processed.unwrap_or(0) as i64;
        assert_eq!(n, 1000, "-M {mode}\n{}", run.output.stdout);
        let deadline = Instant::now() + Duration::from_secs(10);
        let grown = loop {
            let after = commits(&db).await;
            let grown: BTreeMap<_, _> = after.iter().map(|(k, v)| (k.clone(), v - before[k])).collect();
            let followers: i64 = cluster().followers().iter().map(|f| grown[f.name()]).sum();
            if followers >= n || Instant::now() > deadline {
                break grown;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let leader = grown[cluster().leader().name()];
        let followers: i64 = cluster().followers().iter().map(|f| grown[f.name()]).sum();
        assert!(followers >= n, "-M {mode}: followers committed {followers} of {n} transactions: {grown:?}");
        for f in cluster().followers() {
            assert!(grown[f.name()] > n / 4, "-M {mode}: {} served too little of {n}: {grown:?}", f.name());
        }
        // The leader sees each session's start (its settings), this test's own
        // polling and chorus's replication feed (it polls the log every
        // second), nothing of the load.
        assert!(leader < n / 10, "-M {mode}: the leader committed {leader} of {n} transactions: {grown:?}");
    }
}

/// The psql session of [`psql_session_matches_the_leader`]: describe commands,
/// expanded output, errors with ON_ERROR_STOP off, and a transaction that creates,
/// fills and reads a table.
const PSQL_SCRIPT: &str = r#"\set ON_ERROR_STOP off
\pset null '(null)'
SELECT * FROM fruit ORDER BY id;
\d fruit
\d+ fruit
\dt
\di
\dv
\df shout
\dn
\x
SELECT * FROM fruit WHERE id = 1;
SELECT id, name FROM fruit_view ORDER BY id;
\x
SELECT shout(name) FROM fruit ORDER BY id;
SELECT * FROM no_such_table;
SELECT 1/0;
SELCT oops;
SELECT 'still here' AS status;
BEGIN;
CREATE TABLE basket (id int PRIMARY KEY, fruit_id int REFERENCES fruit, qty int NOT NULL DEFAULT 1);
INSERT INTO basket VALUES (1, 1, 3), (2, 2, DEFAULT);
INSERT INTO basket VALUES (3, 99, 1);
ROLLBACK;
BEGIN;
CREATE TABLE basket (id int PRIMARY KEY, fruit_id int REFERENCES fruit, qty int NOT NULL DEFAULT 1);
INSERT INTO basket VALUES (1, 1, 3), (2, 2, DEFAULT) RETURNING *;
\d basket
SELECT f.name, b.qty FROM basket b JOIN fruit f ON f.id = b.fruit_id ORDER BY b.id;
UPDATE basket SET qty = qty + 1;
DELETE FROM basket WHERE id = 2;
SELECT * FROM basket;
DROP TABLE basket;
COMMIT;
SELECT count(*) AS fruits, sum(price) AS total FROM fruit;
"#;

const PSQL_FIXTURE: &str = "CREATE TABLE fruit (id int PRIMARY KEY, name text NOT NULL, price numeric(6,2), note text);
     INSERT INTO fruit VALUES (1, 'apple', 0.50, NULL), (2, 'banana', 0.25, 'yellow'), (3, 'cherry', 4.00, NULL);
     CREATE INDEX fruit_name ON fruit (name);
     COMMENT ON TABLE fruit IS 'things to eat';
     CREATE VIEW fruit_view AS SELECT id, name FROM fruit WHERE price < 1;
     CREATE FUNCTION shout(text) RETURNS text IMMUTABLE LANGUAGE sql AS $$ SELECT upper($1) || '!' $$";

#[tokio::test(flavor = "multi_thread")]
async fn psql_session_matches_the_leader() {
    // Two databases with the same fixture: one used through chorus, one directly.
    let through_db = fresh_database().await;
    let direct_db = fresh_database().await;
    through_db.execute_on_all(PSQL_FIXTURE).await;
    direct_db.execute_on_all(PSQL_FIXTURE).await;
    let chorus = start_chorus(cluster());
    // A first session sets up chorus's schema `_chorus` (psql's \dn lists it)
    // in the direct database too, as in every database chorus replicates.
    chorus.connect(direct_db.name()).await;

    let through = psql(&chorus.url(through_db.name()), &["-a"], Some(PSQL_SCRIPT.as_bytes()));
    let direct = psql(&direct_db.leader_url(), &["-a"], Some(PSQL_SCRIPT.as_bytes()));
    assert!(through.success() && direct.success(), "{through:?}\n{direct:?}");
    // The script did run: rows, describe output, errors.
    for expected in ["Table \"public.fruit\"", "APPLE!", "fruit_view", "still here", "Table \"public.basket\""] {
        assert!(direct.stdout.contains(expected), "{expected} not in:\n{}", direct.stdout);
    }
    assert!(direct.stdout.contains("Table \"public.basket\""), "{}", direct.stdout);
    assert!(direct.stdout.contains("-[ RECORD 1 ]"), "{}", direct.stdout);
    assert!(direct.stderr.contains("division by zero"), "{}", direct.stderr);
    assert_eq!(through.stdout, direct.stdout, "stdout differs");
    assert_eq!(through.stderr, direct.stderr, "stderr differs");
    // Through chorus the script's writes (basket, created and dropped) replicated.
    assert_converged(&through_db).await;
}

/// A pg_dump of a database with the usual objects, restored through chorus
/// as an operator would: the plain script with psql, then the custom format
/// with pg_restore --clean; then pg_dump through chorus (its read-only
/// REPEATABLE READ transaction and SQL-level PREPAREs land on a follower).
#[tokio::test(flavor = "multi_thread")]
async fn a_pg_dump_restores_through_chorus_and_dumps_back() {
    let db = fresh_database().await;
    let source = fresh_database().await;
    let setup = r#"
        CREATE SCHEMA app;
        CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
        CREATE TABLE app.customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE,
            created timestamptz DEFAULT now(), mood app.mood, tags text[], data jsonb, pic bytea,
            u uuid DEFAULT gen_random_uuid());
        CREATE TABLE app.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            customer_id int NOT NULL REFERENCES app.customers (id) ON DELETE CASCADE, total float8, note text);
        CREATE INDEX ON app.orders (total);
        INSERT INTO app.customers (name, email, mood, tags, data, pic) VALUES
            ('ann', 'a@x', 'happy', '{a,b}', '{"k": [1, 2]}', '\x00ff10'), ('bob', NULL, NULL, '{}', NULL, NULL),
            (E'日本 "q" ''s'' \\ \t', 'c@x', 'ok', NULL, '{}', decode(repeat('7a', 3000), 'hex'));
        INSERT INTO app.orders (customer_id, total, note) SELECT id, id * 1.5, 'n' || id FROM app.customers;
        CREATE VIEW app.big AS SELECT c.name, sum(o.total) AS t FROM app.customers c JOIN app.orders o ON o.customer_id = c.id GROUP BY c.name;
        CREATE MATERIALIZED VIEW app.mv AS SELECT count(*) AS n FROM app.orders;
        CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := coalesce(NEW.note, 'none'); RETURN NEW; END $$;
        CREATE TRIGGER orders_bi BEFORE INSERT ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();
        CREATE SEQUENCE app.s START 100;
        SELECT nextval('app.s');
        COMMENT ON TABLE app.customers IS 'the customers';
        CREATE TABLE public.plain (a int, b text);
        INSERT INTO public.plain SELECT g, md5(g::text) FROM generate_series(1, 2000) g;
    "#;
    // The source exists on the leader only, written directly.
    let out = psql(&source.leader_url(), &["-q"], Some(setup.as_bytes()));
    assert!(out.success(), "{out:?}");
    let chorus = start_chorus(cluster());
    let dir = tests_root();
    let plain = dir.join(format!("{}.sql", db.name()));
    let custom = dir.join(format!("{}.dump", db.name()));
    let plain_arg = format!("--file={}", plain.display());
    let custom_arg = format!("--file={}", custom.display());
    for (format, file) in [("--format=plain", &plain_arg), ("--format=custom", &custom_arg)] {
        let out = pg_program("pg_dump", &[format, "--no-owner", file, &source.leader_url()]);
        assert!(out.success(), "{out:?}");
    }
    let through = chorus.url(db.name());
    let out = psql(&through, &["-q", "-f", plain.to_str().unwrap()], None);
    assert!(out.success(), "restoring the plain dump through chorus: {out:?}");
    assert_converged(&db).await;
    let dbname = format!("--dbname={through}");
    let out = pg_program(
        "pg_restore",
        &["--clean", "--if-exists", "--no-owner", "--exit-on-error", &dbname, custom.to_str().unwrap()],
    );
    assert!(out.success(), "pg_restore --clean through chorus: {out:?}");
    assert_converged(&db).await;
    let count = "SELECT (SELECT count(*) FROM app.orders WHERE note LIKE 'n%'), (SELECT last_value FROM app.s), \
                 (SELECT md5(string_agg(encode(pic, 'hex'), ',' ORDER BY id)) FROM app.customers)";
    assert_eq!(psql_sql(&through, count), psql_sql(&source.leader_url(), count));
    // The trigger came along and works on the copy.
    psql_sql(&through, "INSERT INTO app.orders (customer_id) VALUES (1)");
    assert_eq!(psql_sql(&through, "SELECT note FROM app.orders ORDER BY id DESC LIMIT 1"), "none");
    assert_converged(&db).await;
    // A backup through chorus, leaving chorus's own schema out.
    let out = pg_program("pg_dump", &["--exclude-schema=_chorus", &through]);
    assert!(out.success(), "pg_dump through chorus: {out:?}");
    assert!(out.stdout.contains("CREATE TABLE app.customers") && out.stdout.contains("CREATE TRIGGER orders_bi"));
    assert!(!out.stdout.contains("_chorus."), "the bookkeeping schema is excluded");
    // A parallel dump through chorus: its workers import the snapshot the
    // first connection exported, on whichever follower that one runs. Then
    // a parallel restore of it through chorus into another database.
    let parallel = dir.join(format!("{}.dir", db.name()));
    let _ = std::fs::remove_dir_all(&parallel);
    let parallel_arg = format!("--file={}", parallel.display());
    let out = pg_program("pg_dump", &["-j", "3", "--format=directory", "--exclude-schema=_chorus", &parallel_arg, &through]);
    assert!(out.success(), "pg_dump -j through chorus: {out:?}");
    let copy = fresh_database().await;
    let copy_arg = format!("--dbname={}", chorus.url(copy.name()));
    let out = pg_program("pg_restore", &["-j", "2", "--no-owner", "--exit-on-error", &copy_arg, parallel.to_str().unwrap()]);
    assert!(out.success(), "pg_restore -j through chorus: {out:?}");
    assert_eq!(psql_sql(&chorus.url(copy.name()), count), psql_sql(&through, count));
    assert_converged(&copy).await;
    let _ = std::fs::remove_dir_all(&parallel);
    assert_no_chorus_panics();
}
