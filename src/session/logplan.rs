//! Pure-ish planning of a request for the replication log: which statements
//! it logs (with their text, parameter types and Bind parameters), where the
//! transaction's LSN is taken and its entry appended ([`super::writeplan`]),
//! and what is refused before the leader runs it (values chorus cannot know,
//! columns left to a volatile DEFAULT, SQL-level EXECUTE of a prepared write).

use super::{After, Session};
use super::capture::{At, CaptureSpec, Replay, Slot, after_captured_write, draws_no_sequence_values, with_clauses};
use super::statements::{bind_head, execute_head, parse_head, target_head};
use super::temps;
use super::txnlog::{self, Entry};
use super::writeplan::{self, TxnView, WritePlan};
use crate::protocol::{ClientError, Fields, Message, build, sqlstate};
use crate::sql::keyed::KeyedKind;
use crate::sql::{Classification, StmtOp};
use bytes::Bytes;
use std::borrow::Cow;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// What a request contributes to the log, decided before it is sent.
pub(super) struct RequestLog {
    pub plan: WritePlan,
    /// Entries and savepoint ops, in statement order.
    pub items: Vec<Item>,
    /// A simple Query to send instead of the client's (captured statements
    /// get their RETURNING column).
    pub query: Option<String>,
    /// Batch messages to send instead of the client's, by index: Parses of
    /// captured statements, Executes of them without a row limit.
    pub rewrites: Vec<(usize, Message)>,
    /// Captured statements the batch defines: the index of their Parse.
    pub parses: Vec<(usize, Arc<CaptureSpec>)>,
    /// Describe replies of captured statements.
    pub slots: Vec<Slot>,
    /// The session's temporary objects once the request has run (`None`:
    /// unchanged).
    pub temps: Option<temps::TempObjects>,
    /// What chorus does once the request has ended (`WritePlan::log_after`,
    /// `WritePlan::database`).
    pub after: Option<After>,
    /// The client's COMMIT was left out of `query`: chorus commits, and
    /// answers for it with its command tag.
    pub commit_tag: bool,
    /// In an extended batch, where the client's trailing COMMIT starts (its
    /// Bind): chorus sends the batch without that Bind, Describe and
    /// Execute, commits itself, and answers for them (`commit_replies`, then
    /// the tag).
    pub commit_tail: Option<usize>,
    /// The replies chorus owes for the COMMIT's Bind and Describe.
    pub commit_replies: Vec<Message>,
}

/// A batch's writes (Parse, Bind, classification, completion ordinal, may
/// change nothing, how it is replicated) and savepoint ops, in order.
enum Pending {
    Write(Message, Message, Arc<Classification>, usize, bool, Option<Replay>),
    Savepoint(StmtOp),
}

pub(super) enum Item {
    /// A log entry; with the ordinal of its statement's completion in the
    /// request when its command tag decides whether it is logged (a keyed
    /// write logged without an LSN that may change nothing).
    Entry(Entry, Option<usize>),
    /// SAVEPOINT / ROLLBACK TO / RELEASE: positions in the entries.
    Savepoint(StmtOp),
    /// A captured write, with the ordinal of its statement's completion in
    /// the request: its rows arrive before that.
    Capture(Arc<CaptureSpec>, usize),
}

impl RequestLog {
    /// Nothing to log (the database is not replicated).
    fn unlogged() -> RequestLog {
        RequestLog {
            plan: WritePlan::default(),
            items: Vec::new(),
            query: None,
            rewrites: Vec::new(),
            temps: None,
            after: None,
            commit_tag: false,
            commit_tail: None,
            commit_replies: Vec::new(),
            parses: Vec::new(),
            slots: Vec::new(),
        }
    }

