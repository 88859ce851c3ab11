//! Server replies on their way to the client: forwarded as bytes, with the few
//! facts chorus needs picked up on the way (ReadyForQuery status, errors, COPY
//! mode, ParameterStatus, command tags).

use super::{Session, SessionError};
use crate::protocol::{Fields, Message};
use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite};

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    pub(super) async fn on_server(&mut self, node: usize, m: Message) -> Result<(), SessionError> {
        if let Some(kind) = self.inflight.front().and_then(|f| f.internal) {
            return self.on_internal(node, kind, m).await;
        }
        let m = if matches!(m.tag, b'T' | b'n' | b'D') && self.inflight.front().is_some_and(|f| !f.captures.is_empty())
        {
            match self.captured_reply(m) {
                Some(m) => m,
                None => return Ok(()),
            }
        } else {
            m
        };
        if m.tag == b'D' && self.inflight.front().is_some_and(|f| f.exports_snapshot) {
            self.note_exported_snapshot(node, &m);
        }
        match m.tag {
            b'Z' => {
                if !self.on_ready(node, &m) {
                    // Held: chorus's COPY finishing step goes now that the copy is over.
                    return self.after_held_ready(node).await;
                }
                // A COMMIT that must be acknowledged by followers first.
                self.await_ack().await;
            }
            b'N' if self.inflight.front().is_some_and(|f| f.hide_begin_warning) && is_begin_warning(&m) => {
                if let Some(f) = self.inflight.front_mut() {
                    f.hide_begin_warning = false;
                }
                return Ok(());
            }
            b'E' => {
                crate::metrics::error("server");
                if let Some(f) = self.inflight.front_mut() {
                    f.failed = true;
                }
                // An error ends COPY FROM STDIN on the server's side.
                self.copy_in = false;
            }
            b'C' | b'I' | b's' => {
                if m.tag == b'C' {
                    self.last_tag_rollback = m.body().starts_with(b"ROLLBACK");
                }
                self.note_completion(&m);
            }
            b'G' => {
                self.copy_in = true;
                if self.inflight.front().is_some_and(|f| f.extended) {
                    // The server ignored the batch's Sync; the client sends
                    // another after CopyDone.
                    self.owed_sync = true;
                }
                self.cout.put_slice(&m.frame);
                return self.flush_client().await;
            }
            b'S' if !self.note_parameter(node, &m) => {
                return Ok(());
            }
            _ => {}
        }
        self.cout.put_slice(&m.frame);
        Ok(())
    }

    /// A message from an idle connection: notifications, notices, parameter changes.
    pub(super) fn on_async_server_message(&mut self, node: usize, m: Message) {
        if m.tag == b'S' && !self.note_parameter(node, &m) {
            return;
        }
        self.cout.put_slice(&m.frame);
    }

    /// Record a ParameterStatus; false if the client must not see it.
    fn note_parameter(&mut self, node: usize, m: &Message) -> bool {
        if let Some(c) = self.conns[node].as_mut() {
            c.note_parameter(m);
        }
        let is_follower = node != self.ctx.topology.leader();
        let name = Fields::new(m.body()).cstr().unwrap_or("");
        !(is_follower && name == "default_transaction_read_only")
    }

    /// A client request's ReadyForQuery; false when it is held back (chorus
    /// still has to finish the transaction it opened around the request).
    fn on_ready(&mut self, node: usize, m: &Message) -> bool {
        let status = m.body().first().copied().unwrap_or(b'I');
        if let Some(c) = self.conns[node].as_mut() {
            c.set_status(status);
        }
        let Some(done) = self.inflight.pop_front() else {
            tracing::warn!("ReadyForQuery with no request in flight");
            return true;
        };
        if self.replicated {
            // Whatever the request read, it read no newer state than this.
            self.position.saw(self.progress.upper_bound(node));
        }
        if !done.failed {
            self.settings.stage(&done.settings);
            if done.ddl {
                self.ctx.catalog.invalidate(&self.database);
                // Inside a transaction the catalog cannot see it (txnfacts).
                self.txn_facts.ddl |= status != b'I';
                self.txn_facts.stale();
            }
        }
        if status == b'I' {
            self.txn_facts.reset();
        }
        if done.hold_ready {
            if done.failed && self.holds_lsn() {
                self.mark_sequences_dirty();
            }
            self.held_ready = Some(if done.failed { b'E' } else { status });
            // The batch before the client's COMMIT went through: the replies
            // to that COMMIT's Bind and Describe (chorus runs its commit).
            for m in std::mem::take(&mut self.owed_commit_replies) {
                if !done.failed {
                    self.cout.put_slice(&m.frame);
                }
            }
            if let Some(after) = &done.after {
                self.after = Some((after.clone(), !done.failed && status == b'I'));
            }
            if done.flush_after {
                self.committing = Some(super::Committing::Request(done, status));
            }
            return false;
        }
        self.log_request_done(&done, status);
        if done.swallow_ready {
            // A chunk of the client's batch: the transaction goes on.
            if let Some(c) = self.chunked.as_mut() {
                c.failed |= done.failed || status == b'E';
            }
            self.txn_node = Some(node);
            return false;
        }
        if status == b'I' {
            self.txn_node = None;
            self.temps.finish_transaction(!done.failed && !self.last_tag_rollback);
            self.finish_settings(node, !self.last_tag_rollback);
        } else {
            self.txn_node = Some(node);
        }
        true
    }

    /// The transaction ended on `node`: settings changed in it count if it committed.
    pub(super) fn finish_settings(&mut self, node: usize, committed: bool) {
        if self.settings.finish_transaction(committed) {
            // The connection that ran the SETs already has them (after a
            // RESET of a startup value it gets the whole script again).
            if let Some(c) = self.conns[node].as_mut() {
                c.settings_version = self.settings.version;
            }
        }
    }
}

/// The server's warning for a BEGIN inside a transaction (SQLSTATE 25001).
fn is_begin_warning(m: &Message) -> bool {
    crate::protocol::ServerError::parse(m.body()).code == "25001"
}
