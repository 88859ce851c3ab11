//! The session's side of statement replication: around each request that
//! writes, chorus takes the transaction's LSN, collects what the request does
//! for the log, and appends the log entry in the same transaction before it
//! commits (see [`super::writeplan`] for where, [`super::txnlog`] for what).
//!
//! chorus's own steps are either out of band (taking the LSN: its reply is
//! needed before anything else is sent) or queued on the leader connection as
//! internal requests whose replies chorus consumes. A request chorus wrapped in
//! its own transaction has its ReadyForQuery held until chorus's commit is
//! known, so the client hears of success only once the write and its log entry
//! are committed together.

use super::statements::{bind_head, execute_head, parse_head};
use super::txnlog::{self, Entry, WriteTxn};
use super::writeplan::{self, TakeLsn, TxnView, WritePlan};
use super::{Inflight, Internal, Session, SessionError};
use crate::backend::BackendError;
use crate::config::AckMode;
use crate::protocol::{ClientError, Fields, Message, ServerError, build, sqlstate};
use crate::sql::{Classification, StmtOp};
use bytes::{BufMut, Bytes};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// A transaction's log entry is held in memory until it commits; beyond this,
/// the write is refused rather than risk the proxy's memory.
const MAX_TXN_LOG_BYTES: usize = 512 << 20;

/// What a request contributes to the log, decided before it is sent.
pub(super) struct RequestLog {
    pub plan: WritePlan,
    /// Entries and savepoint ops, in statement order.
    pub items: Vec<Item>,
}

pub(super) enum Item {
    Entry(Entry),
    /// SAVEPOINT / ROLLBACK TO / RELEASE: positions in the entries.
    Savepoint(StmtOp),
}

impl RequestLog {
    /// Nothing to log (the database is not replicated).
    fn unlogged() -> RequestLog {
        RequestLog { plan: WritePlan::default(), items: Vec::new() }
    }
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
    pub(super) fn txn_view(&self) -> TxnView {
        TxnView {
            in_txn: self.txn_node.is_some() || self.deferred_begin,
            deferred_begin: self.deferred_begin,
            has_lsn: self.wtxn.is_some(),
        }
    }

    /// The ops of a classification with functions only the catalog can judge
    /// resolved: a volatile (or unknown) function makes its statement a write.
    pub(super) async fn resolve_ops(&self, class: &Classification) -> Vec<StmtOp> {
        if !class.ops.contains(&StmtOp::MaybeWrite) {
            return class.ops.clone();
        }
        let volatile = !self.ctx.catalog.all_safe(&self.database, &class.functions).await;
        class
            .ops
            .iter()
            .map(|o| match o {
                StmtOp::MaybeWrite if volatile => StmtOp::Write,
                StmtOp::MaybeWrite => StmtOp::Read,
                o => o.clone(),
            })
            .collect()
    }

    /// A ROLLBACK (or ROLLBACK TO, which may undo the LSN itself) of a writing
    /// transaction is about to be sent: the sequence values it used are lost
    /// to the followers (marked while it still holds the LSN lock).
    fn note_rollback(&self, ops: &[StmtOp]) {
        let writes = ops.iter().any(|o| matches!(o, StmtOp::Write | StmtOp::CopyIn));
        let rollback = ops.iter().any(|o| matches!(o, StmtOp::Rollback | StmtOp::RollbackTo(_)));
        if (self.wtxn.is_some() || writes) && rollback {
            self.mark_sequences_dirty();
        }
    }

