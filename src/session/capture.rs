//! Capture mode on the leader: a write whose text would compute other values
//! on a follower is replicated by the rows the leader wrote.
//!
//! For each logged write the session asks [`Session::replay_of`]: replay the
//! text (with transaction-time literals), capture, or refuse. Capture needs a
//! statement shape `sql::capture` accepts and a table the catalog says
//! changes nothing but its own rows (no triggers, rules, row security,
//! inheritance children) with a primary key for anything but a plain INSERT.
//! The statement is sent to the leader with one more RETURNING column,
//! `_chorus.row_text(t.*)`; as its results come back, [`Session::captured_reply`]
//! takes that column off every RowDescription and DataRow (dropping both when
//! the client had no RETURNING of its own) and keeps the row text for the
//! log entry (`txnlog::Entry::Captured`). A follower applies the rows with
//! `_chorus.apply_rows` (migrations/postgres/0003_capture.sql).
//!
//! Captured rows carry explicit values for columns a sequence filled, so the
//! follower's sequences do not move: after a captured write the transaction
//! logs every sequence's state again (`WriteTxn::resync`) before its next
//! write, or as it appends its entry.

use super::Session;
use super::logplan::{mentions_word, nondeterministic};
use super::txnlog;
use crate::config::UnsafeWrites;
use crate::protocol::{ClientError, Message, rows, sqlstate};
use crate::sql::Classification;
use crate::sql::capture::{CaptureKind, CaptureShape};
use crate::sql::rewrite::TimePlan;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// How a follower applies a captured write's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureOp {
    Insert,
    /// INSERT ... ON CONFLICT DO UPDATE: insert, or overwrite by primary key.
    Upsert,
    Update,
    Delete,
}

impl CaptureOp {
    /// The operation's name for `_chorus.apply_rows`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureOp::Insert => "insert",
            CaptureOp::Upsert => "upsert",
            CaptureOp::Update => "update",
            CaptureOp::Delete => "delete",
        }
    }
}

/// A statement chorus captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSpec {
    /// The table as the client wrote it.
    pub table_sql: Arc<str>,
    pub op: CaptureOp,
    /// Followers apply the rows with the table's triggers left out (they ran
    /// on the leader and changed only these rows).
    pub quiet: bool,
    /// The client's statement returns no rows: chorus's results are not relayed.
    pub hide: bool,
    /// The text appended to the statement.
    pub clause: String,
    /// Tables (schema, table) the table's triggers insert into: their rows
    /// are captured too (trigger_rows.rs).
    pub trigger_rows: Vec<(String, String)>,
}

/// How one logged write reaches the followers.
#[derive(Clone)]
pub(super) enum Replay {
    /// Its text, with these transaction-time literals.
    Text(TimePlan),
    /// The rows it wrote.
    Capture(Arc<CaptureSpec>),
}

/// Which replies of a request belong to a captured statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum At {
    /// The statement whose completion (CommandComplete ...) is the n-th of the
    /// request: its DataRows, and in a simple Query its RowDescription.
    Completion(usize),
    /// The n-th RowDescription or NoData of an extended request: a Describe's answer.
    Describe(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    pub at: At,
    /// The captured entry that collects the rows (its id; none for a Describe).
    pub entry: Option<u64>,
    pub hide: bool,
}

/// Schema changes that call no sequence function: replaying them after a
/// captured write (whose sequence values the follower did not draw) is safe.
pub(super) fn draws_no_sequence_values(text: &str) -> bool {
    const DDL: [&str; 7] = ["create", "alter", "drop", "comment", "grant", "revoke", "truncate"];
    let first = text.trim_start().split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or("");
    DDL.iter().any(|w| first.eq_ignore_ascii_case(w))
        && !mentions_word(text, "nextval")
        && !mentions_word(text, "setval")
}

/// A write that may draw sequence values, after a captured one in the same request.
pub(super) fn after_captured_write() -> ClientError {
    ClientError::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "chorus cannot replicate this write after a captured write in the same request: the captured write drew \
         sequence values the followers do not draw, and chorus logs the sequences' state only between requests",
    )
    .with_hint("Send the statements after the captured write as a separate query (or after a Sync).")
}

