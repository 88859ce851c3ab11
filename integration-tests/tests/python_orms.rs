//! Python's ORMs through chorus, on both dialects, as applications use
//! them: Django (`migrate` of its own apps, the schema editor, the ORM's
//! writes; its MySQL connections run at READ COMMITTED, its default there)
//! and SQLAlchemy 2 (create_all, the unit of work's batched INSERT ...
//! RETURNING, savepoints, upserts, Core executemany). The scripts are in
//! integration-tests/python/; scripts/test.sh installs Django, SQLAlchemy,
//! PyMySQL and psycopg from PyPI. Every test ends with the followers
//! compared to the leader.

use integration_tests::*;
use std::process::Command;

/// Run integration-tests/python/`script` for `dialect` against chorus at `url`.
fn run_script(script: &str, dialect: &str, url: String) {
    let script = format!("{}/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(dialect).arg(url);
    run_client(&mut cmd, "scripts/test.sh installs python3 and the ORMs", 180);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_on_postgresql_migrates_and_writes_and_converges() {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    run_script("django_orm.py", "postgresql", chorus.url(db.name()));
    assert_converged(&db).await;
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_on_mariadb_migrates_and_writes_and_converges() {
    init_logging_from_env();
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    run_script("django_orm.py", "mysql", chorus.url(db.name()));
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_on_postgresql_writes_and_converges() {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    run_script("sqlalchemy_orm.py", "postgresql", chorus.url(db.name()));
    assert_converged(&db).await;
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_on_mariadb_writes_and_converges() {
    init_logging_from_env();
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    run_script("sqlalchemy_orm.py", "mysql", chorus.url(db.name()));
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}
