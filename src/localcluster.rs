//! Real PostgreSQL servers on loopback, started from the installed binaries: the
//! local cluster behind `chorus demo` and the integration tests.
//!
//! A [`PgCluster`] is one leader and N followers, each an independent server (no
//! native replication: chorus is the one that keeps followers in step). Starting
//! servers is the slow part on small machines, so `initdb` runs once into a
//! template that is copied for every node, and the nodes start in parallel.
//!
//! Servers never outlive their owner: [`PgCluster`]'s `Drop` stops them, and a
//! [`guardian`] process stops them when the owner dies without running
//! destructors (a test binary's static cluster, SIGKILL, Ctrl-C).
//!
//! [`MariaCluster`] is the same for MariaDB (the MySQL dialect), in [`mariadb`].

pub mod binaries;
pub mod guardian;
pub mod mariadb;
pub mod node;

pub use binaries::{CommandOutput, INSTALL_HINT, PgBinaries, run_with_timeout};
pub use mariadb::{MariaCluster, MariaNode, MariaOptions};
pub use node::PgNode;

use crate::config::Role;
use guardian::Guardian;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;

/// Marks a directory as created by chorus, so re-using it (a second `chorus demo`)
/// may wipe old node directories, and so a mistyped `--dir` never wipes anything else.
const MARKER: &str = ".chorus-cluster";

/// Settings for every node: fast and disposable (no fsync: the data is rebuilt on
/// every start), loopback only, logs to stderr (redirected to the node's log file).
///
/// `synchronous_commit` stays on, deliberately: with fsync off a commit costs one
/// write() into the page cache, while `off` would let a SIGKILLed server (a fault
/// test's [`PgNode::kill`]) lose its last ~0.6 s of *committed* transactions,
/// which a real server crash does not. A process crash keeps every commit; only
/// an OS crash could lose data here.
const COMMON_SETTINGS: &str = "
# --- chorus local cluster: disposable servers, tuned for speed, loopback only ---
listen_addresses = '127.0.0.1'
max_connections = 200
fsync = off
full_page_writes = off
logging_collector = off
log_destination = 'stderr'
log_timezone = 'UTC'
timezone = 'UTC'
include_if_exists = 'chorus-node.conf'
";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}; {INSTALL_HINT}")]
    MissingBinaries(String),
    #[error("{0}; {hint}", hint = mariadb::INSTALL_HINT)]
    MissingMariaDb(String),
    #[error(
        "the {user:?} OS user (which runs the servers) cannot write {0}: every parent directory must be \
         traversable by it; use a directory under /var/tmp, or `chmod o+x` the parents",
        user = binaries::SERVER_OS_USER
    )]
    Unreachable(PathBuf),
    #[error("{0} exists, is not empty and was not created by chorus (no {MARKER} file); refusing to use it")]
    NotClusterDir(PathBuf),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{what} failed ({status}):\n{output}")]
    Command { what: String, status: ExitStatus, output: String },
    #[error("server {node}: {problem}\n--- last lines of {} ---\n{log_tail}", log.display())]
    Server { node: String, problem: String, log: PathBuf, log_tail: String },
    #[error("server {node}: {source}")]
    Sql { node: String, source: tokio_postgres::Error },
    #[error("server {node}: {source}")]
    MySql { node: String, source: mysql_async::Error },
}

/// How to build a cluster. `Default` is a leader with 2 followers, superuser
/// `postgres` with a random password, directory kept after drop.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub followers: usize,
    pub superuser: String,
    /// `None`: a random password.
    pub password: Option<String>,
    /// Remove the whole cluster directory once the servers are stopped (tests).
    pub remove_on_drop: bool,
    /// Extra `postgresql.conf` lines for every node, e.g. `("log_statement", "'all'")`.
    pub settings: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            followers: 2,
            superuser: "postgres".to_string(),
            password: None,
            remove_on_drop: false,
            settings: Vec::new(),
        }
    }
}

