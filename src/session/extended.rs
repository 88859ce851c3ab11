//! Extended-protocol batches (Parse/Bind/Describe/Execute/Close up to Sync or
//! Flush) and COPY FROM STDIN data.
//!
//! A batch is routed as a whole when it ends: to the leader if any statement in
//! it needs the leader, else to a follower. Before forwarding, statements the
//! batch uses that were prepared on another server are prepared on the target.

use super::openbatch::SyncKind;
use super::statements::{Statement, bind_head, parse_head, target_head};
use super::writeplan::TakeLsn;
use super::{Inflight, Session, SessionError};
use crate::protocol::{ClientError, Message, sqlstate};
use crate::router::decide;
use crate::sql::snapshot::exports;
use crate::sql::{LeaderReason, SettingChange};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// A pending batch this large is routed before its Sync, so chorus never
/// holds more than about this much of one client's unsynced messages.
const EARLY_ROUTE_BYTES: usize = 1 << 20;
/// Messages of a routed batch are written on once this much is queued.
const FORWARD_CHUNK_BYTES: usize = 256 * 1024;

/// What routing needs to know about a batch.
#[derive(Default)]
struct BatchNeeds {
    leader: bool,
    functions: Vec<String>,
    settings: Vec<SettingChange>,
    ddl: bool,
    pin: Option<crate::sql::PinReason>,
    /// Set when the batch would write inside a follower's read-only transaction.
    refuse: Option<ClientError>,
    /// (name, classification) of each Parse, in order: classified once here and
    /// reused when the batch is committed.
    parsed: Vec<(String, Arc<crate::sql::Classification>)>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    pub(super) async fn on_extended(&mut self, m: Message) -> Result<(), SessionError> {
        if let Some(node) = self.open_batch {
            // The batch was already routed (by Flush): the rest follows it.
            let lazy = self.missing_statements(node, std::slice::from_ref(&m));
            if !lazy.is_empty() {
                // Cannot prepare out of band mid-batch; the server reports the
                // missing statement itself.
                tracing::debug!(?lazy, "statement used mid-batch is not prepared on this server");
            }
            self.open_log_message(&m).await?;
            self.commit_messages(node, std::slice::from_ref(&m), &[]);
            let conn = self.conns[node].as_mut().expect("open batch node is connected");
            conn.queue(&m.frame);
            if conn.queued_len() >= FORWARD_CHUNK_BYTES {
                let r = conn.flush().await;
                r.map_err(|e| self.server_lost(node, e))?;
            }
            return Ok(());
        }
        if self.batch.len() >= 100_000 {
            return Err(SessionError::Fatal(ClientError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "too many extended-protocol messages without Sync",
            )));
        }
        if self.batch.is_empty() {
            self.batch_bytes = 0;
        }
        self.batch_bytes += m.frame.len();
        self.batch.push(m);
        if self.batch_bytes >= EARLY_ROUTE_BYTES {
            // Don't hold a huge batch in memory: route it now (to the leader,
            // which can run anything that follows) and stream the rest.
            return self.open_batch_now(None).await;
        }
        Ok(())
    }

    pub(super) async fn on_sync(&mut self, m: Message) -> Result<(), SessionError> {
        if self.owed_sync {
            // Completes an extended-protocol COPY: its reply is already expected.
            self.owed_sync = false;
            let node = self.active.expect("owed sync has an active node");
            return self.send_now(node, &m).await;
        }
        if let Some(node) = self.open_batch.take() {
            return self.close_open_batch(node, m).await;
        }
        if self.local_abort {
            self.local_abort_batch();
            return Ok(());
        }
        if self.chunked.is_some() {
            return self.end_chunked(m).await;
        }
        if self.batch_is_local().is_some() {
            return self.on_local_batch(m).await;
        }
        self.sync_batch(m, SyncKind::Client).await
    }

    /// Route and forward the pending batch, ended by `m`: the client's Sync,
    /// or (`SyncKind::Chunk`) its Flush, for which chorus sends a Sync of its
    /// own (see openbatch.rs, chunks).
    pub(super) async fn sync_batch(&mut self, m: Message, kind: SyncKind) -> Result<(), SessionError> {
        if self.replicated && self.txn_facts.ddl {
            let classes = self.batch_classes();
            if !self.read_txn_facts(&classes).await {
                self.stalled = Some(m);
                return Ok(());
            }
        }
        if self.txn_node.and_then(|n| self.conns[n].as_ref()).is_some_and(|c| c.read_only_txn) {
            let texts: Vec<String> = self
                .batch
                .iter()
                .filter(|m| m.tag == b'P')
                .filter_map(|m| parse_head(m).map(|(_, s)| s.to_string()))
                .collect();
            for sql in &texts {
                self.note_read_write(sql);
            }
        }
        let log = self.batch_log(&self.batch, &[], kind == SyncKind::Client).await;
        let (mut log, opens) = match log.and_then(|log| self.chunk_plan(log, kind)) {
            Ok(planned) => planned,
            Err(e) if kind == SyncKind::Chunk => return self.refuse_chunk(e),
            Err(e) if kind == (SyncKind::Final { opened: true }) => return self.refuse_final_chunk(e).await,
            Err(e) => return self.refuse_in_order(e, m).await,
        };
        if self.log_needs_idle(&log.plan) && self.busy() {
            self.stalled = Some(m);
            return Ok(());
        }
        // A snapshot is exported inside a transaction (its rows name it, snapshots.rs).
        let exports_snapshot = (self.txn_node.is_some() || self.deferred_begin)
            && self.batch.iter().any(|p| p.tag == b'P' && parse_head(p).is_some_and(|(_, sql)| exports(sql)));
        self.begin_with_lsn = matches!(log.plan.take_lsn, Some(TakeLsn::Before { begin: true }));
        let placed = self.place_batch(&m, log.plan.logs).await;
        self.begin_with_lsn = false;
        let Some((node, needs, mut batch)) = placed? else { return Ok(()) };
        if let Some(start) = log.commit_tail {
            batch.truncate(start);
        }
        self.chunk_placed(opens);
        if let Some(temps) = log.temps.take() {
            self.temps = temps;
        }
        self.send_captured(&mut batch, &mut log);
        batch.push(if kind == SyncKind::Chunk { crate::protocol::build::sync() } else { m });
        if let Some(p) = needs.pin {
            self.pinned.get_or_insert(p);
        }
        let inflight = Inflight {
            settings: needs.settings,
            ddl: needs.ddl,
            extended: true,
            captures: std::mem::take(&mut log.slots),
            swallow_ready: kind == SyncKind::Chunk,
            exports_snapshot,
            ..Default::default()
        };
        if log.plan.adds_steps() || !log.items.is_empty() {
            self.copy_logged = log.plan.copy;
            return self.forward_logged(node, &batch, inflight, log).await;
        }
        self.forward_request(node, &batch, inflight).await
    }

    pub(super) async fn on_flush(&mut self, m: Message) -> Result<(), SessionError> {
        if let Some(node) = self.open_batch {
            return self.send_now(node, &m).await;
        }
        if self.batch.is_empty() {
            if self.busy() {
                let node = self.active.expect("busy implies active");
                return self.send_now(node, &m).await;
            }
            return Ok(());
        }
        if self.chunked.is_none() && self.batch_is_local().is_some() {
            return self.on_local_batch(m).await;
        }
        self.open_batch_now(Some(m)).await
    }

    /// Route the pending batch and forward it, leaving it open: the rest of
    /// its messages follow to the same server until Sync. `flush` is the
    /// client's Flush, forwarded after the batch.
    async fn open_batch_now(&mut self, flush: Option<Message>) -> Result<(), SessionError> {
        let terminator = flush.clone().unwrap_or_else(|| Message::new(b'H', &[]));
        if self.replicated && (self.chunked.is_some() || self.batch_captures().await) {
            return self.chunk_now(terminator).await;
        }
        let log = match self.open_batch_log().await {
            Ok(log) => log,
            Err(e) => {
                self.refuse(e, &terminator);
                return Ok(());
            }
        };
        if self.log_needs_idle(&log.plan) && self.busy() {
            self.stalled = Some(terminator);
            return Ok(());
        }
        self.begin_with_lsn = matches!(log.plan.take_lsn, Some(TakeLsn::Before { begin: true }));
        let placed = self.place_batch(&terminator, log.plan.logs).await;
        self.begin_with_lsn = false;
        let Some((node, _, batch)) = placed? else { return Ok(()) };
        if let Some(temps) = log.temps.clone() {
            self.temps = temps;
        }
        if let Err(e) = self.open_log_start(node, &batch, log).await {
            self.refuse(e, &terminator);
            return Ok(());
        }
        self.set_active(node);
        self.open_batch = Some(node);
        let conn = self.conns[node].as_mut().expect("routed");
        for b in &batch {
            conn.queue(&b.frame);
        }
        match flush {
            Some(m) => self.send_now(node, &m).await?,
            None => {
                let r = conn.flush().await;
                r.map_err(|e| self.server_lost(node, e))?;
            }
        }
        self.placed(node);
        Ok(())
    }

    /// Route the pending batch, prepare on the chosen server the statements it
    /// uses that live elsewhere, and hand back the batch with its effects on
    /// statement state recorded. `None`: answered already, or stalled (the
    /// terminator `m` is kept and the batch looked at again later).
    async fn place_batch(
        &mut self,
        m: &Message,
        writes: bool,
    ) -> Result<Option<(usize, BatchNeeds, Vec<Message>)>, SessionError> {
        let Some((node, needs)) = self.route_batch(m, writes).await? else { return Ok(None) };
        let lazy = self.missing_statements(node, &self.batch);
        if !lazy.is_empty() && self.busy() {
            // Pipelined onto a connection with replies still to come: an
            // out-of-band Parse there would read those replies as its own.
            // Wait until it is idle, then route the batch again.
            self.stalled = Some(m.clone());
            return Ok(None);
        }
        if let Err(e) = self.prepare_missing(node, &lazy).await {
            self.batch.clear();
            self.reply_error(&e, m.tag == b'S');
            return Ok(None);
        }
        let batch = std::mem::take(&mut self.batch);
        self.commit_messages(node, &batch, &needs.parsed);
        Ok(Some((node, needs, batch)))
    }

    /// The classifications of the statements the pending batch parses or binds.
    pub(super) fn batch_classes(&self) -> Vec<Arc<crate::sql::Classification>> {
        self.batch
            .iter()
            .filter_map(|m| match m.tag {
                b'P' => parse_head(m).map(|(_, sql)| self.ctx.classify.get(sql)),
                b'B' => bind_head(m).and_then(|(_, s)| self.statements.get(s)).map(|s| s.class.clone()),
                _ => None,
            })
            .collect()
    }

    /// The statements the pending batch parses or binds, with their text.
    fn batch_statements(&self) -> Vec<(Arc<crate::sql::Classification>, String)> {
        self.batch
            .iter()
            .filter_map(|m| match m.tag {
                b'P' => parse_head(m).map(|(_, sql)| (self.ctx.classify.get(sql), sql.to_string())),
                b'B' => {
                    bind_head(m).and_then(|(_, s)| self.statements.get(s)).map(|s| (s.class.clone(), s.sql.to_string()))
                }
                _ => None,
            })
            .collect()
    }

    /// Captured statements of a placed batch go with their RETURNING column
    /// (and Executes of them without a row limit); the session remembers
    /// which of its prepared statements are captured.
    fn send_captured(&mut self, batch: &mut [Message], log: &mut super::logplan::RequestLog) {
        for (i, spec) in std::mem::take(&mut log.parses) {
            let rewritten = log.rewrites.iter().find(|(j, _)| *j == i).map(|(_, m)| m.clone());
            if let (Some(rewritten), Some((name, _))) = (rewritten, parse_head(&batch[i])) {
                let name = name.to_string();
                self.statements.set_capture(&name, &batch[i], rewritten, spec);
            }
        }
        for (i, m) in std::mem::take(&mut log.rewrites) {
            batch[i] = m;
        }
    }

    /// Queue one message to `node` and flush.
    async fn send_now(&mut self, node: usize, m: &Message) -> Result<(), SessionError> {
        let conn = self.conns[node].as_mut().expect("connected");
        conn.queue(&m.frame);
        let r = conn.flush().await;
        r.map_err(|e| self.server_lost(node, e))
    }

    /// Pick the batch's server (the terminator `m` is kept for a stall).
    async fn route_batch(&mut self, m: &Message, writes: bool) -> Result<Option<(usize, BatchNeeds)>, SessionError> {
        let needs = self.batch_needs().await;
        if let Some(e) = needs.refuse {
            if m.tag == b'S' {
                self.refuse_in_order(e, m.clone()).await?;
            } else {
                self.batch.clear();
                self.reply_error(&e, false);
            }
            return Ok(None);
        }
        let leader =
            writes || !self.replicated || needs.leader || self.deferred_begin || self.batch_bytes >= EARLY_ROUTE_BYTES;
        let want = decide(leader, self.view());
        let pipelined = self.pipelined_follower_read(want);
        if want == crate::router::Want::AnyFollower || pipelined.is_some() {
            let statements = if self.has_policy_rules() { self.batch_statements() } else { Vec::new() };
            let refs: Vec<(&crate::sql::Classification, &str)> =
                statements.iter().map(|(c, t)| (&**c, t.as_str())).collect();
            self.choose_read_policy(&refs);
        }
        if let Some(n) = pipelined
            && !self.policy_allows(n)
        {
            // Routed afresh once the follower's replies are in.
            self.stalled = Some(m.clone());
            return Ok(None);
        }
        Ok(self.route(want, m).await?.map(|node| (node, needs)))
    }

    /// Classify the batch without changing any state (it may be stalled and
    /// looked at again).
    async fn batch_needs(&self) -> BatchNeeds {
        let mut needs = BatchNeeds::default();
        let mut parsed: Vec<(String, Arc<crate::sql::Classification>)> = Vec::new();
        for m in self.batch.iter() {
            let class = match m.tag {
                b'P' => match parse_head(m) {
                    Some((name, sql)) => {
                        let c = self.ctx.classify.get(sql);
                        parsed.push((name.to_string(), c.clone()));
                        c
                    }
                    None => {
                        needs.leader = true;
                        continue;
                    }
                },
                b'B' => {
                    let Some((_, stmt)) = bind_head(m) else {
                        needs.leader = true;
                        continue;
                    };
                    let c = parsed
                        .iter()
                        .rev()
                        .find(|(n, _)| n == stmt)
                        .map(|(_, c)| c.clone())
                        .or_else(|| self.statements.get(stmt).map(|s| s.class.clone()));
                    match c {
                        Some(c) => {
                            needs.settings.extend(c.settings.iter().cloned());
                            c
                        }
                        None => continue,
                    }
                }
                _ => continue,
            };
            if needs.refuse.is_none() {
                needs.refuse = self.follower_txn_guard(&class);
            }
            needs.leader |= class.leader_reason.is_some()
                || class.pin_reason.is_some()
                || super::query::touches_read_only_guard(&class);
            needs.ddl |= matches!(class.leader_reason, Some(LeaderReason::Ddl));
            if needs.pin.is_none() {
                needs.pin = class.pin_reason;
            }
            needs.functions.extend(class.functions.iter().cloned());
        }
        if !needs.leader && !needs.functions.is_empty() {
            needs.leader = !self.ctx.catalog.all_safe(&self.database, &needs.functions).await;
        }
        needs.parsed = parsed;
        needs
    }

    /// Statements the messages use that `node` does not have and that are not
    /// parsed earlier in the same messages.
    fn missing_statements(&self, node: usize, messages: &[Message]) -> Vec<String> {
        let Some(conn) = self.conns[node].as_ref() else { return vec![] };
        let mut parsed_here: Vec<&str> = Vec::new();
        let mut missing = Vec::new();
        for m in messages {
            let used = match m.tag {
                b'P' => {
                    if let Some((name, _)) = parse_head(m) {
                        parsed_here.push(name);
                    }
                    continue;
                }
                b'B' => bind_head(m).map(|(_, s)| s),
                b'D' => target_head(m).and_then(|(k, n)| (k == b'S').then_some(n)),
                _ => None,
            };
            let Some(name) = used else { continue };
            if parsed_here.contains(&name) || missing.iter().any(|m: &String| m == name) {
                continue;
            }
            let Some(stmt) = self.statements.get(name) else { continue };
            let present = if name.is_empty() {
                conn.unnamed.as_deref() == Some(&*stmt.sql)
            } else {
                conn.prepared.contains(name)
            };
            if !present {
                missing.push(name.to_string());
            }
        }
        missing
    }

    /// Record what forwarding these messages to `node` does to the session's
    /// and the connections' statement state.
    /// `known`: classifications of the Parses in `messages`, in order, when the
    /// caller already has them.
    fn commit_messages(
        &mut self,
        node: usize,
        messages: &[Message],
        known: &[(String, Arc<crate::sql::Classification>)],
    ) {
        let mut known = known.iter();
        for m in messages {
            match m.tag {
                b'P' => {
                    let Some((name, sql)) = parse_head(m) else { continue };
                    let class = match known.next() {
                        Some((n, c)) if n == name => c.clone(),
                        _ => self.ctx.classify.get(sql),
                    };
                    let sql: Arc<str> = sql.into();
                    self.statements
                        .define(name, Statement { parse: m.clone(), sql: sql.clone(), class, capture: None });
                    let conn = self.conns[node].as_mut().expect("connected");
                    if name.is_empty() {
                        conn.unnamed = Some(sql);
                    } else if let Some(k) = self.statements.name_key(name) {
                        conn.prepared.insert(k);
                    }
                }
                b'C' => {
                    let Some((b'S', name)) = target_head(m) else { continue };
                    if name.is_empty() {
                        continue;
                    }
                    let key = self.statements.name_key(name);
                    self.statements.close(name);
                    for (i, c) in self.conns.iter_mut().enumerate() {
                        let Some(c) = c else { continue };
                        if c.prepared.remove(name)
                            && i != node
                            && let Some(k) = key.clone()
                        {
                            c.to_close.push(k);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// COPY FROM STDIN: client data goes straight to the server running the COPY.
    pub(super) async fn forward_copy(&mut self, m: Message) -> Result<(), SessionError> {
        let node = self.active.expect("copy has an active node");
        if matches!(m.tag, b'c' | b'f') {
            self.copy_in = false;
        }
        if self.copy_logged {
            match m.tag {
                b'd' => {
                    if let Some(t) = self.wtxn.as_mut() {
                        t.copy_data(m.body());
                    }
                }
                _ => self.copy_logged = false,
            }
        }
        let flush = !self.client.has_buffered_message() || m.tag != b'd';
        let conn = self.conns[node].as_mut().expect("connected");
        conn.queue(&m.frame);
        if flush || conn.queued_len() >= 256 * 1024 {
            let r = conn.flush().await;
            r.map_err(|e| self.server_lost(node, e))?;
        }
        Ok(())
    }
}
