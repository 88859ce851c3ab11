//! Logged transactions replayed on a follower: the pipelined protocol
//! messages (built here, pure) and the reading of the server's replies.
//!
//! One or more consecutive LSNs (a group, see [`groupable`]) go out in one
//! write and run in one follower transaction:
//!
//! ```text
//! BEGIN
//! guard        DO: _chorus.applied must be at FIRST-1; set it (and _chorus.lsn) to LAST
//! per LSN:
//!   reset      (from the second LSN on) as below, so each starts from chorus's own state
//!   header     the session context (SET script), if logged
//!   statements 'q' Query | 'x' Parse/Bind/Execute/Sync | 'c' Query + CopyData... + CopyDone
//! reset        SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL
//! log copy     Parse INSERT INTO _chorus.log + Bind/Execute per row + Sync
//! COMMIT
//! ```
//!
//! Every one of these units ends with exactly one ReadyForQuery, so counting
//! them tells which unit an ErrorResponse belongs to. After an error the
//! server answers the rest with 25P02 (or drops COPY data) and COMMIT rolls
//! back, so nothing of a failed transaction stays.
//!
//! Applying a group as one transaction is equivalent to applying its LSNs one
//! by one: they run serially in log order either way, and a follower that
//! crashes keeps all of the group or none of it, with `_chorus.applied` to
//! match. It saves a BEGIN, a guard, a COMMIT (and its WAL flush) and a round
//! trip per LSN, which is what lets a follower keep up with a leader that
//! commits many small transactions concurrently.

use super::Lsn;
use super::feed::{LogRow, LoggedTxn};
use crate::backend::{BackendError, ServerConn};
use crate::protocol::{Fields, Message, ServerError, build};

/// CopyData messages carry at most this much of a logged COPY's data.
pub const COPY_CHUNK: usize = 1 << 20;

/// The SQLSTATE the guard raises when the follower is not where the applier
/// thought (another applier, e.g. a second chorus, applied the LSN meanwhile).
pub const POSITION_MOVED: &str = "CHA01";

/// User-defined types (OID >= 16384, FirstNormalObjectId) have different OIDs
/// on every server: sent as 0, the follower infers them as the leader did.
const FIRST_USER_OID: u32 = 16384;

/// One part of the pipeline, answered by exactly one ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Begin,
    Guard,
    /// The row `row` (the header included) of the group's transaction `txn`.
    Row {
        txn: usize,
        row: usize,
    },
    Reset,
    LogCopy,
    Commit,
}

/// The messages that replay one transaction, and the units they form.
pub struct Plan {
    pub messages: Vec<Message>,
    pub units: Vec<Unit>,
    /// Per unit: whether it is a logged COPY (the only unit that may start one).
    copies: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("LSN {lsn} seq {seq}: unknown log entry kind {kind:?}")]
pub struct UnknownKind {
    pub lsn: Lsn,
    pub seq: i32,
    pub kind: char,
}

fn guard_sql(first: Lsn, lsn: Lsn) -> String {
    let prev = first - 1;
    format!(
        "DO $chorus$ BEGIN \
         UPDATE _chorus.applied SET lsn = {lsn}, applied_at = pg_catalog.now() WHERE lsn = {prev}; \
         IF NOT FOUND THEN RAISE EXCEPTION 'chorus: this follower is not at LSN {prev}' USING ERRCODE = '{POSITION_MOVED}'; \
         END IF; UPDATE _chorus.lsn SET lsn = {lsn}; END $chorus$"
    )
}

/// What brings the connection back to chorus's own state after the client's
/// statements (which may have changed settings, the role or the session user).
const RESET_SQL: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL";

const LOG_COPY_SQL: &[u8] = b"INSERT INTO _chorus.log (lsn, seq, kind, sql, param_types, params, committed_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// int8, int4, "char", text, oid[], bytea, timestamptz: all sent in binary.
const LOG_COPY_TYPES: [u32; 7] = [20, 23, 18, 25, 1028, 17, 1184];

/// A one-dimensional oid[] in PostgreSQL's binary array format.
fn oid_array(oids: &[u32]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + oids.len() * 8);
    b.extend_from_slice(&(if oids.is_empty() { 0i32 } else { 1 }).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // no NULLs
    b.extend_from_slice(&26u32.to_be_bytes()); // element type oid
    if !oids.is_empty() {
        b.extend_from_slice(&(oids.len() as i32).to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes()); // lower bound
        for o in oids {
            b.extend_from_slice(&4i32.to_be_bytes());
            b.extend_from_slice(&o.to_be_bytes());
        }
    }
    b
}