/// A running leader and its followers, all on 127.0.0.1.
pub struct PgCluster {
    dir: PathBuf,
    bins: PgBinaries,
    nodes: Vec<PgNode>,
    guardian: Mutex<Option<Guardian>>,
}

impl PgCluster {
    /// Start a leader and `followers` followers with data under `dir`.
    pub fn start(dir: impl AsRef<Path>, followers: usize) -> Result<PgCluster, ClusterError> {
        PgCluster::start_with(dir, ClusterOptions { followers, ..ClusterOptions::default() })
    }

    /// Start a cluster as described by `opts`. `dir` is created if missing; if it
    /// holds an earlier cluster, that one's servers are stopped and its nodes wiped.
    pub fn start_with(dir: impl AsRef<Path>, opts: ClusterOptions) -> Result<PgCluster, ClusterError> {
        let bins = PgBinaries::locate()?;
        let dir = absolute(dir.as_ref())?;
        prepare_dir(&dir)?;
        let password = opts.password.clone().unwrap_or_else(random_password);

        let names: Vec<(String, Role)> = std::iter::once(("leader".to_string(), Role::Leader))
            .chain((1..=opts.followers).map(|i| (format!("follower{i}"), Role::Follower)))
            .collect();
        let template = dir.join(".template");
        init_template(&bins, &template, &opts.superuser, &password, &opts.settings)?;
        let ports = free_ports(names.len()).map_err(|source| io("cannot pick free ports", source))?;
        let mut nodes = Vec::new();
        for ((name, role), port) in names.iter().zip(ports) {
            let node_dir = dir.join(name);
            std::fs::create_dir_all(&node_dir).map_err(|e| io(&format!("cannot create {}", node_dir.display()), e))?;
            let mut cp = std::process::Command::new("cp");
            cp.arg("-a").arg(template.join("data")).arg(node_dir.join("data"));
            binaries::run_checked(&mut cp, "copying the template data directory")?;
            binaries::hand_to_server_user(&node_dir)?;
            nodes.push(PgNode::new(name, *role, node_dir, port, &opts.superuser, &password, bins.clone()));
        }
        let _ = std::fs::remove_dir_all(&template);

        let data_dirs: Vec<PathBuf> = nodes.iter().map(|n| n.data_dir().to_path_buf()).collect();
        let guardian = Guardian::spawn(&dir, &data_dirs, opts.remove_on_drop)?;
        let cluster = PgCluster { dir, bins, nodes, guardian: Mutex::new(Some(guardian)) };
        let results: Vec<Result<(), ClusterError>> = std::thread::scope(|s| {
            let handles: Vec<_> = cluster.nodes.iter().map(|n| s.spawn(move || n.start())).collect();
            handles.into_iter().map(|h| h.join().expect("node start thread panicked")).collect()
        });
        // On error, dropping `cluster` stops whatever did start.
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(cluster)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    pub fn leader(&self) -> &PgNode {
        &self.nodes[0]
    }

    pub fn followers(&self) -> &[PgNode] {
        &self.nodes[1..]
    }

    /// Leader first, then the followers in order.
    pub fn nodes(&self) -> &[PgNode] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&PgNode> {
        self.nodes.iter().find(|n| n.name() == name)
    }

    /// The superuser every node shares (chorus connects to the nodes as this user).
    pub fn superuser(&self) -> &str {
        self.leader().superuser()
    }

    pub fn password(&self) -> &str {
        self.leader().password()
    }

    /// Fast-stop every node (in parallel). Nodes can be started again.
    pub fn stop(&self) -> Result<(), ClusterError> {
        let results: Vec<Result<(), ClusterError>> = std::thread::scope(|s| {
            let handles: Vec<_> = self.nodes.iter().map(|n| s.spawn(move || n.stop())).collect();
            handles.into_iter().map(|h| h.join().expect("node stop thread panicked")).collect()
        });
        results.into_iter().collect()
    }

    /// The `[[nodes]]` sections for these nodes, names prefixed with
    /// `prefix` (to tell them from another cluster's in one configuration).
    pub fn nodes_toml(&self, prefix: &str) -> String {
        self.nodes
            .iter()
            .map(|n| {
                node_toml(
                    &format!("{prefix}{}", n.name()),
                    None,
                    n.role(),
                    n.host(),
                    n.port(),
                    n.superuser(),
                    n.password(),
                )
            })
            .collect()
    }

    /// A chorus configuration (TOML) fronting these nodes: chorus listens on
    /// `listen`, accepts `user`/`password` (SCRAM-SHA-256), and connects to every
    /// node as the cluster's superuser.
    pub fn chorus_config_toml(&self, listen: SocketAddr, user: &str, password: &str) -> String {
        let mut out = format!(
            "# chorus configuration for the local cluster in {}\n# (generated; see README.md for every key)\n\n[listen]\npostgres = {}\n",
            self.dir.display(),
            toml_str(&listen.to_string())
        );
        out.push_str(&self.nodes_toml(""));
        out.push_str(&format!(
            "\n[[users]]\nname = {}\npassword = {}\n# auth: the default, SCRAM-SHA-256\n",
            toml_str(user),
            toml_str(password)
        ));
        out
    }

    /// Run `sql` (one or more statements, simple protocol) in database `db` on
    /// every running node, concurrently. Until chorus replicates, this is how
    /// fixtures reach the followers.
    pub async fn execute_on_all(&self, db: &str, sql: &str) -> Result<(), ClusterError> {
        let mut set = tokio::task::JoinSet::new();
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            let (name, cfg, sql) = (n.name().to_string(), n.pg_config(db), sql.to_string());
            set.spawn(async move {
                let client = node::connect(&name, cfg).await?;
                client.batch_execute(&sql).await.map_err(|source| ClusterError::Sql { node: name, source })
            });
        }
        let mut first_error = None;
        while let Some(res) = set.join_next().await {
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// `CREATE DATABASE` on every running node.
    pub async fn create_database(&self, name: &str) -> Result<(), ClusterError> {
        self.execute_on_all("postgres", &format!("CREATE DATABASE {}", quote_ident(name))).await
    }

    /// `DROP DATABASE IF EXISTS ... WITH (FORCE)` on every running node.
    pub async fn drop_database(&self, name: &str) -> Result<(), ClusterError> {
        self.execute_on_all("postgres", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name))).await
    }

