//! pgjdbc (Debian's libpostgresql-jdbc-java) through chorus, as Java
//! applications use it (integration-tests/java/; scripts/test.sh installs a
//! JDK and the driver).

use integration_tests::*;
use std::process::Command;

const DRIVER: &str = "/usr/share/java/postgresql.jar";

/// `postgres://user:password@host:port/db` as a JDBC URL.
const JDK: &str = "scripts/test.sh installs a JDK";

fn jdbc_url(url: &str) -> String {
    let rest = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")).expect("a postgres URL");
    let (auth, target) = rest.split_once('@').expect("credentials in the URL");
    let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
    format!("jdbc:postgresql://{target}?user={user}&password={password}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_batches_generated_keys_and_transactions_converge() {
    init_logging_from_env();
    assert!(std::path::Path::new(DRIVER).exists(), "{DRIVER} is missing: apt-get install libpostgresql-jdbc-java");
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/java/JdbcClient.java");
    let classes = std::env::temp_dir().join(format!("chorus-jdbc-{}", std::process::id()));
    std::fs::create_dir_all(&classes).unwrap();
    run_client(Command::new("javac").arg("-d").arg(&classes).arg(source), JDK, 180);
    let classpath = format!("{DRIVER}:{}", classes.display());
    let (url, leader) = (jdbc_url(&chorus.url(db.name())), jdbc_url(&db.leader_url()));
    run_client(Command::new("java").arg("-cp").arg(&classpath).arg("JdbcClient").arg(url).arg(leader), JDK, 180);
    let _ = std::fs::remove_dir_all(&classes);
    assert_converged(&db).await;
}
