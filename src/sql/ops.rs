//! Pure: what one statement means for the replication log ([`StmtOp`]), from
//! its AST (when it parsed), its text and what the collector saw it do.
//!
//! The transaction-control statements matter because they decide where the
//! session takes the LSN and appends the log entry; the rest is a write
//! (logged), a read (not logged), or something chorus refuses to replicate.

use sqlparser::ast::{
    CopySource, CopyTarget, Expr, ObjectName, OnCommit, Query, SetExpr, Statement, TransactionIsolationLevel,
    TransactionMode,
};

use super::collect::{Effect, access_mode, fold, fold_ident, in_temp_schema};
use super::settings::savepoint_name;
use super::{Isolation, StmtOp};

/// The replication meaning of one top-level statement.
pub(super) fn op_of(stmt: Option<&Statement>, text: &str, effect: Effect) -> StmtOp {
    if let Some(op) = op_by_keywords(text) {
        return op;
    }
    if let Some(stmt) = stmt {
        match stmt {
            // A read-only transaction takes no LSN, whatever its isolation.
            Statement::StartTransaction { modes, .. } if access_mode(modes) == Some(true) => {
                return StmtOp::Begin { isolation: None };
            }
            Statement::StartTransaction { modes, .. } => return StmtOp::Begin { isolation: isolation(modes) },
            Statement::Commit { chain: false, modifier: None, .. } => return StmtOp::Commit,
            Statement::Commit { .. } => return StmtOp::NotReplicable("COMMIT AND CHAIN"),
            Statement::Rollback { chain: false, savepoint: None } => return StmtOp::Rollback,
            Statement::Rollback { chain: false, savepoint: Some(name) } => {
                return StmtOp::RollbackTo(savepoint_name(name));
            }
            Statement::Rollback { .. } => return StmtOp::NotReplicable("ROLLBACK AND CHAIN"),
            Statement::Savepoint { name } => return StmtOp::Savepoint(savepoint_name(name)),
            Statement::CreateTable(ct) if ct.temporary || in_temp_schema(&ct.name) => {
                let until_commit = matches!(ct.on_commit, Some(OnCommit::Drop));
                return StmtOp::CreateTemp { name: temp_name(&ct.name), until_commit };
            }
            Statement::CreateView(v) if v.temporary || in_temp_schema(&v.name) => {
                return StmtOp::CreateTemp { name: temp_name(&v.name), until_commit: false };
            }
            Statement::CreateSequence { temporary, name, .. } if *temporary || in_temp_schema(name) => {
                return StmtOp::CreateTemp { name: temp_name(name), until_commit: false };
            }
            // Written in a way the keywords above do not see (a comment
            // between them, say).
            Statement::CreateIndex(ci) if ci.concurrently => {
                return concurrently(text, false).unwrap_or(StmtOp::NotReplicable(CONCURRENTLY_UNREADABLE));
            }

            Statement::Query(q) if let Some(name) = select_into_temp(q) => {
                return StmtOp::CreateTemp { name, until_commit: false };
            }
            Statement::ReleaseSavepoint { name } => return StmtOp::Release(savepoint_name(name)),
            Statement::Copy { to: false, target, source, .. } => {
                return match (target, source) {
                    (CopyTarget::Stdin, CopySource::Table { .. }) => StmtOp::CopyIn,
                    _ => StmtOp::NotReplicable("COPY FROM a file or program on the server"),
                };
            }
            _ => {}
        }
    }
    match effect {
        Effect::Read => StmtOp::Read,
        Effect::MaybeWrite => StmtOp::MaybeWrite,
        Effect::Write => StmtOp::Write,
    }
}

/// A temporary object's name without its schema (it can only be `pg_temp`).
fn temp_name(name: &ObjectName) -> String {
    fold(name).pop().unwrap_or_default()
}

/// `SELECT ... INTO TEMP name ...`: the temporary table it creates.
fn select_into_temp(q: &Query) -> Option<String> {
    let SetExpr::Select(select) = q.body.as_ref() else { return None };
    let into = select.into.as_ref()?;
    let target = match into.targets.first()? {
        Expr::Identifier(id) => vec![fold_ident(id)],
        Expr::CompoundIdentifier(ids) => ids.iter().map(fold_ident).collect(),
        _ => return None,
    };
    let temporary = into.temporary || (target.len() == 2 && target[0].starts_with("pg_temp"));
    temporary.then(|| target.last().cloned().unwrap_or_default())
}

