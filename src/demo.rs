//! `chorus demo`: a leader, N followers and chorus in front of them, on this
//! machine, in one command; `DIR/demo.env` tells scripts how to reach them.
//! PostgreSQL by default; MariaDB with `--mysql` (alone, or with `--postgres`
//! too: then one chorus serves both, each on its own port).

use crate::config::{Config, ConfigError};
use crate::localcluster::{ClusterError, ClusterOptions, MariaCluster, MariaOptions, PgCluster, url_encode};
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
    /// Start PostgreSQL servers.
    pub postgres: bool,
    /// Start MariaDB servers.
    pub mysql: bool,
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

/// How to reach one dialect's servers: through chorus, and each directly.
#[derive(Debug, Clone)]
pub struct DemoUrls {
    pub chorus: String,
    pub leader: String,
    pub followers: Vec<String>,
}

/// What `demo.env` says, in the same order.
#[derive(Debug, Clone)]
pub struct DemoEnv {
    pub pg: Option<DemoUrls>,
    pub mysql: Option<DemoUrls>,
    pub chorus_config: PathBuf,
}

impl DemoEnv {
    /// Shell syntax, one `KEY=value` per line; URLs are percent-encoded so need no
    /// quoting, the follower lists are double-quoted, the path quoted if it must be.
    pub fn to_shell(&self) -> String {
        let mut out = String::new();
        for (urls, tag) in [(&self.pg, "PG"), (&self.mysql, "MYSQL")] {
            if let Some(u) = urls {
                out.push_str(&format!(
                    "CHORUS_{tag}_URL={}\nLEADER_{tag}_URL={}\nFOLLOWER_{tag}_URLS=\"{}\"\n",
                    u.chorus,
                    u.leader,
                    u.followers.join(" ")
                ));
            }
        }
        out.push_str(&format!("CHORUS_CONFIG={}\n", shell_word(&self.chorus_config.display().to_string())));
        out
    }
}

/// The demo's servers, whichever were asked for.
struct Clusters {
    pg: Option<PgCluster>,
    mysql: Option<MariaCluster>,
}

/// MariaDB's nodes are named with this prefix when both dialects run, so
/// every node name in the configuration is unique.
const MYSQL_PREFIX: &str = "mariadb-";

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

    std::fs::create_dir_all(&dir).map_err(|e| io(&format!("cannot create {}", dir.display()), e))?;
    // Each cluster in a directory of its own (their nodes have the same names).
    let followers = opts.followers;
    let pg = match opts.postgres || !opts.mysql {
        true => {
            let cluster_dir = dir.join("postgres");
            tracing::info!(dir = %cluster_dir.display(), followers, "starting PostgreSQL servers");
            let cluster = tokio::task::spawn_blocking(move || {
                PgCluster::start_with(&cluster_dir, ClusterOptions { followers, ..ClusterOptions::default() })
            });
            Some(cluster)
        }
        false => None,
    };
    let mysql = match opts.mysql {
        true => {
            let cluster_dir = dir.join("mariadb");
            tracing::info!(dir = %cluster_dir.display(), followers, "starting MariaDB servers");
            Some(tokio::task::spawn_blocking(move || {
                MariaCluster::start_with(&cluster_dir, MariaOptions { followers, ..MariaOptions::default() })
            }))
        }
        false => None,
    };
    let pg = match pg {
        Some(h) => Some(h.await.expect("cluster start panicked")),
        None => None,
    };
    let mysql = match mysql {
        Some(h) => Some(h.await.expect("cluster start panicked")),
        None => None,
    };
    let clusters = Clusters { pg: pg.transpose()?, mysql: mysql.transpose()? };
    for (name, port, log) in
        clusters.pg.iter().flat_map(|c| c.nodes().iter().map(|n| (n.name(), n.port(), n.log_file())))
    {
        tracing::info!(node = name, port, log = %log.display(), "PostgreSQL server ready");
    }
    for (name, port, log) in
        clusters.mysql.iter().flat_map(|c| c.nodes().iter().map(|n| (n.name(), n.port(), n.log_file())))
    {
        tracing::info!(node = name, port, log = %log.display(), "MariaDB server ready");
    }
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(|e| io("cannot write demo.pid", e))?;

    let result = serve(&dir, &clusters, shutdown).await;

    let _ = std::fs::remove_file(dir.join("demo.env"));
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("stopping the servers");
    tokio::task::spawn_blocking(move || drop(clusters)).await.expect("cluster stop panicked");
    result
}

