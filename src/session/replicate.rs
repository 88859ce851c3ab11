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

use super::capture::{At, Slot};
use super::logplan::{Item, RequestLog};
use super::own::Prep;
use super::txnlog::{self, Undone, WriteTxn};
use super::writeplan::{TakeLsn, WritePlan};
use super::{After, Inflight, Internal, Session, SessionError};
use crate::backend::BackendError;
use crate::config::AckMode;
use crate::protocol::{ClientError, Message, ServerError, build, sqlstate};
use crate::sql::StmtOp;
use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite};

/// A transaction's log entry is held in memory until it commits; beyond this,
/// the write is refused rather than risk the proxy's memory.
pub(super) const MAX_TXN_LOG_BYTES: usize = 512 << 20;

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Run chorus's own messages out of band and return the take-LSN style
    /// row they produce.
    async fn oob_row(
        &mut self,
        node: usize,
        messages: Vec<Message>,
        prep: Prep,
    ) -> Result<Option<(i64, i64, String)>, BackendError> {
        let conn = self.conns[node].as_mut().expect("connected");
        let mut row = None;
        let r = conn.exchange_rows_oob(&messages, |body| row = txnlog::parse_lsn_row(body)).await;
        conn.learn_own(&prep, r.is_ok());
        r.map(|()| row)
    }

    /// A step builder for chorus's own statements on `node`'s connection.
    pub(super) fn prep(&self, node: usize) -> Prep {
        Prep::on(self.conns[node].as_ref().map_or(0, |c| c.own_prepared))
    }

    /// Take the transaction's LSN out of band before the request (opening the
    /// transaction first when the plan says so), then capture the sequences
    /// if values may have been consumed unlogged. That is decided only now,
    /// holding the LSN lock: whoever consumed them marked it before releasing it.
    pub(super) async fn take_lsn_now(&mut self, node: usize, begin: bool) -> Result<(), ClientError> {
        let context = self.settings.script(false);
        let mut prep = self.prep(node);
        let messages = WriteTxn::take_lsn_messages(begin, &mut prep);
        let r = self.oob_row(node, messages, prep).await;
        let status = self.conns[node].as_ref().map_or(b'I', |c| c.status);
        match r {
            Ok(Some((lsn, micros, _))) => {
                match self.wtxn.as_mut() {
                    // Keyed writes so far: they keep their entries, logged with this LSN.
                    Some(t) if t.deferred => t.took_lsn(lsn, micros),
                    _ => {
                        let mut t = WriteTxn::new(context);
                        t.lsn = Some(lsn);
                        t.micros = Some(micros);
                        self.wtxn = Some(t);
                    }
                }
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
        let mut prep = self.prep(leader);
        let r = match self.wtxn.as_ref() {
            // Its commit is not handed to the feed: NOTIFY wakes it.
            Some(t) if t.capture_epoch.is_some() && t.bytes() > 0 => t.append_messages(true, true, &mut prep),
            _ => WriteTxn::rollback_messages(&mut prep),
        };
        let conn = self.conns[leader].as_mut().expect("checked");
        let r = conn.exchange_oob(&r).await;
        conn.learn_own(&prep, r.is_ok());
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

    /// A statement that cannot run in a transaction block succeeded on the
    /// leader (`WritePlan::log_after`): log what the followers run instead
    /// in a transaction of chorus's own, while the client's ReadyForQuery
    /// is held, so the client's next statements come after it in the log.
    /// If that fails the leader keeps what it did; the client is warned.
    async fn log_for_followers(&mut self, node: usize, sql: String) {
        let r = self.own_logged_transaction(node, sql.clone()).await;
        self.wtxn = None;
        self.txn_node = None;
        match r {
            Ok(()) => self.await_ack().await,
            Err(e) => {
                tracing::error!(error = %e, %sql, "could not log a statement that ran outside a transaction");
                let w = ClientError {
                    severity: "WARNING",
                    ..ClientError::new(
                        "01000",
                        format!(
                            "the statement succeeded on the leader, but chorus could not log it for the followers \
                             ({e}); run this on every follower: {sql}"
                        ),
                    )
                };
                self.cout.put_slice(&w.to_notice().frame);
            }
        }
    }

    async fn own_logged_transaction(&mut self, node: usize, sql: String) -> Result<(), String> {
        let plan = txnlog::plan_text(&sql).map_err(|e| e.what())?;
        self.take_lsn_now(node, true).await.map_err(|e| e.message.clone())?;
        let mut prep = self.prep(node);
        let messages = {
            let t = self.wtxn.as_mut().ok_or("no transaction")?;
            t.push(txnlog::Entry::Query { sql: sql.into(), plan });
            // Its commit is not handed to the feed: NOTIFY wakes it.
            t.append_messages(true, true, &mut prep)
        };
        let conn = self.conns[node].as_mut().expect("connected");
        let r = conn.exchange_oob(&messages).await;
        conn.learn_own(&prep, r.is_ok());
        if let Err(e) = r {
            if conn.status != b'I' {
                let _ = conn.simple_oob("ROLLBACK").await;
            }
            self.mark_sequences_dirty();
            return Err(e.to_string());
        }
        self.committed();
        // Committed without waiting for the WAL flush: flush before answering.
        let mut prep = self.prep(node);
        let messages = WriteTxn::flush_messages(&mut prep);
        let conn = self.conns[node].as_mut().expect("connected");
        let r = conn.exchange_oob(&messages).await;
        conn.learn_own(&prep, r.is_ok());
        if let Err(e) = r {
            tracing::warn!(error = %e, "chorus's WAL flush step after a commit failed");
        }
        Ok(())
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
        let mut prep = self.prep(node);
        let messages = WriteTxn::capture_messages(&mut prep);
        match self.oob_row(node, messages, prep).await {
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
        plan.adds_steps()
            || (plan.logs && self.wtxn.as_ref().is_some_and(|t| t.resync || t.trigger_rows_pending))
            || self.chorus_step_in_flight()
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
        // What the last captured write's triggers inserted goes into the log
        // before anything of this request.
        self.collect_trigger_rows(node).await?;
        if let Some(After::Database(d)) = &log.after
            && let Err(e) = self.before_database_statement(d).await
        {
            return self.refuse_request(e).await;
        }
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
        if plan.defer && self.wtxn.is_none() {
            self.wtxn = Some(WriteTxn::deferred(self.settings.script(false)));
        }
        let trigger_tables: Vec<(String, String)> = log
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Capture(spec, _) if !spec.trigger_rows.is_empty() => Some(spec.trigger_rows.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        if !trigger_tables.is_empty() {
            let writes = log.items.iter().filter(|i| matches!(i, Item::Capture(..) | Item::Entry(..))).count();
            if writes > 1 {
                return self.refuse_request(super::logplan::refusal(super::writeplan::Refusal(
                    "chorus cannot replicate a write whose triggers insert rows chorus captures together with other \
                     writes in one request; send it on its own"
                        .into(),
                )))
                .await;
            }
            if let Err(e) = self.prepare_trigger_rows(node, &trigger_tables).await {
                return self.refuse_request(e).await;
            }
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
                    Item::Entry(e, tag) => {
                        if let Some(ordinal) = tag {
                            inflight.tags.push((ordinal, t.next_index()));
                        }
                        t.push(e)
                    }
                    Item::Savepoint(StmtOp::Savepoint(name)) => {
                        t.savepoint(&name);
                        here.push(name);
                    }
                    Item::Savepoint(StmtOp::RollbackTo(name)) if here.contains(&name) => {
                        t.rollback_to(&name);
                    }
                    Item::Savepoint(StmtOp::Release(name)) if here.contains(&name) => t.release(&name),
                    Item::Savepoint(op) => inflight.savepoint_ops.push(op),
                    Item::Capture(spec, ordinal) => {
                        let hide = spec.hide;
                        let id = t.push_captured(spec);
                        inflight.captures.push(Slot { at: At::Completion(ordinal), entry: Some(id), hide });
                    }
                }
            }
            if t.bytes() > MAX_TXN_LOG_BYTES {
                t.poisoned = Some("a transaction whose log entry exceeds 512 MiB");
            }
        }
        if !trigger_tables.is_empty()
            && let Some(t) = self.wtxn.as_mut()
        {
            t.trigger_rows_pending = true;
        }
        self.set_active(node);
        if plan.append_before
            && let Err(e) = self.queue_append(node, false)
        {
            // Cannot commit faithfully: make the server abort the transaction.
            return self.refuse_request(e).await;
        }
        inflight.hold_ready =
            plan.finish_after || plan.take_lsn == Some(TakeLsn::After) || plan.append_before || plan.log_after;
        inflight.hold_ready |= plan.database;
        inflight.after = log.after.clone();
        self.owed_commit_tag = log.commit_tag;
        self.owed_commit_replies = log.commit_replies.clone();
        inflight.flush_after = plan.append_before;
        inflight.hide_begin_warning = plan.hide_begin_warning;
        // The finishing step waits for the command tags that decide what it
        // logs, and for the rows of captured writes.
        let finish_later = plan.copy || !inflight.tags.is_empty() || !inflight.captures.is_empty();
        if plan.begin_only {
            let mut prep = self.prep(node);
            let messages = WriteTxn::begin_messages(&mut prep);
            self.queue_internal(node, messages, prep, Internal::Begin);
            self.txn_node = Some(node);
        }
        self.queue_request(node, messages, inflight);
        if plan.append_before {
            self.queue_flush(node);
        }
        if plan.take_lsn == Some(TakeLsn::After) {
            let mut prep = self.prep(node);
            let messages = WriteTxn::take_lsn_messages(false, &mut prep);
            self.queue_internal(node, messages, prep, Internal::TakeLsn);
            self.wtxn = Some(WriteTxn::new(self.settings.script(false)));
        }
        if plan.finish_after {
            if finish_later {
                self.finish_pending = true;
            } else {
                self.queue_finish(node);
            }
        }
        let conn = self.conns[node].as_mut().expect("connected");
        let r = conn.flush().await;
        r.map_err(|e| self.server_lost(node, e))?;
        self.placed(node);
        Ok(())
    }

    /// Queue the append step (and COMMIT, when chorus opened the transaction).
    pub(super) fn queue_append(&mut self, node: usize, commit: bool) -> Result<(), ClientError> {
        let t = self.wtxn.as_ref().expect("appending needs a writing transaction");
        if t.deferred && !t.has_entries() && !commit {
            // Keyed writes that all changed nothing: no LSN, nothing to log.
            return Ok(());
        }
        if let Some(why) = t.poisoned {
            return Err(ClientError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("chorus cannot replicate this transaction: it contains {why}"),
            )
            .with_hint("The transaction was rolled back; restructure it and retry."));
        }
        let mut prep = self.prep(node);
        // The session hands its commit's LSN to its own feed (note_flushed,
        // or wake_feed); a NOTIFY is for other chorus processes' feeds.
        let messages = t.append_messages(commit, !self.progress.alone(), &mut prep);
        self.queue_internal(node, messages, prep, Internal::Append { commit });
        Ok(())
    }

    /// Queue chorus's commit of the transaction it opened: the append and
    /// COMMIT, or, when the entry cannot be logged faithfully, a ROLLBACK and
    /// the reason for the client.
    pub(super) fn queue_finish(&mut self, node: usize) {
        match self.queue_append(node, true) {
            Ok(()) => self.queue_flush(node),
            Err(e) => {
                self.finish_refused = Some(e);
                let mut prep = self.prep(node);
                let messages = WriteTxn::rollback_messages(&mut prep);
                self.queue_internal(node, messages, prep, Internal::Rollback);
            }
        }
    }

    /// Queue the flush step right behind a commit (see `Internal::Flush`):
    /// no round trip of its own. If the commit fails, it runs for nothing.
    fn queue_flush(&mut self, node: usize) {
        let mut prep = self.prep(node);
        let messages = WriteTxn::flush_messages(&mut prep);
        self.queue_internal(node, messages, prep, Internal::Flush);
    }

    pub(super) fn queue_internal(&mut self, node: usize, messages: Vec<Message>, prep: Prep, kind: Internal) {
        let conn = self.conns[node].as_mut().expect("connected");
        for m in &messages {
            conn.queue(&m.frame);
        }
        self.inflight.push_back(Inflight { internal: Some(kind), own_parsed: prep.parsed, ..Default::default() });
    }

    /// The client's request ended and its ReadyForQuery is held. For a COPY
    /// chorus's finishing step is sent only now: while the server reads COPY
    /// data, any other message would break the copy.
    pub(super) async fn after_held_ready(&mut self, node: usize) -> Result<(), SessionError> {
        if let Some((after, succeeded)) = self.after.take() {
            match after {
                After::Log(sql) if succeeded => self.log_for_followers(node, sql).await,
                After::Log(_) => {}
                After::Database(d) => self.mirror_database(d, succeeded).await,
            }
            let status = self.conns[node].as_ref().map_or(b'I', |c| c.status);
            self.release_ready(node, status, succeeded);
            return Ok(());
        }
        if !std::mem::take(&mut self.finish_pending) {
            return Ok(());
        }
        self.copy_logged = false;
        self.collect_trigger_rows(node).await?;
        self.queue_finish(node);
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
            // A deferred transaction's LSN, taken by its append step.
            b'D' if matches!(kind, Internal::Append { .. }) => {
                if let (Some(t), Some((lsn, micros, _))) = (self.wtxn.as_mut(), txnlog::parse_lsn_row(m.body())) {
                    t.lsn = Some(lsn);
                    t.micros = Some(micros);
                }
            }
            b'D' if kind == Internal::Flush => self.flush_waits = txnlog::flush_row_waits(m.body()),
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
                let done = self.inflight.pop_front().expect("internal request in flight");
                if let Some(c) = self.conns[node].as_mut() {
                    c.set_status(status);
                    c.learn_own(&Prep::parsed_bits(done.own_parsed), !done.failed);
                }
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
            Internal::Begin => {
                if failed {
                    // Cannot happen on a healthy idle connection; if it did, the
                    // write behind it would run outside chorus's transaction.
                    tracing::error!(?error, "chorus could not open the transaction around a write");
                    return Err(SessionError::Fatal(ClientError::fatal(
                        sqlstate::INTERNAL_ERROR,
                        "chorus could not open a transaction on the leader; reconnect and check the write",
                    )));
                }
            }
            Internal::Append { commit } => {
                // A deferred transaction used no sequence values.
                if failed && !self.wtxn.as_ref().is_some_and(|t| t.deferred) {
                    self.mark_sequences_dirty();
                }
                if failed {
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
                        let mut prep = self.prep(node);
                        let messages = WriteTxn::rollback_messages(&mut prep);
                        self.queue_internal(node, messages, prep, Internal::Rollback);
                        let conn = self.conns[node].as_mut().expect("connected");
                        let r = conn.flush().await;
                        return r.map_err(|e| self.server_lost(node, e));
                    }
                } else if commit {
                    // Committed without waiting for the flush: the flush step
                    // queued behind it answers the client.
                    self.committed();
                    self.wtxn = None;
                    self.committing = Some(super::Committing::Own(status));
                    return Ok(());
                }
                if commit {
                    self.wtxn = None;
                    self.release_ready(node, status, !failed);
                }
            }
            Internal::Flush => {
                if failed && matches!(self.committing, Some(super::Committing::Own(_))) {
                    // The commit stands; only its flush is not confirmed here.
                    tracing::warn!(?error, "chorus's WAL flush step after a commit failed");
                }
                // The WAL is flushed past the last commit: its LSN (and every
                // earlier one) may go to the followers at once.
                let waited = std::mem::take(&mut self.flush_waits);
                if let Some(lsn) = self.unflushed.take() {
                    if !failed && waited {
                        self.progress.note_flushed(lsn);
                    } else {
                        // Committed, flush not confirmed here (the session
                        // does not wait for flushes): the feed waits for it.
                        self.progress.wake_feed();
                    }
                }
                match self.committing.take() {
                    Some(super::Committing::Request(done, commit_status)) => {
                        self.log_request_done(&done, commit_status);
                        self.await_ack().await;
                        self.release_ready(node, commit_status, !self.last_tag_rollback);
                    }
                    Some(super::Committing::Own(commit_status)) => {
                        self.await_ack().await;
                        self.release_ready(node, commit_status, true);
                    }
                    None => {}
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
        if std::mem::take(&mut self.owed_commit_tag) && committed {
            self.cout.put_slice(&build::command_complete("COMMIT").frame);
        }
        self.cout.put_slice(&build::ready_for_query(status).frame);
        if status == b'I' {
            self.txn_node = None;
            self.txn_facts.reset();
            self.temps.finish_transaction(committed);
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
            if let Some(lsn) = t.lsn {
                self.position.wrote(lsn);
                self.progress.note_committed(lsn);
                self.unflushed = Some(lsn);
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

    /// A statement of the client's request completed (CommandComplete,
    /// EmptyQueryResponse or PortalSuspended). A keyed write logged without an
    /// LSN whose tag says it changed no row is left out of the log.
    pub(super) fn note_completion(&mut self, m: &Message) {
        let Some(f) = self.inflight.front_mut() else { return };
        let ordinal = f.completions;
        f.completions += 1;
        let Some(&(_, index)) = f.tags.iter().find(|(o, _)| *o == ordinal) else { return };
        if m.tag == b'C'
            && rows_of_tag(m.body()) == Some(0)
            && let Some(t) = self.wtxn.as_mut()
        {
            t.drop_entry(index);
        }
    }

    /// A client request completed: apply its savepoint ops to the log.
    pub(super) fn log_request_done(&mut self, done: &Inflight, status: u8) {
        if done.failed && self.holds_lsn() {
            // Still holding the LSN lock (or just lost it at a failed COMMIT):
            // values the failed statement used are lost to the followers.
            self.mark_sequences_dirty();
        }
        // A held request is finished by chorus's step after it, except a
        // COMMIT held only for the flush step, which ends here.
        let finished = !done.hold_ready || done.flush_after;
        if status == b'I' {
            if finished && !done.failed && self.wtxn.is_some() && !self.last_tag_rollback {
                self.committed();
            }
            if finished {
                self.wtxn = None;
            }
            return;
        }
        if done.failed {
            return;
        }
        for op in &done.savepoint_ops {
            if matches!(op, StmtOp::RollbackTo(_)) {
                // It may have undone DDL the transaction's facts came from.
                self.txn_facts.stale();
            }
            let Some(t) = self.wtxn.as_mut() else { return };
            let held_lsn = !t.deferred;
            match op {
                StmtOp::RollbackTo(name) => match t.rollback_to(name) {
                    // A savepoint older than everything logged: rolling back to
                    // it undid the LSN, if any, and all of the entry.
                    Undone::Everything => {
                        if held_lsn {
                            self.mark_sequences_dirty();
                        }
                        self.wtxn = None;
                    }
                    Undone::Lsn => self.mark_sequences_dirty(),
                    Undone::SinceSavepoint => {}
                },
                StmtOp::Release(name) => t.release(name),
                _ => {}
            }
        }
    }
}

/// The row count of a CommandComplete tag (`UPDATE 3`, `INSERT 0 1`).
fn rows_of_tag(body: &[u8]) -> Option<u64> {
    let tag = body.strip_suffix(&[0]).unwrap_or(body);
    let last = tag.rsplit(|&b| b == b' ').next()?;
    std::str::from_utf8(last).ok()?.parse().ok()
}

fn is_aborted_error(m: &Message) -> bool {
    ServerError::parse(m.body()).code == "25P02"
}
