//! `verify`, the convergence judge, against real servers: identical fixtures on
//! every node match (whatever the physical row order); a changed row, a missing
//! table and a different column type are each reported on exactly the table
//! concerned; the `chorus verify` command exits 0 / 1 / 2.
//!
//! Other tests of this binary create databases concurrently, so each test
//! verifies only its own database (`VerifyOptions::databases`, `--database`).

use chorus::verify::{Content, Detail, Difference, Report, TableName, VerifyOptions, verify_with};
use integration_tests::*;

/// Varied types (their text output depends on session settings verify fixes),
/// NULLs, a partitioned table, awkward names, a column named like verify's own
/// alias, a table without columns, and a second schema.
const FIXTURE: &str = r#"
CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), ratio float8, at timestamptz,
                    d date, span interval, data bytea, doc jsonb, tags text[], t int);
INSERT INTO items SELECT i, 'item ' || i, i * 1.25, i / 3.0, TIMESTAMPTZ '2024-01-01 12:00:00+00' + i * INTERVAL '1 hour',
                         DATE '2024-02-29' + i, i * INTERVAL '90 minutes', decode(md5(i::text), 'hex'),
                         jsonb_build_object('i', i, 'even', i % 2 = 0), ARRAY['a', i::text], NULLIF(i % 3, 0)
                  FROM generate_series(1, 200) i;
CREATE TABLE dupes (v int);
INSERT INTO dupes VALUES (1), (1), (2), (NULL), (NULL);
CREATE TABLE measurements (city int, day date, temp int) PARTITION BY RANGE (day);
CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO measurements SELECT i % 5, DATE '2024-06-01' + i * 3, i FROM generate_series(1, 150) i;
CREATE SCHEMA "Other ""Schema""";
CREATE TABLE "Other ""Schema""".empty ();
CREATE TABLE "Other ""Schema"""."Mixed Case" (k text PRIMARY KEY, v varchar(10) NOT NULL);
INSERT INTO "Other ""Schema"""."Mixed Case" VALUES ('a', 'x'), ('b', 'y');
"#;

async fn verify_db(db: &TestDb<'_>) -> Report {
    let config = chorus_config(db.cluster());
    let options = VerifyOptions { databases: vec![db.name().to_string()] };
    verify_with(&config, &options).await.unwrap_or_else(|e| panic!("verify failed: {e}"))
}

/// The differing objects, as `schema.table` (or the database name).
fn objects(report: &Report) -> Vec<String> {
    report.differences.iter().map(|d| d.table.as_ref().map_or(d.database.clone(), TableName::to_string)).collect()
}

fn follower(i: usize) -> &'static PgNode {
    &cluster().followers()[i]
}

