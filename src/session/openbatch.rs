//! Extended-protocol batches forwarded before their Sync (a Flush, or more
//! than 1 MiB): their writes are logged as the rest of the batch streams
//! through, and a write chorus could not log ends the session rather than
//! commit unlogged.
//!
//! A batch with a write chorus captures (psycopg 3's `executemany` and
//! pipelines send Flush between statements) cannot stream: each statement
//! must be planned and rewritten as a whole batch is. chorus forwards it in
//! *chunks* instead: what the client sent up to each Flush goes as a batch
//! of its own, ended by a Sync of chorus's whose ReadyForQuery the client
//! does not see. The chunks run in one transaction (chorus opens it when the
//! client had none, and commits it at the client's Sync), so Syncs commit
//! nothing early. After an error the server would skip to the client's
//! Sync; chorus drops the client's messages until then the same way, and
//! ends the transaction as the client's batch would have ended.

use super::logplan::{Item, RequestLog, bind_tail, nondeterministic, parse_statement, refusal};
use super::statements::{bind_head, execute_head};
use super::txnlog::{self, Entry};
use super::writeplan::{self, TakeLsn, WritePlan};
use super::{Inflight, Session, SessionError};
use crate::protocol::{ClientError, Message, build, sqlstate};
use crate::sql::StmtOp;
use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite};

/// How a batch forwarded with a Sync ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SyncKind {
    /// The client's Sync.
    Client,
    /// A chunk: the client sent Flush (or 1 MiB); chorus sends a Sync.
    Chunk,
    /// The client's Sync after chunks; `opened`: chorus opened the
    /// transaction, and commits it now.
    Final { opened: bool },
}