fn isolation(modes: &[TransactionMode]) -> Option<Isolation> {
    modes.iter().find_map(|m| match m {
        TransactionMode::IsolationLevel(
            TransactionIsolationLevel::RepeatableRead
            | TransactionIsolationLevel::Serializable
            | TransactionIsolationLevel::Snapshot,
        ) => Some(Isolation::Snapshot),
        TransactionMode::IsolationLevel(_) => Some(Isolation::ReadCommitted),
        _ => None,
    })
}

/// Statements recognised by their leading keywords, parsed or not.
fn op_by_keywords(text: &str) -> Option<StmtOp> {
    // (Comments between the keywords are skipped here.)
    let head: Vec<String> = head_words(text, 4).into_iter().map(|(w, _)| w.to_ascii_lowercase()).collect();
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    match head.as_slice() {
        ["create", "index", "concurrently", ..] | ["create", "unique", "index", "concurrently"] => {
            return Some(concurrently(text, false).unwrap_or(StmtOp::NotReplicable(CONCURRENTLY_UNREADABLE)));
        }
        ["drop", "index", "concurrently", ..] => {
            return Some(concurrently(text, true).unwrap_or(StmtOp::NotReplicable(CONCURRENTLY_UNREADABLE)));
        }
        _ => {}
    }
    let mut words = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase());
    let first = words.next()?;
    if first == "copy" {
        // `COPY (query) TO ...` is a read; the normalizer keeps the parenthesis.
        if text.trim_start()[4..].trim_start().starts_with('(') {
            return Some(StmtOp::Read);
        }
        return Some(copy_op(words));
    }
    let second = words.next().unwrap_or_default();
    let op = match (first.as_str(), second.as_str()) {
        ("vacuum" | "analyze" | "analyse" | "checkpoint" | "cluster" | "reindex", _) => StmtOp::Maintenance,
        ("create" | "drop", "database") => match super::database::parse(text) {
            Some(d) => StmtOp::Database { drop: d.drop },
            None => StmtOp::NotReplicable("CREATE/DROP DATABASE written so that chorus cannot read the database's name"),
        },
        ("create" | "drop" | "alter", "tablespace") => StmtOp::NotReplicable("tablespaces"),
        ("alter", "system") => StmtOp::NotReplicable("ALTER SYSTEM"),
        ("prepare", "transaction") | ("commit" | "rollback", "prepared") => {
            StmtOp::NotReplicable("two-phase commit (PREPARE TRANSACTION)")
        }
        ("execute", _) => StmtOp::Execute,
        // Session and server state, no data: not logged.
        (
            "prepare" | "deallocate" | "discard" | "listen" | "unlisten" | "notify" | "lock" | "load" | "set" | "reset"
            | "show" | "fetch" | "move" | "close" | "declare",
            _,
        ) => StmtOp::Read,
        _ => return None,
    };
    Some(op)
}

const CONCURRENTLY_UNREADABLE: &str =
    "CREATE INDEX CONCURRENTLY written so that chorus cannot remove CONCURRENTLY for the followers";

/// `CREATE [UNIQUE] INDEX CONCURRENTLY` / `DROP INDEX CONCURRENTLY`: what
/// the followers run instead, in a logged transaction (see
/// `StmtOp::Concurrently`). The DROP becomes `DROP INDEX IF EXISTS`: a
/// CONCURRENTLY build that failed leaves an invalid index on the leader
/// only, and dropping it must not fail on a follower.
fn concurrently(text: &str, drop: bool) -> Option<StmtOp> {
    without_concurrently(text, drop).map(|_| StmtOp::Concurrently { drop })
}

/// The statement the followers run for `CREATE [UNIQUE] INDEX CONCURRENTLY`
/// / `DROP INDEX CONCURRENTLY` (`drop`) written as `text` (the client's own
/// text: classification sees it without its literals, and a partial index's
/// predicate needs them).
pub fn without_concurrently(text: &str, drop: bool) -> Option<String> {
    let words = head_words(text, 6);
    let at = words.iter().find(|(w, _)| w.eq_ignore_ascii_case("concurrently"))?.1.clone();
    let after = &text[at.end..];
    let rest = after.trim_start();
    let has_if_exists = {
        let next = head_words(rest, 2);
        next.len() == 2 && next[0].0.eq_ignore_ascii_case("if") && next[1].0.eq_ignore_ascii_case("exists")
    };
    let middle = if drop && !has_if_exists { " IF EXISTS " } else { " " };
    Some(format!("{}{middle}{rest}", text[..at.start].trim_end()))
}

