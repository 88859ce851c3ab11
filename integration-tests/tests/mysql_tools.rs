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