    /// Does the request capture anything (its messages are rewritten)?
    pub fn captures(&self) -> bool {
        self.query.is_some() || !self.rewrites.is_empty() || !self.slots.is_empty()
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    pub(super) fn txn_view(&self) -> TxnView {
        TxnView {
            in_txn: self.txn_node.is_some() || self.deferred_begin,
            deferred_begin: self.deferred_begin,
            has_lsn: self.holds_lsn(),
            deferred: self.wtxn.as_ref().is_some_and(|t| t.deferred),
        }
    }

    /// A request in a database chorus does not replicate logs nothing, but a
    /// lone CREATE/DROP DATABASE there may name one it does.
    fn unreplicated_log(&self, ops: &[StmtOp], text: &str) -> RequestLog {
        let lone = matches!(ops, [StmtOp::Database { .. }]) && !self.txn_view().in_txn;
        let plan = WritePlan { database: lone, ..WritePlan::default() };
        RequestLog { after: after_request(&plan, ops, text), plan, ..RequestLog::unlogged() }
    }

    /// The writing transaction has taken (or is taking) its LSN.
    pub(super) fn holds_lsn(&self) -> bool {
        self.wtxn.as_ref().is_some_and(|t| !t.deferred)
    }

    /// Which of `ops` are keyed writes (see `sql::keyed`) the leader's catalog
    /// confirms: a plain table, named by its whole primary key (UPDATE,
    /// DELETE), or given every column whose default is not a constant (INSERT).
    async fn keyed_flags(&self, sql: &str, class: &Classification, ops: &[StmtOp]) -> Vec<bool> {
        let mut flags = vec![false; ops.len()];
        if class.keyed.is_empty()
            || !self.ctx.config.replication.lsn_at_commit
            || !class.functions.is_empty()
            || matches!(class.leader_reason, Some(crate::sql::LeaderReason::VolatileFunction(_)))
            || mentions_word(sql, "default")
            || sql.contains(txnlog::TIME_PLACEHOLDER)
        {
            return flags;
        }
        for (i, k) in &class.keyed {
            if ops.get(*i) != Some(&StmtOp::Write) {
                continue;
            }
            let Some(f) = self.table_facts(&k.table).await else { continue };
            flags[*i] = f.plain
                && match &k.kind {
                    KeyedKind::Insert { columns, .. } if columns.is_empty() => f.computed_defaults.is_empty(),
                    KeyedKind::Insert { columns, .. } => f.computed_defaults.iter().all(|c| columns.contains(c)),
                    KeyedKind::Update { keys } | KeyedKind::Delete { keys } => {
                        !f.primary_key.is_empty() && f.primary_key.iter().all(|c| keys.contains(c))
                    }
                };
        }
        flags
    }

    /// The completion ordinal to watch for op `i` of a deferred request.
    fn tag_of(plan: &WritePlan, class: &Classification, i: usize) -> Option<usize> {
        if !plan.defer {
            return None;
        }
        class.keyed.iter().find(|(j, _)| *j == i).filter(|(_, k)| k.may_change_nothing()).map(|_| i)
    }

    /// The ops of a classification with functions only the catalog can judge
    /// resolved: a volatile (or unknown) function makes its statement a write.
    pub(super) async fn resolve_ops<'c>(&self, class: &'c Classification) -> Cow<'c, [StmtOp]> {
        // A transaction on a follower is read-only (its connection's default,
        // and chorus routes only read-only ones there): whatever the
        // functions are, the server lets them write nothing, so there is
        // nothing to log (and no LSN to take, there of all places).
        self.resolve_ops_where(class, self.txn_read_only()).await
    }

    /// [`resolve_ops`] for a statement run `read_only` or not.
    async fn resolve_ops_where<'c>(&self, class: &'c Classification, read_only: bool) -> Cow<'c, [StmtOp]> {
        if !class.ops.contains(&StmtOp::MaybeWrite) {
            return Cow::Borrowed(&class.ops);
        }
        let volatile = !read_only && !self.ctx.catalog.all_safe(&self.database, &class.functions).await;
        Cow::Owned(
            class
                .ops
                .iter()
                .map(|o| match o {
                    StmtOp::MaybeWrite if volatile => StmtOp::Write,
                    StmtOp::MaybeWrite => StmtOp::Read,
                    o => o.clone(),
                })
                .collect(),
        )
    }

    /// The transaction cannot write: it runs on a follower (read-only by its
    /// connection's default, and chorus routes only read-only ones there),
    /// or it was declared READ ONLY (on the leader of a pinned session, or
    /// not placed yet: `deferred_setup`, snapshots.rs). Once a READ ONLY
    /// transaction ran a query the server lets nothing make it read-write
    /// again; before that, a statement that might is seen by
    /// [`Session::note_read_write`].
    pub(super) fn txn_read_only(&self) -> bool {
        let leader = self.ctx.topology.leader();
        (!self.deferred_setup.is_empty() && !self.setup_may_write)
            || self.txn_node.is_some_and(|n| n != leader || self.conns[n].as_ref().is_some_and(|c| c.read_only_txn))
    }

    /// A ROLLBACK (or ROLLBACK TO, which may undo the LSN itself) of a writing
    /// transaction is about to be sent: the sequence values it used are lost
    /// to the followers (marked while it still holds the LSN lock).
    fn note_rollback(&self, ops: &[StmtOp]) {
        let writes = ops.iter().any(|o| matches!(o, StmtOp::Write | StmtOp::CopyIn));
        let rollback = ops.iter().any(|o| matches!(o, StmtOp::Rollback | StmtOp::RollbackTo(_)));
        if (self.holds_lsn() || writes) && rollback {
            self.mark_sequences_dirty();
        }
    }

    /// Plan a simple Query for the log. `Err`: refuse the request with it.
    pub(super) async fn query_log(&mut self, sql: &str, class: &Classification) -> Result<RequestLog, ClientError> {
        if !self.replicated {
            return Ok(self.unreplicated_log(&class.ops, sql));
        }
        let mut ops = self.resolve_ops(class).await;
        let mut temps = self.temps.clone();
        let temporary = self.temporary_objects(&mut temps, sql, class, &mut ops);
        const SESSION_WORDS: [&str; 3] = ["prepare", "deallocate", "discard"];
        if ops.contains(&StmtOp::Execute)
            || starts_with_word(sql, &SESSION_WORDS)
            || (ops.len() > 1 && SESSION_WORDS.iter().any(|w| mentions_word(sql, w)))
        {
            self.sql_prepared_statements(sql, ops.to_mut()).await;
        }
        self.note_rollback(&ops);
        let keyed = self.keyed_flags(sql, class, &ops).await;
        let plan = writeplan::plan(self.txn_view(), &ops, &keyed).map_err(refusal)?;
        let after = after_request(&plan, &ops, sql);
        let mut log = RequestLog { plan, temps: Some(temps), after, ..RequestLog::unlogged() };
        if plan.copy {
            self.refuse_volatile_defaults(sql, &class.tables).await?;
            self.refuse_nondeterministic_routines(sql, class).await?;
            log.items.push(Item::Entry(Entry::Copy { sql: sql.into(), data: Default::default() }, None));
            return Ok(log);
        }
        if !plan.logs && !ops.iter().any(is_savepoint_op) {
            return Ok(log);
        }
        // One entry per statement: the applier runs each log entry in its
        // own transaction (so BEGIN/COMMIT must not be in it), and a ROLLBACK
        // TO can cut between any two statements.
        let ranges = if ops.len() == 1 {
            // The one statement's exact end is needed only to capture it.
            std::iter::once(0..sql.len()).collect()
        } else {
            crate::sql::statement_ranges(sql).filter(|r| r.len() == ops.len()).ok_or_else(|| {
                refusal(writeplan::Refusal("chorus could not split this query into its statements".into()))
            })?
        };
        let mut clauses: Vec<(usize, Arc<CaptureSpec>)> = Vec::new();
        let mut schema_changes: Vec<&str> = Vec::new();
        let last_start = ranges.last().map_or(0, |r| r.start);
        for (i, (range, op)) in ranges.into_iter().zip(ops.iter()).enumerate() {
            let text = &sql[range.clone()];
            if *op == StmtOp::Write && plan.logs {
                refuse_after_schema_change(&schema_changes, class, i)?;
                if starts_with_word(text, &["create", "alter"]) {
                    schema_changes.push(text);
                }
            }
            match op {
                StmtOp::Savepoint(_) | StmtOp::RollbackTo(_) | StmtOp::Release(_) => {
                    log.items.push(Item::Savepoint(op.clone()))
                }
                StmtOp::Write if plan.logs => match self.replay_of(text, class, i, !clauses.is_empty()).await? {
                    Replay::Text(_) if temporary.get(i) == Some(&temps::Verdict::Mixed) => {
                        return Err(refusal(writeplan::Refusal(format!("chorus cannot replicate {MIXES_TEMPORARY}"))));
                    }
                    Replay::Text(time) => {
                        let tag = Self::tag_of(&plan, class, i);
                        log.items.push(Item::Entry(Entry::Query { sql: text.into(), plan: time }, tag));
                    }
                    Replay::Capture(spec) => {
                        log.items.push(Item::Capture(spec.clone(), i));
                        let end = if ops.len() == 1 { statement_end(sql) } else { range.end };
                        clauses.push((end, spec));
                    }
                },
                // Reads are kept too: a SET among them changes what follows.
                // (One whose text chorus cannot make deterministic changes
                // no data, and no setting: a SET's value is a constant.)
                // (Not one that reads temporary objects: followers have none.)
                StmtOp::Read | StmtOp::MaybeWrite
                    if plan.logs && ops.len() > 1 && temporary.get(i) == Some(&temps::Verdict::Regular) =>
                {
                    if let Ok(time) = txnlog::plan_text(text) {
                        log.items.push(Item::Entry(Entry::Query { sql: text.into(), plan: time }, None));
                    }
                }
                _ => {}
            }
        }
        if !clauses.is_empty() {
            let mut end = sql.len();
            if plan.append_before {
                // The log entry would be appended before the query runs, but
                // the captured rows come from running it. When the COMMIT ends
                // the query, chorus sends the query without it and commits
                // itself after the rows (see `WritePlan::committed_by_chorus`).
                let ends_with_commit = ops.last() == Some(&StmtOp::Commit)
                    && ops.iter().filter(|o| matches!(o, StmtOp::Commit | StmtOp::Rollback)).count() == 1;
                if !ends_with_commit {
                    return Err(refusal(writeplan::Refusal(CAPTURE_WITH_COMMIT.into())));
                }
                end = last_start;
                log.plan = log.plan.committed_by_chorus();
                log.commit_tag = true;
            }
            let at: Vec<(usize, &str)> = clauses.iter().map(|(end, spec)| (*end, spec.clause.as_str())).collect();
            log.query = Some(with_clauses(&sql[..end], &at));
        }
        Ok(log)
    }

    /// An INSERT (or COPY, MERGE, `SET col = DEFAULT`) that leaves a column to
    /// a DEFAULT a follower would evaluate to another value (`now()`,
    /// `gen_random_uuid()` ...) would diverge: refuse it before the leader
    /// runs it. A column the statement names is taken to be given.
    pub(super) async fn refuse_volatile_defaults(&self, sql: &str, tables: &[String]) -> Result<(), ClientError> {
        // Statements that fill in whole rows take defaults for the columns they
        // do not name; any row write evaluates an explicit DEFAULT (VALUES (1,
        // DEFAULT), SET c = DEFAULT). DDL (ALTER TABLE ... DEFAULT) is neither.
        if tables.is_empty() {
            return Ok(());
        }
        let fills_rows = ["insert", "copy", "merge"].iter().any(|w| mentions_word(sql, w));
        let explicit_default = (fills_rows || mentions_word(sql, "update")) && mentions_word(sql, "default");
        if !fills_rows && !explicit_default {
            return Ok(());
        }
        for (table, column, expr) in self.volatile_defaults(tables).await {
            if explicit_default || !mentions_word(sql, &column) {
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

    /// The session's temporary objects (see `temps`): note what the query
    /// creates, drops or discards; a write of temporary objects only is not
    /// logged, one that mixes them with regular tables is refused unless it
    /// can be captured (`replay_of` then captures it: it reads what a
    /// follower does not have). Each statement is judged on its own, in
    /// order; the verdicts come back by statement.
    pub(super) fn temporary_objects(
        &self,
        temps: &mut temps::TempObjects,
        sql: &str,
        class: &Classification,
        ops: &mut Cow<'_, [StmtOp]>,
    ) -> Vec<temps::Verdict> {
        let creates = ops.iter().any(|o| matches!(o, StmtOp::CreateTemp { .. }));
        if temps.is_empty() && !creates {
            return vec![temps::Verdict::Regular; ops.len()];
        }
        let texts: Vec<&str> = match crate::sql::statements(sql) {
            Some(t) if t.len() == ops.len() => t,
            _ if ops.len() <= 1 => vec![sql],
            // Cannot tell the statements apart: judge the query as a whole.
            _ => vec![sql; ops.len()],
        };
        let mut verdicts = Vec::with_capacity(ops.len());
        for (i, text) in texts.into_iter().enumerate() {
            let own;
            let c: &Classification = if ops.len() > 1 && text.len() < sql.len() {
                own = self.ctx.classify.get(text);
                &own
            } else {
                class
            };
            if let StmtOp::CreateTemp { name, until_commit } = &ops[i] {
                temps.created(name, *until_commit);
            }
            let verdict =
                if temps.is_empty() { temps::Verdict::Regular } else { temps::verdict(c, |r| temps.contains(r)) };
            match verdict {
                temps::Verdict::Regular => {}
                temps::Verdict::OnlyTemp => {
                    if matches!(ops[i], StmtOp::Write | StmtOp::CopyIn) {
                        ops.to_mut()[i] = StmtOp::Read;
                    }
                    if starts_with_word(text, &["drop"]) {
                        for target in &c.targets {
                            temps.dropped(target);
                        }
                    }
                }
                temps::Verdict::Mixed => {
                    // (A temporary table created from a regular sequence's draws, say.)
                    let op = &ops[i];
                    let write = matches!(op, StmtOp::Write | StmtOp::CopyIn | StmtOp::CreateTemp { .. });
                    let capturable = *op == StmtOp::Write && class.capture.iter().any(|(j, _)| *j == i);
                    if write && !capturable {
                        ops.to_mut()[i] = StmtOp::NotReplicable(MIXES_TEMPORARY);
                    }
                }
            }
            if temps::discards_temps(text) {
                temps.discarded();
            }
            verdicts.push(verdict);
        }
        verdicts
    }

    /// SQL-level PREPARE / EXECUTE / DEALLOCATE: remember what each prepared
    /// statement does, and resolve an EXECUTE to a read or a refusal. chorus
    /// cannot replay an EXECUTE (the follower has no such prepared statement),
    /// so executing a prepared write is refused.
    async fn sql_prepared_statements(&mut self, sql: &str, ops: &mut [StmtOp]) {
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
                    // A read-only transaction on a follower writes nothing.
                    Some(true) if !self.txn_read_only() => {
                        StmtOp::NotReplicable("EXECUTE of an SQL-level prepared write; use the extended protocol")
                    }
                    // Unknown names fail on the server (26000).
                    _ => StmtOp::Read,
                };
            }
        }
        let words = |t: &str| t.split_whitespace().take(2).map(str::to_ascii_lowercase).collect::<Vec<_>>();
        let Some(texts) = texts() else { return };
        for text in texts {
            let w = words(text);
            match w.first().map(String::as_str) {
                Some("prepare") if w.get(1).map(String::as_str) != Some("transaction") => {
                    let Some(name) = prepared_name(text, 1) else { continue };
                    // As its EXECUTE would run it (functions the catalog
                    // knows as safe make a SELECT a read: pg_dump's PREPAREs).
                    let writes = match prepared_body(text) {
                        Some(body) => {
                            // Wherever the PREPARE runs, its EXECUTE may run on the leader.
                            let class = self.ctx.classify.get(body);
                            self.resolve_ops_where(&class, false).await.iter().any(|o| *o != StmtOp::Read)
                        }
                        None => true,
                    };
                    self.sql_prepared.insert(name, writes);
                }
                Some("deallocate") => {
                    match prepared_name(text, if w.get(1).map(String::as_str) == Some("prepare") { 2 } else { 1 }) {
                        Some(n) if n == "all" => {
                            self.sql_prepared.clear();
                            self.forget_own_statements();
                        }
                        Some(n) => {
                            self.sql_prepared.remove(&n);
                        }
                        None => {}
                    }
                }
                Some("discard") => {
                    self.sql_prepared.clear();
                    self.forget_own_statements();
                }
                _ => {}
            }
        }
    }

    /// DEALLOCATE ALL or DISCARD also drop chorus's own prepared statements.
    fn forget_own_statements(&mut self) {
        for c in self.conns.iter_mut().flatten() {
            c.own_prepared = 0;
        }
    }

    /// Plan an extended-protocol batch for the log: one entry per Execute of a
    /// writing statement, with the statement's text, parameter types and the
    /// Bind's parameters, or the rows it writes when chorus captures it.
    /// `defer`: keyed writes may be logged without an LSN (not for a batch
    /// streamed before its Sync, whose later writes are not known yet).
    pub(super) async fn batch_log(
        &self,
        batch: &[Message],
        parsed: &[(String, Arc<Classification>)],
        defer: bool,
    ) -> Result<RequestLog, ClientError> {
        if !self.replicated {
            // Only a lone CREATE/DROP DATABASE (Parse, Bind, Execute) matters.
            let mut parses = batch.iter().filter(|m| m.tag == b'P').filter_map(parse_head);
            let executes = batch.iter().filter(|m| m.tag == b'E').count();
            return Ok(match (parses.next(), parses.next()) {
                (Some((_, sql)), None) if executes == 1 => self.unreplicated_log(&self.ctx.classify.get(sql).ops, sql),
                _ => RequestLog::unlogged(),
            });
        }
        let class_of = |name: &str, sql: &str| {
            parsed
                .iter()
                .rev()
                .find(|(pn, _)| pn == name)
                .map(|(_, c)| c.clone())
                .unwrap_or_else(|| self.ctx.classify.get(sql))
        };
        // How each Parse of a write chorus could capture is replicated,
        // decided once per Parse: a captured one is sent with its RETURNING column.
        let mut decided: Vec<(usize, Result<Replay, ClientError>)> = Vec::new();
        let mut rewrites: Vec<(usize, Message)> = Vec::new();
        let mut parses: Vec<(usize, Arc<CaptureSpec>)> = Vec::new();
        // Writes after a captured one in the batch are captured too (see replay_of).
        let mut captured_before = false;
        let mut bound: Vec<(&str, &str)> = Vec::new(); // portal -> statement
        let mut created_here: Vec<String> = Vec::new(); // temporary objects the batch creates
        for (i, m) in batch.iter().enumerate() {
            match m.tag {
                b'P' => {
                    let Some((name, sql)) = parse_head(m) else { continue };
                    let class = class_of(name, sql);
                    if let Some(StmtOp::CreateTemp { name, .. }) = class.ops.first() {
                        created_here.push(name.clone());
                    }
                    if class.capture.is_empty() || class.statement_count != 1 {
                        continue;
                    }
                    // Writes of temporary objects only are not replicated at all.
                    let is_temp = |r: &str| {
                        self.temps.contains(r)
                            || r.rsplit('.').next().is_some_and(|n| created_here.iter().any(|c| c == n))
                    };
                    if (!self.temps.is_empty() || !created_here.is_empty())
                        && temps::verdict(&class, is_temp) == temps::Verdict::OnlyTemp
                    {
                        continue;
                    }
                    let r = self.replay_of(sql, &class, 0, captured_before).await;
                    if let Ok(Replay::Capture(spec)) = &r {
                        let (_, types) = parse_statement(m).ok_or_else(bad_message)?;
                        let text = with_clauses(sql, &[(statement_end(sql), &spec.clause)]);
                        rewrites.push((i, build::parse(name, text.as_bytes(), &types)));
                        parses.push((i, spec.clone()));
                    }
                    decided.push((i, r));
                }
                b'B' => {
                    if let Some((portal, stmt)) = bind_head(m) {
                        bound.retain(|(p, _)| *p != portal);
                        bound.push((portal, stmt));
                    }
                }
                b'E' => {
                    let stmt = execute_head(m).and_then(|p| bound.iter().find(|(b, _)| *b == p)).map(|(_, s)| *s);
                    let Some(stmt) = stmt else { continue };
                    let here =
                        batch[..i].iter().rposition(|m| m.tag == b'P' && parse_head(m).is_some_and(|(n, _)| n == stmt));
                    captured_before |= match here {
                        Some(j) => parses.iter().any(|(k, _)| *k == j),
                        None => self.statements.get(stmt).is_some_and(|s| s.capture.is_some()),
                    };
                }
                _ => {}
            }
        }
        // Statement name -> (Parse message, classification, the Parse's index
        // when it is in this batch), later Parses win.
        let stmt_of = |name: &str, upto: usize| -> Option<(Message, Arc<Classification>, Option<usize>)> {
            for (j, m) in batch[..upto].iter().enumerate().rev() {
                if m.tag == b'P'
                    && let Some((n, sql)) = parse_head(m)
                    && n == name
                {
                    return Some((m.clone(), class_of(name, sql), Some(j)));
                }
            }
            self.statements.get(name).map(|s| (s.parse.clone(), s.class.clone(), None))
        };
        let capture_of = |name: &str, upto: usize| -> Option<Arc<CaptureSpec>> {
            match stmt_of(name, upto)?.2 {
                Some(j) => parses.iter().find(|(k, _)| *k == j).map(|(_, s)| s.clone()),
                None => self.statements.get(name)?.capture.clone(),
            }
        };
        let mut temps = self.temps.clone();
        let mut lone_text = String::new(); // of a statement chorus acts on after it ran (`After`)
        let mut ops = Vec::new();
        let mut keyed = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        let mut slots = Vec::new();
        let mut captured_before = false;
        let (mut executes, mut describes) = (0, 0);
        let mut portals: Vec<(String, usize)> = Vec::new(); // portal -> Bind index
        for (i, m) in batch.iter().enumerate() {
            match m.tag {
                b'B' => {
                    if let Some((portal, _)) = bind_head(m) {
                        portals.retain(|(p, _)| p != portal);
                        portals.push((portal.to_string(), i));
                    }
                }
                b'D' => {
                    let k = describes;
                    describes += 1;
                    let spec = match target_head(m) {
                        Some((b'S', name)) => capture_of(name, i),
                        Some((_, portal)) => portals
                            .iter()
                            .find(|(p, _)| p == portal)
                            .and_then(|&(_, bi)| bind_head(&batch[bi]).and_then(|(_, stmt)| capture_of(stmt, bi))),
                        None => None,
                    };
                    if let Some(spec) = spec {
                        slots.push(Slot { at: At::Describe(k), entry: None, hide: spec.hide });
                    }
                }
                b'E' => {
                    let ordinal = executes;
                    executes += 1;
                    let Some(portal) = execute_head(m) else { continue };
                    let Some(&(_, bi)) = portals.iter().find(|(p, _)| p == portal) else {
                        // A portal bound by an earlier request: its statement is
                        // unknown here; refuse only if it could write.
                        ops.push(StmtOp::NotReplicable("Execute of a portal bound before the last Sync"));
                        continue;
                    };
                    let bind = &batch[bi];
                    let Some((_, stmt)) = bind_head(bind) else { continue };
                    let Some((parse, class, origin)) = stmt_of(stmt, bi) else { continue };
                    let mut resolved = self.resolve_ops(&class).await;
                    let text = parse_statement(&parse).map(|(sql, _)| sql).unwrap_or_default();
                    let temporary = self.temporary_objects(&mut temps, &text, &class, &mut resolved);
                    let op = resolved.first().cloned().unwrap_or(StmtOp::Read);
                    if matches!(op, StmtOp::Concurrently { .. } | StmtOp::Database { .. }) {
                        lone_text = text.to_string();
                    }
                    let replay = match op {
                        StmtOp::Write => {
                            Some(self.execute_replay(stmt, &parse, &class, origin, &decided, captured_before).await?)
                        }
                        _ => None,
                    };
                    if temporary.contains(&temps::Verdict::Mixed) && matches!(replay, Some(Replay::Text(_))) {
                        return Err(refusal(writeplan::Refusal(format!("chorus cannot replicate {MIXES_TEMPORARY}"))));
                    }
                    let captured = matches!(replay, Some(Replay::Capture(_)));
                    captured_before |= captured;
                    let (mut is_keyed, mut silent) = (false, false);
                    if defer
                        && !captured
                        && op == StmtOp::Write
                        && class.statement_count == 1
                        && let Some((sql, _)) = parse_statement(&parse)
                    {
                        // A row limit could suspend the portal before its tag.
                        let unlimited = execute_max_rows(m) == Some(0);
                        is_keyed = unlimited && self.keyed_flags(&sql, &class, &resolved).await.first() == Some(&true);
                        silent = class.keyed.first().is_some_and(|(_, k)| k.may_change_nothing());
                    }
                    if captured && execute_max_rows(m) != Some(0) {
                        // The rows come with the statement's first Execute:
                        // all of them, so its completion is in this request.
                        rewrites.push((i, build::execute(portal, 0)));
                    }
                    keyed.push(is_keyed);
                    if matches!(op, StmtOp::Write | StmtOp::CopyIn) {
                        pending.push(Pending::Write(parse, bind.clone(), class.clone(), ordinal, silent, replay));
                    } else if is_savepoint_op(&op) {
                        pending.push(Pending::Savepoint(op.clone()));
                    }
                    ops.push(op);
                }
                _ => {}
            }
        }
        // An Execute whose portal is unknown pushed an op but no flag.
        keyed.resize(ops.len(), false);
        self.note_rollback(&ops);
        let plan = writeplan::plan(self.txn_view(), &ops, &keyed).map_err(refusal)?;
        let mut items = Vec::new();
        for p in pending {
            let (parse, bind, class, ordinal, silent, replay) = match p {
                Pending::Write(parse, bind, class, ordinal, silent, replay) => {
                    (parse, bind, class, ordinal, silent, replay)
                }
                Pending::Savepoint(op) => {
                    items.push(Item::Savepoint(op));
                    continue;
                }
            };
            let time = match replay {
                Some(Replay::Capture(spec)) => {
                    items.push(Item::Capture(spec, ordinal));
                    continue;
                }
                Some(Replay::Text(time)) => Some(time),
                None => None,
            };
            let (sql, types) = parse_statement(&parse).ok_or_else(bad_message)?;
            if plan.copy {
                self.refuse_volatile_defaults(&sql, &class.tables).await?;
                self.refuse_nondeterministic_routines(&sql, &class).await?;
                items.push(Item::Entry(Entry::Copy { sql, data: Default::default() }, None));
                continue;
            }
            let time = match time {
                Some(t) => t,
                None => txnlog::plan_text(&sql).map_err(nondeterministic)?,
            };
            let tail = bind_tail(&bind).ok_or_else(bad_message)?;
            let tag = (plan.defer && silent).then_some(ordinal);
            items.push(Item::Entry(Entry::Extended { sql, plan: time, types, tail }, tag));
        }
        let (mut plan, mut commit_tail, mut commit_replies) = (plan, None, Vec::new());
        if plan.append_before && items.iter().any(|i| matches!(i, Item::Capture(..))) {
            // The entry would be appended before the batch runs, but the
            // captured rows come from running it. When the COMMIT ends the
            // batch (pipelines do that: psycopg 3's, pgx's batches), chorus
            // sends it without the COMMIT and commits itself after the rows,
            // as for a simple query ending with its COMMIT.
            let ends_with_commit = defer
                && ops.last() == Some(&StmtOp::Commit)
                && ops.iter().filter(|o| matches!(o, StmtOp::Commit | StmtOp::Rollback)).count() == 1;
            let Some((start, replies)) = trailing_commit(batch).filter(|_| ends_with_commit) else {
                return Err(refusal(writeplan::Refusal(CAPTURE_WITH_COMMIT.into())));
            };
            plan = plan.committed_by_chorus();
            (commit_tail, commit_replies) = (Some(start), replies);
        }
        let after = after_request(&plan, &ops, &lone_text);
        Ok(RequestLog {
            plan,
            items,
            query: None,
            rewrites,
            parses,
            slots,
            temps: Some(temps),
            after,
            commit_tag: commit_tail.is_some(),
            commit_tail,
            commit_replies,
        })
    }

    /// How an Execute of the writing statement `name` is replicated: as
    /// decided for its Parse (in this batch, or when it was prepared).
    /// `after_capture`: an earlier Execute of the batch is captured.
    async fn execute_replay(
        &self,
        name: &str,
        parse: &Message,
        class: &Classification,
        origin: Option<usize>,
        decided: &[(usize, Result<Replay, ClientError>)],
        after_capture: bool,
    ) -> Result<Replay, ClientError> {
        let (sql, _) = parse_statement(parse).ok_or_else(bad_message)?;
        let replayed = |r: Replay| match r {
            Replay::Text(_) if after_capture && !draws_no_sequence_values(&sql) => Err(after_captured_write()),
            r => Ok(r),
        };
        if let Some(j) = origin
            && let Some((_, r)) = decided.iter().find(|(k, _)| *k == j)
        {
            return replayed(r.clone()?);
        }
        if origin.is_none()
            && let Some(spec) = self.statements.get(name).and_then(|s| s.capture.clone())
        {
            return Ok(Replay::Capture(spec));
        }
        match self.replay_of(&sql, class, 0, false).await? {
            Replay::Capture(_) => Err(ClientError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "chorus cannot replicate this prepared write as it was prepared: the table changed since, and \
                 chorus must now replicate the rows it writes",
            )
            .with_hint("Prepare the statement again.")),
            r => replayed(r),
        }
    }
}

