//! The nodes, their roles, health and replication lag, as one table: what
//! `SHOW chorus.status` answers (chorus's own view: health checks,
//! divergences, applied positions as the appliers publish them) and what
//! `chorus status` prints (read from the nodes themselves, so it works
//! whether or not chorus is running).

mod mysql;
mod postgres;

use crate::config::{Config, Dialect, Node};
use crate::replication::{Lsn, ReplicationState};
use crate::topology::Topology;
use std::time::Duration;

/// One node in one database.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub node: String,
    pub role: &'static str,
    /// `up`, `down`, `diverged`, `unknown` (not reached yet), or why it is down.
    pub state: String,
    pub database: String,
    /// The leader's last committed LSN; a follower's applied LSN.
    pub position: Option<Lsn>,
    /// Transactions the follower has not applied yet.
    pub lag_txns: Option<i64>,
    /// Age of the oldest transaction the follower has not applied.
    pub lag: Option<Duration>,
}

pub const COLUMNS: [&str; 7] = ["node", "role", "state", "database", "position", "lag_transactions", "lag_ms"];

impl Row {
    /// The row's cells as text (NULL as None), in [`COLUMNS`] order.
    pub fn cells(&self) -> [Option<String>; 7] {
        [
            Some(self.node.clone()),
            Some(self.role.to_string()),
            Some(self.state.clone()),
            Some(self.database.clone()),
            self.position.map(|p| p.to_string()),
            self.lag_txns.map(|l| l.to_string()),
            self.lag.map(|l| format!("{:.1}", l.as_secs_f64() * 1000.0)),
        ]
    }
}

/// An aligned text table of `rows`, with a header.
pub fn table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = std::iter::once(COLUMNS.iter().map(|c| c.to_string()).collect())
        .chain(rows.iter().map(|r| r.cells().into_iter().map(|c| c.unwrap_or_else(|| "-".into())).collect()))
        .collect();
    let widths: Vec<usize> = (0..COLUMNS.len()).map(|i| cells.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (n, r) in cells.iter().enumerate() {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    out
}

/// chorus's own view of `db` (MySQL's one log: `*`): the leader, then
/// each follower.
pub fn from_state(topo: &Topology, state: &ReplicationState, db: &str) -> Vec<Row> {
    let progress = state.progress(db);
    let leader = topo.node(topo.leader());
    let mut rows = vec![Row {
        node: leader.name.to_string(),
        role: "leader",
        state: if leader.is_healthy() { "up" } else { "down" }.into(),
        database: db.to_string(),
        position: Some(progress.leader_committed()),
        lag_txns: None,
        lag: None,
    }];
    for v in progress.views(topo, true) {
        let n = topo.node(v.node);
        let state = if n.is_diverged() {
            "diverged"
        } else if !n.is_healthy() {
            "down"
        } else if v.applied.is_none() {
            "unknown"
        } else {
            "up"
        };
        rows.push(Row {
            node: n.name.to_string(),
            role: "follower",
            state: state.into(),
            database: db.to_string(),
            position: v.applied,
            lag_txns: v.applied.map(|_| v.lag_txns as i64),
            lag: v.applied.map(|_| v.lag),
        });
    }
    rows
}

/// Every node's view of the replicated databases (`databases`, or every
/// database on the leader that holds chorus's schema; MySQL's one log shows
/// as `*`), read from the nodes, for each dialect the configuration has.
pub async fn collect(config: &Config, databases: &[String], timeout: Duration) -> Result<Vec<Row>, String> {
    let mut out = Vec::new();
    for dialect in config.dialects() {
        let c = config.for_dialect(dialect);
        out.extend(match dialect {
            Dialect::Postgres => postgres::collect(&c, databases, timeout).await?,
            Dialect::Mysql => mysql::collect(&c, timeout).await?,
        });
    }
    Ok(out)
}

pub(crate) fn down(node: &Node, role: &'static str, db: &str, error: String) -> Row {
    Row {
        node: node.name.clone(),
        role,
        state: format!("down: {error}"),
        database: db.to_string(),
        position: None,
        lag_txns: None,
        lag: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_aligned_with_dashes_for_unknowns() {
        let rows = [
            Row {
                node: "leader".into(),
                role: "leader",
                state: "up".into(),
                database: "shop".into(),
                position: Some(1042),
                lag_txns: None,
                lag: None,
            },
            Row {
                node: "f1".into(),
                role: "follower",
                state: "up".into(),
                database: "shop".into(),
                position: Some(1040),
                lag_txns: Some(2),
                lag: Some(Duration::from_micros(3250)),
            },
        ];
        assert_eq!(
            table(&rows),
            "node    role      state  database  position  lag_transactions  lag_ms\n\
             ------  --------  -----  --------  --------  ----------------  ------\n\
             leader  leader    up     shop      1042      -                 -\n\
             f1      follower  up     shop      1040      2                 3.2\n"
        );
    }
}
