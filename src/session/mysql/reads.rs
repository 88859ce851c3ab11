//! Reads on followers for a MySQL session: a plain SELECT outside a
//! transaction goes to a follower that has applied what the session's read
//! policy needs (by default its own writes and whatever it read before:
//! [`crate::consistency`]), waiting for one as the policy allows, else to the
//! leader. The session's follower connections are its own, logged in like its
//! leader connection, with its SET and USE statements replayed on them.
//! Reads that depend on the session's own server state (user variables,
//! LAST_INSERT_ID(), locks, SHOW) stay on the leader.

use super::{MySession, MySessionError};
use crate::backend::mysql::{LoginOptions, MyServerConn};
use crate::consistency::{self, Fallback, Position};
use crate::metrics::Route;
use crate::policy::ReadFacts;
use crate::protocol::mysql::consts::status;
use crate::protocol::mysql::{Expect, MyError, Packet, code};
use crate::replication::mysql::SERVER_LOG;
use crate::sql::mysql::lex::Token;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// More SET/USE statements than this and the session reads on the leader
/// only (replaying them on every new follower connection would cost more
/// than the reads save).
const MAX_REPLAYED: usize = 64;

/// A waiting read looks at the followers' health at least this often.
const RECHECK: Duration = Duration::from_millis(25);

/// Functions whose value is the session's own server state.
const SESSION_STATE: &[&str] = &[
    "LAST_INSERT_ID",
    "FOUND_ROWS",
    "ROW_COUNT",
    "CONNECTION_ID",
    "GET_LOCK",
    "RELEASE_LOCK",
    "RELEASE_ALL_LOCKS",
    "IS_FREE_LOCK",
    "IS_USED_LOCK",
    "SLEEP",
    "BENCHMARK",
    "MASTER_POS_WAIT",
    "MASTER_GTID_WAIT",
    "LASTVAL",
];

#[derive(Default)]
pub(super) struct FollowerReads {
    conns: HashMap<usize, (MyServerConn, usize)>,
    /// SET / USE statements to replay on a new follower connection.
    replay: Vec<String>,
    /// Reads stay on the leader for the rest of the session.
    leader_only: bool,
    pub position: Position,
    /// After a read waited in vain, later reads skip the wait until then.
    no_wait_until: Option<Instant>,
}

impl FollowerReads {
    pub fn reset(&mut self) {
        let position = self.position;
        *self = FollowerReads { position, ..FollowerReads::default() };
    }

    /// A SET or USE the session ran: its follower connections need it too.
    pub fn session_statement(&mut self, sql: String) {
        if self.replay.len() >= MAX_REPLAYED {
            self.leader_only = true;
            self.conns.clear();
            return;
        }
        self.replay.push(sql);
    }

    /// The session used a user variable: they live on the leader connection only.
    pub fn pin_to_leader(&mut self) {
        self.leader_only = true;
        self.conns.clear();
    }
}