    /// Create (or update the password of) a login role on every running node.
    pub async fn create_role(&self, name: &str, password: &str, superuser: bool) -> Result<(), ClusterError> {
        let attrs = if superuser { "LOGIN SUPERUSER" } else { "LOGIN" };
        let (role, pw) = (quote_ident(name), quote_literal(password));
        let sql = format!(
            "DO $chorus$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {lit}) THEN
                 CREATE ROLE {role} {attrs} PASSWORD {pw};
               ELSE
                 ALTER ROLE {role} {attrs} PASSWORD {pw};
               END IF;
             END $chorus$",
            lit = quote_literal(name),
        );
        self.execute_on_all("postgres", &sql).await
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop();
        // Nothing left to stop; the guardian only removes the directory if asked to.
        if let Some(g) = self.guardian.lock().unwrap_or_else(|e| e.into_inner()).take() {
            g.trigger();
        }
    }
}

/// Create `dir` (or re-use a chorus cluster directory: stop leftover servers,
/// remove old nodes), hand it to the server user, and check that user can use it.
fn prepare_dir(dir: &Path) -> Result<(), ClusterError> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty && !dir.join(MARKER).exists() {
            return Err(ClusterError::NotClusterDir(dir.to_path_buf()));
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.join("data").is_dir() || entry.file_name() == ".template" {
                    stop_leftover(&path.join("data"));
                    std::fs::remove_dir_all(&path).map_err(|e| io(&format!("cannot remove {}", path.display()), e))?;
                }
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| io(&format!("cannot create {}", dir.display()), e))?;
    std::fs::write(dir.join(MARKER), "created by chorus; node directories here are wiped on the next start\n")
        .map_err(|e| io(&format!("cannot write to {}", dir.display()), e))?;
    if binaries::running_as_root() {
        let mut chown = std::process::Command::new("chown");
        chown.arg(format!("{0}:{0}", binaries::SERVER_OS_USER)).arg(dir);
        binaries::run_checked(&mut chown, "chown of the cluster directory")?;
    }
    binaries::check_server_user_can_use(dir)
}

