//! One MariaDB server of a local cluster: its directories, its port, and its
//! process (start, normal stop, SIGKILL, restart).
//!
//! We spawn `mariadbd` ourselves (not `mariadbd-safe`, which would restart a
//! killed server behind a fault test's back, nor the system service), so the
//! process is our child: we reap it, and a killed node can be restarted at once.
//! MariaDB has no readiness file like `postmaster.pid`'s status line (its pid
//! file appears before the server accepts connections), so readiness is a
//! successful login as root over TCP, which also proves the node's URL works.

use crate::config::Role;
use crate::localcluster::binaries;
use crate::localcluster::{ClusterError, url_encode};
use mysql_async::prelude::Queryable;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// One login attempt while the server starts: it may accept the TCP connection
/// (listen backlog) well before it sends the handshake.
const LOGIN_ATTEMPT: Duration = Duration::from_secs(5);
const PORT_ATTEMPTS: usize = 5;

/// The superuser chorus and the tests connect as.
const ROOT: &str = "root";

/// One server. Every method takes `&self` so a cluster shared by many tests can
/// have any node stopped, killed or restarted by any of them.
pub struct MariaNode {
    name: String,
    role: Role,
    node_dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    pid_file: PathBuf,
    socket: PathBuf,
    port: AtomicU16,
    server_id: u32,
    password: String,
    mariadbd: PathBuf,
    /// Every server option but the per-node ones (see [`MariaNode::command`]).
    options: Vec<String>,
    process: Mutex<Option<Child>>,
}

