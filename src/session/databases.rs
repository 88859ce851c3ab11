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
//! - CREATE ... TEMPLATE of a replicated database (Django's parallel test
//!   runner clones its test database so): chorus first stops replicating
//!   the template and closes its own connections to it (nobody may use a
//!   template being copied); once the leader made its copy, every follower
//!   copies its own template, which holds what the leader's held up to the
//!   LSN it had applied (the copy's applier replays the rest from the log
//!   the leader's copy carries), and the template is replicated again.
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
use crate::protocol::{ClientError, sqlstate};
use crate::sql::database::DatabaseStmt;
use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite};

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Before the leader runs the statement: nothing of chorus's may be
    /// connected to a database it drops or copies. `Err`: refused.
    pub(super) async fn before_database_statement(&mut self, d: &DatabaseStmt) -> Result<(), ClientError> {
        let covers = |db: &str| self.ctx.config.replication.covers(db);
        let idle = match (&d.template, d.drop) {
            (_, true) => &d.name,
            (Some(source), false) if d.copies_a_database() => {
                if covers(&d.name) && !covers(source) {
                    return Err(ClientError::new(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!(
                            "chorus cannot replicate a copy of {source}: it does not replicate that database \
                             ([replication] databases), so the followers have no copy of it to start from"
                        ),
                    )
                    .with_hint("Create the database empty and load its data through chorus."));
                }
                source
            }
            _ => return Ok(()),
        };
        if covers(idle) {
            self.ctx.replication.retire(idle).await;
        }
        for node in self.ctx.topology.nodes() {
            node.pool.forget(idle).await;
        }
        Ok(())
    }

    /// The client's CREATE/DROP DATABASE ended (`succeeded`: on the leader).
    pub(super) async fn mirror_database(&mut self, d: DatabaseStmt, succeeded: bool) {
        let replication = self.ctx.replication.clone();
        let covers = |db: &str| self.ctx.config.replication.covers(db);
        let source = d.template.clone().filter(|_| d.copies_a_database());
        let mut problems = Vec::new();
        match (d.drop, succeeded) {
            (false, true) => {
                if let Some(source) = &source
                    && covers(&d.name)
                {
                    for (node, e) in replication.copied(&d.name, source).await {
                        problems.push(format!("chorus could not make the copy on follower {node} ({e})"));
                    }
                }
                if let Some(source) = &source {
                    replication.reinstate(source).await;
                }
                if covers(&d.name) {
                    match replication.ensure(&d.name).await {
                        Ok(()) => problems.extend(replication.unprepared_followers(&d.name).into_iter().map(
                            |(node, e)| {
                                format!(
                                    "chorus could not prepare its copy on follower {node} yet ({e}); its applier \
                                     keeps trying"
                                )
                            },
                        )),
                        Err(e) => problems.push(format!(
                            "chorus could not prepare it for replication yet ({e}); it tries again when a client \
                             connects to it"
                        )),
                    }
                }
            }
            (false, false) => {
                if let Some(source) = &source {
                    replication.reinstate(source).await;
                }
            }
            (true, true) if covers(&d.name) => {
                self.ctx.catalog.invalidate(&d.name);
                for (node, e) in replication.dropped(&d.name).await {
                    problems
                        .push(format!("chorus could not drop the copy on follower {node} ({e}); drop it there yourself"));
                }
            }
            (true, false) if covers(&d.name) => replication.reinstate(&d.name).await,
            (true, _) => {}
        }
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
