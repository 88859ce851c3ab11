//! The MariaDB harness itself: servers start, answer as root and as the test user
//! over TCP, survive SIGKILL and restart, and stop when their cluster drops.

use integration_tests::*;
use mysql_async::prelude::Queryable;
use std::net::SocketAddr;

/// Alive and really a MariaDB server (the pid may be reused once it is gone).
fn is_mariadbd(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("mariadbd"))
}

#[tokio::test]
async fn shared_cluster_answers_as_root_and_test_user() {
    let cluster = maria_cluster();
    assert_eq!(cluster.nodes().len(), 1 + SHARED_FOLLOWERS);
    for (i, node) in cluster.nodes().iter().enumerate() {
        let mut root = node.connect("").await.unwrap_or_else(|e| panic!("root on {}: {e}", node.name()));
        let (port, server_id, charset): (u16, u32, String) =
            root.query_first("SELECT @@port, @@server_id, @@character_set_server").await.unwrap().unwrap();
        assert_eq!((port, server_id, charset.as_str()), (node.port(), i as u32 + 1, "utf8mb4"), "{}", node.name());
        root.disconnect().await.unwrap();

        let url = node.url();
        let mut by_url = mysql_async::Conn::from_url(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let port: u16 = by_url.query_first("SELECT @@port").await.unwrap().unwrap();
        assert_eq!(port, node.port());
        by_url.disconnect().await.unwrap();

        let opts =
            mysql_async::OptsBuilder::from_opts(node.opts("")).user(Some(CHORUS_USER)).pass(Some(CHORUS_PASSWORD));
        let mut user =
            mysql_async::Conn::new(opts).await.unwrap_or_else(|e| panic!("test user on {}: {e}", node.name()));
        let (port, current, plugin): (u16, String, String) = user
            .query_first(format!(
                "SELECT @@port, CURRENT_USER(), plugin FROM mysql.user WHERE user = '{CHORUS_USER}' AND host = '%'"
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(port, node.port());
        assert_eq!(current, format!("{CHORUS_USER}@%"));
        assert_eq!(plugin, "mysql_native_password");
        user.disconnect().await.unwrap();
    }

    let db = fresh_maria_database().await;
    db.execute_on_all("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t VALUES (1, 'één'), (2, 'b')")
        .await;
    let leader = cluster.leader().port();
    assert_eq!(mariadb_sql(&db.leader_url(), "SELECT COUNT(*), @@port FROM t"), format!("2\t{leader}"));
    let as_user = format!("mysql://{CHORUS_USER}:{CHORUS_PASSWORD}@127.0.0.1:{leader}/{}", db.name());
    let out = mariadb_cli(&as_user, &["--batch", "--skip-column-names"], Some(b"SELECT v FROM t ORDER BY id;\n"));
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "één\nb\n");
    let out = mariadb_cli(&db.leader_url(), &["-e", "SELECT * FROM no_such_table"], None);
    assert!(!out.success() && out.stderr.contains("1146"), "{}", out.stderr);
    for url in db.follower_urls() {
        assert_eq!(mariadb_sql(&url, "SELECT COUNT(*) FROM t"), "2");
    }
    let mut conn = db.connect_leader().await;
    let port: u16 = conn.query_first("SELECT @@port").await.unwrap().unwrap();
    assert!(db.is_leader_port(port) && !db.is_follower_port(port));
    conn.disconnect().await.unwrap();

    // The configuration chorus's MySQL frontend gets for this cluster.
    let listen: SocketAddr = "127.0.0.1:3306".parse().unwrap();
    let toml = cluster.chorus_config_toml(listen, "app", "secret");
    let config = chorus::config::Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("rejected: {e}\n{toml}"));
    assert_eq!(config.listen.mysql, Some(listen));
    assert_eq!(config.nodes.len(), cluster.nodes().len());
    for (parsed, node) in config.nodes.iter().zip(cluster.nodes()) {
        assert_eq!(parsed.dialect, chorus::config::Dialect::Mysql);
        assert_eq!((parsed.name.as_str(), parsed.role, parsed.port), (node.name(), node.role(), node.port()));
        assert_eq!((parsed.user.as_str(), parsed.password.as_deref()), ("root", Some(cluster.password())));
        assert_eq!(parsed.admin_database, "mysql");
    }
    assert_eq!((config.users[0].name.as_str(), config.users[0].password.as_deref()), ("app", Some("secret")));

    cluster.drop_database(db.name()).await.unwrap();
    let mut conn = cluster.leader().connect("").await.unwrap();
    let left: Option<String> = conn
        .exec_first("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", (db.name(),))
        .await
        .unwrap();
    assert_eq!(left, None);
    conn.disconnect().await.unwrap();
}

#[tokio::test]
async fn private_cluster_survives_kill_and_stops_on_drop() {
    let cluster = private_maria_cluster(1);
    let db = fresh_maria_database_on(&cluster).await;
    db.execute_on_all("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2)").await;
    let follower = &cluster.followers()[0];

    let killed = follower.pid().expect("follower runs");
    follower.kill().unwrap();
    assert!(!follower.is_running() && !is_mariadbd(killed));
    assert!(follower.connect("").await.is_err());
    follower.start().unwrap();
    assert_ne!(follower.pid(), Some(killed));
    let mut conn = db.connect_node(follower).await;
    let (port, rows): (u16, u64) = conn.query_first("SELECT @@port, COUNT(*) FROM t").await.unwrap().unwrap();
    assert_eq!((port, rows), (follower.port(), 2), "committed rows survive SIGKILL");
    conn.disconnect().await.unwrap();

    // A port taken while the node was down: it starts on another one.
    follower.stop().unwrap();
    let old_port = follower.port();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", old_port)).expect("the stopped node's port is free");
    follower.start().unwrap();
    assert_ne!(follower.port(), old_port);
    let mut conn = follower.connect("").await.unwrap();
    let port: u16 = conn.query_first("SELECT @@port").await.unwrap().unwrap();
    assert_eq!(port, follower.port());
    conn.disconnect().await.unwrap();
    drop(squatter);

    cluster.leader().restart().unwrap();
    let mut conn = db.connect_leader().await;
    let port: u16 = conn.query_first("SELECT @@port").await.unwrap().unwrap();
    assert_eq!(port, cluster.leader().port());
    conn.disconnect().await.unwrap();

    let pids: Vec<i32> = cluster.nodes().iter().map(|n| n.pid().expect("node runs")).collect();
    assert!(pids.iter().all(|&pid| is_mariadbd(pid)));
    let dir = cluster.dir().to_path_buf();
    drop(db);
    drop(cluster);
    for pid in pids {
        assert!(!is_mariadbd(pid), "server {pid} outlived its cluster");
    }
    let keep = std::env::var_os("CHORUS_KEEP_TEST_DATA").is_some_and(|v| !v.is_empty() && v != "0");
    assert_eq!(dir.exists(), keep, "{}", dir.display());
}