    /// Plan a simple Query for the log. `Err`: refuse the request with it.
    pub(super) async fn query_log(&mut self, sql: &str, class: &Classification) -> Result<RequestLog, ClientError> {
        if !self.replicated {
            return Ok(RequestLog::unlogged());
        }
        let mut ops = self.resolve_ops(class).await;
        self.sql_prepared_statements(sql, &mut ops);
        self.note_rollback(&ops);
        let plan = writeplan::plan(self.txn_view(), &ops).map_err(refusal)?;
        if plan.logs {
            self.refuse_volatile_defaults(sql, &class.tables).await?;
        }
        let mut items = Vec::new();
        if plan.copy {
            items.push(Item::Entry(Entry::Copy { sql: sql.into(), data: Default::default() }));
        } else if ops.len() == 1 {
            match &ops[0] {
                StmtOp::Write => {
                    let time = txnlog::plan_text(sql).map_err(nondeterministic)?;
                    items.push(Item::Entry(Entry::Query { sql: sql.into(), plan: time }));
                }
                op @ (StmtOp::Savepoint(_) | StmtOp::RollbackTo(_) | StmtOp::Release(_)) => {
                    items.push(Item::Savepoint(op.clone()))
                }
                _ => {}
            }
        } else if plan.logs || ops.iter().any(is_savepoint_op) {
            // One entry per statement: the applier runs each log entry in its
            // own transaction (so BEGIN/COMMIT must not be in it), and a
            // ROLLBACK TO can cut between any two statements.
            let texts = crate::sql::statements(sql).filter(|t| t.len() == ops.len()).ok_or_else(|| {
                refusal(writeplan::Refusal("chorus could not split this query into its statements".into()))
            })?;
            for (text, op) in texts.into_iter().zip(&ops) {
                match op {
                    StmtOp::Begin { .. } | StmtOp::Commit | StmtOp::Rollback | StmtOp::Maintenance => {}
                    StmtOp::Savepoint(_) | StmtOp::RollbackTo(_) | StmtOp::Release(_) => {
                        items.push(Item::Savepoint(op.clone()))
                    }
                    // Reads are kept too: a SET among them changes what follows.
                    _ if plan.logs => {
                        let time = txnlog::plan_text(text).map_err(nondeterministic)?;
                        items.push(Item::Entry(Entry::Query { sql: text.into(), plan: time }));
                    }
                    _ => {}
                }
            }
        }
        Ok(RequestLog { plan, items })
    }

    /// An INSERT (or COPY, MERGE, `SET col = DEFAULT`) that leaves a column to
    /// a DEFAULT a follower would evaluate to another value (`now()`,
    /// `gen_random_uuid()` ...) would diverge: refuse it before the leader
    /// runs it. A column the statement names is taken to be given.
    async fn refuse_volatile_defaults(&self, sql: &str, tables: &[String]) -> Result<(), ClientError> {
        if tables.is_empty() || !["insert", "copy", "merge", "default"].iter().any(|w| mentions_word(sql, w)) {
            return Ok(());
        }
        for (table, column, expr) in self.ctx.catalog.volatile_defaults(&self.database, tables).await {
            if !mentions_word(sql, &column) {
                return Err(ClientError::new(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!(
                        "chorus cannot replicate this write: column {column} of {table} would take its default \
                         {expr}, which a follower would evaluate to another value"
                    ),
                )
                .with_hint(
                    "Give the column's value in the statement; now() and CURRENT_TIMESTAMP written there are \
                     replicated exactly.",
                ));
            }
        }
        Ok(())
    }

    /// SQL-level PREPARE / EXECUTE / DEALLOCATE: remember what each prepared
    /// statement does, and resolve an EXECUTE to a read or a refusal. chorus
    /// cannot replay an EXECUTE (the follower has no such prepared statement),
    /// so executing a prepared write is refused.
    fn sql_prepared_statements(&mut self, sql: &str, ops: &mut [StmtOp]) {
        let n = ops.len();
        let texts = || crate::sql::statements(sql).filter(|t| t.len() == n);
        if ops.contains(&StmtOp::Execute) {
            let Some(texts) = texts() else { return };
            for (op, text) in ops.iter_mut().zip(texts) {
                if *op != StmtOp::Execute {
                    continue;
                }
                let name = prepared_name(text, 1);
                *op = match name.and_then(|n| self.sql_prepared.get(&n)) {
                    Some(true) => {
                        StmtOp::NotReplicable("EXECUTE of an SQL-level prepared write; use the extended protocol")
                    }
                    // Unknown names fail on the server (26000).
                    _ => StmtOp::Read,
                };
            }
        }
        let words = |t: &str| t.split_whitespace().take(2).map(str::to_ascii_lowercase).collect::<Vec<_>>();
        if !sql.trim_start().get(..10).is_some_and(|h| {
            let h = h.to_ascii_lowercase();
            h.starts_with("prepare") || h.starts_with("deallocate") || h.starts_with("discard")
        }) && n == 1
        {
            return;
        }
        let Some(texts) = texts() else { return };
        for text in texts {
            let w = words(text);
            match w.first().map(String::as_str) {
                Some("prepare") if w.get(1).map(String::as_str) != Some("transaction") => {
                    let Some(name) = prepared_name(text, 1) else { continue };
                    let writes = prepared_body(text)
                        .is_none_or(|body| self.ctx.classify.get(body).ops.iter().any(|o| !matches!(o, StmtOp::Read)));
                    self.sql_prepared.insert(name, writes);
                }
                Some("deallocate") => {
                    match prepared_name(text, if w.get(1).map(String::as_str) == Some("prepare") { 2 } else { 1 }) {
                        Some(n) if n == "all" => self.sql_prepared.clear(),
                        Some(n) => {
                            self.sql_prepared.remove(&n);
                        }
                        None => {}
                    }
                }
                Some("discard") => self.sql_prepared.clear(),
                _ => {}
            }
        }
    }

