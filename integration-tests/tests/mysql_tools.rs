//! Standard MySQL load tools through chorus: sysbench's oltp_read_write (with
//! server-side prepared statements and transactions) and mariadb-slap with its
//! auto-increment and GUID primary keys.

use integration_tests::*;
use mysql_async::prelude::*;

fn run(cmd: &mut std::process::Command) -> CommandOutput {
    run_client(cmd, "apt-get install sysbench mariadb-client", 180)
}

#[tokio::test]
async fn sysbench_oltp_read_write_through_chorus() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let port = chorus.port().to_string();
    let sysbench = |args: &[&str]| {
        let mut c = std::process::Command::new("sysbench");
        c.args(["--db-driver=mysql", "--mysql-host=127.0.0.1", &format!("--mysql-port={port}")])
            .args([format!("--mysql-user={CHORUS_USER}"), format!("--mysql-password={CHORUS_PASSWORD}")])
            .arg(format!("--mysql-db={}", db.name()))
            // Small tables and many threads: conflicts and deadlocks are part of the test.
            .args(["--tables=2", "--table-size=100"])
            .args(args);
        run(&mut c)
    };
    sysbench(&["oltp_read_write", "prepare"]);
    let out = sysbench(&["--threads=8", "--time=4", "--report-interval=0", "oltp_read_write", "run"]);
    let transactions = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("transactions:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no transaction count in {out:?}"));
    assert!(transactions > 0, "{out:?}");
    if let Some(l) = out.stdout.lines().find(|l| l.contains("ignored errors")) {
        eprintln!("sysbench: {}", l.trim());
    }
    // Every committed transaction wrote to the leader: its rows are all there.
    let mut leader = db.connect_leader().await;
    let n: Option<i64> = leader.query_first("SELECT COUNT(*) FROM sbtest1").await.unwrap();
    assert_eq!(n, Some(100), "oltp_read_write deletes and re-inserts: the table keeps its size");
    chorus.assert_converged(maria_cluster(), db.name()).await;
    sysbench(&["oltp_read_write", "cleanup"]);
    assert_no_chorus_panics();
}

#[tokio::test]
async fn mariadb_slap_with_auto_increment_and_guid_keys() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let port = chorus.port().to_string();
    for (i, keys) in ["--auto-generate-sql-add-autoincrement", "--auto-generate-sql-guid-primary"].iter().enumerate() {
        let mut c = std::process::Command::new("mariadb-slap");
        c.args(["--no-defaults", "--protocol=TCP", "-h", "127.0.0.1", "-P", &port, "-u", CHORUS_USER])
            .arg(format!("-p{CHORUS_PASSWORD}"))
            // mariadb-slap creates (and at the end drops) a schema of its own.
            .arg(format!("--create-schema={}_slap{i}", db.name()))
            .args(["--auto-generate-sql", keys, "--auto-generate-sql-load-type=mixed"])
            .args(["--concurrency=4", "--iterations=2", "--number-of-queries=200"]);
        let out = run(&mut c);
        assert!(out.stdout.contains("Average number of seconds"), "{out:?}");
    }
    // Each iteration creates, loads and drops its schema: the followers
    // replayed all of it (and nothing of it is left anywhere).
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