fn log_copy_bind(row: &LogRow) -> Message {
    let lsn = row.lsn.to_be_bytes();
    let seq = row.seq.to_be_bytes();
    let kind = [row.kind];
    let types = row.param_types.as_deref().map(oid_array);
    let at = row.committed_at.to_be_bytes();
    let values: [Option<&[u8]>; 7] = [
        Some(&lsn),
        Some(&seq),
        Some(&kind),
        row.sql.as_deref().map(str::as_bytes),
        types.as_deref(),
        row.params.as_deref(),
        Some(&at),
    ];
    build::bind_raw("", "", &build::bind_tail(&[1], &values, &[]))
}

/// At most this many LSNs, and about this many bytes of log rows, per group.
pub const GROUP_LSNS: usize = 64;
pub const GROUP_BYTES: usize = 1 << 20;

/// Whether `txn` may share a follower transaction with its neighbours. Not
/// when a statement could change the transaction itself for what follows
/// (`SET TRANSACTION`, `SET CONSTRAINTS`, a `COMMIT`/`ROLLBACK` inside a
/// procedure, ...): such a transaction is applied alone. A plain search of
/// the texts, so it errs on the side of applying alone.
pub fn groupable(txn: &LoggedTxn) -> bool {
    const WORDS: [&[u8]; 4] = [b"transaction", b"constraints", b"commit", b"rollback"];
    txn.rows.iter().filter(|r| r.kind != b'h').all(|r| {
        let text = r.text.to_ascii_lowercase();
        !WORDS.iter().any(|w| text.windows(w.len()).any(|x| x == *w))
    })
}

/// The size of a transaction's log rows, for [`GROUP_BYTES`].
pub fn size(txn: &LoggedTxn) -> usize {
    txn.rows.iter().map(|r| r.text.len() + r.params.as_ref().map_or(0, Vec::len) + 64).sum()
}

/// The pipeline that replays `txns` (consecutive LSNs, at least one) on a
/// follower at the first one's LSN - 1.
pub fn plan(txns: &[LoggedTxn]) -> Result<Plan, UnknownKind> {
    let (first, last) = match (txns.first(), txns.last()) {
        (Some(f), Some(l)) => (f.lsn, l.lsn),
        _ => return Ok(Plan { messages: Vec::new(), units: Vec::new(), copies: Vec::new() }),
    };
    let mut messages = vec![build::query("BEGIN"), build::query(&guard_sql(first, last))];
    let mut units = vec![Unit::Begin, Unit::Guard];
    let mut copies = vec![false, false];
    for (t, txn) in txns.iter().enumerate() {
        if t > 0 {
            messages.push(build::query(RESET_SQL));
            units.push(Unit::Reset);
            copies.push(false);
        }
        for (i, row) in txn.rows.iter().enumerate() {
            match row.kind {
                b'h' => messages.push(build::query_bytes(&row.text)),
                b'q' => messages.push(build::query_bytes(&row.text)),
                b'x' => {
                    let types: Vec<u32> = row
                        .param_types
                        .as_deref()
                        .unwrap_or(&[])
                        .iter()
                        .map(|&t| if t >= FIRST_USER_OID { 0 } else { t })
                        .collect();
                    messages.push(build::parse("", &row.text, &types));
                    let tail = row.params.as_deref().unwrap_or(&[0, 0, 0, 0, 0, 0]);
                    messages.push(build::bind_raw("", "", tail));
                    messages.push(build::execute("", 0));
                    messages.push(build::sync());
                }
                b'c' => {
                    messages.push(build::query_bytes(&row.text));
                    for chunk in row.params.as_deref().unwrap_or(&[]).chunks(COPY_CHUNK) {
                        messages.push(build::copy_data(chunk));
                    }
                    messages.push(build::copy_done());
                }
                k => return Err(UnknownKind { lsn: txn.lsn, seq: row.seq, kind: k as char }),
            }
            units.push(Unit::Row { txn: t, row: i });
            copies.push(row.kind == b'c');
        }
    }
    messages.push(build::query(RESET_SQL));
    units.push(Unit::Reset);
    copies.push(false);
    if txns.iter().any(|t| !t.rows.is_empty()) {
        messages.push(build::parse("", LOG_COPY_SQL, &LOG_COPY_TYPES));
        for row in txns.iter().flat_map(|t| &t.rows) {
            messages.push(log_copy_bind(row));
            messages.push(build::execute("", 0));
        }
        messages.push(build::sync());
        units.push(Unit::LogCopy);
        copies.push(false);
    }
    messages.push(build::query("COMMIT"));
    units.push(Unit::Commit);
    copies.push(false);
    Ok(Plan { messages, units, copies })
}

