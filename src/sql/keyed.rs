//! Pure: is a write *keyed*, i.e. does its effect depend only on constants and
//! on the rows it names by an equality on columns, never on other rows?
//!
//! Such a write may take its LSN when its transaction commits instead of
//! before it runs (see `session::writeplan`): every transaction it could
//! conflict with touches the same rows, so the row locks order them the way
//! their commits (and so their LSNs) are ordered. Whether the columns form the
//! table's primary key, and whether the table has triggers or defaults that
//! could read other rows, only the leader's catalog can say: this module
//! reports the statement's shape, the session checks the rest.
//!
//! Keyed: `INSERT ... VALUES (constants)` (with `ON CONFLICT` too), `UPDATE t
//! SET c = <constants and t's own columns> WHERE k = <constant> AND ...`,
//! `DELETE FROM t WHERE k = <constant> AND ...`, with no subquery anywhere.

use sqlparser::ast::{
    AssignmentTarget, BinaryOperator, Expr, FromTable, Insert, ObjectName, Query, SetExpr, Statement, TableFactor,
    TableObject, TableWithJoins, Value, Visit, Visitor,
};
use std::ops::ControlFlow;

use super::collect::fold;

/// A keyed write's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedWrite {
    /// The table written, folded, schema-qualified if written so.
    pub table: String,
    pub kind: KeyedKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyedKind {
    /// `INSERT ... VALUES`: the columns named (empty: every column, in order).
    /// `conflict`: it has an ON CONFLICT clause (it may change nothing).
    Insert { columns: Vec<String>, conflict: bool },
    /// `UPDATE`: the columns its WHERE pins to a constant.
    Update { keys: Vec<String> },
    /// `DELETE`: the columns its WHERE pins to a constant.
    Delete { keys: Vec<String> },
}

impl KeyedWrite {
    /// Can the statement succeed and change no row? Then it must not be
    /// logged (see `session::writeplan`): replayed in commit order it might
    /// find a row that was not there when it ran on the leader.
    pub fn may_change_nothing(&self) -> bool {
        !matches!(self.kind, KeyedKind::Insert { conflict: false, .. })
    }
}

/// The keyed shape of one parsed statement, if it has one.
pub fn keyed(stmt: &Statement) -> Option<KeyedWrite> {
    // The only query allowed is an INSERT's own VALUES list.
    let allowed_queries = usize::from(matches!(stmt, Statement::Insert(_)));
    if count_queries(stmt) != allowed_queries {
        return None;
    }
    match stmt {
        Statement::Insert(i) => insert(i),
        Statement::Update(u) => {
            if u.from.is_some() || u.limit.is_some() || !u.order_by.is_empty() || u.or.is_some() {
                return None;
            }
            let table = single_table(&u.table)?;
            for a in &u.assignments {
                if !matches!(a.target, AssignmentTarget::ColumnName(_)) {
                    return None;
                }
            }
            let keys = pinned_columns(u.selection.as_ref()?)?;
            Some(KeyedWrite { table, kind: KeyedKind::Update { keys } })
        }
        Statement::Delete(d) => {
            if !d.tables.is_empty() || d.using.is_some() || d.limit.is_some() || !d.order_by.is_empty() {
                return None;
            }
            let from = match &d.from {
                FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
            };
            let [t] = from.as_slice() else { return None };
            let table = single_table(t)?;
            let keys = pinned_columns(d.selection.as_ref()?)?;
            Some(KeyedWrite { table, kind: KeyedKind::Delete { keys } })
        }
        _ => None,
    }
}

fn insert(i: &Insert) -> Option<KeyedWrite> {
    if i.or.is_some() || i.ignore || i.overwrite || !i.assignments.is_empty() || i.partitioned.is_some() {
        return None;
    }
    let TableObject::TableName(name) = &i.table else { return None };
    let source = i.source.as_ref()?;
    if source.with.is_some() || source.order_by.is_some() || source.limit_clause.is_some() {
        return None;
    }
    let SetExpr::Values(values) = source.body.as_ref() else { return None };
    if values.rows.is_empty() {
        return None;
    }
    let conflict = match &i.on {
        None => false,
        Some(sqlparser::ast::OnInsert::OnConflict(_)) => true,
        Some(_) => return None,
    };
    let columns = i.columns.iter().map(|c| fold(c).pop().unwrap_or_default()).collect();
    Some(KeyedWrite { table: table_name(name), kind: KeyedKind::Insert { columns, conflict } })
}

fn table_name(name: &ObjectName) -> String {
    fold(name).join(".")
}

/// The one table of an UPDATE or DELETE (no joins).
fn single_table(t: &TableWithJoins) -> Option<String> {
    if !t.joins.is_empty() {
        return None;
    }
    match &t.relation {
        TableFactor::Table { name, args: None, with_hints, version: None, partitions, .. }
            if with_hints.is_empty() && partitions.is_empty() =>
        {
            Some(table_name(name))
        }
        _ => None,
    }
}

