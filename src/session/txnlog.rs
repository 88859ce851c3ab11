//! The leader-side half of statement replication for one session: the log
//! entry of the writing transaction in progress, and the messages chorus adds
//! around the client's own to take the transaction's LSN and append its entry.
//!
//! Entries are collected as requests are sent (a failed request leaves the
//! transaction aborted, so it either never commits or is cut back by
//! `ROLLBACK TO`, which truncates the entries to the savepoint). The entry is
//! rendered (transaction-time functions turned into literals of the leader's
//! transaction timestamp) and inserted into `_chorus.log` in the same
//! transaction, just before it commits. See migrations/postgres/0001_log.sql
//! for the format.

use super::capture::CaptureSpec;
use super::own::{Own, Prep, sync};
use crate::protocol::Message;
use crate::protocol::array::binary_array;
use crate::sql::rewrite::{self, TimePlan};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;

/// Stands for the transaction timestamp in texts logged before it is known
/// (see `APPEND_SQL`). A text that contains it is never logged that way.
pub const TIME_PLACEHOLDER: &str = "\u{1}chorus:txn-time\u{1}";

/// Rows per Bind of the append statement, and the bytes after which a new Bind starts.
const APPEND_ROWS: usize = 2000;
const APPEND_BYTES: usize = 32 << 20;

/// A captured write's rows are logged in log rows of at most this many rows
/// or bytes each, so a follower applies them in statements of bounded size.
const CAPTURED_ROWS_PER_ENTRY: usize = 1000;
const CAPTURED_BYTES_PER_ENTRY: usize = 4 << 20;

/// How a follower applies captured rows (migrations/postgres/0003_capture.sql):
/// the table as the client wrote it (resolved under the replayed
/// search_path), the operation, the rows, whether to leave triggers out.
const APPLY_ROWS_SQL: &str = "SELECT _chorus.apply_rows($1::pg_catalog.regclass, $2, $3, $4)";
const APPLY_ROWS_TYPES: &str = "{25,25,1009,16}";

/// One logged statement.
pub enum Entry {
    /// A simple-protocol query text (maybe several statements).
    Query { sql: Arc<str>, plan: TimePlan },
    /// An extended-protocol execution: statement text, Parse parameter types,
    /// and the Bind message from its parameter format codes on.
    Extended { sql: Arc<str>, plan: TimePlan, types: Vec<u32>, tail: Bytes },
    /// COPY FROM STDIN and the data the client sent.
    Copy { sql: Arc<str>, data: BytesMut },
    /// A captured write (see `capture`): the rows the leader wrote, each the
    /// text of its row type, collected as its results arrive.
    /// `id` tells the entry from others while its rows arrive (a `ROLLBACK
    /// TO` in the same request may have cut it already).
    Captured { id: u64, spec: Arc<CaptureSpec>, rows: Vec<Bytes> },
}

/// A savepoint, as a position in the entries.
struct Savepoint {
    name: String,
    at: usize,
}

/// What a `ROLLBACK TO` undid.
#[derive(Debug, PartialEq, Eq)]
pub enum Undone {
    /// The savepoint is not one this log knows: it is older than everything
    /// logged (and than the LSN, if one was taken).
    Everything,
    /// What was logged after the savepoint.
    SinceSavepoint,
    /// The LSN too (it was taken after the savepoint); what was logged before
    /// the savepoint stays, to be logged with an LSN taken at commit.
    Lsn,
}

