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
use crate::protocol::array::binary_array;
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
/// statements (which may have changed settings, the role or the session user);
/// then the log copy after it wakes nobody (migrations/postgres/0006).
const RESET_SQL: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL; \
     SELECT pg_catalog.set_config('_chorus.notify', 'off', true)";

/// The follower's copy of the group's log rows, in one statement (one
/// trigger firing, one executor start): arrays of lsn, seq, kind, sql,
/// parameter types (as oid[] text), parameters and commit time, all binary.
const LOG_COPY_SQL: &[u8] = b"INSERT INTO _chorus.log (lsn, seq, kind, sql, param_types, params, committed_at) \
    SELECT u.lsn, u.seq, u.kind, u.sql, u.types::pg_catalog.oid[], u.params, u.at \
    FROM unnest($1::int8[], $2::int4[], $3::\"char\"[], $4::text[], $5::text[], $6::bytea[], $7::timestamptz[]) \
    AS u(lsn, seq, kind, sql, types, params, at)";
const LOG_COPY_TYPES: [u32; 7] = [1016, 1007, 1002, 1009, 1009, 1001, 1185];

fn log_copy_bind<'a>(rows: impl Iterator<Item = &'a LogRow> + Clone) -> Message {
    let lsn: Vec<[u8; 8]> = rows.clone().map(|r| r.lsn.to_be_bytes()).collect();
    let seq: Vec<[u8; 4]> = rows.clone().map(|r| r.seq.to_be_bytes()).collect();
    let kind: Vec<[u8; 1]> = rows.clone().map(|r| [r.kind]).collect();
    let types: Vec<Option<String>> = rows.clone().map(|r| r.param_types.as_deref().map(oid_array_text)).collect();
    let at: Vec<[u8; 8]> = rows.clone().map(|r| r.committed_at.to_be_bytes()).collect();
    let arrays = [
        binary_array(20, lsn.iter().map(|v| Some(&v[..]))),
        binary_array(23, seq.iter().map(|v| Some(&v[..]))),
        binary_array(18, kind.iter().map(|v| Some(&v[..]))),
        binary_array(25, rows.clone().map(|r| r.sql.as_deref().map(str::as_bytes)).collect::<Vec<_>>().into_iter()),
        binary_array(25, types.iter().map(|t| t.as_deref().map(str::as_bytes))),
        binary_array(17, rows.clone().map(|r| r.params.as_deref()).collect::<Vec<_>>().into_iter()),
        binary_array(1184, at.iter().map(|v| Some(&v[..]))),
    ];
    let values: Vec<Option<&[u8]>> = arrays.iter().map(|a| Some(&a[..])).collect();
    build::bind_raw("", "", &build::bind_tail(&[1], &values, &[]))
}

