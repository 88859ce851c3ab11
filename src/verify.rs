//! `verify`: the judge of convergence. Checksums every table of every replicated
//! database on every node and names the ones that differ from the leader.
//!
//! Each dialect of the configuration is a cluster of its own (one leader, its
//! followers: [`Config::for_dialect`]) and is verified on its own; a
//! configuration with both gets one [`Report`] per dialect ([`verify_clusters`]).
//! PostgreSQL is read by [`collect`] and waited for by [`wait`], MySQL and
//! MariaDB by [`mysql`]; both turn each node into a [`NodeSnapshot`], and
//! [`compare`] (pure, shared by both) turns snapshots into a [`Report`].
//!
//! What is compared on PostgreSQL:
//! - databases: every non-template database that accepts connections on the
//!   leader (including `postgres`); one missing on a follower, or present only
//!   on a follower, is a difference;
//! - tables: every ordinary table (relkind 'r', so partitions too; partitioned
//!   parents hold no rows) outside `pg_catalog`, `information_schema`, toast and
//!   temporary schemas and chorus's own `_chorus` schema;
//! - per table: the columns (name, `format_type`, NOT NULL, in order) and the
//!   content as a row count plus an order-independent checksum (a sum of the
//!   rows' md5 halves: O(1) memory, any table size). Rows are printed with fixed
//!   DateStyle, TimeZone, extra_float_digits ... so server defaults do not matter;
//! - sequences (same schemas): their state, `last_value` and `is_called`.
//!
//! Before comparing a replicated database (one with `_chorus`), [`wait`] waits
//! until every follower has applied the leader's current LSN. What is compared
//! on MySQL, and how it waits, is in [`mysql`].
//!
//! Not yet: indexes, constraints, views and functions.

mod collect;
mod compare;
mod mysql;
mod wait;

pub use compare::{Column, Content, Detail, Difference, NodeSnapshot, Report, TableName, TableSummary, compare};
pub use wait::Behind;

/// How long [`verify_with`] waits for followers to reach the leader's LSN.
pub const DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

use crate::config::{Config, Dialect, Node, Role};
use std::time::Duration;

/// What to compare.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only these databases; empty means every database on the leader (and any
    /// found only on followers).
    pub databases: Vec<String>,
}

/// Why verify could not reach a verdict (a verdict with differences is an
/// `Ok(Report)`, not an error).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot connect to node {node} (database {database}): {source}")]
    Connect {
        node: String,
        database: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("node {node}, database {database}: {what} failed: {source}")]
    Query {
        node: String,
        database: String,
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("database {0} does not exist on any node")]
    NoSuchDatabase(String),
    #[error(
        "database {database}: followers did not reach the leader's LSN {leader_lsn} within {}: {}",
        humantime::format_duration(*waited),
        behind.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    Behind { database: String, leader_lsn: i64, waited: std::time::Duration, behind: Vec<Behind> },
    #[error("cannot connect to node {node}: {source}")]
    MysqlConnect {
        node: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("node {node}: {what} failed: {source}")]
    MysqlQuery {
        node: String,
        what: String,
        #[source]
        source: mysql_async::Error,
    },
    /// MySQL LSNs are per server (one log for all databases), so there is no
    /// database to name.
    #[error(
        "MySQL followers did not reach the leader's LSN {leader_lsn} within {}: {}",
        humantime::format_duration(*waited),
        behind.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    MysqlBehind { leader_lsn: i64, waited: std::time::Duration, behind: Vec<Behind> },
}

/// Compare every replicated database on every node of `config`.
pub async fn verify(config: &Config) -> Result<Report, VerifyError> {
    verify_with(config, &VerifyOptions::default()).await
}

/// Compare the databases `options` selects on every node of `config`, after
/// waiting up to [`DEFAULT_WAIT`] for followers to apply the leader's log.
pub async fn verify_with(config: &Config, options: &VerifyOptions) -> Result<Report, VerifyError> {
    verify_waiting(config, options, DEFAULT_WAIT).await
}

/// Compare the databases `options` selects on every node of `config`, every
/// dialect's cluster, as one report ([`verify_clusters`] keeps them apart).
/// Each replicated database is compared once every follower that has it
/// applied the leader's current LSN; [`VerifyError::Behind`] (or
/// [`VerifyError::MysqlBehind`]) names the followers that did not within
/// `wait`. Nodes are read concurrently; each leader comes before its followers
/// in the report.
pub async fn verify_waiting(config: &Config, options: &VerifyOptions, wait: Duration) -> Result<Report, VerifyError> {
    Ok(merge(verify_clusters(config, options, wait).await?.into_iter().map(|(_, report)| report)))
}