/// The columns a WHERE clause pins to constants: `a = 1 AND b = $2 AND ...`
/// (other conjuncts may test anything that is not a subquery). `None` when
/// the clause is not such a conjunction (an OR at the top, say).
fn pinned_columns(e: &Expr) -> Option<Vec<String>> {
    let mut keys = Vec::new();
    conjuncts(e, &mut keys);
    (!keys.is_empty()).then_some(keys)
}

fn conjuncts(e: &Expr, keys: &mut Vec<String>) {
    match e {
        Expr::Nested(inner) => conjuncts(inner, keys),
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            conjuncts(left, keys);
            conjuncts(right, keys);
        }
        Expr::BinaryOp { left, op: BinaryOperator::Eq, right } => {
            let pinned = match (column(left), column(right)) {
                (Some(c), None) if is_constant(right) => Some(c),
                (None, Some(c)) if is_constant(left) => Some(c),
                _ => None,
            };
            if let Some(c) = pinned
                && !keys.contains(&c)
            {
                keys.push(c);
            }
        }
        _ => {}
    }
}

/// A column reference (its last name part, folded).
fn column(e: &Expr) -> Option<String> {
    match e {
        Expr::Nested(inner) => column(inner),
        Expr::Identifier(id) => Some(fold(&ObjectName::from(vec![id.clone()])).pop()?),
        Expr::CompoundIdentifier(ids) => Some(fold(&ObjectName::from(ids.clone())).pop()?),
        _ => None,
    }
}

/// A literal or a parameter, possibly cast or negated.
fn is_constant(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => !matches!(v.value, Value::Null),
        Expr::TypedString { .. } => true,
        Expr::Nested(inner) => is_constant(inner),
        Expr::Cast { expr, .. } => is_constant(expr),
        Expr::UnaryOp { expr, .. } => is_constant(expr),
        _ => false,
    }
}

/// Queries anywhere in the statement (subqueries, VALUES lists, CTEs).
fn count_queries(stmt: &Statement) -> usize {
    struct Count(usize);
    impl Visitor for Count {
        type Break = ();
        fn pre_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            self.0 += 1;
            ControlFlow::Continue(())
        }
    }
    let mut c = Count(0);
    let _ = stmt.visit(&mut c);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn k(sql: &str) -> Option<KeyedWrite> {
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses");
        keyed(&stmts[0])
    }

    fn update(table: &str, keys: &[&str]) -> Option<KeyedWrite> {
        let keys = keys.iter().map(|s| s.to_string()).collect();
        Some(KeyedWrite { table: table.into(), kind: KeyedKind::Update { keys } })
    }

    #[test]
    fn pgbench_tpcb_is_keyed() {
        assert_eq!(
            k("UPDATE pgbench_accounts SET abalance = abalance + -3113 WHERE aid = 41213"),
            update("pgbench_accounts", &["aid"])
        );
        assert_eq!(
            k("UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2"),
            update("pgbench_tellers", &["tid"])
        );
        assert_eq!(
            k("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 1, 2, 4, CURRENT_TIMESTAMP)"),
            Some(KeyedWrite {
                table: "pgbench_history".into(),
                kind: KeyedKind::Insert {
                    columns: vec!["tid".into(), "bid".into(), "aid".into(), "delta".into(), "mtime".into()],
                    conflict: false
                }
            })
        );
    }

    #[test]
    fn shapes() {
        assert_eq!(k("UPDATE s.T SET v = 1 WHERE (\"K\" = 'x') AND v > 0"), update("s.t", &["K"]));
        assert_eq!(k("UPDATE t SET v = 1 WHERE 5 = a AND b = -2::int"), update("t", &["a", "b"]));
        assert_eq!(
            k("DELETE FROM t WHERE id = 3"),
            Some(KeyedWrite { table: "t".into(), kind: KeyedKind::Delete { keys: vec!["id".into()] } })
        );
        let upsert = k("INSERT INTO t VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET v = excluded.v").unwrap();
        assert!(upsert.may_change_nothing());
        assert!(!k("INSERT INTO t VALUES (1), (2)").unwrap().may_change_nothing());
    }

    #[test]
    fn not_keyed() {
        for sql in [
            "UPDATE t SET v = 1",
            "UPDATE t SET v = 1 WHERE id = 1 OR id = 2",
            "UPDATE t SET v = (SELECT max(v) FROM u) WHERE id = 1",
            "UPDATE t SET v = 1 WHERE id IN (SELECT id FROM u)",
            "UPDATE t SET v = u.v FROM u WHERE t.id = 1",
            "UPDATE t SET v = 1 WHERE id = other",
            "UPDATE t SET v = 1 WHERE id = NULL",
            "DELETE FROM t WHERE v > 3",
            "DELETE FROM t USING u WHERE t.id = 1",
            "INSERT INTO t SELECT * FROM u",
            "INSERT INTO t VALUES ((SELECT 1))",
            "INSERT INTO t DEFAULT VALUES",
            "WITH x AS (SELECT 1) INSERT INTO t VALUES (1)",
            "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = (SELECT 1)",
            "SELECT 1",
            "CREATE TABLE t (id int)",
            "TRUNCATE t",
        ] {
            assert_eq!(k(sql), None, "{sql}");
        }
    }
}
