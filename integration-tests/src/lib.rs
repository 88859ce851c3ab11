//! Shared harness for chorus integration tests: real PostgreSQL servers, chorus
//! in-process, and real clients (tokio-postgres, psql, pgbench).
//!
//! One leader + two followers per test binary ([`cluster`]), started on first use
//! and stopped when the binary exits (by the cluster's guardian process: statics
//! are never dropped). Each test takes its own database ([`fresh_database`]) and
//! its own chorus ([`start_chorus`]), so tests of one binary run in parallel
//! without seeing each other. A test that stops or kills nodes should use a
//! [`private_cluster`] (or live in its own test binary), so it does not disturb
//! tests sharing the binary's cluster.
//!
//! ```no_run
//! # async fn example() {
//! use integration_tests::*;
//! let db = fresh_database().await;
//! db.execute_on_all("CREATE TABLE t (id int); INSERT INTO t VALUES (1)").await;
//! let chorus = start_chorus(cluster());
//! let client = chorus.connect(db.name()).await;
//! let port: String = client.query_one("SELECT current_setting('port')", &[]).await.unwrap().get(0);
//! assert!(db.is_follower_port(&port));
//! # }
//! ```
//!
//! Environment: `RUST_LOG=chorus=debug` shows chorus's logs; `CHORUS_KEEP_TEST_DATA=1` keeps the servers' directories (and
//! logs) after the run; `CHORUS_TEST_DIR` puts them somewhere else than
//! `<target>/chorus-tests`.

mod cli;
mod clients;
mod logging;
mod mariadb;
mod metrics;
mod mysql_proxy;
mod mysql_workload;
mod panics;
mod probe;
mod proxy;
pub mod raw;
mod tls;
mod workload;

pub use chorus::localcluster::{ClusterOptions, CommandOutput, PgCluster, PgNode};
pub use chorus::localcluster::{MariaCluster, MariaNode, MariaOptions};
pub use cli::{chorus_binary, run_chorus};
pub use clients::{PgbenchRun, connect, pg_program, pgbench, psql, psql_sql, run_client, try_connect};
pub use logging::init_logging_from_env;
pub use mariadb::{
    MariaDb, fresh_maria_database, fresh_maria_database_on, maria_cluster, mariadb_cli, mariadb_sql,
    private_maria_cluster,
};
pub use metrics::{metric, scrape};
pub use mysql_proxy::{
    MyChorus, assert_maria_converged, mysql_chorus_config, start_mysql_chorus, start_mysql_chorus_with,
};
pub use mysql_workload::{MyWorkloadStats, MysqlWorkload};
pub use panics::{assert_no_chorus_panics, chorus_panics, watch_chorus_panics};
pub use probe::{answering_port, db_message, error_text, simple_rows, simple_value, sqlstate};
pub use proxy::{CHORUS_PASSWORD, CHORUS_USER, Chorus, chorus_config, start_chorus, start_chorus_with};
pub use tls::SelfSigned;
pub use workload::{WorkloadOptions, WorkloadStats, run_workload};

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Followers in the shared cluster of a test binary.
pub const SHARED_FOLLOWERS: usize = 2;

/// The test binary's shared cluster (leader + [`SHARED_FOLLOWERS`] followers),
/// started on first use. Panics with the reason (e.g. what to install) if the
/// servers cannot start.
pub fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    let cluster = CLUSTER.get_or_init(|| start_cluster("shared", SHARED_FOLLOWERS).map_err(|e| e.to_string()));
    match cluster {
        Ok(c) => c,
        Err(e) => panic!("cannot start the test cluster: {e}"),
    }
}

/// A cluster of the caller's own, stopped and removed when dropped: for tests
/// that stop, kill or reconfigure nodes.
pub fn private_cluster(followers: usize) -> PgCluster {
    static N: AtomicUsize = AtomicUsize::new(0);
    let label = format!("private{}", N.fetch_add(1, Ordering::SeqCst));
    start_cluster(&label, followers).unwrap_or_else(|e| panic!("cannot start a private test cluster: {e}"))
}