/// A write after DDL in the same query on the table it writes: chorus
/// judges a write before the query runs, by a catalog that cannot know what
/// the DDL does to the table's defaults, identity columns or triggers. When
/// it could (the DDL mentions any of them), the write is refused; sent as
/// its own query, after the DDL, it is judged by the transaction's own view.
fn refuse_after_schema_change(changes: &[&str], class: &Classification, i: usize) -> Result<(), ClientError> {
    let Some((_, shape)) = class.capture.iter().find(|(j, _)| *j == i) else { return Ok(()) };
    const RISKY: [&str; 8] =
        ["default", "serial", "bigserial", "smallserial", "identity", "generated", "trigger", "rule"];
    let table = shape.table.rsplit('.').next().unwrap_or(&shape.table);
    let risky = changes.iter().any(|ddl| mentions_word(ddl, table) && RISKY.iter().any(|w| mentions_word(ddl, w)));
    if risky {
        return Err(ClientError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "chorus cannot replicate this write to {table} sent in the same query as DDL that may change its \
                 defaults or triggers: chorus decides how to replicate a write before the query runs"
            ),
        )
        .with_hint("Send the DDL and the write as separate queries (in one transaction if need be)."));
    }
    Ok(())
}

/// Where a one-statement text's statement ends (before a trailing `;` or comment).
fn statement_end(sql: &str) -> usize {
    crate::sql::statement_ranges(sql).and_then(|r| r.last().map(|r| r.end)).unwrap_or(sql.len())
}

