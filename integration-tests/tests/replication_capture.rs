//! Capture mode: writes whose text would compute other values on a follower
//! (per-row random(), gen_random_uuid(), clock_timestamp(), volatile column
//! defaults, sequence ids drawn for an unordered INSERT ... SELECT, a LIMIT
//! without ORDER BY) are replicated by the rows the leader wrote. Every test
//! ends with verify; the client sees exactly what PostgreSQL would answer.

use integration_tests::*;
use tokio_postgres::SimpleQueryMessage;

async fn setup() -> (TestDb<'static>, Chorus) {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    (db, chorus)
}

const EVENTS: &str = "CREATE TABLE ev (id serial PRIMARY KEY, u uuid NOT NULL DEFAULT gen_random_uuid(), \
     at timestamptz DEFAULT clock_timestamp(), made timestamptz DEFAULT now(), r float8, note text)";

/// Result rows of a simple query, and the number of columns of the first.
fn rows_of(msgs: &[SimpleQueryMessage]) -> (usize, Option<usize>) {
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.len()),
            _ => None,
        })
        .collect();
    (rows.len(), rows.first().copied())
}

/// The tag's row count of the last CommandComplete.
fn tag_count(msgs: &[SimpleQueryMessage]) -> Option<u64> {
    msgs.iter().rev().find_map(|m| match m {
        SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_row_functions_are_captured_in_the_simple_protocol() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute(EVENTS).await.unwrap();
    // Every row gets its own random(), uuid and clock reading.
    let m = c
        .simple_query("INSERT INTO ev (r, note) SELECT random(), 'g' || g FROM generate_series(1, 1000) g")
        .await
        .unwrap();
    assert_eq!((rows_of(&m).0, tag_count(&m)), (0, Some(1000)), "no rows leak to the client");
    c.batch_execute("UPDATE ev SET u = gen_random_uuid(), r = random() WHERE id % 3 = 0").await.unwrap();
    // A RETURNING of the client's own: exactly its columns come back.
    let m = c.simple_query("UPDATE ev SET r = random() WHERE id <= 10 RETURNING id, r").await.unwrap();
    assert_eq!(rows_of(&m), (10, Some(2)));
    let m = c.simple_query("INSERT INTO ev (note) VALUES ('one') RETURNING *").await.unwrap();
    assert_eq!(rows_of(&m), (1, Some(6)));
    c.batch_execute("INSERT INTO ev (note, at) VALUES ('clock', clock_timestamp()), ('stmt', statement_timestamp())")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO ev (note) VALUES (timeofday())").await.unwrap();
    // LIMIT without ORDER BY: which rows go is the leader's choice.
    let m = c.simple_query("DELETE FROM ev WHERE id IN (SELECT id FROM ev WHERE id > 500 LIMIT 7)").await.unwrap();
    assert_eq!(tag_count(&m), Some(7));
    // An upsert that updates with a random value, and one that inserts.
    c.batch_execute("INSERT INTO ev (id, note) VALUES (3, 'up') ON CONFLICT (id) DO UPDATE SET r = random()")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO ev (id, note) VALUES (5000, 'new') ON CONFLICT (id) DO UPDATE SET r = random()")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO ev (id, note) VALUES (5000, 'kept') ON CONFLICT DO NOTHING").await.unwrap();
    // Several statements in one query, captured or not.
    c.batch_execute(
        "INSERT INTO ev (note) VALUES ('m1'); UPDATE ev SET note = 'm2' WHERE id = 1; \
         UPDATE ev SET r = random() WHERE id = 2",
    )
    .await
    .unwrap();
    // Plain serial inserts afterwards draw the same ids on every node.
    c.batch_execute(
        "INSERT INTO ev (note, u, at, made) VALUES ('plain', '00000000-0000-0000-0000-000000000001', NULL, NULL)",
    )
    .await
    .unwrap();
    assert_converged(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_writes_in_transactions_savepoints_and_prepared_statements() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute(EVENTS).await.unwrap();
    c.batch_execute("CREATE TABLE plain (id serial PRIMARY KEY, note text)").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO ev (note) VALUES ('kept')").await.unwrap();
    c.batch_execute("SAVEPOINT a").await.unwrap();
    c.batch_execute("INSERT INTO ev (note, r) SELECT 'undone', random() FROM generate_series(1, 5)").await.unwrap();
    c.batch_execute("ROLLBACK TO SAVEPOINT a").await.unwrap();
    // The sequence moved on the leader for the undone rows; plain replay after
    // the captured write must still draw the same ids.
    c.batch_execute("INSERT INTO plain (note) VALUES ('after rollback to')").await.unwrap();
    c.batch_execute("INSERT INTO ev (note) VALUES ('after')").await.unwrap();
    c.batch_execute("INSERT INTO ev (note, u, made) VALUES ('fixed', '00000000-0000-0000-0000-000000000002', now())")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.batch_execute("COMMIT").await.unwrap();
    // A savepoint and ROLLBACK TO in the same query as the captured write.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(
        "SAVEPOINT b; INSERT INTO ev (note) VALUES ('cut'); ROLLBACK TO SAVEPOINT b; INSERT INTO ev (note) VALUES ('stays')",
    )
    .await
    .unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    // A rolled-back transaction of captured writes leaves nothing.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO ev (note) VALUES ('never')").await.unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();

    // The extended protocol: parameters, a prepared statement executed
    // several times, RETURNING, and Describe answers with the client's columns only.
    let insert = c.prepare("INSERT INTO ev (note, r) VALUES ($1, random() * $2)").await.unwrap();
    assert!(insert.columns().is_empty(), "no RETURNING: the statement describes no columns");
    for i in 0..5 {
        let n = c.execute(&insert, &[&format!("prep {i}"), &(i as f64)]).await.unwrap();
        assert_eq!(n, 1);
    }
    let returning = c.prepare("UPDATE ev SET r = random() WHERE note LIKE $1 RETURNING id, note").await.unwrap();
    let names: Vec<&str> = returning.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, vec!["id", "note"]);
    let rows = c.query(&returning, &[&"prep%"]).await.unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0].len(), 2);
    // In a transaction, with plain writes between captured ones.
    c.batch_execute("BEGIN").await.unwrap();
    c.execute("INSERT INTO plain (note) VALUES ($1)", &[&"x1"]).await.unwrap();
    c.execute(&insert, &[&"in txn", &2.0f64]).await.unwrap();
    c.execute("INSERT INTO plain (note) VALUES ($1)", &[&"x2"]).await.unwrap();
    c.execute("DELETE FROM ev WHERE id IN (SELECT id FROM ev WHERE note LIKE $1 LIMIT 2)", &[&"prep%"]).await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    // The unnamed statement, parsed per execution.
    c.execute("INSERT INTO ev (note) SELECT 'copy of ' || note FROM ev WHERE id < $1", &[&5i32]).await.unwrap();
    assert_converged(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_defaults_identity_and_unordered_sources() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute(
        "CREATE TABLE d (id int PRIMARY KEY, at timestamptz DEFAULT now(), u uuid DEFAULT gen_random_uuid(), n int DEFAULT 7);
         CREATE TABLE idt (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int, twice int GENERATED ALWAYS AS (v * 2) STORED);
         CREATE TABLE src (v int);
         INSERT INTO src SELECT g FROM generate_series(1, 300) g;
         CREATE TABLE part (id bigserial, region int NOT NULL, u uuid DEFAULT gen_random_uuid(), PRIMARY KEY (id, region))
           PARTITION BY LIST (region);
         CREATE TABLE part_1 PARTITION OF part FOR VALUES IN (1);
         CREATE TABLE part_2 PARTITION OF part FOR VALUES IN (2);",
    )
    .await
    .unwrap();
    // Rows in the physical order of src differ per node once it is updated.
    c.batch_execute("UPDATE src SET v = v + 1000 WHERE v % 7 = 0").await.unwrap();
    c.batch_execute("INSERT INTO d (id) VALUES (1)").await.unwrap();
    c.batch_execute("INSERT INTO d (id, at) VALUES (2, DEFAULT)").await.unwrap();
    c.batch_execute("INSERT INTO d VALUES (3)").await.unwrap();
    c.execute("INSERT INTO d (id, n) VALUES ($1, $2)", &[&4i32, &40i32]).await.unwrap();
    c.batch_execute("INSERT INTO d (id) SELECT v FROM src WHERE v > 1000").await.unwrap();
    c.batch_execute("INSERT INTO d (id) VALUES (5) ON CONFLICT (id) DO UPDATE SET n = d.n + 1").await.unwrap();
    c.batch_execute("INSERT INTO d (id) VALUES (5) ON CONFLICT (id) DO UPDATE SET n = d.n + 1").await.unwrap();
    c.batch_execute("UPDATE d SET u = DEFAULT WHERE id < 3").await.unwrap();
    // Identity and generated columns, filled from an unordered source.
    c.batch_execute("INSERT INTO idt (v) SELECT v FROM src").await.unwrap();
    c.batch_execute("INSERT INTO idt (v) VALUES (1), (2)").await.unwrap();
    // A write after a captured one in the same query is captured too: the
    // followers did not draw the captured write's ids.
    c.batch_execute("INSERT INTO idt (v) SELECT v FROM src WHERE v < 5; INSERT INTO idt (v) VALUES (3)").await.unwrap();
    // A partitioned table: rows go to their partitions on every node.
    c.batch_execute("INSERT INTO part (region) SELECT 1 + v % 2 FROM src").await.unwrap();
    c.batch_execute("UPDATE part SET u = gen_random_uuid() WHERE region = 2").await.unwrap();
    c.batch_execute("DELETE FROM part WHERE id IN (SELECT id FROM part LIMIT 5)").await.unwrap();
    // DDL on such a table is not a row write.
    c.batch_execute("ALTER TABLE d ADD COLUMN m int DEFAULT 5").await.unwrap();
    c.batch_execute("INSERT INTO d (id) VALUES (9000)").await.unwrap();
    assert_converged(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_values_do_not_depend_on_session_settings() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute(
        "CREATE TABLE s (id int PRIMARY KEY, f float8, r real, iv interval, ts timestamp, tz timestamptz, \
         d date, b bytea, m money, j jsonb, a float8[], u uuid DEFAULT gen_random_uuid())",
    )
    .await
    .unwrap();
    c.batch_execute(
        "SET extra_float_digits = 0; SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'sql_standard'; \
         SET TimeZone = 'Asia/Kolkata'; SET bytea_output = 'escape'",
    )
    .await
    .unwrap();
    c.batch_execute(
        "INSERT INTO s (id, f, r, iv, ts, tz, d, b, m, j, a) SELECT g, random() / 3, random()::real, \
         make_interval(days => -g, secs => random()), localtimestamp - make_interval(secs => random() * 1e6), \
         clock_timestamp(), current_date - g, decode(md5(random()::text), 'hex'), (random() * 100)::numeric::money, \
         jsonb_build_object('x', random(), 's', 'q''uote'), ARRAY[random(), 1.0/3] FROM generate_series(1, 200) g",
    )
    .await
    .unwrap();
    c.batch_execute("UPDATE s SET f = f * random() WHERE id % 2 = 0").await.unwrap();
    assert_converged(&db).await;
}

#[tokio::test]
async fn writes_that_cannot_be_captured_are_refused_and_the_session_goes_on() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute(
        "CREATE TABLE nokey (id int, v float8);
         INSERT INTO nokey VALUES (1, 0), (2, 0);
         CREATE TABLE k (id int PRIMARY KEY, v float8);
         INSERT INTO k VALUES (1, 0);
         CREATE TABLE audited (id int PRIMARY KEY, v float8);
         CREATE TABLE audit (n int);
         CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN UPDATE audit SET n = n + 1; RETURN NEW; END $$;
         CREATE TRIGGER a AFTER INSERT ON audited FOR EACH ROW EXECUTE FUNCTION audit_row();
         CREATE TABLE dflt (id int PRIMARY KEY, u uuid DEFAULT gen_random_uuid());
         CREATE SEQUENCE k_seq;
         CREATE VIEW dview AS SELECT * FROM dflt;",
    )
    .await
    .unwrap();
    // Inserting into a table without a primary key is captured ...
    c.batch_execute("INSERT INTO nokey VALUES (3, random())").await.unwrap();
    // ... but changing or deleting its rows is not: there is nothing to find them by.
    let cases = [
        ("UPDATE nokey SET v = random()", "no primary key"),
        ("DELETE FROM nokey WHERE id IN (SELECT id FROM nokey LIMIT 1)", "no primary key"),
        ("UPDATE k SET id = id + (random() * 10)::int", "primary key"),
        ("INSERT INTO audited VALUES (1, random())", "trigger that writes"),
        ("WITH x AS (DELETE FROM k RETURNING id) INSERT INTO nokey SELECT id, random() FROM x", "random()"),
        ("CREATE TABLE r AS SELECT random() AS v", "random()"),
        ("DO $$ BEGIN INSERT INTO k VALUES (9, random()); END $$", "random()"),
        ("BEGIN; INSERT INTO k VALUES (10, random()); COMMIT; SELECT 1", "COMMIT on its own"),
        ("INSERT INTO k VALUES (11, random()); SELECT nextval('k_seq')", "same request"),
        // Through a view, the table's volatile default would be evaluated again.
        ("INSERT INTO dview (id) VALUES (1)", "a view"),
    ];
    for (sql, why) in cases {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "0A000", "{sql}: {e}");
        assert!(error_text(&e).contains(why), "{sql}: {}", error_text(&e));
        c.batch_execute("SELECT 1").await.unwrap_or_else(|e| panic!("after {sql}: {e}"));
    }
    c.batch_execute("INSERT INTO dview (id, u) VALUES (2, '00000000-0000-0000-0000-000000000003')").await.unwrap();
    // COPY cannot be captured: a column left to a volatile default is refused.
    let Err(e) = c.copy_in::<_, bytes::Bytes>("COPY dflt (id) FROM STDIN").await else {
        panic!("COPY into a volatile default was accepted");
    };
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    // In a transaction the refusal aborts it, as an error from the server would.
    let c = chorus.connect(db.name()).await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO k VALUES (2, 1)").await.unwrap();
    let e = c.batch_execute("UPDATE nokey SET v = random()").await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    let e = c.batch_execute("INSERT INTO k VALUES (3, 1)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    // Nothing refused reached the leader.
    let leader = db.connect_leader().await;
    let n: i64 = leader.query_one("SELECT count(*) FROM k", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    assert_converged(&db).await;
}

/// Migration files and scripts send whole transactions as one query: a
/// captured write in it is followed by chorus's commit instead of the
/// client's, which the client is answered for as if it had run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_writes_in_a_query_that_commits() {
    use tokio_postgres::SimpleQueryMessage::CommandComplete;
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute("CREATE TABLE u (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text UNIQUE, n int)")
        .await
        .unwrap();
    let replies = c
        .simple_query(
            "BEGIN; INSERT INTO u (name) VALUES ('a'), ('b'); \
             UPDATE u SET n = (random() * 1000)::int; COMMIT; -- done",
        )
        .await
        .unwrap();
    let tags: Vec<u64> =
        replies.iter().filter_map(|m| if let CommandComplete(n) = m { Some(*n) } else { None }).collect();
    assert_eq!(tags, vec![0, 2, 2, 0], "BEGIN, INSERT, UPDATE, COMMIT");
    // The transaction was opened by an earlier query.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(
        "INSERT INTO u (name) VALUES ('c'); INSERT INTO u (name) SELECT 'd' || g FROM generate_series(1, 5) g; END",
    )
    .await
    .unwrap();
    // A failing statement: nothing of the transaction stays, the session goes on.
    let e = c
        .batch_execute("BEGIN; INSERT INTO u (name) VALUES ('e'); INSERT INTO u (name) VALUES ('a'); COMMIT")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23505", "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    let leader = db.connect_leader().await;
    let n: i64 = leader.query_one("SELECT count(*) FROM u", &[]).await.unwrap().get(0);
    assert_eq!(n, 8);
    // A deferred constraint that fails at the commit is the client's error.
    c.batch_execute(
        "CREATE TABLE p (id int PRIMARY KEY);
         CREATE TABLE ch (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                          p int REFERENCES p DEFERRABLE INITIALLY DEFERRED)",
    )
    .await
    .unwrap();
    let e = c.batch_execute("BEGIN; INSERT INTO ch (p) VALUES (1); COMMIT").await.unwrap_err();
    assert_eq!(sqlstate(&e), "23503", "{e}");
    c.batch_execute("BEGIN; INSERT INTO p VALUES (1); INSERT INTO ch (p) VALUES (1); COMMIT").await.unwrap();
    let n: i64 = leader.query_one("SELECT count(*) FROM ch", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    assert_converged(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_and_functions_that_would_compute_other_values() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute(
        "CREATE TABLE doc (id int PRIMARY KEY, body text, updated_at timestamptz, token text);
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN NEW.updated_at := clock_timestamp(); IF TG_OP = 'INSERT' THEN NEW.token := md5(random()::text); END IF;
              RETURN NEW; END $$;
         CREATE TRIGGER touch BEFORE INSERT OR UPDATE ON doc FOR EACH ROW EXECUTE FUNCTION touch();
         CREATE TABLE log (id serial PRIMARY KEY, doc int, at timestamptz);
         CREATE FUNCTION log_it() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO log (doc, at) VALUES (NEW.id, now()); RETURN NEW; END $$;
         CREATE TABLE logged (id int PRIMARY KEY, v int);
         CREATE TRIGGER log_it AFTER INSERT ON logged FOR EACH ROW EXECUTE FUNCTION log_it();
         CREATE TABLE counted (id int PRIMARY KEY, v int);
         CREATE TABLE counter (n int);
         INSERT INTO counter VALUES (0);
         CREATE FUNCTION count_it() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN UPDATE counter SET n = n + 1; RETURN NEW; END $$;
         CREATE TRIGGER count_it AFTER INSERT ON counted FOR EACH ROW EXECUTE FUNCTION count_it();
         CREATE FUNCTION jitter(x float8) RETURNS float8 LANGUAGE sql AS $$ SELECT x + random() $$;
         CREATE FUNCTION stamp() RETURNS timestamptz LANGUAGE sql STABLE AS $$ SELECT now() $$;
         CREATE FUNCTION double(x int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN x * 2; END $$;
         CREATE FUNCTION note_and_jitter() RETURNS float8 LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO counter VALUES (-1); RETURN random(); END $$;
         CREATE TABLE num (id int PRIMARY KEY, f float8, at timestamptz, d int);",
    )
    .await
    .unwrap();
    // A trigger that sets the row's own columns from the clock and random():
    // captured, and followers apply the rows without running it again.
    c.batch_execute("INSERT INTO doc (id, body) SELECT g, 'b' FROM generate_series(1, 50) g").await.unwrap();
    c.execute("UPDATE doc SET body = $1 WHERE id % 2 = 0", &[&"even"]).await.unwrap();
    c.batch_execute("INSERT INTO doc (id, body) VALUES (1, 'again') ON CONFLICT (id) DO UPDATE SET body = 'conflict'")
        .await
        .unwrap();
    c.batch_execute("DELETE FROM doc WHERE id > 45").await.unwrap();
    // A deterministic trigger that writes elsewhere is replayed (it runs again
    // there, the same way).
    c.batch_execute("INSERT INTO counted VALUES (1, 1), (2, 2)").await.unwrap();
    // Functions: nondeterministic ones in a write are captured, deterministic
    // ones replayed; a nondeterministic one that also writes is refused.
    c.batch_execute(
        "INSERT INTO num (id, f, at, d) SELECT g, jitter(g), stamp(), double(g) FROM generate_series(1, 20) g",
    )
    .await
    .unwrap();
    c.batch_execute("UPDATE num SET d = double(d)").await.unwrap();
    // A read calling them changes nothing.
    c.batch_execute("SELECT jitter(1), stamp()").await.unwrap();
    // A trigger that inserts into another table (an audit log, with now()):
    // the table's rows and the ones the trigger inserted are both captured.
    c.batch_execute("INSERT INTO logged VALUES (1, 1), (2, 2)").await.unwrap();
    for (sql, why) in [
        ("INSERT INTO counted VALUES (3, random())", "trigger that writes"),
        ("INSERT INTO num (id, f) VALUES (100, note_and_jitter())", "note_and_jitter"),
        ("SELECT note_and_jitter()", "note_and_jitter"),
    ] {
        let e = c.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), "0A000", "{sql}: {e}");
        assert!(error_text(&e).contains(why), "{sql}: {}", error_text(&e));
    }
    // What a function calls counts too: a deterministic-looking function
    // over a nondeterministic helper is captured, also from a trigger.
    c.batch_execute(
        "CREATE FUNCTION helper_rnd() RETURNS float8 LANGUAGE sql AS $$ SELECT random() $$;
         CREATE FUNCTION scaled(x int) RETURNS float8 LANGUAGE plpgsql AS $$ BEGIN RETURN x * helper_rnd(); END $$;
         CREATE FUNCTION looks_pure(x int) RETURNS float8 LANGUAGE sql AS $$ SELECT public.scaled(x) $$;
         CREATE FUNCTION via_helper() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN NEW.f := looks_pure(NEW.id); RETURN NEW; END $$;
         CREATE TABLE nested (id int PRIMARY KEY, f float8);
         CREATE TRIGGER via_helper BEFORE INSERT ON nested FOR EACH ROW EXECUTE FUNCTION via_helper();",
    )
    .await
    .unwrap();
    c.batch_execute("INSERT INTO num (id, f) SELECT g, looks_pure(g) FROM generate_series(200, 220) g").await.unwrap();
    c.batch_execute("INSERT INTO nested (id) SELECT g FROM generate_series(1, 20) g").await.unwrap();
    // COPY runs the trigger again on a follower, and cannot be captured.
    let Err(e) = c.copy_in::<_, bytes::Bytes>("COPY doc (id, body) FROM STDIN").await else {
        panic!("COPY into a table with a nondeterministic trigger was accepted");
    };
    assert!(error_text(&e).contains("touch"), "{}", error_text(&e));
    assert_converged(&db).await;
}