/// How replaying a plan went, when the connection survived it.
#[derive(Debug)]
pub enum Outcome {
    Committed,
    /// The first error, and the unit it belongs to. The transaction did not commit.
    Failed {
        unit: Unit,
        error: ServerError,
    },
}

/// Replay `plan` on `conn` (idle, outside a transaction). A statement that
/// starts a COPY no data was logged for leaves the connection unusable
/// (`conn.broken`), reported as a failure of that statement.
pub async fn execute(conn: &mut ServerConn, plan: &Plan) -> Result<Outcome, BackendError> {
    for m in &plan.messages {
        conn.queue(&m.frame);
    }
    let mut reader = Replies { unit: 0, first_error: None };
    for m in conn.flush_reading().await? {
        if let Some(outcome) = reader.on_message(conn, plan, m) {
            return Ok(outcome);
        }
    }
    loop {
        let m = conn.read().await?;
        if let Some(outcome) = reader.on_message(conn, plan, m) {
            return Ok(outcome);
        }
    }
}

struct Replies {
    /// Index of the unit whose replies are being read.
    unit: usize,
    first_error: Option<(Unit, ServerError)>,
}

impl Replies {
    fn on_message(&mut self, conn: &mut ServerConn, plan: &Plan, m: Message) -> Option<Outcome> {
        let unit = plan.units.get(self.unit).copied().unwrap_or(Unit::Commit);
        let is_copy = plan.copies.get(self.unit).copied().unwrap_or(false);
        match m.tag {
            b'E' if self.first_error.is_none() => self.first_error = Some((unit, ServerError::parse(m.body()))),
            b'S' => conn.note_parameter(&m),
            b'Z' => {
                conn.status = m.body().first().copied().unwrap_or(b'I');
                self.unit += 1;
                if self.unit == plan.units.len() {
                    return Some(match self.first_error.take() {
                        None => Outcome::Committed,
                        Some((unit, error)) => Outcome::Failed { unit, error },
                    });
                }
            }
            // CopyIn is expected for a logged COPY (its data is in the pipeline).
            // Anywhere else the server now waits for data that is not coming
            // and would take the next message for it: give the connection up.
            b'G' | b'W' if !is_copy => {
                conn.broken = true;
                let error = ServerError {
                    severity: "ERROR".into(),
                    code: String::new(),
                    message: "the statement started COPY FROM STDIN, but no COPY data was logged for it".into(),
                };
                return Some(Outcome::Failed { unit, error: self.first_error.take().map_or(error, |(_, e)| e) });
            }
            _ => {}
        }
        None
    }
}