/// What chorus does after the request, from the text of the client's lone
/// statement: log what the followers run instead (`WritePlan::log_after`),
/// or mirror a CREATE/DROP DATABASE (`WritePlan::database`).
fn after_request(plan: &WritePlan, ops: &[StmtOp], text: &str) -> Option<After> {
    if plan.database {
        return crate::sql::database::parse(text).map(After::Database);
    }
    let drop = ops.iter().find_map(|o| if let StmtOp::Concurrently { drop } = o { Some(*drop) } else { None });
    plan.log_after.then(|| crate::sql::without_concurrently(text, drop?).map(After::Log))?
}

/// A write of regular tables that reads (or is otherwise tied to) the
/// session's temporary objects, when its rows cannot be captured.
const MIXES_TEMPORARY: &str = "a write of regular tables that involves this session's temporary tables or \
     sequences (followers do not have them): write the values into the statement, or use a regular table";

/// chorus appends the log entry before the COMMIT it sees, and a captured
/// write's rows are known only once it has run (a query that ends with its
/// COMMIT is committed by chorus instead).
const CAPTURE_WITH_COMMIT: &str = "chorus cannot replicate a write whose rows it must capture (see README, \
     Replication) sent together with its COMMIT in one extended-protocol batch, or followed by statements \
     after the COMMIT in one query; send the COMMIT on its own";

