//! Pure: how one client request fits into statement replication, from the
//! session's transaction state and the request's statements ([`StmtOp`]s).
//!
//! Every writing transaction takes its LSN with its first write (or, for a
//! REPEATABLE READ / SERIALIZABLE transaction, right after BEGIN, before its
//! snapshot) and appends its log entry just before it commits, on the same
//! connection, in the same transaction. A write outside a transaction is
//! wrapped: chorus opens the transaction, and appends and commits after it.
//!
//! A READ COMMITTED transaction whose writes are all *keyed* (see
//! `sql::keyed`: their effect depends only on constants and on the rows they
//! name by primary key) takes its LSN only when it commits, in the same step
//! as the append: writers then hold the LSN row lock for one server-side step
//! instead of across every client round trip. Commit order is a valid serial
//! order for them: two such transactions that touch a common row are ordered
//! by its row lock, which the first holds until after it took its LSN; a
//! keyed statement that changed no row is left out of the log (replayed later
//! it could find a row that did not exist when it ran). The first write that
//! is not keyed takes the LSN there and then, and the transaction continues as
//! any other.

use crate::sql::{Isolation, StmtOp};

/// The session's transaction, as far as replication is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxnView {
    /// A client transaction is open (on a server, or deferred by chorus).
    pub in_txn: bool,
    /// The client's plain BEGIN has not been sent to any server yet.
    pub deferred_begin: bool,
    /// The open transaction has taken its LSN.
    pub has_lsn: bool,
    /// The open transaction has logged keyed writes and takes its LSN at commit.
    pub deferred: bool,
}

/// Where chorus takes the transaction's LSN for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeLsn {
    /// Before the request; `begin`: chorus opens the transaction too.
    Before { begin: bool },
    /// After the request (its BEGIN fixes a snapshot isolation level; the LSN
    /// must come before the snapshot, i.e. be the first statement).
    After,
}

/// What chorus adds around one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WritePlan {
    /// Outside a transaction, a statement that cannot run in one
    /// (`StmtOp::Concurrently`): once it has succeeded, chorus logs what the
    /// followers run instead in a transaction of its own, before the client
    /// hears of it.
    pub log_after: bool,
    pub take_lsn: Option<TakeLsn>,
    /// The request commits the transaction: append the log entry before it.
    pub append_before: bool,
    /// chorus opened the transaction for this request: append and commit after it.
    pub finish_after: bool,
    /// The request's own BEGIN runs inside the transaction chorus opened: its
    /// "already in progress" warning is chorus's doing, not the client's.
    pub hide_begin_warning: bool,
    /// The request's writes go into the log.
    pub logs: bool,
    /// The request is a COPY FROM STDIN: its data goes into the log, and a
    /// finishing step waits until the copy ends.
    pub copy: bool,
    /// The request's writes are keyed and its transaction has no LSN: they are
    /// logged, and the LSN is taken when the entry is appended.
    pub defer: bool,
    /// chorus opens a plain transaction (no LSN yet) around the request.
    pub begin_only: bool,
    /// Outside a transaction, a lone CREATE/DROP DATABASE
    /// (`StmtOp::Database`): chorus prepares the followers before it runs
    /// (a DROP) and mirrors it on them after, before the client hears of it.
    pub database: bool,
}

impl WritePlan {
    /// True when chorus adds steps of its own (they need an idle connection).
    /// The same request with the client's final COMMIT left out: chorus
    /// appends the entry and commits after it, as for an autocommit write.
    /// (Should a statement before it fail, chorus rolls the transaction back
    /// instead of leaving it aborted: the client meant to end it.)
    pub fn committed_by_chorus(self) -> WritePlan {
        WritePlan { append_before: false, finish_after: true, ..self }
    }

    pub fn adds_steps(&self) -> bool {
        self.take_lsn.is_some()
            || self.append_before
            || self.finish_after
            || self.begin_only
            || self.log_after
            || self.database
    }
}

