//! chorus in-process for a test: its own thread and tokio runtime, a free port,
//! stopped when the handle drops.
//!
//! Its own runtime, not the test's: a test may block (psql, pgbench, a node
//! restart) without starving the proxy, and each `#[tokio::test]` runtime dies
//! with its test while chorus may be shared.

use chorus::config::Config;
use chorus::context::Context;
use chorus::localcluster::{PgCluster, url_encode};
use chorus::server::Server;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// The user tests log in to chorus as (SCRAM-SHA-256); it also exists, as a
/// superuser, on every node of the harness's clusters.
pub const CHORUS_USER: &str = "chorus_test";
pub const CHORUS_PASSWORD: &str = "chorus_test_pw";

/// A running chorus. Dropping it shuts chorus down (waiting up to 10 s).
pub struct Chorus {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    config: Config,
    ctx: Arc<Context>,
    running: Running,
}

/// The configuration [`start_chorus`] uses: every node of `cluster`, listening on
/// a free loopback port, user [`CHORUS_USER`]. A read waits up to 10 s (not
/// 100 ms) for a follower that has applied what its session needs: on a
/// busy test machine a follower may take longer than the default, and a test
/// that checks where a read ran must not depend on how loaded the machine is.
pub fn chorus_config(cluster: &PgCluster) -> Config {
    let toml = cluster.chorus_config_toml("127.0.0.1:0".parse().expect("valid address"), CHORUS_USER, CHORUS_PASSWORD);
    let mut config = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("generated config rejected: {e}\n{toml}"));
    config.reads.wait = Some(Duration::from_secs(10));
    config
}

/// chorus in front of every node of `cluster`, with the default configuration.
pub fn start_chorus(cluster: &PgCluster) -> Chorus {
    start_chorus_with(cluster, |_| {})
}

/// chorus in front of `cluster`, after `tweak` adjusted the configuration
/// (e.g. `|c| c.health.interval = Duration::from_millis(100)`).
pub fn start_chorus_with(cluster: &PgCluster, tweak: impl FnOnce(&mut Config)) -> Chorus {
    let mut config = chorus_config(cluster);
    tweak(&mut config);
    let (running, bound) = Running::start(config.clone());
    let addr = bound.postgres.expect("a PostgreSQL listener");
    config.listen.postgres = Some(addr);
    let ctx = bound.context.expect("a PostgreSQL cluster");
    Chorus { addr, metrics_addr: bound.metrics, config, ctx, running }
}

/// What a started chorus bound.
pub(crate) struct Bound {
    pub postgres: Option<SocketAddr>,
    pub mysql: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub context: Option<Arc<Context>>,
    pub mysql_context: Option<Arc<chorus::context::MysqlContext>>,
}

/// A chorus server running on a thread and runtime of its own.
pub(crate) struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    finished: mpsc::Receiver<Result<(), String>>,
}

impl Running {
    /// Bind and serve `config`; panics when chorus does not start.
    pub fn start(config: Config) -> (Running, Bound) {
        crate::watch_chorus_panics();
        crate::init_logging_from_env();
        let (addr_tx, addr_rx) = mpsc::channel();
        let (finished_tx, finished) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("chorus".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("chorus-worker")
                    .enable_all()
                    .build()
                    .expect("cannot build chorus's runtime");
                let result = rt.block_on(async move {
                    let server = match Server::bind(config).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e.to_string()));
                            return Ok(());
                        }
                    };
                    let _ = addr_tx.send(Ok(Bound {
                        postgres: server.local_addr(),
                        mysql: server.mysql_addr(),
                        metrics: server.metrics_addr(),
                        context: server.context(),
                        mysql_context: server.mysql_context(),
                    }));
                    server
                        .run(async move {
                            let _ = stop_rx.await;
                        })
                        .await
                        .map_err(|e| e.to_string())
                });
                rt.shutdown_timeout(Duration::from_secs(2));
                let _ = finished_tx.send(result);
            })
            .expect("cannot spawn chorus's thread");
        let bound = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => panic!("chorus did not start: {e}"),
            Err(_) => panic!("chorus did not start within 30 s"),
        };
        (Running { stop: Some(stop), finished }, bound)
    }

    /// Stop chorus and report how its server loop ended (once; later calls
    /// report success).
    pub fn stop_and_wait(&mut self) -> Result<(), String> {
        let Some(stop) = self.stop.take() else { return Ok(()) };
        let _ = stop.send(());
        match self.finished.recv_timeout(Duration::from_secs(10)) {
            Ok(result) => result,
            Err(_) => Err("chorus did not shut down within 10 s".to_string()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let result = self.stop_and_wait();
        if let Err(e) = result
            && !std::thread::panicking()
        {
            panic!("chorus: {e}");
        }
    }
}

impl Chorus {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Prometheus endpoint's address (set `metrics.listen` to serve one).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// `GET /metrics`: the text Prometheus would scrape.
    pub async fn scrape(&self) -> String {
        crate::metrics::scrape(self.metrics_addr.expect("start chorus with metrics.listen set")).await
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The configuration chorus runs with (listen address filled in).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// chorus's shared state: topology (health, divergence), replication
    /// progress. Read it; do not spawn from it (chorus runs on its own runtime).
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// URL of database `db` through chorus, as [`CHORUS_USER`].
    pub fn url(&self, db: &str) -> String {
        self.url_as(CHORUS_USER, CHORUS_PASSWORD, db)
    }

    /// URL of database `db` through chorus with other credentials (auth tests).
    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{}:{}@{}/{}", url_encode(user), url_encode(password), self.addr, url_encode(db))
    }

    /// A tokio-postgres connection to `db` through chorus (panics on failure).
    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        crate::connect(&self.url(db)).await
    }

    /// Wait until every follower has applied everything `db`'s leader has
    /// committed so far (as this chorus sees it), for up to 60 s: then every
    /// follower qualifies for any session's reads.
    pub async fn wait_caught_up(&self, db: &str) {
        let all: Vec<usize> = (0..self.ctx.replication.state().followers().len()).collect();
        self.wait_caught_up_on(db, &all).await
    }

    /// [`Self::wait_caught_up`] for some followers only (positions in the
    /// configuration's follower order: 0 is the first follower).
    pub async fn wait_caught_up_on(&self, db: &str, which: &[usize]) {
        let leader = self.ctx.config.leader().clone();
        let direct = crate::connect(&format!(
            "postgres://{}:{}@{}:{}/{}",
            url_encode(&leader.user),
            url_encode(leader.password.as_deref().unwrap_or("")),
            leader.host,
            leader.port,
            url_encode(db)
        ))
        .await;
        let lsn: i64 = direct.query_one("SELECT lsn FROM _chorus.lsn", &[]).await.unwrap().get(0);
        let state = self.ctx.replication.state();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let nodes: Vec<usize> = which.iter().map(|&i| state.followers()[i]).collect();
        while !nodes.iter().all(|&f| state.applied(db, f).is_some_and(|a| a >= lsn)) {
            assert!(std::time::Instant::now() < deadline, "the followers did not apply LSN {lsn} within 60 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop chorus and report how its server loop ended.
    pub fn shutdown(mut self) -> Result<(), String> {
        self.running.stop_and_wait()
    }
}
