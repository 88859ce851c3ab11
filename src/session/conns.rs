//! Getting a session's server connection ready for a request: connect (or reuse
//! from the pool), bring its settings up to date, close statements the client
//! closed elsewhere, send a deferred BEGIN, and prepare statements the client
//! prepared on another server.

use super::{Session, SessionError};
use crate::backend::BackendError;
use crate::protocol::{ClientError, build, sqlstate};
use crate::router::Want;
use tokio::io::{AsyncRead, AsyncWrite};

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Make sure the session has a live connection to `node`.
    pub(super) async fn connect_node(&mut self, node: usize) -> Result<(), ClientError> {
        let holds_txn = self.txn_node == Some(node);
        if let Some(c) = self.conns[node].as_mut() {
            if !c.is_dead() {
                return Ok(());
            }
            let dead = self.conns[node].take().expect("checked");
            tracing::debug!(node = %dead.node_name, "dropping a server connection the server closed");
            if self.active == Some(node) {
                self.active = None;
            }
        }
        if holds_txn {
            // A new connection would run the statement outside the transaction.
            self.lose_transaction();
            return Err(ClientError::new(
                sqlstate::CONNECTION_FAILURE,
                "the server connection holding this transaction was lost; the transaction is aborted",
            )
            .with_hint("ROLLBACK and retry the transaction."));
        }
        let state = self.ctx.topology.node(node);
        match state.pool.checkout(&self.database).await {
            Ok(conn) => {
                self.conns[node] = Some(conn);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(node = %state.name, error = %e, "cannot connect to node");
                Err(connect_error(&state.name, node == self.ctx.topology.leader(), &e))
            }
        }
    }

    /// Resolve a routing decision to a node with a live connection. Reads fall
    /// back from an unreachable follower to another follower, then the leader.
    pub(super) async fn acquire(&mut self, want: Want) -> Result<usize, ClientError> {
        let topo = self.ctx.topology.clone();
        match want {
            Want::Leader => {
                let l = topo.leader();
                self.connect_node(l).await.map(|_| l)
            }
            Want::Node(n) => self.connect_node(n).await.map(|_| n),
            Want::AnyFollower => {
                let tries = topo.nodes().len();
                for _ in 0..tries {
                    let f = match self.consistent_follower().await {
                        Ok(f) => f,
                        Err(miss) => return self.read_fallback(miss).await,
                    };
                    if self.connect_node(f).await.is_ok() {
                        return Ok(f);
                    }
                    topo.set_healthy(f, false);
                }
                let l = topo.leader();
                self.connect_node(l).await.map(|_| l)
            }
        }
    }

    /// Bring `node`'s connection in line with the session: stale statements
    /// closed, settings applied, deferred BEGIN sent.
    pub(super) async fn sync_conn(&mut self, node: usize) -> Result<(), ClientError> {
        let follower = node != self.ctx.topology.leader();
        let version = self.settings.version;
        let script = {
            let conn = self.conns[node].as_ref().expect("connected");
            (conn.settings_version != version).then(|| self.settings.script(follower))
        };
        // A write's replication step sends the BEGIN itself, with the LSN.
        let deferred = (self.deferred_begin && !self.begin_with_lsn).then(|| self.deferred_begin_sql());
        let conn = self.conns[node].as_mut().expect("connected");
        let r: Result<(), BackendError> = async {
            conn.close_stale().await?;
            if let Some(sql) = script {
                conn.simple_oob(&sql).await?;
                conn.settings_version = version;
            }
            if let Some(begin) = &deferred {
                conn.simple_oob(begin).await?;
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) => {
                if deferred.is_some() {
                    self.deferred_begin = false;
                    let read_only = !std::mem::take(&mut self.deferred_setup).is_empty()
                        && !std::mem::take(&mut self.setup_may_write);
                    if let Some(c) = self.conns[node].as_mut() {
                        c.read_only_txn = read_only;
                    }
                }
                Ok(())
            }
            Err(e) => Err(self.backend_error(node, e)),
        }
    }

    /// Turn a failed out-of-band step into the client's error; a connection in
    /// an unknown state is dropped.
    pub(super) fn backend_error(&mut self, node: usize, e: BackendError) -> ClientError {
        match e {
            BackendError::Server(se) => ClientError::from_server(&se, false),
            other => {
                if let Some(c) = self.conns[node].take() {
                    self.ctx.topology.node(node).pool.checkin(c);
                }
                if self.active == Some(node) {
                    self.active = None;
                }
                if self.txn_node == Some(node) {
                    self.lose_transaction();
                }
                let name = self.ctx.topology.node(node).name.clone();
                tracing::warn!(node = %name, error = %other, "server connection failed");
                crate::metrics::error("connection");
                ClientError::new(sqlstate::CONNECTION_FAILURE, format!("lost the connection to server {name}"))
                    .with_hint("Retry the statement; chorus reconnects automatically.")
            }
        }
    }

    /// Prepare on `node`, out of band, the named (or unnamed) statements the
    /// batch uses but that exist only on other servers.
    pub(super) async fn prepare_missing(&mut self, node: usize, names: &[String]) -> Result<(), ClientError> {
        for name in names {
            let Some(stmt) = self.statements.get(name) else { continue };
            let parse = stmt.parse.clone();
            let sql = stmt.sql.clone();
            let key = self.statements.name_key(name);
            let conn = self.conns[node].as_mut().expect("connected");
            match conn.exchange_oob(&[parse, build::sync()]).await {
                Ok(()) => match key {
                    Some(k) => {
                        conn.prepared.insert(k);
                    }
                    None => conn.unnamed = Some(sql),
                },
                // The client's own Bind will fail with the server's error.
                Err(BackendError::Server(_)) => {}
                Err(e) => return Err(self.backend_error(node, e)),
            }
        }
        Ok(())
    }

    /// Make `node` the connection requests are flowing to, for cancel requests.
    pub(super) fn set_active(&mut self, node: usize) {
        if self.active != Some(node) {
            self.active = Some(node);
            if let Some(c) = self.conns[node].as_ref() {
                self.cancel.lock().key = Some(c.cancel_key);
            }
        }
    }

    /// The request is on `node`'s connection: a cancel held while it was being
    /// placed goes there now.
    pub(super) fn placed(&mut self, node: usize) {
        let held = {
            let mut t = self.cancel.lock();
            t.routing = false;
            std::mem::take(&mut t.pending)
        };
        if held && let Some(c) = self.conns[node].as_ref() {
            crate::cancel::send_held_cancel(c.cancel_key);
        }
    }

    /// A server connection with requests in flight failed: the client cannot be
    /// told what happened to them, so the session ends.
    pub(super) fn server_lost(&mut self, node: usize, e: BackendError) -> SessionError {
        let name = self.ctx.topology.node(node).name.clone();
        tracing::warn!(node = %name, error = %e, "lost a server connection with requests in flight");
        crate::metrics::error("connection");
        if let Some(mut c) = self.conns[node].take() {
            c.broken = true;
            self.ctx.topology.node(node).pool.checkin(c);
        }
        self.inflight.clear();
        self.open_batch = None;
        self.copy_in = false;
        self.owed_sync = false;
        SessionError::Fatal(
            ClientError::fatal(
                sqlstate::CONNECTION_FAILURE,
                format!("lost the connection to server {name} while it was running your request"),
            )
            .with_hint("Reconnect and retry; the outcome of the interrupted request is unknown."),
        )
    }
}

fn connect_error(name: &str, leader: bool, e: &BackendError) -> ClientError {
    match e {
        BackendError::Refused { error, .. } if !error.code.is_empty() && !error.code.starts_with("57") => {
            // e.g. 3D000 database does not exist: the server's own answer.
            ClientError::from_server(error, false)
        }
        _ => {
            let what = if leader { "the leader" } else { "follower" };
            ClientError::new(sqlstate::CANNOT_CONNECT_NOW, format!("chorus cannot reach {what} ({name}): {e}"))
                .with_hint("The server may be down or restarting; retry shortly.")
        }
    }
}
