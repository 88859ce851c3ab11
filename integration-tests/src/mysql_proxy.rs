//! chorus in front of a MariaDB cluster, in-process (see [`crate::proxy`]).

use crate::proxy::{CHORUS_PASSWORD, CHORUS_USER, Running};
use chorus::config::Config;
use chorus::localcluster::{CommandOutput, MariaCluster, url_encode};
use chorus::replication::mysql::SERVER_LOG;
use std::net::SocketAddr;
use std::time::Duration;

/// A running chorus with a MySQL listener. Dropping it shuts chorus down.
pub struct MyChorus {
    addr: SocketAddr,
    config: Config,
    ctx: std::sync::Arc<chorus::context::MysqlContext>,
    metrics_addr: Option<SocketAddr>,
    running: Running,
}

/// The configuration [`start_mysql_chorus`] uses: every node of `cluster`, a
/// free loopback port, user [`CHORUS_USER`]. A read waits up to 10 s for a
/// follower that has what its session needs (as for PostgreSQL: see
/// [`crate::chorus_config`]).
pub fn mysql_chorus_config(cluster: &MariaCluster) -> Config {
    let toml = cluster.chorus_config_toml("127.0.0.1:0".parse().expect("valid address"), CHORUS_USER, CHORUS_PASSWORD);
    let mut config = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("generated config rejected: {e}\n{toml}"));
    config.reads.wait = Some(Duration::from_secs(10));
    config
}

pub fn start_mysql_chorus(cluster: &MariaCluster) -> MyChorus {
    start_mysql_chorus_with(cluster, |_| {})
}

/// chorus in front of `cluster` after `tweak` adjusted the configuration.
pub fn start_mysql_chorus_with(cluster: &MariaCluster, tweak: impl FnOnce(&mut Config)) -> MyChorus {
    crate::init_logging_from_env();
    let mut config = mysql_chorus_config(cluster);
    tweak(&mut config);
    let (running, bound) = Running::start(config.clone());
    let addr = bound.mysql.expect("a MySQL listener");
    config.listen.mysql = Some(addr);
    let ctx = bound.mysql_context.expect("a MySQL context");
    MyChorus { addr, config, ctx, metrics_addr: bound.metrics, running }
}

impl MyChorus {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `GET /metrics` (start chorus with `metrics.listen` set).
    pub async fn scrape(&self) -> String {
        crate::metrics::scrape(self.metrics_addr.expect("start chorus with metrics.listen set")).await
    }