/// `{23,25}`: OIDs as an oid[] literal.
fn oid_array_text(oids: &[u32]) -> String {
    let items: Vec<String> = oids.iter().map(u32::to_string).collect();
    format!("{{{}}}", items.join(","))
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
///
/// A single transaction is replayed statement by statement, each its own
/// unit, so an error names the statement. A group (the applier falls back
/// to one by one when it fails) saves round trips: the simple-query
/// statements of one transaction go as one Query, and a transaction whose
/// header is its predecessor's and whose predecessor changed no setting
/// skips the reset and header.
pub fn plan(txns: &[LoggedTxn]) -> Result<Plan, UnknownKind> {
    let (first, last) = match (txns.first(), txns.last()) {
        (Some(f), Some(l)) => (f.lsn, l.lsn),
        _ => return Ok(Plan { messages: Vec::new(), units: Vec::new(), copies: Vec::new() }),
    };
    let coarse = txns.len() > 1;
    let mut p = Plan { messages: Vec::new(), units: Vec::new(), copies: Vec::new() };
    p.push_unit(Unit::Begin, build::query("BEGIN"), false);
    p.push_unit(Unit::Guard, build::query(&guard_sql(first, last)), false);
    for (t, txn) in txns.iter().enumerate() {
        let keeps_context = coarse && t > 0 && same_context(&txns[t - 1], txn);
        if t > 0 && !keeps_context {
            p.push_unit(Unit::Reset, build::query(RESET_SQL), false);
        }
        // Simple-query statements merged into one Query: (first row, text).
        let mut run: Option<(usize, Vec<u8>)> = None;
        for (i, row) in txn.rows.iter().enumerate() {
            let unit = Unit::Row { txn: t, row: i };
            match row.kind {
                b'h' if keeps_context => {}
                b'h' => p.push_unit(unit, build::query_bytes(&row.text), false),
                b'q' if coarse && !changes_lexing(&row.text) => match &mut run {
                    Some((_, text)) => {
                        // A newline first: the statement may end in a line comment.
                        text.extend_from_slice(b"\n;\n");
                        text.extend_from_slice(&row.text);
                    }
                    None => run = Some((i, row.text.clone())),
                },
                b'q' => {
                    p.flush_run(t, &mut run);
                    p.push_unit(unit, build::query_bytes(&row.text), false);
                }
                b'x' => {
                    p.flush_run(t, &mut run);
                    let types: Vec<u32> = row
                        .param_types
                        .as_deref()
                        .unwrap_or(&[])
                        .iter()
                        .map(|&t| if t >= FIRST_USER_OID { 0 } else { t })
                        .collect();
                    p.messages.push(build::parse("", &row.text, &types));
                    let tail = row.params.as_deref().unwrap_or(&[0, 0, 0, 0, 0, 0]);
                    p.messages.push(build::bind_raw("", "", tail));
                    p.messages.push(build::execute("", 0));
                    p.push_unit(unit, build::sync(), false);
                }
                b'c' => {
                    p.flush_run(t, &mut run);
                    p.messages.push(build::query_bytes(&row.text));
                    for chunk in row.params.as_deref().unwrap_or(&[]).chunks(COPY_CHUNK) {
                        p.messages.push(build::copy_data(chunk));
                    }
                    p.push_unit(unit, build::copy_done(), true);
                }
                k => return Err(UnknownKind { lsn: txn.lsn, seq: row.seq, kind: k as char }),
            }
        }
        p.flush_run(t, &mut run);
    }
    p.push_unit(Unit::Reset, build::query(RESET_SQL), false);
    if txns.iter().any(|t| !t.rows.is_empty()) {
        p.messages.push(build::parse("", LOG_COPY_SQL, &LOG_COPY_TYPES));
        p.messages.push(log_copy_bind(txns.iter().flat_map(|t| &t.rows)));
        p.messages.push(build::execute("", 0));
        p.push_unit(Unit::LogCopy, build::sync(), false);
    }
    p.push_unit(Unit::Commit, build::query("COMMIT"), false);
    Ok(p)
}

impl Plan {
    /// End a unit with `last` (the message that gets its ReadyForQuery).
    fn push_unit(&mut self, unit: Unit, last: Message, copy: bool) {
        self.messages.push(last);
        self.units.push(unit);
        self.copies.push(copy);
    }

    fn flush_run(&mut self, txn: usize, run: &mut Option<(usize, Vec<u8>)>) {
        if let Some((row, text)) = run.take() {
            self.push_unit(Unit::Row { txn, row }, build::query_bytes(&text), false);
        }
    }
}

/// `next` runs under the context `prev` left: the same header, and nothing in
/// `prev` that could have changed a setting for what follows.
fn same_context(prev: &LoggedTxn, next: &LoggedTxn) -> bool {
    let (Some(a), Some(b)) = (prev.header(), next.header()) else { return false };
    a.text == b.text && !prev.rows.iter().filter(|r| r.kind != b'h').any(|r| may_change_settings(&r.text))
}

/// A statement that may change a session setting (SET, RESET, DISCARD,
/// set_config, or procedural code that could call it).
fn may_change_settings(text: &[u8]) -> bool {
    let lower = text.to_ascii_lowercase();
    let first = lower.split(|c| !c.is_ascii_alphabetic()).find(|w| !w.is_empty()).unwrap_or(b"");
    matches!(first, b"set" | b"reset" | b"discard" | b"do" | b"call") || contains(&lower, b"set_config")
}

/// A statement after which the rest of a query text would be read
/// differently than as a query of its own (the server reads a whole Query
/// message under the encoding and string syntax in force when it arrives).
fn changes_lexing(text: &[u8]) -> bool {
    let lower = text.to_ascii_lowercase();
    [&b"standard_conforming_strings"[..], b"client_encoding", b"names", b"backslash_quote"]
        .iter()
        .any(|w| contains(&lower, w))
        || may_change_settings(text)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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
        // BEGIN, guard, header, q, x (PBES), c (Q d d c), reset, log copy (PBES, all rows), COMMIT.
        assert_eq!(tags(&plan), "QQQQPBESQddcQPBESQ");
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
        let a = LoggedTxn {
            lsn: 7,
            rows: vec![
                row(0, b'h', "RESET ALL"),
                row(1, b'q', "UPDATE t SET a = 1"),
                row(2, b'q', "DELETE FROM u -- x"),
            ],
        };
        let mut b = LoggedTxn { lsn: 8, rows: vec![row(0, b'h', "RESET ALL"), row(1, b'q', "DELETE FROM t")] };
        b.rows.iter_mut().for_each(|r| r.lsn = 8);
        let plan = plan(&[a, b]).unwrap();
        // BEGIN, guard, a (header, both statements in one Query), b (same
        // header, a changed no setting: just its statement), reset, log copy
        // (5 rows in one statement), COMMIT.
        assert_eq!(tags(&plan), "QQQQQQPBESQ");
        assert_eq!(
            plan.units,
            [
                Unit::Begin,
                Unit::Guard,
                Unit::Row { txn: 0, row: 0 },
                Unit::Row { txn: 0, row: 1 },
                Unit::Row { txn: 1, row: 1 },
                Unit::Reset,
                Unit::LogCopy,
                Unit::Commit
            ]
        );
        assert_eq!(plan.messages[3].body(), b"UPDATE t SET a = 1\n;\nDELETE FROM u -- x\0");
        let guard = String::from_utf8_lossy(plan.messages[1].body()).into_owned();
        assert!(guard.contains("SET lsn = 8, applied_at") && guard.contains("WHERE lsn = 6"), "{guard}");
    }

    #[test]
    fn a_group_restores_the_context_where_it_may_have_changed() {
        let txn = |lsn, header: &str, sql: &str| LoggedTxn {
            lsn,
            rows: vec![LogRow::new(lsn, 0, b'h', Some(header)), LogRow::new(lsn, 1, b'q', Some(sql))],
        };
        let units = |txns: &[LoggedTxn]| plan(txns).unwrap().units;
        let reset_and_header = |t| [Unit::Reset, Unit::Row { txn: t, row: 0 }];
        // Another header, or a SET before: reset and header again.
        let u = units(&[txn(1, "RESET ALL", "INSERT INTO t VALUES (1)"), txn(2, "RESET ALL; SET a.b = 1", "SELECT 1")]);
        assert!(u.windows(2).any(|w| w == reset_and_header(1)), "{u:?}");
        let u = units(&[txn(1, "RESET ALL", "set search_path = x"), txn(2, "RESET ALL", "SELECT 1")]);
        assert!(u.windows(2).any(|w| w == reset_and_header(1)), "{u:?}");
        let u = units(&[txn(1, "RESET ALL", "SELECT set_config('a.b', '1', false)"), txn(2, "RESET ALL", "SELECT 1")]);
        assert!(u.windows(2).any(|w| w == reset_and_header(1)), "{u:?}");
        // A statement that changes how text is read ends a merged Query.
        let mut t = txn(1, "RESET ALL", "SET standard_conforming_strings = off");
        t.rows.push(LogRow::new(1, 2, b'q', Some("INSERT INTO t VALUES ('a\\b')")));
        let u = units(&[t, txn(2, "RESET ALL", "SELECT 1")]);
        assert!(u.contains(&Unit::Row { txn: 0, row: 2 }), "{u:?}");
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
    fn parameter_types_are_logged_as_oid_array_text() {
        assert_eq!(oid_array_text(&[]), "{}");
        assert_eq!(oid_array_text(&[23, 16390]), "{23,16390}");
    }
}
