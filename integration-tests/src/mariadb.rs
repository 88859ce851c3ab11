//! MariaDB for tests of chorus's MySQL frontend: the MySQL-dialect twins of
//! [`cluster`](crate::cluster), [`private_cluster`](crate::private_cluster),
//! [`fresh_database`](crate::fresh_database) and [`psql`](crate::psql).
//!
//! Same rules as for PostgreSQL: one leader + [`SHARED_FOLLOWERS`] followers per
//! test binary ([`maria_cluster`], stopped by its guardian when the binary exits),
//! one database per test ([`fresh_maria_database`]), and a
//! [`private_maria_cluster`] for tests that stop, kill or reconfigure nodes.
//!
//! ```no_run
//! # async fn example() {
//! use integration_tests::*;
//! let db = fresh_maria_database().await;
//! db.execute_on_all("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)").await;
//! assert_eq!(mariadb_sql(&db.leader_url(), "SELECT COUNT(*) FROM t"), "1");
//! # }
//! ```

use crate::{CHORUS_PASSWORD, CHORUS_USER, SHARED_FOLLOWERS, binary_name, tests_root};
use chorus::localcluster::{CommandOutput, MariaCluster, MariaNode, MariaOptions, run_with_timeout};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The test binary's shared MariaDB cluster (leader + [`SHARED_FOLLOWERS`]
/// followers), started on first use. Panics with the reason (e.g. what to
/// install) if the servers cannot start.
pub fn maria_cluster() -> &'static MariaCluster {
    static CLUSTER: OnceLock<Result<MariaCluster, String>> = OnceLock::new();
    let cluster =
        CLUSTER.get_or_init(|| start_maria_cluster("maria-shared", SHARED_FOLLOWERS).map_err(|e| e.to_string()));
    match cluster {
        Ok(c) => c,
        Err(e) => panic!("cannot start the MariaDB test cluster: {e}"),
    }
}

/// A MariaDB cluster of the caller's own, stopped and removed when dropped: for
/// tests that stop, kill or reconfigure nodes.
pub fn private_maria_cluster(followers: usize) -> MariaCluster {
    static N: AtomicUsize = AtomicUsize::new(0);
    let label = format!("maria-private{}", N.fetch_add(1, Ordering::SeqCst));
    start_maria_cluster(&label, followers)
        .unwrap_or_else(|e| panic!("cannot start a private MariaDB test cluster: {e}"))
}

/// Start a cluster in a dedicated thread (it may be called from inside any tokio
/// runtime; the setup SQL needs a runtime of its own), and prepare it for chorus:
/// [`CHORUS_USER`] exists on every node, with `mysql_native_password`.
fn start_maria_cluster(
    label: &str,
    followers: usize,
) -> Result<MariaCluster, Box<dyn std::error::Error + Send + Sync>> {
    let label = label.to_string();
    std::thread::spawn(move || {
        let keep = std::env::var_os("CHORUS_KEEP_TEST_DATA").is_some_and(|v| !v.is_empty() && v != "0");
        let opts = MariaOptions { followers, remove_on_drop: !keep, ..MariaOptions::default() };
        let dir = tests_root().join(format!("{}-{}-{label}", binary_name(), std::process::id()));
        let cluster = MariaCluster::start_with(&dir, opts)?;
        if keep {
            eprintln!("chorus MariaDB test cluster kept in {}", cluster.dir().display());
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(cluster.create_user(CHORUS_USER, CHORUS_PASSWORD, "mysql_native_password"))?;
        Ok(cluster)
    })
    .join()
    .expect("MariaDB cluster start thread panicked")
}

/// A database that exists, empty, on every node of a MariaDB cluster.
pub struct MariaDb<'c> {
    cluster: &'c MariaCluster,
    name: String,
}

/// A new, uniquely named, empty database on every node of the shared MariaDB
/// cluster. The name includes the test's name, to find it in server logs.
pub async fn fresh_maria_database() -> MariaDb<'static> {
    fresh_maria_database_on(maria_cluster()).await
}