/// Users and the demo database on the servers, before chorus starts.
async fn prepare(clusters: &Clusters) -> Result<(), DemoError> {
    if let Some(cluster) = &clusters.pg {
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
    }
    if let Some(cluster) = &clusters.mysql {
        cluster.create_user(DEMO_USER, DEMO_PASSWORD, "mysql_native_password").await?;
        // On every node, empty: chorus replicates everything written into it
        // (MySQL's log is per server, so the database itself must exist).
        cluster.create_database(DEMO_DATABASE).await?;
    }
    Ok(())
}

/// chorus's configuration for the demo's servers, listening on `pg` and `mysql`.
fn config_text(clusters: &Clusters, pg: std::net::SocketAddr, mysql: std::net::SocketAddr) -> String {
    let mut out =
        "# chorus configuration for `chorus demo` (generated; see README.md for every key)\n\n[listen]\n".to_string();
    if clusters.pg.is_some() {
        out.push_str(&format!("postgres = \"{pg}\"\n"));
    }
    if clusters.mysql.is_some() {
        out.push_str(&format!("mysql = \"{mysql}\"\n"));
    }
    if let Some(c) = &clusters.pg {
        out.push_str(&c.nodes_toml(""));
    }
    if let Some(c) = &clusters.mysql {
        out.push_str(&c.nodes_toml(if clusters.pg.is_some() { MYSQL_PREFIX } else { "" }));
    }
    out.push_str(&format!("\n[[users]]\nname = \"{DEMO_USER}\"\npassword = \"{DEMO_PASSWORD}\"\n"));
    out
}

async fn serve(dir: &Path, clusters: &Clusters, shutdown: impl Future<Output = ()> + Send) -> Result<(), DemoError> {
    prepare(clusters).await?;
    // Bind first (port 0: any free port), then write the config with the real addresses.
    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().expect("valid address");
    let mut config = Config::from_toml_str(&config_text(clusters, any_port, any_port))?;
    config.metrics.listen = Some(any_port);
    if clusters.pg.is_some() {
        // The database (and chorus's bookkeeping in it) on every follower before
        // demo.env announces their URLs.
        crate::replication::ensure_database(&config.for_dialect(crate::config::Dialect::Postgres), DEMO_DATABASE)
            .await?;
    }
    let server = Server::bind(config).await?;
    let (pg_addr, mysql_addr) = (server.local_addr(), server.mysql_addr());
    let metrics = server.metrics_addr();
    let config_path = dir.join("chorus.toml");
    let mut text = config_text(clusters, pg_addr.unwrap_or(any_port), mysql_addr.unwrap_or(any_port));
    if let Some(m) = metrics {
        text.push_str(&format!("\n[metrics]\nlisten = \"{m}\"\n"));
    }
    write_atomically(&config_path, &text)?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut serving = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));

    let credentials = format!("{}:{}", url_encode(DEMO_USER), url_encode(DEMO_PASSWORD));
    let env = DemoEnv {
        pg: clusters.pg.as_ref().zip(pg_addr).map(|(c, addr)| DemoUrls {
            chorus: format!("postgres://{credentials}@{addr}/{DEMO_DATABASE}"),
            leader: c.leader().url_for_db(DEMO_DATABASE),
            followers: c.followers().iter().map(|n| n.url_for_db(DEMO_DATABASE)).collect(),
        }),
        mysql: clusters.mysql.as_ref().zip(mysql_addr).map(|(c, addr)| DemoUrls {
            chorus: format!("mysql://{credentials}@{addr}/{DEMO_DATABASE}"),
            leader: c.leader().url_for_db(DEMO_DATABASE),
            followers: c.followers().iter().map(|n| n.url_for_db(DEMO_DATABASE)).collect(),
        }),
        chorus_config: config_path.clone(),
    };
    let env_path = dir.join("demo.env");
    write_atomically(&env_path, &env.to_shell())?;
    print_banner(&env, &env_path, clusters, metrics);

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