/// The writing transaction in progress on the leader.
pub struct WriteTxn {
    pub lsn: Option<i64>,
    /// now() of the transaction on the leader, µs since the Unix epoch.
    pub micros: Option<i64>,
    /// SET script that re-establishes the session context on a follower.
    context: String,
    entries: Vec<Entry>,
    savepoints: Vec<Savepoint>,
    /// Why this transaction cannot be logged faithfully, if it cannot.
    pub poisoned: Option<&'static str>,
    /// The sequence-sync epoch this transaction captured at (sequences.rs).
    pub capture_epoch: Option<u64>,
    /// A `ROLLBACK TO` undid statements that may have used sequence values:
    /// capture the sequences again before the next write.
    pub resync: bool,
    /// A captured write's triggers may have inserted rows chorus has not read
    /// back yet (trigger_rows.rs).
    pub trigger_rows_pending: bool,
    bytes: usize,
    /// Only keyed writes so far, and no LSN: it is taken with the append.
    pub deferred: bool,
    /// Savepoints set before the LSN was taken (rolling back to them undoes it).
    savepoints_before_lsn: usize,
    /// Entries of keyed statements that changed no row: not logged.
    dropped: Vec<usize>,
    /// Captured writes logged so far (their ids).
    captures: u64,
}

impl WriteTxn {
    pub fn new(context: String) -> WriteTxn {
        WriteTxn {
            lsn: None,
            micros: None,
            context,
            entries: Vec::new(),
            savepoints: Vec::new(),
            poisoned: None,
            capture_epoch: None,
            resync: false,
            trigger_rows_pending: false,
            bytes: 0,
            deferred: false,
            savepoints_before_lsn: 0,
            dropped: Vec::new(),
            captures: 0,
        }
    }

    /// A transaction of keyed writes, whose LSN is taken when it commits.
    pub fn deferred(context: String) -> WriteTxn {
        WriteTxn { deferred: true, ..WriteTxn::new(context) }
    }

    /// The LSN was just taken in the middle of a deferred transaction.
    pub fn took_lsn(&mut self, lsn: i64, micros: i64) {
        self.lsn = Some(lsn);
        self.micros = Some(micros);
        self.deferred = false;
        self.savepoints_before_lsn = self.savepoints.len();
    }

    /// The next entry's index.
    pub fn next_index(&self) -> usize {
        self.entries.len()
    }

    /// The keyed statement of entry `index` changed no row: leave it out.
    pub fn drop_entry(&mut self, index: usize) {
        if index < self.entries.len() && !self.dropped.contains(&index) {
            self.dropped.push(index);
        }
    }

    /// Is there anything to log besides the header?
    pub fn has_entries(&self) -> bool {
        self.entries.len() > self.dropped.len()
    }

    pub fn push(&mut self, entry: Entry) {
        self.bytes += match &entry {
            Entry::Query { sql, .. } => sql.len(),
            Entry::Extended { sql, tail, .. } => sql.len() + tail.len(),
            Entry::Copy { sql, data } => sql.len() + data.len(),
            Entry::Captured { rows, .. } => rows.iter().map(Bytes::len).sum(),
        };
        self.entries.push(entry);
    }

    /// Log a captured write; its rows follow with [`WriteTxn::captured_row`]
    /// under the id returned. Sequences may have moved under it.
    pub fn push_captured(&mut self, spec: Arc<CaptureSpec>) -> u64 {
        self.captures += 1;
        self.push(Entry::Captured { id: self.captures, spec, rows: Vec::new() });
        self.resync = true;
        self.captures
    }

    /// A row the captured write `id` wrote.
    pub fn captured_row(&mut self, id: u64, row: Bytes) {
        let entry = self.entries.iter_mut().rev().find(|e| matches!(e, Entry::Captured { id: i, .. } if *i == id));
        if let Some(Entry::Captured { rows, .. }) = entry {
            self.bytes += row.len();
            rows.push(row);
        }
    }

    /// Bytes of statements and data held for the log.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// CopyData of the COPY being logged.
    pub fn copy_data(&mut self, payload: &[u8]) {
        if let Some(Entry::Copy { data, .. }) = self.entries.last_mut() {
            data.put_slice(payload);
            self.bytes += payload.len();
        }
    }

    pub fn savepoint(&mut self, name: &str) {
        self.savepoints.push(Savepoint { name: name.to_string(), at: self.entries.len() });
    }

