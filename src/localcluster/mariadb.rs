//! Real MariaDB servers on loopback, started from the installed binaries: the
//! MySQL-dialect twin of [`PgCluster`](super::PgCluster), behind chorus's MySQL
//! frontend in the integration tests and the demo.
//!
//! The same shape and the same promises: one leader and N independent followers
//! (no native replication: chorus keeps followers in step), `mariadb-install-db`
//! once into a template copied for every node, nodes started in parallel, and
//! servers that never outlive their owner ([`MariaCluster`]'s `Drop`, and a
//! guardian process, as [`super::guardian`] explains, for owners that die
//! without running destructors).
//!
//! Root's password is set in the template, by SQL that `mariadb-install-db` runs
//! in bootstrap mode, not on the running servers: no node ever listens with a
//! passwordless root, every copy shares the password, and a restarted node needs
//! no setup. MariaDB runs as root when we are root (`--user=root`), so unlike
//! PostgreSQL nothing is handed to another OS user.

mod guardian;
mod node;

pub use node::MariaNode;

use super::binaries::{self, running_as_root};
use super::{ClusterError, MARKER, absolute, free_ports, io, random_password, toml_str};
use crate::config::Role;
use guardian::Guardian;
use mysql_async::prelude::Queryable;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to tell someone whose machine lacks MariaDB.
pub const INSTALL_HINT: &str = "install the MariaDB server and client: `apt-get install mariadb-server mariadb-client` \
     (Debian/Ubuntu); chorus starts servers of its own, the machine's MariaDB service need not run";

/// InnoDB options for every node, fast and disposable (the data is rebuilt on
/// every start). Also given to `mariadb-install-db`: the redo log's size is fixed
/// when it is created, and a server started with another size rewrites it first.
///
/// `innodb_flush_log_at_trx_commit=2` writes the redo log at every commit but
/// syncs it only once a second: a SIGKILLed server (a fault test's
/// [`MariaNode::kill`]) keeps every committed transaction, as a real server
/// crash does; only an OS crash could lose the last second. Buffered files
/// (`fsync` method, log buffering on) keep commits off the disk's latency, and
/// simulated AIO avoids io_uring/libaio limits shared by every server on the
/// machine (many test clusters start at once).
const STORAGE_OPTIONS: &[&str] = &[
    "--innodb-log-file-size=32M",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-log-file-buffering=ON",
    "--innodb-flush-method=fsync",
    "--innodb-doublewrite=0",
    "--innodb-use-native-aio=0",
    "--innodb-buffer-pool-size=64M",
    "--innodb-buffer-pool-dump-at-shutdown=0",
    "--innodb-buffer-pool-load-at-startup=0",
];

/// Options for the running servers only: loopback only, client-visible
/// defaults that match what applications expect of a MariaDB server.
///
/// `max_connect_errors` is effectively off: every client of these servers
/// comes from 127.0.0.1, and after 100 aborted handshakes (robustness tests,
/// killed clients) MariaDB would block that host, i.e. every test at once.
const SERVER_OPTIONS: &[&str] = &[
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--max-connections=300",
    "--max-connect-errors=4294967295",
    "--character-set-server=utf8mb4",
];

/// A Unix socket path must fit `sun_path` (108 bytes with its NUL); keep a margin.
const MAX_SOCKET_PATH: usize = 100;

/// How to build a cluster. `Default` is a leader with 2 followers, root with a
/// random password, directory kept after drop.
#[derive(Debug, Clone)]
pub struct MariaOptions {
    pub followers: usize,
    /// Root's password on every node; `None`: a random password.
    pub root_password: Option<String>,
    /// Remove the whole cluster directory once the servers are stopped (tests).
    pub remove_on_drop: bool,
    /// Extra `mariadbd` options for every node, e.g. `("general_log", "1")` for
    /// `--general_log=1`. Also used to create the data directory, so options
    /// fixed at creation (`innodb_page_size`, `lower_case_table_names`) work.
    pub settings: Vec<(String, String)>,
}

