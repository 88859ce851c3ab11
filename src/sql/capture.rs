//! Pure: can a write be replicated by *capture*, i.e. by the rows the leader
//! actually wrote instead of by its text, and what does it need for that?
//!
//! Statement replay is exact as long as the statement computes the same thing
//! on every node. Where it does not (`random()` per row, `gen_random_uuid()`,
//! `clock_timestamp()`, a volatile column DEFAULT, ids drawn from a sequence
//! in an order the follower may not reproduce, a `LIMIT` without `ORDER BY`
//! choosing which rows change), chorus runs the statement on the leader with
//! one more `RETURNING` column, the whole written row as text, and logs those
//! rows; the follower applies them as row changes (see
//! `migrations/postgres/0003_capture.sql`). This module says whether the
//! statement's shape allows that: a top-level INSERT (with `VALUES`,
//! `SELECT`, `DEFAULT VALUES`, `ON CONFLICT`), UPDATE or DELETE on one named
//! table, with no data-modifying CTE. The leader's catalog decides the rest
//! (a plain table, a primary key: `session::capture`).

use sqlparser::ast::{
    Assignment, AssignmentTarget, FromTable, Insert, ObjectName, OnConflictAction, OnInsert, Query, SetExpr, Statement,
    TableFactor, TableObject, TableWithJoins, Visit, Visitor,
};
use std::ops::ControlFlow;

use super::collect::fold;

/// A write whose rows chorus can capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureShape {
    /// The table written, folded, schema-qualified if written so (catalog key).
    pub table: String,
    /// The table's name as written (quotes kept): what the follower resolves
    /// under the same search_path.
    pub table_sql: String,
    /// How `RETURNING` names the written row: the alias, else the table's
    /// last name part, as written.
    pub row_ref: String,
    pub kind: CaptureKind,
    /// The statement has a `RETURNING` list of its own: the client expects
    /// rows, and chorus's extra column is appended to them.
    pub returning: bool,
    /// Something other than the written rows themselves makes replay differ:
    /// a `LIMIT`/`OFFSET`/`FETCH` without `ORDER BY` picks rows the follower
    /// may not pick. Capture is needed whatever the catalog says.
    pub unordered_limit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureKind {
    /// `INSERT`; `columns` as named (folded; empty: all), `values`: the rows
    /// come from a `VALUES` list or `DEFAULT VALUES` (a fixed order), `upsert`:
    /// `ON CONFLICT ... DO UPDATE` (rows may be updated instead), assigning
    /// `assigned` (folded).
    Insert {
        columns: Vec<String>,
        values: bool,
        upsert: bool,
        assigned: Vec<String>,
    },
    /// `UPDATE`; the columns it assigns (folded).
    Update {
        assigned: Vec<String>,
    },
    Delete,
}

impl CaptureShape {
    /// The text to append to the statement so the leader returns each written
    /// row, settings-independently, as the last result column.
    pub fn returning_clause(&self) -> String {
        let kw = if self.returning { ", " } else { " RETURNING " };
        format!("{kw}_chorus.row_text({}.*)", self.row_ref)
    }
}

