//! chorus's own statements on a client's leader connection (taking the LSN,
//! appending the log entry, committing what chorus opened ...), as protocol
//! messages. Each is a named prepared statement, parsed once per connection:
//! parsing and planning them for every transaction was a fifth of the
//! leader's work under pgbench. A step that uses a statement the connection
//! does not have yet parses it first (after a Close, so a half-failed earlier
//! step never leaves a stale one); the connection learns it has it once the
//! step succeeded, and forgets all of them after any failed step, a DISCARD
//! ALL or DEALLOCATE ALL.

use crate::protocol::Message;
use bytes::{BufMut, BytesMut};
use std::borrow::Cow;
use std::sync::LazyLock;

/// The first write of a transaction runs this: the row lock serializes writing
/// transactions until they end, the value rolls back with them (so LSNs are
/// gapless), and now() is the transaction timestamp the log's literals use.
const TAKE_LSN_SQL: &str =
    "UPDATE _chorus.lsn SET lsn = lsn + 1 RETURNING lsn, (extract(epoch FROM now()) * 1000000)::int8, NULL::text";

/// `$6`: when not empty, the placeholder the texts hold for the transaction
/// timestamp (a transaction that took its LSN in this same step has not told
/// chorus its timestamp yet); the server writes it in, formatted as
/// `rewrite::TimePlan::render` formats it.
const APPEND_SQL: &str = "INSERT INTO _chorus.log (lsn, seq, kind, sql, param_types, params) \
     SELECT l.lsn, u.seq, u.kind, \
       CASE WHEN $6 = '' THEN u.sql ELSE pg_catalog.replace(u.sql, $6, \
         pg_catalog.to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00') END, \
       u.types::oid[], u.params \
     FROM _chorus.lsn l, unnest($1::int4[], $2::\"char\"[], $3::text[], $4::text[], $5::bytea[]) \
     AS u(seq, kind, sql, types, params)";

/// The sequences' state as the take-LSN row's third column (after a `ROLLBACK TO`).
static CAPTURE_SEQUENCES_SQL: LazyLock<String> =
    LazyLock::new(|| format!("SELECT 0::int8, 0::int8, {}", super::sequences::CAPTURE_SQL));

/// Appended to a transaction's entry when sequence values may have moved
/// since it last logged their state (a captured write drew ids the follower
/// does not draw): the `setval` calls, computed by the server as it appends,
/// holding the LSN lock. `$1`: the row's seq.
static APPEND_SEQUENCES_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO _chorus.log (lsn, seq, kind, sql) SELECT l.lsn, $1, 'q', s.s FROM _chorus.lsn l, {} AS s(s) \
         WHERE s.s <> ''",
        super::sequences::CAPTURE_SQL
    )
});

/// One of chorus's own statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    Begin,
    TakeLsn,
    /// The savepoint the client's statements run under (see `take_lsn_messages`).
    Savepoint,
    Append,
    AppendSequences,
    CaptureSequences,
    Commit,
    Rollback,
    /// The transaction's COMMIT does not wait for the WAL flush, and its log
    /// entry wakes other chorus processes' feeds or not (`$1`: 'on'/'off';
    /// see `WriteTxn::append_messages`, migrations/postgres/0006).
    AsyncCommit,
    /// A transaction of its own whose synchronous COMMIT flushes the WAL
    /// written before it (the flush step, see `Internal::Flush`).
    FlushWal,
}