    /// Plan an extended-protocol batch for the log: one entry per Execute of a
    /// writing statement, with the statement's text, parameter types and the
    /// Bind's parameters.
    pub(super) async fn batch_log(
        &self,
        batch: &[Message],
        parsed: &[(String, Arc<Classification>)],
    ) -> Result<RequestLog, ClientError> {
        if !self.replicated {
            return Ok(RequestLog::unlogged());
        }
        // Statement name -> (Parse message, classification), later Parses win.
        let stmt_of = |name: &str, upto: usize| -> Option<(Message, Arc<Classification>)> {
            for m in batch[..upto].iter().rev() {
                if m.tag == b'P'
                    && let Some((n, sql)) = parse_head(m)
                    && n == name
                {
                    let class = parsed
                        .iter()
                        .rev()
                        .find(|(pn, _)| pn == name)
                        .map(|(_, c)| c.clone())
                        .unwrap_or_else(|| self.ctx.classify.get(sql));
                    return Some((m.clone(), class));
                }
            }
            self.statements.get(name).map(|s| (s.parse.clone(), s.class.clone()))
        };
        let mut ops = Vec::new();
        // Writes (parse, bind) and savepoint ops, in order.
        let mut pending: Vec<Result<(Message, Message, Arc<Classification>), StmtOp>> = Vec::new();
        let mut portals: Vec<(String, usize)> = Vec::new(); // portal -> Bind index
        for (i, m) in batch.iter().enumerate() {
            match m.tag {
                b'B' => {
                    if let Some((portal, _)) = bind_head(m) {
                        portals.retain(|(p, _)| p != portal);
                        portals.push((portal.to_string(), i));
                    }
                }
                b'E' => {
                    let Some(portal) = execute_head(m) else { continue };
                    let Some(&(_, bi)) = portals.iter().find(|(p, _)| p == portal) else {
                        // A portal bound by an earlier request: its statement is
                        // unknown here; refuse only if it could write.
                        ops.push(StmtOp::NotReplicable("Execute of a portal bound before the last Sync"));
                        continue;
                    };
                    let bind = &batch[bi];
                    let Some((_, stmt)) = bind_head(bind) else { continue };
                    let Some((parse, class)) = stmt_of(stmt, bi) else { continue };
                    let resolved = self.resolve_ops(&class).await;
                    let op = resolved.into_iter().next().unwrap_or(StmtOp::Read);
                    if matches!(op, StmtOp::Write | StmtOp::CopyIn) {
                        pending.push(Ok((parse, bind.clone(), class.clone())));
                    } else if is_savepoint_op(&op) {
                        pending.push(Err(op.clone()));
                    }
                    ops.push(op);
                }
                _ => {}
            }
        }
        self.note_rollback(&ops);
        let plan = writeplan::plan(self.txn_view(), &ops).map_err(refusal)?;
        let mut items = Vec::new();
        for p in pending {
            let (parse, bind, class) = match p {
                Ok(pb) => pb,
                Err(op) => {
                    items.push(Item::Savepoint(op));
                    continue;
                }
            };
            let (sql, types) = parse_statement(&parse).ok_or_else(bad_message)?;
            if plan.logs {
                self.refuse_volatile_defaults(&sql, &class.tables).await?;
            }
            if plan.copy {
                items.push(Item::Entry(Entry::Copy { sql, data: Default::default() }));
                continue;
            }
            let time = txnlog::plan_text(&sql).map_err(nondeterministic)?;
            let tail = bind_tail(&bind).ok_or_else(bad_message)?;
            items.push(Item::Entry(Entry::Extended { sql, plan: time, types, tail }));
        }
        Ok(RequestLog { plan, items })
    }

    /// Run chorus's own messages out of band and return the take-LSN style
    /// row they produce.
    async fn oob_row(
        &mut self,
        node: usize,
        messages: Vec<Message>,
    ) -> Result<Option<(i64, i64, String)>, BackendError> {
        let conn = self.conns[node].as_mut().expect("connected");
        for m in messages {
            conn.queue(&m.frame);
        }
        conn.flush().await?;
        let mut row = None;
        let mut error = None;
        loop {
            let m = conn.read().await?;
            match m.tag {
                b'D' => row = txnlog::parse_lsn_row(m.body()),
                b'E' if error.is_none() => error = Some(ServerError::parse(m.body())),
                b'S' => conn.note_parameter(&m),
                b'Z' => {
                    conn.status = m.body().first().copied().unwrap_or(b'I');
                    break;
                }
                _ => {}
            }
        }
        match error {
            Some(e) => Err(BackendError::Server(e)),
            None => Ok(row),
        }
    }

