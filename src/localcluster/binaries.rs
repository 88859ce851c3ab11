//! Finding the installed PostgreSQL binaries, and running them as the right OS user.
//!
//! `initdb` and `postgres` refuse to run as root, so when chorus runs as root every
//! server-side program goes through `runuser -u postgres --`, and the directories it
//! touches are handed to that user.

use super::ClusterError;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The OS account that owns data directories and runs servers when we are root.
pub const SERVER_OS_USER: &str = "postgres";

/// What to tell someone whose machine lacks the server binaries.
pub const INSTALL_HINT: &str = "install the PostgreSQL server and client: `apt-get install postgresql postgresql-client` \
     (Debian/Ubuntu), or set CHORUS_PG_BINDIR to a directory holding initdb and postgres";

/// The directory holding `initdb`, `postgres`, `psql`, `pgbench` ... of one
/// installed PostgreSQL version.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    bindir: PathBuf,
}

impl PgBinaries {
    /// Find the server binaries: `CHORUS_PG_BINDIR` if set (an explicit, documented
    /// override for unusual installs), else the highest `/usr/lib/postgresql/*/bin`
    /// holding `initdb` and `postgres` (Debian/Ubuntu), else `pg_config --bindir`,
    /// else `initdb` on `PATH`.
    pub fn locate() -> Result<PgBinaries, ClusterError> {
        if let Some(dir) = std::env::var_os("CHORUS_PG_BINDIR") {
            let dir = PathBuf::from(dir);
            return if has_server(&dir) {
                Ok(PgBinaries { bindir: dir })
            } else {
                Err(ClusterError::MissingBinaries(format!(
                    "CHORUS_PG_BINDIR={} does not contain initdb and postgres",
                    dir.display()
                )))
            };
        }
        let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                has_server(&bin).then_some((version, bin))
            })
            .collect();
        versioned.sort();
        if let Some((_, bin)) = versioned.pop() {
            return Ok(PgBinaries { bindir: bin });
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && has_server(&dir) {
                return Ok(PgBinaries { bindir: dir });
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if has_server(&dir) {
                    return Ok(PgBinaries { bindir: dir });
                }
            }
        }
        Err(ClusterError::MissingBinaries(
            "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin, \
             `pg_config --bindir` or PATH"
                .to_string(),
        ))
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Path of one program of this installation (`psql`, `pgbench`, `pg_dump` ...).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// The major version, from `postgres --version` ("postgres (PostgreSQL) 15.8").
    pub fn major_version(&self) -> Option<u32> {
        let out = Command::new(self.tool("postgres")).arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.split_whitespace().last()?;
        version.split(['.', 'b', 'r']).next()?.parse().ok()
    }
}

fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// True when this process runs as root (and so must hand servers to [`SERVER_OS_USER`]).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs `program` as the server's OS user: through
/// `runuser -u postgres --` when we are root, directly otherwise.
pub fn server_command(program: &Path) -> Command {
    if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", SERVER_OS_USER, "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Give `path` (recursively) to the server's OS user when we are root; a no-op otherwise.
pub fn hand_to_server_user(path: &Path) -> Result<(), ClusterError> {
    if !running_as_root() {
        return Ok(());
    }
    let owner = format!("{SERVER_OS_USER}:{SERVER_OS_USER}");
    let mut cmd = Command::new("chown");
    cmd.arg("-R").arg(&owner).arg(path);
    run_checked(&mut cmd, &format!("chown -R {owner} {}", path.display()))?;
    Ok(())
}

/// Check, before anything slow happens, that the server's OS user exists and can
/// write `dir` (every parent directory must be traversable by it).
pub fn check_server_user_can_use(dir: &Path) -> Result<(), ClusterError> {
    if !running_as_root() {
        return Ok(());
    }
    let exists = Command::new("id")
        .arg("-u")
        .arg(SERVER_OS_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !exists {
        return Err(ClusterError::MissingBinaries(format!(
            "running as root, but the OS user {SERVER_OS_USER:?} (which runs the servers) does not exist"
        )));
    }
    let ok = server_command(Path::new("test"))
        .arg("-w")
        .arg(dir)
        .arg("-a")
        .arg("-x")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok { Ok(()) } else { Err(ClusterError::Unreachable(dir.to_path_buf())) }
}

/// Run a command to completion; a non-zero exit is an error that carries its output.
pub fn run_checked(cmd: &mut Command, what: &str) -> Result<Output, ClusterError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ClusterError::Io { context: format!("cannot run {what}"), source })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(ClusterError::Command {
            what: what.to_string(),
            status: out.status,
            output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        })
    }
}

/// What [`run_with_timeout`] saw.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// `None` when the command was killed for running too long.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }
}

/// Run a command with `input` on its stdin, collecting its output, and kill it if
/// it outlives `timeout` (so a hung client fails a test instead of hanging it).
pub fn run_with_timeout(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> std::io::Result<CommandOutput> {
    let mut child = cmd
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let feeder = child.stdin.take().map(|mut stdin| {
        let input = input.unwrap_or_default().to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        })
    });
    let status = match wait_for_exit(&mut child, timeout) {
        Some(status) => Some(status),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    };
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    let text =
        |h: std::thread::JoinHandle<Vec<u8>>| String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned();
    Ok(CommandOutput { status, stdout: text(stdout), stderr: text(stderr) })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Wait up to `timeout` for a child to exit; `None` if it is still running.
pub fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => return None,
            // Already reaped elsewhere: treat as exited.
            Err(_) => return Some(std::os::unix::process::ExitStatusExt::from_raw(0)),
        }
    }
}