/// The first `n` words of `text` with their byte ranges (comments skipped;
/// a word is a run of identifier characters).
fn head_words(text: &str, n: usize) -> Vec<(&str, std::ops::Range<usize>)> {
    use super::normalize::{is_ident_byte, skip_block_comment};
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() && out.len() < n {
        if b[i] == b'-' && b.get(i + 1) == Some(&b'-') {
            i = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p);
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i = skip_block_comment(b, i);
        } else if is_ident_byte(b[i]) {
            let start = i;
            while i < b.len() && is_ident_byte(b[i]) {
                i += 1;
            }
            out.push((&text[start..i], start..i));
        } else if b[i].is_ascii_whitespace() {
            i += 1;
        } else {
            break;
        }
    }
    out
}

/// COPY by its words, so options sqlparser does not know (`WITH (FREEZE on)`,
/// pgbench's) do not hide what it is. The first top-level FROM or TO decides.
fn copy_op(words: impl Iterator<Item = String>) -> StmtOp {
    let mut words = words.peekable();
    while let Some(w) = words.next() {
        match w.as_str() {
            "to" => return StmtOp::Read,
            "from" => {
                return match words.peek().map(String::as_str) {
                    Some("stdin") => StmtOp::CopyIn,
                    _ => StmtOp::NotReplicable("COPY FROM a file or program on the server"),
                };
            }
            _ => {}
        }
    }
    StmtOp::Write
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use super::*;

    #[test]
    fn concurrently_removed_for_the_followers() {
        let cases = [
            ("CREATE INDEX CONCURRENTLY i ON t (a) WHERE s = 'on'", false, "CREATE INDEX i ON t (a) WHERE s = 'on'"),
            (
                "create unique index concurrently if not exists i on t (lower(a))",
                false,
                "create unique index if not exists i on t (lower(a))",
            ),
            ("CREATE INDEX CONCURRENTLY ON t (a)", false, "CREATE INDEX ON t (a)"),
            ("CREATE /* c */ INDEX CONCURRENTLY i ON t (a)", false, "CREATE /* c */ INDEX i ON t (a)"),
            ("DROP INDEX CONCURRENTLY i", true, "DROP INDEX IF EXISTS i"),
            ("drop index concurrently if exists s.i", true, "drop index if exists s.i"),
        ];
        for (text, drop, want) in cases {
            assert_eq!(without_concurrently(text, drop).as_deref(), Some(want), "{text}");
        }
    }

    fn temp(name: &str) -> StmtOp {
        StmtOp::CreateTemp { name: name.into(), until_commit: false }
    }

    fn ops(sql: &str) -> Vec<StmtOp> {
        classify(sql).ops
    }

    #[test]
    fn statements_and_their_ops() {
        use StmtOp::*;
        let cases: Vec<(&str, Vec<StmtOp>)> = vec![
            ("SELECT 1", vec![Read]),
            ("SELECT my_func(1)", vec![MaybeWrite]),
            ("SELECT nextval('s')", vec![Write]),
            ("SELECT setval('s', 10)", vec![Write]),
            ("SELECT lastval()", vec![Read]),
            ("SELECT random(), pg_notify('c', 'x')", vec![Read]),
            ("SELECT pg_advisory_lock(1)", vec![Read]),
            ("SELECT * FROM t FOR UPDATE", vec![Read]),
            ("INSERT INTO t VALUES (1)", vec![Write]),
            ("UPDATE t SET a = 1", vec![Write]),
            ("DELETE FROM t", vec![Write]),
            ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", vec![Write]),
            ("CREATE TABLE t (a int)", vec![Write]),
            ("CREATE TABLE t2 AS SELECT * FROM t", vec![Write]),
            ("TRUNCATE t", vec![Write]),
            ("DO $$ BEGIN INSERT INTO t VALUES (1); END $$", vec![Write]),
            ("CALL p(1)", vec![Write]),
            ("COPY t FROM STDIN", vec![CopyIn]),
            ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", vec![CopyIn]),
            ("COPY t FROM '/tmp/x'", vec![NotReplicable("COPY FROM a file or program on the server")]),
            ("COPY t TO STDOUT", vec![Read]),
            ("copy pgbench_accounts from stdin with (freeze on)", vec![CopyIn]),
            ("COPY (SELECT * FROM x) TO STDOUT", vec![Read]),
            ("COPY t FROM PROGRAM 'cat'", vec![NotReplicable("COPY FROM a file or program on the server")]),
            ("BEGIN", vec![Begin { isolation: None }]),
            ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", vec![Begin { isolation: Some(Isolation::Snapshot) }]),
            ("BEGIN ISOLATION LEVEL REPEATABLE READ", vec![Begin { isolation: Some(Isolation::Snapshot) }]),
            ("BEGIN ISOLATION LEVEL READ COMMITTED", vec![Begin { isolation: Some(Isolation::ReadCommitted) }]),
            ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", vec![Begin { isolation: None }]),
            ("COMMIT", vec![Commit]),
            ("END", vec![Commit]),
            ("ROLLBACK", vec![Rollback]),
            ("ABORT", vec![Rollback]),
            ("SAVEPOINT Sp1", vec![Savepoint("sp1".into())]),
            ("ROLLBACK TO SAVEPOINT sp1", vec![RollbackTo("sp1".into())]),
            ("RELEASE SAVEPOINT \"X\"", vec![Release("X".into())]),
            ("COMMIT AND CHAIN", vec![NotReplicable("COMMIT AND CHAIN")]),
            ("VACUUM t", vec![Maintenance]),
            ("ANALYZE t", vec![Maintenance]),
            ("CHECKPOINT", vec![Maintenance]),
            ("CREATE INDEX CONCURRENTLY i ON t (a)", vec![Concurrently { drop: false }]),
            ("create unique index concurrently if not exists i on t (lower(a))", vec![Concurrently { drop: false }]),
            ("CREATE /* c */ INDEX CONCURRENTLY i ON t (a)", vec![Concurrently { drop: false }]),
            ("DROP INDEX CONCURRENTLY i", vec![Concurrently { drop: true }]),
            ("DROP /* c */ INDEX CONCURRENTLY i", vec![Concurrently { drop: true }]),
            ("CREATE INDEX i ON t (a)", vec![Write]),
            ("CREATE TEMP TABLE Tmp (a int)", vec![temp("tmp")]),
            ("CREATE TEMPORARY TABLE tmp AS SELECT * FROM t", vec![temp("tmp")]),
            ("CREATE TABLE pg_temp.x (a int)", vec![temp("x")]),
            ("CREATE TEMP TABLE x (a int) ON COMMIT DROP", vec![CreateTemp { name: "x".into(), until_commit: true }]),
            ("CREATE TEMP VIEW v AS SELECT 1", vec![temp("v")]),
            ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", vec![temp("v")]),
            ("CREATE TEMPORARY SEQUENCE s", vec![temp("s")]),
            ("CREATE SEQUENCE pg_temp.s", vec![temp("s")]),
            ("SELECT * INTO TEMP newt FROM t", vec![temp("newt")]),
            ("SELECT * INTO TEMPORARY TABLE newt FROM t", vec![temp("newt")]),
            ("SELECT * INTO pg_temp.newt FROM t", vec![temp("newt")]),
            ("SELECT * INTO newt FROM t", vec![Write]),
            ("CREATE VIEW v AS SELECT 1", vec![Write]),
            ("CREATE DATABASE x", vec![Database { drop: false }]),
            ("DROP DATABASE IF EXISTS \"X\" WITH (FORCE)", vec![Database { drop: true }]),
            ("CREATE DATABASE x TEMPLATE test_x", vec![Database { drop: false }]),
            ("PREPARE TRANSACTION 'x'", vec![NotReplicable("two-phase commit (PREPARE TRANSACTION)")]),
            ("SET search_path = a", vec![Read]),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", vec![Read]),
            ("LISTEN c", vec![Read]),
            ("NOTIFY c", vec![Read]),
            ("LOCK TABLE t", vec![Read]),
            ("PREPARE p AS SELECT 1", vec![Read]),
            ("BEGIN; INSERT INTO t VALUES (1); COMMIT", vec![Begin { isolation: None }, Write, Commit]),
            ("SELECT 1; UPDATE t SET a = 2", vec![Read, Write]),
            ("", vec![]),
        ];
        for (sql, want) in cases {
            assert_eq!(ops(sql), want, "{sql}");
        }
    }
}
