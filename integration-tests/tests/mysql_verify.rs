//! `chorus verify` on MariaDB clusters, against real servers: identical tables
//! match whatever the physical row order; a changed value, a missing row, a
//! table missing or only on a follower and a column type difference are each
//! reported on exactly the table concerned; verify waits for followers'
//! applied LSN; a configuration with PostgreSQL and MariaDB nodes checks both.
//!
//! Other tests of this binary create databases on the shared clusters
//! concurrently, so those tests verify only their own database (`--database`);
//! the test of whole servers has a private cluster.

use chorus::config::Config;
use chorus::verify::{Report, VerifyOptions, verify_waiting};
use integration_tests::*;
use mysql_async::prelude::Queryable;
use std::collections::HashMap;
use std::time::Duration;

/// Varied types (NULLs, binary data including the bytes of `\N`, a string
/// 'NULL', exact and approximate numbers, TIMESTAMP, JSON, ENUM/SET/BIT, a
/// latin1 column, a column named like verify's own alias), a table without a
/// primary key holding duplicates, awkward names, an empty table.
const SCHEMA: &str = "
CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(10,2), ratio DOUBLE, weight FLOAT,
                    at TIMESTAMP(3) NULL, d DATE, data BLOB, doc JSON, kind ENUM('a', 'b'), flags SET('x', 'y'),
                    bits BIT(5), big BIGINT UNSIGNED, h INT, latin VARCHAR(10) CHARACTER SET latin1);
CREATE TABLE dupes (v INT);
CREATE TABLE kinds (id INT);
CREATE TABLE `odd ``name`` t` (k VARCHAR(5) NOT NULL PRIMARY KEY, `v w` VARCHAR(10) NOT NULL);
CREATE TABLE empty_t (x INT);
";

/// The rows of `items`, inserted in `order` (`seq` ascending, descending, by
/// hash...: a different physical order on each node).
fn items_rows(order: &str) -> String {
    format!(
        "INSERT INTO items SELECT seq, IF(seq % 7 = 0, NULL, CONCAT('item ', seq)), seq * 1.25, seq / 3, seq / 7, \
                TIMESTAMP '2024-01-01 12:00:00' + INTERVAL seq MINUTE, DATE '2024-02-29' + INTERVAL seq DAY, \
                IF(seq % 5 = 0, NULL, UNHEX(MD5(seq))), JSON_OBJECT('i', seq, 'even', seq % 2 = 0), \
                IF(seq % 2 = 0, 'a', 'b'), IF(seq % 3 = 0, 'x,y', ''), seq % 32, 18446744073709551615 - seq, seq, \
                IF(seq % 4 = 0, 'Ã©t', 'é') \
         FROM seq_1_to_200 ORDER BY {order};
         INSERT INTO items (id, name, data) VALUES (1000, 'NULL', UNHEX('5C4E')), (1001, '', ''), (1002, NULL, NULL);"
    )
}

const OTHER_ROWS: &str = "
INSERT INTO kinds VALUES (1), (2), (3);
INSERT INTO `odd ``name`` t` VALUES ('a', 'x'), ('b', 'y');
";

/// A fresh database on the shared cluster with the fixture on every node, the
/// rows of `items` and `dupes` (no primary key: stored in insertion order) in
/// a different order on each.
async fn fixture() -> MariaDb<'static> {
    let db = fresh_maria_database().await;
    db.execute_on_all(SCHEMA).await;
    db.execute_on_all(OTHER_ROWS).await;
    let orders = [
        ("seq", "(1), (1), (2), (NULL), (NULL)"),
        ("seq DESC", "(NULL), (2), (1), (NULL), (1)"),
        ("MD5(seq)", "(2), (NULL), (1), (1), (NULL)"),
    ];
    for (node, (items, dupes)) in maria_cluster().nodes().iter().zip(orders) {
        on(&db, node, &format!("{} INSERT INTO dupes VALUES {dupes};", items_rows(items))).await;
    }
    db
}

/// Run `sql` in `db` on `node` only.
async fn on(db: &MariaDb<'_>, node: &MariaNode, sql: &str) {
    let mut conn = db.connect_node(node).await;
    conn.query_drop(sql).await.unwrap_or_else(|e| panic!("{} on {}: {e}", sql, node.name()));
    conn.disconnect().await.unwrap();
}

fn follower(i: usize) -> &'static MariaNode {
    &maria_cluster().followers()[i]
}

fn shared_config_toml() -> String {
    maria_cluster().chorus_config_toml("127.0.0.1:0".parse().unwrap(), CHORUS_USER, CHORUS_PASSWORD)
}

/// Verify `db` on the shared cluster through the library.
async fn verify_db(db: &MariaDb<'_>) -> Report {
    let config = Config::from_toml_str(&shared_config_toml()).unwrap();
    let options = VerifyOptions { databases: vec![db.name().to_string()] };
    verify_waiting(&config, &options, Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("verify failed: {e}"))
}