/// A new, uniquely named, empty database on every node of `cluster`.
pub async fn fresh_maria_database_on(cluster: &MariaCluster) -> MariaDb<'_> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let test = std::thread::current().name().unwrap_or("test").to_string();
    let tail: String = test
        .rsplit("::")
        .next()
        .unwrap_or("test")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    // `m`, not PostgreSQL's `t`: a test using both clusters gets two names.
    let mut name = format!("m{n}_{tail}");
    // MariaDB's limit for database names.
    name.truncate(64);
    cluster.create_database(&name).await.unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    MariaDb { cluster, name }
}

impl<'c> MariaDb<'c> {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cluster(&self) -> &'c MariaCluster {
        self.cluster
    }

    /// Run `sql` (one or more statements) in this database on every running node
    /// (fixtures, until chorus replicates). Panics on error.
    pub async fn execute_on_all(&self, sql: &str) {
        self.cluster
            .execute_on_all_in(&self.name, sql)
            .await
            .unwrap_or_else(|e| panic!("fixture failed in {}: {e}\n{sql}", self.name));
    }

    /// This database on the leader, directly, as root.
    pub fn leader_url(&self) -> String {
        self.cluster.leader().url_for_db(&self.name)
    }

    /// This database on each follower, directly, as root.
    pub fn follower_urls(&self) -> Vec<String> {
        self.cluster.followers().iter().map(|n| n.url_for_db(&self.name)).collect()
    }

    /// A direct connection (TCP, as root) to this database on `node`, bypassing chorus.
    pub async fn connect_node(&self, node: &MariaNode) -> mysql_async::Conn {
        node.connect(&self.name).await.unwrap_or_else(|e| panic!("cannot connect to {}: {e}", node.name()))
    }

    pub async fn connect_leader(&self) -> mysql_async::Conn {
        self.connect_node(self.cluster.leader()).await
    }

    /// Which node listens on `port` (as returned by `SELECT @@port`).
    pub fn node_by_port(&self, port: u16) -> Option<&'c MariaNode> {
        self.cluster.nodes().iter().find(|n| n.port() == port)
    }

    pub fn is_leader_port(&self, port: u16) -> bool {
        self.cluster.leader().port() == port
    }

    pub fn is_follower_port(&self, port: u16) -> bool {
        self.cluster.followers().iter().any(|n| n.port() == port)
    }
}

/// Run the `mariadb` command-line client against `url` (`mysql://user:pw@host:port/db`,
/// a node's or chorus's) with extra arguments and optional stdin, e.g.
/// `mariadb_cli(&url, &["-N", "-B", "-e", "SELECT 1"], None)` or
/// `mariadb_cli(&url, &[], Some(b"SELECT 1;\n"))`. Always over TCP (never the
/// server's socket, which would bypass chorus), ignoring option files and
/// `MYSQL_*` variables. Times out after 60 s.
pub fn mariadb_cli(url: &str, args: &[&str], stdin: Option<&[u8]>) -> CommandOutput {
    let opts = mysql_async::Opts::from_url(url).unwrap_or_else(|e| panic!("bad MySQL URL {url}: {e}"));
    let mut cmd = Command::new("mariadb");
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("MYSQL")) {
            cmd.env_remove(key);
        }
    }
    // --no-defaults must come first.
    cmd.args(["--no-defaults", "--protocol=TCP", "--connect-timeout=30"])
        .arg(format!("--host={}", opts.ip_or_hostname()))
        .arg(format!("--port={}", opts.tcp_port()));
    if let Some(user) = opts.user() {
        cmd.arg(format!("--user={user}"));
    }
    if let Some(pass) = opts.pass() {
        cmd.arg(format!("--password={pass}"));
    }
    if let Some(db) = opts.db_name() {
        cmd.arg(format!("--database={db}"));
    }
    cmd.args(args);
    run_with_timeout(&mut cmd, stdin, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("cannot run the mariadb client: {e}"))
}

/// Run `sql` with the `mariadb` client in batch mode without column names
/// (tab-separated rows) and return its stdout (trimmed); panics with its stderr
/// if it fails.
pub fn mariadb_sql(url: &str, sql: &str) -> String {
    let out = mariadb_cli(url, &["--batch", "--skip-column-names", "--execute", sql], None);
    assert!(out.success(), "mariadb failed ({:?}) on {sql:?}:\n{}{}", out.status, out.stdout, out.stderr);
    out.stdout.trim().to_string()
}
