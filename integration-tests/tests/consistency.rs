//! Read consistency through chorus with one follower really lagging: its
//! applier is held up by a lock taken directly on that follower (`LOCK TABLE
//! ... IN SHARE MODE` blocks the applier's writes, not reads), so it stays
//! at an old position while the other follower keeps up.
//!
//! - read-your-writes: sessions that write and read back at once never miss
//!   their write, and reads still go to the follower that keeps up;
//! - monotonic: values never go back while followers sit at different positions;
//! - eventual reads do use the lagging follower; bounded ones avoid it;
//! - a position read with SHOW chorus.position on one connection and SET on
//!   another makes the second one's reads see the first one's write.
//!
//! Every test ends with verify, after the lock is released.

use integration_tests::*;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_postgres::Client;

/// Follower reads wait long enough for the follower that keeps up, on a busy machine.
fn patient(c: &mut chorus::config::Config) {
    c.reads.wait = Some(Duration::from_secs(20));
}

/// Hold the first follower's applier up in `db`: its writes to `table` wait
/// for this connection's lock. Returns the connection (COMMIT releases it).
async fn hold_up_first_follower(db: &TestDb<'_>, table: &str) -> Client {
    let f1 = &db.cluster().followers()[0];
    let lock = db.connect_node(f1).await;
    lock.batch_execute(&format!("BEGIN; LOCK TABLE {table} IN SHARE MODE")).await.unwrap();
    lock
}

