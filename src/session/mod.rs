//! One client session: the relay loop between a client and the server
//! connections it uses.
//!
//! The session reads client messages, decides where each request goes (simple
//! Query at once; extended-protocol messages as a batch at Sync/Flush), forwards
//! the client's bytes, and relays server replies back untouched. While a server
//! connection has requests in flight, later requests that may run there are
//! pipelined to it; a request that must run elsewhere waits until it is idle, so
//! replies always reach the client in order.

mod abort;
mod capture;
mod conns;
mod databases;
mod extended;
mod local;
mod logplan;
pub mod mysql;
mod openbatch;
mod own;
mod query;
mod reads;
mod relay;
mod replicate;
pub mod sequences;
pub mod settings;
pub mod snapshots;
pub mod statements;
mod temps;
pub mod trigger_rows;
mod txnfacts;
mod txnlog;
pub mod writeplan;

use crate::backend::ServerConn;
use crate::cancel::CancelSlot;
use crate::context::Context;
use crate::protocol::{ClientError, FrameError, Message, MessageReader, build, sqlstate};
use crate::sql::{PinReason, SettingChange};
use bytes::{BufMut, BytesMut};
use settings::Settings;
use statements::Statements;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client disconnected")]
    ClientGone,
    #[error("client terminated the session")]
    Terminated,
    #[error("client connection: {0}")]
    ClientIo(FrameError),
    /// Sent to the client as a FATAL error, then the connection closes.
    #[error("{0}")]
    Fatal(ClientError),
    #[error("chorus is shutting down")]
    Shutdown,
}

/// Client output buffered beyond this is written even if more replies are coming.
const CLIENT_FLUSH_BYTES: usize = 64 * 1024;

/// What chorus does once a request whose ReadyForQuery it holds has ended.
#[derive(Debug, Clone)]
pub(super) enum After {
    /// Log what the followers run instead of a statement that cannot run in
    /// a transaction block, once it has succeeded (`WritePlan::log_after`).
    Log(String),
    /// Mirror a CREATE/DROP DATABASE on the followers (`WritePlan::database`,
    /// databases.rs).
    Database(crate::sql::database::DatabaseStmt),
}

/// A request sent to a server whose ReadyForQuery has not arrived yet.
#[derive(Default)]
struct Inflight {
    settings: Vec<SettingChange>,
    ddl: bool,
    extended: bool,
    failed: bool,
    /// chorus's own step (replication): its replies are consumed, not relayed.
    internal: Option<Internal>,
    /// chorus's own statements the step parses (`own::Prep`).
    own_parsed: u16,
    /// Hold the client's ReadyForQuery until chorus's step after it is done.
    hold_ready: bool,
    /// The request commits a logged transaction: chorus's flush step follows
    /// it and answers the client.
    flush_after: bool,
    /// The client's BEGIN runs inside a transaction chorus opened: hide the
    /// server's "already a transaction in progress" warning.
    hide_begin_warning: bool,
    /// SAVEPOINT / ROLLBACK TO / RELEASE in the request, for the replication log.
    savepoint_ops: Vec<crate::sql::StmtOp>,
    /// Statements that completed so far (CommandComplete, EmptyQueryResponse,
    /// PortalSuspended): the ordinal of the next one.
    completions: usize,
    /// Keyed statements logged without an LSN: (completion ordinal, log entry
    /// index). The entry is left out if its command tag says it changed nothing.
    tags: Vec<(usize, usize)>,
    /// Replies that belong to captured statements (see capture.rs).
    captures: Vec<capture::Slot>,
    /// RowDescription and NoData replies so far (extended protocol: one per Describe).
    descriptions: usize,
    /// What chorus does once the request has ended, before its ReadyForQuery.
    after: Option<After>,
    /// chorus's own Sync ended this request (a chunk of a batch, see
    /// openbatch.rs): its ReadyForQuery is not the client's.
    swallow_ready: bool,
    /// The request calls `pg_export_snapshot`: its rows name snapshots (snapshots.rs).
    exports_snapshot: bool,
}

