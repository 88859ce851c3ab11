//! Django's ORM through chorus, on both dialects: `migrate` of Django's own
//! apps, the schema editor, and the ORM's writes as a Django application
//! makes them (integration-tests/python/django_orm.py; scripts/test.sh
//! installs Django, PyMySQL and psycopg from PyPI). Django's MySQL
//! connections run at READ COMMITTED, its default there. Every test ends
//! with the followers compared to the leader.

use integration_tests::*;
use std::process::Command;
use std::time::Duration;

fn run_django(engine: &str, url: String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/django_orm.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(engine).arg(url);
    let out = chorus::localcluster::run_with_timeout(&mut cmd, None, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("cannot run python3 (scripts/test.sh installs it with Django): {e}"));
    assert!(out.success(), "{script} {engine} failed:\n{}\n{}", out.stdout, out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_on_postgresql_migrates_and_writes_and_converges() {
    init_logging_from_env();
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    run_django("postgresql", chorus.url(db.name()));
    assert_converged(&db).await;
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_on_mariadb_migrates_and_writes_and_converges() {
    init_logging_from_env();
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    run_django("mysql", chorus.url(db.name()));
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}