fn lagging_port(db: &TestDb<'_>) -> String {
    db.cluster().followers()[0].port().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn writers_read_their_own_writes_while_a_follower_lags() {
    let db = fresh_database().await;
    db.execute_on_all(
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, 0 FROM generate_series(1, 9) g",
    )
    .await;
    let chorus = start_chorus_with(cluster(), patient);
    let lock = hold_up_first_follower(&db, "t").await;
    let lagging = lagging_port(&db);

    let mut tasks = Vec::new();
    for me in 1..=8i32 {
        let client = chorus.connect(db.name()).await;
        tasks.push(tokio::spawn(async move {
            let mut ports: BTreeMap<String, usize> = BTreeMap::new();
            let mut misses = Vec::new();
            for i in 1..=20i32 {
                let (v, port) = if i % 2 == 0 {
                    client.execute("UPDATE t SET v = $1 WHERE id = $2", &[&i, &me]).await.unwrap();
                    let row = client
                        .query_one("SELECT v, current_setting('port') FROM t WHERE id = $1", &[&me])
                        .await
                        .unwrap();
                    (row.get::<_, i32>(0), row.get::<_, String>(1))
                } else {
                    client.simple_query(&format!("UPDATE t SET v = {i} WHERE id = {me}")).await.unwrap();
                    let rows =
                        simple_rows(&client, &format!("SELECT v, current_setting('port') FROM t WHERE id = {me}"))
                            .await;
                    (rows[0][0].as_deref().unwrap().parse().unwrap(), rows[0][1].clone().unwrap())
                };
                if v != i {
                    misses.push(format!("session {me} wrote {i}, read {v} from port {port}"));
                }
                *ports.entry(port).or_default() += 1;
            }
            (ports, misses)
        }));
    }
    // A session that only reads, meanwhile: its reads stay on followers.
    let reader = chorus.connect(db.name()).await;
    let mut reader_ports = BTreeMap::<String, usize>::new();
    for _ in 0..20 {
        let port = simple_value(&reader, "SELECT current_setting('port') FROM t LIMIT 1").await.unwrap();
        *reader_ports.entry(port).or_default() += 1;
    }

    let mut ports = BTreeMap::<String, usize>::new();
    let mut misses = Vec::new();
    for t in tasks {
        let (p, m) = t.await.unwrap();
        for (k, n) in p {
            *ports.entry(k).or_default() += n;
        }
        misses.extend(m);
    }
    assert!(misses.is_empty(), "reads missed their session's write: {misses:#?}");
    assert_eq!(ports.get(&lagging), None, "the lagging follower served a read after a write: {ports:?}");
    let on_followers: usize = ports.iter().filter(|(p, _)| db.is_follower_port(p)).map(|(_, n)| n).sum();
    assert!(on_followers > 0, "no read after a write was served by the follower that keeps up: {ports:?}");
    assert_eq!(
        reader_ports.get(&db.leader_port()),
        None,
        "a session that never wrote read from the leader: {reader_ports:?}"
    );
    eprintln!("reads after writes by port: {ports:?}; reads of a session that never wrote: {reader_ports:?}");

    lock.batch_execute("COMMIT").await.unwrap();
    assert_converged(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn values_never_go_back_while_followers_are_at_different_positions() {
    let db = fresh_database().await;
    db.execute_on_all(
        "CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL); INSERT INTO counter VALUES (1, 0)",
    )
    .await;
    let chorus = start_chorus_with(cluster(), patient);
    let writer = chorus.connect(db.name()).await;
    // Some progress everywhere, then the first follower stops at n = 5.
    for _ in 0..5 {
        writer.simple_query("UPDATE counter SET n = n + 1 WHERE id = 1").await.unwrap();
    }
    let probe = chorus.connect(db.name()).await;
    probe.simple_query(&format!("SET chorus.position = '{}'", position(&writer).await)).await.unwrap();
    assert_eq!(simple_value(&probe, "SELECT n FROM counter").await.as_deref(), Some("5"));
    // Every follower has n = 5 before the lock: a read on either, at any
    // position, sees at least that.
    wait_all_followers(&db, "SELECT n FROM counter", "5").await;
    let lock = hold_up_first_follower(&db, "counter").await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 5;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 200 {
                writer.simple_query("UPDATE counter SET n = n + 1 WHERE id = 1").await.unwrap();
                n += 1;
            }
        })
    };
    let mut readers = Vec::new();
    for r in 0..4 {
        let client = chorus.connect(db.name()).await;
        readers.push(tokio::spawn(async move {
            let mut last = 0i64;
            let mut backwards = Vec::new();
            let mut ports = BTreeMap::<String, usize>::new();
            for i in 0..60 {
                let rows = if (i + r) % 2 == 0 {
                    simple_rows(&client, "SELECT n, current_setting('port') FROM counter").await
                } else {
                    let row =
                        client.query_one("SELECT n::text, current_setting('port') FROM counter", &[]).await.unwrap();
                    vec![vec![Some(row.get::<_, String>(0)), Some(row.get::<_, String>(1))]]
                };
                let n: i64 = rows[0][0].as_deref().unwrap().parse().unwrap();
                let port = rows[0][1].clone().unwrap();
                if n < last {
                    backwards.push(format!("read {n} from port {port} after {last}"));
                }
                last = last.max(n);
                *ports.entry(port).or_default() += 1;
            }
            (backwards, ports)
        }));
    }
    let mut all_ports = BTreeMap::<String, usize>::new();
    for r in readers {
        let (backwards, ports) = r.await.unwrap();
        assert!(backwards.is_empty(), "a value went back in time: {backwards:#?}");
        for (k, n) in ports {
            *all_ports.entry(k).or_default() += n;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writes.await.unwrap();
    eprintln!("monotonic reads by port: {all_ports:?}");
    lock.batch_execute("COMMIT").await.unwrap();
    assert_converged(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eventual_reads_use_the_lagging_follower_and_bounded_ones_avoid_it() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t VALUES (1, 0)").await;
    let writer_chorus = start_chorus_with(cluster(), patient);
    let writer = writer_chorus.connect(db.name()).await;
    writer.simple_query("UPDATE t SET v = 1 WHERE id = 1").await.unwrap();
    wait_all_followers(&db, "SELECT v FROM t", "1").await;
    let lock = hold_up_first_follower(&db, "t").await;
    for v in 2..=12 {
        writer.simple_query(&format!("UPDATE t SET v = {v} WHERE id = 1")).await.unwrap();
    }
    let lagging = lagging_port(&db);

    // eventual: any follower, however far behind; the lagging one shows v = 1.
    let eventual = start_chorus_with(cluster(), |c| {
        c.reads.consistency = Some(vec![chorus::policy::Level::Eventual]);
    });
    let mut stale = 0;
    for _ in 0..6 {
        let client = eventual.connect(db.name()).await;
        let rows = simple_rows(&client, "SELECT v, current_setting('port') FROM t").await;
        if rows[0][1].as_deref() == Some(lagging.as_str()) {
            assert_eq!(rows[0][0].as_deref(), Some("1"), "the lagging follower is held at v = 1");
            stale += 1;
        }
    }
    assert!(stale > 0, "eventual reads never used the lagging follower");

    // bounded: at most 3 transactions behind. The lagging follower is 11
    // behind: reads go to the other follower once it has caught up.
    let bounded = start_chorus_with(cluster(), |c| {
        c.reads.consistency = Some(vec![chorus::policy::Level::Bounded]);
        c.reads.max_lag_txns = Some(3);
        c.reads.wait = Some(Duration::from_secs(20));
    });
    for _ in 0..6 {
        let client = bounded.connect(db.name()).await;
        let rows = simple_rows(&client, "SELECT v, current_setting('port') FROM t").await;
        assert_ne!(rows[0][1].as_deref(), Some(lagging.as_str()), "a bounded read used the follower 11 behind");
        let v: i32 = rows[0][0].as_deref().unwrap().parse().unwrap();
        assert!(v >= 9, "a bounded read saw v = {v}, more than 3 transactions behind 12");
    }
    // A policy that fails instead of falling back says why: no follower has
    // a position far ahead of the log.
    let strict = start_chorus_with(cluster(), |c| {
        c.reads.wait = Some(Duration::ZERO);
        c.reads.on_timeout = Some(chorus::policy::OnTimeout::Error);
    });
    let client = strict.connect(db.name()).await;
    client.simple_query("SET chorus.position = '1000000'").await.unwrap();
    let e = client.simple_query("SELECT v FROM t").await.expect_err("no follower is at 1000000");
    assert_eq!(sqlstate(&e), "55000", "{}", error_text(&e));
    assert!(db_message(&e).contains("no follower can serve this read"), "{}", error_text(&e));
    client.simple_query("RESET chorus.position").await.unwrap();
    assert_eq!(
        simple_value(&client, "SELECT v FROM t").await.as_deref().map(|v| v.parse::<i32>().unwrap() >= 1),
        Some(true)
    );

    lock.batch_execute("COMMIT").await.unwrap();
    assert_converged(&db).await;
}

/// The session's position, as a client reads it.
async fn position(client: &Client) -> String {
    simple_value(client, "SHOW chorus.position").await.unwrap()
}

/// Wait until every follower answers `sql` with `want` (directly).
async fn wait_all_followers(db: &TestDb<'_>, sql: &str, want: &str) {
    for f in db.cluster().followers() {
        let c = db.connect_node(f).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while simple_value(&c, sql).await.as_deref() != Some(want) {
            assert!(std::time::Instant::now() < deadline, "{} never reached {want} for {sql}", f.name());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_position_carried_to_another_connection_sees_the_write() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL); INSERT INTO t VALUES (1, 'old')").await;
    let chorus = start_chorus_with(cluster(), patient);
    let lock = hold_up_first_follower(&db, "t").await;
    let lagging = lagging_port(&db);

    let writer = chorus.connect(db.name()).await;
    assert_eq!(position(&writer).await, "0", "nothing written or read yet");
    writer.simple_query("UPDATE t SET v = 'new' WHERE id = 1").await.unwrap();
    let token = position(&writer).await;
    assert!(token.parse::<i64>().unwrap() > 0, "a write moves the position: {token}");
    // The extended protocol reads the same position.
    let row = writer.query_one("SHOW chorus.position", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), token);

    // Without the position, a new connection may read the lagging follower's old state.
    let mut saw_old = false;
    for _ in 0..6 {
        let c = chorus.connect(db.name()).await;
        let rows = simple_rows(&c, "SELECT v, current_setting('port') FROM t").await;
        if rows[0][0].as_deref() == Some("old") {
            assert_eq!(rows[0][1].as_deref(), Some(lagging.as_str()));
            saw_old = true;
        }
    }
    assert!(saw_old, "the lagging follower was never read: the test would prove nothing");

    // With it, every read sees the write, through either protocol.
    for i in 0..6 {
        let c = chorus.connect(db.name()).await;
        if i % 2 == 0 {
            c.simple_query(&format!("SET chorus.position = '{token}'")).await.unwrap();
        } else {
            c.execute(&format!("SET chorus.position TO {token}"), &[]).await.unwrap();
        }
        let rows = simple_rows(&c, "SELECT v, current_setting('port') FROM t").await;
        assert_eq!(rows[0][0].as_deref(), Some("new"), "read from port {:?}", rows[0][1]);
        let row = c.query_one("SELECT v FROM t", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "new");
        let now: i64 = position(&c).await.parse().unwrap();
        assert!(now >= token.parse::<i64>().unwrap(), "the position carried over is the connection's now");
    }

    // Mistakes get clear errors and leave the connection usable.
    let c = chorus.connect(db.name()).await;
    for (sql, code) in [
        ("SET chorus.position = 'soon'", "22023"),
        ("SET chorus.position = '-1'", "22023"),
        ("SHOW chorus.nothing", "42704"),
        ("SET LOCAL chorus.position = '1'", "0A000"),
        ("SELECT 1; SHOW chorus.position", "0A000"),
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), code, "{sql}: {}", error_text(&e));
        let e = c.execute(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&e), code, "{sql} (extended): {}", error_text(&e));
    }
    assert_eq!(simple_value(&c, "SELECT 1").await.as_deref(), Some("1"));
    // Inside a transaction too, and the transaction goes on.
    c.batch_execute("BEGIN").await.unwrap();
    position(&c).await;
    c.batch_execute(&format!("SET chorus.position = '{token}'")).await.unwrap();
    assert_eq!(simple_value(&c, "SELECT v FROM t").await.as_deref(), Some("new"));
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("RESET chorus.position").await.unwrap();

    lock.batch_execute("COMMIT").await.unwrap();
    assert_converged(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_rules_route_reads_and_a_bad_reload_keeps_them() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE hot (id int); CREATE TABLE cold (id int); INSERT INTO hot VALUES (1); INSERT INTO cold VALUES (1)")
        .await;
    let dir = db.cluster().dir().join(format!("policies-{}", db.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let rule = |table: &str| {
        format!("[[rule]]\nname = \"fresh-{table}\"\ntables = [\"{table}\"]\nconsistency = [\"leader\"]\n")
    };
    std::fs::write(dir.join("10-fresh.toml"), rule("hot")).unwrap();
    let policy_dir = dir.clone();
    let chorus = start_chorus_with(cluster(), move |c| c.policies.dir = Some(policy_dir));
    let client = chorus.connect(db.name()).await;
    let leader = db.leader_port();
    let port_of = |table: &'static str| {
        let client = &client;
        let leader = leader.clone();
        async move {
            let sql = format!("SELECT current_setting('port') FROM {table}");
            let simple = simple_value(client, &sql).await.unwrap();
            let extended: String = client.query_one(&sql, &[]).await.unwrap().get(0);
            assert_eq!(simple == leader, extended == leader, "{table}: both protocols follow the same rule");
            simple
        }
    };
    for _ in 0..3 {
        assert_eq!(port_of("hot").await, leader, "the rule sends reads of hot to the leader");
        assert!(db.is_follower_port(&port_of("cold").await), "cold is read on followers");
    }

    // A bad file: every problem reported, the rules in force stay.
    std::fs::write(dir.join("20-bad.toml"), "[[rule]]\nname = \"fresh-hot\"\nconsistency = [\"sometimes\"]\n").unwrap();
    std::fs::write(dir.join("30-bad.toml"), "[[rule]]\nname = \"x\"\nprefer = [\"nobody\"]\n").unwrap();
    let e = chorus.context().reload_policies().expect_err("bad files are rejected").to_string();
    assert!(e.contains("20-bad.toml") && e.contains("sometimes"), "{e}");
    assert!(e.contains("30-bad.toml") && e.contains("no follower named \"nobody\""), "{e}");
    assert_eq!(port_of("hot").await, leader, "the old rules stay in force");

    // Fixed: the new rules take effect in running sessions.
    std::fs::remove_file(dir.join("20-bad.toml")).unwrap();
    std::fs::remove_file(dir.join("30-bad.toml")).unwrap();
    std::fs::write(dir.join("10-fresh.toml"), rule("cold")).unwrap();
    assert_eq!(chorus.context().reload_policies().unwrap(), 1);
    assert!(db.is_follower_port(&port_of("hot").await), "hot is read on followers now");
    assert_eq!(port_of("cold").await, leader);
    assert_converged(&db).await;
}

/// The value of the metric line `name{labels...}` whose labels include all
/// of `with`, summed over matching lines.

#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_routes_waits_fallbacks_and_the_lag() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t VALUES (1, 0)").await;
    let chorus = start_chorus_with(cluster(), |c| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        c.reads.wait = Some(Duration::from_millis(300));
    });
    let lock = hold_up_first_follower(&db, "t").await;
    let lagging = db.cluster().followers()[0].name().to_string();
    let keeping_up = db.cluster().followers()[1].name().to_string();
    let client = chorus.connect(db.name()).await;
    for v in 1..=5 {
        client.simple_query(&format!("UPDATE t SET v = {v} WHERE id = 1")).await.unwrap();
        simple_value(&client, "SELECT v FROM t").await;
    }
    chorus.wait_caught_up_on(db.name(), &[1]).await;
    // Asking for a position no follower has: the read waits, then falls back.
    client.simple_query("SET chorus.position = '1000000'").await.unwrap();
    simple_value(&client, "SELECT v FROM t").await;

    let text = chorus.scrape().await;
    let d = db.name();
    assert!(metric(&text, "chorus_requests_total", &[("route", "leader")]) >= 5.0, "{text}");
    assert!(metric(&text, "chorus_requests_total", &[("route", "follower"), ("node", &keeping_up)]) >= 1.0, "{text}");
    assert!(metric(&text, "chorus_read_fallbacks_total", &[]) >= 1.0, "{text}");
    assert!(metric(&text, "chorus_read_waits_total", &[("outcome", "timed-out")]) >= 1.0, "{text}");
    assert!(metric(&text, "chorus_read_wait_seconds_count", &[]) >= 1.0, "{text}");
    assert!(metric(&text, "chorus_client_sessions", &[]) >= 1.0, "{text}");
    assert_eq!(metric(&text, "chorus_leader_lsn", &[("database", d)]), 5.0, "{text}");
    assert_eq!(metric(&text, "chorus_follower_applied_lsn", &[("database", d), ("node", &keeping_up)]), 5.0);
    assert_eq!(metric(&text, "chorus_applied_transactions_total", &[("database", d), ("node", &keeping_up)]), 5.0);
    assert_eq!(metric(&text, "chorus_follower_lag_transactions", &[("database", d), ("node", &keeping_up)]), 0.0);
    assert_eq!(metric(&text, "chorus_follower_lag_transactions", &[("database", d), ("node", &lagging)]), 5.0);
    assert!(metric(&text, "chorus_follower_lag_seconds", &[("database", d), ("node", &lagging)]) > 0.0, "{text}");
    assert_eq!(metric(&text, "chorus_node_up", &[("node", &lagging)]), 1.0);

    lock.batch_execute("COMMIT").await.unwrap();
    assert_converged(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_roles_health_and_lag_through_sql_and_the_command() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t VALUES (1, 0)").await;
    let chorus = start_chorus(cluster());
    let lock = hold_up_first_follower(&db, "t").await;
    let client = chorus.connect(db.name()).await;
    for v in 1..=3 {
        client.simple_query(&format!("UPDATE t SET v = {v} WHERE id = 1")).await.unwrap();
    }
    chorus.wait_caught_up_on(db.name(), &[1]).await;
    let (lagging, keeping_up) = (db.cluster().followers()[0].name(), db.cluster().followers()[1].name());
    let leader = db.cluster().leader().name();

    // Through chorus, either protocol: chorus's own view.
    let rows = simple_rows(&client, "SHOW chorus.status").await;
    let extended: Vec<Vec<Option<String>>> = client
        .query("SHOW chorus.status", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get::<_, Option<String>>(i)).collect())
        .collect();
    for rows in [&rows, &extended] {
        let find = |node: &str| {
            rows.iter().find(|r| r[0].as_deref() == Some(node)).unwrap_or_else(|| panic!("{node} in {rows:?}"))
        };
        let cell = |r: &Vec<Option<String>>, i: usize| r[i].clone().unwrap_or_default();
        let l = find(leader);
        assert_eq!(
            (cell(l, 1), cell(l, 2), cell(l, 3), cell(l, 4)),
            ("leader".into(), "up".into(), db.name().into(), "3".into())
        );
        let k = find(keeping_up);
        assert_eq!(
            (cell(k, 1), cell(k, 2), cell(k, 4), cell(k, 5)),
            ("follower".into(), "up".into(), "3".into(), "0".into())
        );
        let g = find(lagging);
        assert_eq!((cell(g, 2), cell(g, 4), cell(g, 5)), ("up".into(), "0".into(), "3".into()), "{g:?}");
        assert!(cell(g, 6).parse::<f64>().unwrap() > 0.0, "lag in ms: {g:?}");
    }
    let e = client.simple_query("SET chorus.status = 'x'").await.expect_err("read-only");
    assert_eq!(sqlstate(&e), "55P02", "{}", error_text(&e));

    // `chorus status`: read from the nodes themselves.
    let file = db.cluster().dir().join(format!("status-{}.toml", db.name()));
    std::fs::write(
        &file,
        db.cluster().chorus_config_toml("127.0.0.1:1".parse().unwrap(), CHORUS_USER, CHORUS_PASSWORD),
    )
    .unwrap();
    let out = run_chorus(&["status", "--config", file.to_str().unwrap(), "-d", db.name()], &[]);
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    let line = |node: &str| {
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(node))
            .unwrap_or_else(|| panic!("{node}:\n{}", out.stdout))
            .to_string()
    };
    let words = |l: String| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let g = words(line(lagging));
    assert_eq!(&g[1..6], ["follower", "up", db.name(), "0", "3"], "{}", out.stdout);
    let k = words(line(keeping_up));
    assert_eq!(&k[1..6], ["follower", "up", db.name(), "3", "0"], "{}", out.stdout);
    assert_eq!(&words(line(leader))[1..5], ["leader", "up", db.name(), "3"], "{}", out.stdout);

    lock.batch_execute("COMMIT").await.unwrap();
    assert_converged(&db).await;
}