    /// Take the transaction's LSN out of band before the request (opening the
    /// transaction first when the plan says so), then capture the sequences
    /// if values may have been consumed unlogged. That is decided only now,
    /// holding the LSN lock: whoever consumed them marked it before releasing it.
    pub(super) async fn take_lsn_now(&mut self, node: usize, begin: bool) -> Result<(), ClientError> {
        let context = self.settings.script(false);
        let r = self.oob_row(node, WriteTxn::take_lsn_messages(begin)).await;
        let status = self.conns[node].as_ref().map_or(b'I', |c| c.status);
        match r {
            Ok(Some((lsn, micros, _))) => {
                let mut t = WriteTxn::new(context);
                t.lsn = Some(lsn);
                t.micros = Some(micros);
                self.wtxn = Some(t);
                if begin {
                    self.txn_node = Some(node);
                }
                self.check_sequences();
                if self.wtxn.as_ref().is_some_and(|t| t.resync) {
                    self.resync_sequences(node).await?;
                }
                Ok(())
            }
            Ok(None) => Err(ClientError::new(sqlstate::INTERNAL_ERROR, "chorus could not read the transaction's LSN")),
            Err(BackendError::Server(e)) => {
                if begin && status != b'I' {
                    // chorus's BEGIN is open and aborted: the client must not
                    // inherit it.
                    let _ = self.conns[node].as_mut().expect("connected").simple_oob("ROLLBACK").await;
                } else if status == b'E' {
                    self.txn_node = Some(node);
                }
                Err(ClientError::from_server(&e, false))
            }
            Err(e) => Err(self.backend_error(node, e)),
        }
    }

    /// After a transaction that may have used sequence values unlogged
    /// (rolled back, failed), with the session idle and outside a transaction:
    /// if no other transaction has synced the sequences since, log their state
    /// in a transaction of chorus's own, so followers match even if no write
    /// follows.
    pub(super) async fn sync_sequences_if_needed(&mut self) {
        if !self.sequences_unsynced.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let leader = self.ctx.topology.leader();
        if self.ctx.sequences.needs_capture(&self.database).is_none()
            || self.busy()
            || self.txn_node.is_some()
            || self.deferred_begin
            || self.wtxn.is_some()
            || self.conns[leader].as_mut().is_none_or(|c| c.is_dead())
        {
            return;
        }
        if let Err(e) = self.take_lsn_now(leader, true).await {
            tracing::debug!(error = %e, "could not sync sequences");
            return;
        }
        let r = match self.wtxn.as_ref() {
            Some(t) if t.capture_epoch.is_some() && t.bytes() > 0 => t.append_messages(true),
            _ => WriteTxn::rollback_messages(),
        };
        let conn = self.conns[leader].as_mut().expect("checked");
        let r = conn.exchange_oob(&r).await;
        match r {
            Ok(()) => {
                self.committed();
                self.pending_ack = None;
            }
            Err(e) => tracing::debug!(error = %e, "could not sync sequences"),
        }
        let conn = self.conns[leader].as_mut().expect("checked");
        if conn.status != b'I' {
            let _ = conn.simple_oob("ROLLBACK").await;
        }
        self.wtxn = None;
        self.txn_node = None;
    }

