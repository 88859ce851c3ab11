//! The `chorus` command line: serve a configuration, check one, bring up a local demo,
//! or verify that the nodes hold the same data.

use anyhow::Context;
use chorus::config::Config;
use chorus::demo::{self, DemoOptions};
use chorus::server::Server;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "chorus",
    version,
    about = "A PostgreSQL and MySQL wire-protocol proxy: writes to the leader, reads to followers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve clients with the given configuration until SIGINT/SIGTERM.
    Run {
        /// The TOML configuration file (CHORUS__SECTION__KEY variables override it).
        #[arg(long, short, env = "CHORUS_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file: print every problem and exit non-zero, or
    /// print "configuration OK".
    CheckConfig { file: PathBuf },
    /// Start a local leader and followers from the installed PostgreSQL binaries,
    /// chorus in front of them, and write DIR/demo.env; runs until SIGINT/SIGTERM.
    Demo {
        /// Where the servers' data, the generated config and demo.env go.
        #[arg(long, default_value = demo::DEFAULT_DIR)]
        dir: PathBuf,
        /// How many followers to start besides the leader.
        #[arg(long, default_value_t = 2)]
        followers: usize,
        /// Start MariaDB servers (MySQL protocol) instead of PostgreSQL ones;
        /// with --postgres too, both, behind one chorus.
        #[arg(long)]
        mysql: bool,
        /// Start PostgreSQL servers (the default when --mysql is not given).
        #[arg(long)]
        postgres: bool,
    },
    /// Compare every table of every database on every node with its leader's
    /// (columns and an order-independent content checksum), PostgreSQL and
    /// MySQL nodes alike; print one line per difference and a summary. Exit
    /// status: 0 all match, 1 differences, 2 error.
    Verify {
        /// The TOML configuration file (CHORUS__SECTION__KEY variables override it).
        #[arg(long, short, env = "CHORUS_CONFIG")]
        config: PathBuf,
        /// Only this database (repeatable); default: every database on the leader.
        #[arg(long = "database", short = 'd', value_name = "NAME")]
        databases: Vec<String>,
        /// How long to wait for every follower to apply the leader's log
        /// position before comparing (e.g. "30s", "2m"); exit 2 if one does not.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
    /// Print every node's role, health and replication lag per replicated
    /// database, read from the nodes themselves (chorus need not be running;
    /// `SHOW chorus.status` through chorus shows chorus's own view). Exit
    /// status: 0 every node is up, 1 some node is down, 2 error.
    Status {
        /// The TOML configuration file (CHORUS__SECTION__KEY variables override it).
        #[arg(long, short, env = "CHORUS_CONFIG")]
        config: PathBuf,
        /// Only this database (repeatable); default: every replicated database.
        #[arg(long = "database", short = 'd', value_name = "NAME")]
        databases: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::CheckConfig { file } => return check_config(&file),
        Command::Verify { config, databases, wait } => return verify(&config, databases, wait),
        Command::Status { config, databases } => return status(&config, databases),
        Command::Run { config } => runtime().and_then(|rt| rt.block_on(run(config))),
        Command::Demo { dir, followers, mysql, postgres } => runtime().and_then(|rt| {
            let opts = DemoOptions { dir, followers, postgres: postgres || !mysql, mysql };
            rt.block_on(async { demo::run(opts, shutdown_signal()).await.context("chorus demo failed") })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, "a: b: c", skipping a cause whose text its parent
/// already includes (errors that both print and expose their source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the tokio runtime")
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(_) => {
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// `chorus verify`: differences on stdout, one per line, then the summary
/// (with nodes of both dialects, one summary per dialect, `postgres: ...` and
/// `mysql: ...`); exit 0 when every node matches its leader, 1 when something
/// differs, 2 when no verdict was reached (bad config, unreachable node, failed
/// query, a follower that did not reach the leader's log position within `--wait`).
fn verify(config_path: &std::path::Path, databases: Vec<String>, wait: std::time::Duration) -> ExitCode {
    let result = Config::load(config_path).with_context(|| format!("{}", config_path.display())).and_then(|config| {
        let options = chorus::verify::VerifyOptions { databases };
        runtime()?.block_on(chorus::verify::verify_clusters(&config, &options, wait)).map_err(anyhow::Error::from)
    });
    match result {
        Ok(reports) => {
            for (_, report) in &reports {
                for d in &report.differences {
                    println!("{d}");
                }
            }
            if let [(_, report)] = &reports[..] {
                println!("{}", report.summary());
            } else {
                for (dialect, report) in &reports {
                    println!("{}: {}", dialect.name(), report.summary());
                }
            }
            if reports.iter().all(|(_, r)| r.converged()) { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// `chorus status`: the table on stdout.
fn status(config_path: &std::path::Path, databases: Vec<String>) -> ExitCode {
    let result = Config::load(config_path).with_context(|| format!("{}", config_path.display())).and_then(|config| {
        let timeout = config.limits.connect_timeout;
        runtime()?.block_on(chorus::status::collect(&config, &databases, timeout)).map_err(anyhow::Error::msg)
    });
    match result {
        Ok(rows) => {
            print!("{}", chorus::status::table(&rows));
            if rows.iter().all(|r| r.state == "up") { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&config_path).with_context(|| format!("{}", config_path.display()))?;
    let server = Server::bind(config).await?;
    if let Some(ctx) = server.context() {
        tokio::spawn(reload_on_sighup(ctx));
    }
    server.run(shutdown_signal()).await?;
    tracing::info!("chorus stopped");
    Ok(())
}

/// SIGHUP: read the policy files again. A bad file changes nothing; every
/// problem is logged and the policies in force stay.
async fn reload_on_sighup(ctx: std::sync::Arc<chorus::context::Context>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot install a SIGHUP handler; policies will not reload");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match ctx.reload_policies() {
            Ok(rules) => tracing::info!(rules, "SIGHUP: policies reloaded"),
            Err(e) => tracing::error!("SIGHUP: policies not reloaded, the previous ones stay in force; {e}"),
        }
    }
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("cannot install a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("cannot install a SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
