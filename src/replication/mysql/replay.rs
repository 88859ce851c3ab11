//! Replaying one logged statement on a follower's applier connection, so
//! that it computes what it computed on the leader: its default database,
//! then its context ([`entry::context_sql`]), then its text.
//!
//! The applier's connection outlives statements, and whatever one
//! statement's context set stays set for the next: [`Session`] keeps track,
//! so that a statement is never run under a setting that belonged to
//! another one (a session variable the next context lacks goes back to the
//! value the connection started with, a pending INSERT_ID is cleared).

use super::conn::quote_name;
use super::entry::{self, LoggedStatement};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::collections::{BTreeSet, HashMap};

/// What the applier knows about its follower connection's session.
#[derive(Debug, Default)]
pub struct Session {
    /// The default database, when known to be this one (None: none, or
    /// unknown): a statement with a database issues `USE` unless it is this.
    db: Option<String>,
    /// Session variables a replayed context set.
    set: BTreeSet<String>,
    /// Their values before the first context set them: what the connection
    /// started with. (Not `DEFAULT`, which is the global value: for the
    /// character set variables that is not what the handshake chose.)
    initial: HashMap<String, Option<String>>,
    /// character_set_client as the last context set it (None: the
    /// connection's own, utf8mb4).
    client_charset: Option<String>,
}

/// A statement failed: at which step of its replay, and how.
pub struct Failed {
    pub step: &'static str,
    pub error: mysql_async::Error,
}

/// [`Failed::step`] of the statement's own text.
pub const STATEMENT: &str = "statement";
/// [`Failed::step`] of selecting the statement's default database.
pub const USE: &str = "USE";

impl Session {
    /// After DDL: a DROP DATABASE may have taken the default database away.
    pub fn forget_db(&mut self) {
        self.db = None;
    }

    /// Replay `stmt` on `conn` (in whatever transaction is open there).
    pub async fn run(&mut self, conn: &mut Conn, stmt: &LoggedStatement) -> Result<(), Failed> {
        let failed = |step| move |error| Failed { step, error };
        if let Some(db) = &stmt.db
            && self.db.as_deref() != Some(db.as_str())
        {
            self.db = None;
            if !db.is_ascii() && self.client_charset.take().is_some() {
                // The name is UTF-8; the previous context read text otherwise.
                conn.query_drop("SET @@session.character_set_client = utf8mb4")
                    .await
                    .map_err(failed("setting character_set_client for USE"))?;
            }
            conn.query_drop(format!("USE {}", quote_name(db))).await.map_err(failed(USE))?;
            self.db = Some(db.clone());
        }
        self.restore_others(conn, stmt).await?;
        let mut context = entry::context_sql(&stmt.ctx);
        if stmt.ctx.insert_id.is_none() {
            // An INSERT_ID stays set until an AUTO_INCREMENT value takes it:
            // one logged for a statement that generated none (an explicit id,
            // which the OK packet reports too; an ON DUPLICATE KEY UPDATE)
            // would be taken by the next id generated here, a trigger's say.
            context.push_str(", INSERT_ID = 0");
        }
        // The text goes out as the bytes the leader's client sent, read by the
        // follower under the logged character_set_client as the leader read them.
        conn.query_drop(context).await.map_err(failed("setting the statement's context"))?;
        self.client_charset = client_charset(stmt);
        if let Some(data) = &stmt.infile {
            // LOAD DATA LOCAL: the follower asks for the file; it gets what
            // the leader's client sent.
            let data = bytes::Bytes::from(data.clone());
            conn.set_infile_handler(async move {
                let stream: mysql_async::InfileData = Box::pin(futures_util::stream::once(async move { Ok(data) }));
                Ok(stream)
            });
        }
        conn.query_drop(stmt.bytes()).await.map_err(failed(STATEMENT))
    }