fn print_banner(env: &DemoEnv, env_path: &Path, clusters: &Clusters, metrics: Option<std::net::SocketAddr>) {
    println!();
    if let (Some(urls), Some(c)) = (&env.pg, &clusters.pg) {
        println!("chorus is ready for PostgreSQL: 1 leader + {} follower(s) behind it.", c.followers().len());
        println!();
        println!("  through chorus:  psql \"{}\"", urls.chorus);
        println!("  leader directly: psql \"{}\"", urls.leader);
        for (n, url) in c.followers().iter().zip(&urls.followers) {
            println!("  {:<16} psql \"{url}\"", format!("{}:", n.name()));
        }
        println!("  nodes and lag:   psql \"{}\" -c 'SHOW chorus.status'", urls.chorus);
        println!("  server logs: {}/*/postgres.log", c.dir().display());
        println!();
    }
    if let (Some(urls), Some(c)) = (&env.mysql, &clusters.mysql) {
        println!("chorus is ready for MySQL clients: 1 MariaDB leader + {} follower(s).", c.followers().len());
        println!();
        println!("  through chorus:  mariadb {}", cli_args(&urls.chorus));
        println!("  leader directly: mariadb {}", cli_args(&urls.leader));
        println!("  server logs: {}/*/*.log", c.dir().display());
        println!();
    }
    println!("  config: {}", env.chorus_config.display());
    if let Some(m) = metrics {
        println!("  metrics: http://{m}/metrics");
    }
    println!("  from a script: source {}", env_path.display());
    println!();
    println!("Press Ctrl-C to stop chorus and the servers.");
}

/// `mysql://user:pw@host:port/db` as mariadb command-line arguments.
fn cli_args(url: &str) -> String {
    let rest = url.trim_start_matches("mysql://");
    let (creds, rest) = rest.split_once('@').unwrap_or(("", rest));
    let (user, pw) = creds.split_once(':').unwrap_or((creds, ""));
    let (hostport, db) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "3306"));
    format!("-h {host} -P {port} -u {user} -p{pw} {db}")
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
        let mut env = DemoEnv {
            pg: Some(DemoUrls {
                chorus: "postgres://chorus:chorus@127.0.0.1:7000/chorus_demo".into(),
                leader: "postgres://postgres:pw@127.0.0.1:7001/chorus_demo".into(),
                followers: vec![
                    "postgres://postgres:pw@127.0.0.1:7002/chorus_demo".into(),
                    "postgres://postgres:pw@127.0.0.1:7003/chorus_demo".into(),
                ],
            }),
            mysql: None,
            chorus_config: PathBuf::from("/var/tmp/chorus-demo/chorus.toml"),
        };
        assert_eq!(
            env.to_shell(),
            "CHORUS_PG_URL=postgres://chorus:chorus@127.0.0.1:7000/chorus_demo\n\
             LEADER_PG_URL=postgres://postgres:pw@127.0.0.1:7001/chorus_demo\n\
             FOLLOWER_PG_URLS=\"postgres://postgres:pw@127.0.0.1:7002/chorus_demo postgres://postgres:pw@127.0.0.1:7003/chorus_demo\"\n\
             CHORUS_CONFIG=/var/tmp/chorus-demo/chorus.toml\n"
        );
        env.mysql = Some(DemoUrls {
            chorus: "mysql://chorus:chorus@127.0.0.1:7010/chorus_demo".into(),
            leader: "mysql://root:pw@127.0.0.1:7011/chorus_demo".into(),
            followers: vec!["mysql://root:pw@127.0.0.1:7012/chorus_demo".into()],
        });
        env.pg = None;
        assert_eq!(
            env.to_shell(),
            "CHORUS_MYSQL_URL=mysql://chorus:chorus@127.0.0.1:7010/chorus_demo\n\
             LEADER_MYSQL_URL=mysql://root:pw@127.0.0.1:7011/chorus_demo\n\
             FOLLOWER_MYSQL_URLS=\"mysql://root:pw@127.0.0.1:7012/chorus_demo\"\n\
             CHORUS_CONFIG=/var/tmp/chorus-demo/chorus.toml\n"
        );
        assert_eq!(
            cli_args("mysql://root:pw@127.0.0.1:7011/chorus_demo"),
            "-h 127.0.0.1 -P 7011 -u root -ppw chorus_demo"
        );
    }

    #[test]
    fn odd_paths_are_quoted() {
        assert_eq!(shell_word("/var/tmp/x.toml"), "/var/tmp/x.toml");
        assert_eq!(shell_word("/a b/it's"), r"'/a b/it'\''s'");
    }
}