/// The capture shape of one parsed statement, if it has one.
pub fn shape(stmt: &Statement) -> Option<CaptureShape> {
    let (stmt, with_ok) = match stmt {
        Statement::Query(q) => {
            let body = match q.body.as_ref() {
                SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => s,
                _ => return None,
            };
            if q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
                return None;
            }
            // A CTE that writes: its rows are not the statement's rows.
            let writes = q.with.as_ref().is_some_and(|w| {
                w.cte_tables.iter().any(|c| !matches!(c.query.body.as_ref(), SetExpr::Select(_) | SetExpr::Values(_)))
                    || w.cte_tables.iter().any(|c| has_writes(&c.query))
            });
            (body, !writes)
        }
        s => (s, true),
    };
    if !with_ok {
        return None;
    }
    let mut shape = match stmt {
        Statement::Insert(i) => insert(i)?,
        Statement::Update(u) => {
            if u.limit.is_some() || !u.order_by.is_empty() || u.or.is_some() || u.output.is_some() {
                return None;
            }
            let (table, table_sql, row_ref) = single_table(&u.table)?;
            let assigned = assigned(&u.assignments);
            CaptureShape {
                table,
                table_sql,
                row_ref,
                kind: CaptureKind::Update { assigned },
                returning: u.returning.is_some(),
                unordered_limit: false,
            }
        }
        Statement::Delete(d) => {
            if !d.tables.is_empty() || d.limit.is_some() || !d.order_by.is_empty() || d.output.is_some() {
                return None;
            }
            let from = match &d.from {
                FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
            };
            let [t] = from.as_slice() else { return None };
            let (table, table_sql, row_ref) = single_table(t)?;
            CaptureShape {
                table,
                table_sql,
                row_ref,
                kind: CaptureKind::Delete,
                returning: d.returning.is_some(),
                unordered_limit: false,
            }
        }
        _ => return None,
    };
    shape.unordered_limit = unordered_limit(stmt);
    Some(shape)
}

fn insert(i: &Insert) -> Option<CaptureShape> {
    if i.or.is_some() || i.ignore || i.overwrite || !i.assignments.is_empty() || i.partitioned.is_some() {
        return None;
    }
    if i.output.is_some() || i.insert_alias.is_some() || i.replace_into {
        return None;
    }
    let TableObject::TableName(name) = &i.table else { return None };
    let (upsert, assigned) = match &i.on {
        None => (false, Vec::new()),
        Some(OnInsert::OnConflict(c)) => match &c.action {
            OnConflictAction::DoUpdate(u) => (true, assigned(&u.assignments)),
            OnConflictAction::DoNothing => (false, Vec::new()),
        },
        Some(_) => return None,
    };
    let values = match i.source.as_deref() {
        // DEFAULT VALUES
        None => true,
        Some(q) => q.with.is_none() && matches!(q.body.as_ref(), SetExpr::Values(_)),
    };
    let row_ref = match &i.table_alias {
        Some(a) => a.alias.to_string(),
        None => last_written(name)?,
    };
    Some(CaptureShape {
        table: fold(name).join("."),
        table_sql: name.to_string(),
        row_ref,
        kind: CaptureKind::Insert { columns: i.columns.iter().map(last_folded).collect(), values, upsert, assigned },
        returning: i.returning.is_some(),
        unordered_limit: false,
    })
}

/// The one table of an UPDATE or DELETE (no joins): folded, as written, and
/// how RETURNING refers to it.
fn single_table(t: &TableWithJoins) -> Option<(String, String, String)> {
    if !t.joins.is_empty() {
        return None;
    }
    match &t.relation {
        TableFactor::Table { name, alias, args: None, with_hints, version: None, partitions, .. }
            if with_hints.is_empty() && partitions.is_empty() =>
        {
            let row_ref = match alias {
                Some(a) if a.columns.is_empty() => a.name.to_string(),
                Some(_) => return None,
                None => last_written(name)?,
            };
            Some((fold(name).join("."), name.to_string(), row_ref))
        }
        _ => None,
    }
}

/// The columns assignments set (folded).
fn assigned(assignments: &[Assignment]) -> Vec<String> {
    let mut out = Vec::new();
    for a in assignments {
        match &a.target {
            AssignmentTarget::ColumnName(c) => out.push(last_folded(c)),
            AssignmentTarget::Tuple(cs) => out.extend(cs.iter().map(last_folded)),
        }
    }
    out
}

fn last_written(name: &ObjectName) -> Option<String> {
    name.0.last().map(|p| p.to_string())
}

fn last_folded(name: &ObjectName) -> String {
    fold(name).pop().unwrap_or_default()
}