/// The differing objects, as printed before the colon.
fn objects(report: &Report) -> Vec<String> {
    report.differences.iter().map(|d| d.object()).collect()
}

/// A config file under the tests' directory, removed on drop.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn new(label: &str, toml: &str) -> ConfigFile {
        let dir = tests_root();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("mysql-verify-{label}-{}.toml", std::process::id()));
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

/// `chorus verify ARGS`: (exit code, stdout, stderr).
fn chorus_verify(args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let out = run_chorus(&all, &[]);
    (out.status.and_then(|s| s.code()), out.stdout, out.stderr)
}

/// Assert that `stdout` is exactly `expected`, line for line, where `<A>`,
/// `<B>`... in an expected line stand for a 16-digit digest as printed: the
/// same letter the same digest everywhere, different letters different ones.
#[track_caller]
fn assert_lines(stdout: &str, expected: &[String]) {
    let actual: Vec<&str> = stdout.lines().collect();
    assert_eq!(actual.len(), expected.len(), "expected {expected:#?}\ngot {actual:#?}");
    let mut digests: HashMap<char, String> = HashMap::new();
    for (line, pattern) in actual.iter().zip(expected) {
        assert!(line_matches(line, pattern, &mut digests), "line {line:?}\ndoes not match {pattern:?}\nin {actual:#?}");
    }
    let mut values: Vec<&String> = digests.values().collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), digests.len(), "different letters, same digest: {digests:?}\n{actual:#?}");
}

