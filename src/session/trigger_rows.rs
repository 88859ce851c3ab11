//! Rows that a captured write's triggers insert into other tables.
//!
//! A write to a table whose trigger computes values a follower would
//! compute differently is captured (capture.rs): the leader's rows of that
//! table are logged and applied on followers with its triggers left out.
//! When the triggers also INSERT into other tables (the audit trigger:
//! `INSERT INTO audit VALUES (NEW.id, now(), current_user)`), those rows
//! would be lost on the followers, so chorus captures them too:
//!
//! 1. Each table such a trigger inserts into gets chorus's trigger
//!    `_chorus_capture` (on the leader, once, on a connection of its own;
//!    `migrations/postgres/0005_trigger_rows.sql`), which notes every row a
//!    trigger inserts there in the session's temporary table
//!    `_chorus_trigger_rows`.
//! 2. Before the captured write chorus creates (if need be) and empties that
//!    table on the session's leader connection, in the write's transaction.
//! 3. Once the write has run, before anything else of the transaction is
//!    logged (or it commits), chorus reads the noted rows back and logs them,
//!    in the order they were inserted, right after the write's own rows;
//!    followers insert them as they are (`_chorus.apply_rows`).
//!
//! A row that a trigger of a replayed (not captured) write notes is emptied
//! away before the next captured write: followers make it themselves when
//! they replay that write.

use super::capture::{CaptureOp, CaptureSpec};
use super::{Session, SessionError};
use crate::protocol::{ClientError, Fields, build};
use crate::sql::quote::{quote_ident, quote_literal};
use bytes::Bytes;
use dashmap::DashSet;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Creates the session's table of noted rows, and empties it.
const PREPARE_SQL: &str = "CREATE TEMP TABLE IF NOT EXISTS _chorus_trigger_rows \
     (n bigint GENERATED ALWAYS AS IDENTITY, tab pg_catalog.oid NOT NULL, row text NOT NULL); \
     DELETE FROM pg_temp._chorus_trigger_rows";

/// Takes the noted rows out: (schema-qualified, quoted table, row text), in order.
const COLLECT_SQL: &str = "WITH d AS (DELETE FROM pg_temp._chorus_trigger_rows RETURNING n, tab, row) \
     SELECT pg_catalog.quote_ident(s.nspname) || '.' || pg_catalog.quote_ident(c.relname), d.row FROM d \
     JOIN pg_catalog.pg_class c ON c.oid = d.tab JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace \
     ORDER BY d.n";

/// Tables known to carry chorus's capture trigger: (database, schema, table).
#[derive(Default)]
pub struct CaptureTriggers {
    installed: DashSet<(String, String, String)>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Before a request with a captured write whose triggers insert into
    /// `tables`: make sure those tables carry the capture trigger, and that
    /// the session's table of noted rows exists and is empty.
    pub(super) async fn prepare_trigger_rows(
        &mut self,
        node: usize,
        tables: &[(String, String)],
    ) -> Result<(), ClientError> {
        for (schema, table) in tables {
            self.install_capture_trigger(schema, table).await?;
        }
        let conn = self.conns[node].as_mut().expect("connected");
        match conn.simple_oob(PREPARE_SQL).await {
            Ok(()) => Ok(()),
            Err(crate::backend::BackendError::Server(e)) => Err(ClientError::from_server(&e, false)),
            Err(e) => Err(self.backend_error(node, e)),
        }
    }

    /// Put `_chorus_capture` on `schema.table`, on a connection of chorus's
    /// own (committed at once; never logged: followers apply the rows it
    /// notes). It waits at most 2 s for the table's lock: a transaction that
    /// already wrote the table holds it.
    async fn install_capture_trigger(&self, schema: &str, table: &str) -> Result<(), ClientError> {
        let key = (self.database.to_string(), schema.to_string(), table.to_string());
        if self.ctx.capture_triggers.installed.contains(&key) {
            return Ok(());
        }
        let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
        let sql = format!(
            "SET lock_timeout = '2s'; \
             DO $chorus$ BEGIN \
               IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgname = '_chorus_capture' \
                 AND tgrelid = {}::pg_catalog.regclass) THEN \
                 CREATE TRIGGER _chorus_capture AFTER INSERT ON {qualified} \
                   FOR EACH ROW EXECUTE FUNCTION _chorus.capture_row(); \
               END IF; END $chorus$",
            quote_literal(&qualified)
        );
        let leader = self.ctx.config.leader();
        let failed = |why: String| {
            ClientError::new(
                "55P03",
                format!(
                    "chorus could not prepare {qualified} to capture the rows triggers insert into it ({why}); \
                     nothing was written"
                ),
            )
            .with_hint("Retry the statement; a transaction that already wrote that table may have held it.")
        };
        let client = crate::replication::connect(leader, &self.database, "chorus-migrate", self.ctx.config.limits.connect_timeout)
            .await
            .map_err(|e| failed(e.to_string()))?;
        match client.batch_execute(&sql).await {
            Ok(()) => {}
            // Another session put it there meanwhile.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => {}
            Err(e) => return Err(failed(crate::replication::pg_text(&e))),
        }
        tracing::info!(db = %self.database, table = %qualified, "capture trigger installed");
        self.ctx.capture_triggers.installed.insert(key);
        Ok(())
    }

    /// The rows the last captured write's triggers inserted, read back and
    /// logged after that write's own (see the module notes). Nothing to do
    /// unless a write noted rows; a transaction the write aborted has none.
    pub(super) async fn collect_trigger_rows(&mut self, node: usize) -> Result<(), SessionError> {
        if !self.wtxn.as_ref().is_some_and(|t| t.trigger_rows_pending) {
            return Ok(());
        }
        if let Some(t) = self.wtxn.as_mut() {
            t.trigger_rows_pending = false;
        }
        let Some(conn) = self.conns[node].as_mut() else { return Ok(()) };
        if conn.status != b'T' {
            return Ok(());
        }
        let mut rows: Vec<(String, Bytes)> = Vec::new();
        let r = conn
            .exchange_rows_oob(&[build::query(COLLECT_SQL)], |body| {
                let mut f = Fields::new(body);
                if f.i16() != Some(2) {
                    return;
                }
                let mut col = || {
                    let n = f.i32().filter(|&n| n >= 0)?;
                    f.bytes(n as usize).map(<[u8]>::to_vec)
                };
                if let (Some(table), Some(row)) = (col(), col()) {
                    rows.push((String::from_utf8_lossy(&table).into_owned(), Bytes::from(row)));
                }
            })
            .await;
        if let Err(e) = r {
            // The transaction cannot commit faithfully: abort it.
            tracing::warn!(error = %e, "could not read the rows triggers inserted");
            if let Some(t) = self.wtxn.as_mut() {
                t.poisoned = Some("rows inserted by triggers that chorus could not read back");
            }
            return match e {
                crate::backend::BackendError::Server(_) => Ok(()),
                e => Err(self.server_lost(node, e)),
            };
        }
        let Some(t) = self.wtxn.as_mut() else { return Ok(()) };
        let mut current: Option<(String, u64)> = None;
        for (table, row) in rows {
            let id = match &current {
                Some((name, id)) if *name == table => *id,
                _ => {
                    let spec = CaptureSpec {
                        table_sql: table.as_str().into(),
                        op: CaptureOp::Insert,
                        quiet: false,
                        hide: true,
                        clause: String::new(),
                        trigger_rows: Vec::new(),
                    };
                    let id = t.push_captured(Arc::new(spec));
                    current = Some((table, id));
                    id
                }
            };
            t.captured_row(id, row);
        }
        Ok(())
    }
}
