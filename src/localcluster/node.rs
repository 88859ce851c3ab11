//! One PostgreSQL server of a local cluster: its directories, its port, and its
//! process (start, fast stop, SIGKILL, restart).
//!
//! We spawn `postgres` ourselves (through `runuser` when root) rather than through
//! `pg_ctl`, so the server's process tree is ours to reap: no zombie postmasters
//! when PID 1 does not reap orphans (containers), and a killed node can be
//! restarted at once. Readiness is read from `postmaster.pid` (its status line
//! says `ready` once connections are accepted).

use super::binaries::{self, PgBinaries};
use super::{ClusterError, url_encode};
use crate::config::Role;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Per-node settings file, included from the shared postgresql.conf and rewritten
/// on every start (the port can change if the old one was taken meanwhile).
pub(super) const NODE_CONF: &str = "chorus-node.conf";

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 5;

/// One server. Every method takes `&self` so a cluster shared by many tests can
/// have any node stopped, killed or restarted by any of them.
pub struct PgNode {
    name: String,
    role: Role,
    node_dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: AtomicU16,
    superuser: String,
    password: String,
    bins: PgBinaries,
    process: Mutex<Option<Running>>,
}

struct Running {
    /// `postgres`, or the `runuser` wrapping it.
    child: Child,
    postmaster: i32,
}

impl PgNode {
    pub(super) fn new(
        name: &str,
        role: Role,
        node_dir: PathBuf,
        port: u16,
        superuser: &str,
        password: &str,
        bins: PgBinaries,
    ) -> PgNode {
        PgNode {
            name: name.to_string(),
            role,
            data_dir: node_dir.join("data"),
            log_file: node_dir.join("postgres.log"),
            node_dir,
            port: AtomicU16::new(port),
            superuser: superuser.to_string(),
            password: password.to_string(),
            bins,
            process: Mutex::new(None),
        }
    }

    /// `leader`, `follower1`, `follower2` ... (also the server's `cluster_name`,
    /// so `ps` shows which node a process belongs to).
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

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's log (stderr of the postmaster), next to its data directory.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// URL of the `postgres` database on this server, as the superuser.
    pub fn url(&self) -> String {
        self.url_for_db("postgres")
    }

