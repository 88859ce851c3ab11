//! SQL understanding: pure classification of statement text, cached by text.
//!
//! Nothing here does I/O. The router combines a [`Classification`] with the
//! session's state and the topology to pick a target.

pub mod cache;
pub mod capture;
pub mod chorus_setting;
pub mod classify;
mod collect;
pub mod database;
mod fallback;
mod functions;
pub mod keyed;
pub mod mysql;
pub mod normalize;
mod ops;
pub mod quote;
pub mod rewrite;
pub mod routine;
mod settings;
pub mod snapshot;
mod split;

pub use cache::ClassifyCache;

/// The statements of a query text, each as its original text (empty ones
/// dropped), in the order [`Classification::ops`] describes them; `None`
/// when the text does not tokenize.
pub fn statements(sql: &str) -> Option<Vec<&str>> {
    split::split(sql).ok().map(|chunks| chunks.into_iter().map(|c| c.text).collect())
}

/// Where each statement of a query text is (byte ranges of [`statements`]'
/// texts: from the first to the last significant token, so comments and
/// semicolons around a statement are outside its range).
pub fn statement_ranges(sql: &str) -> Option<Vec<std::ops::Range<usize>>> {
    let base = sql.as_ptr() as usize;
    statements(sql).map(|texts| {
        texts
            .into_iter()
            .map(|t| {
                let start = t.as_ptr() as usize - base;
                start..start + t.len()
            })
            .collect()
    })
}
pub use classify::classify;
pub use ops::without_concurrently;

/// Why a query must run on the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderReason {
    /// INSERT / UPDATE / DELETE / MERGE / COPY FROM / SELECT INTO ...
    Write,
    /// CREATE / ALTER / DROP / GRANT / TRUNCATE / COMMENT ...
    Ddl,
    /// SELECT ... FOR UPDATE / SHARE / NO KEY UPDATE / KEY SHARE.
    LockingRead,
    /// WITH x AS (INSERT/UPDATE/DELETE ...) ...
    WritableCte,
    /// Calls a function known to have side effects or to be volatile (nextval, setval, random, ...).
    VolatileFunction(String),
    /// Starts a read-write (or unspecified) explicit transaction.
    Transaction,
    /// Utility commands that only make sense on the leader (VACUUM, CALL, DO, NOTIFY, LOCK, CHECKPOINT ...).
    Utility,
    /// The text did not parse; the leader decides what it means.
    Unparsed,
    /// Reads the system catalogs (a `pg_catalog` relation, a cast to `oid` or a
    /// `reg*` type). Object ids differ from server to server, and clients chain
    /// catalog queries by oid (psql's `\d`: one query finds the oid, the next
    /// ones use it), so all of a session's catalog reads see the leader's, the
    /// catalog DDL reaches first. Gives way to any other reason.
    SystemCatalog,
}

/// Why a session must stay on the leader for the rest of its life: the state it
/// creates exists on one server only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinReason {
    TempTable,
    Listen,
    AdvisoryLock,
    Prepare,
    HoldCursor,
    SetConfig,
}

/// The special single-statement shapes the session handles itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// A lone `BEGIN` / `START TRANSACTION`; `read_only` is `Some(true)` for READ ONLY,
    /// `Some(false)` for READ WRITE, `None` when unspecified. `plain` is true when it
    /// carries no options at all (only then may chorus defer it).
    Begin { read_only: Option<bool>, plain: bool },
    /// A lone `SET TRANSACTION ... READ ONLY` (possibly with an isolation level).
    SetTransactionReadOnly,
    /// A lone `COMMIT` / `END` (not `COMMIT PREPARED`, not `AND CHAIN`).
    Commit,
    /// A lone `ROLLBACK` / `ABORT` (not `TO SAVEPOINT`, not `PREPARED`, not `AND CHAIN`).
    Rollback,
    #[default]
    Other,
}

/// A session-level setting change that must be replayed on every server
/// connection the session uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingChange {
    /// `SET [SESSION] name ...`: `name` lower-case (e.g. "timezone", "search_path",
    /// "client_encoding", "role"), `sql` a statement that re-applies it: the
    /// statement's own original text (trimmed, no trailing semicolon).
    Set { name: String, sql: String },
    /// `RESET name`.
    Reset { name: String },
    /// `RESET ALL` or `DISCARD ALL`.
    ResetAll,
    /// `SAVEPOINT name` (folded): changes after it are undone by `ROLLBACK TO` it.
    Savepoint { name: String },
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackTo { name: String },
    /// `RELEASE [SAVEPOINT] name`.
    Release { name: String },
}

