//! `verify` for a MySQL/MariaDB cluster (the nodes with `dialect = "mysql"`).
//!
//! Same verdict as for PostgreSQL, from the same pure [`compare`]: [`collect`]
//! turns each node into a [`NodeSnapshot`] (database -> table -> columns and
//! content checksum), after [`wait`] has waited for the followers to apply the
//! leader's log.
//!
//! What is compared:
//! - databases: every database except the server's own (`mysql`,
//!   `information_schema`, `performance_schema`, `sys`) and chorus's
//!   bookkeeping (`_chorus`: logs and applied positions legitimately differ);
//!   one missing on a follower, or present only on a follower, is a
//!   difference. A MySQL database is what PostgreSQL calls a schema, so its
//!   tables print as `database.table`;
//! - tables: every base table (and MariaDB's system-versioned ones, on their
//!   current rows); views and MariaDB sequences are not compared;
//! - per table: the columns from `information_schema.COLUMNS` (name,
//!   `COLUMN_TYPE` so `varchar(10)` vs `varchar(20)` counts, NOT NULL, in
//!   order) and the content as a row count plus an order-independent checksum
//!   of the rows' bytes (see `collect::checksum_sql`).
//!
//! Waiting differs from PostgreSQL's: MySQL LSNs are per server (one log for
//! every database), so the wait is once per cluster, not per database.

mod collect;
mod wait;

pub(super) use collect::databases;

use super::{Report, VerifyError, compare, for_each_node};
use crate::config::Node;
use std::time::Duration;

/// Verify the MySQL cluster `nodes` (leader first): wait up to `wait_for` for
/// every follower to apply the leader's LSN, then snapshot every node
/// concurrently (its databases read after the wait, so a database created
/// just before is not reported missing) and compare. `selected`: only these
/// databases; empty means all.
pub(super) async fn verify_cluster(
    nodes: Vec<Node>,
    selected: Vec<String>,
    wait_for: Duration,
    timeout: Duration,
) -> Result<Report, VerifyError> {
    let (leader, followers) = nodes.split_first().expect("a validated cluster has its leader");
    wait::wait_for_followers(leader, followers, wait_for, timeout).await?;
    let jobs: Vec<_> = nodes.iter().map(|n| (n.clone(), selected.clone())).collect();
    let snapshots =
        for_each_node(&jobs, move |(node, selected)| async move { collect::snapshot(&node, &selected, timeout).await })
            .await?;
    Ok(compare(&snapshots))
}