    /// Sequence values may have been used without being logged (see sequences.rs).
    pub(super) fn mark_sequences_dirty(&self) {
        self.ctx.sequences.mark_dirty(&self.database);
        self.sequences_unsynced.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// With the LSN lock held: must this transaction capture the sequences?
    fn check_sequences(&mut self) {
        let capture = self.ctx.sequences.needs_capture(&self.database);
        if let (Some(epoch), Some(t)) = (capture, self.wtxn.as_mut()) {
            t.capture_epoch = Some(epoch);
            t.resync = true;
        }
    }

    /// After a `ROLLBACK TO`: log the sequences' state again before the next write.
    async fn resync_sequences(&mut self, node: usize) -> Result<(), ClientError> {
        match self.oob_row(node, WriteTxn::capture_messages()).await {
            Ok(Some((_, _, script))) => {
                if let Some(t) = self.wtxn.as_mut() {
                    t.resync = false;
                    t.push_sequences(&script);
                }
                Ok(())
            }
            Ok(None) => Err(ClientError::new(sqlstate::INTERNAL_ERROR, "chorus could not read the sequences' state")),
            Err(BackendError::Server(e)) => Err(ClientError::from_server(&e, false)),
            Err(e) => Err(self.backend_error(node, e)),
        }
    }

    /// True when the request must wait until the connection is idle: chorus's
    /// own steps need it, or a transaction chorus opened is still finishing
    /// (a client that got its error early may already pipeline the next request).
    pub(super) fn log_needs_idle(&self, plan: &WritePlan) -> bool {
        plan.adds_steps() || (plan.logs && self.wtxn.as_ref().is_some_and(|t| t.resync)) || self.chorus_step_in_flight()
    }

    pub(super) fn chorus_step_in_flight(&self) -> bool {
        self.held_ready.is_some() || self.inflight.iter().any(|f| f.hold_ready || f.internal.is_some())
    }

    /// Send a request with chorus's replication steps around it.
    pub(super) async fn forward_logged(
        &mut self,
        node: usize,
        messages: &[Message],
        mut inflight: Inflight,
        log: RequestLog,
    ) -> Result<(), SessionError> {
        let plan = log.plan;
        if let Some(TakeLsn::Before { begin }) = plan.take_lsn {
            if let Err(e) = self.take_lsn_now(node, begin).await {
                self.reply_error(&e, true);
                return Ok(());
            }
            self.deferred_begin = false;
        }
        if plan.logs
            && self.wtxn.as_ref().is_some_and(|t| t.resync)
            && let Err(e) = self.resync_sequences(node).await
        {
            return self.refuse_request(e).await;
        }
        if !log.items.is_empty() {
            let Some(t) = self.wtxn.as_mut() else {
                // Savepoints outside a writing transaction: nothing to track.
                return self.forward_request(node, messages, inflight).await;
            };
            // Savepoint ops on savepoints set in this same request take effect
            // in place; the others once the request has succeeded.
            let mut here: Vec<String> = Vec::new();
            for item in log.items {
                match item {
                    Item::Entry(e) => t.push(e),
                    Item::Savepoint(StmtOp::Savepoint(name)) => {
                        t.savepoint(&name);
                        here.push(name);
                    }
                    Item::Savepoint(StmtOp::RollbackTo(name)) if here.contains(&name) => {
                        t.rollback_to(&name);
                    }
                    Item::Savepoint(StmtOp::Release(name)) if here.contains(&name) => t.release(&name),
                    Item::Savepoint(op) => inflight.savepoint_ops.push(op),
                }
            }
            if t.bytes() > MAX_TXN_LOG_BYTES {
                t.poisoned = Some("a transaction whose log entry exceeds 512 MiB");
            }
        }
        self.set_active(node);
        if plan.append_before
            && let Err(e) = self.queue_append(node, false)
        {
            // Cannot commit faithfully: make the server abort the transaction.
            return self.refuse_request(e).await;
        }
        inflight.hold_ready = plan.finish_after || plan.take_lsn == Some(TakeLsn::After);
        inflight.hide_begin_warning = plan.hide_begin_warning;
        let conn = self.conns[node].as_mut().expect("routed to a connected node");
        for m in messages {
            if m.tag == b'Q' {
                conn.unnamed = None;
            }
            conn.queue(&m.frame);
        }
        self.inflight.push_back(inflight);
        if plan.take_lsn == Some(TakeLsn::After) {
            let conn = self.conns[node].as_mut().expect("connected");
            for m in WriteTxn::take_lsn_messages(false) {
                conn.queue(&m.frame);
            }
            self.wtxn = Some(WriteTxn::new(self.settings.script(false)));
            self.inflight.push_back(Inflight { internal: Some(Internal::TakeLsn), ..Default::default() });
        }
        if plan.finish_after {
            if plan.copy {
                self.finish_pending = true;
            } else if let Err(e) = self.queue_append(node, true) {
                self.finish_refused = Some(e);
                self.queue_internal(node, WriteTxn::rollback_messages(), Internal::Rollback);
            }
        }
        let conn = self.conns[node].as_mut().expect("connected");
        let r = conn.flush().await;
        r.map_err(|e| self.server_lost(node, e))?;
        self.placed(node);
        Ok(())
    }

    /// Queue the append step (and COMMIT, when chorus opened the transaction).
    fn queue_append(&mut self, node: usize, commit: bool) -> Result<(), ClientError> {
        let t = self.wtxn.as_ref().expect("appending needs a writing transaction");
        if let Some(why) = t.poisoned {
            return Err(ClientError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("chorus cannot replicate this transaction: it contains {why}"),
            )
            .with_hint("The transaction was rolled back; restructure it and retry."));
        }
        let messages = t.append_messages(commit);
        self.queue_internal(node, messages, Internal::Append { commit });
        Ok(())
    }