/// `line` against `pattern` (see [`assert_lines`]), binding digests as it goes.
fn line_matches(line: &str, pattern: &str, digests: &mut HashMap<char, String>) -> bool {
    let (mut rest, mut pat) = (line, pattern);
    while let Some(c) = pat.chars().next() {
        let p = pat.as_bytes();
        if p.len() >= 3 && p[0] == b'<' && p[1].is_ascii_uppercase() && p[2] == b'>' {
            let Some(digest) = rest.get(..16).filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit())) else {
                return false;
            };
            if digests.entry(p[1] as char).or_insert_with(|| digest.to_string()) != digest {
                return false;
            }
            (rest, pat) = (&rest[16..], &pat[3..]);
        } else {
            let Some(r) = rest.strip_prefix(c) else { return false };
            (rest, pat) = (r, &pat[c.len_utf8()..]);
        }
    }
    rest.is_empty()
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_tables_match_whatever_the_row_order() {
    let db = fixture().await;
    let report = verify_db(&db).await;
    assert!(report.converged(), "{:#?}", report.differences);
    assert_eq!((report.databases, report.tables, report.nodes.len()), (1, 5, 1 + SHARED_FOLLOWERS), "{report:#?}");

    // Rewritten in place on one follower (another physical layout): still equal.
    on(
        &db,
        follower(0),
        "UPDATE items SET name = 'tmp', data = REPEAT('x', 5000) WHERE id % 2 = 0 AND id < 1000; \
         UPDATE items SET name = IF(id % 7 = 0, NULL, CONCAT('item ', id)), \
                          data = IF(id % 5 = 0, NULL, UNHEX(MD5(id))) WHERE id % 2 = 0 AND id < 1000",
    )
    .await;
    let out = {
        let file = ConfigFile::new("same", &shared_config_toml());
        chorus_verify(&["--config", file.path(), "--database", db.name()])
    };
    assert_eq!(out.0, Some(0), "{out:?}");
    assert_eq!(out.1, "all nodes match (1 database, 5 tables, 3 nodes)\n", "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_difference_is_one_line_on_its_table() {
    let db = fixture().await;
    on(&db, follower(0), "UPDATE items SET name = 'changed' WHERE id = 17").await;
    on(&db, follower(1), "DELETE FROM dupes WHERE v = 1 LIMIT 1").await;
    on(&db, follower(1), "CREATE TABLE extra (x INT)").await;
    on(&db, follower(0), "DROP TABLE empty_t").await;
    // Same values: only the definitions differ.
    on(&db, follower(1), "ALTER TABLE kinds MODIFY id BIGINT").await;
    on(&db, follower(0), "ALTER TABLE `odd ``name`` t` MODIFY `v w` VARCHAR(20) NOT NULL").await;

    let file = ConfigFile::new("diff", &shared_config_toml());
    let (code, stdout, stderr) = chorus_verify(&["--config", file.path(), "-d", db.name()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let (l, f1, f2) = (maria_cluster().leader().name(), follower(0).name(), follower(1).name());
    let d = db.name();
    assert_lines(
        &stdout,
        &[
            format!("{d}.dupes: {l}=5/<A> {f1}=5/<A> {f2}=4/<B>"),
            format!("{d}.empty_t: missing on {f1}"),
            format!("{d}.extra: not on the leader but on {f2}"),
            format!("{d}.items: {l}=203/<C> {f1}=203/<D> {f2}=203/<C>"),
            format!("{d}.kinds: columns differ: {l}=(id int(11)) {f1}=(id int(11)) {f2}=(id bigint(20))"),
            format!(
                "{d}.odd `name` t: columns differ: {l}=(k varchar(5) not null, v w varchar(10) not null) \
                 {f1}=(k varchar(5) not null, v w varchar(20) not null) {f2}=(k varchar(5) not null, v w varchar(10) not null)"
            ),
            "6 differences (1 database, 6 tables, 3 nodes)".to_string(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn small_changes_are_seen() {
    // What a value's text or a collation would hide: a fraction HEX would
    // round away, a float's 7th digit, letter case, NULL against '' and 'NULL'.
    let db = fresh_maria_database().await;
    db.execute_on_all(
        "CREATE TABLE dec_t (v DECIMAL(10,2)); INSERT INTO dec_t VALUES (1.25), (2.50);
         CREATE TABLE dbl_t (v DOUBLE); INSERT INTO dbl_t VALUES (0.1), (1e300);
         CREATE TABLE flt_t (v FLOAT); INSERT INTO flt_t VALUES (1.2345678), (3);
         CREATE TABLE case_t (v VARCHAR(5)); INSERT INTO case_t VALUES ('a'), ('b');
         CREATE TABLE null_t (v VARCHAR(5)); INSERT INTO null_t VALUES (NULL), (''), ('NULL');
         CREATE TABLE nullstr_t (v VARCHAR(5)); INSERT INTO nullstr_t VALUES ('NULL');",
    )
    .await;
    assert!(verify_db(&db).await.converged());
    on(
        &db,
        follower(0),
        "UPDATE dec_t SET v = 1.26 WHERE v = 1.25; UPDATE flt_t SET v = 1.2345677 WHERE v > 1.2 AND v < 1.3",
    )
    .await;
    on(
        &db,
        follower(1),
        "UPDATE dbl_t SET v = 0.1000000000000001 WHERE v < 1; UPDATE case_t SET v = 'A' WHERE v = 'a'",
    )
    .await;
    on(&db, follower(1), "UPDATE null_t SET v = '' WHERE v IS NULL; UPDATE nullstr_t SET v = NULL").await;
    let report = verify_db(&db).await;
    let tables = ["case_t", "dbl_t", "dec_t", "flt_t", "null_t", "nullstr_t"];
    assert_eq!(objects(&report), tables.map(|t| format!("{}.{t}", db.name())));
}

#[test]
fn whole_servers_are_compared_after_the_followers_caught_up() {
    let cluster = private_maria_cluster(2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (leader, f1, f2) = (cluster.leader(), &cluster.followers()[0], &cluster.followers()[1]);
    let run = |sql: &str, nodes: &[&MariaNode]| {
        rt.block_on(async {
            for node in nodes {
                let mut conn = node.connect("").await.unwrap();
                conn.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql} on {}: {e}", node.name()));
                conn.disconnect().await.unwrap();
            }
        })
    };
    let all = [leader, f1, f2];
    run(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v TEXT, at TIMESTAMP NULL); \
         INSERT INTO shop.t VALUES (1, 'a', '2024-01-01 00:00:00')",
        &all,
    );
    // TIMESTAMPs print in the session's time zone, whose default may differ.
    run("SET GLOBAL time_zone = '+05:30'", &[f2]);
    let file = ConfigFile::new("private", &cluster.chorus_config_toml("127.0.0.1:0".parse().unwrap(), "app", "pw"));

    // Every database but the servers' own; no `_chorus` anywhere: no wait.
    let (code, stdout, stderr) = chorus_verify(&["--config", file.path()]);
    assert_eq!((code, stdout.as_str()), (Some(0), "all nodes match (1 database, 1 table, 3 nodes)\n"), "{stderr}");

    // chorus's bookkeeping: the leader at LSN 5, follower2 behind at 3. Its
    // contents differ between nodes and are never compared.
    run(include_str!("../../migrations/mysql/0001_log.sql"), &all);
    run("UPDATE _chorus.lsn SET lsn = 5; INSERT INTO _chorus.log VALUES (5, NOW(6), 'entry')", &[leader]);
    run("UPDATE _chorus.applied SET lsn = 5", &[f1]);
    run("UPDATE _chorus.applied SET lsn = 3", &[f2]);
    // It never gets there, however long the wait.
    let (code, stdout, stderr) = chorus_verify(&["--config", file.path(), "--wait", "200ms"]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("error: MySQL followers did not reach the leader's LSN 5 within 200ms: {} is at LSN 3", f2.name())
    );
    run("DROP DATABASE _chorus", &[f2]);
    let (code, _, stderr) = chorus_verify(&["--config", file.path(), "--wait", "200ms"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{} has no _chorus schema yet", f2.name())), "{stderr}");

    // Verify waits until follower2 applied LSN 5 (however soon that is).
    let config = Config::load(&file.0).unwrap();
    let waiting =
        rt.spawn(async move { verify_waiting(&config, &VerifyOptions::default(), Duration::from_secs(60)).await });
    run(include_str!("../../migrations/mysql/0001_log.sql"), &[f2]);
    run("UPDATE _chorus.applied SET lsn = 6", &[f2]);
    let report = rt.block_on(waiting).unwrap().unwrap_or_else(|e| panic!("verify failed: {e}"));
    assert!(report.converged(), "{report:#?}");
    assert_eq!((report.databases, report.tables), (1, 1));

    // A database only the leader has (empty: still a difference).
    run("CREATE DATABASE `new db`", &[leader]);
    let (code, stdout, stderr) = chorus_verify(&["--config", file.path()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!("new db: missing on {}, {}\n1 difference (2 databases, 1 table, 3 nodes)\n", f1.name(), f2.name())
    );
}

#[test]
fn the_command_exits_2_and_names_an_unreachable_node() {
    let toml = shared_config_toml();
    let port = follower(1).port();
    let dead = chorus::localcluster::free_ports(1).unwrap()[0];
    let file = ConfigFile::new("dead", &toml.replace(&format!("port = {port}\n"), &format!("port = {dead}\n")));
    let (code, stdout, stderr) = chorus_verify(&["--config", file.path()]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains(&format!("cannot connect to node {}", follower(1).name())), "{stderr}");

    let file = ConfigFile::new("nodb", &toml);
    let (code, _, stderr) = chorus_verify(&["--config", file.path(), "--database", "no_such_db"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("database no_such_db does not exist on any node"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_with_both_dialects_checks_both() {
    let pg = fresh_database().await;
    pg.execute_on_all("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b')").await;
    let my = fresh_maria_database().await;
    my.execute_on_all("CREATE TABLE u (id INT PRIMARY KEY, v VARCHAR(5)); INSERT INTO u VALUES (1, 'a'), (2, 'b')")
        .await;
    // The PostgreSQL cluster's config plus the MariaDB nodes, renamed (node
    // names are unique across a configuration).
    let toml = cluster()
        .chorus_config_toml("127.0.0.1:0".parse().unwrap(), CHORUS_USER, CHORUS_PASSWORD)
        .replace("[listen]\n", "[listen]\nmysql = \"127.0.0.1:0\"\n")
        + &maria_cluster().nodes_toml("maria-");
    let file = ConfigFile::new("mixed", &toml);
    let both = ["--config", file.path(), "-d", pg.name(), "-d", my.name()];

    let (code, stdout, stderr) = chorus_verify(&both);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "postgres: all nodes match (1 database, 1 table, 3 nodes)\nmysql: all nodes match (1 database, 1 table, 3 nodes)\n"
    );

    let pg_follower = &cluster().followers()[0];
    pg.connect_node(pg_follower).await.batch_execute("UPDATE t SET v = 'c' WHERE id = 2").await.unwrap();
    on(&my, follower(1), "DROP TABLE u").await;
    let (code, stdout, stderr) = chorus_verify(&both);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let names: Vec<&str> = cluster().nodes().iter().map(|n| n.name()).collect();
    assert_eq!(names.len(), 3);
    let [pl, pf1, pf2] = names[..] else { unreachable!() };
    assert_eq!(pf1, pg_follower.name());
    assert_lines(
        &stdout,
        &[
            format!("{}.public.t: {pl}=2/<A> {pf1}=2/<B> {pf2}=2/<A>", pg.name()),
            format!("{}.u: missing on maria-{}", my.name(), follower(1).name()),
            "postgres: 1 difference (1 database, 1 table, 3 nodes)".to_string(),
            "mysql: 1 difference (1 database, 1 table, 3 nodes)".to_string(),
        ],
    );

    // Only the MariaDB database: only that cluster is checked.
    let (code, stdout, stderr) = chorus_verify(&["--config", file.path(), "-d", my.name()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!(
            "{}.u: missing on maria-{}\n1 difference (1 database, 1 table, 3 nodes)\n",
            my.name(),
            follower(1).name()
        )
    );

    // And the library's view of both: one report.
    let config = Config::load(&file.0).unwrap();
    let options = VerifyOptions { databases: vec![pg.name().to_string(), my.name().to_string()] };
    let report = verify_waiting(&config, &options, Duration::from_secs(30)).await.unwrap();
    assert_eq!((report.databases, report.tables, report.nodes.len()), (2, 2, 6));
    assert_eq!(objects(&report), [format!("{}.public.t", pg.name()), format!("{}.u", my.name())]);
}