/// chorus's own steps on the leader connection (see replicate.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Internal {
    /// Take the LSN after a REPEATABLE READ / SERIALIZABLE BEGIN.
    TakeLsn,
    /// Open the transaction around an autocommit keyed write (no LSN yet).
    Begin,
    /// Append the transaction's log entry; then COMMIT when chorus opened it.
    Append { commit: bool },
    /// End the transaction chorus opened, after a failure.
    Rollback,
    /// Queued behind a commit of a logged transaction, which does not wait
    /// for the WAL flush: flush it, then answer the client (see `Committing`).
    /// Behind a commit that failed, it does nothing.
    Flush,
}

/// A committed logged transaction whose client waits for the flush step.
enum Committing {
    /// The client's own COMMIT (its request, and the status it ended with).
    Request(Inflight, u8),
    /// chorus's commit of the transaction it opened around the request.
    Own(u8),
}

/// What a session asks for at startup.
pub struct StartupInfo {
    pub user: String,
    pub database: String,
    /// Session parameters (application_name, DateStyle, and `options -c` pairs).
    pub params: Vec<(String, String)>,
}

pub struct Session<R, W> {
    ctx: Arc<Context>,
    id: u64,
    client: MessageReader<R>,
    out: W,
    cout: BytesMut,
    database: Arc<str>,
    /// The session's server connections, indexed by node.
    conns: Vec<Option<ServerConn>>,
    /// Node whose connection has requests in flight (or last had).
    active: Option<usize>,
    inflight: VecDeque<Inflight>,
    /// Extended-protocol messages since the last Sync, not yet forwarded.
    batch: Vec<Message>,
    /// Bytes in `batch` (reset when a message is pushed onto an empty batch).
    batch_bytes: usize,
    /// A batch partially forwarded by Flush: the rest goes to this node.
    open_batch: Option<usize>,
    txn_node: Option<usize>,
    pinned: Option<PinReason>,
    statements: Statements,
    settings: Settings,
    /// The client said BEGIN; chorus answered and will send it with the first
    /// statement, to the server that statement needs.
    deferred_begin: bool,
    /// `SET TRANSACTION ... READ ONLY` statements sent after the deferred
    /// BEGIN, deferred with it (snapshots.rs).
    deferred_setup: Vec<String>,
    /// A statement since may have made the deferred transaction read-write
    /// after all (`Session::note_read_write`).
    setup_may_write: bool,
    /// The client's transaction is aborted and exists on no server (see abort.rs).
    local_abort: bool,
    copy_in: bool,
    /// Extended-protocol COPY: the server ignored the batch's Sync, so the
    /// client's next Sync completes the request.
    owed_sync: bool,
    last_tag_rollback: bool,
    /// The writing transaction in progress on the leader (its LSN and log entry).
    wtxn: Option<txnlog::WriteTxn>,
    /// The client's ReadyForQuery status, held while chorus finishes its transaction.
    held_ready: Option<u8>,
    /// A request chorus acts on after it ran ended: what to do, and whether
    /// it succeeded.
    after: Option<(After, bool)>,
    /// The client's COMMIT was left out of its query (`RequestLog::commit_tag`):
    /// its CommandComplete goes before the held ReadyForQuery once chorus committed.
    owed_commit_tag: bool,
    /// Replies owed for the client's COMMIT's Bind and Describe, left out of
    /// an extended batch with it (`RequestLog::commit_tail`): they go to the
    /// client once the rest of the batch has succeeded.
    owed_commit_replies: Vec<Message>,
    /// An extended batch forwarded in chunks ended by chorus's own Syncs
    /// (openbatch.rs), until the client's Sync.
    chunked: Option<openbatch::Chunked>,
    /// A commit waiting for chorus's flush step.
    committing: Option<Committing>,
    /// What the transaction's own DDL changed, for its later writes.
    txn_facts: txnfacts::TxnFacts,
    /// The first error of the internal step in flight.
    internal_error: Option<Message>,
    /// chorus's commit step waits for the client's COPY to end.
    finish_pending: bool,
    /// Why chorus rolled back the transaction it opened instead of committing it.
    finish_refused: Option<ClientError>,
    /// The COPY in progress is logged: its data goes into the log entry.
    copy_logged: bool,
    /// The deferred BEGIN is sent by the replication step that takes the LSN.
    begin_with_lsn: bool,
    /// Temporary tables this session created (names, folded): not replicated.
    temps: temps::TempObjects,
    /// A committed LSN the client's ReadyForQuery waits on (semi-sync / sync).
    pending_ack: Option<i64>,
    /// The LSN of the last commit, which the next successful flush step
    /// makes durable (published to the appliers then, see `note_flushed`).
    unflushed: Option<i64>,
    /// The flush step in flight commits synchronously (its row said so).
    flush_waits: bool,
    /// SQL-level prepared statements (PREPARE name AS ...): does each write?
    sql_prepared: std::collections::HashMap<String, bool>,
    /// This session marked the database's sequences dirty: sync them once idle.
    sequences_unsynced: std::sync::atomic::AtomicBool,
    /// Replication state of a batch forwarded before its Sync.
    open_log: Option<openbatch::OpenLog>,
    /// The session's database is replicated (`[replication] databases`): writes
    /// are logged. Otherwise everything runs on the leader, unlogged.
    replicated: bool,
    /// Where the session stands in its database's log (read consistency).
    position: crate::consistency::Position,
    /// The policy of the read being routed (reads.rs).
    read: Arc<crate::policy::Chosen>,
    /// The policies in force when last looked at, and their version.
    policies: Arc<crate::policy::PolicySet>,
    policies_version: u64,
    user: Arc<str>,
    /// As sent at startup (for policy rules).
    application_name: Arc<str>,
    /// A read waited in vain for a follower: reads skip the wait until then.
    read_waits_paused_until: Option<tokio::time::Instant>,
    /// Replication progress of the session's database.
    progress: Arc<crate::replication::state::DbProgress>,
    /// Extended-protocol statements that are chorus commands (local.rs).
    local: local::LocalStatements,
    /// A client message that must wait until the busy connection is idle.
    stalled: Option<Message>,
    cancel: CancelSlot,
    cancel_pid: i32,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Finish startup after authentication: pick a first server connection,
    /// apply the client's parameters, and report ParameterStatus, BackendKeyData
    /// and ReadyForQuery.
    pub async fn start(
        ctx: Arc<Context>,
        client: MessageReader<R>,
        out: W,
        info: StartupInfo,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Session<R, W>, (W, SessionError)> {
        let (pid, secret, cancel) = ctx.cancels.register();
        let n = ctx.topology.nodes().len();
        let mut s = Session {
            id: ctx.next_session_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            client,
            out,
            cout: BytesMut::with_capacity(16 * 1024),
            database: info.database.as_str().into(),
            conns: (0..n).map(|_| None).collect(),
            active: None,
            inflight: VecDeque::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            open_batch: None,
            txn_node: None,
            pinned: None,
            statements: Statements::default(),
            settings: Settings::from_startup(&info.params),
            deferred_begin: false,
            deferred_setup: Vec::new(),
            setup_may_write: false,
            local_abort: false,
            copy_in: false,
            owed_sync: false,
            last_tag_rollback: false,
            wtxn: None,
            held_ready: None,
            after: None,
            owed_commit_tag: false,
            owed_commit_replies: Vec::new(),
            chunked: None,
            committing: None,
            unflushed: None,
            flush_waits: false,
            txn_facts: Default::default(),
            internal_error: None,
            finish_pending: false,
            finish_refused: None,
            copy_logged: false,
            begin_with_lsn: false,
            open_log: None,
            sequences_unsynced: std::sync::atomic::AtomicBool::new(false),
            sql_prepared: Default::default(),
            pending_ack: None,
            temps: Default::default(),
            replicated: ctx.config.replication.covers(&info.database),
            position: Default::default(),
            read: ctx.policies().default.clone(),
            policies: ctx.policies(),
            policies_version: ctx.policies_version.load(std::sync::atomic::Ordering::Acquire),
            user: info.user.as_str().into(),
            application_name: info
                .params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("application_name"))
                .map_or("", |(_, v)| v.as_str())
                .into(),
            read_waits_paused_until: None,
            progress: ctx.replication.state().progress(&info.database),
            local: Default::default(),
            stalled: None,
            cancel,
            cancel_pid: pid,
            shutdown,
            ctx,
        };
        // chorus's bookkeeping must exist before the session's first write is
        // logged. If the leader cannot be reached the session goes on as
        // before: its own connection attempt reports the leader's error.
        if let Err(e) = s.ctx.replication.ensure(&s.database).await {
            tracing::debug!(db = %s.database, error = %e, "replication setup for the database failed");
        }
        match s.first_connection().await {
            Ok(node) => {
                let is_follower = node != s.ctx.topology.leader();
                let conn = s.conns[node].as_ref().expect("connected");
                let mut params: Vec<(&String, &String)> = conn.params.iter().collect();
                params.sort();
                for (k, v) in params {
                    // Follower connections are read-only on the server side; that
                    // is chorus's guard, not the session's state.
                    let v = if is_follower && k == "default_transaction_read_only" { "off" } else { v.as_str() };
                    s.cout.put_slice(&build::parameter_status(k, v).frame);
                }
                s.cout.put_slice(&build::backend_key_data(pid, secret).frame);
                s.cout.put_slice(&build::ready_for_query(b'I').frame);
                if let Err(e) = s.flush_client().await {
                    s.release();
                    return Err((s.out, e));
                }
                Ok(s)
            }
            Err(e) => {
                s.release();
                Err((s.out, SessionError::Fatal(e)))
            }
        }
    }