/// What one query text (one or more statements) needs from the router.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Classification {
    /// `None`: a read a follower may serve. `Some`: must run on the leader. Over
    /// several statements the first reason counts, except that a BEGIN's
    /// `Transaction` gives way to a later, more telling one (`BEGIN; INSERT ...` is a `Write`).
    pub leader_reason: Option<LeaderReason>,
    /// Set when the query creates state that pins the session to the leader.
    pub pin_reason: Option<PinReason>,
    /// Transaction-control shape when the text is a single such statement.
    pub shape: Shape,
    /// Session settings changed if the query succeeds, in order.
    pub settings: Vec<SettingChange>,
    /// Functions called that are not known to be harmless, deduplicated, named as
    /// PostgreSQL folds them (unquoted lower-cased, quoted kept as written, parts
    /// joined with `.`; schema-qualified if written so). Includes the volatile ones
    /// already behind `leader_reason`. The router checks them against the leader's
    /// catalog and sends the query to the leader if any is volatile or unknown.
    pub functions: Vec<String>,
    /// Relations referenced (for policies), deduplicated, folded like `functions`;
    /// CTE names and functions in FROM are not relations.
    pub tables: Vec<String>,
    /// Sequences named by a literal in the `nextval` / `currval` / `setval`
    /// calls that run, folded like `tables` (a temporary sequence is the
    /// session's own).
    pub sequences: Vec<String>,
    /// Relations the statements write or alter (INSERT/UPDATE/DELETE/MERGE/
    /// COPY FROM targets, `SELECT INTO`, what DDL creates, alters, truncates
    /// or drops) and sequences drawn from by `nextval` / `setval`, folded
    /// like `tables` (`?` for a sequence named by an expression).
    pub targets: Vec<String>,
    /// Number of statements in the text (0 for an empty query).
    pub statement_count: usize,
    /// What each statement means for the replication log, in order.
    pub ops: Vec<StmtOp>,
    /// The statements that are keyed writes (see [`keyed`]): their index in
    /// `ops` and their shape.
    pub keyed: Vec<(usize, keyed::KeyedWrite)>,
    /// The statements whose written rows chorus can capture (see [`capture`]):
    /// their index in `ops` and their shape.
    pub capture: Vec<(usize, capture::CaptureShape)>,
}

impl Classification {
    /// Every function the query calls is a built-in that changes no table
    /// but the sequences it draws from: what the query writes is in
    /// `targets` (user functions may write anything).
    pub fn writes_only_targets(&self) -> bool {
        self.functions.iter().all(|f| {
            let parts: Vec<String> = f.split('.').map(str::to_string).collect();
            let draws = matches!(parts.last().map(String::as_str), Some("nextval" | "setval"));
            functions::function_kind(&parts) != functions::FunctionKind::Unknown
                && (draws || !functions::changes_data(&parts))
        })
    }
}

/// What one statement means for the replication log: the session turns a
/// request's ops into where the transaction's LSN is taken, what is logged and
/// where the log entry is appended (`session::writeplan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StmtOp {
    /// Changes no data (queries, SET, LISTEN, cursors ...): not logged.
    Read,
    /// Calls functions only the leader's catalog can judge: a write if any of
    /// them is volatile (a user function may write).
    MaybeWrite,
    /// Changes data or schema: logged and replayed on the followers.
    Write,
    /// `COPY ... FROM STDIN`: a write whose data follows as CopyData.
    CopyIn,
    /// BEGIN / START TRANSACTION, with its isolation level when one is given.
    Begin {
        isolation: Option<Isolation>,
    },
    /// COMMIT / END.
    Commit,
    /// ROLLBACK / ABORT.
    Rollback,
    Savepoint(String),
    RollbackTo(String),
    Release(String),
    /// `CREATE [UNIQUE] INDEX CONCURRENTLY` or `DROP INDEX CONCURRENTLY`
    /// (`drop`), which cannot run in a transaction block: it runs on the
    /// leader as sent, and once it has succeeded the followers get the same
    /// without CONCURRENTLY ([`without_concurrently`] of the client's text)
    /// in a logged transaction of its own.
    Concurrently {
        drop: bool,
    },
    /// `CREATE DATABASE` or `DROP DATABASE` (`drop`) that chorus can read
    /// (see [`database`]): it cannot run in a transaction block and changes
    /// no database's contents, so it runs on the leader as sent, unlogged,
    /// and chorus mirrors it on the followers once it has succeeded.
    Database {
        drop: bool,
    },
    /// Maintenance with no logical effect (VACUUM, ANALYZE, CHECKPOINT,
    /// CLUSTER, REINDEX): runs on the leader only and is not logged.
    Maintenance,
    /// Creates a temporary table, view or sequence (`CREATE TEMP TABLE name
    /// ...`, `AS SELECT`, `SELECT INTO TEMP`, anything in `pg_temp`):
    /// session-local, not logged; the session remembers the name (folded,
    /// without schema) so that writes to its temporary objects are not
    /// logged either. `until_commit`: `ON COMMIT DROP`.
    CreateTemp {
        name: String,
        until_commit: bool,
    },
    /// `EXECUTE name (...)` of an SQL-level prepared statement: a read or a
    /// write depending on what was prepared (the session knows).
    Execute,
    /// Something chorus cannot replicate; the text says what and why.
    NotReplicable(&'static str),
}

/// A transaction isolation level named in BEGIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadCommitted,
    /// REPEATABLE READ or SERIALIZABLE: the snapshot is taken by the first
    /// statement, so the LSN must be taken first.
    Snapshot,
}