/// [`verify_waiting`], one report per dialect that has nodes (in
/// [`Dialect::ALL`] order), leaving out a dialect whose nodes have none of the
/// databases `options` selects. A selected database must exist on some node
/// of some dialect ([`VerifyError::NoSuchDatabase`]).
pub async fn verify_clusters(
    config: &Config,
    options: &VerifyOptions,
    wait: Duration,
) -> Result<Vec<(Dialect, Report)>, VerifyError> {
    let timeout = config.limits.connect_timeout;
    let mut clusters = Vec::new();
    for dialect in config.dialects() {
        let nodes = leader_first(&config.for_dialect(dialect));
        let listed = match dialect {
            Dialect::Postgres => {
                for_each_node(&nodes, move |node| async move { collect::databases(&node, timeout).await }).await?
            }
            Dialect::Mysql => {
                for_each_node(&nodes, move |node| async move { mysql::databases(&node, timeout).await }).await?
            }
        };
        clusters.push((dialect, nodes, listed));
    }
    if !options.databases.is_empty() {
        for (_, _, per_node) in &mut clusters {
            for dbs in per_node.iter_mut() {
                dbs.retain(|d| options.databases.contains(d));
            }
        }
        let exists = |d: &String| clusters.iter().any(|(_, _, per_node)| per_node.iter().any(|dbs| dbs.contains(d)));
        if let Some(absent) = options.databases.iter().find(|d| !exists(d)) {
            return Err(VerifyError::NoSuchDatabase(absent.clone()));
        }
        // `-d shop` on a configuration with both dialects means the cluster
        // that has shop; the other one has nothing to compare.
        clusters.retain(|(_, _, per_node)| per_node.iter().any(|dbs| !dbs.is_empty()));
    }
    let mut reports = Vec::with_capacity(clusters.len());
    for (dialect, nodes, per_node) in clusters {
        let report = match dialect {
            Dialect::Postgres => verify_postgres(nodes, per_node, wait, timeout).await?,
            // Lists its databases again after the wait (see `verify_cluster`).
            Dialect::Mysql => mysql::verify_cluster(nodes, options.databases.clone(), wait, timeout).await?,
        };
        reports.push((dialect, report));
    }
    Ok(reports)
}

/// One dialect's nodes, the leader first, then the followers in configuration order.
fn leader_first(config: &Config) -> Vec<Node> {
    let mut nodes: Vec<_> = config.nodes.iter().filter(|n| n.role == Role::Leader).cloned().collect();
    nodes.extend(config.nodes.iter().filter(|n| n.role != Role::Leader).cloned());
    nodes
}

/// Several clusters' reports as one: their nodes, counts and differences
/// (which name their nodes, unique across a configuration) side by side.
fn merge(reports: impl IntoIterator<Item = Report>) -> Report {
    let mut all = Report::default();
    for r in reports {
        all.nodes.extend(r.nodes);
        all.databases += r.databases;
        all.tables += r.tables;
        all.differences.extend(r.differences);
    }
    all
}

/// The PostgreSQL cluster `nodes` (leader first), whose nodes have the
/// databases `per_node` (selected): wait for the followers per database, then
/// snapshot every node and compare.
async fn verify_postgres(
    nodes: Vec<Node>,
    per_node: Vec<Vec<String>>,
    wait: Duration,
    timeout: Duration,
) -> Result<Report, VerifyError> {
    let leader_dbs = per_node.first().cloned().unwrap_or_default();
    let waits = leader_dbs.iter().map(|db| {
        let followers: Vec<Node> =
            nodes.iter().zip(&per_node).skip(1).filter(|(_, dbs)| dbs.contains(db)).map(|(n, _)| n.clone()).collect();
        let (leader, db) = (nodes[0].clone(), db.clone());
        tokio::spawn(async move { wait::wait_for_followers(&leader, &followers, &db, wait, timeout).await })
    });
    for w in waits.collect::<Vec<_>>() {
        w.await.expect("verify wait task panicked")?;
    }

    let jobs: Vec<_> = nodes.into_iter().zip(per_node).collect();
    let snapshots =
        for_each_node(&jobs, move |(node, dbs)| async move { collect::snapshot(&node, &dbs, timeout).await }).await?;
    Ok(compare(&snapshots))
}

/// Run `f` for every item concurrently; results in input order, or the error
/// of the first item (in input order) that failed.
async fn for_each_node<I, T, F, Fut>(items: &[I], f: F) -> Result<Vec<T>, VerifyError>
where
    I: Clone + Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = Result<T, VerifyError>> + Send + 'static,
{
    let handles: Vec<_> = items.iter().cloned().map(|item| tokio::spawn(f(item))).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("verify task panicked")?);
    }
    Ok(out)
}
