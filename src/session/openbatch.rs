//! Extended-protocol batches forwarded before their Sync (a Flush, or more
//! than 1 MiB): their writes are logged as the rest of the batch streams
//! through, and a write chorus could not log ends the session rather than
//! commit unlogged.

use super::logplan::{Item, RequestLog, bind_tail, nondeterministic, parse_statement, refusal};
use super::statements::{bind_head, execute_head};
use super::txnlog::{self, Entry};
use super::writeplan::{self, TakeLsn};
use super::{Inflight, Session, SessionError};
use crate::protocol::{ClientError, Message};
use crate::sql::StmtOp;
use tokio::io::{AsyncRead, AsyncWrite};

/// A batch forwarded before its Sync (Flush, or too large to hold): its later
/// messages are logged as they stream through.
pub(super) struct OpenLog {
    /// The transaction has its LSN: streamed writes go into its entry.
    logging: bool,
    /// chorus opened the transaction: it appends and commits after the Sync.
    finish_at_sync: bool,
    /// Portals bound in this batch: portal name -> Bind.
    binds: Vec<(String, Message)>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Plan the part of a batch about to be forwarded before its Sync.
    pub(super) async fn open_batch_log(&self) -> Result<RequestLog, ClientError> {
        let log = self.batch_log(&self.batch, &[], false).await?;
        if log.captures() {
            return Err(refusal(writeplan::Refusal(
                "chorus cannot replicate a write whose rows it must capture (see README, Replication) in an \
                 extended-protocol batch sent with Flush or larger than 1 MiB before its Sync; send it in its own Sync"
                    .into(),
            )));
        }
        if log.plan.append_before || log.plan.copy || log.plan.take_lsn == Some(TakeLsn::After) {
            return Err(refusal(writeplan::Refusal(
                "chorus cannot replicate COMMIT, COPY or a snapshot BEGIN in an extended-protocol batch sent \
                 with Flush or larger than 1 MiB before its Sync; send them in their own Sync"
                    .into(),
            )));
        }
        Ok(log)
    }

    /// The batch is routed to `node`: take the LSN if it writes, log its
    /// writes so far, and start following the rest of it.
    pub(super) async fn open_log_start(
        &mut self,
        node: usize,
        batch: &[Message],
        log: RequestLog,
    ) -> Result<(), ClientError> {
        let plan = log.plan;
        if let Some(TakeLsn::Before { begin }) = plan.take_lsn {
            self.take_lsn_now(node, begin).await?;
            self.deferred_begin = false;
        }
        if let Some(t) = self.wtxn.as_mut() {
            for item in log.items {
                match item {
                    Item::Entry(e, _) => t.push(e),
                    Item::Savepoint(StmtOp::Savepoint(name)) => t.savepoint(&name),
                    Item::Savepoint(_) => {
                        t.poisoned = Some("ROLLBACK TO or RELEASE in a batch streamed before its Sync")
                    }
                    Item::Capture(..) => t.poisoned = Some("a captured write in a batch streamed before its Sync"),
                }
            }
        }
        let binds = batch
            .iter()
            .filter(|m| m.tag == b'B')
            .filter_map(|m| bind_head(m).map(|(p, _)| (p.to_string(), m.clone())))
            .collect();
        // A deferred transaction has no LSN: a write streamed later cannot be logged.
        self.open_log = Some(OpenLog { logging: self.holds_lsn(), finish_at_sync: plan.finish_after, binds });
        Ok(())
    }

    /// A message streamed into an open batch. A write chorus cannot log (no
    /// LSN was taken when the batch was routed), or transaction control, ends
    /// the session: the server has not seen the message, and dropping the
    /// connection rolls the transaction back, so nothing unlogged commits.
    pub(super) async fn open_log_message(&mut self, m: &Message) -> Result<(), SessionError> {
        let Some(open) = self.open_log.as_mut() else { return Ok(()) };
        match m.tag {
            b'B' => {
                if let Some((portal, _)) = bind_head(m) {
                    open.binds.retain(|(p, _)| p != portal);
                    open.binds.push((portal.to_string(), m.clone()));
                }
                Ok(())
            }
            b'E' => {
                let bind =
                    execute_head(m).and_then(|p| open.binds.iter().find(|(b, _)| b == p)).map(|(_, b)| b.clone());
                let stmt = bind.as_ref().and_then(|b| bind_head(b)).and_then(|(_, s)| self.statements.get(s));
                let Some((parse, class, captured)) =
                    stmt.map(|s| (s.parse.clone(), s.class.clone(), s.capture.is_some()))
                else {
                    return Ok(());
                };
                if captured {
                    return Err(SessionError::Fatal(fatal(refusal(writeplan::Refusal(
                        "chorus cannot replicate a write whose rows it must capture after Flush (or after 1 MiB) \
                         in a batch; the transaction was rolled back"
                            .into(),
                    )))));
                }
                let op = self.resolve_ops(&class).await.first().cloned().unwrap_or(StmtOp::Read);
                let logging = self.open_log.as_ref().is_some_and(|o| o.logging);
                let entry = match op {
                    StmtOp::Read | StmtOp::Maintenance => return Ok(()),
                    StmtOp::Write if logging => {
                        let parsed = parse_statement(&parse);
                        let tail = bind.as_ref().and_then(bind_tail);
                        match (parsed, tail) {
                            (Some((sql, types)), Some(tail)) => match txnlog::plan_text(&sql) {
                                Ok(plan) => Some(Entry::Extended { sql, plan, types, tail }),
                                Err(e) => return Err(SessionError::Fatal(fatal(nondeterministic(e)))),
                            },
                            _ => None,
                        }
                    }
                    _ => None,
                };
                match (entry, self.wtxn.as_mut()) {
                    (Some(e), Some(t)) => {
                        t.push(e);
                        Ok(())
                    }
                    _ => Err(SessionError::Fatal(fatal(refusal(writeplan::Refusal(
                        "chorus cannot replicate a write or transaction control sent after Flush (or after 1 MiB) \
                         in a batch that did not write before; the transaction was rolled back"
                            .into(),
                    ))))),
                }
            }
            _ => Ok(()),
        }
    }

    /// The Sync of an open batch: chorus commits the transaction it opened
    /// after it, holding the client's ReadyForQuery until then.
    pub(super) async fn close_open_batch(&mut self, node: usize, sync: Message) -> Result<(), SessionError> {
        let finish = self.open_log.take().is_some_and(|o| o.finish_at_sync);
        let inflight = Inflight { extended: true, hold_ready: finish, ..Default::default() };
        if !finish {
            return self.forward_request(node, &[sync], inflight).await;
        }
        self.queue_request(node, &[sync], inflight);
        self.queue_finish(node);
        let conn = self.conns[node].as_mut().expect("connected");
        let r = conn.flush().await;
        r.map_err(|e| self.server_lost(node, e))
    }
}

fn fatal(e: ClientError) -> ClientError {
    ClientError { severity: "FATAL", ..e }
}
