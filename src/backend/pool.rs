//! Idle server connections kept per node and database, so a new client session
//! does not pay for a TCP connect and a SCRAM exchange.
//!
//! A connection is only pooled after `DISCARD ALL` succeeded on it: whatever the
//! previous session did (settings, prepared statements, temp tables, LISTEN,
//! advisory locks) is gone before another session sees it.

use super::conn::{BackendError, ServerConn};
use crate::config::{Node, Role};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

pub struct Pool {
    node_index: usize,
    node: Node,
    idle: Mutex<HashMap<String, Vec<ServerConn>>>,
    /// Databases about to be dropped, and since when: connections to them
    /// opened before that are closed on checkin, never pooled.
    forgotten: Mutex<HashMap<String, std::time::Instant>>,
    max_idle: usize,
    connect_timeout: Duration,
}

impl Pool {
    pub fn new(node_index: usize, node: Node, max_idle: usize, connect_timeout: Duration) -> Pool {
        Pool { node_index, node, idle: Mutex::new(HashMap::new()), forgotten: Mutex::default(), max_idle, connect_timeout }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Startup parameters every connection to this node gets. Followers are
    /// read-only on the server side, so a misrouted write fails loudly (25006)
    /// instead of silently diverging the follower. Being a startup option, it
    /// survives `RESET ALL` / `DISCARD ALL`.
    fn startup_params(&self) -> Vec<(&'static str, &'static str)> {
        let mut p = vec![("client_encoding", "UTF8"), ("application_name", "chorus")];
        if self.node.role == Role::Follower {
            p.push(("options", "-c default_transaction_read_only=on"));
        }
        p
    }

    /// An idle connection to `database`, or a new one. Idle connections the
    /// server closed meanwhile (restart, pg_terminate_backend,
    /// idle_session_timeout) are dropped here, not handed to a session whose
    /// first request would then fail.
    pub async fn checkout(&self, database: &str) -> Result<ServerConn, BackendError> {
        loop {
            let idle = self.idle.lock().get_mut(database).and_then(|v| v.pop());
            let Some(mut conn) = idle else { break };
            if !conn.is_dead() {
                return Ok(conn);
            }
            tracing::debug!(node = %self.node.name, "dropping an idle server connection the server closed");
        }
        ServerConn::connect(self.node_index, &self.node, database, &self.startup_params(), self.connect_timeout).await
    }

    /// Give a connection back; it is reset in the background and pooled if clean.
    pub fn checkin(self: &std::sync::Arc<Self>, mut conn: ServerConn) {
        if conn.broken || conn.status != b'I' || self.predates_drop(&conn) {
            tokio::spawn(conn.terminate());
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            if conn.simple_oob("DISCARD ALL").await.is_err() {
                return;
            }
            conn.prepared.clear();
            conn.unnamed = None;
            conn.to_close.clear();
            conn.settings_version = 0;
            conn.own_prepared = 0;
            let mut idle = pool.idle.lock();
            if pool.predates_drop(&conn) {
                drop(idle);
                conn.terminate().await;
                return;
            }
            let list = idle.entry(conn.database.to_string()).or_default();
            if list.len() < pool.max_idle {
                list.push(conn);
            }
        });
    }

    /// Close every idle connection to `database` (it is about to be
    /// dropped), and every one opened before now when its session ends.
    pub async fn forget(&self, database: &str) {
        self.forgotten.lock().insert(database.to_string(), std::time::Instant::now());
        let idle = self.idle.lock().remove(database).unwrap_or_default();
        for conn in idle {
            conn.terminate().await;
        }
    }

    /// Was `conn` opened before its database was (about to be) dropped?
    fn predates_drop(&self, conn: &ServerConn) -> bool {
        self.forgotten.lock().get(&*conn.database).is_some_and(|at| conn.opened <= *at)
    }

    /// Drop every idle connection (the node went down; they are dead or stale).
    pub fn clear(&self) {
        self.idle.lock().clear();
    }
}
