//! MySQL statement replication through chorus, end to end against real
//! MariaDB servers: every follower ends with exactly the leader's rows, for
//! the statements that would otherwise differ per server (NOW(), RAND(),
//! AUTO_INCREMENT after rollbacks, LAST_INSERT_ID(), column defaults,
//! session context, savepoints, DDL inside transactions, prepared statements
//! with parameters), and the statements that cannot be made safe are refused
//! before they run.

use integration_tests::*;
use mysql_async::prelude::*;

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test]
async fn nondeterministic_values_replay_as_the_leader_computed_them() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop(
        "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v DOUBLE, at DATETIME(6), \
         d DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6), u TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), \
         ts BIGINT, note VARCHAR(20) DEFAULT 'x')",
    )
    .await
    .unwrap();
    c.query_drop("INSERT INTO t (v, at, ts) VALUES (RAND(), NOW(6), UNIX_TIMESTAMP())").await.unwrap();
    c.query_drop("INSERT INTO t (v, at) VALUES (RAND(), CURRENT_TIMESTAMP(6)), (RAND(), UTC_TIMESTAMP(6)), (RAND(), NOW(6) - INTERVAL 1 DAY)")
        .await
        .unwrap();
    // Per row: every row's RAND() must match on every node.
    c.query_drop("INSERT INTO t (v) SELECT RAND() FROM t ORDER BY id").await.unwrap();
    c.query_drop("UPDATE t SET v = v + RAND(), note = 'updated' WHERE id % 2 = 0").await.unwrap();

    // Rolled-back inserts consume ids on the leader only.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t (v) VALUES (1), (2), (3)").await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    c.query_drop("INSERT INTO t (v) VALUES (4)").await.unwrap();
    let id: Option<u64> = c.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
    c.query_drop("CREATE TABLE child (id INT AUTO_INCREMENT PRIMARY KEY, parent INT)").await.unwrap();
    c.query_drop("INSERT INTO child (parent) VALUES (LAST_INSERT_ID())").await.unwrap();
    let parent: Option<u64> = c.query_first("SELECT parent FROM child").await.unwrap();
    assert_eq!(parent, id, "LAST_INSERT_ID() in a write is the session's value");

    // Savepoints: what was rolled back to is not replayed.
    c.query_drop("START TRANSACTION").await.unwrap();
    c.query_drop("INSERT INTO t (v, note) VALUES (10, 'kept')").await.unwrap();
    c.query_drop("SAVEPOINT s1").await.unwrap();
    c.query_drop("INSERT INTO t (v, note) VALUES (11, 'undone')").await.unwrap();
    c.query_drop("ROLLBACK TO SAVEPOINT s1").await.unwrap();
    c.query_drop("INSERT INTO t (v, note) VALUES (12, 'kept too')").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();

    // Session context: sql_mode and time_zone change what statements store.
    c.query_drop("SET time_zone = '+05:00'").await.unwrap();
    c.query_drop("INSERT INTO t (v, at, note) VALUES (20, '2026-01-01 00:00:00', 'tz')").await.unwrap();
    c.query_drop("UPDATE t SET u = '2026-06-01 12:00:00' WHERE note = 'tz'").await.unwrap();
    c.query_drop("SET sql_mode = ''").await.unwrap();
    c.query_drop("INSERT INTO t (v, note) VALUES ('not a number', 'truncated to twenty chars!')").await.unwrap();
    let warnings: Vec<(String, u32, String)> = c.query("SHOW WARNINGS").await.unwrap();
    assert!(!warnings.is_empty(), "the write's warnings are still there after chorus's own steps");

    // A DDL in the middle of a transaction commits it implicitly, as on the server.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t (v, note) VALUES (30, 'before ddl')").await.unwrap();
    c.query_drop("ALTER TABLE t ADD COLUMN extra INT DEFAULT 7").await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM t WHERE note = 'before ddl'").await.unwrap();
    assert_eq!(n, Some(1), "the DDL committed the insert before it");

    // Prepared statements: parameters are inlined for the followers.
    c.exec_batch(
        "INSERT INTO t (v, at, note) VALUES (?, ?, ?)",
        (0..20).map(|i| {
            (f64::from(i) / 3.0, mysql_async::Value::Date(2026, 2, 3, 4, 5, 6, i as u32 * 1000), format!("p{i}"))
        }),
    )
    .await
    .unwrap();
    c.exec_drop("UPDATE t SET note = ? WHERE note = ?", ("p-updated", "p3")).await.unwrap();
    c.exec_drop("DELETE FROM t WHERE note = ?", ("p4",)).await.unwrap();

    // Another database in the same transaction.
    let other = format!("other_{}", std::process::id());
    c.query_drop(format!("CREATE DATABASE `{other}`")).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{other}`.o (id INT PRIMARY KEY, at DATETIME(6))")).await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!("INSERT INTO `{other}`.o VALUES (1, NOW(6))")).await.unwrap();
    c.query_drop("UPDATE t SET extra = 8 WHERE id = 1").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();

    chorus.assert_converged(maria_cluster(), db.name()).await;
    chorus.assert_converged(maria_cluster(), &other).await;
    // Dropping the default database leaves the session without one: what
    // runs next runs without one on the followers too (mariadb-slap's loop).
    c.query_drop(format!("USE `{other}`")).await.unwrap();
    c.query_drop(format!("DROP DATABASE `{other}`")).await.unwrap();
    c.query_drop(format!("CREATE DATABASE `{other}`")).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{other}`.again (id INT PRIMARY KEY, db VARCHAR(64))")).await.unwrap();
    // DATABASE() is NULL there, on the followers too.
    c.query_drop(format!("INSERT INTO `{other}`.again VALUES (1, DATABASE()), (2, SCHEMA())")).await.unwrap();
    c.exec_drop(format!("INSERT INTO `{other}`.again VALUES (?, DATABASE())"), (3,)).await.unwrap();
    // A session that never chose one, after an entry with a database (the
    // followers' appliers run with it).
    let mut with_db = chorus.connect(db.name()).await;
    with_db.query_drop(format!("INSERT INTO `{other}`.again VALUES (4, DATABASE())")).await.unwrap();
    let mut no_db = mysql_async::Conn::new(chorus.opts(db.name()).db_name(None::<String>)).await.unwrap();
    no_db.query_drop(format!("INSERT INTO `{other}`.again VALUES (5, DATABASE())")).await.unwrap();
    no_db.exec_drop(format!("INSERT INTO `{other}`.again VALUES (?, SCHEMA())"), (6,)).await.unwrap();
    chorus.assert_converged(maria_cluster(), &other).await;
    c.query_drop(format!("DROP DATABASE `{other}`")).await.unwrap();
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn user_variables_in_writes_replay_with_the_leaders_values() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop(
        "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, i BIGINT, u BIGINT UNSIGNED, d DECIMAL(20,6), \
         f DOUBLE, s VARCHAR(40) CHARACTER SET utf8mb4, l VARCHAR(40) CHARACTER SET latin1, b VARBINARY(40), \
         at DATETIME(6), rnk INT)",
    )
    .await
    .unwrap();
    c.query_drop("CREATE TABLE child (id INT AUTO_INCREMENT PRIMARY KEY, parent INT, note VARCHAR(80))").await.unwrap();
    // Values computed on the leader only (the SET runs there): the time,
    // random numbers, a value read from a table, every type a variable holds.
    c.query_drop(
        "SET @i = -5 * 3, @u = 18446744073709551615, @d = 1.5 / 7, @f = RAND() + 0.1e0, @s = CONCAT('€ ', UUID()), \
         @l = CONVERT('café' USING latin1), @b = UNHEX('00FF10'), @at = NOW(6), @null = NULL",
    )
    .await
    .unwrap();
    c.query_drop("INSERT INTO t (i, u, d, f, s, l, b, at) VALUES (@i, @u, @d, @f, @s, @l, @b, @at)").await.unwrap();
    c.query_drop("INSERT INTO t (i, s) VALUES (@null, @never_set)").await.unwrap();
    // The script idiom: the parent's id carried to the child in a variable.
    c.query_drop("INSERT INTO t (i) VALUES (1)").await.unwrap();
    c.query_drop("SET @parent = LAST_INSERT_ID()").await.unwrap();
    c.query_drop("INSERT INTO child (parent, note) VALUES (@parent, 'first'), (@parent, 'second')").await.unwrap();
    c.query_drop("SELECT @max := MAX(id) FROM t").await.unwrap();
    c.query_drop("UPDATE t SET f = RAND() WHERE id = @max").await.unwrap();
    // A variable the write itself assigns, row by row: a ranking.
    c.query_drop("SET @r = 0").await.unwrap();
    c.query_drop("UPDATE t SET rnk = (@r := @r + 1) ORDER BY id DESC").await.unwrap();
    let r: Option<i64> = c.query_first("SELECT @r").await.unwrap();
    assert_eq!(r, Some(3), "the variable the write assigned is the session's");
    // In a transaction, and through a prepared statement with a parameter.
    c.query_drop("START TRANSACTION").await.unwrap();
    c.query_drop("SET @note = CONCAT('tx ', RAND())").await.unwrap();
    c.exec_drop("INSERT INTO child (parent, note) VALUES (?, @note)", (7,)).await.unwrap();
    c.query_drop("SET @note = 'changed later'").await.unwrap();
    c.query_drop("UPDATE child SET note = CONCAT(note, ' / ', @note) WHERE note = 'first'").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    // A column added to rows that exist: filled with the pinned time and seeds.
    c.query_drop(
        "ALTER TABLE child ADD COLUMN at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6), ADD r DOUBLE DEFAULT (RAND())",
    )
    .await
    .unwrap();
    let note: Option<String> = c.query_first("SELECT note FROM child WHERE parent = 7").await.unwrap();
    assert!(note.is_some_and(|n| n.starts_with("tx 0.")));
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