/// Run a one-value query (e.g. `SELECT lsn FROM _chorus.applied`) on an idle
/// connection: the value as text parsed as an integer (`None` for NULL or no
/// row), or the server's error.
pub async fn query_lsn(conn: &mut ServerConn, sql: &str) -> Result<Result<Option<Lsn>, ServerError>, BackendError> {
    conn.queue(&build::query(sql).frame);
    conn.flush().await?;
    let mut value = None;
    let mut error = None;
    loop {
        let m = conn.read().await?;
        match m.tag {
            b'D' => {
                let mut f = Fields::new(m.body());
                let _columns = f.i16();
                let len = f.i32().unwrap_or(-1);
                if len >= 0 {
                    value = f.bytes(len as usize).and_then(|b| std::str::from_utf8(b).ok()?.parse::<Lsn>().ok());
                }
            }
            b'E' if error.is_none() => error = Some(ServerError::parse(m.body())),
            b'S' => conn.note_parameter(&m),
            b'Z' => {
                conn.status = m.body().first().copied().unwrap_or(b'I');
                return Ok(match error {
                    Some(e) => Err(e),
                    None => Ok(value),
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i32, kind: u8, sql: &str) -> LogRow {
        LogRow::new(7, seq, kind, Some(sql))
    }

    fn tags(plan: &Plan) -> String {
        plan.messages.iter().map(|m| m.tag as char).collect()
    }

    #[test]
    fn a_transaction_becomes_one_pipeline_of_units() {
        let mut x = row(2, b'x', "INSERT INTO t VALUES ($1)");
        x.param_types = Some(vec![23, 16390]);
        x.params = Some(build::bind_tail(&[1], &[Some(&5i32.to_be_bytes())], &[]));
        let mut c = row(3, b'c', "COPY t FROM STDIN");
        c.params = Some(vec![b'1'; COPY_CHUNK + 10]);
        let txn = LoggedTxn {
            lsn: 7,
            rows: vec![row(0, b'h', "RESET ALL; SET search_path = a"), row(1, b'q', "CREATE TABLE t (id int)"), x, c],
        };
        let plan = plan(std::slice::from_ref(&txn)).unwrap();
        // BEGIN, guard, header, q, x (PBES), c (Q d d c), reset, log copy (P + 4 x BE + S), COMMIT.
        assert_eq!(tags(&plan), "QQQQPBESQddcQPBEBEBEBESQ");
        assert_eq!(
            plan.units,
            [
                Unit::Begin,
                Unit::Guard,
                Unit::Row { txn: 0, row: 0 },
                Unit::Row { txn: 0, row: 1 },
                Unit::Row { txn: 0, row: 2 },
                Unit::Row { txn: 0, row: 3 },
                Unit::Reset,
                Unit::LogCopy,
                Unit::Commit
            ]
        );
        // The user type's OID goes out as 0; the Bind tail verbatim.
        let parse = &plan.messages[4];
        assert!(parse.body().ends_with(&[0, 2, 0, 0, 0, 23, 0, 0, 0, 0]), "{:?}", parse.body());
        let bind = &plan.messages[5];
        assert_eq!(&bind.body()[2..], &txn.rows[2].params.as_ref().unwrap()[..]);
        // COPY data split into chunks of at most 1 MiB.
        assert_eq!(plan.messages[9].body().len(), COPY_CHUNK);
        assert_eq!(plan.messages[10].body().len(), 10);
        let guard = String::from_utf8_lossy(plan.messages[1].body()).into_owned();
        assert!(guard.contains("SET lsn = 7, applied_at") && guard.contains("WHERE lsn = 6"), "{guard}");
    }

    #[test]
    fn a_group_runs_its_transactions_in_order_in_one_follower_transaction() {
        let a = LoggedTxn { lsn: 7, rows: vec![row(0, b'h', "RESET ALL"), row(1, b'q', "UPDATE t SET a = 1")] };
        let mut b = LoggedTxn { lsn: 8, rows: vec![row(0, b'h', "RESET ALL"), row(1, b'q', "DELETE FROM t")] };
        b.rows.iter_mut().for_each(|r| r.lsn = 8);
        let plan = plan(&[a, b]).unwrap();
        // BEGIN, guard, a (header, q), reset, b (header, q), reset, log copy (4 rows), COMMIT.
        assert_eq!(tags(&plan), "QQQQQQQQPBEBEBEBESQ");
        assert_eq!(
            plan.units,
            [
                Unit::Begin,
                Unit::Guard,
                Unit::Row { txn: 0, row: 0 },
                Unit::Row { txn: 0, row: 1 },
                Unit::Reset,
                Unit::Row { txn: 1, row: 0 },
                Unit::Row { txn: 1, row: 1 },
                Unit::Reset,
                Unit::LogCopy,
                Unit::Commit
            ]
        );
        let guard = String::from_utf8_lossy(plan.messages[1].body()).into_owned();
        assert!(guard.contains("SET lsn = 8, applied_at") && guard.contains("WHERE lsn = 6"), "{guard}");
    }

    #[test]
    fn transactions_that_change_the_transaction_itself_are_applied_alone() {
        let txn = |sql: &str| LoggedTxn {
            lsn: 1,
            rows: vec![row(0, b'h', "SET default_transaction_isolation = 'serializable'"), row(1, b'q', sql)],
        };
        assert!(groupable(&txn("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2")));
        assert!(groupable(&LoggedTxn { lsn: 1, rows: vec![] }));
        assert!(!groupable(&txn("SET CONSTRAINTS ALL DEFERRED")));
        assert!(!groupable(&txn("INSERT INTO t VALUES (1); set transaction read only")));
        assert!(!groupable(&txn("CALL do_work_and_COMMIT()")));
    }

    #[test]
    fn an_empty_transaction_only_moves_the_position() {
        let plan = plan(&[LoggedTxn { lsn: 3, rows: vec![] }]).unwrap();
        assert_eq!(plan.units, [Unit::Begin, Unit::Guard, Unit::Reset, Unit::Commit]);
        assert_eq!(tags(&plan), "QQQQ");
    }

    #[test]
    fn unknown_kinds_are_refused() {
        let txn = LoggedTxn { lsn: 2, rows: vec![row(0, b'h', ""), row(1, b'z', "?")] };
        assert_eq!(plan(&[txn]).err(), Some(UnknownKind { lsn: 2, seq: 1, kind: 'z' }));
    }

    #[test]
    fn oid_arrays_use_the_binary_array_format() {
        assert_eq!(oid_array(&[]), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 26]);
        assert_eq!(
            oid_array(&[23]),
            [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 26, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 23]
        );
    }
}