    /// `mysql://` URL of `db` through chorus, as [`CHORUS_USER`].
    pub fn url(&self, db: &str) -> String {
        self.url_as(CHORUS_USER, CHORUS_PASSWORD, db)
    }

    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!("mysql://{}:{}@{}/{}", url_encode(user), url_encode(password), self.addr, url_encode(db))
    }

    /// mysql_async options for `db` through chorus.
    pub fn opts(&self, db: &str) -> mysql_async::OptsBuilder {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port())
            .user(Some(CHORUS_USER))
            .pass(Some(CHORUS_PASSWORD))
            .db_name(Some(db))
            .prefer_socket(false)
    }

    /// A mysql_async connection to `db` through chorus (panics on failure).
    pub async fn connect(&self, db: &str) -> mysql_async::Conn {
        mysql_async::Conn::new(self.opts(db)).await.unwrap_or_else(|e| panic!("connect through chorus: {e}"))
    }

    /// The `mariadb` command-line client through chorus: `args` then `-e sql`.
    pub fn cli(&self, db: &str, args: &[&str], sql: &str) -> CommandOutput {
        let port = self.port().to_string();
        let password = format!("-p{CHORUS_PASSWORD}");
        let mut cmd = std::process::Command::new("mariadb");
        cmd.args(["--no-defaults", "--protocol=TCP", "-h", "127.0.0.1", "-P", &port, "-u", CHORUS_USER, &password]);
        cmd.args(["--batch", "--skip-column-names"]);
        cmd.args(args).arg("-e").arg(sql).arg(db);
        chorus::localcluster::run_with_timeout(&mut cmd, None, Duration::from_secs(60)).expect("run mariadb")
    }

    pub fn shutdown(mut self) -> Result<(), String> {
        self.running.stop_and_wait()
    }

    /// Divergences this chorus's appliers recorded.
    pub fn divergences(&self) -> Vec<chorus::replication::Divergence> {
        self.ctx.replication.as_ref().map(|r| r.state().divergences(SERVER_LOG)).unwrap_or_default()
    }

    /// [`assert_maria_converged`], failing at once (with the follower's
    /// error) when an applier of this chorus diverged instead of waiting
    /// out the deadline.
    pub async fn assert_converged(&self, cluster: &MariaCluster, db: &str) {
        use mysql_async::prelude::*;
        let mut leader = cluster.leader().connect(db).await.expect("connect to the leader");
        let lsn: Option<i64> = leader.query_first("SELECT lsn FROM _chorus.lsn WHERE id = 1").await.unwrap();
        let lsn = lsn.unwrap_or(0);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        if let Some(r) = &self.ctx.replication {
            let state = r.state();
            while !state.followers().iter().all(|&f| state.applied(SERVER_LOG, f).is_some_and(|a| a >= lsn)) {
                let d = self.divergences();
                assert!(
                    d.is_empty(),
                    "a follower diverged: {}",
                    d.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; ")
                );
                assert!(std::time::Instant::now() < deadline, "the followers did not apply LSN {lsn} within 60 s");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert_maria_converged(cluster, db).await;
    }
}

/// Wait (up to 60 s) until every follower of `cluster` has applied the
/// leader's last LSN, then check that every table of `db` holds the same
/// rows on every node; panics with the first difference.
pub async fn assert_maria_converged(cluster: &MariaCluster, db: &str) {
    use mysql_async::prelude::*;
    let mut leader = cluster.leader().connect(db).await.expect("connect to the leader");
    let lsn: Option<i64> = leader.query_first("SELECT lsn FROM _chorus.lsn WHERE id = 1").await.unwrap();
    let lsn = lsn.unwrap_or(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for f in cluster.followers() {
        let mut c = f.connect(db).await.expect("connect to a follower");
        loop {
            let applied: Option<i64> = c.query_first("SELECT lsn FROM _chorus.applied WHERE id = 1").await.unwrap();
            if applied.unwrap_or(0) >= lsn {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{} did not apply LSN {lsn} within 60 s", f.name());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let tables: Vec<String> = leader
        .exec("SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1", (db,))
        .await
        .unwrap();
    let snapshot = |mut c: mysql_async::Conn, tables: Vec<String>| async move {
        let mut out = Vec::new();
        for t in &tables {
            let rows: Vec<mysql_async::Row> = c.query(format!("SELECT * FROM `{t}`")).await.unwrap();
            // Every value in full (a Value's Debug shows 8 bytes of a string).
            let mut rows: Vec<String> = rows
                .into_iter()
                .map(|r| r.unwrap().iter().map(|v| v.as_sql(false)).collect::<Vec<_>>().join(", "))
                .collect();
            rows.sort();
            out.push((t.clone(), rows));
        }
        out
    };
    let want = snapshot(leader, tables.clone()).await;
    for f in cluster.followers() {
        let got = snapshot(f.connect(db).await.unwrap(), tables.clone()).await;
        for ((t, w), (_, g)) in want.iter().zip(&got) {
            if w != g {
                let only = |a: &[String], b: &[String]| -> Vec<String> {
                    a.iter().filter(|r| b.binary_search(r).is_err()).take(10).cloned().collect()
                };
                panic!(
                    "table {db}.{t} differs on {} ({} rows on the leader, {} there)\n  only on the leader: \
                     {:#?}\n  only on {}: {:#?}",
                    f.name(),
                    w.len(),
                    g.len(),
                    only(w, g),
                    f.name(),
                    only(g, w)
                );
            }
        }
    }
}
