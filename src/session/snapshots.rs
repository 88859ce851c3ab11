//! Synchronized snapshots across sessions: one session exports its
//! transaction's snapshot (`SELECT pg_export_snapshot()`), others import it
//! (`SET TRANSACTION SNAPSHOT 'id'`) to see exactly the same data, which is
//! how `pg_dump -j` gives its workers one consistent view. A snapshot exists
//! only on the server that exported it, and read-only transactions run on
//! any follower, so chorus remembers where each id was exported (read from
//! the exporting query's result row) and runs the importing transaction
//! there.
//!
//! For that the importing transaction must not be placed before it names
//! the snapshot: after a plain `BEGIN`, chorus also answers `SET TRANSACTION
//! ... READ ONLY` itself and sends both with the transaction's next
//! statement (`Session::deferred_setup`), to the node that statement needs.

use super::Session;
use crate::protocol::{Fields, Message, build};
use crate::sql::Classification;
use bytes::BufMut;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// At most this many exports are remembered (the oldest go first), each for
/// at most a day: an id outlives its exporting transaction only by mistake.
const MAX_EXPORTS: usize = 4096;
const KEEP: Duration = Duration::from_secs(24 * 3600);

/// Where snapshots were exported: (database, id) -> node, shared by all sessions.
#[derive(Default)]
pub struct ExportedSnapshots {
    map: parking_lot::Mutex<HashMap<(String, String), (usize, Instant)>>,
}

impl ExportedSnapshots {
    pub fn exported(&self, db: &str, id: &str, node: usize) {
        let mut map = self.map.lock();
        if map.len() >= MAX_EXPORTS {
            map.retain(|_, (_, at)| at.elapsed() < KEEP);
            if map.len() >= MAX_EXPORTS
                && let Some(oldest) = map.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert((db.to_string(), id.to_string()), (node, Instant::now()));
    }

    /// The node that exported `id` in `db`, if chorus saw it.
    pub fn node_of(&self, db: &str, id: &str) -> Option<usize> {
        let map = self.map.lock();
        map.get(&(db.to_string(), id.to_string())).filter(|(_, at)| at.elapsed() < KEEP).map(|(n, _)| *n)
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// A row of a query that exports a snapshot, from `node`: remember where
    /// the id it holds lives (any column that looks like one).
    pub(super) fn note_exported_snapshot(&self, node: usize, row: &Message) {
        let mut f = Fields::new(row.body());
        let columns = f.i16().unwrap_or(0);
        for _ in 0..columns {
            let Some(len) = f.i32() else { return };
            if len < 0 {
                continue;
            }
            let Some(value) = f.bytes(len as usize) else { return };
            if let Some(id) = std::str::from_utf8(value).ok().filter(|v| crate::sql::snapshot::is_id(v)) {
                tracing::debug!(id, node, "snapshot exported");
                self.ctx.snapshots.exported(&self.database, id, node);
            }
        }
    }

    /// After a deferred plain BEGIN: `SET TRANSACTION ... READ ONLY` waits
    /// for the transaction's next statement too. `true`: answered.
    pub(super) fn defer_transaction_setup(&mut self, sql: &str, class: &Classification) -> bool {
        if !self.deferred_begin || self.busy() || class.shape != crate::sql::Shape::SetTransactionReadOnly {
            return false;
        }
        self.deferred_setup.push(sql.trim().trim_end_matches(';').to_string());
        self.cout.put_slice(&build::command_complete("SET").frame);
        self.cout.put_slice(&build::ready_for_query(b'T').frame);
        true
    }

    /// A statement in a READ ONLY transaction that might make it read-write
    /// (`SET TRANSACTION READ WRITE`, `transaction_read_only`; any text
    /// saying "write" or "read_only", to be safe): from now on its volatile
    /// calls may write.
    pub(super) fn note_read_write(&mut self, sql: &str) {
        let placed = self.txn_node.and_then(|n| self.conns[n].as_ref()).is_some_and(|c| c.read_only_txn);
        if !placed && self.deferred_setup.is_empty() {
            return;
        }
        let says = |word: &[u8]| sql.as_bytes().windows(word.len()).any(|w| w.eq_ignore_ascii_case(word));
        if says(b"write") || says(b"read_only") {
            self.setup_may_write = !self.deferred_setup.is_empty();
            if let Some(c) = self.txn_node.and_then(|n| self.conns[n].as_mut()) {
                c.read_only_txn = false;
            }
        }
    }

    /// What opens the deferred transaction on its server: BEGIN and the
    /// deferred `SET TRANSACTION`s, one simple query (each statement on
    /// lines of its own, so a trailing comment ends with its line).
    pub(super) fn deferred_begin_sql(&self) -> String {
        let mut sql = String::from("BEGIN");
        for s in &self.deferred_setup {
            sql.push_str(";\n");
            sql.push_str(s);
            sql.push('\n');
        }
        sql
    }

    /// The node an importing transaction must run on, if `sql` imports a
    /// snapshot chorus saw exported and the transaction is not placed yet.
    /// A session pinned to the leader stays there (its state is there; so
    /// is the snapshot when a pinned session exported it, as pg_dump's do).
    pub(super) fn snapshot_node(&self, sql: &str) -> Option<usize> {
        if !self.deferred_begin || self.pinned.is_some() {
            return None;
        }
        let id = crate::sql::snapshot::imported(sql)?;
        self.ctx.snapshots.node_of(&self.database, &id)
    }
}
