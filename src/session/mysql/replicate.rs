//! Replication on the leader, for one MySQL session: each data-changing
//! statement runs with a pinned timestamp and RAND() seeds, its AUTO_INCREMENT
//! id is read off its OK packet, and the statements of a transaction go into
//! `_chorus.log` at its COMMIT, with the LSN taken there (the LSN row's lock
//! orders committing writers; InnoDB's locks order their conflicting writes
//! the same way). A statement in autocommit mode runs in a transaction chorus
//! opens and commits around it, so statement and log entry commit together.
//! At READ COMMITTED (no gap locks) a transaction takes the LSN row's lock
//! before its first write and holds it to its COMMIT instead.
//! DDL commits implicitly in MySQL: it is logged on its own, fenced (see
//! [`super::ddl`]).

use super::internal::InternalFailure;
use super::{MySession, MySessionError};
use crate::protocol::mysql::consts::{com, status};
use crate::protocol::mysql::{Expect, MyError, Packet, code};
use crate::replication::mysql::SERVER_LOG;
use crate::replication::mysql::entry::{LogEntry, LoggedStatement, StatementContext};
use crate::sql::mysql::lex::{self, Token};
use crate::sql::mysql::{MyClass, WeakIsolation, sets_weak_isolation, uservars};
use tokio::io::{AsyncRead, AsyncWrite};

/// Session variables that change what a statement does, re-established on
/// the followers before each of its statements.
const SESSION_VARS: &[&str] = &[
    "sql_mode",
    "time_zone",
    "character_set_client",
    "collation_connection",
    "foreign_key_checks",
    "unique_checks",
    "auto_increment_increment",
    "auto_increment_offset",
    "div_precision_increment",
    "explicit_defaults_for_timestamp",
    "default_storage_engine",
];

/// Errors after which InnoDB may have rolled back the whole transaction,
/// not just the statement, without saying so (1213, always a rollback, is
/// handled in `after_answer`): ER_AUTOINC_READ_FAILED (a deadlock or lock
/// wait on the AUTO-INC lock), ER_LOCK_TABLE_FULL.
const MAY_END_TRANSACTION: &[u16] = &[1467, 1206];

/// The session's context as last read from the leader.
#[derive(Debug, Clone)]
pub(super) struct Captured {
    pub vars: Vec<(String, String)>,
    pub db: Option<String>,
    /// @@timestamp as the server had it (the client's own, when it pinned one).
    pub timestamp: String,
    pub charset: String,
    pub backslash_escapes: bool,
    /// The leader's `max_allowed_packet`: the largest statement it takes.
    pub max_packet: usize,
    /// The session's isolation level, when weaker than REPEATABLE READ.
    pub weak_isolation: Option<WeakIsolation>,
    /// How long the session's statements wait for a metadata lock (s).
    pub lock_wait_timeout: u64,
    /// ... and for a row lock (s).
    pub innodb_lock_wait_timeout: u64,
}

/// What a write's answer told the client that chorus's own statements after
/// it (the log append, COMMIT) reset on the server: ROW_COUNT() and the
/// warnings, served from here to the very next statement that asks.
#[derive(Debug)]
pub(super) struct AfterWrite {
    pub row_count: i64,
    /// The server's answer to SHOW WARNINGS, read before chorus's steps.
    pub warnings: Option<Vec<crate::protocol::mysql::Packet>>,
}

/// What the session's leader side keeps between statements.
#[derive(Debug, Default)]
pub(super) struct LeaderLog {
    /// The statements of the open transaction, not yet in the log.
    pending: Vec<LoggedStatement>,
    savepoints: Vec<(String, usize)>,
    /// None: read it again before the next write (a SET or USE ran).
    pub context: Option<Captured>,
    /// What LAST_INSERT_ID() returned before the current write (read from
    /// the server when the write uses it).
    last_insert_id: u64,
    /// The client pinned TIMESTAMP itself: writes use its value.
    pub client_timestamp: bool,
    /// The client holds tables with LOCK TABLES (chorus must not take or
    /// release any for it).
    pub client_locked_tables: bool,
    /// chorus pinned TIMESTAMP for a write: reset it before anything else runs.
    pub chorus_timestamp: bool,
    /// The highest LSN this session committed.
    pub wrote: i64,
    /// The session chose READ COMMITTED for some transaction (`SET
    /// TRANSACTION` names only the next one, which the server does not
    /// show): its writes take the LSN before they run, from then on.
    read_committed_chosen: bool,
    /// The next write fires triggers that write other tables: logged even
    /// when it changes no row of its own (set by `query::judged`).
    pub log_unchanged: bool,
    /// The session's temporary tables (`db.table`, folded; see `temp`).
    pub temps: std::collections::HashSet<String>,
}

