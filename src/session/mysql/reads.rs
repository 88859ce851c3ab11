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

/// A session's connection to one follower.
struct FollowerConn {
    conn: MyServerConn,
    /// How many of the session's SET / USE statements it ran.
    replayed: usize,
    /// The client's statement id -> the id the same text has there.
    statements: HashMap<u32, u32>,
}

#[derive(Default)]
pub(super) struct FollowerReads {
    conns: HashMap<usize, FollowerConn>,
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
pub(super) fn tables(toks: &[Token<'_>]) -> Vec<String> {
    let ident = |t: &Token<'_>| match t {
        Token::Word(w) => Some(w.to_ascii_lowercase()),
        Token::Quoted(q) => Some(crate::sql::mysql::lex::quoted_name(q).to_ascii_lowercase()),
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
        let temp = !self.log.temps.is_empty() && crate::sql::mysql::temp::mentions(toks, &self.log.temps).is_some();
        let safe = follower_safe(toks) && !temp;
        let tables = if safe && !self.ctx.policies.rules.is_empty() { tables(toks) } else { Vec::new() };
        self.read_routed(cmd, safe, &tables, None).await
    }

    /// COM_STMT_EXECUTE of a prepared read: as [`Self::read`], the
    /// statement prepared on the follower the first time it runs there.
    pub(super) async fn read_prepared(&mut self, cmd: &Packet, id: u32) -> Result<(), MySessionError> {
        let stmt = self.prepared.get_mut(&id).expect("the caller looked it up");
        if let Err(e) = stmt.note_types(&cmd.payload) {
            let e = MyError::new(code::NET_READ, format!("malformed COM_STMT_EXECUTE: {e}"));
            return self.error(cmd.seq.wrapping_add(1), &e).await;
        }
        // Prepared before a temporary table of its name existed, maybe.
        let (safe, tables) = (stmt.follower_ok && self.log.temps.is_empty(), stmt.tables.clone());
        self.read_routed(cmd, safe, &tables, Some(id)).await
    }

    /// A read (`statement`: the prepared statement `cmd` executes) on a
    /// follower when `safe` and the session may, else on the leader.
    async fn read_routed(
        &mut self,
        cmd: &Packet,
        safe: bool,
        tables: &[String],
        statement: Option<u32>,
    ) -> Result<(), MySessionError> {
        let on_follower = self.status & status::IN_TRANS == 0
            && self.status & status::AUTOCOMMIT != 0
            && !self.reads.leader_only
            && !self.ctx.topology.followers().is_empty()
            && safe;
        if on_follower {
            match self.choose_follower(tables).await {
                Ok(Some(node)) => {
                    if self.read_on(node, cmd, statement).await? {
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
        match statement.and_then(|id| self.prepared.get(&id).map(|s| (id, s))) {
            Some((id, stmt)) => {
                // The types may have been bound by an execute a follower ran.
                let payload = stmt.execute_on_leader(&cmd.payload, id);
                let cmd = Packet { seq: cmd.seq, payload };
                self.relay(&cmd, Expect::ResultSets).await?;
                if let Some(s) = self.prepared.get_mut(&id) {
                    s.reset();
                }
            }
            None => {
                self.relay(cmd, Expect::ResultSets).await?;
            }
        }
        if let Some(r) = &self.ctx.replication {
            let upper = r.state().progress(SERVER_LOG).leader_committed();
            self.reads.position.saw(upper);
        }
        Ok(())
    }

    /// COM_STMT_CLOSE of `id`: on the followers that prepared it too (no answer comes).
    pub(super) async fn close_on_followers(&mut self, id: u32) {
        let mut broken = Vec::new();
        for (node, fc) in self.reads.conns.iter_mut() {
            if let Some(fid) = fc.statements.remove(&id) {
                let mut payload = vec![crate::protocol::mysql::consts::com::STMT_CLOSE];
                payload.extend_from_slice(&fid.to_le_bytes());
                if fc.conn.send(0, &payload).await.is_err() {
                    broken.push(*node);
                }
            }
        }
        for node in broken {
            self.reads.conns.remove(&node);
        }
    }

    /// A follower for this read under the session's policy; None: the leader.
    async fn choose_follower(&mut self, tables: &[String]) -> Result<Option<usize>, MyError> {
        let Some(repl) = self.ctx.replication.clone() else { return Ok(None) };
        let policies = self.ctx.policies.clone();
        let db = self.log.context.as_ref().and_then(|c| c.db.clone()).or_else(|| self.login.database.clone());
        let facts = ReadFacts {
            user: &self.login.user,
            database: db.as_deref().unwrap_or(""),
            application_name: &self.login.program,
            tables,
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

    /// Run the read on follower `node`; false when it cannot run there (no
    /// connection, a session statement or the statement's prepare failed
    /// there, an execute that must stay on the leader): the read then goes
    /// to the leader.
    async fn read_on(&mut self, node: usize, cmd: &Packet, statement: Option<u32>) -> Result<bool, MySessionError> {
        // Check before connecting or preparing anything.
        let execute = match statement {
            Some(id) => match self.prepared.get(&id).and_then(|s| s.execute_elsewhere(&cmd.payload, 0)) {
                Some(p) => Some((id, p)),
                None => return Ok(false),
            },
            None => None,
        };
        let mut fc = match self.reads.conns.remove(&node) {
            Some(c) => c,
            None => {
                let opts = LoginOptions {
                    database: self.login.database.as_deref(),
                    capabilities: self.login.capabilities,
                    collation: self.login.collation,
                    timeout: self.ctx.config.limits.connect_timeout,
                };
                match MyServerConn::connect(node, self.ctx.topology.node(node).pool.node(), &opts).await {
                    Ok(conn) => FollowerConn { conn, replayed: 0, statements: HashMap::new() },
                    Err(e) => {
                        tracing::debug!(node, error = %e, "follower connection failed; reading on the leader");
                        return Ok(false);
                    }
                }
            }
        };
        while fc.replayed < self.reads.replay.len() {
            if let Err(e) = fc.conn.execute(&self.reads.replay[fc.replayed]).await {
                tracing::debug!(node, error = %e, "a session statement failed on a follower; reading on the leader");
                self.reads.pin_to_leader();
                return Ok(false);
            }
            fc.replayed += 1;
        }
        let cmd = match execute {
            None => cmd.clone(),
            Some((id, mut payload)) => {
                let fid = match fc.statements.get(&id) {
                    Some(&fid) => fid,
                    None => match self.prepare_on(&mut fc, id).await {
                        Ok(fid) => fid,
                        Err(usable) => {
                            if usable {
                                self.reads.conns.insert(node, fc);
                            }
                            return Ok(false);
                        }
                    },
                };
                payload[1..5].copy_from_slice(&fid.to_le_bytes());
                Packet { seq: cmd.seq, payload: payload.into() }
            }
        };
        std::mem::swap(&mut self.leader, &mut fc.conn);
        let result = self.relay(&cmd, Expect::ResultSets).await;
        std::mem::swap(&mut self.leader, &mut fc.conn);
        result?;
        if let Some(r) = &self.ctx.replication {
            let upper = r.state().progress(SERVER_LOG).upper_bound(node);
            self.reads.position.saw(upper);
        }
        self.reads.conns.insert(node, fc);
        Ok(true)
    }

    /// Prepare statement `id`'s text on the follower connection `fc` (the
    /// answer is chorus's, not the client's): its id there, or whether the
    /// connection is still usable after the failure.
    async fn prepare_on(&mut self, fc: &mut FollowerConn, id: u32) -> Result<u32, bool> {
        let (sql, params) = self.prepared.get(&id).map(|s| (s.sql.clone(), s.params())).ok_or(true)?;
        let mut payload = vec![crate::protocol::mysql::consts::com::STMT_PREPARE];
        payload.extend_from_slice(sql.as_bytes());
        std::mem::swap(&mut self.leader, &mut fc.conn);
        let held = match self.leader.send(0, &payload).await {
            Ok(_) => self.read_held(Expect::Prepare).await.ok(),
            Err(_) => None,
        };
        std::mem::swap(&mut self.leader, &mut fc.conn);
        let node = fc.conn.node;
        let Some(held) = held else { return Err(false) };
        match held.response.prepared {
            Some(ok) if ok.params == params => {
                fc.statements.insert(id, ok.statement_id);
                Ok(ok.statement_id)
            }
            Some(ok) => {
                tracing::debug!(node, "the statement prepared differently on a follower; reading on the leader");
                let mut close = vec![crate::protocol::mysql::consts::com::STMT_CLOSE];
                close.extend_from_slice(&ok.statement_id.to_le_bytes());
                Err(fc.conn.send(0, &close).await.is_ok())
            }
            None => {
                tracing::debug!(node, "the statement does not prepare on a follower; reading on the leader");
                Err(true)
            }
        }
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