/// The next LOAD DATA LOCAL INFILE on `c` sends `data` as the file.
fn send_file(c: &mut mysql_async::Conn, data: &str) {
    let data = bytes::Bytes::from(data.to_string());
    c.set_infile_handler(async move {
        let stream: mysql_async::InfileData = Box::pin(futures_util::stream::once(async move { Ok(data) }));
        Ok(stream)
    });
}

#[tokio::test]
async fn load_data_local_infile_replicates_the_file_the_client_sent() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop(
        "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(80) CHARACTER SET utf8mb4, n INT, \
         at DATETIME(6), r DOUBLE)",
    )
    .await
    .unwrap();
    // A rolled-back insert leaves a gap in the leader's ids.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t (name) VALUES ('gone')").await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    send_file(&mut c, "ann\t1\nbob\t2\n€ euro\t3\n");
    c.query_drop(
        "LOAD DATA LOCAL INFILE 'people.tsv' INTO TABLE t CHARACTER SET utf8mb4 (name, @n) \
         SET n = @n * 10, at = NOW(6), r = RAND()",
    )
    .await
    .unwrap();
    assert_eq!(c.affected_rows(), 3);
    // Larger than one read, in a transaction, replacing rows, a header line skipped.
    let mut csv = String::from("id,name\n");
    for i in 1..=20_000 {
        csv.push_str(&format!("{i},row {i} {}\n", "x".repeat(i % 50)));
    }
    c.query_drop("BEGIN").await.unwrap();
    send_file(&mut c, &csv);
    c.query_drop(
        "LOAD DATA LOCAL INFILE 'rows.csv' REPLACE INTO TABLE t FIELDS TERMINATED BY ',' IGNORE 1 LINES (id, name)",
    )
    .await
    .unwrap();
    c.query_drop("UPDATE t SET n = 7 WHERE id = 5").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    // LOAD XML, and an empty file.
    send_file(&mut c, "<list><row id=\"30001\" name=\"xml\"/></list>");
    c.query_drop("LOAD XML LOCAL INFILE 'rows.xml' INTO TABLE t ROWS IDENTIFIED BY '<row>'").await.unwrap();
    send_file(&mut c, "");
    c.query_drop("LOAD DATA LOCAL INFILE 'empty' INTO TABLE t").await.unwrap();
    // A file on the leader's own disk: refused.
    let e = c.query_drop("LOAD DATA INFILE '/etc/hostname' INTO TABLE t (name)").await.unwrap_err();
    assert_eq!(server_code(&e), Some(1235), "{e}");
    assert!(e.to_string().contains("LOCAL"), "{e}");
    // A file whose log entry the leader would not take: rolled back, said so.
    let max: Option<usize> = c.query_first("SELECT @@max_allowed_packet").await.unwrap();
    let line = format!("{}\n", "y".repeat(70));
    let big = line.repeat(max.unwrap() / 2 / line.len() + 1000);
    send_file(&mut c, &big);
    let e = c.query_drop("LOAD DATA LOCAL INFILE 'big' INTO TABLE t (name)").await.unwrap_err();
    assert!(e.to_string().contains("max_allowed_packet"), "{e}");
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(20_000 + 1), "the first three rows were replaced, the big file rolled back");
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn temporary_tables_live_on_the_leader_and_are_not_replicated() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40))").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'a'), (2, 'b')").await.unwrap();
    c.query_drop("CREATE TEMPORARY TABLE tmp (id INT PRIMARY KEY, v VARCHAR(40), r DOUBLE)").await.unwrap();
    // What only a follower could not reproduce is fine here: none runs it.
    c.query_drop("INSERT INTO tmp SELECT id, v, RAND() FROM t").await.unwrap();
    c.query_drop("UPDATE tmp SET v = UUID()").await.unwrap();
    c.query_drop("DELETE FROM tmp LIMIT 1").await.unwrap();
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM tmp").await.unwrap();
    assert_eq!(n, Some(1), "reads of the temporary table run where it is");
    c.exec_drop("INSERT INTO tmp VALUES (?, ?, ?)", (7, "prepared", 0.5)).await.unwrap();
    c.query_drop("ALTER TABLE tmp ADD COLUMN z INT").await.unwrap();
    // A transaction goes on across them.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (3, 'c')").await.unwrap();
    c.query_drop("INSERT INTO tmp (id, v) VALUES (9, 'x')").await.unwrap();
    c.query_drop("CREATE TEMPORARY TABLE tmp2 (a INT)").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (4, 'd')").await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(2), "the transaction was still open at the ROLLBACK");
    // Writing regular tables from temporary ones cannot be replayed.
    for sql in [
        "INSERT INTO t SELECT id, v FROM tmp",
        "UPDATE t JOIN tmp ON t.id = tmp.id SET t.v = tmp.v",
        "DROP TABLE t, tmp2",
        "CREATE TEMPORARY TABLE tmp3 (a INT); INSERT INTO t VALUES (8, 'h')",
    ] {
        let e = c.query_drop(sql).await.unwrap_err();
        assert_eq!(server_code(&e), Some(1235), "{sql}: {e}");
    }
    // A temporary table shadows the regular one of its name until dropped.
    c.query_drop("CREATE TEMPORARY TABLE t (id INT PRIMARY KEY, v VARCHAR(40))").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (100, 'shadow')").await.unwrap();
    c.query_drop("DROP TEMPORARY TABLE t").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (5, 'e')").await.unwrap();
    c.query_drop("DROP TABLE tmp2").await.unwrap();
    let prepared = c.prep("INSERT INTO tmp (id, v) VALUES (?, 'p')").await.unwrap();
    c.exec_drop(&prepared, (20,)).await.unwrap();
    c.query_drop("DROP TEMPORARY TABLE tmp").await.unwrap();
    // The name is a regular table's again: replicated.
    c.query_drop("CREATE TABLE tmp (id INT PRIMARY KEY, v VARCHAR(40))").await.unwrap();
    c.query_drop("INSERT INTO tmp VALUES (1, 'regular')").await.unwrap();
    let e = c.exec_drop(&prepared, (21,)).await.unwrap_err();
    assert_eq!(server_code(&e), Some(1235), "a write prepared for the temporary table: {e}");
    let rows: Vec<(i32, String)> = c.query("SELECT id, v FROM t ORDER BY id").await.unwrap();
    assert_eq!(rows, [(1, "a".into()), (2, "b".into()), (5, "e".into())]);
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn an_unordered_limit_is_given_the_primary_keys_order() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    // A secondary index the servers may walk in another order than the key.
    c.query_drop("CREATE TABLE logs (id INT PRIMARY KEY, day INT, note VARCHAR(20), KEY (day))").await.unwrap();
    c.query_drop("CREATE TABLE pairs (a INT, b INT, v INT, PRIMARY KEY (b, a))").await.unwrap();
    let rows: Vec<String> = (1..=60).map(|i| format!("({i}, {}, 'n')", (i * 7) % 5)).collect();
    c.query_drop(format!("INSERT INTO logs VALUES {}", rows.join(", "))).await.unwrap();
    c.query_drop("INSERT INTO pairs VALUES (1, 2, 0), (2, 1, 0), (3, 1, 0), (1, 1, 0)").await.unwrap();
    // A chunked purge, as ops scripts and ORMs' limit().delete() send it.
    c.query_drop("DELETE FROM logs WHERE day < 3 LIMIT 10").await.unwrap();
    assert_eq!(c.affected_rows(), 10);
    c.query_drop("UPDATE logs SET note = 'touched' WHERE day >= 3 LIMIT 4").await.unwrap();
    c.query_drop("UPDATE pairs SET v = 1 LIMIT 2").await.unwrap();
    c.exec_drop("DELETE FROM logs WHERE day = ? LIMIT ?", (4, 2)).await.unwrap();
    assert_eq!(c.affected_rows(), 2);
    // The key order is the one chosen: the lowest keys went.
    let gone: Option<u64> = c.query_first("SELECT COUNT(*) FROM logs WHERE id <= 5 AND day < 3").await.unwrap();
    assert_eq!(gone, Some(0));
    let v: Vec<(i32, i32, i32)> = c.query("SELECT a, b, v FROM pairs ORDER BY b, a").await.unwrap();
    assert_eq!(v, [(1, 1, 1), (2, 1, 1), (3, 1, 0), (1, 2, 0)]);
    // Without a primary key there is no order to choose: refused.
    c.query_drop("CREATE TABLE heap (a INT)").await.unwrap();
    let e = c.query_drop("DELETE FROM heap LIMIT 1").await.unwrap_err();
    assert_eq!(server_code(&e), Some(1235), "{e}");
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn create_table_select_copies_what_the_writes_before_it_committed() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut a = chorus.connect(db.name()).await;
    a.query_drop("CREATE TABLE src (id INT PRIMARY KEY, v INT)").await.unwrap();
    let rows: Vec<String> = (1..=50).map(|i| format!("({i}, 0)")).collect();
    a.query_drop(format!("INSERT INTO src VALUES {}", rows.join(", "))).await.unwrap();
    // Writers keep changing the rows it copies, in transactions.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let mut c = chorus.connect(db.name()).await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let id = 1 + (n * 7 + w) % 50;
                let txn = async {
                    c.query_drop("BEGIN").await?;
                    c.query_drop(format!("UPDATE src SET v = v + 1 WHERE id = {id}")).await?;
                    c.query_drop(format!("UPDATE src SET v = v + 1 WHERE id = {}", 1 + id % 50)).await?;
                    c.query_drop("COMMIT").await
                };
                if let Err(e) = txn.await {
                    // A deadlock or lock wait against the copy: retried.
                    assert!(matches!(server_code(&e), Some(1213 | 1205)), "{e}");
                    let _ = c.query_drop("ROLLBACK").await;
                }
            }
        }));
    }
    for round in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        a.query_drop(format!(
            "CREATE TABLE copy{round} AS SELECT id, v, v * 2 AS w FROM src WHERE id % 3 <> {}",
            round % 3
        ))
        .await
        .unwrap();
    }
    a.query_drop("CREATE TABLE numbered (n INT AUTO_INCREMENT PRIMARY KEY) SELECT id FROM src ORDER BY id DESC")
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let e = a
        .query_drop("CREATE TABLE unnumbered (n INT AUTO_INCREMENT PRIMARY KEY) SELECT id FROM src")
        .await
        .unwrap_err();
    assert_eq!(server_code(&e), Some(1235), "{e}");
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn unsafe_statements_are_refused_before_they_run() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(64))").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')").await.unwrap();
    for (sql, says) in [
        ("UPDATE t SET v = UUID()", "UUID()"),
        ("INSERT INTO t SELECT 10, UUID_SHORT()", "UUID_SHORT()"),
        ("UPDATE t SET v = SYSDATE()", "SYSDATE()"),
        ("INSERT INTO t SELECT id + 10, v FROM t LIMIT 1", "ORDER BY"),
        ("ALTER TABLE t ADD COLUMN u CHAR(36) DEFAULT (UUID())", "ALTER TABLE ... ADD"),
        ("UPDATE t SET v = CONNECTION_ID()", "CONNECTION_ID()"),
        ("INSERT INTO t VALUES (11, CURRENT_USER())", "CURRENT_USER()"),
        ("UPDATE t SET v = @x WHERE id = 1; UPDATE t SET v = 'y' WHERE id = 2", "user variables"),
        ("CREATE TABLE c2 AS SELECT @x AS v", "@x"),
        ("DELETE FROM t WHERE id = 1; SELECT 1", "one at a time"),
        ("UPDATE t SET v = 'x' WHERE id = 1; UPDATE t SET v = RAND() WHERE id = 2", "on its own"),
        ("XA START 'x'", "XA"),
        // Unknown to chorus but valid: refused (a typo gets the server's 1064, below).
        ("BACKUP STAGE START", "does not know"),
        ("CREATE TABLE c (n INT AUTO_INCREMENT PRIMARY KEY) SELECT v FROM t", "ORDER BY"),
        ("SET @@tx_isolation = 'READ-UNCOMMITTED'", "READ UNCOMMITTED"),
    ] {
        let e = c.query_drop(sql).await.unwrap_err();
        assert_eq!(server_code(&e), Some(1235), "{sql}: {e}");
        assert!(e.to_string().contains(says), "{sql}: {e}");
    }
    for typo in ["SELEC 1", "UPDAT t SET v = 1", "!!"] {
        let e = c.query_drop(typo).await.unwrap_err();
        assert_eq!(server_code(&e), Some(1064), "{typo}: {e}");
    }
    let e = c.prep("INSERT INTO t VALUES (?, UUID()) RETURNING id").await.unwrap_err();
    assert_eq!(server_code(&e), Some(1235), "{e}");
    // Nothing ran, and the connection is still usable.
    let rows: Vec<(i32, String)> = c.query("SELECT id, v FROM t ORDER BY id").await.unwrap();
    assert_eq!(rows, [(1, "a".into()), (2, "b".into()), (3, "c".into())]);
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn no_backslash_escapes_set_mid_session_is_how_chorus_reads_and_logs() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(100), u CHAR(36))").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'one', NULL)").await.unwrap();
    // The statement right after the SET: under the new mode 'C:\' ends
    // before the UUID(), which chorus must see (and make a literal).
    c.query_drop("SET sql_mode = 'STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES'").await.unwrap();
    c.query_drop(r"INSERT INTO t VALUES (2, 'C:\', UUID())").await.unwrap();
    // A DDL of several lines, with quotes: its log entry (JSON, with
    // backslash escapes) is written under the session's mode.
    c.query_drop("CREATE TABLE d (\n  id INT PRIMARY KEY,\n  s VARCHAR(20) DEFAULT 'say \"hi\"'\n)").await.unwrap();
    c.query_drop("INSERT INTO d (id) VALUES (1)").await.unwrap();
    // A transaction's entry is written at COMMIT under the mode set just before it.
    c.query_drop("SET sql_mode = DEFAULT").await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (3, 'quote \" and \\\\ backslash', NULL)").await.unwrap();
    c.query_drop("SET sql_mode = 'NO_BACKSLASH_ESCAPES'").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    // A read that hides a write from a lexer ignorant of the mode: two
    // statements, one writing, refused; and nothing ran anywhere.
    c.query_drop("SET sql_mode = 'NO_BACKSLASH_ESCAPES'").await.unwrap();
    let e = c.query_drop(r"SELECT 'x\'; DELETE FROM t; SELECT '").await.unwrap_err();
    assert_eq!(server_code(&e), Some(1235), "{e}");
    chorus.assert_converged(maria_cluster(), db.name()).await;
    let rows: Vec<(i32, String)> = c.query("SELECT id, s FROM t ORDER BY id").await.unwrap();
    assert_eq!(rows, [(1, "one".into()), (2, r"C:\".into()), (3, r#"quote " and \ backslash"#.into())]);
    for f in maria_cluster().followers() {
        let mut conn = db.connect_node(f).await;
        let n: Option<i64> = conn.query_first("SELECT COUNT(*) FROM t").await.unwrap();
        assert_eq!(n, Some(3), "{}", f.name());
    }
    assert_no_chorus_panics();
}

#[tokio::test]
async fn temporal_parameters_replay_as_the_server_read_them() {
    use mysql_async::Value::{Date, Time};
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(40), dt DATETIME(6), n BIGINT)").await.unwrap();
    c.query_drop("INSERT INTO t (id, s) VALUES (1, '2024-01-02'), (2, '2024-01-02 00:00:00')").await.unwrap();
    // Where a string or a number goes, a temporal parameter is its value with
    // fractional digits only if it has microseconds; a TIME where a DATETIME
    // goes is on the statement's (pinned) current date.
    let at = Date(2024, 1, 2, 3, 4, 5, 0);
    c.exec_drop("INSERT INTO t VALUES (?, ?, ?, ? + 0)", (3, at.clone(), Time(false, 0, 5, 6, 7, 0), at))
        .await
        .unwrap();
    c.exec_drop("INSERT INTO t (id, s) VALUES (?, CONCAT(?, ''))", (4, Time(true, 1, 2, 3, 4, 500))).await.unwrap();
    c.exec_drop(
        "INSERT INTO t (id, s, dt) VALUES (?, ?, ?)",
        (5, Date(2024, 1, 2, 0, 0, 0, 0), Date(2024, 2, 3, 0, 0, 0, 7)),
    )
    .await
    .unwrap();
    // Compared as a DATETIME, not as a string: both spellings match.
    c.exec_drop("UPDATE t SET n = 7 WHERE id IN (1, 2, 3, 5) AND s = ?", (Date(2024, 1, 2, 0, 0, 0, 0),))
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 3, "ids 1, 2 and 5");
    let rows: Vec<(i32, String)> = c.query("SELECT id, s FROM t WHERE id IN (3, 4) ORDER BY id").await.unwrap();
    assert_eq!(rows, [(3, "2024-01-02 03:04:05".into()), (4, "-26:03:04.000500".into())]);
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn concurrent_sessions_converge() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE acct (id INT PRIMARY KEY, bal BIGINT NOT NULL, touched DATETIME(6))").await.unwrap();
    c.query_drop("CREATE TABLE hist (id INT AUTO_INCREMENT PRIMARY KEY, acct INT, delta INT, at DATETIME(6))")
        .await
        .unwrap();
    let values: Vec<String> = (1..=20).map(|i| format!("({i}, 1000, NULL)")).collect();
    c.query_drop(format!("INSERT INTO acct VALUES {}", values.join(", "))).await.unwrap();
    let mut tasks = Vec::new();
    for s in 0..6u32 {
        let opts = chorus.opts(db.name());
        tasks.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(opts).await.unwrap();
            for i in 0..40u32 {
                let a = (s * 7 + i * 3) % 20 + 1;
                let b = (s * 11 + i * 5) % 20 + 1;
                let delta = (i % 9) as i64 + 1;
                let r: Result<(), mysql_async::Error> = async {
                    let mut tx = c.start_transaction(Default::default()).await?;
                    tx.exec_drop("UPDATE acct SET bal = bal - ?, touched = NOW(6) WHERE id = ?", (delta, a)).await?;
                    tx.exec_drop("UPDATE acct SET bal = bal + ?, touched = NOW(6) WHERE id = ?", (delta, b)).await?;
                    tx.exec_drop("INSERT INTO hist (acct, delta, at) VALUES (?, ?, NOW(6))", (a, delta)).await?;
                    if i % 5 == 4 { tx.rollback().await } else { tx.commit().await }
                }
                .await;
                // Deadlocks are the server's answer to crossing transfers: fine, retried by nobody.
                if let Err(e) = r {
                    assert!(matches!(server_code(&e), Some(1213 | 1205)), "{e}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total: Option<i64> = c.query_first("SELECT SUM(bal) FROM acct").await.unwrap();
    assert_eq!(total, Some(20_000));
    chorus.assert_converged(maria_cluster(), db.name()).await;
    // `chorus verify` agrees.
    let config = tests_root().join(format!("verify-{}-{}.toml", std::process::id(), db.name()));
    let text = maria_cluster().chorus_config_toml(chorus.addr(), CHORUS_USER, CHORUS_PASSWORD);
    std::fs::write(&config, text).unwrap();
    let out = run_chorus(&["verify", "--config", config.to_str().unwrap(), "-d", db.name()], &[]);
    assert!(out.success(), "{out:?}");
    let _ = std::fs::remove_file(&config);
    assert_no_chorus_panics();
}

#[tokio::test]
async fn reads_go_to_followers_that_have_the_sessions_writes() {
    let db = fresh_maria_database().await;
    let cluster = maria_cluster();
    // Which node answered: a table that differs per node, made directly.
    for n in cluster.nodes() {
        let mut c = db.connect_node(n).await;
        c.query_drop("CREATE TABLE where_am_i (name VARCHAR(20))").await.unwrap();
        c.query_drop(format!("INSERT INTO where_am_i VALUES ('{}')", n.name())).await.unwrap();
    }
    let chorus = start_mysql_chorus(cluster);
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await.unwrap();
    let leader = cluster.leader().name().to_string();
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let who: Option<String> = c.query_first("SELECT name FROM where_am_i").await.unwrap();
        served.insert(who.unwrap());
    }
    assert!(!served.contains(&leader), "plain reads are spread over the followers: {served:?}");
    // Prepared reads (the binary protocol) too: prepared on each follower
    // the first time they run there, with their parameters as bound.
    let mut served = std::collections::BTreeSet::new();
    for i in 0..10 {
        let row: Option<(String, Option<String>, i64)> = c
            .exec_first(
                "SELECT name, CONCAT(?, '/', name), ? IS NULL FROM where_am_i WHERE ? > 0",
                ("héllo", None::<i32>, i + 1),
            )
            .await
            .unwrap();
        let (who, greeting, null) = row.expect("a row");
        assert_eq!((greeting, null), (Some(format!("héllo/{who}")), 1));
        served.insert(who);
    }
    assert!(!served.contains(&leader), "prepared reads are spread over the followers: {served:?}");

    // follower1 is held back (its applier waits for the table lock): a
    // session's read after its own write goes elsewhere, and sees the write.
    let held = &cluster.followers()[0];
    let mut lock = db.connect_node(held).await;
    lock.query_drop("LOCK TABLES t READ").await.unwrap();
    for i in 0..5 {
        c.query_drop(format!("INSERT INTO t VALUES ({i}, {i})")).await.unwrap();
        let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM t").await.unwrap();
        assert_eq!(n, Some(i + 1), "read-your-writes");
        let who: Option<String> = c.query_first("SELECT name FROM where_am_i").await.unwrap();
        assert_ne!(who.as_deref(), Some(held.name()), "the lagging follower served a read that needs the write");
        let n: Option<i64> = c.exec_first("SELECT COUNT(*) FROM t WHERE id >= ?", (0,)).await.unwrap();
        assert_eq!(n, Some(i + 1), "read-your-writes, prepared");
        let who: Option<String> = c.exec_first("SELECT name FROM where_am_i WHERE ? = ?", (i, i)).await.unwrap();
        assert_ne!(
            who.as_deref(),
            Some(held.name()),
            "the lagging follower served a prepared read that needs the write"
        );
    }
    lock.query_drop("UNLOCK TABLES").await.unwrap();
    for n in cluster.nodes() {
        db.connect_node(n).await.query_drop("DROP TABLE where_am_i").await.unwrap();
    }
    chorus.assert_converged(cluster, db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn a_position_carries_read_your_writes_to_another_connection() {
    let db = fresh_maria_database().await;
    let cluster = maria_cluster();
    let chorus = start_mysql_chorus(cluster);
    let mut a = chorus.connect(db.name()).await;
    a.query_drop("CREATE TABLE t (id INT PRIMARY KEY)").await.unwrap();
    chorus.assert_converged(cluster, db.name()).await;
    // Both followers held back: their appliers wait for the table lock.
    let mut locks = Vec::new();
    for f in cluster.followers() {
        let mut c = db.connect_node(f).await;
        c.query_drop("LOCK TABLES t READ").await.unwrap();
        locks.push(c);
    }
    // (b connects first: whatever it reads at connect time, on the leader,
    // it may not read older state after, and the leader has the insert.)
    let mut b = chorus.connect(db.name()).await;
    a.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let position: Option<String> = a.query_first("SHOW chorus.position").await.unwrap();
    let position = position.expect("a position");
    assert!(position.parse::<i64>().unwrap() > 0, "{position}");

    let n: Option<i64> = b.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(0), "without the position, a follower that lacks the write may answer");
    b.query_drop(format!("SET chorus.position = '{position}'")).await.unwrap();
    let mut second = locks.pop().unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        second.query_drop("UNLOCK TABLES").await.unwrap();
    });
    let n: Option<i64> = b.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(1), "with it, the read waits for a follower that has the write");
    release.await.unwrap();
    let e = b.query_drop("SET chorus.position = 'soon'").await.unwrap_err();
    assert_eq!(server_code(&e), Some(1231), "{e}");
    locks.pop().unwrap().query_drop("UNLOCK TABLES").await.unwrap();
    chorus.assert_converged(cluster, db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn writes_with_returning_are_logged_with_their_generated_ids() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT UNIQUE, at DATETIME(6))").await.unwrap();
    // A rolled-back insert moves the leader's counter only: the ids below
    // match on the followers only if chorus logged them.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t (v) VALUES (100), (101)").await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    // MariaDB answers these with a result set, not an OK packet.
    let ids: Vec<i32> = c.query("INSERT INTO t (v, at) VALUES (1, NOW(6)), (2, NOW(6)) RETURNING id").await.unwrap();
    assert_eq!(ids.len(), 2);
    let n: Option<i64> = c.query_first("SELECT ROW_COUNT()").await.unwrap();
    assert_eq!(n, Some(-1), "ROW_COUNT() after RETURNING, as the server has it");
    c.query_drop("BEGIN").await.unwrap();
    let _: Vec<(i32, i32)> =
        c.query("INSERT INTO t (v) VALUES (2) ON DUPLICATE KEY UPDATE v = 20 RETURNING id, v").await.unwrap();
    let _: Vec<i32> = c.exec("INSERT INTO t (v) VALUES (?) RETURNING id", (3,)).await.unwrap();
    let none: Vec<i32> = c.query("INSERT IGNORE INTO t (v) VALUES (1) RETURNING id").await.unwrap();
    assert!(none.is_empty());
    c.query_drop("COMMIT").await.unwrap();
    let _: Vec<i32> = c.query("REPLACE INTO t (id, v) VALUES (1, 10) RETURNING id").await.unwrap();
    let gone: Vec<i32> = c.exec("DELETE FROM t WHERE v = ? RETURNING id", (3,)).await.unwrap();
    assert_eq!(gone.len(), 1);
    let last: Vec<i32> = c.query("INSERT INTO t (v) VALUES (4) RETURNING id").await.unwrap();
    // chorus reads the ids through LAST_INSERT_ID(): the client's stays the server's.
    let _: Vec<i32> = c.query("DELETE FROM t WHERE v = 10 RETURNING id").await.unwrap();
    let id: Option<i64> = c.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
    assert_eq!(id, Some(i64::from(last[0])));
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn queries_of_several_writes_are_logged_statement_by_statement() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT UNIQUE, u CHAR(36), at DATETIME(6))")
        .await
        .unwrap();
    // Rolled-back ids: each statement's own id must be logged.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t (v) VALUES (100), (101), (102)").await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    c.query_drop(
        "INSERT INTO t (v, u, at) VALUES (1, UUID(), NOW(6)); INSERT INTO t (v, at) VALUES (2, NOW(6)), (3, NOW(6)); \
         UPDATE t SET u = 'x' WHERE v = 2; DELETE FROM t WHERE v = 3",
    )
    .await
    .unwrap();
    // In a transaction, with RAND() in its first statement.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t (v, u) VALUES (4, RAND()); UPDATE t SET v = v + 10 WHERE v = 4").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    // The second statement fails: the first ran (and commits, in autocommit
    // mode, as on the server), the third never runs.
    let e = c
        .query_drop("INSERT INTO t (v) VALUES (5); INSERT INTO t (v) VALUES (1); INSERT INTO t (v) VALUES (6)")
        .await
        .unwrap_err();
    assert_eq!(server_code(&e), Some(1062), "{e}");
    let vs: Vec<i32> = c.query("SELECT v FROM t ORDER BY v").await.unwrap();
    assert_eq!(vs, [1, 2, 5, 14]);
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn read_committed_writes_replay_in_the_order_the_leader_ran_them() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut setup = chorus.connect(db.name()).await;
    // `grp` has no index: READ COMMITTED's UPDATE locks the rows it changes
    // and no gap, so another session can insert a matching row meanwhile.
    setup.query_drop("CREATE TABLE t (id INT PRIMARY KEY, grp INT, v INT)").await.unwrap();
    setup.query_drop("INSERT INTO t VALUES (1, 5, 0), (2, 6, 0)").await.unwrap();
    // The session level, and the next transaction only (which the server's
    // variables do not show).
    for (round, choose) in
        ["SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", "SET TRANSACTION ISOLATION LEVEL READ COMMITTED"]
            .into_iter()
            .enumerate()
    {
        let mut a = chorus.connect(db.name()).await;
        let mut b = chorus.connect(db.name()).await;
        a.query_drop(choose).await.unwrap();
        a.query_drop("BEGIN").await.unwrap();
        a.query_drop("UPDATE t SET v = v + 1 WHERE grp = 5").await.unwrap();
        // b's row is one a's UPDATE would have changed, had it been there.
        let id = 10 + round as i32;
        let inserted = tokio::spawn(async move {
            let r = b.query_drop(format!("INSERT INTO t VALUES ({id}, 5, 0)")).await;
            (b, r)
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        a.query_drop("COMMIT").await.unwrap();
        let (_b, r) = inserted.await.unwrap();
        r.unwrap();
        // On the leader a's UPDATE did not see b's row; replayed after a's,
        // b's INSERT must not meet it either.
        chorus.assert_converged(maria_cluster(), db.name()).await;
        let mut leader = db.connect_node(maria_cluster().leader()).await;
        let v: Option<i32> = leader.query_first(format!("SELECT v FROM t WHERE id = {id}")).await.unwrap();
        assert_eq!(v, Some(0), "{choose}");
    }
    assert_no_chorus_panics();
}

/// Keep trying `sql` on `c` while it fails with one of `until` (the table
/// or column it needs does not exist yet); the number of tries.
async fn hammer(c: &mut mysql_async::Conn, sql: String, until: &[u16]) -> usize {
    for tries in 1.. {
        match c.query_drop(&sql).await {
            Ok(()) => return tries,
            Err(e) if server_code(&e).is_some_and(|code| until.contains(&code)) => {}
            Err(e) => panic!("{sql}: {e}"),
        }
    }
    unreachable!()
}

#[tokio::test]
async fn writes_racing_a_ddl_replay_after_it() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut a = chorus.connect(db.name()).await;
    // Another session writes the moment the schema allows it: its write must
    // not reach the followers before the DDL that made it possible.
    for round in 0..8 {
        let mut b = chorus.connect(db.name()).await;
        let racer =
            tokio::spawn(
                async move { hammer(&mut b, format!("INSERT INTO race{round} VALUES (1, 1)"), &[1146]).await },
            );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        a.query_drop(format!("CREATE TABLE race{round} (id INT PRIMARY KEY, v INT)")).await.unwrap();
        racer.await.unwrap();
        let mut b = chorus.connect(db.name()).await;
        let racer = tokio::spawn(async move {
            // Busy on the table while ALTER waits for it (LOCK TABLES), then
            // using the new column as soon as it exists.
            hammer(&mut b, format!("INSERT INTO race{round} (id, v, w) VALUES (2, 2, 2)"), &[1054]).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        a.query_drop(format!("ALTER TABLE race{round} ADD COLUMN w INT NOT NULL DEFAULT 7")).await.unwrap();
        racer.await.unwrap();
    }
    // A transaction holding a row of the table the DDL changes, whose
    // COMMIT comes after the DDL started waiting for it.
    a.query_drop("CREATE TABLE held (id INT PRIMARY KEY, v INT)").await.unwrap();
    a.query_drop("INSERT INTO held VALUES (1, 0)").await.unwrap();
    let mut b = chorus.connect(db.name()).await;
    b.query_drop("BEGIN").await.unwrap();
    b.query_drop("UPDATE held SET v = 1 WHERE id = 1").await.unwrap();
    let ddl = tokio::spawn(async move {
        a.query_drop("ALTER TABLE held ADD COLUMN w INT DEFAULT 5").await.unwrap();
        a
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    b.query_drop("COMMIT").await.unwrap();
    let _a = ddl.await.unwrap();
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn a_ddl_backs_off_from_a_writer_that_holds_the_log_and_waits_for_its_table() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut a = chorus.connect(db.name()).await;
    a.query_drop("CREATE TABLE x (id INT PRIMARY KEY)").await.unwrap();
    a.query_drop("CREATE TABLE y (id INT PRIMARY KEY)").await.unwrap();
    // READ COMMITTED holds the log's lock from its first write on.
    let mut r = chorus.connect(db.name()).await;
    r.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await.unwrap();
    r.query_drop("BEGIN").await.unwrap();
    r.query_drop("INSERT INTO x VALUES (1)").await.unwrap();
    let ddl = tokio::spawn(async move {
        a.query_drop("ALTER TABLE y ADD COLUMN v INT DEFAULT 1").await.unwrap();
        a
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The DDL holds y and waits for the log; r holds the log and now waits
    // for y. chorus's short waits break the cycle: the DDL lets go of y,
    // r's INSERT gets in, and the DDL runs after r commits.
    r.query_drop("INSERT INTO y VALUES (1)").await.unwrap();
    r.query_drop("COMMIT").await.unwrap();
    let mut a = ddl.await.unwrap();
    a.query_drop("INSERT INTO y VALUES (2, 2)").await.unwrap();
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn a_deadlock_victims_writes_do_not_reach_the_followers() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut setup = chorus.connect(db.name()).await;
    setup.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await.unwrap();
    setup.query_drop("INSERT INTO t VALUES (1, 0), (2, 0)").await.unwrap();
    let mut s1 = chorus.connect(db.name()).await;
    let mut s2 = chorus.connect(db.name()).await;
    s1.query_drop("BEGIN").await.unwrap();
    s1.query_drop("UPDATE t SET v = 11 WHERE id = 1").await.unwrap();
    s2.query_drop("BEGIN").await.unwrap();
    s2.query_drop("UPDATE t SET v = 22 WHERE id = 2").await.unwrap();
    let blocked = tokio::spawn(async move {
        let r = s1.query_drop("UPDATE t SET v = 12 WHERE id = 2").await;
        (s1, r)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r2 = s2.query_drop("UPDATE t SET v = 21 WHERE id = 1").await;
    let (s1, r1) = blocked.await.unwrap();
    // Exactly one of them is the victim; the server rolled its whole transaction back.
    let (mut victim, mut winner) = match (&r1, &r2) {
        (Err(e), Ok(())) => {
            assert_eq!(server_code(e), Some(1213), "{e}");
            (s1, s2)
        }
        (Ok(()), Err(e)) => {
            assert_eq!(server_code(e), Some(1213), "{e}");
            (s2, s1)
        }
        other => panic!("expected one deadlock: {other:?}"),
    };
    // The victim goes on without a ROLLBACK (as sysbench does): its next
    // statement runs in autocommit mode on the server.
    victim.query_drop("INSERT INTO t VALUES (3, 33)").await.unwrap();
    winner.query_drop("COMMIT").await.unwrap();
    victim.query_drop("COMMIT").await.unwrap();
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn a_statement_that_commits_nothing_leaves_the_transaction_as_it_was() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut setup = chorus.connect(db.name()).await;
    setup.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await.unwrap();
    setup.query_drop("INSERT INTO t VALUES (1, 0), (2, 0)").await.unwrap();
    // As on the server: s1 waits for s2's row until s2 commits, then goes on.
    // (DO, HANDLER, SET TRANSACTION... do not commit: the transaction's log
    // entry must not be written, and the log's lock taken, at them.)
    for local in ["DO 0", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "DO RELEASE_LOCK('none')"] {
        let mut s1 = chorus.connect(db.name()).await;
        let mut s2 = chorus.connect(db.name()).await;
        s1.query_drop("BEGIN").await.unwrap();
        s1.query_drop("UPDATE t SET v = v + 1 WHERE id = 1").await.unwrap();
        let _ = s1.query_drop(local).await;
        s2.query_drop("BEGIN").await.unwrap();
        s2.query_drop("UPDATE t SET v = v + 10 WHERE id = 2").await.unwrap();
        let committed = tokio::spawn(async move {
            let r = s2.query_drop("COMMIT").await;
            (s2, r)
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        s1.query_drop("UPDATE t SET v = v + 1 WHERE id = 2").await.unwrap_or_else(|e| panic!("after {local}: {e}"));
        let (_s2, r) = committed.await.unwrap();
        r.unwrap_or_else(|e| panic!("the other session's COMMIT after {local}: {e}"));
        s1.query_drop("COMMIT").await.unwrap();
    }
    // A prepared statement that commits implicitly commits what came before
    // it, as in the text protocol: the ROLLBACK after it undoes nothing.
    setup.query_drop("BEGIN").await.unwrap();
    setup.query_drop("UPDATE t SET v = v + 100 WHERE id = 1").await.unwrap();
    setup.exec_drop("ANALYZE TABLE t", ()).await.unwrap();
    setup.query_drop("ROLLBACK").await.unwrap();
    // So does turning autocommit back on, whichever way it is spelled.
    setup.query_drop("SET autocommit = 0").await.unwrap();
    setup.query_drop("UPDATE t SET v = v + 100 WHERE id = 2").await.unwrap();
    setup.query_drop("SET @@session.autocommit = 1").await.unwrap();
    setup.query_drop("ROLLBACK").await.unwrap();
    // A DDL that does not parse commits nothing, as on the server; one that
    // parses commits what came before it even when it then fails.
    setup.query_drop("BEGIN").await.unwrap();
    setup.query_drop("UPDATE t SET v = v + 1000 WHERE id = 1").await.unwrap();
    let e = setup.query_drop("ALTER TABLE t ADD COLUMN (w INT").await.unwrap_err();
    assert_eq!(server_code(&e), Some(1064), "{e}");
    setup.query_drop("ROLLBACK").await.unwrap();
    setup.query_drop("BEGIN").await.unwrap();
    setup.query_drop("UPDATE t SET v = v + 1 WHERE id = 1").await.unwrap();
    let e = setup.query_drop("ALTER TABLE no_such_table ADD COLUMN w INT").await.unwrap_err();
    assert_eq!(server_code(&e), Some(1146), "{e}");
    setup.query_drop("ROLLBACK").await.unwrap();
    let rows: Vec<(i32, i32)> = setup.query("SELECT id, v FROM t ORDER BY id").await.unwrap();
    assert_eq!(rows, [(1, 104), (2, 133)]);
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn a_deadlock_on_the_logs_lock_is_reported_as_a_deadlock() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut setup = chorus.connect(db.name()).await;
    setup.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await.unwrap();
    setup.query_drop("INSERT INTO t VALUES (1, 0), (2, 0)").await.unwrap();
    let mut s1 = chorus.connect(db.name()).await;
    let mut s2 = chorus.connect(db.name()).await;
    s1.query_drop("SET autocommit = 0").await.unwrap();
    s1.query_drop("UPDATE t SET v = 1 WHERE id = 1").await.unwrap();
    // chorus cannot tell whether this commits (it does not, autocommit is
    // 0 already): it logs the transaction so far, and holds the log's lock.
    s1.query_drop("SET autocommit = 0").await.unwrap();
    s2.query_drop("BEGIN").await.unwrap();
    s2.query_drop("UPDATE t SET v = 2 WHERE id = 2").await.unwrap();
    let committed = tokio::spawn(async move { s2.query_drop("COMMIT").await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // s1 waits for s2's row, s2's COMMIT for the log's lock: one of them is
    // the victim, and hears of a deadlock, whichever step of it lost.
    let r1 = s1.query_drop("UPDATE t SET v = 1 WHERE id = 2").await;
    // (The winner commits before the loser's answer is awaited: chorus's log
    // steps after the one that lost the deadlock still run, now outside a
    // transaction, and wait for the log's lock until the winner commits.)
    s1.query_drop("COMMIT").await.unwrap();
    let r2 = committed.await.unwrap();
    let code = |r: &Result<(), mysql_async::Error>| r.as_ref().err().and_then(server_code);
    assert!(matches!((code(&r1), code(&r2)), (Some(1213), None) | (None, Some(1213))), "one deadlock: {r1:?} / {r2:?}");
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn semi_sync_commits_return_once_a_follower_has_the_write() {
    let db = fresh_maria_database().await;
    let cluster = maria_cluster();
    let chorus = start_mysql_chorus_with(cluster, |c| {
        c.replication.ack = chorus::config::AckMode::SemiSync;
        c.replication.ack_timeout = std::time::Duration::from_secs(30);
    });
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY)").await.unwrap();
    let mut followers = Vec::new();
    for f in cluster.followers() {
        followers.push(db.connect_node(f).await);
    }
    for i in 0..10 {
        if i % 2 == 0 {
            c.query_drop(format!("INSERT INTO t VALUES ({i})")).await.unwrap();
        } else {
            c.query_drop("BEGIN").await.unwrap();
            c.query_drop(format!("INSERT INTO t VALUES ({i})")).await.unwrap();
            c.query_drop("COMMIT").await.unwrap();
        }
        let mut on = 0;
        for f in &mut followers {
            // The other follower may not even have the table yet (1146).
            let n: Option<i64> = match f.query_first(format!("SELECT COUNT(*) FROM t WHERE id = {i}")).await {
                Err(e) if server_code(&e) == Some(1146) => None,
                r => r.unwrap(),
            };
            on += n.unwrap_or(0);
        }
        assert!(on >= 1, "row {i} is on no follower when its COMMIT returned");
    }
    chorus.assert_converged(cluster, db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn status_and_metrics_show_the_mysql_nodes_and_routes() {
    let db = fresh_maria_database().await;
    let cluster = maria_cluster();
    let chorus = start_mysql_chorus_with(cluster, |c| c.metrics.listen = Some("127.0.0.1:0".parse().unwrap()));
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await.unwrap();
    for i in 0..5 {
        c.query_drop(format!("INSERT INTO t VALUES ({i}, {i})")).await.unwrap();
    }
    // Every follower has at least this once converged (other tests write too).
    let leader_lsn: Option<i64> = cluster
        .leader()
        .connect(db.name())
        .await
        .unwrap()
        .query_first("SELECT lsn FROM _chorus.lsn WHERE id = 1")
        .await
        .unwrap();
    let leader_lsn = leader_lsn.unwrap().to_string();
    chorus.assert_converged(cluster, db.name()).await;
    for _ in 0..4 {
        let _: Vec<(i32, i32)> = c.query("SELECT id, v FROM t").await.unwrap();
    }
    let refused = c.query_drop("UPDATE t SET v = UUID()").await.unwrap_err();
    assert_eq!(server_code(&refused), Some(1235), "{refused}");

    // SHOW chorus.status: chorus's own view, one row per node.
    let rows: Vec<mysql_async::Row> = c.query("SHOW chorus.status").await.unwrap();
    let cells: Vec<Vec<Option<String>>> =
        rows.into_iter().map(|r| (0..r.len()).map(|i| r.get::<Option<String>, _>(i).flatten()).collect()).collect();
    assert_eq!(cells.len(), 1 + cluster.followers().len(), "{cells:?}");
    assert_eq!(cells[0][1].as_deref(), Some("leader"), "{cells:?}");
    for (row, f) in cells[1..].iter().zip(cluster.followers()) {
        assert_eq!(row[0].as_deref(), Some(f.name()), "{cells:?}");
        assert_eq!(
            (row[1].as_deref(), row[2].as_deref(), row[3].as_deref()),
            (Some("follower"), Some("up"), Some("*"))
        );
        assert!(row[4].as_ref().unwrap().parse::<i64>().unwrap() >= leader_lsn.parse::<i64>().unwrap(), "{cells:?}");
    }

    // `chorus status`: the same, read from the nodes.
    let config = tests_root().join(format!("status-{}-{}.toml", std::process::id(), db.name()));
    std::fs::write(&config, cluster.chorus_config_toml(chorus.addr(), CHORUS_USER, CHORUS_PASSWORD)).unwrap();
    let out = run_chorus(&["status", "--config", config.to_str().unwrap()], &[]);
    assert!(out.success(), "{out:?}");
    for f in cluster.followers() {
        assert!(
            out.stdout.lines().any(|l| l.starts_with(f.name()) && l.contains("follower") && l.contains(" up ")),
            "{out:?}"
        );
    }

    // Prometheus: routes per node, the refusal, and each follower's progress.
    let text = chorus.scrape().await;
    let leader = cluster.leader().name();
    assert!(metric(&text, "chorus_requests_total", &[("node", leader), ("route", "leader")]) >= 6.0, "{text}");
    let on_followers: f64 = cluster
        .followers()
        .iter()
        .map(|f| metric(&text, "chorus_requests_total", &[("node", f.name()), ("route", "follower")]))
        .sum();
    assert!(on_followers >= 4.0, "the reads went to the followers: {text}");
    assert!(metric(&text, "chorus_errors_total", &[("kind", "refused")]) >= 1.0, "{text}");
    for f in cluster.followers() {
        let applied = metric(&text, "chorus_follower_applied_lsn", &[("node", f.name()), ("database", "*")]);
        assert!(applied >= leader_lsn.parse::<f64>().unwrap(), "{text}");
        assert_eq!(metric(&text, "chorus_node_up", &[("node", f.name()), ("role", "follower")]), 1.0, "{text}");
    }
    chorus.assert_converged(cluster, db.name()).await;
    assert_no_chorus_panics();
}

/// Drivers that interpolate parameters themselves (Connector/J's client-side
/// prepares, mysqlclient) send bytes as `_binary'...'` with the raw bytes in
/// the text: not UTF-8, yet legal SQL. chorus logs (and runs) them as
/// `_binary X'..'`. A single write with other bytes that are not UTF-8
/// (mariadb-dump's BLOBs, in plain string literals) is logged as its bytes;
/// a query of several such statements is refused.
#[tokio::test]
async fn binary_literals_in_statement_text_replicate() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, b BLOB, s VARCHAR(20))").await.unwrap();
    let statements: [&[u8]; 3] = [
        b"INSERT INTO t VALUES (1, _binary'\x00\xff\xfe\\0\\'\\\\\\n''', 'caf\xc3\xa9')",
        b"INSERT INTO t VALUES (2, _binary '\x80\x81\\%\\_', NULL)",
        b"UPDATE t SET b = CONCAT(b, _binary'\xc3\x28') WHERE id = 2",
    ];
    for sql in statements {
        c.query_drop(sql).await.unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(sql)));
    }
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(&b"INSERT INTO t VALUES (3, _binary'\xff', 'in a transaction')"[..]).await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    let mut leader = db.connect_leader().await;
    let rows: Vec<(i32, Vec<u8>)> = leader.query("SELECT id, b FROM t ORDER BY id").await.unwrap();
    let want: Vec<(i32, Vec<u8>)> =
        vec![(1, b"\x00\xff\xfe\x00'\\\n'".to_vec()), (2, b"\x80\x81\\%\\_\xc3\x28".to_vec()), (3, b"\xff".to_vec())];
    assert_eq!(rows, want, "the leader stored the bytes the client meant");
    // Without an introducer: logged as the bytes the client sent.
    c.query_drop(&b"INSERT INTO t VALUES (4, '\xff\\0\x80', NULL)"[..]).await.unwrap();
    let b: Option<Vec<u8>> = leader.query_first("SELECT b FROM t WHERE id = 4").await.unwrap();
    assert_eq!(b.as_deref(), Some(&b"\xff\x00\x80"[..]));
    // Several statements of such bytes in one query: refused, none ran.
    let two = &b"INSERT INTO t VALUES (5, '\xff', NULL); INSERT INTO t VALUES (6, '\xfe', NULL)"[..];
    let e = c.query_drop(two).await.unwrap_err();
    assert_eq!(server_code(&e), Some(1366), "{e}");
    let n: Option<i64> = leader.query_first("SELECT COUNT(*) FROM t WHERE id > 4").await.unwrap();
    assert_eq!(n, Some(0));
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

/// A write the leader accepts whose log entry the leader would not (the
/// statement's text escaped twice, as JSON and as a string literal, can
/// outgrow `max_allowed_packet`): refused with the reason and rolled back,
/// the connection still usable. Before, the server dropped chorus's
/// connection in the middle of the append.
#[tokio::test]
async fn a_write_whose_log_entry_is_too_large_is_rolled_back_and_the_session_goes_on() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v LONGTEXT)").await.unwrap();
    // 5 MiB of backslashes: a 10 MiB statement (under the 16 MiB default),
    // a 40 MiB log entry.
    let big = format!("INSERT INTO t VALUES (2, '{}')", "\\\\".repeat(5 << 20));
    let check = |e: mysql_async::Error| {
        assert_eq!(server_code(&e), Some(1105), "{e}");
        assert!(e.to_string().contains("max_allowed_packet") && e.to_string().contains("rolled back"), "{e}");
    };
    check(c.query_drop(&big).await.unwrap_err());
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'in the same transaction')").await.unwrap();
    c.query_drop(&big).await.unwrap();
    check(c.query_drop("COMMIT").await.unwrap_err());
    // The whole transaction is gone, and the session is not in one.
    c.query_drop("INSERT INTO t VALUES (3, 'after')").await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    let mut leader = db.connect_leader().await;
    let ids: Vec<i32> = leader.query("SELECT id FROM t ORDER BY id").await.unwrap();
    assert_eq!(ids, [3]);
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

/// The log entry is written as a string literal under the session's sql_mode
/// at COMMIT: a `SET sql_mode = 'NO_BACKSLASH_ESCAPES'` between a
/// transaction's last write and its COMMIT must not corrupt it.
#[tokio::test]
async fn sql_mode_changed_before_commit_does_not_corrupt_the_log_entry() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))").await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(r#"INSERT INTO t VALUES (1, 'a"b\\c''d')"#).await.unwrap();
    c.query_drop("SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop(r"INSERT INTO t VALUES (2, 'e\f')").await.unwrap();
    let mut leader = db.connect_leader().await;
    let rows: Vec<(i32, String)> = leader.query("SELECT id, v FROM t ORDER BY id").await.unwrap();
    assert_eq!(rows, [(1, r#"a"b\c'd"#.to_string()), (2, r"e\f".to_string())]);
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn triggers_stored_functions_and_defaults_are_judged_by_what_they_compute() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    for ddl in [
        "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(100))",
        "CREATE TABLE counters (name VARCHAR(20) PRIMARY KEY, n INT)",
        "CREATE TABLE items (id INT PRIMARY KEY, v INT, at DATETIME(6), token VARCHAR(40))",
        "CREATE TABLE history (item INT, v INT, at DATETIME(6), PRIMARY KEY (item, v, at))",
        // Deterministic triggers run again on the followers, with the leader's clock.
        "CREATE TRIGGER items_ins BEFORE INSERT ON items FOR EACH ROW SET NEW.at = NOW(6)",
        "CREATE TRIGGER items_upd AFTER UPDATE ON items FOR EACH ROW BEGIN \
           INSERT INTO history VALUES (NEW.id, NEW.v, NOW(6)); \
           UPDATE counters SET n = n + 1 WHERE name = 'updates'; END",
        "CREATE TABLE tokens (id INT PRIMARY KEY, token CHAR(36))",
        "CREATE TRIGGER tokens_ins BEFORE INSERT ON tokens FOR EACH ROW SET NEW.token = UUID()",
        "CREATE TABLE logged (id INT PRIMARY KEY)",
        "CREATE TRIGGER logged_ins AFTER INSERT ON logged FOR EACH ROW INSERT INTO audit (msg) VALUES ('in')",
        "CREATE VIEW recent_tokens AS SELECT id, token FROM tokens WHERE id > 100",
        "CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
        "CREATE FUNCTION stamp() RETURNS VARCHAR(40) NOT DETERMINISTIC RETURN CONCAT('at ', SYSDATE(6))",
        "CREATE FUNCTION bump(k VARCHAR(20)) RETURNS INT MODIFIES SQL DATA BEGIN \
           UPDATE counters SET n = n + 1 WHERE name = k; RETURN (SELECT n FROM counters WHERE name = k); END",
        "CREATE TABLE docs (id INT PRIMARY KEY, u CHAR(36) DEFAULT (UUID()), at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6))",
        "CREATE TABLE stamped (id INT PRIMARY KEY, at DATETIME(6) DEFAULT (SYSDATE(6)))",
        "CREATE PROCEDURE add_item(i INT, val INT) BEGIN INSERT INTO items (id, v) VALUES (i, val); \
           UPDATE counters SET n = n + 1 WHERE name = 'calls'; SELECT n FROM counters WHERE name = 'calls'; END",
        "CREATE PROCEDURE tokenize() BEGIN UPDATE items SET token = UUID(); END",
        "CREATE PROCEDURE committing() BEGIN UPDATE items SET v = 1; COMMIT; END",
    ] {
        c.query_drop(ddl).await.unwrap_or_else(|e| panic!("{ddl}: {e}"));
    }
    c.query_drop("INSERT INTO counters VALUES ('updates', 0), ('calls', 0)").await.unwrap();
    c.query_drop("INSERT INTO items (id, v) VALUES (1, 10), (2, 20)").await.unwrap();
    c.query_drop("UPDATE items SET v = v + 1").await.unwrap();
    c.query_drop("UPDATE items SET v = twice(v) WHERE id = 1").await.unwrap();
    // Changes no row of its own, but its trigger writes: replicated all the same.
    c.query_drop("UPDATE items SET v = v WHERE id = 2").await.unwrap();
    c.query_drop("INSERT INTO docs (id, u) VALUES (1, 'given')").await.unwrap();
    // An omitted DEFAULT (UUID()) is written out, one value per row (an ORM's insert).
    c.query_drop("INSERT INTO docs (id) VALUES (2), (3)").await.unwrap();
    let us: Vec<String> = c.query("SELECT u FROM docs WHERE id > 1 ORDER BY id").await.unwrap();
    assert!(us.len() == 2 && us[0] != us[1] && us[0].len() == 36, "{us:?}");
    // A read that writes through a function runs on the leader and is replicated.
    let n: Option<i64> = c.query_first("SELECT bump('calls')").await.unwrap();
    assert_eq!(n, Some(1));
    let n: Option<i64> = c.exec_first("SELECT bump(?)", ("calls",)).await.unwrap();
    assert_eq!(n, Some(2));
    // Deterministic procedures are replicated as their CALL, text or prepared.
    let n: Option<i64> = c.query_first("CALL add_item(10, 100)").await.unwrap();
    assert_eq!(n, Some(3));
    c.exec_drop("CALL add_item(?, ?)", (11, 110)).await.unwrap();
    let e = c.query_drop("CALL no_such_procedure()").await.unwrap_err();
    assert_eq!(server_code(&e), Some(1305), "{e}");
    let n: Option<i64> = c.query_first("SELECT twice(21)").await.unwrap();
    assert_eq!(n, Some(42));

    for (sql, says) in [
        ("INSERT INTO tokens (id) VALUES (1)", "trigger tokens_ins"),
        ("INSERT INTO recent_tokens (id) VALUES (101)", "trigger tokens_ins"),
        ("INSERT INTO logged VALUES (1)", "AUTO_INCREMENT"),
        ("UPDATE items SET token = stamp()", "stamp()"),
        ("INSERT INTO docs (id) SELECT 4", "column u"),
        ("INSERT INTO docs VALUES (5, DEFAULT, DEFAULT)", "column u"),
        ("INSERT INTO stamped (id) VALUES (1)", "SYSDATE()"),
        ("DO bump('calls')", "SELECT"),
        ("CALL tokenize()", "tokenize()"),
        ("CALL committing()", "transaction"),
    ] {
        let e = c.query_drop(sql).await.unwrap_err();
        assert_eq!(server_code(&e), Some(1235), "{sql}: {e}");
        assert!(e.to_string().contains(says), "{sql}: {e}");
    }
    // Prepared, such writes run as text with their parameters inlined.
    c.exec_drop("INSERT INTO docs (id) VALUES (?)", (20,)).await.unwrap();
    c.exec_batch("INSERT INTO docs (id, u) VALUES (?, UUID())", [(21,), (22,)]).await.unwrap();
    let e = c.exec_drop("INSERT INTO docs (id) VALUES (?)", (20,)).await.unwrap_err();
    assert_eq!(server_code(&e), Some(1062), "{e}");
    let n: Option<i64> = c.query_first("SELECT COUNT(DISTINCT u) FROM docs WHERE id >= 20").await.unwrap();
    assert_eq!(n, Some(3));

    // A trigger made after chorus read the catalog counts from the next write on.
    c.query_drop("CREATE TRIGGER docs_upd BEFORE UPDATE ON docs FOR EACH ROW SET NEW.u = UUID()").await.unwrap();
    let e = c.query_drop("UPDATE docs SET at = NOW(6)").await.unwrap_err();
    assert!(e.to_string().contains("docs_upd"), "{e}");
    c.query_drop("DROP TRIGGER docs_upd").await.unwrap();
    c.query_drop("UPDATE docs SET at = NOW(6)").await.unwrap();

    let rows: Vec<(String, i64)> = c.query("SELECT name, n FROM counters ORDER BY name").await.unwrap();
    assert_eq!(rows, [("calls".to_string(), 4), ("updates".to_string(), 4)]);
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}