    /// `ROLLBACK TO name`: what was logged after the savepoint is undone, and
    /// the statements undone may have used sequence values.
    pub fn rollback_to(&mut self, name: &str) -> Undone {
        let Some(i) = self.savepoints.iter().rposition(|s| s.name == name) else { return Undone::Everything };
        let at = self.savepoints[i].at;
        self.entries.truncate(at);
        self.dropped.retain(|&d| d < at);
        self.savepoints.truncate(i + 1);
        if i < self.savepoints_before_lsn {
            // Back to keyed writes only, without an LSN.
            self.lsn = None;
            self.micros = None;
            self.deferred = true;
            self.savepoints_before_lsn = 0;
            self.capture_epoch = None;
            self.resync = false;
            return Undone::Lsn;
        }
        // Without the LSN lock there is nothing to capture sequences under
        // (and keyed writes use none).
        self.resync = !self.deferred;
        Undone::SinceSavepoint
    }

    /// `RELEASE name` succeeded: the savepoint and later ones are gone.
    pub fn release(&mut self, name: &str) {
        if let Some(i) = self.savepoints.iter().rposition(|s| s.name == name) {
            self.savepoints.truncate(i);
        }
    }

    /// Messages that take the LSN (opening the transaction first when `begin`).
    pub fn take_lsn_messages(begin: bool, prep: &mut Prep) -> Vec<Message> {
        let mut out = Vec::with_capacity(10);
        if begin {
            prep.run(&mut out, Own::Begin);
        }
        prep.run(&mut out, Own::TakeLsn);
        // The client's statements run below this savepoint. An error aborts
        // only the subtransaction, so the LSN row lock is held until chorus has
        // seen the error (and noted that sequence values may be lost) and the
        // transaction ends; a plain abort would release it at once.
        prep.run(&mut out, Own::Savepoint);
        out.push(sync());
        out
    }

    /// Messages that open a transaction (without an LSN: a deferred one).
    pub fn begin_messages(prep: &mut Prep) -> Vec<Message> {
        one_step(prep, Own::Begin)
    }

    /// Messages that capture the sequences' state (after a `ROLLBACK TO`).
    pub fn capture_messages(prep: &mut Prep) -> Vec<Message> {
        one_step(prep, Own::CaptureSequences)
    }

    /// Log the captured sequence state (setval calls) as the next entry.
    pub fn push_sequences(&mut self, script: &str) {
        if script.is_empty() {
            return;
        }
        if let Ok(plan) = plan_text(script) {
            self.push(Entry::Query { sql: script.into(), plan });
        }
    }