#[tokio::test]
async fn the_refuse_policy_refuses_what_would_be_captured() {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), |c| c.replication.unsafe_writes = chorus::config::UnsafeWrites::Refuse);
    let c = chorus.connect(db.name()).await;
    c.batch_execute(EVENTS).await.unwrap();
    let e = c.batch_execute("INSERT INTO ev (note) VALUES ('x')").await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    assert!(error_text(&e).contains("unsafe_writes"), "{}", error_text(&e));
    let e = c.execute("UPDATE ev SET r = random() WHERE id = $1", &[&1i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    c.batch_execute(
        "INSERT INTO ev (note, u, at, made) VALUES ('given', '00000000-0000-0000-0000-000000000004', now(), now())",
    )
    .await
    .unwrap();
    assert_converged(&db).await;
}

/// chorus's catalog cannot see a transaction's own uncommitted DDL: writes
/// after it in the same transaction are judged by what the transaction sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_ddl_in_the_same_transaction() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("CREATE TABLE n (id serial PRIMARY KEY, u uuid DEFAULT gen_random_uuid(), v int)").await.unwrap();
    c.batch_execute("INSERT INTO n (v) VALUES (1)").await.unwrap();
    c.execute("INSERT INTO n (v) SELECT g FROM generate_series(1, 20) g", &[]).await.unwrap();
    c.batch_execute("ALTER TABLE n ADD COLUMN at timestamptz").await.unwrap();
    c.batch_execute("ALTER TABLE n ALTER COLUMN at SET DEFAULT clock_timestamp()").await.unwrap();
    c.batch_execute("INSERT INTO n (v) VALUES (2)").await.unwrap();
    c.batch_execute("CREATE FUNCTION rnd() RETURNS int LANGUAGE sql AS 'SELECT (random() * 100)::int'").await.unwrap();
    c.batch_execute("UPDATE n SET v = rnd()").await.unwrap();
    c.batch_execute(
        "CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN NEW.v := NEW.v + (random() * 10)::int; RETURN NEW; END $$",
    )
    .await
    .unwrap();
    c.batch_execute("CREATE TRIGGER bump BEFORE UPDATE ON n FOR EACH ROW EXECUTE FUNCTION bump()").await.unwrap();
    c.batch_execute("UPDATE n SET v = 0 WHERE id < 5").await.unwrap();
    c.batch_execute("SAVEPOINT a").await.unwrap();
    c.batch_execute("DROP TRIGGER bump ON n").await.unwrap();
    c.batch_execute("ROLLBACK TO SAVEPOINT a").await.unwrap();
    c.execute("UPDATE n SET v = 1 WHERE id = $1", &[&6i32]).await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    // The same in one query: the write cannot be judged before the DDL runs.
    let e = c
        .batch_execute(
            "CREATE TABLE m (id int PRIMARY KEY, u uuid DEFAULT gen_random_uuid()); INSERT INTO m (id) VALUES (1)",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    assert!(error_text(&e).contains("same query"), "{}", error_text(&e));
    c.batch_execute("CREATE TABLE plainnew (id int PRIMARY KEY, v int); INSERT INTO plainnew VALUES (1, 2)")
        .await
        .unwrap();
    assert_converged(&db).await;
}

/// The audit trigger: every write to a table inserts a row into an audit
/// table with the transaction's time, the clock, the transaction id and the
/// user, values a follower would compute differently. chorus captures the
/// written rows and the audit rows the leader's trigger inserted (its own
/// trigger on the audit table notes them), in autocommit and in
/// transactions, across a rolled-back savepoint, through both protocols,
/// with RETURNING, and next to direct writes to the audit table; then the
/// audit table is identical on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_an_audit_trigger_inserts_are_captured_with_the_write() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute(
        "CREATE SCHEMA audit;
         CREATE TABLE audit.log (id bigserial PRIMARY KEY, tab text, op text, row_id int, at timestamptz,
           txid bigint, who text, clock timestamptz, doc jsonb);
         CREATE TABLE audit.summary (id serial PRIMARY KEY, tab text, at timestamptz);
         CREATE FUNCTION audit.track() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           INSERT INTO audit.log (tab, op, row_id, at, txid, who, clock, doc)
             VALUES (TG_TABLE_NAME, TG_OP, coalesce(NEW.id, OLD.id), now(), txid_current(), current_user,
                     clock_timestamp(), CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END);
           IF TG_OP = 'DELETE' THEN
             INSERT INTO audit.summary (tab, at) VALUES (TG_TABLE_NAME, statement_timestamp());
           END IF;
           RETURN NULL;
         END $$;
         CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
         CREATE TRIGGER track AFTER INSERT OR UPDATE OR DELETE ON items FOR EACH ROW EXECUTE FUNCTION audit.track();",
    )
    .await
    .unwrap();
    // Autocommit, several rows each.
    c.batch_execute("INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, 20) g").await.unwrap();
    c.batch_execute("UPDATE items SET qty = qty * 2 WHERE id % 3 = 0").await.unwrap();
    c.batch_execute("DELETE FROM items WHERE id > 18").await.unwrap();
    // A transaction: a rolled-back savepoint takes its audit rows along.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("UPDATE items SET name = 'renamed' WHERE id = 1").await.unwrap();
    c.batch_execute("SAVEPOINT s").await.unwrap();
    c.batch_execute("DELETE FROM items WHERE id = 2").await.unwrap();
    c.batch_execute("ROLLBACK TO SAVEPOINT s").await.unwrap();
    c.batch_execute("INSERT INTO audit.log (tab, op) VALUES ('manual', 'NOTE')").await.unwrap();
    c.batch_execute("DELETE FROM items WHERE id = 3").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    // Extended protocol, with RETURNING, in a transaction and not.
    let stmt = c.prepare("UPDATE items SET qty = qty + $1 WHERE id = $2 RETURNING qty").await.unwrap();
    for id in 4..8 {
        let row = c.query_one(&stmt, &[&10i32, &id]).await.unwrap();
        assert!(row.get::<_, i32>(0) >= 10);
    }
    let mut c = c;
    let txn = c.transaction().await.unwrap();
    txn.execute("INSERT INTO items VALUES ($1, $2, $3)", &[&100i32, &"new", &1i32]).await.unwrap();
    txn.execute("DELETE FROM items WHERE id = $1", &[&4i32]).await.unwrap();
    txn.commit().await.unwrap();
    // A rolled-back transaction leaves nothing.
    c.batch_execute("BEGIN; DELETE FROM items; ROLLBACK").await.unwrap();

    let leader = db.connect_leader().await;
    let counts = leader
        .query_one(
            "SELECT (SELECT count(*) FROM audit.log), (SELECT count(*) FROM audit.summary), \
             (SELECT count(DISTINCT txid) FROM audit.log WHERE txid IS NOT NULL)",
            &[],
        )
        .await
        .unwrap();
    // 20 inserts + 6 updates + 2 deletes; 1 + 1 + manual; 4 updates; 1 insert + 1 delete.
    assert_eq!(counts.get::<_, i64>(0), 20 + 6 + 2 + 3 + 4 + 2, "audit rows");
    assert_eq!(counts.get::<_, i64>(1), 2 + 1 + 1, "summary rows");
    assert!(counts.get::<_, i64>(2) >= 8, "each transaction's own txid");
    assert_converged(&db).await;
    // chorus's trigger is on the leader's audit tables only.
    let has = "SELECT count(*) FROM pg_trigger WHERE tgname = '_chorus_capture'";
    assert_eq!(leader.query_one(has, &[]).await.unwrap().get::<_, i64>(0), 2);
    for node in cluster().followers() {
        let f = db.connect_node(node).await;
        assert_eq!(f.query_one(has, &[]).await.unwrap().get::<_, i64>(0), 0, "{}", node.name());
    }
    // The audit table written directly (depth 1) is replayed as it was sent.
    c.batch_execute("INSERT INTO audit.log (tab, op) VALUES ('direct', 'NOTE')").await.unwrap();
    assert_converged(&db).await;
}

