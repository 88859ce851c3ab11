//! What a MySQL statement means for chorus, pure: does it change data (and
//! so belong in the log), change the session, bound a transaction, or is it
//! something chorus must refuse because replaying it could not give the
//! leader's result.

use super::lex::Token;

/// A statement's class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MyClass {
    /// Reads only.
    Read,
    /// Runs on the leader and changes no replicated data (FLUSH, LOCK
    /// TABLES, ANALYZE TABLE, DO, SQL-level EXECUTE of a read...).
    Local,
    /// Changes the session's context (SET, USE): later writes log it.
    Session,
    Begin,
    Commit,
    Rollback,
    Savepoint(String),
    RollbackTo(String),
    Release(String),
    /// Changes data (INSERT, REPLACE, UPDATE, DELETE): logged with its context.
    Write {
        /// Calls LAST_INSERT_ID() without an argument: the session's value
        /// goes into the log.
        uses_last_insert_id: bool,
        /// MariaDB's `... RETURNING`: answered with a result set, no OK
        /// packet (and so no AUTO_INCREMENT id to read off it).
        returning: bool,
    },
    /// Changes schema or accounts; MySQL commits implicitly around it.
    Ddl,
    /// Not run: replaying it could not reproduce the leader's result (or
    /// chorus cannot tell whether it changes data). Says why and what to do.
    Refuse(String),
}

/// How the reason for refusing a statement chorus does not know begins.
const UNKNOWN: &str = "chorus does not know";

/// Was a statement refused for `why` only because chorus does not know it
/// (it may well be malformed, which the server can tell)?
pub fn refused_as_unknown(why: &str) -> bool {
    why.starts_with(UNKNOWN)
}

fn upper(t: &Token<'_>) -> Option<String> {
    match t {
        Token::Word(w) => Some(w.to_ascii_uppercase()),
        _ => None,
    }
}

fn is_word(t: Option<&Token<'_>>, w: &str) -> bool {
    matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w))
}

fn name(t: Option<&Token<'_>>) -> String {
    match t {
        Some(Token::Word(w)) => w.to_string(),
        Some(Token::Quoted(q)) => super::lex::quoted_name(q),
        _ => String::new(),
    }
}

fn refuse(why: impl Into<String>) -> MyClass {
    MyClass::Refuse(why.into())
}

/// Functions whose value differs per server or per session, with what to do instead.
const NONDETERMINISTIC: &[(&str, &str)] = &[
    ("UUID", "generate the UUID in the application and send it as a literal"),
    ("UUID_SHORT", "generate the value in the application and send it as a literal"),
    ("SYS_GUID", "generate the value in the application and send it as a literal"),
    ("RANDOM_BYTES", "generate the bytes in the application and send them as a literal"),
    ("SYSDATE", "use NOW(), which chorus makes the same on every server"),
    ("CONNECTION_ID", "send the value as a literal"),
    ("USER", "send the user name as a literal"),
    ("CURRENT_USER", "send the user name as a literal"),
    ("SESSION_USER", "send the user name as a literal"),
    ("SYSTEM_USER", "send the user name as a literal"),
    ("CURRENT_ROLE", "send the role as a literal"),
    ("LOAD_FILE", "read the file in the application and send its content as a literal"),
    ("FOUND_ROWS", "send the count as a literal"),
    ("ROW_COUNT", "send the count as a literal"),
    ("VERSION", "send the value as a literal"),
    ("GET_LOCK", "take the lock in a statement of its own"),
    ("RELEASE_LOCK", "release the lock in a statement of its own"),
    ("RELEASE_ALL_LOCKS", "release the locks in a statement of its own"),
    ("IS_FREE_LOCK", "check the lock in a statement of its own"),
    ("IS_USED_LOCK", "check the lock in a statement of its own"),
    ("SLEEP", "sleep in a statement of its own"),
    ("BENCHMARK", "run it in a statement of its own"),
    ("MASTER_POS_WAIT", "run it in a statement of its own"),
    ("MASTER_GTID_WAIT", "run it in a statement of its own"),
    ("NEXTVAL", "MariaDB sequences are not replicated yet: use AUTO_INCREMENT"),
    ("LASTVAL", "MariaDB sequences are not replicated yet: use AUTO_INCREMENT"),
    ("SETVAL", "MariaDB sequences are not replicated yet: use AUTO_INCREMENT"),
];