impl Default for MariaOptions {
    fn default() -> Self {
        MariaOptions { followers: 2, root_password: None, remove_on_drop: false, settings: Vec::new() }
    }
}

/// A running leader and its followers, all on 127.0.0.1.
pub struct MariaCluster {
    dir: PathBuf,
    nodes: Vec<MariaNode>,
    guardian: Mutex<Option<Guardian>>,
}

impl MariaCluster {
    /// Start a leader and `followers` followers with data under `dir`.
    pub fn start(dir: impl AsRef<Path>, followers: usize) -> Result<MariaCluster, ClusterError> {
        MariaCluster::start_with(dir, MariaOptions { followers, ..MariaOptions::default() })
    }

    /// Start a cluster as described by `opts`. `dir` is created if missing; if it
    /// holds an earlier cluster, that one's servers are stopped and its nodes wiped.
    pub fn start_with(dir: impl AsRef<Path>, opts: MariaOptions) -> Result<MariaCluster, ClusterError> {
        let bins = Binaries::locate()?;
        let dir = absolute(dir.as_ref())?;
        prepare_dir(&dir)?;
        let password = opts.root_password.clone().unwrap_or_else(random_password);
        let settings: Vec<String> = opts.settings.iter().map(|(k, v)| format!("--{k}={v}")).collect();

        let names: Vec<(String, Role)> = std::iter::once(("leader".to_string(), Role::Leader))
            .chain((1..=opts.followers).map(|i| (format!("follower{i}"), Role::Follower)))
            .collect();
        let template = dir.join(".template");
        init_template(&bins, &template, &password, &settings)?;
        let ports = free_ports(names.len()).map_err(|source| io("cannot pick free ports", source))?;
        let options: Vec<String> =
            STORAGE_OPTIONS.iter().chain(SERVER_OPTIONS).map(|o| o.to_string()).chain(settings).collect();
        let mut nodes = Vec::new();
        let mut stray_sockets = Vec::new();
        for (i, ((name, role), port)) in names.iter().zip(ports).enumerate() {
            let node_dir = dir.join(name);
            std::fs::create_dir_all(&node_dir).map_err(|e| io(&format!("cannot create {}", node_dir.display()), e))?;
            let mut cp = std::process::Command::new("cp");
            cp.arg("-a").arg(template.join("data")).arg(node_dir.join("data"));
            binaries::run_checked(&mut cp, "copying the template data directory")?;
            let socket = socket_path(&node_dir);
            if !socket.starts_with(&dir) {
                stray_sockets.push(socket.clone());
            }
            let server_id = i as u32 + 1;
            nodes.push(MariaNode::new(
                name,
                *role,
                node_dir,
                socket,
                port,
                server_id,
                &password,
                bins.mariadbd.clone(),
                options.clone(),
            ));
        }
        let _ = std::fs::remove_dir_all(&template);

        let pid_files: Vec<PathBuf> = nodes.iter().map(|n| n.pid_file().to_path_buf()).collect();
        let guardian = Guardian::spawn(&dir, &pid_files, &stray_sockets, opts.remove_on_drop)?;
        let cluster = MariaCluster { dir, nodes, guardian: Mutex::new(Some(guardian)) };
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

    pub fn leader(&self) -> &MariaNode {
        &self.nodes[0]
    }

    pub fn followers(&self) -> &[MariaNode] {
        &self.nodes[1..]
    }

    /// Leader first, then the followers in order.
    pub fn nodes(&self) -> &[MariaNode] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&MariaNode> {
        self.nodes.iter().find(|n| n.name() == name)
    }

    /// `root`: chorus connects to every node as this user.
    pub fn superuser(&self) -> &str {
        self.leader().user()
    }

    /// Root's password, the same on every node.
    pub fn password(&self) -> &str {
        self.leader().password()
    }

    /// Stop every node (in parallel). Nodes can be started again.
    pub fn stop(&self) -> Result<(), ClusterError> {
        let results: Vec<Result<(), ClusterError>> = std::thread::scope(|s| {
            let handles: Vec<_> = self.nodes.iter().map(|n| s.spawn(move || n.stop())).collect();
            handles.into_iter().map(|h| h.join().expect("node stop thread panicked")).collect()
        });
        results.into_iter().collect()
    }

    /// The `[[nodes]]` sections (dialect mysql) for these nodes, names
    /// prefixed with `prefix` (to tell them from another cluster's).
    pub fn nodes_toml(&self, prefix: &str) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let name = format!("{prefix}{}", n.name());
            out.push_str(&super::node_toml(&name, Some("mysql"), n.role(), n.host(), n.port(), n.user(), n.password()));
            out.push_str("admin_database = \"mysql\"\n");
        }
        out
    }

    /// A chorus configuration (TOML) fronting these nodes: chorus listens for
    /// MySQL clients on `listen`, accepts `user`/`password` (the default auth
    /// method), and connects to every node as root.
    pub fn chorus_config_toml(&self, listen: SocketAddr, user: &str, password: &str) -> String {
        let mut out = format!(
            "# chorus configuration for the local MariaDB cluster in {}\n# (generated; see README.md for every key)\n\n[listen]\nmysql = {}\n",
            self.dir.display(),
            toml_str(&listen.to_string())
        );
        out.push_str(&self.nodes_toml(""));
        out.push_str(&format!(
            "\n[[users]]\nname = {}\npassword = {}\n# auth: the default\n",
            toml_str(user),
            toml_str(password)
        ));
        out
    }

    /// Run `sql` (one or more statements, text protocol) on every running node,
    /// concurrently, without a default database. Until chorus replicates, this
    /// is how fixtures reach the followers.
    pub async fn execute_on_all(&self, sql: &str) -> Result<(), ClusterError> {
        self.execute_on_all_in("", sql).await
    }

    /// [`MariaCluster::execute_on_all`] with `db` as the default database.
    pub async fn execute_on_all_in(&self, db: &str, sql: &str) -> Result<(), ClusterError> {
        let sql: Arc<str> = sql.into();
        self.on_each_running(db, move |mut conn| {
            let sql = sql.clone();
            async move {
                conn.query_drop(&*sql).await?;
                conn.disconnect().await
            }
        })
        .await
    }

    /// `CREATE DATABASE` on every running node.
    pub async fn create_database(&self, name: &str) -> Result<(), ClusterError> {
        self.execute_on_all(&format!("CREATE DATABASE {}", quote_name(name))).await
    }

    /// `DROP DATABASE IF EXISTS` on every running node, after killing the
    /// connections using it (as PostgreSQL's `WITH (FORCE)`: an open
    /// transaction's metadata locks would make the drop wait for it).
    pub async fn drop_database(&self, name: &str) -> Result<(), ClusterError> {
        let (find, drop) = (
            format!(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = {} AND ID <> CONNECTION_ID()",
                quote_str(name)
            ),
            format!("DROP DATABASE IF EXISTS {}", quote_name(name)),
        );
        let statements: Arc<(String, String)> = Arc::new((find, drop));
        self.on_each_running("", move |mut conn| {
            let statements = statements.clone();
            async move {
                let ids: Vec<u64> = conn.query(&statements.0).await?;
                for id in ids {
                    // It may have ended meanwhile (unknown thread id): fine.
                    let _ = conn.query_drop(format!("KILL CONNECTION {id}")).await;
                }
                conn.query_drop(&statements.1).await?;
                conn.disconnect().await
            }
        })
        .await
    }

    /// Create (or replace) `name`@`%` on every running node, authenticated by
    /// `plugin` (e.g. `mysql_native_password`, `ed25519`) with `password`, with
    /// every privilege. A plugin the server has not loaded is installed first
    /// (`INSTALL SONAME 'auth_<plugin>'`).
    pub async fn create_user(&self, name: &str, password: &str, plugin: &str) -> Result<(), ClusterError> {
        let user = format!("{}@'%'", quote_str(name));
        let statements = Arc::new((
            format!(
                "SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = {} AND PLUGIN_STATUS = 'ACTIVE'",
                quote_str(plugin)
            ),
            format!("INSTALL SONAME {}", quote_str(&format!("auth_{plugin}"))),
            format!(
                "CREATE OR REPLACE USER {user} IDENTIFIED VIA {} USING PASSWORD({});
                 GRANT ALL PRIVILEGES ON *.* TO {user} WITH GRANT OPTION",
                quote_name(plugin),
                quote_str(password)
            ),
        ));
        self.on_each_running("", move |mut conn| {
            let statements = statements.clone();
            async move {
                let loaded: Option<u64> = conn.query_first(&statements.0).await?;
                if loaded == Some(0) {
                    conn.query_drop(&statements.1).await?;
                }
                conn.query_drop(&statements.2).await?;
                conn.disconnect().await
            }
        })
        .await
    }

    /// Connect as root to every running node (default database `db`, `""` for
    /// none) and run `work` on each connection, concurrently; the first error wins.
    async fn on_each_running<F, Fut>(&self, db: &str, work: F) -> Result<(), ClusterError>
    where
        F: Fn(mysql_async::Conn) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), mysql_async::Error>> + Send + 'static,
    {
        let mut set = tokio::task::JoinSet::new();
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            let (node, opts, work) = (n.name().to_string(), n.opts(db), work.clone());
            set.spawn(async move {
                let run = async move { work(mysql_async::Conn::new(opts).await?).await };
                run.await.map_err(|source| ClusterError::MySql { node, source })
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
}

impl Drop for MariaCluster {
    fn drop(&mut self) {
        let _ = self.stop();
        // Nothing left to stop; the guardian only cleans up.
        if let Some(g) = self.guardian.lock().unwrap_or_else(|e| e.into_inner()).take() {
            g.trigger();
        }
    }
}

/// The installed MariaDB server programs.
struct Binaries {
    mariadbd: PathBuf,
    install_db: PathBuf,
}

impl Binaries {
    /// `mariadbd` and `mariadb-install-db` on `PATH`, or in the sbin and bin
    /// directories where packages put them (Debian's /usr/sbin is not on a
    /// non-root user's `PATH`).
    fn locate() -> Result<Binaries, ClusterError> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs: Vec<PathBuf> = std::env::split_paths(&path)
            .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
            .collect();
        let find = |name: &str| {
            dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| {
                ClusterError::MissingMariaDb(format!(
                    "the MariaDB program {name} was not found on PATH or in /usr/sbin"
                ))
            })
        };
        Ok(Binaries { mariadbd: find("mariadbd")?, install_db: find("mariadb-install-db")? })
    }
}

