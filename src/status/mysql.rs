//! `chorus status` for MySQL/MariaDB nodes: the one log's LSN on the leader
//! (database `*`: MySQL's log covers every database), each follower's
//! applied LSN and lag, read from the nodes.

use super::{Row, down};
use crate::config::{Config, Role};
use crate::replication::mysql::SERVER_LOG;
use crate::replication::mysql::conn::{connect, my_text};
use mysql_async::prelude::Queryable;
use std::time::Duration;

/// One number from `sql`; None when there is no row or chorus's schema is
/// missing (ER_NO_SUCH_TABLE, ER_BAD_DB_ERROR).
async fn number(c: &mut mysql_async::Conn, sql: &str, arg: Option<i64>) -> Result<Option<i64>, String> {
    let r: Result<Option<Option<i64>>, _> = match arg {
        Some(a) => c.exec_first(sql, (a,)).await,
        None => c.query_first(sql).await,
    };
    match r {
        Ok(v) => Ok(v.flatten()),
        Err(mysql_async::Error::Server(e)) if e.code == 1146 || e.code == 1049 => Ok(None),
        Err(e) => Err(my_text(&e)),
    }
}

pub(super) async fn collect(config: &Config, timeout: Duration) -> Result<Vec<Row>, String> {
    let leader = config.leader();
    let db = SERVER_LOG;
    let mut lc = match connect(leader, None, timeout).await {
        Ok(c) => c,
        Err(e) => return Ok(vec![down(leader, "leader", db, e.to_string())]),
    };
    let lsn = number(&mut lc, "SELECT lsn FROM _chorus.lsn WHERE id = 1", None)
        .await
        .map_err(|e| format!("leader {}: {e}", leader.name))?;
    let Some(lsn) = lsn else {
        // chorus never set up its schema here: nothing replicates yet.
        return Ok(Vec::new());
    };
    let mut out = vec![Row {
        node: leader.name.clone(),
        role: "leader",
        state: "up".into(),
        database: db.to_string(),
        position: Some(lsn),
        lag_txns: None,
        lag: None,
    }];
    for f in config.nodes.iter().filter(|n| n.role == Role::Follower) {
        let mut fc = match connect(f, None, timeout).await {
            Ok(c) => c,
            Err(e) => {
                out.push(down(f, "follower", db, e.to_string()));
                continue;
            }
        };
        let applied = number(&mut fc, "SELECT lsn FROM _chorus.applied WHERE id = 1", None)
            .await
            .map_err(|e| format!("follower {}: {e}", f.name))?;
        let lag = match applied {
            Some(a) if a < lsn => number(
                &mut lc,
                "SELECT TIMESTAMPDIFF(MICROSECOND, committed_at, UTC_TIMESTAMP(6)) FROM _chorus.log WHERE lsn = ?",
                Some(a + 1),
            )
            .await
            .map_err(|e| format!("leader {}: {e}", leader.name))?
            .map(|m| Duration::from_micros(m.max(0) as u64)),
            Some(_) => Some(Duration::ZERO),
            None => None,
        };
        out.push(Row {
            node: f.name.clone(),
            role: "follower",
            state: if applied.is_some() { "up" } else { "not set up" }.into(),
            database: db.to_string(),
            position: applied,
            lag_txns: applied.map(|a| (lsn - a).max(0)),
            lag,
        });
    }
    Ok(out)
}