/// A batch being forwarded in chunks (see the module comment).
#[derive(Debug, Default)]
pub(super) struct Chunked {
    /// The first chunk has been planned.
    started: bool,
    /// chorus opened the transaction the chunks run in.
    opened: bool,
    /// A chunk failed (or was refused): the rest is skipped until Sync.
    pub failed: bool,
}

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

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Does the pending batch hold a write chorus captures (so it cannot be
    /// streamed)?
    pub(super) async fn batch_captures(&self) -> bool {
        self.batch_log(&self.batch, &[], false).await.is_ok_and(|log| log.captures())
    }

    /// The client sent Flush (or 1 MiB) in a batch forwarded in chunks:
    /// forward what it sent so far as a chunk.
    pub(super) async fn chunk_now(&mut self, terminator: Message) -> Result<(), SessionError> {
        if self.busy() {
            // One chunk at a time: its plan needs to know how the last ended.
            self.stalled = Some(terminator);
            return Ok(());
        }
        let chunked = self.chunked.get_or_insert_with(Chunked::default);
        if chunked.failed || self.batch.is_empty() {
            // The server would skip these until the Sync.
            self.batch.clear();
            return Ok(());
        }
        self.sync_batch(terminator, SyncKind::Chunk).await
    }

    /// The plan of a chunk (or of the client's Sync after chunks): the
    /// chunks run in one transaction, chorus's when the client had none.
    /// With the first chunk's plan comes whether chorus opens the
    /// transaction (recorded once the chunk is forwarded: `chunk_placed`).
    pub(super) fn chunk_plan(
        &self,
        mut log: RequestLog,
        kind: SyncKind,
    ) -> Result<(RequestLog, Option<bool>), ClientError> {
        let ends_txn = self
            .batch_classes()
            .iter()
            .any(|c| c.ops.iter().any(|o| matches!(o, StmtOp::Commit | StmtOp::Rollback | StmtOp::CopyIn)));
        let refuse = || {
            refusal(writeplan::Refusal(
                "chorus cannot replicate COMMIT, ROLLBACK or COPY in an extended-protocol batch sent with Flush \
                 (or larger than 1 MiB) that holds a write whose rows chorus captures; send them after a Sync"
                    .into(),
            ))
        };
        match kind {
            SyncKind::Client => Ok((log, None)),
            SyncKind::Chunk => {
                if ends_txn || log.plan.take_lsn == Some(TakeLsn::After) {
                    return Err(refuse());
                }
                if self.chunked.as_ref().is_some_and(|c| c.started) {
                    return Ok((log, None));
                }
                // An autocommit write: chorus's transaction around all chunks.
                let opened = log.plan.finish_after;
                if opened {
                    log.plan = WritePlan {
                        take_lsn: Some(TakeLsn::Before { begin: true }),
                        finish_after: false,
                        begin_only: false,
                        defer: false,
                        ..log.plan
                    };
                }
                Ok((log, Some(opened)))
            }
            SyncKind::Final { opened: true } => {
                if ends_txn {
                    return Err(refuse());
                }
                log.plan = WritePlan { finish_after: true, ..log.plan };
                Ok((log, None))
            }
            SyncKind::Final { opened: false } => Ok((log, None)),
        }
    }

    /// The first chunk was forwarded: the transaction it runs in is chorus's
    /// (`opened`) or the client's.
    pub(super) fn chunk_placed(&mut self, opened: Option<bool>) {
        if let (Some(opened), Some(c)) = (opened, self.chunked.as_mut()) {
            c.started = true;
            c.opened = opened;
        }
    }

    /// The rest of a batch chorus commits after chunks was refused: the
    /// client hears why, and chorus's transaction is rolled back.
    pub(super) async fn refuse_final_chunk(&mut self, e: ClientError) -> Result<(), SessionError> {
        self.cout.put_slice(&e.to_message().frame);
        self.end_failed_chunks(true).await;
        Ok(())
    }

    /// A chunk is refused: the client hears why now, and the rest of its
    /// batch is skipped until its Sync.
    pub(super) fn refuse_chunk(&mut self, e: ClientError) -> Result<(), SessionError> {
        self.batch.clear();
        self.cout.put_slice(&e.to_message().frame);
        if let Some(c) = self.chunked.as_mut() {
            c.failed = true;
        }
        Ok(())
    }

    /// The client's Sync after chunks: commit chorus's transaction with the
    /// rest of the batch, or, after a failure, end it as the batch would
    /// have ended.
    pub(super) async fn end_chunked(&mut self, sync: Message) -> Result<(), SessionError> {
        if self.busy() {
            self.stalled = Some(sync);
            return Ok(());
        }
        let Some(c) = self.chunked.take() else { return Ok(()) };
        if !c.failed {
            let kind = if c.started { SyncKind::Final { opened: c.opened } } else { SyncKind::Client };
            return self.sync_batch(sync, kind).await;
        }
        self.end_failed_chunks(c.opened).await;
        Ok(())
    }

    /// The client's Sync after a chunk failed: end the transaction as the
    /// client's batch would have ended, and answer the Sync.
    async fn end_failed_chunks(&mut self, opened: bool) {
        self.batch.clear();
        let node = self.txn_node.unwrap_or_else(|| self.ctx.topology.leader());
        let status = self.conns[node].as_ref().map_or(b'I', |conn| conn.status);
        if opened {
            // An autocommit batch that failed: nothing of it stays.
            if self.holds_lsn() {
                self.mark_sequences_dirty();
            }
            if status != b'I'
                && let Some(conn) = self.conns[node].as_mut()
            {
                let _ = conn.simple_oob("ROLLBACK").await;
            }
            self.wtxn = None;
            self.txn_node = None;
            self.txn_facts.reset();
            self.temps.finish_transaction(false);
            self.finish_settings(node, false);
            self.cout.put_slice(&build::ready_for_query(b'I').frame);
        } else if self.txn_node.is_none() {
            // Refused before anything reached a server.
            self.cout.put_slice(&build::ready_for_query(b'I').frame);
        } else {
            // The client's transaction: aborted, as an error leaves it.
            if status == b'T'
                && let Some(conn) = self.conns[node].as_mut()
            {
                let e = ClientError::new(sqlstate::FEATURE_NOT_SUPPORTED, "refused by chorus");
                let _ = conn.simple_oob(&super::abort::raise_statement(&e)).await;
            }
            self.cout.put_slice(&build::ready_for_query(b'E').frame);
        }
    }
}

fn fatal(e: ClientError) -> ClientError {
    ClientError { severity: "FATAL", ..e }
}