/// Start a cluster in a dedicated thread (it may be called from inside any tokio
/// runtime; the setup SQL needs a runtime of its own), and prepare it for chorus:
/// the test user exists on every node.
fn start_cluster(label: &str, followers: usize) -> Result<PgCluster, Box<dyn std::error::Error + Send + Sync>> {
    let label = label.to_string();
    std::thread::spawn(move || {
        let keep = std::env::var_os("CHORUS_KEEP_TEST_DATA").is_some_and(|v| !v.is_empty() && v != "0");
        let opts = ClusterOptions { followers, remove_on_drop: !keep, ..ClusterOptions::default() };
        let dir = tests_root().join(format!("{}-{}-{label}", binary_name(), std::process::id()));
        let cluster = match PgCluster::start_with(&dir, opts.clone()) {
            Err(chorus::localcluster::ClusterError::Unreachable(_)) => {
                // The postgres user cannot reach the target dir (e.g. a checkout under
                // /root): fall back to a directory it can reach.
                let _ = std::fs::remove_dir_all(&dir);
                let fallback = PathBuf::from("/var/tmp/chorus-tests").join(dir.file_name().expect("named"));
                PgCluster::start_with(&fallback, opts)?
            }
            other => other?,
        };
        if keep {
            eprintln!("chorus test cluster kept in {}", cluster.dir().display());
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(cluster.create_role(CHORUS_USER, CHORUS_PASSWORD, true))?;
        Ok(cluster)
    })
    .join()
    .expect("cluster start thread panicked")
}

/// `<target>/chorus-tests`: inside the build's target directory (found from this
/// test binary's own path, `<target>/<profile>/deps/<binary>`, so it follows
/// CARGO_TARGET_DIR), or `CHORUS_TEST_DIR` if set. Never /tmp: data there has
/// vanished under running servers.
pub fn tests_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHORUS_TEST_DIR") {
        return PathBuf::from(dir);
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(PathBuf::from)).flatten()
    });
    from_exe.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target")).join("chorus-tests")
}

/// The test binary's name without cargo's hash (`cluster-1a2b..` -> `cluster`).
fn binary_name() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe.as_ref().and_then(|e| e.file_stem()).and_then(|s| s.to_str()).unwrap_or("tests");
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => stem.to_string(),
    }
}

/// A database that exists, empty, on every node of a cluster.
pub struct TestDb<'c> {
    cluster: &'c PgCluster,
    name: String,
}

/// A new, uniquely named, empty database on every node of the shared cluster.
/// The name includes the test's name, to find it in server logs.
pub async fn fresh_database() -> TestDb<'static> {
    fresh_database_on(cluster()).await
}

/// A new, uniquely named, empty database on every node of `cluster`.
pub async fn fresh_database_on(cluster: &PgCluster) -> TestDb<'_> {
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
    let mut name = format!("t{n}_{tail}");
    name.truncate(63);
    cluster.create_database(&name).await.unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    TestDb { cluster, name }
}

impl<'c> TestDb<'c> {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cluster(&self) -> &'c PgCluster {
        self.cluster
    }

    /// Run `sql` in this database on every running node (fixtures, until chorus
    /// replicates). Panics on error.
    pub async fn execute_on_all(&self, sql: &str) {
        self.cluster
            .execute_on_all(&self.name, sql)
            .await
            .unwrap_or_else(|e| panic!("fixture failed in {}: {e}\n{sql}", self.name));
    }

    /// This database on the leader, directly, as the superuser.
    pub fn leader_url(&self) -> String {
        self.cluster.leader().url_for_db(&self.name)
    }

    /// This database on each follower, directly, as the superuser.
    pub fn follower_urls(&self) -> Vec<String> {
        self.cluster.followers().iter().map(|n| n.url_for_db(&self.name)).collect()
    }

    /// A direct connection to this database on `node` (bypassing chorus).
    pub async fn connect_node(&self, node: &PgNode) -> tokio_postgres::Client {
        node.connect(&self.name).await.unwrap_or_else(|e| panic!("cannot connect to {}: {e}", node.name()))
    }

    pub async fn connect_leader(&self) -> tokio_postgres::Client {
        self.connect_node(self.cluster.leader()).await
    }

    /// Which node listens on `port` (as returned by `current_setting('port')`).
    pub fn node_by_port(&self, port: &str) -> Option<&'c PgNode> {
        self.cluster.nodes().iter().find(|n| n.port().to_string() == port)
    }

    pub fn is_leader_port(&self, port: &str) -> bool {
        self.cluster.leader().port().to_string() == port
    }

    pub fn is_follower_port(&self, port: &str) -> bool {
        self.cluster.followers().iter().any(|n| n.port().to_string() == port)
    }
}

/// Wait until every follower has applied the leader's log for `db` and assert
/// that every table matches the leader (`chorus verify`). Every test that
/// writes through chorus ends with this.
pub async fn assert_converged(db: &TestDb<'_>) {
    let config = chorus_config(db.cluster());
    let options = chorus::verify::VerifyOptions { databases: vec![db.name().to_string()] };
    let report = chorus::verify::verify_with(&config, &options).await.unwrap_or_else(|e| panic!("verify failed: {e}"));
    assert!(report.converged(), "{} differs: {:#?}", db.name(), report.differences);
}