    /// Messages that append this transaction's entry, then commit when
    /// `commit`. A deferred transaction takes its LSN first, in the same step
    /// (and, when every statement it logged changed nothing, logs nothing).
    /// `notify`: the entry wakes other chorus processes' feeds (NOTIFY).
    pub fn append_messages(&self, commit: bool, notify: bool, prep: &mut Prep) -> Vec<Message> {
        let mut out = Vec::new();
        let take_lsn = self.deferred && self.lsn.is_none();
        if take_lsn && !self.has_entries() {
            if commit {
                prep.run(&mut out, Own::Commit);
            }
            out.push(sync());
            return out;
        }
        if take_lsn {
            prep.run(&mut out, Own::TakeLsn);
        }
        // The transaction holds the LSN row lock until it has committed:
        // waiting for the WAL flush under it would make every writer's flush
        // wait for the one before (no group commit). It commits without
        // waiting; the client hears of its commit only after chorus's flush
        // step (a synchronous commit of its own) has flushed the WAL, and the
        // feed hands followers only flushed entries. Set before the append,
        // whose trigger reads whether to NOTIFY.
        let notify: &[u8] = if notify { b"on" } else { b"off" };
        prep.run_with(&mut out, Own::AsyncCommit, &[notify.to_vec()]);
        let micros = self.micros.unwrap_or(0);
        let render = |plan: &TimePlan, sql: &'_ str| -> String {
            if take_lsn {
                plan.render_with(sql, TIME_PLACEHOLDER).into_owned()
            } else {
                plan.render(sql, micros).into_owned()
            }
        };
        let placeholder = if take_lsn { TIME_PLACEHOLDER } else { "" };
        let mut rows = Rows::default();
        rows.push(0, b'h', Some(self.context.as_bytes()), None, None);
        let mut seq = 0;
        for (i, e) in self.entries.iter().enumerate() {
            if self.dropped.contains(&i) {
                continue;
            }
            seq += 1;
            match e {
                Entry::Query { sql, plan } => {
                    let text = render(plan, sql);
                    rows.push(seq, b'q', Some(text.as_bytes()), None, None)
                }
                Entry::Extended { sql, plan, types, tail } => {
                    let text = render(plan, sql);
                    let types = oid_array_text(types);
                    rows.push(seq, b'x', Some(text.as_bytes()), Some(types.as_bytes()), Some(tail))
                }
                Entry::Copy { sql, data } => rows.push(seq, b'c', Some(sql.as_bytes()), None, Some(data)),
                Entry::Captured { spec, rows: captured, .. } => {
                    seq -= 1;
                    for chunk in captured_chunks(captured) {
                        seq += 1;
                        let params = apply_rows_params(spec, chunk);
                        rows.push(
                            seq,
                            b'x',
                            Some(APPLY_ROWS_SQL.as_bytes()),
                            Some(APPLY_ROWS_TYPES.as_bytes()),
                            Some(&params),
                        );
                        if rows.len() >= APPEND_ROWS || rows.bytes >= APPEND_BYTES {
                            std::mem::take(&mut rows).bind_execute(&mut out, placeholder, prep);
                        }
                    }
                }
            }
            if rows.len() >= APPEND_ROWS || rows.bytes >= APPEND_BYTES {
                std::mem::take(&mut rows).bind_execute(&mut out, placeholder, prep);
            }
        }
        if rows.len() > 0 {
            rows.bind_execute(&mut out, placeholder, prep);
        }
        if self.resync && !take_lsn {
            // The sequences' state after everything above.
            prep.run_with(&mut out, Own::AppendSequences, &[(seq + 1).to_be_bytes().to_vec()]);
        }
        if commit {
            prep.run(&mut out, Own::Commit);
        }
        out.push(sync());
        out
    }

    /// Messages of the flush step: a transaction whose synchronous commit
    /// flushes the WAL (up to and including the commit before it).
    pub fn flush_messages(prep: &mut Prep) -> Vec<Message> {
        one_step(prep, Own::FlushWal)
    }

    /// Messages that roll back the transaction chorus opened.
    pub fn rollback_messages(prep: &mut Prep) -> Vec<Message> {
        one_step(prep, Own::Rollback)
    }
}

/// One of chorus's own statements as a step of its own (ended by Sync).
fn one_step(prep: &mut Prep, own: Own) -> Vec<Message> {
    let mut out = Vec::with_capacity(5);
    prep.run(&mut out, own);
    out.push(sync());
    out
}

