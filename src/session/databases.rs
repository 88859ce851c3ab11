//! CREATE DATABASE and DROP DATABASE through chorus (`WritePlan::database`).
//!
//! Neither belongs in a database's log, and neither can run in a
//! transaction block. The leader runs the client's statement as sent; chorus
//! mirrors it on the followers before the client hears of it:
//!
//! - CREATE: once it succeeded, the new database is prepared for
//!   replication at once (created on every follower like the leader's, with
//!   chorus's schema, its feed and appliers started), so the client's next
//!   connection to it finds it replicated.
//! - DROP: chorus first stops replicating the database and closes its own
//!   idle connections to it (the leader refuses to drop a database anyone is
//!   connected to), then the leader runs it; once it succeeded every
//!   follower's copy is dropped too. If the leader refused, replication
//!   resumes.
//!
//! A follower that cannot be reached is reported to the client as a
//! WARNING; a copy it keeps of a dropped database is never applied to again
//! (its id differs from the next database of that name: see
//! `replication::migrate::ensure_on_follower`).

use super::Session;
use crate::protocol::ClientError;
use crate::sql::database::DatabaseStmt;
use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite};

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Before the leader runs `DROP DATABASE name`: nothing of chorus's may
    /// be connected to it.
    pub(super) async fn before_dropping_database(&mut self, name: &str) {
        if self.ctx.config.replication.covers(name) {
            self.ctx.replication.retire(name).await;
        }
        for node in self.ctx.topology.nodes() {
            node.pool.forget(name).await;
        }
    }

    /// The client's CREATE/DROP DATABASE ended (`succeeded`: on the leader).
    pub(super) async fn mirror_database(&mut self, d: DatabaseStmt, succeeded: bool) {
        if !self.ctx.config.replication.covers(&d.name) {
            return;
        }
        let replication = self.ctx.replication.clone();
        let problems = match (d.drop, succeeded) {
            (false, true) => match replication.ensure(&d.name).await {
                Ok(()) => replication
                    .unprepared_followers(&d.name)
                    .into_iter()
                    .map(|(node, e)| {
                        format!("chorus could not prepare its copy on follower {node} yet ({e}); its applier keeps trying")
                    })
                    .collect(),
                Err(e) => vec![format!(
                    "chorus could not prepare it for replication yet ({e}); it tries again when a client connects \
                     to it"
                )],
            },
            (false, false) => Vec::new(),
            (true, true) => {
                self.ctx.catalog.invalidate(&d.name);
                replication.dropped(&d.name)
                    .await
                    .into_iter()
                    .map(|(node, e)| {
                        format!("chorus could not drop the copy on follower {node} ({e}); drop it there yourself")
                    })
                    .collect()
            }
            (true, false) => {
                replication.reinstate(&d.name).await;
                Vec::new()
            }
        };
        for p in problems {
            tracing::warn!(db = %d.name, drop = d.drop, problem = %p, "database statement not mirrored everywhere");
            let w = ClientError {
                severity: "WARNING",
                ..ClientError::new(
                    "01000",
                    format!("the database {} was {} on the leader, but {p}", d.name, if d.drop { "dropped" } else { "created" }),
                )
            };
            self.cout.put_slice(&w.to_notice().frame);
        }
    }
}