/// Does a query contain a data-modifying statement anywhere?
fn has_writes(q: &Query) -> bool {
    struct Finder(bool);
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if matches!(
                q.body.as_ref(),
                SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
            ) {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut f = Finder(false);
    let _ = q.visit(&mut f);
    f.0
}

/// A query in the statement limits its rows without ordering them: which
/// rows it yields depends on the physical order, which differs per node.
fn unordered_limit(stmt: &Statement) -> bool {
    struct Finder(bool);
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if (q.limit_clause.is_some() || q.fetch.is_some()) && q.order_by.is_none() {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut f = Finder(false);
    let _ = stmt.visit(&mut f);
    f.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn s(sql: &str) -> Option<CaptureShape> {
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses");
        shape(&stmts[0])
    }

    #[test]
    fn inserts() {
        let c = s("INSERT INTO app.\"Events\" (id, At) SELECT g, now() FROM generate_series(1, 3) g").unwrap();
        assert_eq!(c.table, "app.Events");
        assert_eq!(c.table_sql, "app.\"Events\"");
        assert_eq!(c.row_ref, "\"Events\"");
        assert_eq!(
            c.kind,
            CaptureKind::Insert {
                columns: vec!["id".into(), "at".into()],
                values: false,
                upsert: false,
                assigned: vec![]
            }
        );
        assert_eq!(c.returning_clause(), " RETURNING _chorus.row_text(\"Events\".*)");
        let c = s("INSERT INTO t AS x VALUES (1) ON CONFLICT (id) DO UPDATE SET v = 2 RETURNING id").unwrap();
        assert_eq!(c.row_ref, "x");
        assert!(c.returning);
        assert_eq!(
            c.kind,
            CaptureKind::Insert { columns: vec![], values: true, upsert: true, assigned: vec!["v".into()] }
        );
        assert_eq!(c.returning_clause(), ", _chorus.row_text(x.*)");
        let c = s("INSERT INTO t DEFAULT VALUES").unwrap();
        assert_eq!(c.kind, CaptureKind::Insert { columns: vec![], values: true, upsert: false, assigned: vec![] });
        let c = s("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING").unwrap();
        assert_eq!(c.kind, CaptureKind::Insert { columns: vec![], values: true, upsert: false, assigned: vec![] });
        let c = s("WITH src AS (SELECT 1 AS a) INSERT INTO t SELECT a FROM src").unwrap();
        assert_eq!(c.table, "t");
        assert!(s("INSERT INTO t SELECT * FROM u LIMIT 3").unwrap().unordered_limit);
        assert!(!s("INSERT INTO t SELECT * FROM u ORDER BY id LIMIT 3").unwrap().unordered_limit);
    }

    #[test]
    fn updates_and_deletes() {
        let c = s("UPDATE s.t AS q SET (a, B) = (1, 2), \"C\" = random() WHERE id > 3").unwrap();
        assert_eq!((c.table.as_str(), c.row_ref.as_str()), ("s.t", "q"));
        assert_eq!(c.kind, CaptureKind::Update { assigned: vec!["a".into(), "b".into(), "C".into()] });
        let c = s("UPDATE t SET v = u.v FROM u WHERE u.id = t.id").unwrap();
        assert_eq!(c.row_ref, "t");
        let c = s("DELETE FROM t WHERE id IN (SELECT id FROM t LIMIT 10) RETURNING *").unwrap();
        assert_eq!(c.kind, CaptureKind::Delete);
        assert!(c.returning && c.unordered_limit);
        assert!(s("DELETE FROM t USING u WHERE u.id = t.id").is_some());
    }

    #[test]
    fn not_capturable() {
        for sql in [
            "WITH d AS (DELETE FROM u RETURNING *) INSERT INTO t SELECT * FROM d",
            "SELECT random()",
            "CREATE TABLE t AS SELECT random()",
            "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE",
            "COPY t FROM STDIN",
        ] {
            assert_eq!(s(sql), None, "{sql}");
        }
    }
}