    fn queue_internal(&mut self, node: usize, messages: Vec<Message>, kind: Internal) {
        let conn = self.conns[node].as_mut().expect("connected");
        for m in &messages {
            conn.queue(&m.frame);
        }
        self.inflight.push_back(Inflight { internal: Some(kind), ..Default::default() });
    }

    /// The client's request ended and its ReadyForQuery is held. For a COPY
    /// chorus's finishing step is sent only now: while the server reads COPY
    /// data, any other message would break the copy.
    pub(super) async fn after_held_ready(&mut self, node: usize) -> Result<(), SessionError> {
        if !std::mem::take(&mut self.finish_pending) {
            return Ok(());
        }
        self.copy_logged = false;
        if let Err(e) = self.queue_append(node, true) {
            self.finish_refused = Some(e);
            self.queue_internal(node, WriteTxn::rollback_messages(), Internal::Rollback);
        }
        let conn = self.conns[node].as_mut().expect("connected");
        let r = conn.flush().await;
        r.map_err(|e| self.server_lost(node, e))
    }

    /// A reply to one of chorus's own requests (front of the in-flight queue).
    pub(super) async fn on_internal(&mut self, node: usize, kind: Internal, m: Message) -> Result<(), SessionError> {
        match m.tag {
            b'D' if kind == Internal::TakeLsn => {
                if let (Some(t), Some((lsn, micros, _))) = (self.wtxn.as_mut(), txnlog::parse_lsn_row(m.body())) {
                    t.lsn = Some(lsn);
                    t.micros = Some(micros);
                    // The lock is held now: the first write captures if needed.
                    self.check_sequences();
                }
            }
            b'E' => {
                let front = self.inflight.front_mut().expect("internal request in flight");
                if !front.failed {
                    front.failed = true;
                    self.internal_error = Some(m);
                }
            }
            b'S' => {
                if let Some(c) = self.conns[node].as_mut() {
                    c.note_parameter(&m);
                }
            }
            b'A' => self.cout.put_slice(&m.frame),
            b'Z' => {
                let status = m.body().first().copied().unwrap_or(b'I');
                if let Some(c) = self.conns[node].as_mut() {
                    c.status = status;
                }
                let done = self.inflight.pop_front().expect("internal request in flight");
                self.internal_ready(node, kind, status, done.failed).await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn internal_ready(
        &mut self,
        node: usize,
        kind: Internal,
        status: u8,
        failed: bool,
    ) -> Result<(), SessionError> {
        let error = self.internal_error.take();
        tracing::trace!(?kind, status = %(status as char), failed, "replication step done");
        let client_failed = self.held_ready == Some(b'E');
        match kind {
            Internal::TakeLsn => {
                // After a snapshot BEGIN: the client's ReadyForQuery waited for this.
                if failed {
                    self.wtxn = None;
                    if let Some(e) = error {
                        self.cout.put_slice(&e.frame);
                    }
                }
                self.release_ready(node, status, false);
            }
            Internal::Append { commit } => {
                if failed {
                    self.mark_sequences_dirty();
                    if let Some(e) = error
                        && !client_failed
                        && !is_aborted_error(&e)
                    {
                        // The write succeeded but its commit did not (a deferred
                        // constraint, a serialization failure ...): the client's error.
                        self.cout.put_slice(&e.frame);
                    }
                    if status == b'E' && commit {
                        // chorus's transaction is open and aborted: end it.
                        self.queue_internal(node, WriteTxn::rollback_messages(), Internal::Rollback);
                        let conn = self.conns[node].as_mut().expect("connected");
                        let r = conn.flush().await;
                        return r.map_err(|e| self.server_lost(node, e));
                    }
                } else if commit {
                    self.committed();
                    self.await_ack().await;
                }
                if commit {
                    self.wtxn = None;
                    self.release_ready(node, status, !failed);
                }
            }
            Internal::Rollback => {
                if let Some(e) = self.finish_refused.take() {
                    self.cout.put_slice(&e.to_message().frame);
                }
                self.wtxn = None;
                self.release_ready(node, status, false);
            }
        }
        Ok(())
    }

    /// Relay the client's held ReadyForQuery with the transaction status the
    /// client should see now.
    fn release_ready(&mut self, node: usize, status: u8, committed: bool) {
        if self.held_ready.take().is_none() {
            return;
        }
        self.cout.put_slice(&build::ready_for_query(status).frame);
        if status == b'I' {
            self.txn_node = None;
            self.finish_settings(node, committed);
        } else {
            self.txn_node = Some(node);
        }
    }

    /// A writing transaction committed with its log entry.
    pub(super) fn committed(&mut self) {
        if let Some(t) = &self.wtxn {
            tracing::trace!(lsn = ?t.lsn, "writing transaction committed");
            if let Some(epoch) = t.capture_epoch {
                self.ctx.sequences.synced(&self.database, epoch);
            }
            if self.ctx.config.replication.ack != AckMode::Async {
                self.pending_ack = t.lsn;
            }
        }
    }

    /// `semi-sync` / `sync`: before the client hears that its COMMIT
    /// succeeded, wait until one / every readable follower has applied it, for
    /// at most `ack_timeout`. When the bound is hit the commit stands (it is on
    /// the leader and will reach the followers); the client gets a WARNING
    /// saying so, as PostgreSQL does when synchronous replication is cancelled.
    pub(super) async fn await_ack(&mut self) {
        let Some(lsn) = self.pending_ack.take() else { return };
        let cfg = &self.ctx.config.replication;
        let readable =
            self.ctx.topology.followers().iter().filter(|&&f| self.ctx.topology.node(f).is_readable()).count();
        let (needed, what) = match cfg.ack {
            AckMode::Async => return,
            AckMode::SemiSync => (readable.min(1), "one follower"),
            AckMode::Sync => (readable, "every healthy follower"),
        };
        if needed == 0 {
            return;
        }
        let state = self.ctx.replication.state().clone();
        if state.wait_applied(&self.database, needed, lsn, cfg.ack_timeout).await.is_err() {
            let w = ClientError {
                severity: "WARNING",
                ..ClientError::new(
                    "01000",
                    format!(
                        "the transaction committed on the leader (LSN {lsn}) but {what} had not applied it within {:?} \
                         (replication.ack_timeout); it will reach the followers later",
                        cfg.ack_timeout
                    ),
                )
            };
            tracing::warn!(lsn, ack = ?cfg.ack, "commit acknowledgement timed out");
            self.cout.put_slice(&w.to_notice().frame);
        }
    }

    /// A client request completed: apply its savepoint ops to the log.
    pub(super) fn log_request_done(&mut self, done: &Inflight, status: u8) {
        if done.failed && self.wtxn.is_some() {
            // Still holding the LSN lock (or just lost it at a failed COMMIT):
            // values the failed statement used are lost to the followers.
            self.mark_sequences_dirty();
        }
        if status == b'I' {
            if !done.hold_ready && self.wtxn.is_some() && !self.last_tag_rollback {
                self.committed();
            }
            if !done.hold_ready {
                self.wtxn = None;
            }
            return;
        }
        if done.failed {
            return;
        }
        for op in &done.savepoint_ops {
            let Some(t) = self.wtxn.as_mut() else { return };
            match op {
                // A savepoint older than the LSN: rolling back to it undid the
                // LSN and everything logged since.
                StmtOp::RollbackTo(name) if !t.rollback_to(name) => {
                    self.mark_sequences_dirty();
                    self.wtxn = None;
                }
                StmtOp::Release(name) => t.release(name),
                _ => {}
            }
        }
    }
}

/// Does `word` occur in `text` as a whole identifier (case-insensitive)?
fn mentions_word(text: &str, word: &str) -> bool {
    let (t, w) = (text.to_ascii_lowercase(), word.to_ascii_lowercase());
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    let b = t.as_bytes();
    t.match_indices(&w).any(|(start, m)| {
        let end = start + m.len();
        (start == 0 || !is_ident(b[start - 1])) && (end == b.len() || !is_ident(b[end]))
    })
}

/// The name after the first `skip` words of a PREPARE / EXECUTE / DEALLOCATE,
/// folded as PostgreSQL folds identifiers.
fn prepared_name(text: &str, skip: usize) -> Option<String> {
    let mut rest = text.trim_start();
    for _ in 0..skip {
        rest = rest.split_once(char::is_whitespace)?.1.trim_start();
    }
    if let Some(q) = rest.strip_prefix('"') {
        return q.split_once('"').map(|(n, _)| n.to_string());
    }
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$')).unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_lowercase())
}

/// The statement a PREPARE prepares: what follows its top-level AS.
fn prepared_body(text: &str) -> Option<&str> {
    let lower = text.to_ascii_lowercase();
    let mut depth = 0i32;
    let b = lower.as_bytes();
    for i in 0..b.len() {
        match b[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b'a' if depth == 0
                && lower[i..].starts_with("as")
                && i > 0
                && b[i - 1].is_ascii_whitespace()
                && b.get(i + 2).is_some_and(|c| c.is_ascii_whitespace()) =>
            {
                return Some(text[i + 2..].trim());
            }
            _ => {}
        }
    }
    None
}

fn is_savepoint_op(op: &StmtOp) -> bool {
    matches!(op, StmtOp::Savepoint(_) | StmtOp::RollbackTo(_) | StmtOp::Release(_))
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Plan the part of a batch about to be forwarded before its Sync.
    pub(super) async fn open_batch_log(&self) -> Result<RequestLog, ClientError> {
        let log = self.batch_log(&self.batch, &[]).await?;
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
                    Item::Entry(e) => t.push(e),
                    Item::Savepoint(StmtOp::Savepoint(name)) => t.savepoint(&name),
                    Item::Savepoint(_) => {
                        t.poisoned = Some("ROLLBACK TO or RELEASE in a batch streamed before its Sync")
                    }
                }
            }
        }
        let binds = batch
            .iter()
            .filter(|m| m.tag == b'B')
            .filter_map(|m| bind_head(m).map(|(p, _)| (p.to_string(), m.clone())))
            .collect();
        self.open_log = Some(OpenLog { logging: self.wtxn.is_some(), finish_at_sync: plan.finish_after, binds });
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
                let Some((parse, class)) = stmt.map(|s| (s.parse.clone(), s.class.clone())) else {
                    return Ok(());
                };
                let op = self.resolve_ops(&class).await.into_iter().next().unwrap_or(StmtOp::Read);
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
        let conn = self.conns[node].as_mut().expect("open batch node is connected");
        conn.queue(&sync.frame);
        self.inflight.push_back(inflight);
        if let Err(e) = self.queue_append(node, true) {
            self.finish_refused = Some(e);
            self.queue_internal(node, WriteTxn::rollback_messages(), Internal::Rollback);
        }
        let conn = self.conns[node].as_mut().expect("connected");
        let r = conn.flush().await;
        r.map_err(|e| self.server_lost(node, e))
    }
}

