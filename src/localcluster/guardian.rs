//! A watchdog process that stops a cluster's servers when the process that started
//! them dies, however it dies.
//!
//! `Drop` stops servers on a normal exit or a panic, but statics are never dropped
//! (a test binary's shared cluster), and SIGKILL or Ctrl-C skip destructors. The
//! guardian is a tiny `sh` child in its own process group (so Ctrl-C does not reach
//! it) that blocks reading a pipe from us. The kernel closes that pipe when we exit
//! for any reason; the guardian then reads each data directory's `postmaster.pid`,
//! asks that postmaster for a fast shutdown (immediate after a grace period), and
//! optionally removes the cluster directory. Our pipe ends are close-on-exec, so
//! no server or client we spawn keeps the pipe open by accident.

use super::ClusterError;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

const SCRIPT: &str = r#"
remove="$1"; root="$2"; shift 2
# Block until the owning process exits or drops us (EOF either way).
cat >/dev/null
pm_pid() {
  [ -f "$1/postmaster.pid" ] || return 1
  pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null)
  [ -n "$pid" ] && grep -q postgres "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}
for d in "$@"; do pid=$(pm_pid "$d") && kill -INT "$pid" 2>/dev/null; done
i=0
while [ $i -lt 100 ]; do
  alive=0
  for d in "$@"; do pid=$(pm_pid "$d") && kill -0 "$pid" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 0.1; i=$((i+1))
done
for d in "$@"; do pid=$(pm_pid "$d") && kill -QUIT "$pid" 2>/dev/null; done
[ $alive = 1 ] && sleep 1
[ "$remove" = 1 ] && rm -rf "$root"
exit 0
"#;

/// The watchdog of one cluster. Triggering it after the servers were stopped only
/// removes the directory (if asked to).
pub struct Guardian {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Guardian {
    /// Watch the servers of `data_dirs`; on our death stop them, and remove `root`
    /// too when `remove_root` is set.
    pub fn spawn(root: &Path, data_dirs: &[PathBuf], remove_root: bool) -> Result<Guardian, ClusterError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("chorus-guardian")
            .arg(if remove_root { "1" } else { "0" })
            .arg(root)
            .args(data_dirs)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|source| ClusterError::Io { context: "cannot start the cluster guardian (sh)".into(), source })?;
        let stdin = child.stdin.take();
        Ok(Guardian { child, stdin })
    }

    /// Hand cleanup to the guardian now (same as our process dying), and wait for it.
    pub fn trigger(mut self) {
        drop(self.stdin.take());
        let _ = super::binaries::wait_for_exit(&mut self.child, Duration::from_secs(30));
    }
}
