//! DDL on the leader, in the log's order.
//!
//! MySQL commits implicitly around a DDL statement, so its log entry cannot
//! share its transaction: it is written after the DDL ran. Left at that, a
//! write of another session that uses the new schema (a row in a table just
//! created, a column just added) could commit between the two and take an
//! earlier LSN, and the followers would replay it before the DDL. So chorus
//! *fences* each DDL:
//!
//! 1. what the open transaction wrote is logged and committed first (the DDL
//!    would commit it anyway, and the fence must not wait for its LSN lock);
//! 2. the tables the DDL changes, when it can run with them write-locked
//!    (`sql::mysql::ddl`), are taken with `LOCK TABLES ... WRITE`: the
//!    transactions already using them finish first, and no other session
//!    touches them until the DDL is logged;
//! 3. a connection of chorus's own (the *fence*) takes the log's lock (a
//!    locking read of the LSN row), so no other writer commits until the
//!    DDL's entry does;
//! 4. the DDL runs, waiting at most a second for any lock;
//! 5. the fence logs it and commits; the tables are unlocked.
//!
//! Steps 3 and 4 wait briefly on purpose: a transaction that holds a table
//! the DDL needs may be waiting for the log's lock to commit, a cycle no
//! server sees whole. When a wait runs out, chorus lets go of everything,
//! backs off and tries again, for as long as the session's
//! `lock_wait_timeout` allows (then the client gets 1205, as from the
//! server). While a DDL runs, other sessions' COMMITs wait, as on
//! PostgreSQL, where a DDL holds the LSN to its transaction's end.

use super::internal::InternalFailure;
use super::replicate::{Captured, failure_detail, now_timestamp};
use super::{MySession, MySessionError};
use crate::protocol::mysql::consts::status;
use crate::protocol::mysql::{MyError, Packet, code};
use crate::replication::mysql::conn;
use crate::replication::mysql::entry::{LogEntry, LoggedStatement, StatementContext};
use crate::sql::mysql::{ddl::lockable_tables, lex};
use mysql_async::prelude::Queryable;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// ER_LOCK_WAIT_TIMEOUT: a row lock or a metadata lock waited too long.
const LOCK_WAIT_TIMEOUT: u16 = 1205;

/// Errors the server's parser gives (ER_PARSE_ERROR, ER_SYNTAX_ERROR,
/// MariaDB's ER_UNKNOWN_DATA_TYPE): the statement never ran.
const PARSE_ERRORS: &[u16] = &[1064, 1149, 4161];

/// How long the fence and the DDL wait for a lock before chorus suspects a
/// cycle through the log's lock and starts over.
const STEP_WAIT_SECS: u32 = 1;

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// The DDL's entry as an INSERT on the fence connection (hex: independent
/// of that connection's sql_mode).
fn log_insert(entry: &LogEntry) -> String {
    use std::fmt::Write;
    let json = entry.encode();
    let mut hex = String::with_capacity(json.len() * 2);
    for b in &json {
        let _ = write!(hex, "{b:02X}");
    }
    format!(
        "INSERT INTO _chorus.log (lsn, committed_at, entry) SELECT lsn, UTC_TIMESTAMP(6), X'{hex}' FROM _chorus.lsn \
         WHERE id = 1"
    )
}

fn gave_up(secs: u64) -> MyError {
    MyError::new(
        (LOCK_WAIT_TIMEOUT, "HY000"),
        format!(
            "Lock wait timeout exceeded: for {secs} s (lock_wait_timeout) chorus could not run the DDL with its \
             tables and the log to itself (transactions kept using them); it did not run, try again"
        ),
    )
}