    /// URL of `db` on this server, as the superuser.
    pub fn url_for_db(&self, db: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}",
            url_encode(&self.superuser),
            url_encode(&self.password),
            self.host(),
            self.port(),
            url_encode(db)
        )
    }

    /// Connection settings for `db` on this server, as the superuser.
    pub fn pg_config(&self, db: &str) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(self.host())
            .port(self.port())
            .user(&self.superuser)
            .password(&self.password)
            .dbname(db)
            .application_name("chorus-localcluster")
            .connect_timeout(Duration::from_secs(10));
        cfg
    }

    /// Connect to `db` as the superuser; the connection task runs on the caller's
    /// tokio runtime.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client, ClusterError> {
        connect(&self.name, self.pg_config(db)).await
    }

    /// The postmaster's pid while the server runs.
    pub fn pid(&self) -> Option<i32> {
        let mut guard = self.process.lock().unwrap_or_else(|e| e.into_inner());
        let r = guard.as_mut()?;
        matches!(r.child.try_wait(), Ok(None)).then_some(r.postmaster)
    }

    /// Whether the server process is alive (it may still be starting or stopping).
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Start the server and wait until it accepts connections; a no-op if it runs.
    /// If its port was taken meanwhile, a new free port is picked.
    pub fn start(&self) -> Result<(), ClusterError> {
        let mut guard = self.process.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = guard.as_mut()
            && matches!(r.child.try_wait(), Ok(None))
        {
            return Ok(());
        }
        *guard = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.spawn_and_wait() {
                Ok(running) => {
                    *guard = Some(running);
                    return Ok(());
                }
                Err(StartError::PortTaken) if attempt < PORT_ATTEMPTS => {
                    let port = super::free_ports(1)
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

    /// Fast shutdown (SIGINT: disconnect clients, checkpoint, exit); escalates to
    /// immediate shutdown and then SIGKILL if the server does not stop in time.
    pub fn stop(&self) -> Result<(), ClusterError> {
        let mut guard = self.process.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut r) = guard.take() else { return Ok(()) };
        if binaries::wait_for_exit(&mut r.child, Duration::ZERO).is_some() {
            return Ok(());
        }
        signal(r.postmaster, libc::SIGINT);
        if binaries::wait_for_exit(&mut r.child, STOP_TIMEOUT).is_some() {
            return Ok(());
        }
        signal(r.postmaster, libc::SIGQUIT);
        if binaries::wait_for_exit(&mut r.child, Duration::from_secs(5)).is_some() {
            return Ok(());
        }
        signal(r.postmaster, libc::SIGKILL);
        let _ = r.child.kill();
        let _ = r.child.wait();
        Err(self.failure("did not stop within 35 s; killed it", 0))
    }

    /// SIGKILL the postmaster, as a crash would (for fault tests). Returns once the
    /// server's processes are gone, so [`PgNode::start`] can follow at once.
    pub fn kill(&self) -> Result<(), ClusterError> {
        let mut guard = self.process.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut r) = guard.take() else { return Ok(()) };
        let children = child_pids(r.postmaster);
        signal(r.postmaster, libc::SIGKILL);
        let _ = binaries::wait_for_exit(&mut r.child, Duration::from_secs(10));
        // The backends notice their postmaster died and exit; they must be gone
        // (detached from shared memory) before a new postmaster will start.
        let deadline = Instant::now() + Duration::from_secs(10);
        while children.iter().any(|&pid| process_alive(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // A SIGKILLed postmaster leaves its pid file saying "ready": remove it so
        // the next start does not mistake it for the new server's.
        let _ = std::fs::remove_file(self.data_dir.join("postmaster.pid"));
        Ok(())
    }

    /// Fast stop, then start (same port if it is still free).
    pub fn restart(&self) -> Result<(), ClusterError> {
        self.stop()?;
        self.start()
    }

    fn spawn_and_wait(&self) -> Result<Running, StartError> {
        let io = |context: String| move |source| StartError::Other(ClusterError::Io { context, source });
        std::fs::write(self.data_dir.join(NODE_CONF), self.node_conf())
            .map_err(io(format!("cannot write {NODE_CONF} for {}", self.name)))?;
        binaries::hand_to_server_user(&self.data_dir.join(NODE_CONF)).map_err(StartError::Other)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(io(format!("cannot open {}", self.log_file.display())))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().map_err(io("cannot duplicate the log file handle".into()))?;
        let mut cmd = binaries::server_command(&self.bins.tool("postgres"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .current_dir(&self.node_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Keep terminal signals (Ctrl-C) away from the server: its owner stops it.
            .process_group(0);
        let mut child = cmd.spawn().map_err(io(format!("cannot start postgres for {}", self.name)))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let tail = log_since(&self.log_file, log_start);
                if tail.contains("could not bind") || tail.contains("Address already in use") {
                    return Err(StartError::PortTaken);
                }
                return Err(StartError::Other(
                    self.failure(&format!("did not start: postgres exited ({status})"), log_start),
                ));
            }
            if let Some(pid) = self.ready_postmaster(child.id() as i32) {
                return Ok(Running { child, postmaster: pid });
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::Other(self.failure("did not start: not ready within 60 s", log_start)));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The postmaster pid, once `postmaster.pid` says "ready" and belongs to the
    /// process we spawned (itself, or the child of our `runuser`).
    fn ready_postmaster(&self, spawned: i32) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        let pid: i32 = lines.first()?.trim().parse().ok()?;
        let ready = lines.get(7).is_some_and(|s| s.trim() == "ready");
        let ours = pid == spawned || parent_pid(pid) == Some(spawned);
        (ready && ours).then_some(pid)
    }

    fn node_conf(&self) -> String {
        // A Unix socket path longer than ~107 bytes cannot be bound: skip the socket
        // then (everything here connects over TCP anyway).
        let socket_dir = self.node_dir.display().to_string();
        let socket_dir = if socket_dir.len() + 20 < 107 { socket_dir } else { String::new() };
        format!(
            "# Written by chorus on every start of this node.\nport = {}\ncluster_name = '{}'\nunix_socket_directories = '{}'\n",
            self.port(),
            self.name.replace('\'', "''"),
            socket_dir.replace('\'', "''"),
        )
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

impl Drop for PgNode {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

enum StartError {
    PortTaken,
    Other(ClusterError),
}

/// Connect with `cfg`, running the connection task on the caller's runtime.
pub(super) async fn connect(node: &str, cfg: tokio_postgres::Config) -> Result<tokio_postgres::Client, ClusterError> {
    let (client, connection) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|source| ClusterError::Sql { node: node.to_string(), source })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions; pid > 0 targets one process.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// `/proc/PID/stat` fields after the command name: state, ppid, ...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

fn parent_pid(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Alive and not a zombie (a zombie has released its shared memory already).
fn process_alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().map(String::as_str) != Some("Z"))
}

fn child_pids(pid: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                pids.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    pids
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
