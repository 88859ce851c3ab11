//! `chorus demo`: a leader, N followers and chorus in front of them, on this
//! machine, in one command; `DIR/demo.env` tells scripts how to reach them.

use crate::config::{Config, ConfigError};
use crate::localcluster::{ClusterError, ClusterOptions, PgCluster, url_encode};
use crate::server::{Server, ServerError};
use std::future::Future;
use std::path::{Path, PathBuf};

/// The database created on the leader and named in `CHORUS_PG_URL`; chorus
/// creates it on the followers, which start empty.
pub const DEMO_DATABASE: &str = "chorus_demo";
/// The user clients log in to chorus as (also created on every node, so the same
/// credentials work directly against a server).
pub const DEMO_USER: &str = "chorus";
pub const DEMO_PASSWORD: &str = "chorus";
/// Where the demo keeps its servers unless told otherwise: outside /tmp (which
/// may be cleaned under a running server) and reachable by the `postgres` user.
pub const DEFAULT_DIR: &str = "/var/tmp/chorus-demo";

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub followers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("generated configuration rejected: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot prepare the demo database for replication: {0}")]
    Replication(#[from] crate::replication::ReplicationError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("a demo (pid {pid}) is already running in {}; stop it first (Ctrl-C or `kill {pid}`)", dir.display())]
    AlreadyRunning { dir: PathBuf, pid: i32 },
}

/// What `demo.env` says, in the same order.
#[derive(Debug, Clone)]
pub struct DemoEnv {
    pub chorus_pg_url: String,
    pub leader_pg_url: String,
    pub follower_pg_urls: Vec<String>,
    pub chorus_config: PathBuf,
}

impl DemoEnv {
    /// Shell syntax, one `KEY=value` per line; URLs are percent-encoded so need no
    /// quoting, the follower list is double-quoted, the path quoted if it must be.
    pub fn to_shell(&self) -> String {
        format!(
            "CHORUS_PG_URL={}\nLEADER_PG_URL={}\nFOLLOWER_PG_URLS=\"{}\"\nCHORUS_CONFIG={}\n",
            self.chorus_pg_url,
            self.leader_pg_url,
            self.follower_pg_urls.join(" "),
            shell_word(&self.chorus_config.display().to_string())
        )
    }
}

/// `s` as one shell word: bare when it is made of safe characters, else single-quoted.
fn shell_word(s: &str) -> String {
    let safe = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:@%=,".contains(c));
    if safe { s.to_string() } else { format!("'{}'", s.replace('\'', "'\\''")) }
}

/// Start everything, write `DIR/demo.env` once ready, serve until `shutdown`
/// completes, then stop chorus and every server (and remove `demo.env`).
pub async fn run(opts: DemoOptions, shutdown: impl Future<Output = ()> + Send) -> Result<(), DemoError> {
    let dir = std::path::absolute(&opts.dir).map_err(|e| io(&format!("bad --dir {}", opts.dir.display()), e))?;
    let pid_file = dir.join("demo.pid");
    check_not_running(&dir, &pid_file)?;
    // A demo.env left by a killed demo must not make a waiting script connect to
    // servers that are gone: it reappears only once everything is ready again.
    let _ = std::fs::remove_file(dir.join("demo.env"));

    tracing::info!(dir = %dir.display(), followers = opts.followers, "starting PostgreSQL servers");
    let cluster_dir = dir.clone();
    let followers = opts.followers;
    let cluster = tokio::task::spawn_blocking(move || {
        PgCluster::start_with(&cluster_dir, ClusterOptions { followers, ..ClusterOptions::default() })
    })
    .await
    .expect("cluster start panicked")?;
    for n in cluster.nodes() {
        tracing::info!(node = n.name(), port = n.port(), log = %n.log_file().display(), "server ready");
    }
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(|e| io("cannot write demo.pid", e))?;

    let result = serve(&dir, &cluster, shutdown).await;

    let _ = std::fs::remove_file(dir.join("demo.env"));
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("stopping PostgreSQL servers");
    tokio::task::spawn_blocking(move || drop(cluster)).await.expect("cluster stop panicked");
    result
}