fn failure_error(what: &str, f: &InternalFailure) -> MyError {
    let detail = failure_detail(f);
    let message = format!("chorus could not log {what} for the followers ({detail}); it was rolled back");
    match f {
        // A deadlock on the log's lock rolled the transaction back, as any
        // deadlock does: the client sees one, and may retry as it would.
        // So does a lock wait that ran out there (chorus rolled back).
        InternalFailure::Statement { error, .. } if error.code == 1213 || error.code == 1205 => {
            MyError::new((error.code, &error.state), message)
        }
        _ => MyError::new(code::UNKNOWN, message),
    }
}

pub(super) fn failure_detail(f: &InternalFailure) -> String {
    match f {
        InternalFailure::Statement { sql, error } => format!("{sql:?} failed: {error}"),
        InternalFailure::Session(e) => e.to_string(),
        InternalFailure::TooLarge { what, size, limit } => {
            format!("{what} would take {size} bytes, more than the leader's max_allowed_packet ({limit})")
        }
    }
}

/// After the client was told that one of chorus's steps failed: a step that
/// failed because the leader connection did (not a statement's error) ends
/// the session. The server session and its transaction are gone with it;
/// kept, the session read on followers as if nothing happened but failed
/// every write, and a connection pool would never have replaced it.
fn end_if_lost(f: InternalFailure) -> Result<(), MySessionError> {
    match f {
        InternalFailure::Session(e) => Err(e),
        InternalFailure::Statement { .. } | InternalFailure::TooLarge { .. } => Ok(()),
    }
}