fn only_difference(report: &Report) -> &Difference {
    assert_eq!(report.differences.len(), 1, "{report:#?}");
    &report.differences[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_fixtures_match() {
    let db = fresh_database().await;
    db.execute_on_all(FIXTURE).await;
    let report = verify_db(&db).await;
    assert!(report.converged(), "{:#?}", report.differences);
    assert_eq!(report.databases, 1);
    // items, dupes, two partitions, empty, Mixed Case.
    assert_eq!(report.tables, 6, "{report:#?}");
    assert_eq!(report.nodes.len(), 1 + SHARED_FOLLOWERS);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_row_is_reported_on_its_table() {
    let db = fresh_database().await;
    db.execute_on_all(FIXTURE).await;
    let f = db.connect_node(follower(0)).await;
    f.batch_execute("UPDATE items SET name = 'changed' WHERE id = 17").await.unwrap();
    let report = verify_db(&db).await;
    assert_eq!(objects(&report), ["public.items"]);
    let diff = only_difference(&report);
    let line = diff.to_string();
    assert!(line.starts_with(&format!("{}.public.items: ", db.name())), "{line}");
    // Same count everywhere; only the changed follower's digest differs.
    let [Detail::Content(per_node)] = &diff.details[..] else { panic!("{diff:?}") };
    assert_eq!(per_node.len(), 3);
    assert!(per_node.iter().all(|(_, c)| matches!(c, Content::Rows { rows: 200, .. })), "{per_node:?}");
    assert_eq!(per_node[0].1, per_node[2].1);
    assert_ne!(per_node[0].1, per_node[1].1);
    assert_eq!(per_node[1].0, follower(0).name());

    // A deleted duplicate row changes the count of its table (duplicates count).
    let f2 = db.connect_node(follower(1)).await;
    f2.batch_execute("DELETE FROM dupes WHERE ctid = (SELECT min(ctid) FROM dupes WHERE v = 1)").await.unwrap();
    let report = verify_db(&db).await;
    assert_eq!(objects(&report), ["public.dupes", "public.items"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_row_in_a_partition_is_reported_on_the_partition() {
    let db = fresh_database().await;
    db.execute_on_all(FIXTURE).await;
    let f = db.connect_node(follower(1)).await;
    f.batch_execute("UPDATE measurements SET temp = -1 WHERE day >= '2025-01-01' AND temp = 120").await.unwrap();
    let report = verify_db(&db).await;
    assert_eq!(objects(&report), ["public.measurements_2025"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_table_is_reported() {
    let db = fresh_database().await;
    db.execute_on_all(FIXTURE).await;
    let f = db.connect_node(follower(1)).await;
    f.batch_execute(r#"DROP TABLE "Other ""Schema"""."Mixed Case""#).await.unwrap();
    let report = verify_db(&db).await;
    let diff = only_difference(&report);
    assert_eq!(objects(&report), [r#"Other "Schema".Mixed Case"#]);
    assert_eq!(diff.details, [Detail::MissingOn(vec![follower(1).name().to_string()])]);
    assert!(diff.to_string().ends_with(&format!(": missing on {}", follower(1).name())), "{diff}");

    // And a table only a follower has.
    f.batch_execute("CREATE TABLE stray (x int)").await.unwrap();
    let report = verify_db(&db).await;
    assert_eq!(objects(&report), [r#"Other "Schema".Mixed Case"#, "public.stray"]);
    assert_eq!(report.differences[1].details, [Detail::NotOnLeader(vec![follower(1).name().to_string()])]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_type_difference_is_reported() {
    let db = fresh_database().await;
    db.execute_on_all(FIXTURE).await;
    let f = db.connect_node(follower(0)).await;
    // Same values, same text: only the definition differs.
    f.batch_execute("ALTER TABLE dupes ALTER COLUMN v TYPE bigint").await.unwrap();
    let report = verify_db(&db).await;
    let diff = only_difference(&report);
    assert_eq!(objects(&report), ["public.dupes"]);
    assert!(matches!(&diff.details[..], [Detail::Columns(_)]), "{diff:?}");
    let line = diff.to_string();
    assert!(line.contains("=(v integer)") && line.contains(&format!("{}=(v bigint)", follower(0).name())), "{line}");

    // A typmod counts too.
    let f2 = db.connect_node(follower(1)).await;
    f2.batch_execute(r#"ALTER TABLE "Other ""Schema"""."Mixed Case" ALTER COLUMN v TYPE varchar(20)"#).await.unwrap();
    let report = verify_db(&db).await;
    assert_eq!(objects(&report), [r#"Other "Schema".Mixed Case"#, "public.dupes"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sequence_states_are_compared() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE s (id serial PRIMARY KEY, v text); INSERT INTO s (v) VALUES ('a'), ('b')").await;
    let report = verify_db(&db).await;
    assert!(report.converged(), "{:#?}", report.differences);
    assert_eq!(report.tables, 2, "the table and its sequence");
    // A value consumed on one follower only (as a rolled-back insert on the
    // leader would, if it were not replicated): the tables match, the sequence not.
    let f = db.connect_node(follower(0)).await;
    f.batch_execute("BEGIN; INSERT INTO s (v) VALUES ('c'); ROLLBACK").await.unwrap();
    let report = verify_db(&db).await;
    assert_eq!(objects(&report), ["public.s_id_seq"]);
    let line = report.differences[0].to_string();
    assert!(
        line.ends_with(&format!(": {}=2 {}=3 {}=2", cluster().leader().name(), follower(0).name(), follower(1).name())),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn row_order_does_not_matter() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE r (id int, v text)").await;
    let leader = db.connect_leader().await;
    leader.batch_execute("INSERT INTO r SELECT i, 'v' || i FROM generate_series(1, 500) i").await.unwrap();
    let f0 = db.connect_node(follower(0)).await;
    f0.batch_execute("INSERT INTO r SELECT i, 'v' || i FROM generate_series(500, 1, -1) i").await.unwrap();
    // Another physical layout: inserted out of order, then rewritten by updates.
    let f1 = db.connect_node(follower(1)).await;
    f1.batch_execute(
        "INSERT INTO r SELECT i, 'tmp' FROM generate_series(1, 500) i ORDER BY random(); \
         UPDATE r SET v = 'v' || id WHERE id % 2 = 0; UPDATE r SET v = 'v' || id WHERE id % 2 = 1",
    )
    .await
    .unwrap();
    let report = verify_db(&db).await;
    assert!(report.converged(), "{:#?}", report.differences);
    assert_eq!(report.tables, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_settings_do_not_matter() {
    // A follower whose defaults print values differently (as its postgresql.conf could).
    let db = fresh_database().await;
    for node in cluster().followers() {
        let c = db.connect_node(node).await;
        c.batch_execute(&format!(
            "ALTER DATABASE {} SET TimeZone = 'Asia/Kolkata'; ALTER DATABASE {} SET DateStyle = 'German'; \
             ALTER DATABASE {} SET extra_float_digits = -3",
            db.name(),
            db.name(),
            db.name()
        ))
        .await
        .unwrap();
    }
    db.execute_on_all(FIXTURE).await;
    let report = verify_db(&db).await;
    assert!(report.converged(), "{:#?}", report.differences);
}

/// A config file for the shared cluster, removed on drop.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn new(label: &str, toml: &str) -> ConfigFile {
        let dir = tests_root();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("verify-{label}-{}.toml", std::process::id()));
        std::fs::write(&path, toml).unwrap();
        ConfigFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn shared_config_toml() -> String {
    cluster().chorus_config_toml("127.0.0.1:0".parse().unwrap(), CHORUS_USER, CHORUS_PASSWORD)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_exits_0_when_equal_and_1_when_not() {
    let db = fresh_database().await;
    db.execute_on_all(FIXTURE).await;
    let file = ConfigFile::new("cli", &shared_config_toml());

    let out = run_chorus(&["verify", "--config", file.path(), "--database", db.name()], &[]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "all nodes match (1 database, 6 tables, 3 nodes)", "{out:?}");

    let f = db.connect_node(follower(1)).await;
    f.batch_execute("DELETE FROM items WHERE id = 3").await.unwrap();
    // The config from CHORUS_CONFIG, like `chorus run`.
    let out = run_chorus(&["verify", "-d", db.name()], &[("CHORUS_CONFIG", file.path())]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    let prefix = format!("{}.public.items: {}=200/", db.name(), cluster().leader().name());
    assert!(lines[0].starts_with(&prefix), "{out:?}");
    assert!(lines[0].contains(&format!(" {}=199/", follower(1).name())), "{out:?}");
    assert_eq!(lines[1], "1 difference (1 database, 6 tables, 3 nodes)");
}

#[test]
fn the_command_exits_2_and_names_an_unreachable_node() {
    let toml = shared_config_toml();
    let port = follower(1).port();
    let dead = chorus::localcluster::free_ports(1).unwrap()[0];
    let file = ConfigFile::new("dead", &toml.replace(&format!("port = {port}\n"), &format!("port = {dead}\n")));
    let out = run_chorus(&["verify", "--config", file.path()], &[]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{out:?}");
    assert!(out.stderr.contains(&format!("cannot connect to node {}", follower(1).name())), "{out:?}");

    let file = ConfigFile::new("nodb", &toml);
    let out = run_chorus(&["verify", "--config", file.path(), "--database", "no_such_db"], &[]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{out:?}");
    assert!(out.stderr.contains("database no_such_db does not exist on any node"), "{out:?}");
}
