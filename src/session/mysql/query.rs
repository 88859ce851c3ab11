//! What a session does with a statement, by its class: COM_QUERY text,
//! COM_STMT_PREPARE (refused statements are refused here, before the server
//! sees them) and COM_STMT_EXECUTE (its parameters inlined for the log).

use super::kill;
use super::prepared::Prepared;
use super::{MySession, MySessionError};
use crate::protocol::mysql::wire::Reader;
use crate::protocol::mysql::{Expect, MyError, Packet, code};
use crate::sql::mysql::lex::{self, Token};
use crate::sql::mysql::safety::{self, Verdict};
use crate::sql::mysql::{MyClass, classify, may_commit_implicitly, multi_write_problem};
use crate::sql::mysql::{defaults, generate, order, targets, utf8};
use tokio::io::{AsyncRead, AsyncWrite};

pub(super) fn refused(why: &str) -> MyError {
    MyError::new(code::NOT_SUPPORTED, format!("chorus cannot replicate this statement: {why}"))
}

/// `sql` with each `ROW_COUNT()` replaced by `n` (what it returned before
/// chorus's own statements after the client's write reset it); a select-list
/// item keeps its column name. None when there is no ROW_COUNT().
fn row_count_inlined(sql: &str, toks: &[Token<'_>], n: i64) -> Option<String> {
    let base = sql.as_ptr() as usize;
    let mut out = String::new();
    let mut from = 0;
    for (i, t) in toks.iter().enumerate() {
        let Token::Word(w) = t else { continue };
        if !w.eq_ignore_ascii_case("ROW_COUNT")
            || toks.get(i + 1) != Some(&Token::Symbol('('))
            || toks.get(i + 2) != Some(&Token::Symbol(')'))
        {
            continue;
        }
        let start = w.as_ptr() as usize - base;
        let close = sql[start..].find(')')? + start;
        let item_start = matches!(toks.get(i.wrapping_sub(1)), Some(Token::Symbol(',')))
            || matches!(toks.get(i.wrapping_sub(1)), Some(Token::Word(k)) if k.eq_ignore_ascii_case("SELECT"));
        let item_end = match toks.get(i + 3) {
            None | Some(Token::End(_)) | Some(Token::Symbol(',')) => true,
            Some(Token::Word(k)) => k.eq_ignore_ascii_case("FROM"),
            _ => false,
        };
        out.push_str(&sql[from..start]);
        if item_start && item_end {
            out.push_str(&format!("{n} AS `ROW_COUNT()`"));
        } else {
            out.push_str(&format!("({n})"));
        }
        from = close + 1;
    }
    if from == 0 {
        return None;
    }
    out.push_str(&sql[from..]);
    Some(out)
}

/// A COM_QUERY of `text`.
fn query_packet(seq: u8, text: &str) -> Packet {
    let mut payload = Vec::with_capacity(text.len() + 1);
    payload.push(crate::protocol::mysql::consts::com::QUERY);
    payload.extend_from_slice(text.as_bytes());
    Packet { seq, payload: bytes::Bytes::from(payload) }
}

fn not_utf8() -> MyError {
    MyError::new(
        (1366, "HY000"),
        "chorus replicates statement text in UTF-8 (or ASCII; bytes in _binary'...' literals are fine): \
         send this statement in utf8mb4 (SET NAMES utf8mb4), or its non-ASCII values as parameters",
    )
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> MySession<R, W> {
    /// How a request the leader serves counts: inside a transaction or not.
    pub(super) fn leader_route(&self) -> crate::metrics::Route {
        use crate::protocol::mysql::consts::status;
        if self.status & status::IN_TRANS != 0 {
            crate::metrics::Route::Transaction
        } else {
            crate::metrics::Route::Leader
        }
    }

    /// Whether a backslash escapes in a string literal under the session's
    /// sql_mode (NO_BACKSLASH_ESCAPES), for lexing `text`. After a SET or USE
    /// (and at the start) chorus does not know the mode: when `text` has a
    /// backslash, the only case where it matters, the session's context is
    /// read from the server first, so that chorus splits, classifies and
    /// rewrites the statement as the server will read it (under the mode a
    /// `SET sql_mode` just set, `'a\'; DELETE ...` is two statements).
    async fn backslash_escapes(&mut self, text: &[u8]) -> Result<bool, MySessionError> {
        if self.log.context.is_none() && text.contains(&b'\\') {
            self.context().await?;
        }
        Ok(self.log.context.as_ref().is_none_or(|c| c.backslash_escapes))
    }

    /// COM_QUERY. False when the session ended itself (KILL of its own connection).
    pub(super) async fn query(
        &mut self,
        p: &Packet,
        after_write: Option<super::replicate::AfterWrite>,
    ) -> Result<bool, MySessionError> {
        let reply = p.seq.wrapping_add(1);
        let text = std::str::from_utf8(&p.payload[1..]);
        let backslash = self.backslash_escapes(&p.payload[1..]).await?;
        if let (Some(after), Ok(sql)) = (after_write, text) {
            let toks = lex::tokens(sql, backslash);
            let words: Vec<String> = toks
                .iter()
                .filter(|t| !matches!(t, Token::End(_)))
                .map(|t| match t {
                    Token::Word(w) => w.to_ascii_uppercase(),
                    Token::Symbol(c) => c.to_string(),
                    _ => "?".to_string(),
                })
                .collect();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            if let (["SHOW", "WARNINGS"], Some(packets)) = (words.as_slice(), &after.warnings) {
                for pk in packets {
                    crate::protocol::mysql::packet::frame_raw(&mut self.out, pk.seq, &pk.payload);
                }
                self.flush().await?;
                return Ok(true);
            }
            if words.first() == Some(&"SELECT")
                && let Some(rewritten) = row_count_inlined(sql, &toks, after.row_count)
            {
                let cmd = query_packet(p.seq, &rewritten);
                self.unpin_timestamp().await?;
                self.relay(&cmd, Expect::ResultSets).await?;
                return Ok(true);
            }
        }
        if let Ok(sql) = text {
            match kill::parse_kill(sql) {
                Some(Ok((target, id))) => return self.kill(target, id, reply).await,
                Some(Err(e)) => {
                    self.error(reply, &e).await?;
                    return Ok(true);
                }
                None => {}
            }
        }
        let rewritten;
        let (p, sql) = match text {
            Ok(sql) => (p, sql),
            Err(_) => {
                // Non-UTF-8 text: fine to read; logged only once its binary
                // literals are hex (what the leader runs too).
                let lossy = String::from_utf8_lossy(&p.payload[1..]).into_owned();
                let toks = lex::tokens(&lossy, backslash);
                let reads = toks
                    .split(|t| matches!(t, Token::End(_)))
                    .filter(|s| !s.is_empty())
                    .all(|s| classify(s) == MyClass::Read);
                if reads {
                    self.unpin_timestamp().await?;
                    self.relay(p, Expect::ResultSets).await?;
                    return Ok(true);
                }
                let charset = self.context().await?.charset;
                let text =
                    utf8::ascii_safe(&charset).then(|| utf8::hex_binary_literals(&p.payload[1..], backslash)).flatten();
                let Some(text) = text else {
                    if utf8::ascii_safe(&charset) && single_plain_write(&toks) {
                        // A string literal of raw bytes without an introducer
                        // (mariadb-dump's BLOBs): logged as the very bytes the
                        // leader runs (see `logged_write`). The charset keeps
                        // every ASCII byte itself, so the lossy text lexes as
                        // the server reads the bytes.
                        let stmt = toks.split(|t| matches!(t, Token::End(_))).find(|s| !s.is_empty());
                        let class = match stmt {
                            Some(s) => self.judged(s, classify(s)).await?,
                            None => MyClass::Local,
                        };
                        self.run_statement(p, class, lossy.clone(), &toks).await?;
                        return Ok(true);
                    }
                    self.error(reply, &not_utf8()).await?;
                    return Ok(true);
                };
                rewritten = query_packet(p.seq, &text);
                (&rewritten, std::str::from_utf8(&rewritten.payload[1..]).expect("made UTF-8"))
            }
        };
        let toks = lex::tokens(sql, backslash);
        if let Some(stmt) = super::local::parse(&toks) {
            self.local(reply, stmt).await?;
            return Ok(true);
        }
        if toks.iter().any(|t| matches!(t, Token::Variable(v) if !v.starts_with("@@"))) {
            // User variables live on the leader connection only.
            self.reads.pin_to_leader();
        }
        let statements: Vec<&[Token<'_>]> =
            toks.split(|t| matches!(t, Token::End(_))).filter(|s| !s.is_empty()).collect();
        if statements.len() > 1 {
            let mut classes = Vec::with_capacity(statements.len());
            for s in &statements {
                classes.push(self.judged(s, classify(s)).await?);
            }
            if statements.iter().any(|s| crate::sql::mysql::temp::change(s).is_some()) {
                // Which of them succeeded, the set of temporary tables must know.
                let e = refused("send CREATE / DROP of a temporary table as a statement of its own");
                self.error(reply, &e).await?;
                return Ok(true);
            }
            if classes.iter().all(|c| matches!(c, MyClass::Read | MyClass::Local | MyClass::Session)) {
                self.unpin_timestamp().await?;
                let answer = self.relay(p, Expect::ResultSets).await?;
                for (s, class) in statements.iter().zip(&classes) {
                    self.log.note_isolation(s);
                    self.log.note_table_locks(class, s);
                }
                if classes.contains(&MyClass::Session) || answer.error {
                    self.log.session_changed(&toks);
                    // Replaying part of it elsewhere is not worth the risk.
                    self.reads.pin_to_leader();
                }
            } else if let Some(why) = multi_write_problem(&statements, &classes) {
                crate::metrics::error("refused");
                self.error(reply, &refused(&why)).await?;
            } else {
                // Plain writes (Connector/J's rewritten batches...): each
                // logged as the statement it is, with its own id.
                self.ctx.metrics.request(self.ctx.topology.leader(), self.leader_route());
                let plain = MyClass::Write { uses_last_insert_id: false, returning: false };
                let generated = generate::substitute(sql, &toks, |f| {
                    if f == "UUID" { generate::uuid_literal() } else { generate::uuid_short_literal() }
                });
                let (cmd, text) = match generated {
                    Some(text) => (query_packet(p.seq, &text), text),
                    None => (p.clone(), sql.to_string()),
                };
                let texts: Vec<String> =
                    lex::statement_texts(&text, &lex::tokens(&text, backslash)).into_iter().map(String::from).collect();
                if texts.len() != statements.len() {
                    let e = refused("chorus could not split this query of several statements; send them one at a time");
                    self.error(reply, &e).await?;
                } else {
                    self.logged_write(&cmd, texts, &plain).await?;
                }
            }
            return Ok(true);
        }
        // An INSERT that leaves a column to DEFAULT (UUID()) gets the call
        // written out, to be made a literal below.
        let first = statements.first().map(|s| (*s, classify(s)));
        // An unordered LIMIT gets its table's key order.
        let written_out = match &first {
            Some((s, MyClass::Write { .. })) => self.filled_defaults(sql, s).await?,
            Some((s, MyClass::Refuse(_))) => self.ordered_by_key(sql, s).await?,
            _ => None,
        };
        let (filled, filled_toks);
        let (p, sql, toks, first): (&Packet, &str, &[Token<'_>], _) = match &written_out {
            Some(text) => {
                filled = query_packet(p.seq, text);
                filled_toks = lex::tokens(text, backslash);
                (&filled, text.as_str(), &filled_toks, None)
            }
            None => (p, sql, &toks, first),
        };
        let first = first.or_else(|| {
            let s = toks.split(|t| matches!(t, Token::End(_))).find(|s| !s.is_empty())?;
            Some((s, classify(s)))
        });
        let class = match first {
            Some((s, class)) => self.judged(s, class).await?,
            None => MyClass::Local,
        };
        if matches!(class, MyClass::Write { .. }) {
            let generated = generate::substitute(sql, toks, |f| {
                if f == "UUID" { generate::uuid_literal() } else { generate::uuid_short_literal() }
            });
            if let Some(text) = generated {
                // The leader runs the same literals the followers will.
                let cmd = query_packet(p.seq, &text);
                let toks = lex::tokens(&text, backslash);
                self.run_statement(&cmd, class, text.clone(), &toks).await?;
                return Ok(true);
            }
        }
        self.run_statement(p, class, sql.to_string(), toks).await?;
        Ok(true)
    }

    /// A write's text as the followers replay it: without a default
    /// database (the session dropped it, or never chose one) its
    /// `DATABASE()` / `SCHEMA()` are NULL, what the leader computed; a
    /// follower's applier runs with the database of the entry before.
    async fn database_calls_inlined(&mut self, sql: String) -> Result<String, MySessionError> {
        let b = sql.as_bytes();
        let mentions = b.windows(8).any(|w| w.eq_ignore_ascii_case(b"DATABASE"))
            || b.windows(6).any(|w| w.eq_ignore_ascii_case(b"SCHEMA"));
        if !mentions {
            return Ok(sql);
        }
        let ctx = self.context().await?;
        if ctx.db.is_some() {
            return Ok(sql);
        }
        let toks = lex::tokens(&sql, ctx.backslash_escapes);
        Ok(generate::replace_calls(&sql, &toks, &["DATABASE", "SCHEMA"], |_| "NULL".into()).unwrap_or(sql))
    }

    /// `sql` (one INSERT, tokens `toks`) with the generated defaults of the
    /// columns it leaves out written out (`sql::mysql::defaults`), if any.
    /// An UPDATE / DELETE with LIMIT and no ORDER BY, ordered by its
    /// table's primary key (`sql::mysql::order`); None when it is not one,
    /// or its table has no primary key (it stays refused).
    async fn ordered_by_key(&mut self, sql: &str, toks: &[Token<'_>]) -> Result<Option<String>, MySessionError> {
        let Some((table, at)) = order::unordered_limit(sql, toks) else { return Ok(None) };
        let db = self.context().await?.db;
        let Some(key) = table.key(db.as_deref()).filter(|k| !self.log.temps.contains(k)) else { return Ok(None) };
        let mut facts = self.ctx.catalog.facts().await;
        if !facts.primary_keys.contains_key(&key) {
            // Created since chorus last read the catalog, maybe.
            self.ctx.catalog.recheck_missing();
            facts = self.ctx.catalog.facts().await;
        }
        Ok(facts.primary_keys.get(&key).map(|columns| order::with_order(sql, at, columns)))
    }

    async fn filled_defaults(&mut self, sql: &str, toks: &[Token<'_>]) -> Result<Option<String>, MySessionError> {
        let facts = self.ctx.catalog.facts().await;
        if facts.volatile_defaults.is_empty() || targets::insert_shape(toks).is_none() {
            return Ok(None);
        }
        let db = self.context().await?.db;
        Ok(defaults::fill_generated_defaults(&facts, sql, toks, db.as_deref()))
    }

    /// `class` as the leader's catalog has it for `toks` (one statement):
    /// refused when a trigger, stored function or DEFAULT that runs with it
    /// would compute other values on a follower; a write when it is a read
    /// that writes through a stored function (`sql::mysql::safety`). Reads
    /// that call nothing skip the look-up.
    async fn judged(&mut self, toks: &[Token<'_>], class: MyClass) -> Result<MyClass, MySessionError> {
        let class = self.temp_class(toks, class).await?;
        let write = matches!(class, MyClass::Write { .. });
        if !write && !matches!(class, MyClass::Read | MyClass::Local | MyClass::Session) {
            return Ok(class);
        }
        // A read that calls no function at all (most) costs no look-up.
        let calls_something =
            toks.windows(2).any(|w| matches!(w, [Token::Word(_) | Token::Quoted(_), Token::Symbol('(')]));
        if !write && !calls_something {
            return Ok(class);
        }
        let call = matches!(toks.first(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("CALL"));
        let mut facts = self.ctx.catalog.facts().await;
        if !write && facts.routines.is_empty() {
            return Ok(class);
        }
        let calls = targets::calls(toks);
        if call {
            // Its affected rows are its last statement's: whatever it wrote
            // before that must reach the followers too.
            self.log.log_unchanged = true;
            if !facts.may_call_routine(&calls) {
                // Made since chorus last read the catalog (or does not exist,
                // which the server will say): read it again before judging.
                self.ctx.catalog.invalidate();
                facts = self.ctx.catalog.facts().await;
            }
        }
        if facts.is_empty() || !write && !facts.may_call_routine(&calls) {
            return Ok(class);
        }
        let db = self.context().await?.db;
        if write && safety::fires_writing_triggers(&facts, toks, db.as_deref()) {
            self.log.log_unchanged = true;
        }
        Ok(match safety::judge(&facts, toks, &class, db.as_deref()) {
            Verdict::Fine => class,
            Verdict::Refuse(why) => MyClass::Refuse(why),
            Verdict::LoggedRead => MyClass::Write { uses_last_insert_id: false, returning: true },
        })
    }

    /// Run a statement of `class` (`cmd` as the client sent it, `sql` as it is logged).
    async fn run_statement(
        &mut self,
        cmd: &Packet,
        class: MyClass,
        sql: String,
        toks: &[Token<'_>],
    ) -> Result<(), MySessionError> {
        let reply = cmd.seq.wrapping_add(1);
        if !matches!(class, MyClass::Read | MyClass::Refuse(_)) {
            self.ctx.metrics.request(self.ctx.topology.leader(), self.leader_route());
        }
        match class {
            MyClass::Read => self.read(cmd, toks).await?,
            MyClass::Write { .. } => {
                let sql = self.database_calls_inlined(sql).await?;
                self.logged_write(cmd, vec![sql], &class).await?
            }
            MyClass::Ddl => self.logged_write(cmd, vec![sql], &class).await?,
            MyClass::Commit => self.commit(cmd).await?,
            MyClass::Rollback => {
                self.relay(cmd, Expect::ResultSets).await?;
                self.rolled_back();
            }
            MyClass::Savepoint(name) => {
                if !self.relay(cmd, Expect::ResultSets).await?.error {
                    self.log.savepoint(&name);
                }
            }
            MyClass::RollbackTo(name) => {
                if !self.relay(cmd, Expect::ResultSets).await?.error {
                    self.log.rollback_to(&name);
                }
            }
            MyClass::Release(name) => {
                if !self.relay(cmd, Expect::ResultSets).await?.error {
                    self.log.release(&name);
                }
            }
            MyClass::Begin | MyClass::Local | MyClass::Session => {
                // Some commit the open transaction implicitly (BEGIN, LOCK
                // TABLES, SET autocommit = 1, ANALYZE TABLE...): what it logged
                // so far goes into the log inside it first. Others (DO, SET
                // TRANSACTION...) leave it open: logging at them would hold
                // the log's lock to the end of the transaction.
                let commits = may_commit_implicitly(&class, toks);
                self.unpin_timestamp().await?;
                if commits && !self.before_implicit_commit(cmd).await? {
                    return Ok(());
                }
                let answer = self.relay(cmd, Expect::ResultSets).await?;
                self.log.note_isolation(toks);
                if !answer.error {
                    self.log.note_table_locks(&class, toks);
                    self.temp_changed(toks).await?;
                }
                if class == MyClass::Session {
                    self.log.session_changed(toks);
                    if !answer.error {
                        self.reads.session_statement(sql.clone());
                    }
                }
                if commits && self.status & crate::protocol::mysql::consts::status::IN_TRANS == 0
                    || class == MyClass::Begin
                {
                    self.after_commit();
                }
                let _ = answer;
            }
            MyClass::Refuse(why) => {
                crate::metrics::error("refused");
                let malformed = if crate::sql::mysql::classify::refused_as_unknown(&why) {
                    self.parse_error(&sql).await?
                } else {
                    None
                };
                self.error(reply, &malformed.unwrap_or_else(|| refused(&why))).await?
            }
        }
        Ok(())
    }

    /// The leader's error for `sql` if it does not even parse (a typo): a
    /// COM_STMT_PREPARE parses without running anything. None when it
    /// parses, or cannot be prepared at all.
    pub(super) async fn parse_error(&mut self, sql: &str) -> Result<Option<MyError>, MySessionError> {
        /// ER_UNSUPPORTED_PS: valid, but not in the prepared-statement protocol.
        const UNSUPPORTED_PS: u16 = 1295;
        let mut payload = vec![crate::protocol::mysql::consts::com::STMT_PREPARE];
        payload.extend_from_slice(sql.as_bytes());
        self.leader.send(0, &payload).await?;
        let held = self.read_held(Expect::Prepare).await?;
        if let Some(ok) = held.response.prepared {
            let mut close = vec![crate::protocol::mysql::consts::com::STMT_CLOSE];
            close.extend_from_slice(&ok.statement_id.to_le_bytes());
            self.leader.send(0, &close).await?;
            return Ok(None);
        }
        let error = held.packets.first().and_then(|p| MyError::parse(&p.payload));
        Ok(error.filter(|e| e.code != UNSUPPORTED_PS))
    }

    /// COM_STMT_PREPARE: refused statements never reach the server.
    pub(super) async fn prepare(&mut self, p: &Packet) -> Result<(), MySessionError> {
        let reply = p.seq.wrapping_add(1);
        let Ok(sql) = std::str::from_utf8(&p.payload[1..]) else {
            self.error(reply, &not_utf8()).await?;
            return Ok(());
        };
        let backslash = self.backslash_escapes(sql.as_bytes()).await?;
        let toks = lex::tokens(sql, backslash);
        let mut class = classify(&toks);
        // An unordered LIMIT gets its table's key order: executed as text.
        let ordered = match class {
            MyClass::Refuse(_) => self.ordered_by_key(sql, &toks).await?,
            _ => None,
        };
        let ordered_toks = ordered.as_deref().map(|text| lex::tokens(text, backslash));
        if let Some(t) = &ordered_toks {
            class = classify(t);
        }
        let generates = generate::substitute(sql, &toks, |_| String::new()).is_some();
        // A write that generates values chorus must make literals (UUID(),
        // an omitted DEFAULT (UUID())) runs as text, its parameters inlined
        // (see `execute`); with RETURNING it could not (its rows would come
        // back in the text protocol's format).
        let filled = match class {
            MyClass::Write { returning: false, .. } => self.filled_defaults(sql, &toks).await?,
            _ => None,
        };
        let as_text = matches!(class, MyClass::Write { returning: false, .. })
            && (generates || filled.is_some() || ordered.is_some());
        if ordered.is_some() && !as_text {
            // The leader would run the prepared text, unordered.
            class = MyClass::Refuse(
                "LIMIT without ORDER BY in a prepared statement with RETURNING picks rows in an order the servers \
                 need not share; add an ORDER BY on a unique key"
                    .into(),
            );
        }
        if generates && !as_text {
            class = MyClass::Refuse(
                "UUID() / UUID_SHORT() in a prepared statement with RETURNING give another value on every \
                 server; generate the value in the application and pass it as a parameter"
                    .into(),
            );
        }
        let class = match (&filled, &ordered_toks) {
            (Some(text), _) => {
                let toks = lex::tokens(text, backslash);
                self.judged(&toks, classify(&toks)).await?
            }
            (None, Some(ordered)) => self.judged(ordered, class).await?,
            (None, None) => self.judged(&toks, class).await?,
        };
        let class = if crate::sql::mysql::temp::change(&toks).is_some() {
            MyClass::Refuse("send CREATE / DROP of a temporary table as a query, not a prepared statement".into())
        } else {
            class
        };
        if let MyClass::Refuse(why) = &class {
            self.error(reply, &refused(why)).await?;
            return Ok(());
        }
        // Executed later, maybe more than once: note it now.
        self.log.note_isolation(&toks);
        let placeholders = lex::placeholders(&toks);
        let answer = self.relay(p, Expect::Prepare).await?;
        if let Some(ok) = answer.prepared {
            let mut stmt = Prepared::new(sql.to_string(), class, placeholders, ok.params);
            stmt.as_text = as_text;
            if stmt.class == MyClass::Read && super::reads::follower_safe(&toks) {
                stmt.follower_ok = true;
                stmt.tables = super::reads::tables(&toks);
            }
            self.prepared.insert(ok.statement_id, stmt);
        }
        Ok(())
    }

    /// COM_STMT_EXECUTE.
    pub(super) async fn execute(&mut self, p: &Packet) -> Result<(), MySessionError> {
        let reply = p.seq.wrapping_add(1);
        let id = Reader::new(&p.payload[1..]).u32("statement id").unwrap_or(0);
        let Some(stmt) = self.prepared.get(&id) else {
            // Unknown to chorus: the server answers (Unknown prepared statement handler).
            self.relay(p, Expect::ResultSets).await?;
            return Ok(());
        };
        let class = stmt.class.clone();
        match class {
            MyClass::Write { .. } | MyClass::Ddl => {
                let charset = self.context().await?.charset;
                let stmt = self.prepared.get_mut(&id).expect("looked up above");
                let as_text = stmt.as_text;
                let sql = match stmt.inline(&p.payload, &charset) {
                    Ok(sql) => sql,
                    Err(e) => {
                        let e = MyError::new(code::NET_READ, format!("malformed COM_STMT_EXECUTE: {e}"));
                        self.error(reply, &e).await?;
                        return Ok(());
                    }
                };
                if as_text {
                    return self.execute_as_text(p.seq, class, sql).await;
                }
                self.run_statement(p, class, sql, &[]).await
            }
            MyClass::Read => self.read_prepared(p, id).await,
            _ => {
                // Transaction control, SET, and statements such as ANALYZE
                // TABLE or DO: as in a COM_QUERY (some commit implicitly).
                let sql = stmt.sql.clone();
                if let Some(s) = self.prepared.get_mut(&id) {
                    s.reset();
                }
                let toks = lex::tokens(&sql, self.backslash_escapes(sql.as_bytes()).await?);
                let class = if class == MyClass::Local
                    && !matches!(self.temp_class(&toks, classify(&toks)).await?, MyClass::Local)
                {
                    // Prepared as a write of temporary tables only, which
                    // are gone now: the name may be a regular table's.
                    MyClass::Refuse(
                        "this prepared statement was a write of temporary tables that no longer exist; prepare it again".into(),
                    )
                } else {
                    class
                };
                self.run_statement(p, class, sql.clone(), &toks).await
            }
        }
    }

    /// A prepared write that generates values (see `prepare`), executed as
    /// the text `sql` (its parameters inlined) with the generated values
    /// made literals, so the leader stores what the followers will: its OK
    /// packet is the same in both protocols.
    async fn execute_as_text(&mut self, seq: u8, class: MyClass, sql: String) -> Result<(), MySessionError> {
        let backslash = self.backslash_escapes(sql.as_bytes()).await?;
        let sql = self.ordered_by_key(&sql, &lex::tokens(&sql, backslash)).await?.unwrap_or(sql);
        let filled = self.filled_defaults(&sql, &lex::tokens(&sql, backslash)).await?.unwrap_or(sql);
        let text = generate::substitute(&filled, &lex::tokens(&filled, backslash), |f| {
            if f == "UUID" { generate::uuid_literal() } else { generate::uuid_short_literal() }
        })
        .unwrap_or(filled);
        let cmd = query_packet(seq, &text);
        let toks = lex::tokens(&text, backslash);
        self.run_statement(&cmd, class, text.clone(), &toks).await
    }

    /// COM_STMT_SEND_LONG_DATA (no answer comes).
    pub(super) async fn long_data(&mut self, p: &Packet) -> Result<(), MySessionError> {
        let mut r = Reader::new(&p.payload[1..]);
        if let (Ok(id), Ok(param)) = (r.u32("statement id"), r.u16("parameter"))
            && let Some(stmt) = self.prepared.get_mut(&id)
        {
            stmt.long_data(param, r.rest());
        }
        self.leader.send(0, &p.payload).await?;
        Ok(())
    }
}

/// One statement, a write that generates no UUID() chorus must replace:
/// what can be logged as the client's own bytes.
fn single_plain_write(toks: &[Token<'_>]) -> bool {
    let statements: Vec<&[Token<'_>]> = toks.split(|t| matches!(t, Token::End(_))).filter(|s| !s.is_empty()).collect();
    let uses_uuid = toks.iter().enumerate().any(|(i, t)| {
        matches!(t, Token::Word(w) if w.eq_ignore_ascii_case("UUID") || w.eq_ignore_ascii_case("UUID_SHORT"))
            && toks.get(i + 1) == Some(&Token::Symbol('('))
    });
    statements.len() == 1 && !uses_uuid && matches!(classify(statements[0]), MyClass::Write { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_count_calls_become_the_value_they_had() {
        let sql = "SELECT LAST_INSERT_ID(), row_count( ) FROM dual";
        let toks = lex::tokens(sql, true);
        assert_eq!(
            row_count_inlined(sql, &toks, 2).as_deref(),
            Some("SELECT LAST_INSERT_ID(), 2 AS `ROW_COUNT()` FROM dual")
        );
        let sql = "SELECT ROW_COUNT() + 1";
        assert_eq!(row_count_inlined(sql, &lex::tokens(sql, true), 3).as_deref(), Some("SELECT (3) + 1"));
        let sql = "SELECT 'ROW_COUNT()'";
        assert_eq!(row_count_inlined(sql, &lex::tokens(sql, true), 3), None);
    }
}