/// `s` as a utf8mb4 string literal under the session's escaping rules
/// (the introducer makes the connection's character set irrelevant). Not
/// hex: an entry is often large, and hex would double it.
fn utf8_literal(s: &str, backslash_escapes: bool) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    out.push_str("_utf8mb4'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' if backslash_escapes => out.push_str("\\\\"),
            '\0' if backslash_escapes => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

pub(super) fn now_timestamp() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

impl LeaderLog {
    /// A SET or USE ran: the context must be read again; note a client's
    /// own `SET TIMESTAMP`.
    pub fn session_changed(&mut self, toks: &[Token<'_>]) {
        self.context = None;
        let pins = toks.iter().position(|t| match t {
            Token::Word(w) => w.eq_ignore_ascii_case("timestamp"),
            Token::Variable(v) => v.to_ascii_lowercase().ends_with("timestamp"),
            _ => false,
        });
        if let Some(i) = pins {
            let value = toks.iter().skip(i + 1).find(|t| !matches!(t, Token::Symbol('=' | ':')));
            let default = match value {
                Some(Token::Word(w)) => w.eq_ignore_ascii_case("default"),
                Some(Token::Number(n)) => {
                    n.trim_start_matches('0').trim_start_matches('.').trim_matches('0').is_empty()
                }
                _ => false,
            };
            self.client_timestamp = !default;
            self.chorus_timestamp = false;
        }
    }

    /// The connection's server session was replaced (COM_CHANGE_USER,
    /// COM_RESET_CONNECTION): nothing of the old one is left.
    pub fn reset(&mut self) {
        let wrote = self.wrote;
        *self = LeaderLog { wrote, ..LeaderLog::default() };
    }

    /// A SET (of any kind) the server accepted: note a choice of READ COMMITTED.
    pub fn note_isolation(&mut self, toks: &[Token<'_>]) {
        if sets_weak_isolation(toks).is_some() {
            self.read_committed_chosen = true;
        }
    }

    /// LOCK TABLES / UNLOCK TABLES of the client's own (BEGIN releases them too).
    pub fn note_table_locks(&mut self, class: &MyClass, toks: &[Token<'_>]) {
        let word = |i: usize, w: &str| matches!(toks.get(i), Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
        let tables = word(1, "TABLES") || word(1, "TABLE");
        if *class == MyClass::Begin || word(0, "UNLOCK") && tables {
            self.client_locked_tables = false;
        } else if word(0, "LOCK") && tables {
            self.client_locked_tables = true;
        }
    }

    pub fn savepoint(&mut self, name: &str) {
        self.savepoints.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.savepoints.push((name.to_string(), self.pending.len()));
    }

    pub fn rollback_to(&mut self, name: &str) {
        if let Some(i) = self.savepoints.iter().position(|(n, _)| n.eq_ignore_ascii_case(name)) {
            self.pending.truncate(self.savepoints[i].1);
            self.savepoints.truncate(i + 1);
        }
    }

    pub fn release(&mut self, name: &str) {
        if let Some(i) = self.savepoints.iter().position(|(n, _)| n.eq_ignore_ascii_case(name)) {
            self.savepoints.truncate(i);
        }
    }

    pub fn rolled_back(&mut self) {
        self.pending.clear();
        self.savepoints.clear();
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> MySession<R, W> {
    /// The session's context, read from the leader when a SET or USE changed it.
    pub(super) async fn context(&mut self) -> Result<Captured, MySessionError> {
        if let Some(c) = &self.log.context {
            return Ok(c.clone());
        }
        let cols: Vec<String> = SESSION_VARS.iter().map(|v| format!("@@session.{v}")).collect();
        // MySQL 8 knows only the new name, MariaDB before 11.1 only the old.
        let isolation =
            if self.leader.hello.version.contains("MariaDB") { "tx_isolation" } else { "transaction_isolation" };
        let sql = format!(
            "SELECT {}, DATABASE(), @@session.timestamp, @@max_allowed_packet, @@session.{isolation}, \
             @@session.lock_wait_timeout, @@session.innodb_lock_wait_timeout",
            cols.join(", ")
        );
        let answers = self.internal(&[sql]).await?;
        let row = answers.into_iter().next().and_then(|a| a.rows.into_iter().next()).unwrap_or_default();
        let value = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let vars: Vec<(String, String)> =
            SESSION_VARS.iter().enumerate().map(|(i, v)| (v.to_string(), value(i))).collect();
        let sql_mode = value(0);
        let captured = Captured {
            charset: value(2),
            backslash_escapes: !sql_mode.to_ascii_uppercase().contains("NO_BACKSLASH_ESCAPES"),
            db: row.get(SESSION_VARS.len()).cloned().flatten(),
            timestamp: value(SESSION_VARS.len() + 1),
            max_packet: value(SESSION_VARS.len() + 2).parse().unwrap_or(usize::MAX),
            weak_isolation: WeakIsolation::from_variable(&value(SESSION_VARS.len() + 3)),
            lock_wait_timeout: value(SESSION_VARS.len() + 4).parse().unwrap_or(86400),
            innodb_lock_wait_timeout: value(SESSION_VARS.len() + 5).parse().unwrap_or(50),
            vars,
        };
        self.log.context = Some(captured.clone());
        Ok(captured)
    }

    /// Before a command that is not a write: undo chorus's pinned timestamp,
    /// so NOW() moves again for the client.
    pub(super) async fn unpin_timestamp(&mut self) -> Result<(), MySessionError> {
        if self.log.chorus_timestamp {
            self.log.chorus_timestamp = false;
            self.internal(&["SET TIMESTAMP = DEFAULT".to_string()]).await?;
        }
        Ok(())
    }

    /// A data-changing statement (`cmd` as the client sent it; `sql` its text
    /// with parameters inlined, as the followers will run it).
    pub(super) async fn logged_write(
        &mut self,
        cmd: &Packet,
        sqls: Vec<String>,
        class: &MyClass,
    ) -> Result<(), MySessionError> {
        let ddl = *class == MyClass::Ddl;
        let (uses_last_insert_id, returning) = match *class {
            MyClass::Write { uses_last_insert_id, returning } => (uses_last_insert_id, returning),
            _ => (false, false),
        };
        let reply = cmd.seq.wrapping_add(1);
        let ctx = self.context().await?;
        if ctx.weak_isolation == Some(WeakIsolation::ReadUncommitted) {
            // The server's own default (chorus refuses choosing it).
            let e = super::query::refused(
                "this session runs at READ UNCOMMITTED (the server's default isolation level?); a write there \
                 can use rows another transaction has not committed, which no replay can reproduce: SET SESSION \
                 TRANSACTION ISOLATION LEVEL READ COMMITTED or a stronger level",
            );
            return self.error(reply, &e).await;
        }
        if ddl {
            return self.run_ddl(cmd, sqls.into_iter().next().unwrap_or_default(), ctx).await;
        }
        // READ COMMITTED takes no gap locks: a write can miss a row another
        // transaction inserts while it runs, and if that one commits first,
        // replaying both in commit order gives other rows. Such a transaction
        // takes the log's lock before its first write and holds it to its
        // COMMIT, so no other writer commits in between (as on PostgreSQL).
        // A locking read, not the LSN's update: ROLLBACK TO SAVEPOINT keeps
        // the lock but would undo the update.
        let lock_log_first = !self.log.has_pending()
            && (self.log.read_committed_chosen || ctx.weak_isolation == Some(WeakIsolation::ReadCommitted));
        let wrap = self.status & status::IN_TRANS == 0 && self.status & status::AUTOCOMMIT != 0;
        let timestamp = if self.log.client_timestamp { ctx.timestamp.clone() } else { now_timestamp() };
        let (seed1, seed2) = {
            use rand::RngExt;
            let mut rng = rand::rng();
            (rng.random_range(1..0x3FFF_FFFFu32), rng.random_range(1..0x3FFF_FFFFu32))
        };
        let mut setup = Vec::new();
        if wrap {
            setup.push("START TRANSACTION".to_string());
        }
        if lock_log_first {
            setup.push("SELECT lsn FROM _chorus.lsn WHERE id = 1 FOR UPDATE".to_string());
        }
        let pin = if self.log.client_timestamp { String::new() } else { format!("TIMESTAMP = {timestamp}, ") };
        setup.push(format!("SET {pin}@@rand_seed1 = {seed1}, @@rand_seed2 = {seed2}"));
        // The user variables the statement reads, as they are right before
        // it runs (a query of several statements that writes has none).
        let user_var_names = match sqls.as_slice() {
            [sql] if sql.contains('@') => uservars::names(&lex::tokens(sql, ctx.backslash_escapes)),
            _ => Vec::new(),
        };
        let user_vars_at = (!user_var_names.is_empty()).then(|| {
            setup.push(uservars::capture_sql(&user_var_names));
            setup.len() - 1
        });
        if uses_last_insert_id || returning {
            // Read, not tracked: OK packets report explicit ids too, which
            // LAST_INSERT_ID() does not take.
            setup.push("SELECT LAST_INSERT_ID()".to_string());
        }
        if returning {
            // No OK packet will carry the first id the statement generates:
            // LAST_INSERT_ID() will, once cleared here (0 is never generated).
            setup.push("SELECT LAST_INSERT_ID(0)".to_string());
        }
        // The setup and the statement in one round trip: these steps do not
        // fail on a live connection, and if one did, the statement is undone
        // (chorus's transaction, or the client's) before anything is logged.
        let (answers, mut held) = match self.internal_then(&setup, &cmd.payload).await {
            Ok(x) => x,
            Err(e) => return self.fail_transaction(reply, "this statement", InternalFailure::Session(e)).await,
        };
        // An error chorus sends instead of the answer takes the answer's
        // sequence id (after LOAD DATA LOCAL's file packets, that is not the
        // one right after the query's).
        let reply = held.packets.first().map_or(reply, |p| p.seq);
        if let Some((i, error)) = answers.iter().enumerate().find_map(|(i, a)| a.error.clone().map(|e| (i, e))) {
            let f = InternalFailure::Statement { sql: setup[i].clone(), error };
            if wrap && i == 0 {
                // Not even chorus's transaction opened: the statement ran on its own.
                tracing::error!(error = %failure_error("this statement", &f), "a write may have run on the leader unlogged");
            }
            return self.fail_transaction(reply, "this statement", f).await;
        }
        let last_insert_id_before = if uses_last_insert_id || returning {
            let at = answers.len() - 1 - usize::from(returning);
            let v = answers[at].rows.first().and_then(|r| r.first().cloned().flatten());
            v.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        } else {
            0
        };
        if uses_last_insert_id {
            self.log.last_insert_id = last_insert_id_before;
        }
        let user_vars = match user_vars_at {
            Some(at) => {
                let row = answers[at].rows.first().cloned().unwrap_or_default();
                uservars::assignments(&user_var_names, &answers[at].types, &row)
            }
            None => Vec::new(),
        };
        self.log.chorus_timestamp = !self.log.client_timestamp;
        // MariaDB's `... RETURNING` answers with a result set, a row per row
        // written, and leaves ROW_COUNT() at -1 as a SELECT does.
        let class_returning = returning;
        let returning = held.response.result_set;
        // Per statement run (several in a multi-statement query, up to the
        // first error): did it change rows, and the first id it generated.
        // A write whose triggers write other tables counts as changing rows
        // even when it changed none of its own (they ran).
        let unchanged_too = std::mem::take(&mut self.log.log_unchanged);
        let mut results: Vec<(bool, u64)> = match (returning, held.response.error) {
            (true, true) => Vec::new(),
            (true, false) => vec![(held.response.rows > 0 || unchanged_too, 0)],
            (false, _) => held.response.oks.iter().map(|&(affected, id)| (affected > 0 || unchanged_too, id)).collect(),
        };
        let row_count = if held.response.error || returning { -1 } else { held.response.affected as i64 };
        // chorus's statements after the write would clear its warnings.
        let warnings = if (wrap || returning) && held.response.warnings > 0 && !held.response.error {
            self.leader.send(0, b"\x03SHOW WARNINGS").await?;
            Some(self.read_held(Expect::ResultSets).await?.packets)
        } else {
            None
        };
        self.after_write = Some(AfterWrite { row_count, warnings });
        if returning && class_returning {
            // The first id the statement generated (0: none); then the
            // client's LAST_INSERT_ID() as the server would have left it.
            let steps = [
                "SELECT LAST_INSERT_ID()".to_string(),
                format!("SELECT LAST_INSERT_ID(IF(LAST_INSERT_ID() = 0, {last_insert_id_before}, LAST_INSERT_ID()))"),
            ];
            let answers = self.internal(&steps).await?;
            let v = answers.first().and_then(|a| a.rows.first()).and_then(|r| r.first().cloned().flatten());
            if let Some(first) = results.first_mut() {
                first.1 = v.and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
        if held.response.error_code == Some(1213) {
            // The deadlock rolled back the whole transaction, chorus's too.
            results.clear();
        }
        // A query whose text is not UTF-8 (query.rs lets only single plain
        // writes through) is logged as its bytes, `sql` being its lossy text.
        let raw = (cmd.payload.first() == Some(&com::QUERY) && std::str::from_utf8(&cmd.payload[1..]).is_err())
            .then(|| cmd.payload[1..].to_vec());
        // LOAD DATA LOCAL (a statement of its own): the file goes with it.
        let infile = held.infile.take();
        let statements: Vec<LoggedStatement> = sqls
            .into_iter()
            .zip(results)
            .filter(|(_, (changed, _))| *changed)
            .map(|(sql, (_, insert_id))| LoggedStatement {
                sql,
                raw: raw.clone(),
                infile: infile.clone(),
                db: ctx.db.clone(),
                ctx: StatementContext {
                    timestamp: timestamp.clone(),
                    rand_seed1: seed1,
                    rand_seed2: seed2,
                    insert_id: (insert_id != 0).then_some(insert_id),
                    last_insert_id: uses_last_insert_id.then_some(self.log.last_insert_id),
                    session: ctx.vars.clone(),
                    user_vars: user_vars.clone(),
                },
            })
            .collect();
        if statements.is_empty() {
            // Failed, or changed nothing: nothing to replay.
            if wrap {
                self.internal(&["ROLLBACK".to_string()]).await?;
                return self.send_held(held, |s| s & !status::IN_TRANS).await;
            }
            let may_have_ended = held.response.error_code.is_some_and(|c| MAY_END_TRANSACTION.contains(&c));
            if may_have_ended && self.status & status::IN_TRANS != 0 && !self.server_in_transaction().await? {
                // The server rolled the whole transaction back (a deadlock
                // on the AUTO-INC lock reads as 1467): what it logged so far
                // must not reach the followers, and the next write is
                // autocommitted there again.
                self.send_held(held, |s| s).await?;
                self.status &= !status::IN_TRANS;
                self.rolled_back();
                return Ok(());
            }
            return self.send_held(held, |s| s).await;
        }
        self.log.pending.extend(statements);
        if !wrap {
            return self.send_held(held, |s| s).await;
        }
        match self.append_pending().await {
            Ok(()) => match self.commit_internal().await {
                Ok(()) => {
                    self.await_ack().await;
                    self.send_held(held, |s| s & !status::IN_TRANS).await
                }
                Err(InternalFailure::Session(e)) => {
                    // The COMMIT's outcome is unknown: the client learns it as
                    // from a server lost in the middle of a COMMIT, by the
                    // connection ending (the log entry shares the outcome).
                    self.rolled_back();
                    Err(e)
                }
                Err(f) => self.fail_transaction(reply, "this statement", f).await,
            },
            Err(f) => self.fail_transaction(reply, "this statement", f).await,
        }
    }

    /// The client's COMMIT: the transaction's entry goes into the log first.
    pub(super) async fn commit(&mut self, cmd: &Packet) -> Result<(), MySessionError> {
        let reply = cmd.seq.wrapping_add(1);
        if !self.log.has_pending() {
            self.relay(cmd, Expect::ResultSets).await?;
            self.after_commit();
            return Ok(());
        }
        if let Err(f) = self.append_pending().await {
            return self.fail_transaction(reply, "this transaction", f).await;
        }
        self.leader.send(0, &cmd.payload).await?;
        let held = self.read_held(Expect::ResultSets).await?;
        if held.response.error {
            // The server rolled back (a deadlock at commit...): the entry with it.
            self.rolled_back();
        } else {
            self.after_commit();
            self.await_ack().await;
        }
        self.send_held(held, |s| s).await
    }

    /// `semi-sync` / `sync`: before the client hears that its COMMIT
    /// succeeded, wait until one / every readable follower has applied it,
    /// for at most `ack_timeout`. When the bound is hit the commit stands (it
    /// is on the leader and will reach the followers): the OK goes out and
    /// chorus logs a warning (MySQL's OK packet has no room for a message).
    pub(super) async fn await_ack(&mut self) {
        use crate::config::AckMode;
        let Some(lsn) = self.ack_lsn.take() else { return };
        let cfg = &self.ctx.config.replication;
        let topology = &self.ctx.topology;
        let readable = topology.followers().iter().filter(|&&f| topology.node(f).is_readable()).count();
        let needed = match cfg.ack {
            AckMode::Async => return,
            AckMode::SemiSync => readable.min(1),
            AckMode::Sync => readable,
        };
        let Some(r) = &self.ctx.replication else { return };
        if needed > 0 && r.state().wait_applied(SERVER_LOG, needed, lsn, cfg.ack_timeout).await.is_err() {
            tracing::warn!(lsn, ack = ?cfg.ack, "commit acknowledgement timed out; the commit stands on the leader");
        }
    }

    /// A statement that commits implicitly is about to run: put what the
    /// transaction logged so far into the log, inside the transaction, so it
    /// commits with it.
    pub(super) async fn before_implicit_commit(&mut self, cmd: &Packet) -> Result<bool, MySessionError> {
        if !self.log.has_pending() {
            return Ok(true);
        }
        match self.append_pending().await {
            Ok(()) => Ok(true),
            Err(f) => {
                self.fail_transaction(cmd.seq.wrapping_add(1), "the open transaction", f).await?;
                Ok(false)
            }
        }
    }

    /// Take an LSN and append the pending statements as one entry (inside
    /// the open transaction).
    pub(super) async fn append_pending(&mut self) -> Result<(), InternalFailure> {
        let entry = LogEntry { statements: std::mem::take(&mut self.log.pending), ddl: false };
        self.log.savepoints.clear();
        self.append(&entry).await
    }

    /// `UPDATE _chorus.lsn`, `INSERT INTO _chorus.log`, read the LSN back
    /// (in the open transaction; its COMMIT is the caller's, once this
    /// succeeded).
    async fn append(&mut self, entry: &LogEntry) -> Result<(), InternalFailure> {
        // The context as it is now: a SET after the transaction's last write
        // (sql_mode's NO_BACKSLASH_ESCAPES) changes how the literal is read.
        let ctx = self.context().await.map_err(InternalFailure::Session)?;
        let json = String::from_utf8(entry.encode()).expect("JSON is UTF-8");
        let literal = utf8_literal(&json, ctx.backslash_escapes);
        let insert = format!(
            "INSERT INTO _chorus.log (lsn, committed_at, entry) SELECT lsn, UTC_TIMESTAMP(6), {literal} FROM _chorus.lsn WHERE id = 1"
        );
        // The server would drop the connection (and the transaction with it).
        if insert.len() + 1 > ctx.max_packet {
            let what = "its log entry";
            return Err(InternalFailure::TooLarge { what, size: insert.len() + 1, limit: ctx.max_packet });
        }
        let steps = [
            "UPDATE _chorus.lsn SET lsn = lsn + 1 WHERE id = 1".to_string(),
            insert,
            "SELECT lsn FROM _chorus.lsn WHERE id = 1".to_string(),
        ];
        let answers = self.internal_ok(&steps).await?;
        let lsn =
            answers[2].rows.first().and_then(|r| r.first().cloned().flatten()).and_then(|v| v.parse::<i64>().ok());
        self.uncommitted_lsn = lsn.unwrap_or(0).max(self.uncommitted_lsn);
        Ok(())
    }

    pub(super) async fn commit_internal(&mut self) -> Result<(), InternalFailure> {
        self.internal_ok(&["COMMIT".to_string()]).await?;
        self.after_commit();
        Ok(())
    }

    /// A transaction that appended entries committed: they are the session's
    /// writes now, and the appliers may fetch them.
    pub(super) fn after_commit(&mut self) {
        self.log.rolled_back();
        if self.uncommitted_lsn > 0 {
            let lsn = std::mem::take(&mut self.uncommitted_lsn);
            self.log.wrote = self.log.wrote.max(lsn);
            self.reads.position.wrote(lsn);
            if self.ctx.config.replication.ack != crate::config::AckMode::Async {
                self.ack_lsn = Some(lsn);
            }
            if let Some(r) = &self.ctx.replication {
                r.state().progress(SERVER_LOG).note_committed(lsn);
                r.notify();
            }
        }
    }

    /// Logging `what` failed: roll the whole transaction back and tell the
    /// client (then end the session if the leader connection failed).
    pub(super) async fn fail_transaction(
        &mut self,
        seq: u8,
        what: &str,
        f: InternalFailure,
    ) -> Result<(), MySessionError> {
        if !f.lost_connection() {
            let _ = self.internal(&["ROLLBACK".to_string()]).await;
        }
        self.log.rolled_back();
        self.uncommitted_lsn = 0;
        self.status &= !status::IN_TRANS;
        self.error(seq, &failure_error(what, &f)).await?;
        end_if_lost(f)
    }

    /// After every answer the client gets: a deadlock (ER_LOCK_DEADLOCK) rolled
    /// the whole transaction back on the server, without a ROLLBACK from the
    /// client; what it logged so far must not reach the followers.
    pub(super) fn after_answer(&mut self, answer: &crate::protocol::mysql::Response) {
        if answer.error {
            crate::metrics::error("server");
        }
        if answer.error_code == Some(1213) {
            self.status &= !status::IN_TRANS;
            self.rolled_back();
        }
    }

    /// The client rolled back (or the server did): nothing pending survives.
    pub(super) fn rolled_back(&mut self) {
        self.log.rolled_back();
        self.uncommitted_lsn = 0;
    }
}