impl Own {
    fn name(self) -> &'static str {
        match self {
            Own::Begin => "_chorus_begin",
            Own::TakeLsn => "_chorus_lsn",
            Own::Savepoint => "_chorus_savepoint",
            Own::Append => "_chorus_append",
            Own::AppendSequences => "_chorus_append_seq",
            Own::CaptureSequences => "_chorus_seq",
            Own::Commit => "_chorus_commit",
            Own::Rollback => "_chorus_rollback",
            Own::AsyncCommit => "_chorus_commit_mode",
            Own::FlushWal => "_chorus_flush",
        }
    }

    fn sql(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Own::Begin => "BEGIN",
            Own::TakeLsn => TAKE_LSN_SQL,
            Own::Savepoint => "SAVEPOINT _chorus_lsn",
            Own::Append => APPEND_SQL,
            Own::AppendSequences => APPEND_SEQUENCES_SQL.as_str(),
            Own::CaptureSequences => CAPTURE_SEQUENCES_SQL.as_str(),
            Own::Commit => "COMMIT",
            Own::Rollback => "ROLLBACK",
            Own::AsyncCommit => {
                "SELECT pg_catalog.set_config('synchronous_commit', 'off', true), \
                 pg_catalog.set_config('_chorus.notify', $1, true)"
            }
            // A transaction that wrote WAL and has an xid waits at a
            // synchronous commit for the flush of its commit record, and so of
            // everything before it (one with an xid and no other WAL does
            // not). A transactional logical message is both, and touches no
            // table; logical decoding consumers see it under the prefix
            // `chorus.flush`, with empty content. The setting says whether
            // this commit waits for the flush at all (not with `off`).
            Own::FlushWal => {
                "SELECT pg_catalog.pg_logical_emit_message(true, 'chorus.flush', ''), \
                 pg_catalog.current_setting('synchronous_commit')"
            }
        })
    }

    fn types(self) -> &'static [u32] {
        match self {
            Own::Append => &[1007, 1002, 1009, 1009, 1001, 25],
            Own::AppendSequences => &[23],
            Own::AsyncCommit => &[25],
            _ => &[],
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// Building one step: which of chorus's statements the connection has, and
/// which the step parses (the connection has them once the step succeeded).
#[derive(Debug, Clone, Copy, Default)]
pub struct Prep {
    have: u16,
    pub parsed: u16,
}

impl Prep {
    /// A step on a connection that has the statements in `have`.
    pub fn on(have: u16) -> Prep {
        Prep { have, parsed: 0 }
    }

    /// A built step of which only what it parses is known (kept with the request).
    pub fn parsed_bits(parsed: u16) -> Prep {
        Prep { have: parsed, parsed }
    }

    /// Parse `own` first unless the connection (or this step) has it.
    fn ensure(&mut self, out: &mut Vec<Message>, own: Own) {
        if self.have & own.bit() == 0 {
            out.push(close_statement(own.name()));
            out.push(parse(own.name(), &own.sql(), own.types()));
            self.have |= own.bit();
            self.parsed |= own.bit();
        }
    }

    /// Run `own` with no parameters.
    pub fn run(&mut self, out: &mut Vec<Message>, own: Own) {
        self.run_with(out, own, &[]);
    }

    /// Run `own` with binary parameters.
    pub fn run_with(&mut self, out: &mut Vec<Message>, own: Own, params: &[Vec<u8>]) {
        self.ensure(out, own);
        out.push(bind(own.name(), params, true));
        out.push(execute());
    }
}

impl crate::backend::ServerConn {
    /// A step built with `prep` ended: what it parsed exists now if it
    /// succeeded; after a failure chorus cannot tell, and parses again.
    pub fn learn_own(&mut self, prep: &Prep, ok: bool) {
        if ok {
            self.own_prepared |= prep.parsed;
        } else {
            self.own_prepared = 0;
        }
    }
}

/// The Sync that ends a step.
pub fn sync() -> Message {
    Message::new(b'S', &[])
}

fn close_statement(name: &str) -> Message {
    let mut b = BytesMut::new();
    b.put_u8(b'S');
    put_cstr(&mut b, name);
    Message::new(b'C', &b)
}

fn parse(name: &str, sql: &str, types: &[u32]) -> Message {
    let mut b = BytesMut::with_capacity(sql.len() + name.len() + 8 + 4 * types.len());
    put_cstr(&mut b, name);
    put_cstr(&mut b, sql);
    b.put_i16(types.len() as i16);
    for t in types {
        b.put_u32(*t);
    }
    Message::new(b'P', &b)
}

/// Bind to the unnamed portal; parameters binary, results text.
fn bind(stmt: &str, params: &[Vec<u8>], binary: bool) -> Message {
    let size: usize = params.iter().map(|p| p.len() + 4).sum();
    let mut b = BytesMut::with_capacity(size + stmt.len() + 16);
    put_cstr(&mut b, "");
    put_cstr(&mut b, stmt);
    if binary && !params.is_empty() {
        b.put_i16(1);
        b.put_i16(1);
    } else {
        b.put_i16(0);
    }
    b.put_i16(params.len() as i16);
    for p in params {
        b.put_i32(p.len() as i32);
        b.put_slice(p);
    }
    b.put_i16(0);
    Message::new(b'B', &b)
}

fn execute() -> Message {
    let mut b = BytesMut::with_capacity(5);
    put_cstr(&mut b, "");
    b.put_i32(0);
    Message::new(b'E', &b)
}

fn put_cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(m: &[Message]) -> String {
        m.iter().map(|m| m.tag as char).collect()
    }

    #[test]
    fn statements_are_parsed_once_per_connection() {
        let mut out = Vec::new();
        let mut p = Prep::on(0);
        p.run(&mut out, Own::TakeLsn);
        p.run(&mut out, Own::TakeLsn);
        assert_eq!(tags(&out), "CPBEBE", "parsed once within a step");
        let mut again = Prep::on(p.parsed);
        let mut out = Vec::new();
        again.run(&mut out, Own::TakeLsn);
        again.run(&mut out, Own::Commit);
        assert_eq!(tags(&out), "BECPBE");
        assert_eq!(again.parsed, Own::Commit.bit());
        let names: std::collections::HashSet<&str> = [
            Own::Begin,
            Own::TakeLsn,
            Own::Savepoint,
            Own::Append,
            Own::AppendSequences,
            Own::CaptureSequences,
            Own::Commit,
            Own::Rollback,
            Own::AsyncCommit,
            Own::FlushWal,
        ]
        .iter()
        .map(|o| o.name())
        .collect();
        assert_eq!(names.len(), 10, "every statement has its own name");
    }
}