/// The real binary: SIGHUP reloads the policy files; a bad file is logged
/// with its problems and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_policies_of_a_running_chorus() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE hot (id int); CREATE TABLE cold (id int); INSERT INTO hot VALUES (1); INSERT INTO cold VALUES (1)")
        .await;
    let dir = db.cluster().dir().join(format!("sighup-{}", db.name()));
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let rule =
        |table: &str| format!("[[rule]]\nname = \"fresh\"\ntables = [\"{table}\"]\nconsistency = [\"leader\"]\n");
    std::fs::write(dir.join("policies/10.toml"), rule("hot")).unwrap();
    let port = chorus::localcluster::free_ports(1).unwrap()[0];
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.join("chorus.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[policies]\ndir = \"policies\"\n",
            db.cluster().chorus_config_toml(listen, CHORUS_USER, CHORUS_PASSWORD)
        ),
    )
    .unwrap();
    let log = dir.join("chorus.log");
    let mut child = std::process::Command::new(chorus_binary())
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("postgres://{CHORUS_USER}:{CHORUS_PASSWORD}@127.0.0.1:{port}/{}", db.name());
    let mut client = None;
    for _ in 0..300 {
        if let Ok(c) = try_connect(&url).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = client.expect("chorus came up");
    let leader = db.leader_port();
    let on_leader = |table: &'static str| {
        let client = &client;
        let leader = leader.clone();
        async move { simple_value(client, &format!("SELECT current_setting('port') FROM {table}")).await.unwrap() == leader }
    };
    let hup = |pid: u32| {
        let ok = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success();
        assert!(ok, "kill -HUP");
    };
    assert!(on_leader("hot").await && !on_leader("cold").await);

    // A bad file: logged, nothing changes.
    std::fs::write(dir.join("policies/20.toml"), "[[rule]]\nname = \"bad\"\nconsistency = [\"never\"]\n").unwrap();
    hup(child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log).unwrap().contains("policies not reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload error logged:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(std::fs::read_to_string(&log).unwrap().contains("20.toml"), "the problem names its file");
    assert!(on_leader("hot").await && !on_leader("cold").await, "the old policies stay in force");

    // Fixed and changed: the running chorus follows the new rules.
    std::fs::remove_file(dir.join("policies/20.toml")).unwrap();
    std::fs::write(dir.join("policies/10.toml"), rule("cold")).unwrap();
    hup(child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !on_leader("cold").await || on_leader("hot").await {
        assert!(std::time::Instant::now() < deadline, "the new policies never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(client);
    let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    assert_converged(&db).await;
}

/// Named chorus statements across batches, closed along with a server
/// statement (as pgjdbc sends Closes), and a batch that mixes the two kinds.
#[tokio::test(flavor = "multi_thread")]
async fn chorus_statements_live_by_name_and_close_with_server_statements() {
    use integration_tests::raw::{RawConn, data_rows};
    use integration_tests::raw::frames::*;
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), |c| {
        c.users.push(chorus::config::User {
            name: "raw_trust".into(),
            password: None,
            auth: chorus::config::AuthMethod::Trust,
            mysql_auth: None,
        })
    });
    let (mut c, _) = RawConn::login_trust(chorus.addr(), "raw_trust", db.name()).await;
    let tags = |msgs: &[integration_tests::raw::BackendMsg]| msgs.iter().map(|m| m.tag as char).collect::<String>();

    c.send(&[parse("s1", "SHOW chorus.position"), bind("", "s1"), describe_portal(""), execute(""), sync()].concat())
        .await
        .unwrap();
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "12TDCZ", "{msgs:?}");
    assert_eq!(data_rows(&msgs), ["0"]);
    c.send(&[bind("", "s1"), execute(""), sync()].concat()).await.unwrap();
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "2DCZ", "by name, in a later batch: {msgs:?}");

    // Closed together with a server statement: both answered, in order.
    c.send(&[close_statement("s1"), parse("", "SELECT 41 + 1"), bind("", ""), execute(""), sync()].concat())
        .await
        .unwrap();
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "312DCZ", "{msgs:?}");
    assert_eq!(data_rows(&msgs), ["42"]);
    c.send(&[bind("", "s1"), execute(""), sync()].concat()).await.unwrap();
    let msgs = c.until_ready().await;
    assert_eq!(msgs[0].tag, b'E', "s1 was closed: {msgs:?}");
    assert_eq!(msgs[0].error().code, "26000");

    // A chorus statement pipelined with a server statement in one batch.
    c.send(&[parse("", "SHOW chorus.position"), bind("", ""), execute(""), parse("x", "SELECT 1"), sync()].concat())
        .await
        .unwrap();
    let msgs = c.until_ready().await;
    assert_eq!(msgs[0].tag, b'E', "{msgs:?}");
    assert_eq!(msgs[0].error().code, "0A000");
    let msgs = c.simple_ok("SELECT 'still usable'").await;
    assert_eq!(data_rows(&msgs), ["still usable"]);

    // The unnamed statement is chorus's, then a server's again (pgjdbc's
    // executeQuery of SHOW, then of a SELECT).
    c.send(&[parse("", "SHOW chorus.position"), bind("", ""), execute(""), sync()].concat()).await.unwrap();
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "12DCZ", "{msgs:?}");
    c.send(&[parse("", "SELECT 7"), bind("", ""), describe_portal(""), execute(""), sync()].concat()).await.unwrap();
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "12TDCZ", "{msgs:?}");
    assert_eq!(data_rows(&msgs), ["7"]);

    // Closed, then used, in one batch: the server's error, the session goes on.
    c.send(&[parse("s2", "SHOW chorus.position"), close_statement("s2"), bind("", "s2"), execute(""), sync()].concat())
        .await
        .unwrap();
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "13EZ", "{msgs:?}");
    assert_eq!(msgs[2].error().code, "26000");
    let msgs = c.simple_ok("SELECT 'after'").await;
    assert_eq!(data_rows(&msgs), ["after"]);
    assert_no_chorus_panics();
}
