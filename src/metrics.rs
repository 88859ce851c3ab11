//! What chorus counts, and the Prometheus endpoint that shows it
//! (`[metrics] listen`, `GET /metrics`).
//!
//! Hot-path counters (requests per route and node) are registered once and
//! kept as handles; rare events (fallbacks, waits, errors) use the macros.
//! Replication progress (applied LSN, lag) is read from
//! [`crate::replication::ReplicationState`] at each scrape, so it is exact
//! at the moment Prometheus asks.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `chorus_requests_total` | counter | `node`, `route` (`leader`, `follower`, `fallback`, `transaction`) |
//! | `chorus_read_fallbacks_total` | counter | `reason` |
//! | `chorus_read_waits_total` | counter | `outcome` (`caught-up`, `timed-out`) |
//! | `chorus_read_wait_seconds` | histogram | |
//! | `chorus_client_sessions` | gauge | |
//! | `chorus_errors_total` | counter | `kind` (`refused`, `server`, `connection`, `divergence`) |
//! | `chorus_node_up` | gauge | `node`, `role` |
//! | `chorus_leader_lsn` | gauge | `database` |
//! | `chorus_follower_applied_lsn` | gauge | `node`, `database` |
//! | `chorus_applied_transactions_total` | counter | `node`, `database` (rate() is apply throughput) |
//! | `chorus_follower_lag_transactions` | gauge | `node`, `database` |
//! | `chorus_follower_lag_seconds` | gauge | `node`, `database` |
//! | `chorus_follower_diverged` | gauge | `node` |
//!
//! One endpoint serves both dialects: node names are unique across the
//! configuration, and MySQL's one log shows as `database="*"`.

use crate::consistency::Miss;
use crate::replication::ReplicationState;
use crate::topology::Topology;
use metrics::{Counter, counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where a request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// It needs the leader (a write, DDL, a volatile function ...).
    Leader,
    /// A read a follower served.
    Follower,
    /// A read no follower could serve under its policy.
    Fallback,
    /// Inside a transaction (or pipeline) that lives on one node.
    Transaction,
}

const ROUTES: [Route; 4] = [Route::Leader, Route::Follower, Route::Fallback, Route::Transaction];

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Leader => "leader",
            Route::Follower => "follower",
            Route::Fallback => "fallback",
            Route::Transaction => "transaction",
        }
    }
}

/// Counter handles registered once: per node and route, per fallback reason.
pub struct Metrics {
    requests: Vec<[Counter; 4]>,
    fallbacks: [Counter; 3],
}

impl Metrics {
    pub fn new(topology: &Topology) -> Metrics {
        let requests = topology
            .nodes()
            .iter()
            .map(|n| {
                ROUTES.map(|r| counter!("chorus_requests_total", "node" => n.name.to_string(), "route" => r.label()))
            })
            .collect();
        let fallbacks = MISSES.map(|m| counter!("chorus_read_fallbacks_total", "reason" => m.as_str()));
        Metrics { requests, fallbacks }
    }

    pub fn request(&self, node: usize, route: Route) {
        self.requests[node][route as usize].increment(1);
    }

    /// A read went to the leader because no follower qualified.
    pub fn read_fallback(&self, why: Miss) {
        self.fallbacks[MISSES.iter().position(|m| *m == why).unwrap_or(0)].increment(1);
    }
}

const MISSES: [Miss; 3] = [Miss::Unreadable, Miss::Behind, Miss::TooStale];

/// A read waited for a follower to catch up.
pub fn read_wait(waited: Duration, caught_up: bool) {
    let outcome = if caught_up { "caught-up" } else { "timed-out" };
    counter!("chorus_read_waits_total", "outcome" => outcome).increment(1);
    histogram!("chorus_read_wait_seconds").record(waited.as_secs_f64());
}

pub fn session_started() {
    gauge!("chorus_client_sessions").increment(1.0);
}

pub fn session_ended() {
    gauge!("chorus_client_sessions").decrement(1.0);
}

/// Kinds of errors: `refused` (chorus's own answer), `server` (a server's
/// error relayed), `connection` (a server connection lost), `divergence`.
pub fn error(kind: &'static str) {
    counter!("chorus_errors_total", "kind" => kind).increment(1);
}

/// The process-wide recorder (installed on first use; a test process runs
/// several chorus instances, which share it).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("chorus_read_wait_seconds".into()),
                &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0],
            )
            .expect("buckets are not empty");
        match builder.install_recorder() {
            Ok(h) => h,
            // Another recorder is installed (an embedding program's): render ours anyway.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// Make sure metrics are recorded from now on (before the first counter).
pub fn init() {
    handle();
}

/// What a scrape reads for one dialect: its nodes' health and its
/// replication progress (None: nothing replicates there).
#[derive(Clone)]
pub struct Source {
    pub topology: Arc<Topology>,
    pub replication: Option<Arc<ReplicationState>>,
}

/// Replication and health gauges, as of now.
fn refresh(source: &Source) {
    let topo = &source.topology;
    for n in topo.nodes() {
        let role = if n.index == topo.leader() { "leader" } else { "follower" };
        gauge!("chorus_node_up", "node" => n.name.to_string(), "role" => role).set(if n.is_healthy() {
            1.0
        } else {
            0.0
        });
        if role == "follower" {
            gauge!("chorus_follower_diverged", "node" => n.name.to_string()).set(if n.is_diverged() {
                1.0
            } else {
                0.0
            });
        }
    }
    let Some(state) = &source.replication else { return };
    for db in state.databases() {
        let p = state.progress(&db);
        gauge!("chorus_leader_lsn", "database" => db.clone()).set(p.leader_committed() as f64);
        for v in p.views(topo, true) {
            let node = topo.node(v.node).name.to_string();
            let labels = [("node", node), ("database", db.clone())];
            if let Some(a) = v.applied {
                gauge!("chorus_follower_applied_lsn", &labels).set(a as f64);
                counter!("chorus_applied_transactions_total", &labels).absolute(a.max(0) as u64);
            }
            gauge!("chorus_follower_lag_transactions", &labels).set(v.lag_txns as f64);
            gauge!("chorus_follower_lag_seconds", &labels).set(v.lag.as_secs_f64());
        }
    }
}

/// The text Prometheus scrapes.
pub fn render(sources: &[Source]) -> String {
    sources.iter().for_each(refresh);
    let h = handle();
    h.run_upkeep();
    h.render()
}

/// Serve `GET /metrics` on `addr` until the task is aborted. Anything else
/// gets 404; the listener answers one request per connection.
pub async fn serve(sources: Vec<Source>, listener: tokio::net::TcpListener) {
    let sources = Arc::new(sources);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            // Read the request head (bounded; a slow client gets 5 s).
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await.ok()?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Some(())
            })
            .await;
            if !matches!(read, Ok(Some(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if head.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
                ("200 OK", render(&sources))
            } else {
                ("404 Not Found", "chorus serves GET /metrics\n".to_string())
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Bind the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