/// Why a request cannot be replicated as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Plan a request. `ops` must have `MaybeWrite` resolved (to `Write` or `Read`);
/// `keyed[i]` says whether `ops[i]` is a keyed write (its table checked too).
pub fn plan(view: TxnView, ops: &[StmtOp], keyed: &[bool]) -> Result<WritePlan, Refusal> {
    let mut p = WritePlan::default();
    let mut in_txn = view.in_txn;
    let mut has_lsn = view.has_lsn;
    let mut deferred = view.deferred;
    let is_keyed = |i: usize| ops[i] == StmtOp::Write && keyed.get(i).copied().unwrap_or(false);
    // The request's own plain BEGIN opened the transaction (not yet sent when
    // chorus takes the LSN first).
    let mut own_begin = false;
    let mut ended = false;
    let writes = ops.iter().any(|o| matches!(o, StmtOp::Write | StmtOp::CopyIn));
    for (i, op) in ops.iter().enumerate() {
        match op {
            StmtOp::NotReplicable(what) => {
                return Err(Refusal(format!("chorus cannot replicate {what}")));
            }
            StmtOp::Concurrently { .. } if ops.len() > 1 => {
                return Err(Refusal(
                    "chorus cannot replicate CREATE/DROP INDEX CONCURRENTLY sent together with other statements \
                     (it cannot run in a transaction block); send it on its own"
                        .into(),
                ));
            }
            // In a transaction the leader refuses it itself.
            StmtOp::Concurrently { .. } => p.log_after = !in_txn,
            // In a transaction block, or with other statements (an implicit
            // one), the leader refuses it itself.
            StmtOp::Database { .. } => p.database = !in_txn && ops.len() == 1,
            StmtOp::Begin { isolation } => {
                if in_txn {
                    continue;
                }
                in_txn = true;
                if *isolation == Some(Isolation::Snapshot) {
                    if ops.len() > 1 && writes {
                        return Err(Refusal(
                            "chorus cannot replicate a REPEATABLE READ or SERIALIZABLE BEGIN sent together with \
                             other statements in one query; send the BEGIN on its own"
                                .into(),
                        ));
                    }
                    p.take_lsn = Some(TakeLsn::After);
                    has_lsn = true;
                } else {
                    own_begin = true;
                }
            }
            StmtOp::Write | StmtOp::CopyIn => {
                if ended {
                    return Err(Refusal(
                        "chorus cannot replicate a write that follows COMMIT or ROLLBACK in the same query; \
                         send the next transaction as its own query"
                            .into(),
                    ));
                }
                if *op == StmtOp::CopyIn {
                    if ops.len() > 1 {
                        return Err(Refusal(
                            "chorus cannot replicate COPY FROM STDIN sent together with other statements; \
                             send the COPY on its own"
                                .into(),
                        ));
                    }
                    p.copy = true;
                }
                p.logs = true;
                if !in_txn {
                    // Autocommit: chorus's transaction around the whole request.
                    if ops.iter().any(|o| matches!(o, StmtOp::Commit | StmtOp::Rollback | StmtOp::Begin { .. })) {
                        return Err(Refusal(
                            "chorus cannot replicate a query that writes before its BEGIN; \
                             start the transaction first"
                                .into(),
                        ));
                    }
                    let all_keyed =
                        (0..ops.len()).all(|j| !matches!(ops[j], StmtOp::Write | StmtOp::CopyIn) || is_keyed(j));
                    if all_keyed {
                        p.begin_only = true;
                        p.defer = true;
                        deferred = true;
                    } else {
                        p.take_lsn = Some(TakeLsn::Before { begin: true });
                        has_lsn = true;
                    }
                    p.finish_after = true;
                    in_txn = true;
                } else if !has_lsn && is_keyed(i) {
                    p.defer = true;
                    deferred = true;
                } else if !has_lsn {
                    // The transaction is not on the server yet when the client's
                    // BEGIN is in this request or still deferred by chorus.
                    p.hide_begin_warning = own_begin;
                    p.take_lsn = Some(TakeLsn::Before { begin: own_begin || view.deferred_begin });
                    p.defer = false;
                    has_lsn = true;
                    deferred = false;
                }
            }
            StmtOp::Commit if in_txn => {
                if p.defer {
                    // The entry is appended before the request runs, so its
                    // writes cannot wait for their tags: take the LSN first.
                    p.defer = false;
                    p.take_lsn = Some(TakeLsn::Before { begin: own_begin || view.deferred_begin });
                    p.hide_begin_warning = own_begin;
                }
                if (has_lsn || deferred) && !p.append_before {
                    p.append_before = true;
                }
                in_txn = false;
                has_lsn = false;
                deferred = false;
                own_begin = false;
                ended = true;
            }
            StmtOp::Rollback if in_txn => {
                in_txn = false;
                has_lsn = false;
                deferred = false;
                own_begin = false;
                ended = true;
            }
            _ => {}
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use StmtOp::*;

    const IDLE: TxnView = TxnView { in_txn: false, deferred_begin: false, has_lsn: false, deferred: false };
    const DEFERRED: TxnView = TxnView { in_txn: true, deferred_begin: true, has_lsn: false, deferred: false };
    const OPEN: TxnView = TxnView { in_txn: true, deferred_begin: false, has_lsn: false, deferred: false };
    const WRITING: TxnView = TxnView { in_txn: true, deferred_begin: false, has_lsn: true, deferred: false };
    const KEYED: TxnView = TxnView { in_txn: true, deferred_begin: false, has_lsn: false, deferred: true };

    fn begin() -> StmtOp {
        Begin { isolation: None }
    }

    #[test]
    fn plans() {
        let before = |begin| Some(TakeLsn::Before { begin });
        let none = WritePlan::default();
        let cases: Vec<(TxnView, Vec<StmtOp>, WritePlan)> = vec![
            (IDLE, vec![Read], none),
            (IDLE, vec![], none),
            (IDLE, vec![Write], WritePlan { take_lsn: before(true), finish_after: true, logs: true, ..none }),
            (
                IDLE,
                vec![Read, Write, Write],
                WritePlan { take_lsn: before(true), finish_after: true, logs: true, ..none },
            ),
            (
                IDLE,
                vec![CopyIn],
                WritePlan { take_lsn: before(true), finish_after: true, logs: true, copy: true, ..none },
            ),
            (DEFERRED, vec![Write], WritePlan { take_lsn: before(true), logs: true, ..none }),
            (DEFERRED, vec![Read], none),
            (OPEN, vec![Write], WritePlan { take_lsn: before(false), logs: true, ..none }),
            (WRITING, vec![Write], WritePlan { logs: true, ..none }),
            (WRITING, vec![Commit], WritePlan { append_before: true, ..none }),
            (OPEN, vec![Commit], none),
            (WRITING, vec![Rollback], none),
            (IDLE, vec![Commit], none),
            (OPEN, vec![Write, Commit], WritePlan { take_lsn: before(false), append_before: true, logs: true, ..none }),
            (
                IDLE,
                vec![begin(), Write, Commit],
                WritePlan { take_lsn: before(true), append_before: true, hide_begin_warning: true, logs: true, ..none },
            ),
            (
                IDLE,
                vec![begin(), Read, Write],
                WritePlan { take_lsn: before(true), hide_begin_warning: true, logs: true, ..none },
            ),
            (IDLE, vec![begin(), Write, Rollback], {
                WritePlan { take_lsn: before(true), hide_begin_warning: true, logs: true, ..none }
            }),
            (IDLE, vec![Begin { isolation: Some(Isolation::Snapshot) }], {
                WritePlan { take_lsn: Some(TakeLsn::After), ..none }
            }),
            (IDLE, vec![Begin { isolation: Some(Isolation::ReadCommitted) }], none),
            (IDLE, vec![Maintenance], none),
            (IDLE, vec![Savepoint("a".into())], none),
            (IDLE, vec![Concurrently { drop: false }], WritePlan { log_after: true, ..none }),
            (OPEN, vec![Concurrently { drop: false }], none),
            (IDLE, vec![Database { drop: true }], WritePlan { database: true, ..none }),
            (IDLE, vec![Database { drop: false }, Read], none),
            (OPEN, vec![Database { drop: false }], none),
            (DEFERRED, vec![Database { drop: false }], none),
        ];
        for (view, ops, want) in cases {
            assert_eq!(plan(view, &ops, &[]), Ok(want), "{view:?} {ops:?}");
        }
    }

    #[test]
    fn keyed_writes_take_the_lsn_at_commit() {
        let none = WritePlan::default();
        let before = |begin| Some(TakeLsn::Before { begin });
        let cases: Vec<(TxnView, Vec<StmtOp>, Vec<bool>, WritePlan)> = vec![
            (
                IDLE,
                vec![Write],
                vec![true],
                WritePlan { finish_after: true, logs: true, defer: true, begin_only: true, ..none },
            ),
            // One write that is not keyed: the whole autocommit request takes it first.
            (
                IDLE,
                vec![Write, Write],
                vec![true, false],
                WritePlan { take_lsn: before(true), finish_after: true, logs: true, ..none },
            ),
            (DEFERRED, vec![Write], vec![true], WritePlan { logs: true, defer: true, ..none }),
            (OPEN, vec![Read, Write], vec![false, true], WritePlan { logs: true, defer: true, ..none }),
            (KEYED, vec![Write], vec![true], WritePlan { logs: true, defer: true, ..none }),
            (KEYED, vec![Write], vec![false], WritePlan { take_lsn: before(false), logs: true, ..none }),
            (KEYED, vec![Commit], vec![], WritePlan { append_before: true, ..none }),
            (KEYED, vec![Rollback], vec![], none),
            (DEFERRED, vec![Write, Write], vec![true, false], WritePlan { take_lsn: before(true), logs: true, ..none }),
            // Writes and their COMMIT in one request: the entry is appended
            // before the request, so the LSN comes first.
            (
                IDLE,
                vec![begin(), Write, Commit],
                vec![false, true, false],
                WritePlan { take_lsn: before(true), append_before: true, hide_begin_warning: true, logs: true, ..none },
            ),
            (
                KEYED,
                vec![Write, Commit],
                vec![true, false],
                WritePlan { take_lsn: before(false), append_before: true, logs: true, ..none },
            ),
            // A snapshot transaction takes its LSN at BEGIN whatever follows.
            (WRITING, vec![Write], vec![true], WritePlan { logs: true, ..none }),
            (KEYED, vec![CopyIn], vec![false], WritePlan { take_lsn: before(false), logs: true, copy: true, ..none }),
        ];
        for (view, ops, keyed, want) in cases {
            assert_eq!(plan(view, &ops, &keyed), Ok(want), "{view:?} {ops:?} {keyed:?}");
        }
    }

    #[test]
    fn refusals() {
        let cases: Vec<(TxnView, Vec<StmtOp>)> = vec![
            (IDLE, vec![Write, Commit]),
            (IDLE, vec![Write, begin()]),
            (WRITING, vec![Commit, Write]),
            (IDLE, vec![begin(), Write, Commit, Write]),
            (IDLE, vec![CopyIn, Read]),
            (IDLE, vec![Begin { isolation: Some(Isolation::Snapshot) }, Write]),
            (IDLE, vec![NotReplicable("CREATE DATABASE")]),
            (WRITING, vec![Write, NotReplicable("x")]),
            (IDLE, vec![Concurrently { drop: false }, Read]),
        ];
        for (view, ops) in cases {
            assert!(plan(view, &ops, &[]).is_err(), "{view:?} {ops:?}");
        }
    }
}