    /// A first server connection: the leader if it answers, else a follower.
    /// Nodes the health check has marked down are tried last, so a leader that
    /// hangs (accepts TCP but never answers) does not cost every new session a
    /// full connect timeout.
    async fn first_connection(&mut self) -> Result<usize, ClientError> {
        let topo = self.ctx.topology.clone();
        let leader = topo.leader();
        let mut candidates = vec![leader];
        candidates.extend(topo.nodes().iter().map(|n| n.index).filter(|&i| i != leader));
        // Stable: the leader stays first among the healthy (and the unhealthy).
        candidates.sort_by_key(|&i| !topo.node(i).is_healthy());
        let mut last = None;
        for node in candidates {
            match self.connect_node(node).await {
                Ok(()) => {}
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            }
            // Apply the client's startup parameters; a bad value is the client's
            // error, reported as the server reported it.
            return match self.sync_conn(node).await {
                Ok(()) => Ok(node),
                Err(e) => Err(ClientError { severity: "FATAL", ..e }),
            };
        }
        let e = last.unwrap_or_else(|| ClientError::new(sqlstate::CANNOT_CONNECT_NOW, "no server configured"));
        Err(ClientError { severity: "FATAL", ..e })
    }

    /// Serve the session until the client leaves or a fatal error.
    pub async fn run(self) -> W {
        // Instrument, not `span.enter()`: an entered guard held across awaits
        // stays on the worker thread while the task is parked, and other tasks'
        // events (other sessions, the accept loop) get logged inside this span.
        let span = tracing::debug_span!("session", id = self.id, db = %self.database);
        tracing::Instrument::instrument(self.run_in_span(), span).await
    }