fn fatal(e: ClientError) -> ClientError {
    ClientError { severity: "FATAL", ..e }
}

/// The Parse message's text and parameter types.
fn parse_statement(parse: &Message) -> Option<(Arc<str>, Vec<u32>)> {
    let mut f = Fields::new(parse.body());
    let _name = f.cstr()?;
    let sql = f.cstr()?;
    let n = f.i16()?;
    let mut types = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        types.push(f.i32()? as u32);
    }
    Some((sql.into(), types))
}

/// The Bind message from its parameter format codes on.
fn bind_tail(bind: &Message) -> Option<Bytes> {
    let body = bind.body();
    let mut f = Fields::new(body);
    f.cstr()?;
    f.cstr()?;
    let rest = f.rest();
    let start = body.len() - rest.len();
    Some(bind.frame.slice(5 + start..))
}

fn is_aborted_error(m: &Message) -> bool {
    ServerError::parse(m.body()).code == "25P02"
}

fn refusal(r: writeplan::Refusal) -> ClientError {
    ClientError::new(sqlstate::FEATURE_NOT_SUPPORTED, r.0)
        .with_hint("chorus replicates every write to its followers statement by statement; see README, Replication.")
}

fn nondeterministic(e: crate::sql::rewrite::Nondeterministic) -> ClientError {
    ClientError::new(sqlstate::FEATURE_NOT_SUPPORTED, e.to_string()).with_hint(
        "Compute the value in the application and pass it as a literal or parameter, so every node stores the same.",
    )
}

fn bad_message() -> ClientError {
    ClientError::new(sqlstate::PROTOCOL_VIOLATION, "malformed Parse or Bind message")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_names() {
        assert!(mentions_word("INSERT INTO t (id, Created_At) VALUES (1, now())", "created_at"));
        assert!(!mentions_word("INSERT INTO t (id, created_at2) VALUES (1)", "created_at"));
        assert!(!mentions_word("INSERT INTO tä_created_at VALUES (1)", "created_at"));
        assert!(mentions_word("copy t from stdin", "copy"));
        assert_eq!(prepared_name("PREPARE by_id(int) AS SELECT 1", 1).as_deref(), Some("by_id"));
        assert_eq!(prepared_name("EXECUTE \"Q\" (1)", 1).as_deref(), Some("Q"));
        assert_eq!(prepared_name("DEALLOCATE PREPARE p", 2).as_deref(), Some("p"));
        assert_eq!(
            prepared_body("PREPARE p (int, text) AS INSERT INTO t VALUES ($1, $2)"),
            Some("INSERT INTO t VALUES ($1, $2)")
        );
    }
}
