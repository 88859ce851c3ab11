//! The wire protocol through chorus with tokio-postgres: prepared statements and
//! binary results, pipelining, errors inside pipelines, the unnamed statement,
//! several statements in one simple Query, and cancelling a running query.

use futures_util::future::join_all;
use integration_tests::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{NoTls, SimpleQueryMessage};

const ITEMS: &str = "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2));
     INSERT INTO items SELECT i, 'item ' || i, i * 1.25 FROM generate_series(1, 100) i;
     CREATE TABLE log (id serial PRIMARY KEY, v int)";

/// A column's bytes exactly as the server sent them (binary format), whatever its type.
#[derive(Debug, PartialEq)]
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn raw_row(row: &tokio_postgres::Row) -> Vec<Raw> {
    (0..row.len()).map(|i| row.get::<_, Raw>(i)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prepared_statement_runs_many_times_on_the_followers() {
    let db = fresh_database().await;
    db.execute_on_all(ITEMS).await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;

    // Prepared once (on one follower); chorus prepares it on the other
    // follower when the rotation first sends an execution there.
    let stmt =
        client.prepare("SELECT name, price::text, current_setting('port') FROM items WHERE id = $1").await.unwrap();
    assert_eq!(stmt.params(), &[Type::INT4]);
    let mut ports = BTreeSet::new();
    for id in 1..=40i32 {
        let row = client.query_one(&stmt, &[&id]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("item {id}"));
        assert_eq!(row.get::<_, String>(1), format!("{:.2}", id as f64 * 1.25));
        ports.insert(row.get::<_, String>(2));
    }
    assert_eq!(ports, db.follower_ports(), "executions were not spread over the followers");

    // A range query returning many rows, several times.
    let many = client
        .prepare_typed("SELECT id, name FROM items WHERE id BETWEEN $1 AND $2 ORDER BY id", &[Type::INT4, Type::INT4])
        .await
        .unwrap();
    for (lo, hi) in [(1, 100), (10, 20), (50, 49), (90, 200)] {
        let rows = client.query(&many, &[&lo, &hi]).await.unwrap();
        let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(ids, (lo..=hi.min(100)).collect::<Vec<_>>());
    }

    // A prepared write always goes to the leader, however often it runs.
    let insert = client.prepare("INSERT INTO log (v) VALUES ($1) RETURNING current_setting('port')").await.unwrap();
    for v in 0..6i32 {
        let port: String = client.query_one(&insert, &[&v]).await.unwrap().get(0);
        assert_eq!(port, db.leader_port());
    }
    assert_eq!(db.value_on_leader("SELECT sum(v) FROM log").await.as_deref(), Some("15"));
    assert_converged(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_results_match_the_leader_byte_for_byte() {
    let db = fresh_database().await;
    db.execute_on_all(ITEMS).await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;
    let direct = db.connect_leader().await;
    // Same session settings both ways (TimeZone shapes no binary value, but
    // the text-typed columns below depend on DateStyle and friends).
    for c in [&client, &direct] {
        c.batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'").await.unwrap();
    }

    let sql = "SELECT 42::int4, -9000000000::int8, 7::int2, 'héllo wörld'::text, 'v'::varchar(3), \
         1.5::float8, 2.25::float4, true, false, \
         timestamptz '2020-01-02 03:04:05.678901+00', timestamp '1999-12-31 23:59:59', date '2024-02-29', \
         time '12:34:56', interval '1 year 2 mons 3 days 04:05:06.7', \
         123456789.0123456789::numeric, 'NaN'::numeric, -0.5::numeric(5,3), \
         '\\x0001ff'::bytea, ''::bytea, ARRAY[1, NULL, 3]::int4[], ARRAY[['a','b'],['c','d']]::text[], \
         '{\"a\": [1, 2.5, null]}'::json, '{\"b\": {\"c\": true}}'::jsonb, \
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, '192.168.0.1/24'::inet, NULL::int4, \
         (SELECT array_agg(price ORDER BY id) FROM items WHERE id <= 5), $1::int8 + 1, $2::text || '!'";
    let through = client.query_one(sql, &[&41i64, &"param"]).await.unwrap();
    let reference = direct.query_one(sql, &[&41i64, &"param"]).await.unwrap();
    let types = |r: &tokio_postgres::Row| r.columns().iter().map(|c| c.type_().clone()).collect::<Vec<_>>();
    assert_eq!(types(&through), types(&reference));
    assert_eq!(raw_row(&through), raw_row(&reference));
    // And decoded, for the common types.
    assert_eq!(through.get::<_, i32>(0), 42);
    assert_eq!(through.get::<_, i64>(1), -9_000_000_000);
    assert_eq!(through.get::<_, &str>(3), "héllo wörld");
    assert_eq!(through.get::<_, f64>(5), 1.5);
    assert!(through.get::<_, bool>(7));
    assert_eq!(through.get::<_, Vec<u8>>(17), vec![0, 1, 255]);
    assert_eq!(through.get::<_, Vec<Option<i32>>>(19), vec![Some(1), None, Some(3)]);
    assert_eq!(through.get::<_, Option<i32>>(25), None);
    assert_eq!(through.get::<_, i64>(27), 42);
    assert_eq!(through.get::<_, String>(28), "param!");
    let ts: std::time::SystemTime = through.get(9);
    assert_eq!(ts.duration_since(std::time::UNIX_EPOCH).unwrap(), Duration::from_micros(1_577_934_245_678_901));

    // Every row of a table, binary, through chorus (from followers) and direct.
    let sql = "SELECT * FROM items ORDER BY id";
    let through: Vec<_> = client.query(sql, &[]).await.unwrap().iter().map(raw_row).collect();
    let reference: Vec<_> = direct.query(sql, &[]).await.unwrap().iter().map(raw_row).collect();
    assert_eq!(through.len(), 100);
    assert_eq!(through, reference);

    // Text results of the same values agree as well (simple protocol).
    let sql = "SELECT timestamptz '2020-01-02 03:04:05.678901+00', interval '1 day 02:00', 1.5::float8, \
         '\\x0001ff'::bytea, ARRAY['a b', NULL]";
    assert_eq!(simple_rows(&client, sql).await, simple_rows(&direct, sql).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_queries_come_back_correct_and_in_order() {
    let db = fresh_database().await;
    db.execute_on_all(ITEMS).await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;
    let read =
        client.prepare("SELECT name, $1::int4 * 2, current_setting('port') FROM items WHERE id = $1").await.unwrap();
    let write = client.prepare("INSERT INTO log (v) VALUES ($1) RETURNING v, current_setting('port')").await.unwrap();

    // 50 reads at once: tokio-postgres pipelines them on the one connection.
    let ids: Vec<i32> = (1..=50).collect();
    let results = join_all(ids.iter().map(|id| async { client.query_one(&read, &[id]).await })).await;
    for (id, r) in ids.iter().zip(results) {
        let row = r.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("item {id}"));
        assert_eq!(row.get::<_, i32>(1), id * 2);
        assert!(db.is_follower_port(&row.get::<_, String>(2)));
    }

    // Reads and writes interleaved: the writes must wait for the leader, the
    // answers must still come back in order.
    let futures = (1..=50i32).map(|i| {
        let client = &client;
        let (read, write) = (&read, &write);
        async move {
            if i % 5 == 0 {
                let row = client.query_one(write, &[&i]).await?;
                Ok::<_, tokio_postgres::Error>((i, row.get::<_, i32>(0), row.get::<_, String>(1), true))
            } else {
                let row = client.query_one(read, &[&i]).await?;
                Ok((i, row.get::<_, i32>(1) / 2, row.get::<_, String>(2), false))
            }
        }
    });
    for r in join_all(futures).await {
        let (i, got, port, is_write) = r.unwrap();
        assert_eq!(got, i);
        if is_write {
            assert_eq!(port, db.leader_port(), "write {i}");
        } else if i < 5 {
            assert!(db.is_follower_port(&port), "read {i} on {port}");
        } else {
            // After the session's first write, a read runs on a follower
            // only once one has applied that write (read-your-writes), else
            // on the leader: either is right, the value above proves it.
            assert!(db.is_follower_port(&port) || port == db.leader_port(), "read {i} on {port}");
        }
    }
    assert_eq!(
        db.value_on_leader("SELECT string_agg(v::text, ',' ORDER BY id) FROM log").await.as_deref(),
        Some("5,10,15,20,25,30,35,40,45,50"),
        "the writes ran out of order"
    );

    // Simple queries pipelined too.
    let futures = (0..20).map(|i| client.simple_query(if i % 2 == 0 { "SELECT 'even'" } else { "SELECT 'odd'" }));
    for (i, r) in join_all(futures).await.into_iter().enumerate() {
        let rows: Vec<_> = r
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(rows, vec![if i % 2 == 0 { "even" } else { "odd" }]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_in_a_pipeline_fails_only_its_own_query() {
    let db = fresh_database().await;
    db.execute_on_all(ITEMS).await;
    let chorus = start_chorus(cluster());
    let mut client = chorus.connect(db.name()).await;
    let div = client.prepare("SELECT 100 / $1::int4").await.unwrap();

    let divisors = [1, 2, 0, 4, 0, 5, 10];
    let results = join_all(divisors.iter().map(|d| async { client.query_one(&div, &[d]).await })).await;
    for (d, r) in divisors.iter().zip(results) {
        match (d, r) {
            (0, Err(e)) => assert_eq!(sqlstate(&e), "22012", "{}", error_text(&e)),
            (0, Ok(_)) => panic!("division by zero succeeded"),
            (d, Ok(row)) => assert_eq!(row.get::<_, i32>(0), 100 / d),
            (d, Err(e)) => panic!("100 / {d}: {}", error_text(&e)),
        }
    }
    // Errors of every phase: parse, bind (bad parameter), execute.
    let e = client.prepare("SELEC 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42601");
    let e = client.query("SELECT * FROM no_such_table", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42P01");
    let e = client.query_one("SELECT $1::int4", &[&"not a number"]).await.unwrap_err();
    assert!(e.as_db_error().is_none(), "tokio-postgres refuses the parameter itself: {e}");
    let e = client.query_one("SELECT $1::text::int4", &[&"x1"]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "22P02");
    assert_eq!(client.query_one(&div, &[&3i32]).await.unwrap().get::<_, i32>(0), 33);

    // Inside a transaction an error aborts it until ROLLBACK, as on the server.
    let txn = client.transaction().await.unwrap();
    txn.execute("INSERT INTO log (v) VALUES (1)", &[]).await.unwrap();
    let results = join_all([txn.query_one(&div, &[&0i32]), txn.query_one(&div, &[&1i32])]).await;
    assert_eq!(sqlstate(results[0].as_ref().unwrap_err()), "22012");
    assert_eq!(sqlstate(results[1].as_ref().unwrap_err()), "25P02");
    txn.rollback().await.unwrap();
    assert_eq!(db.value_on_leader("SELECT count(*) FROM log").await.as_deref(), Some("0"));

    // The session is fine afterwards, on followers and on the leader.
    let port: String = client.query_one("SELECT current_setting('port')", &[]).await.unwrap().get(0);
    assert!(db.is_follower_port(&port));
    client.execute("INSERT INTO log (v) VALUES (2)", &[]).await.unwrap();
    assert_eq!(db.value_on_leader("SELECT sum(v) FROM log").await.as_deref(), Some("2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_unnamed_statement_routes_per_query() {
    let db = fresh_database().await;
    db.execute_on_all(ITEMS).await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;

    // query_typed: Parse/Bind/Execute of the unnamed statement in one request.
    let mut ports = BTreeSet::new();
    for id in 1..=8i32 {
        let row = client
            .query_typed_one("SELECT name, current_setting('port') FROM items WHERE id = $1", &[(&id, Type::INT4)])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), format!("item {id}"));
        ports.insert(row.get::<_, String>(1));
    }
    assert_eq!(ports, db.follower_ports());
    for v in 1..=3i32 {
        let row = client
            .query_typed_one("INSERT INTO log (v) VALUES ($1) RETURNING current_setting('port')", &[(&v, Type::INT4)])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), db.leader_port());
        // A read right after uses the unnamed statement again, on a follower
        // that has applied the write (the harness's chorus waits for one).
        let row = client.query_typed_one("SELECT count(*), current_setting('port') FROM log", &[]).await.unwrap();
        assert!(db.is_follower_port(&row.get::<_, String>(1)));
        assert_eq!(row.get::<_, i64>(0), i64::from(v), "the read sees the session's write");
    }
    assert_eq!(db.value_on_leader("SELECT sum(v) FROM log").await.as_deref(), Some("6"));
    assert_converged(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn several_statements_in_one_simple_query() {
    let db = fresh_database().await;
    db.execute_on_all(ITEMS).await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;

    let messages = client
        .simple_query("SELECT 1; SELECT 2, 'two'; SELECT name FROM items WHERE id <= 3 ORDER BY id")
        .await
        .unwrap();
    let mut shape = Vec::new();
    for m in &messages {
        match m {
            SimpleQueryMessage::Row(r) => shape.push(format!("row {}", r.get(0).unwrap())),
            SimpleQueryMessage::CommandComplete(n) => shape.push(format!("done {n}")),
            _ => {}
        }
    }
    assert_eq!(shape, ["row 1", "done 1", "row 2", "done 1", "row item 1", "row item 2", "row item 3", "done 3"]);

    // A text holding a write goes to the leader as a whole.
    let rows = simple_rows(
        &client,
        "SELECT current_setting('port'); INSERT INTO log (v) VALUES (7); SELECT current_setting('port'), count(*) FROM log",
    )
    .await;
    assert_eq!(rows, vec![vec![Some(db.leader_port())], vec![Some(db.leader_port()), Some("1".into())]]);
    assert_converged(&db).await;

    // An error stops the text; the implicit transaction rolls back what ran before it.
    let e = client
        .simple_query("INSERT INTO log (v) VALUES (8); SELECT 1/0; INSERT INTO log (v) VALUES (9)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22012");
    assert_eq!(db.value_on_leader("SELECT string_agg(v::text, ',') FROM log").await.as_deref(), Some("7"));

    // A whole transaction in one text.
    client.batch_execute("BEGIN; INSERT INTO log (v) VALUES (10); UPDATE log SET v = v + 1; COMMIT").await.unwrap();
    assert_eq!(
        db.value_on_leader("SELECT string_agg(v::text, ',' ORDER BY v) FROM log").await.as_deref(),
        Some("8,11")
    );
    // Reads spread over followers again afterwards.
    let mut ports = BTreeSet::new();
    for _ in 0..4 {
        let rows = simple_rows(&client, "SELECT current_setting('port'); SELECT 'x'").await;
        assert_eq!(rows[1], vec![Some("x".to_string())]);
        ports.insert(rows[0][0].clone().unwrap());
    }
    assert_eq!(ports, db.follower_ports());
    // An empty query.
    let messages = client.simple_query("").await.unwrap();
    assert!(messages.iter().all(|m| !matches!(m, SimpleQueryMessage::Row(_))));
}

/// Cancel `sql` (running through `client`) after a moment; returns how long the
/// query took to fail and its error.
async fn run_and_cancel(client: &tokio_postgres::Client, sql: &str) -> (Duration, tokio_postgres::Error) {
    let start = Instant::now();
    let e = cancelling(client, client.batch_execute(sql)).await.expect_err("the query was not cancelled");
    (start.elapsed(), e)
}

/// Run `query`, sending the client's cancel request every 300 ms until it
/// returns. A cancel that arrives before the query reaches the server is
/// ignored (as by PostgreSQL itself); on a loaded machine the query may take
/// a while to get there, so one cancel after a fixed delay can miss it.
async fn cancelling<T>(
    client: &tokio_postgres::Client,
    query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    let token = client.cancel_token();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let canceller = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(Duration::from_millis(300)) => {
                    token.cancel_query(NoTls).await.expect("cancel request failed");
                }
            }
        }
    });
    let r = query.await;
    let _ = stop.send(());
    canceller.await.unwrap();
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_the_running_query_and_the_session_goes_on() {
    let db = fresh_database().await;
    db.execute_on_all(ITEMS).await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;

    let (took, e) = run_and_cancel(&client, "SELECT pg_sleep(30)").await;
    assert_eq!(sqlstate(&e), "57014", "{}", error_text(&e));
    assert!(took < Duration::from_secs(10), "cancel took {took:?}");
    assert_eq!(simple_value(&client, "SELECT 'alive'").await.as_deref(), Some("alive"));

    // A query running on a follower (read-only transaction) ...
    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert!(db.is_follower_port(&answering_port(&client).await));
    let (took, e) = run_and_cancel(&client, "SELECT pg_sleep(30)").await;
    assert_eq!(sqlstate(&e), "57014", "{}", error_text(&e));
    assert!(took < Duration::from_secs(10), "cancel took {took:?}");
    client.batch_execute("ROLLBACK").await.unwrap();

    // ... and one on the leader (read-write transaction).
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(answering_port(&client).await, db.leader_port());
    let (took, e) = run_and_cancel(&client, "SELECT pg_sleep(30)").await;
    assert_eq!(sqlstate(&e), "57014", "{}", error_text(&e));
    assert!(took < Duration::from_secs(10), "cancel took {took:?}");
    client.batch_execute("ROLLBACK").await.unwrap();

    // An extended-protocol query.
    let e = cancelling(&client, client.query("SELECT pg_sleep(30)", &[])).await.unwrap_err();
    assert_eq!(sqlstate(&e), "57014");

    // The session is usable, and a cancel with nothing running harms nothing.
    client.cancel_token().cancel_query(NoTls).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let row = client.query_one("SELECT count(*) FROM items", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 100);
    client.execute("INSERT INTO log (v) VALUES (1)", &[]).await.unwrap();

    // Another session's cancel key does not cancel this session's query.
    let other = chorus.connect(db.name()).await;
    let token = other.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        token.cancel_query(NoTls).await
    });
    client.batch_execute("SELECT pg_sleep(0.8)").await.expect("cancelled by another session's key");
    canceller.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_sent_while_chorus_places_the_query_is_not_lost() {
    let db = fresh_database().await;
    // A fresh chorus: the session's first read needs a new connection to a
    // follower (connect, authenticate), and the cancel arrives meanwhile.
    // As with PostgreSQL itself, a cancel that arrives before the query does
    // is ignored; on a loaded machine a 5 ms head start is not always enough
    // for the query to reach chorus, so try a few times: a cancel that
    // arrives while chorus is placing the query must never be lost.
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let chorus = start_chorus(cluster());
        let client = std::sync::Arc::new(chorus.connect(db.name()).await);
        let token = client.cancel_token();
        let start = Instant::now();
        let running = tokio::spawn({
            let client = client.clone();
            async move { client.batch_execute("SELECT pg_sleep(3)").await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        token.cancel_query(NoTls).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(20), running).await.expect("query hung").unwrap();
        match r {
            Err(e) => {
                assert_eq!(sqlstate(&e), "57014", "{}", error_text(&e));
                assert!(db.is_follower_port(&answering_port(&client).await));
                return;
            }
            Ok(()) => outcomes.push(start.elapsed()),
        }
    }
    panic!(
        "no cancel took effect in 5 tries (query durations {outcomes:?}): cancels sent while chorus places a query are lost"
    );
}
