//! Errors chorus raises inside a client's transaction, with PostgreSQL's
//! semantics: after an error the transaction is aborted, later statements fail
//! with 25P02, and COMMIT ends it as a ROLLBACK.
//!
//! Two cases:
//! - the transaction lives on a server: chorus makes that server raise the
//!   error (a `DO ... RAISE`), so the server's own transaction state carries it;
//! - the transaction exists nowhere (its BEGIN was deferred and never sent, or
//!   its server connection was lost): the session emulates the aborted state
//!   ([`Session::local_abort`]) until COMMIT/ROLLBACK.

use super::statements::{bind_head, parse_head, target_head};
use super::{Inflight, Session, SessionError};
use crate::protocol::{ClientError, Message, build};
use crate::sql::Shape;
use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite};

/// A statement that makes the server raise `e` as its own error.
pub fn raise_statement(e: &ClientError) -> String {
    let lit = |s: &str| crate::sql::quote::quote_literal(s);
    let mut sql =
        format!("DO $chorus$ BEGIN RAISE EXCEPTION USING ERRCODE = {}, MESSAGE = {}", lit(&e.code), lit(&e.message));
    if let Some(h) = &e.hint {
        sql.push_str(&format!(", HINT = {}", lit(h)));
    }
    sql.push_str("; END $chorus$");
    sql
}

fn aborted_error() -> ClientError {
    ClientError::new("25P02", "current transaction is aborted, commands ignored until end of transaction block")
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Refuse a complete request (Query, or a batch ending in Sync). Inside a
    /// transaction on a live server connection, the server raises the error so
    /// its transaction is aborted exactly as if the statement had failed there.
    pub(super) async fn refuse_request(&mut self, e: ClientError) -> Result<(), SessionError> {
        self.batch.clear();
        if let Some(node) = self.txn_node
            && self.conns[node].is_some()
            && (!self.busy() || self.active == Some(node))
        {
            let inflight =
                Inflight { settings: vec![], ddl: false, extended: false, failed: false, ..Default::default() };
            return self.forward_request(node, &[build::query(&raise_statement(&e))], inflight).await;
        }
        self.reply_error(&e, true);
        Ok(())
    }

    /// In the emulated aborted state: a Query ends the transaction if it is
    /// COMMIT/ROLLBACK, anything else fails with 25P02.
    pub(super) fn local_abort_query(&mut self, shape: Shape) {
        match shape {
            Shape::Commit | Shape::Rollback => self.end_local_abort(),
            _ => self.reply_error(&aborted_error(), true),
        }
    }

    /// In the emulated aborted state: a batch that only ends the transaction
    /// gets the replies PostgreSQL would send for it; anything else fails.
    pub(super) fn local_abort_batch(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        let ends_txn = batch.iter().filter(|m| m.tag == b'P').all(|m| {
            parse_head(m)
                .is_some_and(|(_, sql)| matches!(self.ctx.classify.get(sql).shape, Shape::Commit | Shape::Rollback))
        }) && batch.iter().all(|m| match m.tag {
            b'B' => bind_head(m).is_some_and(|(_, s)| {
                batch.iter().any(|p| p.tag == b'P' && parse_head(p).is_some_and(|(n, _)| n == s))
                    || self
                        .statements
                        .get(s)
                        .is_some_and(|st| matches!(st.class.shape, Shape::Commit | Shape::Rollback))
            }),
            _ => true,
        });
        if !ends_txn || batch.iter().all(|m| m.tag != b'E') {
            self.reply_error(&aborted_error(), true);
            return;
        }
        for m in &batch {
            let reply = match m.tag {
                b'P' => Message::new(b'1', &[]),
                b'B' => Message::new(b'2', &[]),
                b'C' => Message::new(b'3', &[]),
                b'D' => {
                    if target_head(m).is_some_and(|(k, _)| k == b'S') {
                        self.cout.put_slice(&Message::new(b't', &[0, 0]).frame);
                    }
                    Message::new(b'n', &[])
                }
                b'E' => build::command_complete("ROLLBACK"),
                _ => continue,
            };
            self.cout.put_slice(&reply.frame);
        }
        self.local_abort = false;
        self.cout.put_slice(&build::ready_for_query(b'I').frame);
    }

    fn end_local_abort(&mut self) {
        self.local_abort = false;
        self.cout.put_slice(&build::command_complete("ROLLBACK").frame);
        self.cout.put_slice(&build::ready_for_query(b'I').frame);
    }

    /// The server connection holding the client's transaction is gone: the
    /// transaction is lost, and the client must learn it by ROLLBACK.
    pub(super) fn lose_transaction(&mut self) {
        self.txn_node = None;
        self.local_abort = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sqlstate;

    #[test]
    fn raise_statement_quotes() {
        let e = ClientError::new(sqlstate::READ_ONLY_SQL_TRANSACTION, "it's refused").with_hint("do x");
        assert_eq!(
            raise_statement(&e),
            "DO $chorus$ BEGIN RAISE EXCEPTION USING ERRCODE = '25006', MESSAGE = 'it''s refused', HINT = 'do x'; END $chorus$"
        );
    }
}