/// A server left running in `data_dir` by an owner that died without its guardian
/// (should not happen, but a stale server would hold the port and the files).
fn stop_leftover(data_dir: &Path) {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) else {
        return;
    };
    let is_postgres = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("postgres"))
        .unwrap_or(false);
    if !is_postgres {
        return;
    }
    // SAFETY: kill(2) on one positive pid has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    for _ in 0..500 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `initdb` once into `template/data`, with the common settings appended.
fn init_template(
    bins: &PgBinaries,
    template: &Path,
    superuser: &str,
    password: &str,
    settings: &[(String, String)],
) -> Result<(), ClusterError> {
    std::fs::create_dir_all(template).map_err(|e| io("cannot create the template directory", e))?;
    let pwfile = template.join("pwfile");
    std::fs::write(&pwfile, format!("{password}\n")).map_err(|e| io("cannot write the password file", e))?;
    binaries::hand_to_server_user(template)?;
    let data = template.join("data");
    let mut cmd = binaries::server_command(&bins.tool("initdb"));
    cmd.arg("-D")
        .arg(&data)
        .arg("-U")
        .arg(superuser)
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"])
        .current_dir(template);
    binaries::run_checked(&mut cmd, "initdb")?;
    let _ = std::fs::remove_file(&pwfile);
    let mut conf = COMMON_SETTINGS.to_string();
    for (key, value) in settings {
        conf.push_str(&format!("{key} = {value}\n"));
    }
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .and_then(|mut f| f.write_all(conf.as_bytes()))
        .map_err(|e| io("cannot append to the template's postgresql.conf", e))
}

/// `n` distinct free loopback ports (all held open until every one is chosen).
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

fn absolute(dir: &Path) -> Result<PathBuf, ClusterError> {
    std::path::absolute(dir).map_err(|e| io(&format!("bad directory {}", dir.display()), e))
}

fn io(context: &str, source: std::io::Error) -> ClusterError {
    ClusterError::Io { context: context.to_string(), source }
}

fn random_password() -> String {
    let mut bytes = [0u8; 12];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encode everything but RFC 3986 unreserved characters (URL userinfo/path).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub use crate::sql::quote::{quote_ident, quote_literal};

/// A TOML basic string.
/// One `[[nodes]]` section; `dialect` None leaves the default (postgres).
pub(crate) fn node_toml(
    name: &str,
    dialect: Option<&str>,
    role: Role,
    host: &str,
    port: u16,
    user: &str,
    password: &str,
) -> String {
    let role = match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
    };
    let dialect = dialect.map(|d| format!("dialect = {}\n", toml_str(d))).unwrap_or_default();
    format!(
        "\n[[nodes]]\nname = {}\n{dialect}role = \"{role}\"\nhost = {}\nport = {port}\nuser = {}\npassword = {}\n",
        toml_str(name),
        toml_str(host),
        toml_str(user),
        toml_str(password),
    )
}

pub(crate) fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_urls_and_quotes() {
        assert_eq!(url_encode("a b@c:d/é"), "a%20b%40c%3Ad%2F%C3%A9");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(toml_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }
}