/// How one try went.
enum Try {
    /// A wait ran out: let go and start over.
    Again,
    /// Finished: the client has its answer.
    Done,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> MySession<R, W> {
    /// Run the client's DDL `cmd` (`sql` as the followers will run it) fenced.
    pub(super) async fn run_ddl(&mut self, cmd: &Packet, sql: String, ctx: Captured) -> Result<(), MySessionError> {
        let reply = cmd.seq.wrapping_add(1);
        if self.status & status::IN_TRANS != 0 || self.log.has_pending() {
            // A statement that does not even parse commits nothing on the
            // server (the implicit commit comes after parsing): the leader
            // prepares it first, so a typo leaves the transaction open.
            if let Some(e) = self.parse_error(&sql).await?
                && PARSE_ERRORS.contains(&e.code)
            {
                return self.error(reply, &e).await;
            }
        }
        if self.log.has_pending()
            && let Err(f) = self.append_pending().await
        {
            return self.fail_transaction(reply, "the transaction before this DDL", f).await;
        }
        if self.status & status::IN_TRANS != 0 {
            // (As the server does before any DDL that parses, also one
            // that then fails.)
            if let Err(f) = self.commit_internal().await {
                return self.fail_transaction(reply, "the transaction before this DDL", f).await;
            }
            self.status &= !status::IN_TRANS;
        }
        let node = &self.ctx.config.nodes[self.leader.node];
        let mut fence = match conn::connect(node, None, self.ctx.config.limits.connect_timeout).await {
            Ok(c) => c,
            Err(e) => {
                let e = MyError::new(
                    code::UNKNOWN,
                    format!("chorus could not open its connection to log the DDL ({e}); it did not run"),
                );
                return self.error(reply, &e).await;
            }
        };
        if let Err(e) = fence.query_drop(format!("SET SESSION innodb_lock_wait_timeout = {STEP_WAIT_SECS}")).await {
            let e = MyError::new(
                code::UNKNOWN,
                format!(
                    "chorus could not prepare its connection to log the DDL ({}); it did not run",
                    conn::my_text(&e)
                ),
            );
            return self.error(reply, &e).await;
        }
        let mut tables = if self.log.client_locked_tables {
            None
        } else {
            lockable_tables(&lex::tokens(&sql, ctx.backslash_escapes))
        };
        let deadline = Instant::now() + Duration::from_secs(ctx.lock_wait_timeout);
        let mut attempt = 0u64;
        let result = loop {
            attempt += 1;
            if *self.stop.borrow() {
                break Err(MySessionError::Shutdown);
            }
            match self.try_ddl(cmd, &sql, &ctx, &mut fence, &mut tables).await {
                Ok(Try::Done) => break Ok(()),
                Ok(Try::Again) if Instant::now() < deadline => {
                    tracing::debug!(attempt, "DDL fence: a lock wait ran out; trying again");
                    tokio::time::sleep(Duration::from_millis((20 * attempt).min(500))).await;
                }
                Ok(Try::Again) => break self.error(reply, &gave_up(ctx.lock_wait_timeout)).await,
                Err(e) => break Err(e),
            }
        };
        let _ = fence.disconnect().await;
        // It may have made a trigger, routine or default a later write must be judged by.
        self.ctx.catalog.invalidate();
        result
    }

    /// One try: lock the tables, take the log's lock, run the DDL, log it.
    async fn try_ddl(
        &mut self,
        cmd: &Packet,
        sql: &str,
        ctx: &Captured,
        fence: &mut mysql_async::Conn,
        tables: &mut Option<Vec<String>>,
    ) -> Result<Try, MySessionError> {
        let reply = cmd.seq.wrapping_add(1);
        // 2. The DDL's tables, waiting briefly: while LOCK TABLES waits, its
        // pending metadata lock holds up every new user of the tables, also
        // a READ COMMITTED transaction that holds the log's lock, which the
        // transaction LOCK TABLES waits for may need to commit (a cycle
        // through the log's lock no server sees whole).
        let mut locked = false;
        if let Some(names) = tables.as_ref() {
            let steps = [
                format!("SET @@session.lock_wait_timeout = {STEP_WAIT_SECS}"),
                format!("LOCK TABLES {} WRITE", names.join(" WRITE, ")),
                format!("SET @@session.lock_wait_timeout = {}", ctx.lock_wait_timeout),
            ];
            let answer = self.internal(&steps).await?.into_iter().nth(1).unwrap_or_default();
            match answer.error {
                None => locked = true,
                Some(e) if e.code == LOCK_WAIT_TIMEOUT => return Ok(Try::Again),
                // A table that does not exist (DROP TABLE IF EXISTS...) or
                // cannot be locked: the DDL runs unlocked, and says so itself.
                Some(_) => *tables = None,
            }
        }
        let unlock = |locked: bool| if locked { vec!["UNLOCK TABLES".to_string()] } else { Vec::new() };
        // 3. The log's lock.
        let fenced = async {
            fence.query_drop("START TRANSACTION").await?;
            fence.query_drop("SELECT lsn FROM _chorus.lsn WHERE id = 1 FOR UPDATE").await
        };
        if let Err(e) = fenced.await {
            let _ = fence.query_drop("ROLLBACK").await;
            self.internal(&unlock(locked)).await?;
            if server_code(&e) == Some(LOCK_WAIT_TIMEOUT) {
                return Ok(Try::Again);
            }
            let e = MyError::new(
                code::UNKNOWN,
                format!("chorus could not take the log's lock for the DDL ({}); it did not run", conn::my_text(&e)),
            );
            self.error(reply, &e).await?;
            return Ok(Try::Done);
        }
        // 4. The DDL, pinned like any write, waiting briefly for its locks.
        let timestamp = if self.log.client_timestamp { ctx.timestamp.clone() } else { now_timestamp() };
        let (seed1, seed2) = {
            use rand::RngExt;
            let mut rng = rand::rng();
            (rng.random_range(1..0x3FFF_FFFFu32), rng.random_range(1..0x3FFF_FFFFu32))
        };
        let pin = if self.log.client_timestamp { String::new() } else { format!("TIMESTAMP = {timestamp}, ") };
        let mut setup = vec![format!(
            "SET {pin}@@rand_seed1 = {seed1}, @@rand_seed2 = {seed2}, @@session.lock_wait_timeout = {STEP_WAIT_SECS}, \
             @@session.innodb_lock_wait_timeout = {STEP_WAIT_SECS}"
        )];
        // CREATE TABLE ... SELECT reads its rows with shared locks at
        // REPEATABLE READ, and a writer holding one waits for the log's lock
        // to commit: with writers busy on the table every try would run into
        // one. At READ COMMITTED it reads consistently, without locks: what
        // is committed, which under the fence is exactly the LSNs before it.
        let isolation =
            if self.leader.hello.version.contains("MariaDB") { "tx_isolation" } else { "transaction_isolation" };
        let consistent = crate::sql::mysql::ddl::copies_rows(&lex::tokens(sql, ctx.backslash_escapes));
        if consistent {
            setup.push(format!("SELECT @@session.{isolation}"));
            setup.push(format!("SET @@session.{isolation} = 'READ-COMMITTED'"));
        }
        let (answers, held) = self.internal_then(&setup, &cmd.payload).await?;
        self.log.chorus_timestamp = !self.log.client_timestamp;
        let mut after = vec![format!(
            "SET @@session.lock_wait_timeout = {}, @@session.innodb_lock_wait_timeout = {}",
            ctx.lock_wait_timeout, ctx.innodb_lock_wait_timeout
        )];
        if consistent {
            let was = answers.get(1).and_then(|a| a.rows.first()).and_then(|r| r.first().cloned().flatten());
            let was = was.filter(|v| v.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-'));
            after.push(format!("SET @@session.{isolation} = '{}'", was.as_deref().unwrap_or("REPEATABLE-READ")));
        }
        after.extend(unlock(locked));
        if let Some(error) = answers.into_iter().find_map(|a| a.error) {
            let _ = fence.query_drop("ROLLBACK").await;
            self.internal(&after).await?;
            let f = InternalFailure::Statement { sql: setup.join("; "), error };
            let e = MyError::new(
                code::UNKNOWN,
                format!("chorus could not prepare the DDL ({}); it did not run", failure_detail(&f)),
            );
            self.error(reply, &e).await?;
            return Ok(Try::Done);
        }
        if held.response.error {
            let _ = fence.query_drop("ROLLBACK").await;
            self.internal(&after).await?;
            if held.response.error_code == Some(LOCK_WAIT_TIMEOUT) {
                return Ok(Try::Again);
            }
            self.send_held(held, |s| s).await?;
            return Ok(Try::Done);
        }
        // 5. Its entry, on the fence, which still holds the log's lock.
        self.log.context = None; // DROP DATABASE of the default one, USE-like effects
        let statement = LoggedStatement {
            sql: sql.to_string(),
            raw: None,
            infile: None,
            db: ctx.db.clone(),
            ctx: StatementContext {
                timestamp,
                rand_seed1: seed1,
                rand_seed2: seed2,
                insert_id: None,
                last_insert_id: None,
                session: ctx.vars.clone(),
                user_vars: Vec::new(),
            },
        };
        let entry = LogEntry { statements: vec![statement], ddl: true };
        let logged: Result<Option<i64>, mysql_async::Error> = async {
            fence.query_drop("UPDATE _chorus.lsn SET lsn = lsn + 1 WHERE id = 1").await?;
            fence.query_drop(log_insert(&entry)).await?;
            let lsn: Option<i64> = fence.query_first("SELECT lsn FROM _chorus.lsn WHERE id = 1").await?;
            fence.query_drop("COMMIT").await?;
            Ok(lsn)
        }
        .await;
        self.internal(&after).await?;
        match logged {
            Ok(lsn) => {
                self.uncommitted_lsn = lsn.unwrap_or(0);
                self.after_commit();
                self.await_ack().await;
                self.send_held(held, |s| s).await?;
            }
            Err(e) => {
                let _ = fence.query_drop("ROLLBACK").await;
                let message = format!(
                    "the DDL ran on the leader, but chorus could not log it for the followers ({}); check whether \
                     they have it, and repeat it on each one that does not by hand",
                    conn::my_text(&e)
                );
                self.error(reply, &MyError::new(code::UNKNOWN, message)).await?;
            }
        }
        Ok(Try::Done)
    }
}