/// Does the text start with one of these keywords? No allocation: this runs
/// for every query.
fn starts_with_word(sql: &str, words: &[&str]) -> bool {
    let t = sql.trim_start().as_bytes();
    words.iter().any(|w| t.len() >= w.len() && t[..w.len()].eq_ignore_ascii_case(w.as_bytes()))
}

/// Does `word` occur in `text` as a whole identifier (case-insensitive)?
pub(super) fn mentions_word(text: &str, word: &str) -> bool {
    let (t, w) = (text.as_bytes(), word.as_bytes());
    if w.is_empty() || t.len() < w.len() {
        return false;
    }
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    (0..=t.len() - w.len()).any(|start| {
        let end = start + w.len();
        t[start..end].eq_ignore_ascii_case(w)
            && (start == 0 || !is_ident(t[start - 1]))
            && (end == t.len() || !is_ident(t[end]))
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

/// Where a batch's last statement starts when it is an Execute of a portal
/// bound (and maybe described) just before it: the index of its Bind, and
/// the replies the Bind and Describe would get (BindComplete, NoData: the
/// statement is a COMMIT, which returns no rows). The statement's Parse, if
/// the batch has it, stays in the batch: the statement may be reused by name.
fn trailing_commit(batch: &[Message]) -> Option<(usize, Vec<Message>)> {
    let last = batch.len().checked_sub(1)?;
    let portal = execute_head(batch.get(last).filter(|m| m.tag == b'E')?)?;
    let mut start = last;
    let described = start > 0 && batch[start - 1].tag == b'D' && target_head(&batch[start - 1]) == Some((b'P', portal));
    if described {
        start -= 1;
    }
    let bind = batch.get(start.checked_sub(1)?).filter(|m| m.tag == b'B')?;
    if bind_head(bind).map(|(p, _)| p) != Some(portal) {
        return None;
    }
    let mut replies = vec![Message::new(b'2', &[])];
    if described {
        replies.push(Message::new(b'n', &[]));
    }
    Some((start - 1, replies))
}

/// An Execute's row limit (0: all rows).
fn execute_max_rows(m: &Message) -> Option<i32> {
    let mut f = Fields::new(m.body());
    f.cstr()?;
    f.i32()
}

fn is_savepoint_op(op: &StmtOp) -> bool {
    matches!(op, StmtOp::Savepoint(_) | StmtOp::RollbackTo(_) | StmtOp::Release(_))
}

/// The Parse message's text and parameter types.
pub(super) fn parse_statement(parse: &Message) -> Option<(Arc<str>, Vec<u32>)> {
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
pub(super) fn bind_tail(bind: &Message) -> Option<Bytes> {
    let body = bind.body();
    let mut f = Fields::new(body);
    f.cstr()?;
    f.cstr()?;
    let rest = f.rest();
    let start = body.len() - rest.len();
    Some(bind.frame.slice(5 + start..))
}

pub(super) fn refusal(r: writeplan::Refusal) -> ClientError {
    ClientError::new(sqlstate::FEATURE_NOT_SUPPORTED, r.0)
        .with_hint("chorus replicates every write to its followers statement by statement; see README, Replication.")
}

pub(super) fn nondeterministic(e: crate::sql::rewrite::Nondeterministic) -> ClientError {
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