/// May this read run on a follower at all?
pub(super) fn follower_safe(toks: &[Token<'_>]) -> bool {
    let Some(Token::Word(first)) = toks.first() else { return toks.first() == Some(&Token::Symbol('(')) };
    if !["SELECT", "WITH", "TABLE", "VALUES"].iter().any(|w| first.eq_ignore_ascii_case(w)) {
        return false;
    }
    for (i, t) in toks.iter().enumerate() {
        match t {
            Token::Variable(_) => return false,
            Token::Word(w) => {
                let u = w.to_ascii_uppercase();
                let call = matches!(toks.get(i + 1), Some(Token::Symbol('(')));
                if call && SESSION_STATE.contains(&u.as_str()) {
                    return false;
                }
                // FOR UPDATE / FOR SHARE / LOCK IN SHARE MODE / INTO: the leader's business.
                let next = |k: usize| matches!(toks.get(i + k), Some(Token::Word(x)) if ["UPDATE", "SHARE"].contains(&x.to_ascii_uppercase().as_str()));
                if (u == "FOR" && next(1))
                    || (u == "LOCK" && matches!(toks.get(i + 1), Some(Token::Word(x)) if x.eq_ignore_ascii_case("IN")))
                    || u == "INTO"
                {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
}

/// The tables a read names (after FROM and JOIN), for policy rules.
fn tables(toks: &[Token<'_>]) -> Vec<String> {
    let ident = |t: &Token<'_>| match t {
        Token::Word(w) => Some(w.to_ascii_lowercase()),
        Token::Quoted(q) => Some(q[1..q.len().saturating_sub(1)].replace("``", "`").to_ascii_lowercase()),
        _ => None,
    };
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if let Token::Word(w) = t
            && (w.eq_ignore_ascii_case("FROM") || w.eq_ignore_ascii_case("JOIN"))
            && let Some(name) = toks.get(i + 1).and_then(ident)
        {
            let qualified = toks.get(i + 2) == Some(&Token::Symbol('.'));
            match toks.get(i + 3).and_then(ident).filter(|_| qualified) {
                Some(t) => out.push(format!("{name}.{t}")),
                None => out.push(name),
            }
        }
    }
    out
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> MySession<R, W> {
    /// A read the classifier passed: on a fresh-enough follower when it may,
    /// else on the leader.
    pub(super) async fn read(&mut self, cmd: &Packet, toks: &[Token<'_>]) -> Result<(), MySessionError> {
        let on_follower = self.status & status::IN_TRANS == 0
            && self.status & status::AUTOCOMMIT != 0
            && !self.reads.leader_only
            && !self.ctx.topology.followers().is_empty()
            && follower_safe(toks);
        if on_follower {
            match self.choose_follower(toks).await {
                Ok(Some(node)) => {
                    if self.read_on(node, cmd).await? {
                        self.ctx.metrics.request(node, Route::Follower);
                        return Ok(());
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.error(cmd.seq.wrapping_add(1), &e).await?;
                    return Ok(());
                }
            }
        }
        let route = if on_follower { Route::Fallback } else { self.leader_route() };
        self.ctx.metrics.request(self.ctx.topology.leader(), route);
        self.unpin_timestamp().await?;
        self.relay(cmd, Expect::ResultSets).await?;
        if let Some(r) = &self.ctx.replication {
            let upper = r.state().progress(SERVER_LOG).leader_committed();
            self.reads.position.saw(upper);
        }
        Ok(())
    }

    /// A follower for this read under the session's policy; None: the leader.
    async fn choose_follower(&mut self, toks: &[Token<'_>]) -> Result<Option<usize>, MyError> {
        let Some(repl) = self.ctx.replication.clone() else { return Ok(None) };
        let policies = self.ctx.policies.clone();
        let tables = if policies.rules.is_empty() { Vec::new() } else { tables(toks) };
        let db = self.log.context.as_ref().and_then(|c| c.db.clone()).or_else(|| self.login.database.clone());
        let facts = ReadFacts {
            user: &self.login.user,
            database: db.as_deref().unwrap_or(""),
            application_name: &self.login.program,
            tables: &tables,
            texts: &[],
        };
        let chosen = policies.choose(&facts).clone();
        let p = &chosen.policy;
        if p.leader_only {
            return Ok(None);
        }
        let progress = repl.state().progress(SERVER_LOG);
        let needed = self.reads.position.needed(p);
        let mut changes = progress.subscribe_changes();
        let skip_wait = self.reads.no_wait_until.is_some_and(|t| Instant::now() < t);
        let began = Instant::now();
        let deadline = began + if skip_wait { Duration::ZERO } else { p.wait };
        let mut waited = false;
        loop {
            let views = progress.views(&self.ctx.topology, p.max_lag.is_some());
            let start = self.ctx.topology.rotation();
            match consistency::pick(p, needed, &views, &chosen.prefer, start) {
                Ok(node) => {
                    if waited {
                        crate::metrics::read_wait(began.elapsed(), true);
                    }
                    return Ok(Some(node));
                }
                Err(miss) => {
                    let now = Instant::now();
                    if now >= deadline {
                        if !skip_wait && !p.wait.is_zero() {
                            self.reads.no_wait_until = Some(now + Duration::from_secs(1));
                        }
                        if waited {
                            crate::metrics::read_wait(began.elapsed(), false);
                        }
                        self.ctx.metrics.read_fallback(miss);
                        return match p.on_timeout {
                            Fallback::Leader => Ok(None),
                            Fallback::Error => Err(MyError::new(
                                code::UNKNOWN,
                                format!(
                                    "no follower could serve this read under policy {:?} within {:?} ({}); \
                                     retry, or use a policy that falls back to the leader",
                                    chosen.rule,
                                    p.wait,
                                    miss.as_str()
                                ),
                            )),
                        };
                    }
                    let wait = (deadline - now).min(RECHECK);
                    waited = true;
                    let _ = tokio::time::timeout(wait, changes.changed()).await;
                }
            }
        }
    }

    /// Run the read on follower `node`; false when its connection could not
    /// be made ready (the read then goes to the leader).
    async fn read_on(&mut self, node: usize, cmd: &Packet) -> Result<bool, MySessionError> {
        let (mut conn, mut done) = match self.reads.conns.remove(&node) {
            Some(c) => c,
            None => {
                let opts = LoginOptions {
                    database: self.login.database.as_deref(),
                    capabilities: self.login.capabilities,
                    collation: self.login.collation,
                    timeout: self.ctx.config.limits.connect_timeout,
                };
                match MyServerConn::connect(node, self.ctx.topology.node(node).pool.node(), &opts).await {
                    Ok(c) => (c, 0),
                    Err(e) => {
                        tracing::debug!(node, error = %e, "follower connection failed; reading on the leader");
                        return Ok(false);
                    }
                }
            }
        };
        while done < self.reads.replay.len() {
            if let Err(e) = conn.execute(&self.reads.replay[done]).await {
                tracing::debug!(node, error = %e, "a session statement failed on a follower; reading on the leader");
                self.reads.pin_to_leader();
                return Ok(false);
            }
            done += 1;
        }
        std::mem::swap(&mut self.leader, &mut conn);
        let result = self.relay(cmd, Expect::ResultSets).await;
        std::mem::swap(&mut self.leader, &mut conn);
        let answer = result?;
        let _ = answer;
        if let Some(r) = &self.ctx.replication {
            let upper = r.state().progress(SERVER_LOG).upper_bound(node);
            self.reads.position.saw(upper);
        }
        self.reads.conns.insert(node, (conn, done));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::mysql::lex::tokens;

    #[test]
    fn which_reads_may_leave_the_leader() {
        let ok = |s: &str| follower_safe(&tokens(s, true));
        assert!(ok("SELECT * FROM t WHERE id = 1"));
        assert!(ok("(SELECT 1) UNION (SELECT 2)"));
        assert!(ok("WITH c AS (SELECT 1) SELECT * FROM c"));
        assert!(!ok("SELECT * FROM t FOR UPDATE"));
        assert!(!ok("SELECT * FROM t LOCK IN SHARE MODE"));
        assert!(!ok("SELECT LAST_INSERT_ID()"));
        assert!(!ok("SELECT @x"));
        assert!(!ok("SELECT @@session.sql_mode"));
        assert!(!ok("SELECT 1 INTO @x"));
        assert!(!ok("SHOW WARNINGS"));
        assert!(!ok("SELECT GET_LOCK('a', 1)"));
        assert_eq!(tables(&tokens("SELECT * FROM shop.items i JOIN `Users` u ON 1", true)), ["shop.items", "users"]);
    }
}
