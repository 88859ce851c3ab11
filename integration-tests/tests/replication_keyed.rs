//! Transactions whose writes are all keyed (see `sql::keyed`) take their LSN
//! when they commit: what that logs, what it leaves out, and what happens
//! when such a transaction meets one that took its LSN first.

use integration_tests::*;

async fn setup() -> (TestDb<'static>, Chorus) {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    (db, chorus)
}

/// (lsn, sql) of the statements logged on the leader, in LSN order.
async fn logged(db: &TestDb<'_>) -> Vec<(i64, String)> {
    let leader = db.connect_leader().await;
    leader
        .query("SELECT lsn, sql FROM _chorus.log WHERE seq > 0 ORDER BY lsn, seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn keyed_transactions_are_logged_in_commit_order() {
    let (db, chorus) = setup().await;
    let a = chorus.connect(db.name()).await;
    let b = chorus.connect(db.name()).await;
    a.batch_execute("CREATE TABLE acc (id int PRIMARY KEY, bal int NOT NULL, at timestamptz)").await.unwrap();
    a.batch_execute("INSERT INTO acc VALUES (1, 0, NULL), (2, 0, NULL)").await.unwrap();
    // a writes first but commits last: its LSN is the later one.
    a.batch_execute("BEGIN; UPDATE acc SET bal = bal + 1, at = now() WHERE id = 1").await.unwrap();
    b.batch_execute("BEGIN").await.unwrap();
    b.execute("UPDATE acc SET bal = bal + $1 WHERE id = $2", &[&10i32, &2i32]).await.unwrap();
    b.batch_execute("COMMIT").await.unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    let rows = logged(&db).await;
    let last: Vec<&str> = rows.iter().rev().take(2).map(|r| r.1.as_str()).collect();
    assert!(last[0].starts_with("UPDATE acc SET bal = bal + 1, at = (CAST('"), "{rows:?}");
    assert!(!last[0].contains('\u{1}'), "the timestamp is written in: {rows:?}");
    assert_eq!(last[1], "UPDATE acc SET bal = bal + $1 WHERE id = $2", "{rows:?}");
    assert_converged(&db).await;
}

#[tokio::test]
async fn a_keyed_write_that_changed_nothing_is_not_logged() {
    let (db, chorus) = setup().await;
    let c = chorus.connect(db.name()).await;
    c.batch_execute("CREATE TABLE k (id int PRIMARY KEY, v int)").await.unwrap();
    let before = logged(&db).await.len();
    // Autocommit, both protocols, and inside a transaction with a real write.
    c.batch_execute("UPDATE k SET v = 1 WHERE id = 7").await.unwrap();
    c.execute("DELETE FROM k WHERE id = $1", &[&7i32]).await.unwrap();
    c.batch_execute("BEGIN; UPDATE k SET v = 2 WHERE id = 8").await.unwrap();
    c.batch_execute("INSERT INTO k VALUES (1, 1)").await.unwrap();
    c.batch_execute("INSERT INTO k VALUES (1, 5) ON CONFLICT (id) DO NOTHING").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    let rows = logged(&db).await;
    let new: Vec<&str> = rows[before..].iter().map(|r| r.1.as_str()).collect();
    assert_eq!(new, vec!["INSERT INTO k VALUES (1, 1)"], "{rows:?}");
    // A row inserted later is not touched by the replay of the no-op update.
    c.batch_execute("INSERT INTO k VALUES (7, 0), (8, 0)").await.unwrap();
    assert_converged(&db).await;
}

#[tokio::test]
async fn a_keyed_transaction_that_meets_one_holding_the_lsn_stays_usable() {
    let (db, chorus) = setup().await;
    let keyed = std::sync::Arc::new(chorus.connect(db.name()).await);
    let early = std::sync::Arc::new(chorus.connect(db.name()).await);
    keyed
        .batch_execute("CREATE TABLE r (id int PRIMARY KEY, v int); CREATE TABLE s (id serial PRIMARY KEY, v int)")
        .await
        .unwrap();
    keyed.batch_execute("INSERT INTO r VALUES (1, 0)").await.unwrap();
    // keyed holds row 1 without an LSN; early takes the LSN (a serial insert)
    // and waits for row 1; keyed then needs the LSN: a deadlock PostgreSQL
    // breaks by failing one of them.
    keyed.batch_execute("BEGIN").await.unwrap();
    keyed.execute("UPDATE r SET v = v + 1 WHERE id = $1", &[&1i32]).await.unwrap();
    early.batch_execute("BEGIN; INSERT INTO s (v) VALUES (1)").await.unwrap();
    let e2 = early.clone();
    let waiting = tokio::spawn(async move { e2.execute("UPDATE r SET v = v + 10 WHERE id = $1", &[&1i32]).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let k2 = keyed.clone();
    let mine = tokio::spawn(async move { k2.execute("INSERT INTO s (v) VALUES ($1)", &[&2i32]).await });
    // The loser's transaction keeps what chorus holds until its client ends it.
    let theirs = waiting.await.unwrap();
    if theirs.is_err() {
        early.batch_execute("ROLLBACK").await.unwrap();
    }
    let mine = mine.await.unwrap();
    if mine.is_err() {
        keyed.batch_execute("ROLLBACK").await.unwrap();
    }
    let failures = [mine.is_err(), theirs.is_err()].iter().filter(|f| **f).count();
    assert_eq!(failures, 1, "{mine:?} {theirs:?}");
    for (c, r) in [(&*keyed, &mine), (&*early, &theirs)] {
        match r {
            Ok(_) => c.batch_execute("COMMIT").await.unwrap(),
            Err(e) => assert_eq!(sqlstate(e), "40P01", "{e:?}"),
        }
        // Both sessions go on.
        c.execute("UPDATE r SET v = v + 100 WHERE id = $1", &[&1i32]).await.unwrap();
    }
    assert_converged(&db).await;
}
