//! Statement replication, follower side: from the leader's log to every follower.
//!
//! The flow, per replicated database:
//!
//! ```text
//! session write on the leader: UPDATE _chorus.lsn (+1) ... INSERT INTO _chorus.log ... COMMIT
//!     --NOTIFY _chorus_log--> feed (one per database: LISTEN on the leader, reads its LSN,
//!                                   trims the leader's log)
//!     --leader LSN (watch)--> applier (one per follower and database)
//!         fetches whole transactions (all rows of an LSN) from the leader's _chorus.log,
//!         replays each on the follower over a raw protocol connection, in ONE transaction
//!         that also copies the log rows and advances _chorus.lsn and _chorus.applied
//!     --applied LSN (watch)--> ReplicationState (sessions wait on it; verify reads the tables)
//! ```
//!
//! - [`migrate`]: chorus's bookkeeping schema (`migrations/postgres/*.sql`) in
//!   every replicated database on every node; creates a database missing on a follower.
//! - [`feed`]: the leader side of one database: LISTEN, LSN polling, log fetches, trimming.
//! - [`apply`]: one follower's applier task (retries, backoff, divergence).
//! - [`txn`]: one logged transaction as the pipelined messages that replay it,
//!   and the reading of their replies.
//! - [`state`]: progress (applied LSNs) everybody can watch and wait on.
//! - [`supervisor`]: starts all of it, and [`Replication::ensure`] for new databases.
//!
//! A statement that fails on a follower only is a *divergence*: that follower
//! stops applying the database and leaves the read rotation until an operator
//! repairs it and restarts chorus. A connection failure is not: the applier
//! reconnects with backoff and resumes after the recorded applied LSN.

pub mod apply;
pub mod feed;
pub mod migrate;
pub mod mysql;
pub mod state;
pub mod supervisor;
pub mod txn;

pub use migrate::{MIGRATIONS, ensure_database, migrate};
pub use state::{Divergence, ReplicationState};
pub use supervisor::Replication;

use crate::config::Node;
use std::time::Duration;

/// A log position: the value of the leader's `_chorus.lsn` counter after the
/// transaction that took it. Per database, gapless, starting at 1.
pub type Lsn = i64;

/// Why a replication step failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("cannot connect to {node} (database {database}): {}", pg_text(.source))]
    Connect {
        node: String,
        database: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("timed out connecting to {node} (database {database})")]
    Timeout { node: String, database: String },
    #[error("{node}, database {database}: {what} failed: {}", pg_text(.source))]
    Query {
        node: String,
        database: String,
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the leader {0} is down")]
    LeaderDown(String),
    /// The follower's copy of the database belongs to an earlier database of
    /// the same name (see `migrate::ensure_on_follower`).
    #[error(
        "{node} holds a database {database} left over from an earlier database of that name (dropped on the \
         leader while {node} was unreachable); chorus does not apply to it: drop it on {node} and chorus \
         builds it anew"
    )]
    Stale { node: String, database: String },
    /// The leader's database was dropped and created again under its name
    /// (its id changed): what chorus knew of the old one no longer holds.
    #[error("the database {database} on the leader was dropped and created again")]
    Replaced { database: String },
    /// A recent attempt failed with this; not retried yet.
    #[error("{0} (recent failure, retried shortly)")]
    Recent(String),
}

impl ReplicationError {
    /// True when the database itself does not exist on the node (3D000).
    pub fn is_missing_database(&self) -> bool {
        match self {
            ReplicationError::Connect { source, .. } | ReplicationError::Query { source, .. } => {
                source.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME)
            }
            _ => false,
        }
    }
}

/// A tokio-postgres error with the server's SQLSTATE and message, or the
/// chain of causes (its Display alone says only "db error").
pub(crate) fn pg_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A control-plane connection (tokio-postgres) to `db` on `node` with chorus's
/// credentials; the caller drives (or spawns) the returned connection.
pub(crate) async fn connect_raw(
    node: &Node,
    db: &str,
    application_name: &str,
    timeout: Duration,
) -> Result<
    (tokio_postgres::Client, tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>),
    ReplicationError,
> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&node.host)
        .port(node.port)
        .user(&node.user)
        .dbname(db)
        .application_name(application_name)
        .connect_timeout(timeout);
    if let Some(p) = &node.password {
        cfg.password(p);
    }
    // connect_timeout bounds the TCP connect only; a server that accepts and
    // then never answers must not hold a caller (a starting session) longer.
    let connecting = cfg.connect(tokio_postgres::NoTls);
    let failed = |source| ReplicationError::Connect { node: node.name.clone(), database: db.to_string(), source };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(r) => r.map_err(failed),
        Err(_) => Err(ReplicationError::Timeout { node: node.name.clone(), database: db.to_string() }),
    }
}

/// Like [`connect_raw`], with the connection driven by a spawned task.
pub(crate) async fn connect(
    node: &Node,
    db: &str,
    application_name: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Client, ReplicationError> {
    let (client, conn) = connect_raw(node, db, application_name, timeout).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Counts consecutive failures of a retry loop, so a node that stays down
/// logs a warning at the first failure and then once a minute or so, not on
/// every retry.
#[derive(Debug, Default)]
pub(crate) struct Failures(u32);

impl Failures {
    /// Count one failure; true when it deserves a warning.
    pub(crate) fn record(&mut self) -> bool {
        self.0 += 1;
        self.0 == 1 || self.0.is_multiple_of(12)
    }
    pub(crate) fn reset(&mut self) {
        self.0 = 0;
    }
}

/// Turn a query error into a [`ReplicationError::Query`] naming what failed.
pub(crate) fn query_error(node: &Node, db: &str, what: &str) -> impl FnOnce(tokio_postgres::Error) -> ReplicationError {
    let (node, database, what) = (node.name.clone(), db.to_string(), what.to_string());
    move |source| ReplicationError::Query { node, database, what, source }
}
