//! Simple-query requests (Query, FunctionCall), and the deferred BEGIN.
//!
//! A plain `BEGIN` is answered by chorus and sent on with the transaction's first
//! statement: if that is `SET TRANSACTION READ ONLY` the whole transaction can run
//! on a follower; anything else takes it to the leader.

use super::writeplan::TakeLsn;
use super::{Inflight, Session, SessionError};
use crate::metrics::Route;
use crate::protocol::{ClientError, Fields, Message, build, sqlstate};
use crate::router::{SessionView, Want, decide};
use crate::sql::{Classification, LeaderReason, Shape};
use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite};

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    pub(super) fn view(&self) -> SessionView {
        SessionView {
            txn_node: self.txn_node,
            busy_node: if self.busy() { self.active } else { None },
            pinned: self.pinned.is_some(),
            leader: self.ctx.topology.leader(),
        }
    }

    /// Does this classification need the leader, counting functions the
    /// leader's catalog does not know as safe?
    pub(super) async fn needs_leader(&self, c: &Classification) -> bool {
        c.leader_reason.is_some()
            || c.pin_reason.is_some()
            || touches_read_only_guard(c)
            || !self.ctx.catalog.all_safe(&self.database, &c.functions).await
    }

    /// A read-only transaction running on a follower must stay read-only: a
    /// write there would silently diverge the follower, so chorus refuses it
    /// before the follower sees it.
    pub(super) fn follower_txn_guard(&self, c: &Classification) -> Option<ClientError> {
        // A transaction declared READ ONLY whose placement waits for its
        // next statement (snapshots.rs) goes to a follower too.
        let on_follower = self.txn_node.is_some_and(|n| n != self.ctx.topology.leader());
        if !on_follower && (self.deferred_setup.is_empty() || self.pinned.is_some()) {
            return None;
        }
        let writes = matches!(
            c.leader_reason,
            Some(
                LeaderReason::Write
                    | LeaderReason::Ddl
                    | LeaderReason::WritableCte
                    | LeaderReason::LockingRead
                    | LeaderReason::Utility
                    | LeaderReason::Unparsed
            )
        );
        (writes || touches_read_only_guard(c) || c.pin_reason.is_some()).then(|| {
            ClientError::new(
                sqlstate::READ_ONLY_SQL_TRANSACTION,
                "cannot execute this statement in a read-only transaction served by a follower",
            )
            .with_hint("Start the transaction without READ ONLY to run writes on the leader.")
        })
    }

    pub(super) async fn on_query(&mut self, m: Message) -> Result<(), SessionError> {
        let Some(sql) = Fields::new(m.body()).cstr() else {
            return Err(SessionError::Fatal(ClientError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "invalid Query message: the query text is not a valid UTF-8 string",
            )));
        };
        if let Some(cmd) = crate::sql::chorus_setting::parse(sql) {
            if self.busy() {
                self.stalled = Some(m);
            } else {
                self.answer_local_query(cmd);
            }
            return Ok(());
        }
        let class = self.ctx.classify.get(sql);

        if self.local_abort {
            self.local_abort_query(class.shape);
            return Ok(());
        }
        if self.deferred_begin {
            // Nothing reached a server since BEGIN: end it here.
            let tag = match class.shape {
                Shape::Commit => Some("COMMIT"),
                Shape::Rollback => Some("ROLLBACK"),
                _ => None,
            };
            if let Some(tag) = tag {
                self.deferred_begin = false;
                self.deferred_setup.clear();
                self.setup_may_write = false;
                self.cout.put_slice(&build::command_complete(tag).frame);
                self.cout.put_slice(&build::ready_for_query(b'I').frame);
                return Ok(());
            }
            if self.defer_transaction_setup(sql, &class) {
                return Ok(());
            }
        } else if !self.busy()
            && self.txn_node.is_none()
            && matches!(class.shape, Shape::Begin { read_only: None, plain: true })
        {
            self.deferred_begin = true;
            self.cout.put_slice(&build::command_complete("BEGIN").frame);
            self.cout.put_slice(&build::ready_for_query(b'T').frame);
            return Ok(());
        }

        if let Some(e) = self.follower_txn_guard(&class) {
            return self.refuse_in_order(e, m).await;
        }
        self.note_read_write(sql);
        if self.replicated && !self.read_txn_facts(std::slice::from_ref(&class)).await {
            // The transaction's schema must be read on its idle connection first.
            self.stalled = Some(m);
            return Ok(());
        }
        let log = match self.query_log(sql, &class).await {
            Ok(log) => log,
            Err(e) => return self.refuse_in_order(e, m).await,
        };
        if self.log_needs_idle(&log.plan) && self.busy() {
            // chorus's steps need the transaction state the in-flight requests
            // will leave, and an idle connection.
            self.stalled = Some(m);
            return Ok(());
        }
        let needs_leader = if self.deferred_begin {
            class.shape != Shape::SetTransactionReadOnly && self.deferred_setup.is_empty()
        } else {
            !self.replicated || log.plan.logs || self.needs_leader(&class).await
        };
        // A snapshot is exported inside a transaction (its rows name it).
        let exports_snapshot =
            (self.txn_node.is_some() || self.deferred_begin) && crate::sql::snapshot::exports(sql);
        let want = match self.snapshot_node(sql) {
            Some(n) => Want::Node(n),
            None => decide(needs_leader, self.view()),
        };
        let pipelined = self.pipelined_follower_read(want);
        if want == Want::AnyFollower || pipelined.is_some() {
            self.choose_read_policy(&[(&class, sql)]);
        }
        if let Some(n) = pipelined
            && !self.policy_allows(n)
        {
            // Routed afresh once the follower's replies are in.
            self.stalled = Some(m);
            return Ok(());
        }
        self.begin_with_lsn = matches!(log.plan.take_lsn, Some(TakeLsn::Before { begin: true }));
        let routed = self.route(want, &m).await;
        self.begin_with_lsn = false;
        let Some(node) = routed? else { return Ok(()) };
        if matches!(class.shape, Shape::Begin { read_only: Some(true), .. } | Shape::SetTransactionReadOnly)
            && let Some(c) = self.conns[node].as_mut()
        {
            c.read_only_txn = true;
        }
        if let Some(temps) = log.temps.clone() {
            self.temps = temps;
        }
        if let Some(p) = class.pin_reason
            && self.pinned.is_none()
        {
            tracing::debug!(reason = ?p, "session pinned to the leader");
            self.pinned = Some(p);
        }
        let inflight = Inflight {
            settings: class.settings.clone(),
            ddl: matches!(class.leader_reason, Some(LeaderReason::Ddl)),
            exports_snapshot,
            ..Default::default()
        };
        // Captured statements go with their RETURNING column.
        let m = match log.query.as_deref() {
            Some(sql) => build::query(sql),
            None => m,
        };
        if log.plan.adds_steps() || !log.items.is_empty() {
            self.copy_logged = log.plan.copy;
            return self.forward_logged(node, &[m], inflight, log).await;
        }
        self.forward_request(node, &[m], inflight).await
    }

    /// Refuse a complete request, but only once the requests before it have
    /// been answered: a client may pipeline (tokio-postgres sends a statement's
    /// Close and Sync without waiting), and answers must come in order.
    pub(super) async fn refuse_in_order(&mut self, e: ClientError, m: Message) -> Result<(), SessionError> {
        if self.busy() {
            self.stalled = Some(m);
            return Ok(());
        }
        self.refuse_request(e).await
    }

    /// FunctionCall: a legacy way to call a function (libpq's large-object
    /// API). chorus cannot put a call by function OID into the replication log,
    /// so it is refused rather than run unreplicated.
    pub(super) async fn on_function_call(&mut self, m: Message) -> Result<(), SessionError> {
        if !self.replicated {
            let want = decide(true, self.view());
            let Some(node) = self.route(want, &m).await? else { return Ok(()) };
            return self.forward_request(node, &[m], Inflight::default()).await;
        }
        let e = ClientError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "chorus cannot replicate fast-path function calls (the large-object API uses them)",
        )
        .with_hint("Store the data in a bytea column instead of a large object.");
        self.refuse_in_order(e, m).await
    }

    /// Resolve `want` to a ready connection. `None` means the request was
    /// answered already (an error) or stalled until the busy connection drains.
    pub(super) async fn route(&mut self, want: Want, m: &Message) -> Result<Option<usize>, SessionError> {
        if self.busy() {
            let target = match want {
                Want::Node(n) => n,
                Want::Leader => self.ctx.topology.leader(),
                Want::AnyFollower => self.active.expect("busy implies active"),
            };
            if Some(target) != self.active {
                self.stalled = Some(m.clone());
                return Ok(None);
            }
            // Pipelining onto the busy connection: it is already set up.
            self.ctx.metrics.request(target, Route::Transaction);
            return Ok(Some(target));
        }
        let node = match self.acquire(want).await {
            Ok(n) => n,
            Err(e) => {
                self.refuse(e, m);
                return Ok(None);
            }
        };
        let leader = self.ctx.topology.leader();
        let r = match want {
            Want::AnyFollower if node == leader => Route::Fallback,
            Want::AnyFollower => Route::Follower,
            Want::Leader => Route::Leader,
            Want::Node(_) => Route::Transaction,
        };
        self.ctx.metrics.request(node, r);
        if let Err(e) = self.sync_conn(node).await {
            self.refuse(e, m);
            return Ok(None);
        }
        Ok(Some(node))
    }

    /// Answer a request chorus could not place. A Query or Sync gets its
    /// ReadyForQuery; a Flush-terminated batch does not.
    pub(super) fn refuse(&mut self, e: ClientError, m: &Message) {
        self.batch.clear();
        self.reply_error(&e, m.tag != b'H');
    }

    /// Queue a complete request on `node`'s connection (sent at the next flush).
    pub(super) fn queue_request(&mut self, node: usize, messages: &[Message], inflight: Inflight) {
        let conn = self.conns[node].as_mut().expect("routed to a connected node");
        for m in messages {
            if m.tag == b'Q' {
                // A simple query destroys the unnamed statement.
                conn.unnamed = None;
            }
            conn.queue(&m.frame);
        }
        self.inflight.push_back(inflight);
    }

    /// Send a complete request (ending in Query/Sync/FunctionCall) to `node`.
    pub(super) async fn forward_request(
        &mut self,
        node: usize,
        messages: &[Message],
        inflight: Inflight,
    ) -> Result<(), SessionError> {
        self.set_active(node);
        self.queue_request(node, messages, inflight);
        let conn = self.conns[node].as_mut().expect("routed to a connected node");
        let r = conn.flush().await;
        r.map_err(|e| self.server_lost(node, e))?;
        self.placed(node);
        Ok(())
    }
}

/// Does the statement change the settings that keep follower connections read-only?
pub(super) fn touches_read_only_guard(c: &Classification) -> bool {
    c.settings.iter().any(|s| match s {
        crate::sql::SettingChange::Set { name, .. } | crate::sql::SettingChange::Reset { name } => {
            super::settings::FOLLOWER_SKIP.contains(&name.as_str())
        }
        _ => false,
    })
}
