//! `chorus demo` end to end (in-process): servers start, the database exists on
//! every node, `demo.env` appears in the documented format with working URLs, the
//! generated config passes `check-config`, and shutdown stops every server.
//! Both dialects at once: PostgreSQL and MariaDB behind one chorus.

use chorus::demo::{DEMO_DATABASE, DemoOptions};
use integration_tests::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn demo_comes_up_writes_demo_env_and_cleans_up() {
    let dir = tests_root().join(format!("demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = DemoOptions { dir: dir.clone(), followers: 2, postgres: true, mysql: true };
    let demo = tokio::spawn(chorus::demo::run(opts, async move {
        let _ = stop_rx.await;
    }));

    let env_path = dir.join("demo.env");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !env_path.exists() {
        assert!(!demo.is_finished(), "demo ended early: {:?}", demo.await);
        assert!(Instant::now() < deadline, "no demo.env after 120 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&env_path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let keys: Vec<&str> = lines.iter().map(|l| l.split('=').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "CHORUS_PG_URL",
            "LEADER_PG_URL",
            "FOLLOWER_PG_URLS",
            "CHORUS_MYSQL_URL",
            "LEADER_MYSQL_URL",
            "FOLLOWER_MYSQL_URLS",
            "CHORUS_CONFIG"
        ],
        "{text}"
    );
    let value = |key: &str| {
        let line = lines.iter().find(|l| l.starts_with(&format!("{key}="))).unwrap();
        line[key.len() + 1..].trim_matches('"').to_string()
    };
    assert!(value("CHORUS_PG_URL").ends_with(&format!("/{DEMO_DATABASE}")));
    let followers: Vec<String> = value("FOLLOWER_PG_URLS").split(' ').map(String::from).collect();
    assert_eq!(followers.len(), 2);

    // Every server answers directly, in the demo database, each on its own port.
    let mut ports = Vec::new();
    for url in std::iter::once(value("LEADER_PG_URL")).chain(followers) {
        ports.push(psql_sql(&url, "SELECT current_setting('port') || ':' || current_database()"));
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "{ports:?}");
    assert!(ports.iter().all(|p| p.ends_with(&format!(":{DEMO_DATABASE}"))));

    // MariaDB: through chorus and each server directly, in the demo database.
    let through = mariadb_sql(&value("CHORUS_MYSQL_URL"), "SELECT DATABASE()");
    assert_eq!(through.trim(), DEMO_DATABASE);
    let mysql_urls: Vec<String> = std::iter::once(value("LEADER_MYSQL_URL"))
        .chain(value("FOLLOWER_MYSQL_URLS").split(' ').map(String::from))
        .collect();
    assert_eq!(mysql_urls.len(), 3);
    let mut mysql_ports = Vec::new();
    for url in &mysql_urls {
        let answer = mariadb_sql(url, "SELECT CONCAT(@@port, ':', DATABASE())");
        assert!(answer.trim().ends_with(&format!(":{DEMO_DATABASE}")), "{answer}");
        mysql_ports.push(answer.trim().split(':').next().unwrap().parse::<u16>().unwrap());
    }

    // The generated configuration is what `chorus check-config` accepts.
    chorus::config::Config::load(std::path::Path::new(&value("CHORUS_CONFIG"))).unwrap();

    stop_tx.send(()).unwrap();
    demo.await.unwrap().unwrap();
    assert!(!env_path.exists(), "demo.env outlived the demo");
    for node in ["leader", "follower1", "follower2"] {
        let pid_file = dir.join("postgres").join(node).join("data/postmaster.pid");
        assert!(!pid_file.exists(), "{node} still running after the demo stopped");
    }
    for port in mysql_ports {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "MariaDB on {port} outlived the demo");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
