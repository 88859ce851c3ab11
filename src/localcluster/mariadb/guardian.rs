//! The MariaDB flavour of the cluster [guardian](crate::localcluster::guardian): a
//! watchdog process that stops a MariaDB cluster's servers when the process that
//! started them dies, however it dies.
//!
//! Same mechanism as PostgreSQL's (an `sh` child in its own process group, blocked
//! reading a pipe only we hold, which the kernel closes when we exit), different
//! servers: it finds each `mariadbd` through the pid file the node passes with
//! `--pid-file`, asks it for a normal shutdown (SIGTERM) and SIGKILLs whatever is
//! still running after a grace period. The pid is checked against
//! `/proc/PID/cmdline`, so a stale pid file (a SIGKILLed node) never makes it
//! signal an unrelated process that reused the pid.

use crate::localcluster::ClusterError;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

const SCRIPT: &str = r#"
remove="$1"; root="$2"; npid="$3"; shift 3
# "$@" is now $npid pid files, then the stray sockets.
# Block until the owning process exits or drops us (EOF either way).
cat >/dev/null
srv_pid() {
  [ -f "$1" ] || return 1
  pid=$(head -n 1 "$1" 2>/dev/null)
  [ -n "$pid" ] && grep -q mariadbd "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}
# Send $sig to every live server; succeeds if any was alive.
signal() {
  n=0; any=1
  for f in "$@"; do
    n=$((n+1)); [ $n -gt $npid ] && break
    pid=$(srv_pid "$f") && kill -$sig "$pid" 2>/dev/null && any=0
  done
  return $any
}
sig=TERM; signal "$@"
i=0
while [ $i -lt 150 ]; do
  sig=0; signal "$@" || break
  sleep 0.1; i=$((i+1))
done
sig=KILL; signal "$@"
n=0
for s in "$@"; do n=$((n+1)); [ $n -gt $npid ] && rm -f "$s"; done
[ "$remove" = 1 ] && rm -rf "$root"
exit 0
"#;

/// The watchdog of one MariaDB cluster. Triggering it after the servers were
/// stopped only cleans up (sockets outside the cluster directory, and the
/// directory itself if asked to).
pub(super) struct Guardian {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Guardian {
    /// Watch the servers whose pid files are `pid_files`; on our death stop them,
    /// remove `stray_sockets` (sockets that did not fit in the cluster directory),
    /// and remove `root` too when `remove_root` is set.
    pub(super) fn spawn(
        root: &Path,
        pid_files: &[PathBuf],
        stray_sockets: &[PathBuf],
        remove_root: bool,
    ) -> Result<Guardian, ClusterError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("chorus-mariadb-guardian")
            .arg(if remove_root { "1" } else { "0" })
            .arg(root)
            .arg(pid_files.len().to_string())
            .args(pid_files)
            .args(stray_sockets)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| ClusterError::Io {
            context: "cannot start the MariaDB cluster guardian (sh)".into(),
            source,
        })?;
        let stdin = child.stdin.take();
        Ok(Guardian { child, stdin })
    }

    /// Hand cleanup to the guardian now (same as our process dying), and wait for it.
    pub(super) fn trigger(mut self) {
        drop(self.stdin.take());
        let _ = crate::localcluster::binaries::wait_for_exit(&mut self.child, Duration::from_secs(30));
    }
}
