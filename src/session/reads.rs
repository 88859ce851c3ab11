//! Reads on followers: the policy a read runs under (the first matching
//! rule, see [`crate::policy`]) and a follower fresh enough for it (see
//! [`crate::consistency`]), waiting for one when the policy allows, else the
//! policy's fallback.

use super::Session;
use crate::consistency::{self, Fallback, Miss};
use crate::policy::ReadFacts;
use crate::protocol::{ClientError, sqlstate};
use crate::sql::Classification;
use tokio::io::{AsyncRead, AsyncWrite};

/// After a read waited in vain for a follower, later reads that find none
/// qualifying skip the wait for this long.
const READ_WAIT_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// A waiting read looks at the followers' health at least this often.
const RECHECK: std::time::Duration = std::time::Duration::from_millis(25);

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Are there rules to match (after picking up a reload)? Without any,
    /// every read runs under the default and nothing about it need be collected.
    pub(super) fn has_policy_rules(&mut self) -> bool {
        let version = self.ctx.policies_version.load(std::sync::atomic::Ordering::Acquire);
        if version != self.policies_version {
            self.policies = self.ctx.policies();
            self.policies_version = version;
        }
        !self.policies.rules.is_empty()
    }

    /// Is `want` a read pipelined onto a follower the session is busy on
    /// (not a transaction there)? Such a read needs its policy checked too.
    pub(super) fn pipelined_follower_read(&self, want: crate::router::Want) -> Option<usize> {
        match want {
            crate::router::Want::Node(n) if self.txn_node.is_none() && n != self.ctx.topology.leader() => Some(n),
            _ => None,
        }
    }

    /// May the read whose policy was just chosen run on follower `node`,
    /// where requests are in flight? It sees a state no older than theirs,
    /// but the policy may want the leader, or a fresher follower.
    pub(super) fn policy_allows(&self, node: usize) -> bool {
        let p = &self.read.policy;
        if p.leader_only {
            return false;
        }
        let needed = self.position.needed(p);
        let views = self.progress.views(&self.ctx.topology, p.max_lag.is_some());
        views.iter().find(|v| v.node == node).is_some_and(|v| consistency::qualifies(p, needed, v).is_ok())
    }

    /// Choose the policy for a read of `statements` (classification and text).
    pub(super) fn choose_read_policy(&mut self, statements: &[(&Classification, &str)]) {
        self.has_policy_rules();
        let set = self.policies.clone();
        if set.rules.is_empty() {
            self.read = set.default.clone();
            return;
        }
        let tables: Vec<String>;
        let tables: &[String] = match statements {
            [(c, _)] => &c.tables,
            many => {
                tables = many.iter().flat_map(|(c, _)| c.tables.iter().cloned()).collect();
                &tables
            }
        };
        let normalized: Vec<std::borrow::Cow<'_, str>> = if set.needs_text {
            statements.iter().map(|(_, t)| crate::sql::normalize::normalize(t)).collect()
        } else {
            Vec::new()
        };
        let texts: Vec<&str> = normalized.iter().map(|t| t.as_ref()).collect();
        let facts = ReadFacts {
            user: &self.user,
            database: &self.database,
            application_name: &self.application_name,
            tables,
            texts: &texts,
        };
        let chosen = set.choose(&facts);
        tracing::debug!(rule = %chosen.rule, "read policy");
        self.read = chosen.clone();
    }

    /// A follower that satisfies the session's read policy, waiting up to the
    /// policy's time for one to catch up.
    pub(super) async fn consistent_follower(&mut self) -> Result<usize, Miss> {
        let policy = &self.read.policy;
        let needed = if self.replicated { self.position.needed(policy) } else { 0 };
        let with_lag = policy.max_lag.is_some();
        let topo = self.ctx.topology.clone();
        let mut changes = self.progress.subscribe_changes();
        let pick = |this: &Self| {
            let views = this.progress.views(&topo, with_lag);
            consistency::pick(&this.read.policy, needed, &views, &this.read.prefer, topo.rotation())
        };
        let first = pick(self);
        let now = tokio::time::Instant::now();
        let backing_off = self.read_waits_paused_until.is_some_and(|t| now < t);
        if first.is_ok() || policy.leader_only || policy.wait.is_zero() || backing_off {
            if first.is_ok() {
                self.read_waits_paused_until = None;
            }
            return first;
        }
        let deadline = now + policy.wait;
        let mut last = first;
        while let Err(miss) = last {
            // A follower down stays down for a health interval: waiting does not help.
            if miss == Miss::Unreadable {
                break;
            }
            // Woken by an applier's progress, and every RECHECK anyway: a
            // follower may go down (or come back) while the read waits.
            let until = deadline.min(tokio::time::Instant::now() + RECHECK);
            match tokio::time::timeout_at(until, changes.changed()).await {
                Ok(Ok(())) => last = pick(self),
                Ok(Err(_)) => break,
                Err(_) if until < deadline => last = pick(self),
                Err(_) => {
                    // The followers lag more than the policy waits: until one
                    // catches up, further reads go to the leader at once
                    // instead of each waiting in vain.
                    self.read_waits_paused_until = Some(deadline + READ_WAIT_PAUSE);
                    break;
                }
            }
        }
        if last.is_ok() {
            self.read_waits_paused_until = None;
        }
        crate::metrics::read_wait(now.elapsed(), last.is_ok());
        last
    }

    /// No follower qualified: the leader serves the read, or, if the policy
    /// says so, the read fails.
    pub(super) async fn read_fallback(&mut self, miss: Miss) -> Result<usize, ClientError> {
        let l = self.ctx.topology.leader();
        if self.read.policy.on_timeout == Fallback::Error && !self.read.policy.leader_only {
            return Err(ClientError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "no follower can serve this read within {:?}: {} (position {})",
                    self.read.policy.wait,
                    miss.as_str(),
                    self.position.needed(&self.read.policy)
                ),
            )
            .with_hint("Retry later, or use a policy that falls back to the leader."));
        }
        tracing::trace!(reason = miss.as_str(), "read falls back to the leader");
        self.ctx.metrics.read_fallback(miss);
        self.connect_node(l).await.map(|_| l)
    }
}