/// A captured write's rows in groups of bounded size (none when it wrote no row).
fn captured_chunks(rows: &[Bytes]) -> Vec<&[Bytes]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in rows.iter().enumerate() {
        if i > start && (i - start >= CAPTURED_ROWS_PER_ENTRY || bytes + r.len() > CAPTURED_BYTES_PER_ENTRY) {
            out.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += r.len();
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// The Bind tail (see `Entry::Extended`) of one `APPLY_ROWS_SQL`: table,
/// operation, rows and the triggers flag, all binary (a text's binary form is its bytes).
fn apply_rows_params(spec: &CaptureSpec, rows: &[Bytes]) -> Vec<u8> {
    let array = binary_array(25, rows.iter().map(|r| Some(&r[..])));
    let quiet = [u8::from(spec.quiet)];
    let values: [Option<&[u8]>; 4] =
        [Some(spec.table_sql.as_bytes()), Some(spec.op.as_str().as_bytes()), Some(&array), Some(&quiet)];
    crate::protocol::build::bind_tail(&[1], &values, &[])
}

/// Make a statement deterministic for the log, or say why it cannot be.
pub fn plan_text(sql: &str) -> Result<TimePlan, rewrite::Nondeterministic> {
    rewrite::plan(sql)
}

/// The rows of one Bind of the append statement, as binary arrays.
#[derive(Default)]
struct Rows {
    seq: Vec<i32>,
    kind: Vec<u8>,
    sql: Vec<Option<Vec<u8>>>,
    types: Vec<Option<Vec<u8>>>,
    params: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

impl Rows {
    fn len(&self) -> usize {
        self.seq.len()
    }

    fn push(&mut self, seq: i32, kind: u8, sql: Option<&[u8]>, types: Option<&[u8]>, params: Option<&[u8]>) {
        self.bytes += sql.map_or(0, <[u8]>::len) + params.map_or(0, <[u8]>::len);
        self.seq.push(seq);
        self.kind.push(kind);
        self.sql.push(sql.map(<[u8]>::to_vec));
        self.types.push(types.map(<[u8]>::to_vec));
        self.params.push(params.map(<[u8]>::to_vec));
    }

    /// Bind (all parameters binary) and Execute the append statement.
    fn bind_execute(self, out: &mut Vec<Message>, placeholder: &str, prep: &mut Prep) {
        let seq: Vec<Option<Vec<u8>>> = self.seq.iter().map(|s| Some(s.to_be_bytes().to_vec())).collect();
        let kind: Vec<Option<Vec<u8>>> = self.kind.iter().map(|k| Some(vec![*k])).collect();
        let params = [
            binary_array(23, seq.iter().map(|i| i.as_deref())),
            binary_array(18, kind.iter().map(|i| i.as_deref())),
            binary_array(25, self.sql.iter().map(|i| i.as_deref())),
            binary_array(25, self.types.iter().map(|i| i.as_deref())),
            binary_array(17, self.params.iter().map(|i| i.as_deref())),
            placeholder.as_bytes().to_vec(),
        ];
        prep.run_with(out, Own::Append, &params);
    }
}

/// `{23,25}`: a Parse's parameter types as an oid[] literal (user-defined
/// types, whose OIDs differ between servers, become 0: the follower infers them).
fn oid_array_text(types: &[u32]) -> String {
    let mut s = String::from("{");
    for (i, t) in types.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let t = if *t >= 16384 { 0 } else { *t };
        s.push_str(&t.to_string());
    }
    s.push('}');
    s
}

/// The take-LSN step's DataRow: the LSN, the transaction timestamp and the
/// captured sequences' `setval` script (empty when not captured).
/// The flush step's row (the logical message's position, the session's
/// `synchronous_commit`): does its commit wait for the WAL flush?
pub fn flush_row_waits(body: &[u8]) -> bool {
    let mut f = crate::protocol::Fields::new(body);
    if f.i16() != Some(2) {
        return false;
    }
    let mut next = || -> Option<&[u8]> {
        let n = usize::try_from(f.i32()?).ok()?;
        f.bytes(n)
    };
    let (_, setting) = (next(), next());
    setting.is_some_and(|v| v != b"off")
}

pub fn parse_lsn_row(body: &[u8]) -> Option<(i64, i64, String)> {
    let mut f = crate::protocol::Fields::new(body);
    if f.i16()? != 3 {
        return None;
    }
    let mut next = || -> Option<Option<&str>> {
        let n = f.i32()?;
        if n < 0 {
            return Some(None);
        }
        let v = f.bytes(usize::try_from(n).ok()?)?;
        std::str::from_utf8(v).ok().map(Some)
    };
    let lsn = next()??.parse().ok()?;
    let micros = next()??.parse().ok()?;
    let script = next()?.unwrap_or("").to_string();
    Some((lsn, micros, script))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flush_row_says_whether_the_commit_waited() {
        let row = |setting: &[u8]| {
            let mut b = vec![0, 2, 0, 0, 0, 9];
            b.extend_from_slice(b"0/16B3748");
            b.extend_from_slice(&(setting.len() as i32).to_be_bytes());
            b.extend_from_slice(setting);
            b
        };
        assert!(flush_row_waits(&row(b"on")));
        assert!(flush_row_waits(&row(b"local")));
        assert!(flush_row_waits(&row(b"remote_apply")));
        assert!(!flush_row_waits(&row(b"off")));
        assert!(!flush_row_waits(&[0, 1, 0, 0, 0, 2, b'o', b'n']), "the old one-column row");
    }

    #[test]
    fn user_type_oids_become_unspecified() {
        assert_eq!(oid_array_text(&[23, 25, 16385, 0]), "{23,25,0,0}");
        assert_eq!(oid_array_text(&[]), "{}");
    }

    #[test]
    fn lsn_row_parses() {
        let mut b = Vec::new();
        b.extend_from_slice(&3i16.to_be_bytes());
        for v in ["42", "1700000000123456"] {
            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
            b.extend_from_slice(v.as_bytes());
        }
        b.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(parse_lsn_row(&b), Some((42, 1_700_000_000_123_456, String::new())));
    }

    #[test]
    fn rollback_to_cuts_entries() {
        let mut t = WriteTxn::new(String::new());
        let q = |s: &str| Entry::Copy { sql: s.into(), data: BytesMut::new() };
        t.push(q("a"));
        t.savepoint("s");
        t.push(q("b"));
        t.push(q("c"));
        assert_eq!(t.rollback_to("s"), Undone::SinceSavepoint);
        assert_eq!(t.entries.len(), 1);
        assert!(t.resync);
        t.push(q("d"));
        t.release("s");
        assert_eq!(t.rollback_to("s"), Undone::Everything, "a released (or older) savepoint is not ours");
        assert_eq!(t.entries.len(), 2);
    }

    #[test]
    fn rolling_back_past_a_late_lsn_defers_it_again() {
        let q = |s: &str| Entry::Copy { sql: s.into(), data: BytesMut::new() };
        let mut t = WriteTxn::deferred(String::new());
        t.push(q("keyed"));
        t.savepoint("a");
        t.push(q("keyed, changed nothing"));
        t.drop_entry(1);
        t.took_lsn(5, 0);
        t.push(q("not keyed"));
        assert!(!t.deferred);
        assert_eq!(t.rollback_to("a"), Undone::Lsn);
        assert!(t.deferred && t.lsn.is_none() && !t.resync);
        assert_eq!(t.entries.len(), 1);
        assert!(t.has_entries());
        t.push(q("keyed again"));
        t.drop_entry(1);
        assert!(t.has_entries(), "the first entry stays");
    }

    #[test]
    fn a_deferred_transaction_takes_its_lsn_with_the_append() {
        let mut t = WriteTxn::deferred("RESET ALL".into());
        let sql = "INSERT INTO h VALUES (1, now())";
        t.push(Entry::Query { sql: sql.into(), plan: plan_text(sql).unwrap() });
        let m = t.append_messages(true, true, &mut Prep::on(0));
        let texts: Vec<String> = m.iter().map(|m| String::from_utf8_lossy(&m.frame).into_owned()).collect();
        assert!(texts[1].contains("UPDATE _chorus.lsn"), "takes the LSN first: {texts:?}");
        assert!(texts.iter().any(|t| t.contains(TIME_PLACEHOLDER)), "time written in by the server");
        t.drop_entry(0);
        let m = t.append_messages(true, true, &mut Prep::on(0));
        assert!(!m.iter().any(|m| String::from_utf8_lossy(&m.frame).contains("_chorus.l")), "nothing to log");
    }
}