/// Create `dir` (or re-use a chorus cluster directory: stop leftover servers,
/// remove old nodes).
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
                    stop_leftover(&path.join("mariadbd.pid"));
                    // The directory may have held a PostgreSQL cluster before.
                    super::stop_leftover(&path.join("data"));
                    std::fs::remove_dir_all(&path).map_err(|e| io(&format!("cannot remove {}", path.display()), e))?;
                }
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| io(&format!("cannot create {}", dir.display()), e))?;
    std::fs::write(dir.join(MARKER), "created by chorus; node directories here are wiped on the next start\n")
        .map_err(|e| io(&format!("cannot write to {}", dir.display()), e))
}

/// A server left running by an owner that died without its guardian (should not
/// happen, but a stale server would hold the port and the files).
fn stop_leftover(pid_file: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|t| t.trim().parse::<i32>().ok()) else {
        return;
    };
    let is_mariadbd = || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("mariadbd"))
            .unwrap_or(false)
    };
    if pid <= 0 || !is_mariadbd() {
        return;
    }
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        // SAFETY: kill(2) on one positive pid has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) };
        for _ in 0..1500 {
            if !is_mariadbd() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `mariadb-install-db` once into `template/data`, root's accounts given
/// `password` by SQL it runs in bootstrap mode after creating the system tables.
///
/// `--auth-root-authentication-method=normal` makes root a password account
/// (not unix_socket), at localhost, 127.0.0.1, ::1 and the machine's hostname;
/// the hostname account is dropped (`--skip-name-resolve` ignores it, with a
/// warning at every start). `FLUSH PRIVILEGES` loads the grant tables, which
/// bootstrap mode skips, so that `ALTER USER` works there.
///
/// The bootstrap server gets a temporary directory of its own (`TMPDIR`, see
/// below), as every node does (`--tmpdir`): at startup `mariadbd` deletes every
/// `#sql*` file in its tmpdir, without asking whose it is, and the system-table
/// scripts run in bootstrap mode use temporary tables (`tmp_user_sys` ...). With
/// the default /tmp, an install started while another one runs (two clusters
/// starting at once, as test binaries do) deleted the first one's temporary
/// table under it: "Could not remove temporary table: '/tmp/#sql-temptable-...'",
/// then "ERROR: 1051 Unknown table 'mysql.tmp_user_sys'", and the install failed.
fn init_template(bins: &Binaries, template: &Path, password: &str, settings: &[String]) -> Result<(), ClusterError> {
    std::fs::create_dir_all(template).map_err(|e| io("cannot create the template directory", e))?;
    let pw = quote_str(password);
    let sql = format!(
        "DELETE FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN ('localhost', '127.0.0.1', '::1');
DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1');
FLUSH PRIVILEGES;
ALTER USER 'root'@'localhost' IDENTIFIED BY {pw};
ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY {pw};
ALTER USER 'root'@'::1' IDENTIFIED BY {pw};
"
    );
    let sql_file = template.join("chorus-init.sql");
    std::fs::write(&sql_file, sql).map_err(|e| io("cannot write the template's setup SQL", e))?;
    let tmp = template.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| io("cannot create the template's temporary directory", e))?;
    let mut cmd = std::process::Command::new(&bins.install_db);
    // `TMPDIR`, not `--tmpdir=`: mariadb-install-db hands its extra options to
    // the server unquoted (word-split), so a path with a space would break there,
    // while the server reads `TMPDIR` when no --tmpdir is given.
    cmd.env("TMPDIR", &tmp)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", template.join("data").display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .arg(format!("--extra-file={}", sql_file.display()))
        .args(STORAGE_OPTIONS)
        .args(settings)
        .current_dir(template);
    if running_as_root() {
        cmd.arg("--user=root");
    }
    let result = binaries::run_checked(&mut cmd, "mariadb-install-db");
    let _ = std::fs::remove_file(&sql_file);
    result.map(|_| ())
}