async fn serve(dir: &Path, cluster: &PgCluster, shutdown: impl Future<Output = ()> + Send) -> Result<(), DemoError> {
    cluster.create_role(DEMO_USER, DEMO_PASSWORD, true).await?;
    // Only on the leader: followers start with the standard databases and get
    // everything else through chorus.
    let leader = cluster.leader();
    let sql = format!("CREATE DATABASE {}", crate::sql::quote::quote_ident(DEMO_DATABASE));
    leader
        .connect("postgres")
        .await?
        .batch_execute(&sql)
        .await
        .map_err(|source| ClusterError::Sql { node: leader.name().to_string(), source })?;

    // Bind first (port 0: any free port), then write the config with the real address.
    let any_port = "127.0.0.1:0".parse().expect("valid address");
    let mut config = Config::from_toml_str(&cluster.chorus_config_toml(any_port, DEMO_USER, DEMO_PASSWORD))?;
    config.metrics.listen = Some(any_port);
    // The database (and chorus's bookkeeping in it) on every follower before
    // demo.env announces their URLs.
    crate::replication::ensure_database(&config, DEMO_DATABASE).await?;
    let server = Server::bind(config).await?;
    let addr = server.local_addr();
    let metrics = server.metrics_addr().expect("the demo serves metrics");
    let config_path = dir.join("chorus.toml");
    let text =
        format!("{}\n[metrics]\nlisten = \"{metrics}\"\n", cluster.chorus_config_toml(addr, DEMO_USER, DEMO_PASSWORD));
    write_atomically(&config_path, &text)?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut serving = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));

    let env = DemoEnv {
        chorus_pg_url: format!(
            "postgres://{}:{}@{addr}/{DEMO_DATABASE}",
            url_encode(DEMO_USER),
            url_encode(DEMO_PASSWORD)
        ),
        leader_pg_url: cluster.leader().url_for_db(DEMO_DATABASE),
        follower_pg_urls: cluster.followers().iter().map(|n| n.url_for_db(DEMO_DATABASE)).collect(),
        chorus_config: config_path.clone(),
    };
    let env_path = dir.join("demo.env");
    write_atomically(&env_path, &env.to_shell())?;
    print_banner(&env, &env_path, cluster, metrics);

    let outcome = tokio::select! {
        _ = shutdown => None,
        res = &mut serving => Some(res),
    };
    match outcome {
        None => {
            tracing::info!("shutting down chorus");
            let _ = stop_tx.send(());
            serving.await.expect("chorus server task panicked")?;
            Ok(())
        }
        Some(res) => {
            res.expect("chorus server task panicked")?;
            Ok(())
        }
    }
}

fn print_banner(env: &DemoEnv, env_path: &Path, cluster: &PgCluster, metrics: std::net::SocketAddr) {
    println!();
    println!("chorus is ready: 1 leader + {} follower(s) behind it.", cluster.followers().len());
    println!();
    println!("  through chorus:  psql \"{}\"", env.chorus_pg_url);
    println!("  leader directly: psql \"{}\"", env.leader_pg_url);
    for (n, url) in cluster.followers().iter().zip(&env.follower_pg_urls) {
        println!("  {:<16} psql \"{url}\"", format!("{}:", n.name()));
    }
    println!();
    println!("  config: {}", env.chorus_config.display());
    println!("  metrics: http://{metrics}/metrics");
    println!("  nodes and lag: psql \"{}\" -c 'SHOW chorus.status'", env.chorus_pg_url);
    println!("  server logs: {}/*/postgres.log", cluster.dir().display());
    println!("  from a script: source {} && psql \"$CHORUS_PG_URL\"", env_path.display());
    println!();
    println!("Press Ctrl-C to stop chorus and the servers.");
}

/// Refuse to wipe the servers of a demo that is still running.
fn check_not_running(dir: &Path, pid_file: &Path) -> Result<(), DemoError> {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return Ok(());
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Ok(());
    };
    let alive = pid as u32 != std::process::id() && Path::new(&format!("/proc/{pid}")).exists();
    let is_chorus = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("chorus"))
        .unwrap_or(false);
    if alive && is_chorus {
        return Err(DemoError::AlreadyRunning { dir: dir.to_path_buf(), pid });
    }
    Ok(())
}

/// Readers (scripts polling for `demo.env`) never see a half-written file.
fn write_atomically(path: &Path, text: &str) -> Result<(), DemoError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| io(&format!("cannot write {}", path.display()), e))
}

fn io(context: &str, source: std::io::Error) -> DemoError {
    DemoError::Io { context: context.to_string(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_env_is_shell_syntax_in_the_documented_order() {
        let env = DemoEnv {
            chorus_pg_url: "postgres://chorus:chorus@127.0.0.1:7000/chorus_demo".into(),
            leader_pg_url: "postgres://postgres:pw@127.0.0.1:7001/chorus_demo".into(),
            follower_pg_urls: vec![
                "postgres://postgres:pw@127.0.0.1:7002/chorus_demo".into(),
                "postgres://postgres:pw@127.0.0.1:7003/chorus_demo".into(),
            ],
            chorus_config: PathBuf::from("/var/tmp/chorus-demo/chorus.toml"),
        };
        assert_eq!(
            env.to_shell(),
            "CHORUS_PG_URL=postgres://chorus:chorus@127.0.0.1:7000/chorus_demo\n\
             LEADER_PG_URL=postgres://postgres:pw@127.0.0.1:7001/chorus_demo\n\
             FOLLOWER_PG_URLS=\"postgres://postgres:pw@127.0.0.1:7002/chorus_demo postgres://postgres:pw@127.0.0.1:7003/chorus_demo\"\n\
             CHORUS_CONFIG=/var/tmp/chorus-demo/chorus.toml\n"
        );
    }

    #[test]
    fn odd_paths_are_quoted() {
        assert_eq!(shell_word("/var/tmp/x.toml"), "/var/tmp/x.toml");
        assert_eq!(shell_word("/a b/it's"), r"'/a b/it'\''s'");
    }
}
