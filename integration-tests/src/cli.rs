//! The `chorus` binary as a command, for tests of its command line.
//!
//! Integration tests of another crate cannot ask cargo for a binary
//! (`CARGO_BIN_EXE_*` is only set for the binary's own package), so it is found
//! next to the test binary: `<target>/<profile>/chorus`. `scripts/test.sh` runs
//! `cargo build --workspace` before the tests, which builds it.

use chorus::localcluster::{CommandOutput, run_with_timeout};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// `<target>/<profile>/chorus`; panics with how to build it if it is missing.
pub fn chorus_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/<test binary>
    let profile_dir =
        exe.parent().and_then(|deps| deps.parent()).expect("the test binary lives in <target>/<profile>/deps");
    let bin = profile_dir.join("chorus");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build --workspace` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Run `chorus ARGS` with extra environment variables (CHORUS__* from the
/// test's own environment removed), under a 60 s hang guard.
pub fn run_chorus(args: &[&str], env: &[(&str, &str)]) -> CommandOutput {
    let mut cmd = Command::new(chorus_binary());
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("CHORUS_")) {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).envs(env.iter().copied()).env("RUST_LOG", "warn");
    run_with_timeout(&mut cmd, None, Duration::from_secs(60)).unwrap_or_else(|e| panic!("cannot run chorus: {e}"))
}