impl MariaNode {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        name: &str,
        role: Role,
        node_dir: PathBuf,
        socket: PathBuf,
        port: u16,
        server_id: u32,
        password: &str,
        mariadbd: PathBuf,
        options: Vec<String>,
    ) -> MariaNode {
        MariaNode {
            name: name.to_string(),
            role,
            data_dir: node_dir.join("data"),
            log_file: node_dir.join("mariadbd.log"),
            pid_file: node_dir.join("mariadbd.pid"),
            socket,
            node_dir,
            port: AtomicU16::new(port),
            server_id,
            password: password.to_string(),
            mariadbd,
            options,
            process: Mutex::new(None),
        }
    }

    /// `leader`, `follower1`, `follower2` ... (the same names as a PostgreSQL cluster's).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The server's `@@server_id`: 1 for the leader, then 2, 3 ... so a
    /// connection can tell which node it reached without knowing ports.
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's error log (`--log-error`, plus its stdout and stderr), next
    /// to its data directory.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The server's Unix socket: in the node directory when that path is short
    /// enough to bind, else a unique name under /var/tmp.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub(super) fn pid_file(&self) -> &Path {
        &self.pid_file
    }

    /// `root`, the superuser every node shares.
    pub fn user(&self) -> &str {
        ROOT
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// URL of this server without a default database, as root.
    pub fn url(&self) -> String {
        self.url_for_db("")
    }

    /// URL of `db` on this server (`""`: no default database), as root. Note that
    /// mysql_async, given this URL, moves to the Unix socket after connecting
    /// (its `prefer_socket` default), where root has the same password; append
    /// `?prefer_socket=false` to stay on TCP, or use [`MariaNode::opts`].
    pub fn url_for_db(&self, db: &str) -> String {
        format!(
            "mysql://{}:{}@{}:{}/{}",
            url_encode(ROOT),
            url_encode(&self.password),
            self.host(),
            self.port(),
            url_encode(db)
        )
    }

    /// Connection settings for `db` (`""`: none) on this server, as root, over
    /// TCP only: what chorus does, so tests see what chorus sees.
    pub fn opts(&self, db: &str) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host())
            .tcp_port(self.port())
            .user(Some(ROOT))
            .pass(Some(self.password.as_str()))
            .db_name((!db.is_empty()).then_some(db))
            .prefer_socket(false)
            .into()
    }

    /// Connect to `db` (`""`: no default database) as root, over TCP.
    pub async fn connect(&self, db: &str) -> Result<mysql_async::Conn, ClusterError> {
        mysql_async::Conn::new(self.opts(db))
            .await
            .map_err(|source| ClusterError::MySql { node: self.name.clone(), source })
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<i32> {
        let mut guard = self.process.lock().unwrap_or_else(|e| e.into_inner());
        let child = guard.as_mut()?;
        matches!(child.try_wait(), Ok(None)).then_some(child.id() as i32)
    }

    /// Whether the server process is alive (it may still be starting or stopping).
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Start the server and wait until root can log in; a no-op if it runs. If
    /// its port was taken meanwhile, a new free port is picked.
    pub fn start(&self) -> Result<(), ClusterError> {
        let mut guard = self.process.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = guard.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            return Ok(());
        }
        *guard = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.spawn_and_wait() {
                Ok(child) => {
                    *guard = Some(child);
                    return Ok(());
                }
                Err(StartError::PortTaken) if attempt < PORT_ATTEMPTS => {
                    let port = crate::localcluster::free_ports(1)
                        .map_err(|source| ClusterError::Io { context: "cannot pick a free port".into(), source })?;
                    self.port.store(port[0], Ordering::SeqCst);
                }
                Err(StartError::PortTaken) => {
                    return Err(self.failure("did not start: its port stayed taken after several attempts", 0));
                }
                Err(StartError::Other(e)) => return Err(e),
            }
        }
    }

    /// Normal shutdown (SIGTERM: close connections, flush, exit); SIGKILL if the
    /// server does not stop in time.
    pub fn stop(&self) -> Result<(), ClusterError> {
        let mut guard = self.process.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut child) = guard.take() else { return Ok(()) };
        if binaries::wait_for_exit(&mut child, Duration::ZERO).is_some() {
            return Ok(());
        }
        signal(child.id() as i32, libc::SIGTERM);
        if binaries::wait_for_exit(&mut child, STOP_TIMEOUT).is_some() {
            return Ok(());
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(self.failure("did not stop within 30 s; killed it", 0))
    }

    /// SIGKILL the server, as a crash would (for fault tests). Returns once the
    /// process is gone, so [`MariaNode::start`] can follow at once (InnoDB then
    /// recovers from its redo log, keeping every committed transaction).
    pub fn kill(&self) -> Result<(), ClusterError> {
        let mut guard = self.process.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut child) = guard.take() else { return Ok(()) };
        let _ = child.kill();
        let _ = binaries::wait_for_exit(&mut child, Duration::from_secs(10));
        // A killed server leaves its pid file behind; the guardian checks pids
        // anyway, but a stale file would mislead anyone reading the directory.
        let _ = std::fs::remove_file(&self.pid_file);
        Ok(())
    }

    /// Stop, then start (same port if it is still free).
    pub fn restart(&self) -> Result<(), ClusterError> {
        self.stop()?;
        self.start()
    }

    fn spawn_and_wait(&self) -> Result<Child, StartError> {
        let io = |context: String| move |source| StartError::Other(ClusterError::Io { context, source });
        let tmp = self.node_dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(io(format!("cannot create {}", tmp.display())))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(io(format!("cannot open {}", self.log_file.display())))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().map_err(io("cannot duplicate the log file handle".into()))?;
        let mut cmd = self.command(&tmp);
        cmd.current_dir(&self.node_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Keep terminal signals (Ctrl-C) away from the server: its owner stops it.
            .process_group(0);
        let mut child = cmd.spawn().map_err(io(format!("cannot start mariadbd for {}", self.name)))?;
        match self.wait_until_ready(&mut child, log_start) {
            Ok(()) => Ok(child),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// `mariadbd` with this node's options. `--no-defaults` (it must come first)
    /// keeps the machine's /etc/mysql configuration, written for its own service,
    /// out of our servers.
    fn command(&self, tmp: &Path) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir.display()))
            .arg(format!("--port={}", self.port()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--pid-file={}", self.pid_file.display()))
            .arg(format!("--log-error={}", self.log_file.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--server-id={}", self.server_id))
            .args(&self.options);
        if binaries::running_as_root() {
            // mariadbd refuses to run as root unless told to; unlike PostgreSQL
            // there is no need for another OS user.
            cmd.arg("--user=root");
        }
        cmd
    }

    /// Log in as root until it works, the server exits, or time runs out. Runs
    /// on a runtime of its own (in a scoped thread), so it works whether or not
    /// the caller is inside a tokio runtime.
    fn wait_until_ready(&self, child: &mut Child, log_start: u64) -> Result<(), StartError> {
        let opts = self.opts("");
        let node = self.name.clone();
        let ours = self.pid_file.clone();
        let deadline = Instant::now() + START_TIMEOUT;
        let spawned = &mut *child;
        let outcome = on_own_runtime(async move {
            loop {
                // A login may hang until the server is ready (or forever, if
                // something else holds the port): watch for ours exiting meanwhile.
                let exited = async {
                    loop {
                        if let Ok(Some(status)) = spawned.try_wait() {
                            return status;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                let login = tokio::time::timeout(LOGIN_ATTEMPT, mysql_async::Conn::new(opts.clone()));
                tokio::select! {
                    status = exited => return Ready::Exited(status),
                    login = login => match login {
                        Ok(Ok(mut conn)) => {
                            // Another server may have taken the port before ours could
                            // bind it (ours then exits): only our own pid file counts.
                            let pid_file: Option<String> =
                                conn.query_first("SELECT @@pid_file").await.ok().flatten();
                            let _ = conn.disconnect().await;
                            if pid_file.is_some_and(|p| Path::new(&p) == ours) {
                                return Ready::Yes;
                            }
                        }
                        // Access denied: waiting will not help.
                        Ok(Err(mysql_async::Error::Server(e))) if [1044, 1045, 1698].contains(&e.code) => {
                            return Ready::Refused(mysql_async::Error::Server(e));
                        }
                        _ => {}
                    },
                }
                if Instant::now() >= deadline {
                    return Ready::TimedOut;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .map_err(|source| {
            StartError::Other(ClusterError::Io { context: format!("cannot build a tokio runtime for {node}"), source })
        })?;
        let outcome = match outcome {
            // A refusal from another server on our port, if ours exits at once.
            Ready::Refused(e) => {
                binaries::wait_for_exit(child, Duration::from_secs(2)).map_or(Ready::Refused(e), Ready::Exited)
            }
            other => other,
        };
        match outcome {
            Ready::Yes => Ok(()),
            Ready::Exited(status) => {
                let tail = log_since(&self.log_file, log_start);
                if tail.contains("Bind on TCP/IP port") {
                    return Err(StartError::PortTaken);
                }
                Err(StartError::Other(self.failure(&format!("did not start: mariadbd exited ({status})"), log_start)))
            }
            Ready::Refused(e) => {
                Err(StartError::Other(self.failure(&format!("started, but refuses root's login: {e}"), log_start)))
            }
            Ready::TimedOut => {
                Err(StartError::Other(self.failure("did not start: no login possible within 60 s", log_start)))
            }
        }
    }

    fn failure(&self, reason: &str, log_start: u64) -> ClusterError {
        ClusterError::Server {
            node: self.name.clone(),
            problem: reason.to_string(),
            log: self.log_file.clone(),
            log_tail: last_lines(&log_since(&self.log_file, log_start), 20),
        }
    }
}

impl Drop for MariaNode {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

enum StartError {
    PortTaken,
    Other(ClusterError),
}

enum Ready {
    Yes,
    Exited(std::process::ExitStatus),
    Refused(mysql_async::Error),
    TimedOut,
}

/// Run `fut` to completion on a new current-thread runtime in a scoped thread:
/// blocking a caller that may itself be a runtime's thread, never nesting runtimes.
fn on_own_runtime<T: Send>(fut: impl Future<Output = T> + Send) -> std::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(fut)))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions; pid > 0 targets one process.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn log_since(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        text = String::from_utf8_lossy(&buf).into_owned();
    }
    text
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
