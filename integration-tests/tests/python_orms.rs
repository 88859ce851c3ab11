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
    run_python(script, &[dialect, &url]);
}

fn run_python(script: &str, args: &[&str]) {
    let script = format!("{}/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("python3");
    cmd.arg(&script).args(args);
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

/// `manage.py test`'s database handling: Django creates its test database
/// through chorus (dropping and creating it again when it exists), migrates
/// and writes in it, clones it for a parallel worker (CREATE DATABASE ...
/// WITH TEMPLATE) and writes in the clone, and drops both at the end;
/// chorus mirrors all of it on the followers, and both databases converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_test_runner_creates_and_destroys_its_test_database_through_chorus() {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let url = chorus.url(db.name());
    let test_db = format!("test_{}", db.name()).chars().take(40).collect::<String>();
    run_python("django_test_db.py", &["create", &url, &test_db]);
    // Again: the database exists, so Django drops it and creates it anew.
    run_python("django_test_db.py", &["create", &url, &test_db]);
    run_python("django_test_db.py", &["clone", &url, &test_db]);
    let clone = format!("{test_db}_1");
    let options = chorus::verify::VerifyOptions { databases: vec![test_db.clone(), clone.clone()] };
    let report = chorus::verify::verify_with(&chorus_config(cluster()), &options).await.expect("verify");
    assert!(report.converged(), "{test_db} or its clone differs: {:#?}", report.differences);
    assert!(report.databases == 2 && report.tables > 10, "{report:#?}");
    run_python("django_test_db.py", &["destroy", &url, &test_db]);
    for node in cluster().nodes() {
        let c = node.connect("postgres").await.unwrap();
        for db in [&test_db, &clone] {
            let gone = c.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[db]).await.unwrap().is_none();
            assert!(gone, "{db} is still on {}", node.name());
        }
    }
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