    async fn run_in_span(mut self) -> W {
        let result = self.serve().await;
        match &result {
            Err(SessionError::Fatal(e)) => {
                tracing::debug!(error = %e, "session ended with an error");
                self.cout.put_slice(&e.to_message().frame);
                let _ = self.flush_client().await;
            }
            Err(SessionError::Shutdown) => {
                let e = ClientError::fatal(
                    sqlstate::ADMIN_SHUTDOWN,
                    "terminating connection because chorus is shutting down",
                );
                self.cout.put_slice(&e.to_message().frame);
                let _ = self.flush_client().await;
            }
            Err(SessionError::ClientIo(FrameError::TooLarge(n, max))) => {
                let e = ClientError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("message of {n} bytes exceeds the limit of {max} bytes (limits.max_message_bytes)"),
                );
                self.cout.put_slice(&e.to_message().frame);
                let _ = self.flush_client().await;
            }
            Err(SessionError::ClientIo(FrameError::BadLength(n))) => {
                let e = ClientError::fatal(sqlstate::PROTOCOL_VIOLATION, format!("invalid message length {n}"));
                self.cout.put_slice(&e.to_message().frame);
                let _ = self.flush_client().await;
            }
            Err(e) => tracing::debug!(reason = %e, "session ended"),
            Ok(()) => {}
        }
        self.release();
        let _ = self.out.shutdown().await;
        self.out
    }

    fn busy(&self) -> bool {
        !self.inflight.is_empty() || self.open_batch.is_some() || self.copy_in || self.owed_sync
    }

    async fn serve(&mut self) -> Result<(), SessionError> {
        // One long-lived shutdown future for the whole session: building a
        // fresh watch future on every idle wait showed up in profiles.
        let mut stop = self.shutdown.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(shutdown);
        loop {
            let active_buffered = self.active.and_then(|a| self.conns[a].as_ref()).is_some_and(|c| c.has_buffered());
            // While chorus commits a transaction it opened around the client's
            // write, the write's replies wait too: a client that sees
            // CommandComplete (tokio-postgres returns on it) sees a committed
            // write, unless the output outgrows the buffer.
            let hold = !self.cout.is_empty() && self.chorus_step_in_flight();
            if !self.cout.is_empty() && (self.cout.len() >= CLIENT_FLUSH_BYTES || (!active_buffered && !hold)) {
                self.flush_client().await?;
            }
            if let Some(m) = self.stalled.take() {
                if !self.busy() {
                    self.on_client(m).await?;
                } else {
                    self.stalled = Some(m);
                    let a = self.active.expect("busy implies an active connection");
                    let conn = self.conns[a].as_mut().expect("active connection exists");
                    let m = conn.read().await.map_err(|e| self.server_lost(a, e))?;
                    self.on_server(a, m).await?;
                }
                continue;
            }
            if self.busy() {
                let a = self.active.expect("busy implies an active connection");
                let conn = self.conns[a].as_mut().expect("active connection exists");
                // Fast path: replies already read are relayed without select!.
                if let Some(r) = conn.next_buffered() {
                    let m = r.map_err(|e| self.server_lost(a, e))?;
                    self.on_server(a, m).await?;
                    continue;
                }
                let ev = tokio::select! {
                    biased;
                    r = conn.read() => Ok(r),
                    r = self.client.read() => Err(r),
                };
                match ev {
                    Ok(r) => {
                        let m = r.map_err(|e| self.server_lost(a, e))?;
                        self.on_server(a, m).await?;
                    }
                    Err(r) => {
                        let m = r.map_err(client_err)?;
                        self.on_client(m).await?;
                    }
                }
            } else {
                if self.cout.is_empty() && self.sequences_unsynced.load(std::sync::atomic::Ordering::Relaxed) {
                    self.sync_sequences_if_needed().await;
                }
                {
                    // Nothing is running: a cancel now is ignored, as by PostgreSQL.
                    let mut t = self.cancel.lock();
                    t.routing = false;
                    t.pending = false;
                }
                // Idle: wait for the client; a pinned session also hears its
                // leader connection (LISTEN notifications, notices).
                let leader = self.ctx.topology.leader();
                let watch_leader = self.pinned.is_some() && self.conns[leader].is_some();
                let ev = if watch_leader {
                    let conn = self.conns[leader].as_mut().expect("checked");
                    tokio::select! {
                        r = self.client.read() => Ok(r),
                        r = conn.read() => Err(r),
                        _ = &mut shutdown => return Err(SessionError::Shutdown),
                    }
                } else {
                    tokio::select! {
                        r = self.client.read() => Ok(r),
                        _ = &mut shutdown => return Err(SessionError::Shutdown),
                    }
                };
                match ev {
                    Ok(r) => {
                        let m = r.map_err(client_err)?;
                        self.on_client(m).await?;
                    }
                    Err(r) => {
                        let m = r.map_err(|e| self.server_lost(leader, e))?;
                        self.on_async_server_message(leader, m);
                    }
                }
            }
        }
    }

    async fn on_client(&mut self, m: Message) -> Result<(), SessionError> {
        if self.copy_in {
            return self.forward_copy(m).await;
        }
        if matches!(m.tag, b'Q' | b'S' | b'H' | b'F') && !self.busy() {
            // Until this request reaches a server, a cancel has nowhere to go.
            // (While busy, it goes to the running request's server.)
            self.cancel.lock().routing = true;
        }
        match m.tag {
            b'Q' => self.on_query(m).await,
            b'P' | b'B' | b'D' | b'E' | b'C' => self.on_extended(m).await,
            b'S' => self.on_sync(m).await,
            b'H' => self.on_flush(m).await,
            b'F' => self.on_function_call(m).await,
            // CopyData/CopyDone/CopyFail outside COPY: PostgreSQL ignores them
            // (a COPY failed and the client is still sending).
            b'd' | b'c' | b'f' => Ok(()),
            b'X' => Err(SessionError::Terminated),
            t => Err(SessionError::Fatal(ClientError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                format!("invalid frontend message type {}", printable(t)),
            ))),
        }
    }

    async fn flush_client(&mut self) -> Result<(), SessionError> {
        if self.cout.is_empty() {
            return Ok(());
        }
        // Write from the buffer and clear it, keeping its allocation.
        let r = self.out.write_all(&self.cout).await;
        self.cout.clear();
        r.map_err(|_| SessionError::ClientGone)
    }

    /// Reply to the client in chorus's own name with an error and, when the
    /// request was a complete one, ReadyForQuery.
    fn reply_error(&mut self, e: &ClientError, ready: bool) {
        tracing::debug!(error = %e, "request refused");
        crate::metrics::error("refused");
        self.cout.put_slice(&e.to_message().frame);
        if self.deferred_begin {
            // The transaction never reached a server; it is aborted now.
            self.deferred_begin = false;
            self.deferred_setup.clear();
            self.setup_may_write = false;
            self.local_abort = true;
        }
        if ready {
            let status = if self.txn_node.is_some() || self.local_abort { b'E' } else { b'I' };
            self.cout.put_slice(&build::ready_for_query(status).frame);
        }
    }

    /// Hand every server connection back (to the pool if clean).
    fn release(&mut self) {
        self.ctx.cancels.unregister(self.cancel_pid);
        if self.holds_lsn() {
            // The server rolls the writing transaction back when its connection
            // goes: whatever sequence values it used are lost to the followers.
            self.ctx.sequences.mark_dirty(&self.database);
        }
        let busy = self.busy();
        for (i, c) in self.conns.iter_mut().enumerate() {
            if let Some(mut conn) = c.take() {
                if busy && self.active == Some(i) {
                    conn.broken = true;
                }
                self.ctx.topology.node(i).pool.checkin(conn);
            }
        }
    }
}

fn client_err(e: FrameError) -> SessionError {
    match e {
        FrameError::Closed => SessionError::ClientGone,
        e => SessionError::ClientIo(e),
    }
}

fn printable(t: u8) -> String {
    if t.is_ascii_graphic() { format!("\"{}\"", t as char) } else { format!("0x{t:02x}") }
}