/// A transaction sent as one extended-protocol batch (pgx's batches and
/// other pipelining clients do: BEGIN, the writes, COMMIT, one Sync) with a
/// write chorus captures: chorus sends it without the COMMIT, commits after
/// logging the captured rows, and answers the COMMIT's Bind, Describe and
/// Execute itself, in their place. A COMMIT reused by name works the same;
/// a batch that fails before its COMMIT is rolled back; a COMMIT with more
/// after it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_write_and_its_commit_in_one_batch() {
    use integration_tests::raw::frames::*;
    use integration_tests::raw::{BackendMsg, RawConn, data_rows};
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), |c| {
        c.users.push(chorus::config::User {
            name: "raw_trust".into(),
            password: None,
            auth: chorus::config::AuthMethod::Trust,
            mysql_auth: None,
        })
    });
    let c = chorus.connect(db.name()).await;
    c.batch_execute("CREATE TABLE u (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text UNIQUE)").await.unwrap();
    let (mut raw, _) = RawConn::login_trust(chorus.addr(), "raw_trust", db.name()).await;
    let tags = |msgs: &[BackendMsg]| msgs.iter().map(|m| m.tag as char).collect::<String>();
    let status = |msgs: &[BackendMsg]| msgs.last().map(|m| m.body[0] as char);

    let insert = |name: &str| format!("INSERT INTO u (name) VALUES ('{name}') RETURNING name");
    let batch = [
        parse("", "BEGIN"),
        bind("", ""),
        execute(""),
        parse("", &insert("a")),
        bind("", ""),
        describe_portal(""),
        execute(""),
        parse("c", "COMMIT"),
        bind("", "c"),
        describe_portal(""),
        execute(""),
        sync(),
    ];
    raw.send(&batch.concat()).await.unwrap();
    let msgs = raw.until_ready().await;
    assert_eq!(tags(&msgs), "12C12TDC12nCZ", "{msgs:?}");
    assert_eq!(status(&msgs), Some('I'));
    assert_eq!(data_rows(&msgs), ["a"], "the client sees its own RETURNING only");

    // The COMMIT by name, in a later batch.
    let batch = [
        parse("", "BEGIN"),
        bind("", ""),
        execute(""),
        parse("", &insert("b")),
        bind("", ""),
        execute(""),
        bind("", "c"),
        execute(""),
        sync(),
    ];
    raw.send(&batch.concat()).await.unwrap();
    let msgs = raw.until_ready().await;
    assert_eq!(tags(&msgs), "12C12DC2CZ", "{msgs:?}");
    assert_eq!(status(&msgs), Some('I'));

    // A write that fails: nothing after it ran, and the transaction is over.
    let batch = [
        parse("", "BEGIN"),
        bind("", ""),
        execute(""),
        parse("", &insert("a")),
        bind("", ""),
        execute(""),
        bind("", "c"),
        execute(""),
        sync(),
    ];
    raw.send(&batch.concat()).await.unwrap();
    let msgs = raw.until_ready().await;
    assert_eq!(tags(&msgs), "12C12EZ", "{msgs:?}");
    assert_eq!(raw.simple_ok("SELECT 1").await.last().map(|m| m.body[0]), Some(b'I'));

    // Statements after the COMMIT in the same batch: refused.
    let batch = [
        parse("", "BEGIN"),
        bind("", ""),
        execute(""),
        parse("", &insert("z")),
        bind("", ""),
        execute(""),
        bind("", "c"),
        execute(""),
        parse("", "SELECT 1"),
        bind("", ""),
        execute(""),
        sync(),
    ];
    raw.send(&batch.concat()).await.unwrap();
    let msgs = raw.until_ready().await;
    assert_eq!(tags(&msgs), "EZ", "{msgs:?}");
    assert_eq!(msgs[0].error().code, "0A000");
    raw.simple_ok("SELECT 1").await;

    let leader = db.connect_leader().await;
    let names: Vec<String> =
        leader.query("SELECT name FROM u ORDER BY name", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["a", "b"]);
    assert_converged(&db).await;
}