/// mariadb-dump's output, restored through chorus with the mariadb CLI as an
/// operator would: versioned comments (`/*!40101 ... */`, mariadb-dump's
/// `/*M!999999\- enable the sandbox mode */`), LOCK TABLES around multi-row
/// INSERTs, BLOBs as raw bytes in string literals (not UTF-8), a view, and a
/// trigger and a procedure whose bodies hold `;`s. Then a dump of it through
/// chorus, in a consistent snapshot.
#[tokio::test]
async fn a_mariadb_dump_restores_through_chorus_and_dumps_back() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let leader = maria_cluster().leader();
    let source = format!("{}_src", db.name());
    mariadb_sql(&leader.url_for_db("mysql"), &format!("CREATE DATABASE `{source}`"));
    let setup: &[u8] = b"CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, \
          created DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6), data JSON, pic BLOB, kind ENUM('x','y')) ENGINE=InnoDB;
        CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, note TEXT, \
          FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE CASCADE) ENGINE=InnoDB;
        INSERT INTO customers (name, data, pic, kind) VALUES ('ann', '{\"k\": [1, 2]}', X'00FF10FE27225C', 'y'),
          ('\xe6\x97\xa5\xe6\x9c\xac \"q\" ''s'' \\\\', NULL, NULL, 'x'), ('zed', '{}', REPEAT(X'C3', 3000), NULL);
        DELIMITER //
        CREATE TRIGGER orders_bi BEFORE INSERT ON orders FOR EACH ROW BEGIN
          SET NEW.note = COALESCE(NEW.note, 'none'); SET NEW.note = CONCAT(NEW.note, '!'); END//
        CREATE PROCEDURE total_of(IN c INT) BEGIN SELECT COUNT(*) FROM orders WHERE customer_id = c; SELECT 1; END//
        DELIMITER ;
        INSERT INTO orders (customer_id, note) SELECT id, IF(id = 2, NULL, CONCAT('n', id)) FROM customers ORDER BY id;
        CREATE VIEW per_customer AS SELECT c.name, COUNT(o.id) AS n FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.name;
    ";
    let out = mariadb_cli(&leader.url_for_db(&source), &[], Some(setup));
    assert!(out.success(), "{out:?}");
    let dump_file = tests_root().join(format!("{}.sql", db.name()));
    let dump = |url: &str, extra: &[&str]| {
        let opts = mysql_async::Opts::from_url(url).unwrap();
        let mut c = std::process::Command::new("mariadb-dump");
        c.args(["--no-defaults", "--protocol=TCP", "-h", "127.0.0.1"])
            .arg(format!("--port={}", opts.tcp_port()))
            .arg(format!("--user={}", opts.user().unwrap()))
            .arg(format!("--password={}", opts.pass().unwrap_or_default()))
            .args(["--routines", "--triggers"])
            .args(extra)
            .arg(format!("--result-file={}", dump_file.display()))
            .arg(opts.db_name().unwrap());
        run(&mut c);
        std::fs::read(&dump_file).unwrap()
    };
    let text = dump(&leader.url_for_db(&source), &[]);
    assert!(std::str::from_utf8(&text).is_err(), "the BLOBs are raw bytes in the dump");
    let out = mariadb_cli(&chorus.url(db.name()), &[], Some(&text));
    assert!(out.success(), "restoring the dump through chorus: {out:?}");
    chorus.assert_converged(maria_cluster(), db.name()).await;
    // The trigger and the procedure reached the followers whole.
    for url in db.follower_urls() {
        let bodies = mariadb_sql(
            &url,
            "SELECT COUNT(*) FROM information_schema.triggers WHERE action_statement LIKE '%CONCAT(NEW.note%' \
             UNION ALL SELECT COUNT(*) FROM information_schema.routines WHERE routine_definition LIKE '%SELECT 1; END'",
        );
        assert_eq!(bodies.split_whitespace().collect::<Vec<_>>(), ["1", "1"], "on {url}");
    }
    let sums = "SELECT MD5(GROUP_CONCAT(HEX(pic), name ORDER BY id)) FROM customers";
    assert_eq!(mariadb_sql(&db.leader_url(), sums), mariadb_sql(&leader.url_for_db(&source), sums));
    // And back out through chorus, as a backup would.
    let back = dump(&chorus.url(db.name()), &["--single-transaction"]);
    let back = String::from_utf8_lossy(&back);
    assert!(back.contains("CREATE TABLE `customers`") && back.contains("TRIGGER") && back.contains("total_of"));
    mariadb_sql(&leader.url_for_db("mysql"), &format!("DROP DATABASE `{source}`"));
    assert_no_chorus_panics();
}