/// Why a data-changing statement cannot be replayed as it is, if it cannot.
/// `user_vars_ok`: chorus logs the values of the user variables it reads
/// (a DML statement's; not DDL's, which is logged apart from the session).
fn write_problem(toks: &[Token<'_>], user_vars_ok: bool) -> Option<String> {
    // In a VALUES list chorus gives each UUID() a literal of its own.
    nondeterminism(toks, super::generate::values_only(toks), user_vars_ok)
}

/// Why running `toks` again on a follower may compute other values: a
/// function from [`NONDETERMINISTIC`] (UUID() and UUID_SHORT() not, when
/// `generated_ok`: chorus replaces them), a system or user variable, a
/// sequence, LIMIT without ORDER BY. Also judges the bodies of triggers and
/// stored functions (`routine`), statement by statement. User variables are
/// fine when `user_vars_ok` (chorus logs their values, see
/// [`super::uservars`]).
pub(crate) fn nondeterminism(toks: &[Token<'_>], generated_ok: bool, user_vars_ok: bool) -> Option<String> {
    for (i, t) in toks.iter().enumerate() {
        match t {
            Token::Word(w) => {
                let call = matches!(toks.get(i + 1), Some(Token::Symbol('(')));
                let u = w.to_ascii_uppercase();
                let bare_user = matches!(u.as_str(), "CURRENT_USER" | "CURRENT_ROLE");
                if call || bare_user {
                    // `x.f(` is a qualified call of another function.
                    let qualified = i > 0 && matches!(toks[i - 1], Token::Symbol('.'));
                    let fixed = generated_ok && super::generate::GENERATED.contains(&u.as_str());
                    if !qualified
                        && !fixed
                        && let Some((f, what)) = NONDETERMINISTIC.iter().find(|(f, _)| *f == u)
                    {
                        return Some(format!("{f}() gives another value on every server; {what}"));
                    }
                }
                if (u == "NEXT" || u == "PREVIOUS")
                    && is_word(toks.get(i + 1), "VALUE")
                    && is_word(toks.get(i + 2), "FOR")
                {
                    return Some("MariaDB sequences are not replicated yet: use AUTO_INCREMENT".into());
                }
            }
            Token::Variable(v) if v.starts_with("@@") => {
                return Some(format!(
                    "{v} in a data-changing statement may differ on the followers; send its value as a literal"
                ));
            }
            Token::Variable(v) if !user_vars_ok => {
                return Some(format!(
                    "the user variable {v} is not replicated here; send its value as a literal or a parameter"
                ));
            }
            _ => {}
        }
    }
    // LIMIT without ORDER BY (outside parentheses) picks rows in an order the
    // servers need not share.
    let mut depth = 0i32;
    let (mut order, mut limit) = (false, false);
    for (i, t) in toks.iter().enumerate() {
        match t {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => depth -= 1,
            Token::Word(w) if depth == 0 && w.eq_ignore_ascii_case("ORDER") && is_word(toks.get(i + 1), "BY") => {
                order = true
            }
            Token::Word(w) if depth == 0 && w.eq_ignore_ascii_case("LIMIT") => limit = true,
            _ => {}
        }
    }
    if limit && !order {
        return Some(
            "LIMIT without ORDER BY picks rows in an order the servers need not share; add an ORDER BY on a unique key"
                .into(),
        );
    }
    None
}

fn uses_last_insert_id(toks: &[Token<'_>]) -> bool {
    toks.windows(3).any(|w| {
        matches!(w, [Token::Word(f), Token::Symbol('('), Token::Symbol(')')] if f.eq_ignore_ascii_case("LAST_INSERT_ID"))
    })
}

/// A `RETURNING` clause: the word outside parentheses (inside them it could
/// be a column of that name in a subquery... or a string's word, which the
/// lexer does not make a word).
fn returning(toks: &[Token<'_>]) -> bool {
    let mut depth = 0i32;
    toks.iter().any(|t| match t {
        Token::Symbol('(') => {
            depth += 1;
            false
        }
        Token::Symbol(')') => {
            depth -= 1;
            false
        }
        Token::Word(w) => depth == 0 && w.eq_ignore_ascii_case("RETURNING"),
        _ => false,
    })
}

/// `LOAD DATA | XML [LOW_PRIORITY | CONCURRENT] [LOCAL] INFILE ...`: with
/// LOCAL the client sends the file through chorus, which logs its content
/// with the statement (a follower replays the statement with that data); a
/// file on the leader's own disk the followers do not have.
fn load(toks: &[Token<'_>]) -> MyClass {
    if is_word(toks.get(1), "INDEX") {
        return MyClass::Local; // LOAD INDEX INTO CACHE: MyISAM's key cache
    }
    let infile = toks.iter().take(6).position(|t| is_word(Some(t), "INFILE"));
    let local = infile.is_some_and(|i| toks[..i].iter().any(|t| is_word(Some(t), "LOCAL")));
    if !local {
        return refuse(
            "LOAD DATA INFILE reads a file on the leader's own disk, which the followers do not have; use LOAD \
             DATA LOCAL INFILE (the client sends the file, and chorus logs its content with the statement)",
        );
    }
    write(toks)
}

fn write(toks: &[Token<'_>]) -> MyClass {
    match write_problem(toks, true) {
        Some(why) => MyClass::Refuse(why),
        None => {
            let (uses_last_insert_id, returning) = (uses_last_insert_id(toks), returning(toks));
            if uses_last_insert_id && returning {
                // chorus learns the ids RETURNING generated by clearing
                // LAST_INSERT_ID() before it, which this would then read.
                return refuse(
                    "a write with RETURNING that calls LAST_INSERT_ID() is not replicated; read LAST_INSERT_ID() \
                     first and pass its value as a literal or parameter",
                );
            }
            MyClass::Write { uses_last_insert_id, returning }
        }
    }
}

/// Why a query of several statements that writes cannot be replicated, if it
/// cannot: chorus logs one made only of plain writes (each with its own
/// AUTO_INCREMENT id, all at one pinned time), so not one that mixes in
/// other statements, calls LAST_INSERT_ID() or uses RETURNING, or calls
/// RAND() after its first statement (the followers reseed before each).
pub fn multi_write_problem(statements: &[&[Token<'_>]], classes: &[MyClass]) -> Option<String> {
    if let Some(MyClass::Refuse(why)) = classes.iter().find(|c| matches!(c, MyClass::Refuse(_))) {
        return Some(why.clone());
    }
    let plain = MyClass::Write { uses_last_insert_id: false, returning: false };
    let call = statements.iter().any(|s| {
        matches!(s.first(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("CALL") || w.eq_ignore_ascii_case("LOAD"))
    });
    if call || classes.iter().any(|c| *c != plain) {
        return Some(
            "a query of several statements that writes is replicated only when every statement is an INSERT, \
             REPLACE, UPDATE or DELETE without RETURNING or LAST_INSERT_ID(); send its statements one at a time"
                .into(),
        );
    }
    // chorus logs the values of the user variables a statement reads as they
    // were before it ran; in one query, a later statement may read what an
    // earlier one left (even one that changed no row and is not logged).
    if statements.iter().any(|toks| !super::uservars::names(toks).is_empty()) {
        return Some(
            "user variables in a query of several statements that writes are not replicated; send its \
             statements one at a time"
                .into(),
        );
    }
    let rand_later = statements.iter().skip(1).any(|toks| {
        toks.windows(2).any(|w| matches!(w, [Token::Word(f), Token::Symbol('(')] if f.eq_ignore_ascii_case("RAND")))
    });
    rand_later.then(|| {
        "RAND() after the first statement of a query of several statements is not replicated; send that \
         statement on its own"
            .into()
    })
}

/// An isolation level weaker than REPEATABLE READ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeakIsolation {
    ReadCommitted,
    ReadUncommitted,
}

impl WeakIsolation {
    /// The level as the server names it in `@@tx_isolation`.
    pub fn from_variable(value: &str) -> Option<WeakIsolation> {
        let v: String = value.chars().filter(|c| c.is_ascii_alphabetic()).collect();
        if v.eq_ignore_ascii_case("READCOMMITTED") {
            Some(WeakIsolation::ReadCommitted)
        } else if v.eq_ignore_ascii_case("READUNCOMMITTED") {
            Some(WeakIsolation::ReadUncommitted)
        } else {
            None
        }
    }
}

/// Does this SET choose READ COMMITTED or READ UNCOMMITTED, for the
/// session, the next transaction or the server (`SET [GLOBAL | SESSION]
/// TRANSACTION ISOLATION LEVEL READ ...`, `SET tx_isolation = 'READ-...'`,
/// `transaction_isolation`, `@@...` forms, or the enum's number 0 / 1)?
/// The weakest level it names.
pub fn sets_weak_isolation(toks: &[Token<'_>]) -> Option<WeakIsolation> {
    if !is_word(toks.first(), "SET") || is_word(toks.get(1), "STATEMENT") {
        return None;
    }
    let mut found = Vec::new();
    for (i, w) in toks.windows(2).enumerate() {
        if is_word(w.first(), "ISOLATION") && is_word(w.get(1), "LEVEL") && is_word(toks.get(i + 2), "READ") {
            if is_word(toks.get(i + 3), "COMMITTED") {
                found.push(WeakIsolation::ReadCommitted);
            } else if is_word(toks.get(i + 3), "UNCOMMITTED") {
                found.push(WeakIsolation::ReadUncommitted);
            }
        }
    }
    for (i, t) in toks.iter().enumerate() {
        let name = match t {
            Token::Word(w) => w.to_ascii_lowercase(),
            Token::Variable(v) => v.trim_start_matches('@').rsplit('.').next().unwrap_or("").to_ascii_lowercase(),
            _ => continue,
        };
        if name != "tx_isolation" && name != "transaction_isolation" {
            continue;
        }
        let value = toks[i + 1..].iter().find(|t| !matches!(t, Token::Symbol('=' | ':')));
        let level = match value {
            Some(Token::Str(s)) if s.len() >= 2 => WeakIsolation::from_variable(&s[1..s.len() - 1]),
            Some(Token::Number("0")) => Some(WeakIsolation::ReadUncommitted),
            Some(Token::Number("1")) => Some(WeakIsolation::ReadCommitted),
            _ => None,
        };
        found.extend(level);
    }
    found.iter().copied().max_by_key(|l| *l == WeakIsolation::ReadUncommitted)
}

/// Classify one statement (its tokens, without the `;`).
pub fn classify(toks: &[Token<'_>]) -> MyClass {
    let Some(first) = toks.first() else { return MyClass::Local };
    if *first == Token::Symbol('(') {
        return MyClass::Read;
    }
    let Some(verb) = upper(first) else { return refuse(format!("{UNKNOWN} what this statement does; it was not run")) };
    let second = toks.get(1).and_then(upper).unwrap_or_default();
    match verb.as_str() {
        "SELECT" | "TABLE" | "VALUES" => {
            if let Some(why) = write_problem_for_select(toks) {
                return MyClass::Refuse(why);
            }
            let into_file = toks
                .windows(2)
                .any(|w| is_word(w.first(), "INTO") && (is_word(w.get(1), "OUTFILE") || is_word(w.get(1), "DUMPFILE")));
            if into_file { MyClass::Local } else { MyClass::Read }
        }
        "WITH" => {
            // The statement the CTEs serve: the first verb outside parentheses after them.
            let mut depth = 0i32;
            for t in &toks[1..] {
                match t {
                    Token::Symbol('(') => depth += 1,
                    Token::Symbol(')') => depth -= 1,
                    Token::Word(w) if depth == 0 => match w.to_ascii_uppercase().as_str() {
                        "SELECT" => return classify_select_like(toks),
                        "UPDATE" | "DELETE" | "INSERT" | "REPLACE" => return write(toks),
                        _ => {}
                    },
                    _ => {}
                }
            }
            MyClass::Read
        }
        "SHOW" | "DESCRIBE" | "DESC" | "EXPLAIN" | "HELP" => MyClass::Read,
        "USE" => MyClass::Session,
        "SET" if sets_weak_isolation(toks) == Some(WeakIsolation::ReadUncommitted) => refuse(
            "READ UNCOMMITTED is not replicated: a write there can use rows another transaction has not \
             committed (and may roll back), which no replay can reproduce; use READ COMMITTED or a stronger level",
        ),
        "SET" => match second.as_str() {
            "GLOBAL" | "PERSIST" | "PERSIST_ONLY" => MyClass::Local,
            "PASSWORD" | "ROLE" | "DEFAULT" => MyClass::Ddl,
            "TRANSACTION" => MyClass::Local,
            "STATEMENT" => {
                let inner = toks.iter().position(|t| is_word(Some(t), "FOR")).map(|i| classify(&toks[i + 1..]));
                match inner {
                    Some(MyClass::Read) => MyClass::Read,
                    Some(MyClass::Local) => MyClass::Local,
                    _ => refuse(
                        "SET STATEMENT ... FOR is replicated only for reads; SET the variable, then run the statement",
                    ),
                }
            }
            _ => MyClass::Session,
        },
        "BEGIN" if second == "NOT" => refuse("compound statements (BEGIN NOT ATOMIC) are not replicated yet"),
        "BEGIN" => MyClass::Begin,
        "START" if second == "TRANSACTION" => MyClass::Begin,
        "COMMIT" => MyClass::Commit,
        "ROLLBACK" => {
            let to = toks.iter().position(|t| is_word(Some(t), "TO"));
            match to {
                Some(i) => {
                    let at = if is_word(toks.get(i + 1), "SAVEPOINT") { i + 2 } else { i + 1 };
                    MyClass::RollbackTo(name(toks.get(at)))
                }
                None => MyClass::Rollback,
            }
        }
        "SAVEPOINT" => MyClass::Savepoint(name(toks.get(1))),
        "RELEASE" if second == "SAVEPOINT" => MyClass::Release(name(toks.get(2))),
        "XA" => refuse("XA (two-phase) transactions are not replicated; use plain transactions"),
        "INSERT" | "REPLACE" | "UPDATE" | "DELETE" => write(toks),
        "LOAD" => load(toks),
        // The procedure's body is judged by the leader's catalog (`safety`).
        "CALL" => write(toks),
        "HANDLER" => MyClass::Local,
        "DO" => MyClass::Local,
        "CREATE" | "ALTER" | "DROP" | "RENAME" | "TRUNCATE" | "GRANT" | "REVOKE" => ddl(toks, &verb),
        "ANALYZE" => match second.as_str() {
            "TABLE" | "NO_WRITE_TO_BINLOG" | "LOCAL" => MyClass::Local,
            // MariaDB's ANALYZE <statement> runs the statement.
            _ => classify(&toks[1..]),
        },
        "OPTIMIZE" | "CHECK" | "CHECKSUM" | "REPAIR" | "FLUSH" | "LOCK" | "UNLOCK" | "GET" | "SIGNAL" | "RESIGNAL"
        | "EXECUTE" | "DEALLOCATE" | "INSTALL" | "UNINSTALL" | "CACHE" | "PURGE" | "RESET" => MyClass::Local,
        "PREPARE" => {
            // PREPARE s FROM '<text>': the text's class decides.
            let text = toks.iter().find_map(|t| match t {
                Token::Str(s) => Some(s),
                _ => None,
            });
            match text {
                Some(s) if s.len() >= 2 => {
                    let inner = &s[1..s.len() - 1];
                    match classify(&super::lex::tokens(inner, true)) {
                        MyClass::Read | MyClass::Local => MyClass::Local,
                        _ => refuse(
                            "SQL-level PREPARE of a data-changing statement is not replicated; use the protocol's prepared statements",
                        ),
                    }
                }
                _ => refuse("PREPARE ... FROM @variable is not replicated; use the protocol's prepared statements"),
            }
        }
        "SHUTDOWN" | "BINLOG" | "CHANGE" | "STOP" | "KILL" => {
            refuse(format!("{verb} is not available through chorus; connect to the server directly"))
        }
        "START" => refuse(format!("START {second} is not available through chorus; connect to the server directly")),
        _ => refuse(format!("{UNKNOWN} whether {verb} changes data, so it was not run")),
    }
}

/// May a statement of this class (not a write, not DDL) commit the open
/// transaction implicitly, as MySQL does before BEGIN, LOCK TABLES, FLUSH,
/// ANALYZE TABLE, SET autocommit = 1...? Then chorus must log what the
/// transaction wrote before it runs. When in doubt, yes: logging early only
/// holds the log's lock longer (and can make a deadlock the server alone
/// would not have), while a commit without the log entry loses the
/// transaction's writes for the followers. The statements known to commit
/// nothing are no.
pub fn may_commit_implicitly(class: &MyClass, toks: &[Token<'_>]) -> bool {
    match class {
        MyClass::Begin => true,
        // SET autocommit = 1 (or @@autocommit, @@session.autocommit) commits;
        // chorus does not evaluate the value.
        MyClass::Session => toks.iter().any(|t| match t {
            Token::Word(w) => w.eq_ignore_ascii_case("autocommit"),
            Token::Variable(v) => {
                let v = v.to_ascii_lowercase();
                v == "@@autocommit" || v.ends_with(".autocommit")
            }
            _ => false,
        }),
        MyClass::Local => {
            let verb = toks.first().and_then(upper).unwrap_or_default();
            match verb.as_str() {
                // SET STATEMENT ... FOR <statement>: that statement decides.
                "SET" if is_word(toks.get(1), "STATEMENT") => match toks.iter().position(|t| is_word(Some(t), "FOR")) {
                    Some(i) => may_commit_implicitly(&classify(&toks[i + 1..]), &toks[i + 1..]),
                    None => true,
                },
                // SET GLOBAL / PERSIST / TRANSACTION, DO, HANDLER, SQL-level
                // PREPARE and DEALLOCATE, diagnostics, CHECKSUM TABLE, SELECT
                // ... INTO OUTFILE. (Not EXECUTE: what it runs may commit.)
                "SET" | "DO" | "HANDLER" | "PREPARE" | "DEALLOCATE" | "GET" | "SIGNAL" | "RESIGNAL" | "CHECKSUM"
                | "SELECT" | "WITH" | "TABLE" | "VALUES" => false,
                // Writes of temporary tables only (`temp`), and CREATE / DROP
                // TEMPORARY TABLE, commit nothing; ALTER of one does.
                "INSERT" | "REPLACE" | "UPDATE" | "DELETE" | "LOAD" => false,
                "CREATE" | "DROP" if toks.iter().take(4).any(|t| is_word(Some(t), "TEMPORARY")) => false,
                _ => true,
            }
        }
        _ => false,
    }
}

fn classify_select_like(toks: &[Token<'_>]) -> MyClass {
    match write_problem_for_select(toks) {
        Some(why) => MyClass::Refuse(why),
        None => MyClass::Read,
    }
}

/// A SELECT that changes state: sequences.
fn write_problem_for_select(toks: &[Token<'_>]) -> Option<String> {
    let changes_sequence = toks.iter().enumerate().any(|(i, t)| match t {
        Token::Word(w) => {
            let u = w.to_ascii_uppercase();
            ((u == "NEXTVAL" || u == "SETVAL") && matches!(toks.get(i + 1), Some(Token::Symbol('('))))
                || (u == "NEXT" && is_word(toks.get(i + 1), "VALUE") && is_word(toks.get(i + 2), "FOR"))
        }
        _ => false,
    });
    changes_sequence.then(|| "MariaDB sequences are not replicated yet: use AUTO_INCREMENT".to_string())
}

fn ddl(toks: &[Token<'_>], verb: &str) -> MyClass {
    let words: Vec<String> = toks.iter().take(6).filter_map(upper).collect();
    let has = |w: &str| words.iter().any(|x| x == w);
    if has("TEMPORARY") {
        // CREATE / DROP TEMPORARY TABLE: the session's own (`temp`), when it
        // says which; this when it does not.
        return refuse("chorus cannot tell which temporary table this statement is about");
    }
    if has("EVENT") {
        return refuse("events run on every server on their own; create them on each server directly");
    }
    // Of the objects CREATE makes, a table (CREATE [OR REPLACE] TABLE): not
    // a view, trigger, routine..., whose SELECTs run later, where they are used.
    let table = verb == "CREATE"
        && words.iter().skip(1).find(|w| !matches!(w.as_str(), "OR" | "REPLACE")).is_some_and(|w| w == "TABLE");
    if table && toks.iter().any(|t| is_word(Some(t), "SELECT")) {
        // CREATE TABLE ... SELECT: its query must replay like a write's.
        if let Some(why) = write_problem(toks, false) {
            return MyClass::Refuse(why);
        }
        // It runs under the DDL fence (`session::mysql::ddl`), which holds
        // the log's lock: it reads exactly what the LSNs before its own
        // committed, as the follower's replay does. (A writer holding rows
        // it reads waits for that lock to commit; the fence's short lock
        // waits break the cycle and try again.) What the order of the rows
        // decides must be decided by an ORDER BY: the ids of an
        // AUTO_INCREMENT column, which duplicate IGNORE / REPLACE keeps.
        let select = toks.iter().position(|t| is_word(Some(t), "SELECT")).unwrap_or(toks.len());
        let order_matters = toks.iter().any(|t| is_word(Some(t), "AUTO_INCREMENT"))
            || toks[..select].iter().enumerate().any(|(i, t)| {
                is_word(Some(t), "IGNORE") || is_word(Some(t), "REPLACE") && !(i > 0 && is_word(toks.get(i - 1), "OR"))
            });
        let ordered = toks[select..].windows(2).any(|w| is_word(w.first(), "ORDER") && is_word(w.get(1), "BY"));
        if order_matters && !ordered {
            return refuse(
                "this CREATE TABLE ... SELECT numbers rows with AUTO_INCREMENT or drops duplicates (IGNORE / \
                 REPLACE) in the order its SELECT finds them, which the servers need not share; add an ORDER BY \
                 on a unique key",
            );
        }
    }
    // ALTER TABLE ... ADD c ... DEFAULT (expr) fills the existing rows with
    // expr, computed by each server: one that differs per server (UUID(),
    // SYSDATE()...) gives every follower other values. (NOW() and RAND()
    // are pinned as in any write.)
    if verb == "ALTER"
        && has("TABLE")
        && toks.iter().any(|t| is_word(Some(t), "ADD"))
        && let Some(why) = nondeterminism(toks, false, false)
    {
        return refuse(format!(
            "ALTER TABLE ... ADD fills the existing rows with a value each server computes anew: {why}; add the \
             column without that DEFAULT, give the rows their values, then set the DEFAULT with ALTER TABLE ... \
             ALTER COLUMN ... SET DEFAULT"
        ));
    }
    MyClass::Ddl
}

#[cfg(test)]
mod tests {
    use super::super::lex::tokens;
    use super::*;

    fn class(sql: &str) -> MyClass {
        classify(&tokens(sql, true))
    }

    #[test]
    fn reads_sessions_and_transactions() {
        assert_eq!(class("SELECT * FROM t WHERE id = 1"), MyClass::Read);
        assert_eq!(class("(SELECT 1) UNION (SELECT 2)"), MyClass::Read);
        assert_eq!(class("show tables"), MyClass::Read);
        assert_eq!(class("WITH c AS (SELECT 1) SELECT * FROM c"), MyClass::Read);
        assert_eq!(class("SELECT * INTO OUTFILE '/tmp/x' FROM t"), MyClass::Local);
        assert_eq!(class("SET NAMES utf8mb4"), MyClass::Session);
        assert_eq!(class("SET @@session.sql_mode = ''"), MyClass::Session);
        assert_eq!(class("SET GLOBAL max_connections = 10"), MyClass::Local);
        assert_eq!(class("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ"), MyClass::Session);
        assert_eq!(class("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"), MyClass::Local);
        assert_eq!(class("SET tx_isolation = 'REPEATABLE-READ'"), MyClass::Session);
        assert_eq!(class("SET TRANSACTION READ ONLY"), MyClass::Local);
        assert_eq!(class("use shop"), MyClass::Session);
        assert_eq!(class("BEGIN"), MyClass::Begin);
        assert_eq!(class("START TRANSACTION WITH CONSISTENT SNAPSHOT"), MyClass::Begin);
        assert_eq!(class("COMMIT WORK"), MyClass::Commit);
        assert_eq!(class("ROLLBACK"), MyClass::Rollback);
        assert_eq!(class("ROLLBACK WORK TO SAVEPOINT s1"), MyClass::RollbackTo("s1".into()));
        assert_eq!(class("ROLLBACK TO `a b`"), MyClass::RollbackTo("a b".into()));
        assert_eq!(class("SAVEPOINT s1"), MyClass::Savepoint("s1".into()));
        assert_eq!(class("RELEASE SAVEPOINT s1"), MyClass::Release("s1".into()));
    }

    #[test]
    fn writes_and_what_makes_them_unsafe() {
        let w = MyClass::Write { uses_last_insert_id: false, returning: false };
        assert_eq!(class("INSERT INTO t (a, b) VALUES (NOW(), RAND())"), w);
        assert_eq!(class("UPDATE t SET k = k + 1 WHERE id = ?"), w);
        assert_eq!(class("DELETE FROM t WHERE id IN (SELECT id FROM u LIMIT 3)"), w, "LIMIT in a subquery");
        assert_eq!(class("DELETE FROM t ORDER BY id LIMIT 10"), w);
        assert_eq!(
            class("INSERT INTO t VALUES (LAST_INSERT_ID())"),
            MyClass::Write { uses_last_insert_id: true, returning: false }
        );
        let returning = MyClass::Write { uses_last_insert_id: false, returning: true };
        assert_eq!(class("INSERT INTO t (v) VALUES (1) RETURNING id"), returning);
        assert_eq!(class("delete from t where id in (select id from u) returning *"), returning);
        assert_eq!(class("REPLACE INTO t VALUES (1) RETURNING id, v"), returning);
        assert_eq!(class("INSERT INTO t VALUES ('RETURNING')"), w);
        assert!(matches!(class("INSERT INTO t VALUES (LAST_INSERT_ID()) RETURNING id"), MyClass::Refuse(_)));
        assert_eq!(class("INSERT INTO t VALUES (LAST_INSERT_ID(5))"), w);
        assert_eq!(class("WITH c AS (SELECT 1) UPDATE t SET a = 1"), w);
        assert_eq!(class("INSERT INTO t VALUES (UUID(), UUID_SHORT())"), w, "chorus makes them literals");
        for unsafe_sql in [
            "INSERT INTO t SELECT UUID() FROM u",
            "UPDATE t SET u = UUID()",
            "UPDATE t SET at = SYSDATE()",
            "INSERT INTO t VALUES (CURRENT_USER)",
            "DELETE FROM t LIMIT 10",
            "CREATE TABLE c AS SELECT @v AS a",
            "UPDATE t SET a = @@hostname",
            "INSERT INTO t VALUES (NEXT VALUE FOR s)",
            "SELECT NEXTVAL(s)",
            "LOAD DATA INFILE 'x' INTO TABLE t",
            "LOAD DATA LOCAL INFILE 'x' INTO TABLE t SET u = UUID()",
            "XA START 'x'",
            "CREATE TEMPORARY TABLE x (a int)",
            "CREATE EVENT e ON SCHEDULE EVERY 1 HOUR DO DELETE FROM t",
            "CREATE TABLE c AS SELECT UUID() AS u",
            "CREATE TABLE c (id INT AUTO_INCREMENT PRIMARY KEY) SELECT v FROM t",
            "CREATE TABLE c (PRIMARY KEY (k)) IGNORE SELECT k, v FROM t",
            "ALTER TABLE t ADD COLUMN u CHAR(36) DEFAULT (UUID())",
            "ALTER ONLINE TABLE t ADD s DATETIME DEFAULT (SYSDATE()), ADD KEY (s)",
            "PREPARE s FROM 'DELETE FROM t'",
            "FROBNICATE t",
            "SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED, READ WRITE",
            "SET @@session.transaction_isolation = 'read-uncommitted'",
            "SET autocommit = 1, @@tx_isolation = 0",
        ] {
            assert!(matches!(class(unsafe_sql), MyClass::Refuse(_)), "{unsafe_sql}: {:?}", class(unsafe_sql));
        }
        assert_eq!(class("LOAD DATA LOCAL INFILE 'x' INTO TABLE t (a, @v) SET b = @v"), w);
        assert_eq!(class("load xml low_priority local infile 'x' into table t"), w);
        // User variables: chorus logs their values.
        assert_eq!(class("UPDATE t SET a = @v"), w);
        assert!(matches!(class("CALL p(@out)"), MyClass::Write { .. }));
        // A qualified function of the same name is not the builtin; a string is not a call.
        assert_eq!(class("INSERT INTO t VALUES (mylib.uuid(), 'UUID()')"), w);
    }

    #[test]
    fn multi_statement_writes() {
        let problem = |sql: &str| {
            let toks = tokens(sql, true);
            let statements: Vec<&[Token<'_>]> =
                toks.split(|t| matches!(t, Token::End(_))).filter(|s| !s.is_empty()).collect();
            let classes: Vec<MyClass> = statements.iter().map(|s| classify(s)).collect();
            multi_write_problem(&statements, &classes)
        };
        assert_eq!(problem("UPDATE t SET a = 1 WHERE id = 1; UPDATE t SET a = 2 WHERE id = 2"), None);
        assert_eq!(
            problem("INSERT INTO t VALUES (RAND()); DELETE FROM t WHERE id = 3; REPLACE INTO t VALUES (4)"),
            None
        );
        for bad in [
            "UPDATE t SET a = 1; SELECT 1",
            "BEGIN; UPDATE t SET a = 1",
            "UPDATE t SET a = 1; CREATE TABLE u (a INT)",
            "INSERT INTO t VALUES (1); INSERT INTO u VALUES (LAST_INSERT_ID())",
            "INSERT INTO t VALUES (1) RETURNING id; DELETE FROM t",
            "DELETE FROM t; UPDATE t SET a = rand()",
            "UPDATE t SET a = 1; DELETE FROM t LIMIT 1",
        ] {
            assert!(problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn weak_isolation_levels() {
        let level = |sql: &str| sets_weak_isolation(&tokens(sql, true));
        for rc in [
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "set transaction isolation level read committed, read write",
            "SET tx_isolation = 'READ-COMMITTED'",
            "SET @@session.transaction_isolation := 'read-committed'",
            "SET autocommit = 1, @@tx_isolation = 1",
        ] {
            assert_eq!(level(rc), Some(WeakIsolation::ReadCommitted), "{rc}");
            assert!(!matches!(class(rc), MyClass::Refuse(_)), "{rc}");
        }
        assert_eq!(
            level("SET TRANSACTION ISOLATION LEVEL READ COMMITTED; SET tx_isolation = 'READ-UNCOMMITTED'"),
            Some(WeakIsolation::ReadUncommitted)
        );
        for strong in [
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "SET tx_isolation = 'SERIALIZABLE'",
            "SET @read_committed = 1",
            "SET STATEMENT tx_isolation = 'READ-COMMITTED' FOR SELECT 1",
            "SELECT 'ISOLATION LEVEL READ COMMITTED'",
        ] {
            assert_eq!(level(strong), None, "{strong}");
        }
        assert_eq!(WeakIsolation::from_variable("READ-COMMITTED"), Some(WeakIsolation::ReadCommitted));
        assert_eq!(WeakIsolation::from_variable("REPEATABLE-READ"), None);
    }

    #[test]
    fn ddl_and_local_statements() {
        for ddl in [
            "CREATE TABLE t (id INT PRIMARY KEY)",
            "alter table t add column x int",
            "DROP TABLE IF EXISTS t",
            "TRUNCATE t",
            "RENAME TABLE a TO b",
            "CREATE INDEX i ON t (x)",
            "CREATE DATABASE shop",
            "GRANT SELECT ON shop.* TO 'u'@'%'",
            "CREATE TABLE c AS SELECT 1 AS a, NOW(6) AS b",
            "CREATE TABLE c AS SELECT * FROM t",
            "ALTER TABLE t ADD COLUMN at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6), ADD r DOUBLE DEFAULT (RAND())",
            "ALTER TABLE t ALTER COLUMN u SET DEFAULT (UUID())",
            "CREATE OR REPLACE TABLE c (KEY (id)) SELECT id FROM t WHERE id > 1",
            "CREATE TABLE c (id INT AUTO_INCREMENT PRIMARY KEY) SELECT v FROM t ORDER BY k",
            "CREATE VIEW v AS SELECT * FROM t",
            "CREATE OR REPLACE VIEW v AS SELECT * FROM t",
            "CREATE TABLE c LIKE t",
            // The SELECTs of views and stored programs run where they are used.
            "CREATE VIEW recent AS SELECT * FROM t WHERE at > NOW() - INTERVAL 1 DAY",
            "CREATE DEFINER=`root`@`localhost` PROCEDURE `p1`()\nBEGIN SELECT @x := 1; END",
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = (SELECT MAX(a) FROM t); END",
        ] {
            assert_eq!(class(ddl), MyClass::Ddl, "{ddl}");
        }
        for local in [
            "FLUSH TABLES",
            "LOCK TABLES t WRITE",
            "UNLOCK TABLES",
            "ANALYZE TABLE t",
            "DO 1",
            "PREPARE s FROM 'SELECT 1'",
        ] {
            assert_eq!(class(local), MyClass::Local, "{local}");
        }
        assert_eq!(
            class("ANALYZE UPDATE t SET a = 1"),
            MyClass::Write { uses_last_insert_id: false, returning: false }
        );
    }

    #[test]
    fn which_statements_commit_the_open_transaction() {
        let commits = |sql: &str| {
            let toks = tokens(sql, true);
            may_commit_implicitly(&classify(&toks), &toks)
        };
        for yes in [
            "BEGIN",
            "START TRANSACTION",
            "SET autocommit = 1",
            "SET @@session.autocommit = 0",
            "SET @@autocommit = 1",
            "SET SESSION autocommit = 1",
            "LOCK TABLES t WRITE",
            "UNLOCK TABLES",
            "FLUSH TABLES",
            "ANALYZE TABLE t",
            "OPTIMIZE TABLE t",
            "EXECUTE s",
            "SET STATEMENT max_statement_time = 1 FOR FLUSH TABLES",
        ] {
            assert!(commits(yes), "{yes}");
        }
        for no in [
            "DO 0",
            "DO RELEASE_LOCK('a')",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET GLOBAL max_connections = 10",
            "SET NAMES utf8mb4",
            "SET time_zone = '+00:00'",
            "HANDLER t READ FIRST",
            "PREPARE s FROM 'SELECT 1'",
            "DEALLOCATE PREPARE s",
            "GET DIAGNOSTICS @n = NUMBER",
            "CHECKSUM TABLE t",
            "SELECT * INTO OUTFILE '/tmp/x' FROM t",
            "SELECT 1",
            "SAVEPOINT a",
        ] {
            assert!(!commits(no), "{no}");
        }
    }
}