/// The node's socket: in its directory if that path is short enough to bind,
/// else a name under /var/tmp unique to the node directory (never /tmp, whose
/// files have vanished under running servers).
fn socket_path(node_dir: &Path) -> PathBuf {
    let inside = node_dir.join("mariadbd.sock");
    if inside.as_os_str().len() <= MAX_SOCKET_PATH {
        return inside;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    node_dir.hash(&mut h);
    PathBuf::from(format!("/var/tmp/chorus-mariadb-{:016x}.sock", h.finish()))
}

/// A MariaDB string literal. Backslashes are escaped too: the default
/// `sql_mode` (no `NO_BACKSLASH_ESCAPES`) reads them as escapes.
fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A backquoted MariaDB identifier.
fn quote_name(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_places_sockets() {
        assert_eq!(quote_str("it's a\\b"), "'it''s a\\\\b'");
        assert_eq!(quote_name("we`ird"), "`we``ird`");
        assert_eq!(socket_path(Path::new("/var/tmp/c/leader")), Path::new("/var/tmp/c/leader/mariadbd.sock"));
        let long = PathBuf::from(format!("/var/tmp/{}/leader", "x".repeat(120)));
        let socket = socket_path(&long);
        let text = socket.to_string_lossy();
        assert!(text.starts_with("/var/tmp/chorus-mariadb-") && text.len() <= MAX_SOCKET_PATH, "{text}");
        assert_eq!(socket, socket_path(&long), "stable across restarts");
    }
}
