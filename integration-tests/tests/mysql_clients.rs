//! Real MySQL client libraries other than mysql_async through chorus's MySQL
//! listener, as applications use them: PyMySQL (integration-tests/python/)
//! and MariaDB Connector/J (integration-tests/java/). scripts/test.sh
//! installs both (PyMySQL from PyPI, Debian's libmariadb-java) and a JDK.
//! Every test ends with the followers compared to the leader.

use chorus::config::{AuthMethod, Config, MysqlAuth, User};
use integration_tests::*;
use std::process::Command;

const CONNECTOR_J: &str = "/usr/share/java/mariadb-java-client.jar";

/// Users pinned to each password plugin, as `name:password`.
const SHA2_USER: &str = "sha2_only:sha2 pw";
const NATIVE_USER: &str = "native_only:native pw";

fn pinned_users(c: &mut Config) {
    for (who, plugin) in [(SHA2_USER, MysqlAuth::CachingSha2Password), (NATIVE_USER, MysqlAuth::NativePassword)] {
        let (name, password) = who.split_once(':').expect("name:password");
        c.users.push(User {
            name: name.into(),
            password: Some(password.into()),
            auth: AuthMethod::ScramSha256,
            mysql_auth: Some(plugin),
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_parameters_transactions_errors_and_logins_converge() {
    init_logging_from_env();
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus_with(maria_cluster(), pinned_users);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/pymysql_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(chorus.url(db.name())).arg(db.leader_url()).arg(SHA2_USER).arg(NATIVE_USER);
    run_client(&mut cmd, "scripts/test.sh installs python3 and PyMySQL", 180);
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

/// A JDBC URL for Connector/J: `db` on `host:port` as `user`, with `options`.
fn jdbc_url(port: u16, db: &str, user: &str, password: &str, options: &str) -> String {
    format!("jdbc:mariadb://127.0.0.1:{port}/{db}?user={user}&password={password}&{options}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_j_prepares_batches_keys_transactions_and_metadata_converge() {
    init_logging_from_env();
    assert!(std::path::Path::new(CONNECTOR_J).exists(), "{CONNECTOR_J} is missing: apt-get install libmariadb-java");
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/java/MariadbJdbcClient.java");
    let classes = tests_root().join(format!("mariadb-jdbc-{}-{}", std::process::id(), db.name()));
    std::fs::create_dir_all(&classes).unwrap();
    let install = "scripts/test.sh installs a JDK";
    run_client(Command::new("javac").arg("-d").arg(&classes).arg(source), install, 180);
    let classpath = format!("{CONNECTOR_J}:{}", classes.display());
    let leader = maria_cluster().leader();
    // Each way the driver prepares and batches: server-side prepares (binary
    // protocol, long data; batches one execute at a time, since chorus
    // announces none of MariaDB's extended capabilities, so not even
    // useBulkStmts makes the driver use COM_STMT_BULK_EXECUTE), and the
    // driver's own interpolation (text protocol, bytes as `_binary'...'`),
    // with batches sent one statement at a time or rewritten: an INSERT
    // batch into one multi-row INSERT (or, with generated keys, one query of
    // several INSERTs), other batches into one query of several statements,
    // which chorus logs statement by statement.
    for (table, options) in [
        ("server_side", "useServerPrepStmts=true&useBulkStmts=true"),
        ("client_side", "useServerPrepStmts=false"),
        ("rewritten", "useServerPrepStmts=false&rewriteBatchedStatements=true"),
    ] {
        let url = jdbc_url(chorus.port(), db.name(), CHORUS_USER, CHORUS_PASSWORD, options);
        let direct = jdbc_url(leader.port(), db.name(), leader.user(), leader.password(), "");
        let mut cmd = Command::new("java");
        cmd.arg("-cp").arg(&classpath).arg("MariadbJdbcClient").arg(url).arg(direct).arg(table);
        run_client(&mut cmd, install, 180);
    }
    let _ = std::fs::remove_dir_all(&classes);
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}
