//! Real clients for tests: tokio-postgres connections, and the psql and pgbench
//! programs of the installed PostgreSQL.
//!
//! psql and pgbench run synchronously (with a timeout, so a hung proxy fails the
//! test instead of hanging it); calling them from an async test is fine because
//! chorus and the servers do not run on the test's runtime.

use chorus::localcluster::{CommandOutput, PgBinaries, run_with_timeout};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Connect with a URL, the connection task running on the caller's runtime.
pub async fn try_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// [`try_connect`], panicking with the URL and the error on failure.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    try_connect(url).await.unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

fn binaries() -> &'static PgBinaries {
    static BINS: OnceLock<PgBinaries> = OnceLock::new();
    BINS.get_or_init(|| PgBinaries::locate().unwrap_or_else(|e| panic!("{e}")))
}

/// A client program with the environment tests want: no ~/.psqlrc, no
/// surrounding PG* variables, a connect timeout.
fn client_command(program: &str) -> Command {
    let mut cmd = Command::new(binaries().tool(program));
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(key);
        }
    }
    cmd.env("PGCONNECT_TIMEOUT", "30").env("PGAPPNAME", format!("chorus-tests-{program}"));
    cmd
}

/// Run psql against `url` with extra arguments and optional stdin, e.g.
/// `psql(&url, &["-c", "\\copy t FROM STDIN"], Some(b"1\n2\n"))`. psql stops at
/// the first error (`ON_ERROR_STOP`) and ignores ~/.psqlrc. Times out after 60 s.
pub fn psql(url: &str, args: &[&str], stdin: Option<&[u8]>) -> CommandOutput {
    let mut cmd = client_command("psql");
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-d", url]).args(args);
    run_with_timeout(&mut cmd, stdin, Duration::from_secs(60)).unwrap_or_else(|e| panic!("cannot run psql: {e}"))
}

/// Run an external client program (a Python, Node.js or Java test client,
/// sysbench, ...) with a timeout of `timeout_secs` and return its output;
/// panics if it cannot start (`install` says what provides it) or if it exits
/// non-zero (with its stdout and stderr).
pub fn run_client(cmd: &mut Command, install: &str, timeout_secs: u64) -> CommandOutput {
    let what = format!("{:?}", cmd.get_program());
    let out = run_with_timeout(cmd, None, Duration::from_secs(timeout_secs))
        .unwrap_or_else(|e| panic!("cannot run {what} ({install}): {e}"));
    assert!(out.success(), "{cmd:?} failed ({:?}):\n{}\n{}", out.status, out.stdout, out.stderr);
    out
}

/// Run another program of the installed PostgreSQL (pg_dump, pg_restore)
/// with `args`, in the tests' client environment, under a 2-minute guard.
pub fn pg_program(program: &str, args: &[&str]) -> CommandOutput {
    let mut cmd = client_command(program);
    cmd.args(args);
    run_with_timeout(&mut cmd, None, Duration::from_secs(120)).unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Run `sql` with psql in unaligned, tuples-only mode and return its stdout
/// (trimmed); panics with psql's stderr if it fails.
pub fn psql_sql(url: &str, sql: &str) -> String {
    let out = psql(url, &["-A", "-t", "-q", "-c", sql], None);
    assert!(out.success(), "psql failed ({:?}) on {sql:?}:\n{}{}", out.status, out.stdout, out.stderr);
    out.stdout.trim().to_string()
}

/// What a pgbench run reported.
#[derive(Debug, Clone)]
pub struct PgbenchRun {
    pub output: CommandOutput,
    /// "tps = N (without initial connection time)".
    pub tps: Option<f64>,
    /// "number of transactions actually processed: N".
    pub processed: Option<u64>,
    /// "number of failed transactions: N" (PostgreSQL 15+ prints it).
    pub failed: Option<u64>,
}

impl PgbenchRun {
    /// Exited 0 and reported no failed transactions; panics with the output otherwise.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.output.success() && self.failed.unwrap_or(0) == 0,
            "pgbench failed ({:?}, failed transactions: {:?}):\n{}\n{}",
            self.output.status,
            self.failed,
            self.output.stdout,
            self.output.stderr
        );
        self
    }
}

/// Run pgbench against `url` (the URL is pgbench's dbname argument), e.g.
/// `pgbench(&url, &["-i", "-s", "1"])` or `pgbench(&url, &["-S", "-c", "4", "-T", "5"])`.
/// Times out after 10 minutes.
pub fn pgbench(url: &str, args: &[&str]) -> PgbenchRun {
    let mut cmd = client_command("pgbench");
    cmd.args(args).arg(url);
    let output = run_with_timeout(&mut cmd, None, Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("cannot run pgbench: {e}"));
    let value = |prefix: &str| summary_value(&output.stdout, prefix);
    PgbenchRun {
        tps: value("tps = ").and_then(|v| v.parse().ok()),
        processed: value("number of transactions actually processed:").and_then(|v| v.parse().ok()),
        failed: value("number of failed transactions:").and_then(|v| v.parse().ok()),
        output,
    }
}

/// The number after `prefix` on pgbench's summary line ("12345/12345" -> "12345").
fn summary_value(stdout: &str, prefix: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|v| v.split('/').next().unwrap_or(v).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_summary() {
        let stdout = "transaction type: <builtin: select only>\n\
            number of transactions actually processed: 12345/12345\n\
            number of failed transactions: 0 (0.000%)\n\
            latency average = 0.081 ms\n\
            tps = 12297.637415 (without initial connection time)\n";
        let value = |prefix: &str| summary_value(stdout, prefix);
        assert_eq!(value("tps = ").unwrap(), "12297.637415");
        assert_eq!(value("number of transactions actually processed:").unwrap(), "12345");
        assert_eq!(value("number of failed transactions:").unwrap(), "0");
    }
}