    /// Variables an earlier context set that this one does not mention go
    /// back to their initial values; those it mentions for the first time
    /// get their initial values remembered first.
    async fn restore_others(&mut self, conn: &mut Conn, stmt: &LoggedStatement) -> Result<(), Failed> {
        let failed = |step| move |error| Failed { step, error };
        let names: BTreeSet<String> = stmt.ctx.session.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
        let new: Vec<&String> = names.iter().filter(|n| !self.initial.contains_key(*n)).collect();
        if !new.is_empty() {
            let select: Vec<String> = new.iter().map(|n| format!("@@session.{n}")).collect();
            let row: Option<mysql_async::Row> = conn
                .query_first(format!("SELECT {}", select.join(", ")))
                .await
                .map_err(failed("reading session variables"))?;
            let mut row = row;
            for (i, n) in new.into_iter().enumerate() {
                let value: Option<String> = row.as_mut().and_then(|r| r.take::<Option<String>, _>(i)).flatten();
                self.initial.insert(n.clone(), value);
            }
        }
        let stale: Vec<String> = self
            .set
            .difference(&names)
            .map(|n| format!("@@session.{n} = {}", value_sql(self.initial.get(n).cloned().flatten().as_deref())))
            .collect();
        // Whatever happens next, all of these may be set now.
        self.set.extend(names.iter().cloned());
        if !stale.is_empty() {
            conn.query_drop(format!("SET {}", stale.join(", ")))
                .await
                .map_err(failed("restoring session variables"))?;
        }
        self.set = names;
        Ok(())
    }
}

/// The character_set_client `stmt`'s context sets, unless utf8mb4 (or none).
fn client_charset(stmt: &LoggedStatement) -> Option<String> {
    let (_, cs) = stmt.ctx.session.iter().find(|(k, _)| k.eq_ignore_ascii_case("character_set_client"))?;
    (!cs.eq_ignore_ascii_case("utf8mb4")).then(|| cs.clone())
}

/// A variable's value as SQL: NULL, a number bare (boolean and numeric
/// variables refuse strings), anything else as a string literal.
fn value_sql(v: Option<&str>) -> String {
    match v {
        None => "NULL".to_string(),
        Some(v) if !v.is_empty() && v.parse::<f64>().is_ok() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
            v.to_string()
        }
        Some(v) => entry::literal(v),
    }
}

/// Server errors that say nothing about the data: locks and deadlocks,
/// resources, a shutdown or a killed connection, read-only mode, a cancel.
/// The entry is retried (after reconnecting), not reported as a divergence.
pub fn is_transient(code: u16) -> bool {
    matches!(
        code,
        1021 // disk full
            | 1037 | 1038 | 1041 // out of memory
            | 1040 // too many connections
            | 1053 // server shutdown in progress
            | 1114 // table is full (disk, tmp space)
            | 1152 | 1158
            ..=1161 // aborted connection, network errors
            | 1180 // got error during COMMIT
            | 1205 // lock wait timeout
            | 1213 // deadlock
            | 1290 | 1836 // read-only
            | 1317 // query interrupted
            | 1412 // table definition changed, retry the transaction
            | 1615 // prepared statement needs to be re-prepared
            | 1637 // too many active concurrent transactions
            | 1927 // connection killed
            | 1969 // max_statement_time exceeded
            | 3024 // max_execution_time exceeded (MySQL)
            | 4031 // disconnected by the server (MySQL)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_diverge_and_server_trouble_is_retried() {
        assert!(!is_transient(1062), "duplicate key: the follower differs");
        assert!(!is_transient(1050), "table exists");
        assert!(!is_transient(1146), "no such table");
        assert!(is_transient(1213) && is_transient(1205), "deadlock, lock wait");
        assert!(is_transient(1053) && is_transient(1927), "shutdown, killed");
    }

    #[test]
    fn initial_values_come_back_as_sql_of_their_type() {
        assert_eq!(value_sql(None), "NULL");
        assert_eq!(value_sql(Some("1")), "1");
        assert_eq!(value_sql(Some("10.000000")), "10.000000");
        assert_eq!(value_sql(Some("SYSTEM")), "CONVERT(X'53595354454D' USING utf8mb4)");
        assert_eq!(value_sql(Some("")), "''");
        assert_eq!(value_sql(Some("1e5")), "CONVERT(X'316535' USING utf8mb4)");
    }
}