/// A call of a user function that computes values a follower would compute
/// differently and writes rows: neither its text nor the rows of one table
/// replicate it.
fn refuse_routine(f: &str, why: &str) -> ClientError {
    ClientError::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "chorus cannot replicate this write: it calls {f}(), which {why}, so a follower would compute other \
             values, and which writes rows that the statement's own rows do not carry"
        ),
    )
    .with_hint(
        "Pass the values the function computes as parameters, or mark the function IMMUTABLE or STABLE if it \
         gives the same result on every node.",
    )
}

/// `sql` with `clauses` inserted at their byte offsets (ascending).
pub(super) fn with_clauses(sql: &str, clauses: &[(usize, &str)]) -> String {
    let mut out = String::with_capacity(sql.len() + clauses.iter().map(|(_, c)| c.len()).sum::<usize>());
    let mut copied = 0;
    for (at, clause) in clauses {
        out.push_str(&sql[copied..*at]);
        out.push_str(clause);
        copied = *at;
    }
    out.push_str(&sql[copied..]);
    out
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// How statement `i` (text `text`) of a request classified as `class`
    /// is replicated; `Err` refuses the request. `after_capture`: an earlier
    /// statement of the same request is captured.
    pub(super) async fn replay_of(
        &self,
        text: &str,
        class: &Classification,
        i: usize,
        after_capture: bool,
    ) -> Result<Replay, ClientError> {
        let time = txnlog::plan_text(text);
        let Some(shape) = class.capture.iter().find(|(j, _)| *j == i).map(|(_, s)| s) else {
            let time = time.map_err(nondeterministic)?;
            self.refuse_volatile_defaults(text, &class.tables).await?;
            self.refuse_nondeterministic_routines(text, class).await?;
            if after_capture && !draws_no_sequence_values(text) {
                return Err(after_captured_write());
            }
            return Ok(Replay::Text(time));
        };
        let why = match &time {
            Err(e) => Some(e.what()),
            Ok(_) => self.capture_reason(text, class, shape).await?,
        };
        // The captured write before it drew sequence values the followers do
        // not draw: replaying this one there could draw others than the leader.
        let why = why.or_else(|| after_capture.then(|| "it follows a captured write in the same request".into()));
        match (why, time) {
            (None, Ok(time)) => Ok(Replay::Text(time)),
            (Some(why), _) => self.capture_spec(shape, &why).await.map(Replay::Capture),
            (None, Err(e)) => Err(nondeterministic(e)),
        }
    }

    /// A write chorus cannot capture (not an INSERT, UPDATE or DELETE) that
    /// calls a user function which computes values a follower would compute
    /// differently and writes rows: refused. (One that only reads is replayed:
    /// running it again changes nothing.) COPY and MERGE into a table whose
    /// triggers would compute other values: refused.
    pub(super) async fn refuse_nondeterministic_routines(
        &self,
        text: &str,
        class: &Classification,
    ) -> Result<(), ClientError> {
        for (f, nature) in self.routines(&class.functions).await {
            if let (Some(why), true) = (&nature.nondeterministic, nature.writes) {
                return Err(refuse_routine(&f, why));
            }
        }
        if !(mentions_word(text, "copy") || mentions_word(text, "merge")) {
            return Ok(());
        }
        for t in &class.tables {
            let facts = self.table_facts(t).await;
            if let Some(why) = facts.as_ref().and_then(|f| f.triggers.nondeterministic.as_deref()) {
                return Err(ClientError::new(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!("chorus cannot replicate this write: {t} {why}, so a follower would compute other values"),
                )
                .with_hint("Write the rows with INSERT, which chorus replicates by the rows the leader wrote."));
            }
        }
        Ok(())
    }

    /// Why replaying this write's text would not reproduce the leader's rows,
    /// beyond what its text shows (the table's defaults, triggers and
    /// sequences, the functions it calls). `Err`: it cannot be replicated.
    async fn capture_reason(
        &self,
        text: &str,
        class: &Classification,
        shape: &CaptureShape,
    ) -> Result<Option<String>, ClientError> {
        // (A write of temporary objects only is not replicated at all: the
        // table written here is a regular one.)
        if !self.temps.is_empty() {
            // The statement's own relations, not the whole query's.
            let own;
            let c: &Classification = if class.statement_count > 1 {
                own = self.ctx.classify.get(text);
                &own
            } else {
                class
            };
            if let Some(t) = c.tables.iter().chain(&c.sequences).find(|t| self.temps.contains(t)) {
                return Ok(Some(format!("it reads {t}, which is temporary: the followers do not have it")));
            }
        }
        for (f, nature) in self.routines(&class.functions).await {
            match (&nature.nondeterministic, nature.writes) {
                (Some(why), true) => return Err(refuse_routine(&f, why)),
                (Some(why), false) => return Ok(Some(format!("it calls {f}(), which {why}"))),
                _ => {}
            }
        }
        let facts = self.table_facts(&shape.table).await;
        if let Some(why) = facts.as_ref().and_then(|f| f.triggers.nondeterministic.clone()) {
            return Ok(Some(why));
        }
        Ok(self.capture_reason_of_rows(text, class, shape).await)
    }

    /// What about the rows themselves keeps replay from reproducing them.
    async fn capture_reason_of_rows(&self, text: &str, class: &Classification, shape: &CaptureShape) -> Option<String> {
        if shape.unordered_limit {
            return Some("a LIMIT without ORDER BY picks its rows".into());
        }
        let explicit_default = mentions_word(text, "default");
        let nextval = class.functions.iter().any(|f| f == "nextval" || f.ends_with(".nextval"));
        let defaults = self.volatile_defaults(std::slice::from_ref(&shape.table)).await;
        let takes_default = |column: &str, columns: &[String]| {
            explicit_default
                || if columns.is_empty() { !mentions_word(text, column) } else { !columns.iter().any(|c| c == column) }
        };
        match &shape.kind {
            CaptureKind::Insert { columns, values, .. } => {
                if let Some((_, column, expr)) = defaults.iter().find(|(_, c, _)| takes_default(c, columns)) {
                    return Some(format!("column {column} takes its default {expr}"));
                }
                if *values {
                    return None;
                }
                if nextval {
                    return Some("it calls nextval() for rows in an order a follower may not reproduce".into());
                }
                let facts = self.table_facts(&shape.table).await?;
                let column = facts.computed_defaults.iter().find(|c| takes_default(c, columns))?;
                Some(format!(
                    "column {column} takes a value from its default for rows in an order a follower may not reproduce"
                ))
            }
            CaptureKind::Update { .. } => {
                if explicit_default && let Some((_, column, expr)) = defaults.first() {
                    return Some(format!("column {column} may take its default {expr}"));
                }
                nextval.then(|| "it calls nextval() for rows in an order a follower may not reproduce".into())
            }
            CaptureKind::Delete => None,
        }
    }

    /// Capture a write that `why` keeps from replaying, or refuse it saying
    /// why it cannot be captured either.
    async fn capture_spec(&self, shape: &CaptureShape, why: &str) -> Result<Arc<CaptureSpec>, ClientError> {
        let table = &shape.table_sql;
        let refuse = |because: String| {
            ClientError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "chorus cannot replicate this write: {why}, so a follower would compute other values, and chorus \
                     cannot replicate the rows the leader wrote instead because {because}"
                ),
            )
            .with_hint(
                "Compute the values in the application and pass them as literals or parameters, so every node \
                 stores the same (now() and CURRENT_TIMESTAMP written in the statement are replicated exactly).",
            )
        };
        if self.ctx.config.replication.unsafe_writes == UnsafeWrites::Refuse {
            return Err(refuse("replication.unsafe_writes is \"refuse\"".into()));
        }
        let Some(facts) = self.table_facts(&shape.table).await else {
            return Err(refuse(format!(
                "{table} is not a table chorus knows (a view, a table created in this transaction, or one it \
                 cannot see)"
            )));
        };
        // Triggers that change only their row ran on the leader: the captured
        // rows carry their effect, and followers apply them without triggers.
        // Triggers that also insert elsewhere: those rows are captured too.
        let mut trigger_rows = Vec::new();
        let quiet = match (facts.capturable, facts.quiet_capturable) {
            (true, _) => false,
            (false, true) => true,
            (false, false) if facts.trigger_rows.is_some() => {
                trigger_rows = facts.trigger_rows.clone().unwrap_or_default();
                true
            }
            (false, false) if facts.triggers.writes => {
                return Err(refuse(format!(
                    "{table} has a trigger that writes other rows, which its own rows do not carry, in a way chorus \
                     cannot capture (it captures what triggers INSERT into tables that have no triggers of their \
                     own)"
                )));
            }
            (false, false) => {
                return Err(refuse(format!(
                    "{table} has rules, row-level security, inheritance children, triggers on its partitions, or \
                     foreign keys with ON DELETE/UPDATE actions pointing at it, whose effects its rows do not carry"
                )));
            }
        };
        let (op, assigned) = match &shape.kind {
            CaptureKind::Insert { upsert: false, .. } => (CaptureOp::Insert, &[][..]),
            CaptureKind::Insert { upsert: true, assigned, .. } => (CaptureOp::Upsert, &assigned[..]),
            CaptureKind::Update { assigned } => (CaptureOp::Update, &assigned[..]),
            CaptureKind::Delete => (CaptureOp::Delete, &[][..]),
        };
        if op != CaptureOp::Insert && facts.primary_key.is_empty() {
            return Err(refuse(format!("{table} has no primary key to apply them by")));
        }
        if let Some(k) = assigned.iter().find(|c| facts.primary_key.contains(c)) {
            return Err(refuse(format!("the statement changes the primary key column {k}")));
        }
        Ok(Arc::new(CaptureSpec {
            table_sql: shape.table_sql.as_str().into(),
            op,
            quiet,
            hide: !shape.returning,
            clause: shape.returning_clause(),
            trigger_rows,
        }))
    }

    /// A RowDescription, NoData or DataRow of a request with captured
    /// statements: what the client gets of it (`None`: nothing), the row
    /// text kept for the log.
    pub(super) fn captured_reply(&mut self, m: Message) -> Option<Message> {
        let f = self.inflight.front_mut()?;
        let at = match m.tag {
            b'T' | b'n' if f.extended => {
                f.descriptions += 1;
                At::Describe(f.descriptions - 1)
            }
            b'n' => return Some(m),
            _ => At::Completion(f.completions),
        };
        let Some(slot) = f.captures.iter().find(|s| s.at == at).copied() else { return Some(m) };
        match m.tag {
            b'T' if slot.hide && matches!(at, At::Describe(_)) => Some(Message::new(b'n', &[])),
            b'T' if slot.hide => None,
            b'T' => Some(rows::without_last_field(&m).unwrap_or(m)),
            b'D' => {
                let Some((rest, row)) = rows::split_last_column(&m) else { return Some(m) };
                if let (Some(id), Some(row), Some(t)) = (slot.entry, row, self.wtxn.as_mut()) {
                    t.captured_row(id, row);
                    if t.bytes() > super::replicate::MAX_TXN_LOG_BYTES {
                        t.poisoned = Some("a captured write whose rows exceed 512 MiB");
                    }
                }
                (!slot.hide).then_some(rest)
            }
            _ => Some(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_go_where_they_belong() {
        let sql = "INSERT INTO t VALUES (1); -- x\nDELETE FROM u";
        let out = with_clauses(sql, &[(24, " RETURNING a"), (sql.len(), " RETURNING b")]);
        assert_eq!(out, "INSERT INTO t VALUES (1) RETURNING a; -- x\nDELETE FROM u RETURNING b");
        assert_eq!(with_clauses("x", &[]), "x");
    }
}
