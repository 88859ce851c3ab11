//! What a transaction's own schema changes mean for its later writes.
//!
//! chorus's catalog (`catalog`) is read on a connection of its own, which
//! cannot see a transaction's uncommitted DDL: after `CREATE TABLE t (id
//! serial, u uuid DEFAULT gen_random_uuid())` inside a transaction, a write
//! to t in the same transaction would be judged by a catalog that does not
//! know t (or knows its old defaults and triggers), and replayed as if
//! deterministic. Once a transaction has run DDL, the session reads what a
//! write needs to know about its tables and functions through the
//! transaction's own connection, out of band, before planning the write;
//! it keeps that until the next DDL, `ROLLBACK TO`, or the transaction's end.
//! A write sent in the same query as the DDL it depends on cannot be judged
//! that way: logplan refuses it when the DDL could have given its table
//! defaults or triggers.

use super::Session;
use crate::catalog::TableFacts;
use crate::catalog::load::CONSTANT_DEFAULT;
use crate::sql::Classification;
use crate::sql::quote::{quote_ident, quote_literal};
use crate::sql::routine::{self, Nature};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// The transaction's view of the tables and functions its writes use.
#[derive(Default)]
pub(super) struct TxnFacts {
    /// DDL succeeded in the transaction: the shared catalog may be stale for it.
    pub ddl: bool,
    /// By table name as written in statements (folded): `None` when there is
    /// no such table now.
    tables: HashMap<String, Option<Arc<TxnTable>>>,
    /// By function name (folded, as called): `None` when no user function has
    /// that name (a built-in).
    routines: HashMap<String, Option<Nature>>,
}

/// One table as the transaction sees it.
pub(super) struct TxnTable {
    pub facts: Arc<TableFacts>,
    /// Columns whose default a follower would compute differently: (column, expression).
    pub volatile_defaults: Vec<(String, String)>,
}

impl TxnFacts {
    /// Forget what was read (the schema may have changed since).
    pub fn stale(&mut self) {
        self.tables.clear();
        self.routines.clear();
    }

    /// The transaction ended.
    pub fn reset(&mut self) {
        *self = TxnFacts::default();
    }

    pub fn table(&self, name: &str) -> Option<Option<&Arc<TxnTable>>> {
        self.tables.get(name).map(Option::as_ref)
    }

    pub fn routine(&self, name: &str) -> Option<Option<&Nature>> {
        self.routines.get(name).map(Option::as_ref)
    }

    /// Tables and functions of `class` not read yet.
    pub fn missing(&self, class: &Classification) -> (Vec<String>, Vec<String>) {
        let tables = class
            .capture
            .iter()
            .map(|(_, s)| &s.table)
            .chain(&class.tables)
            .filter(|t| !self.tables.contains_key(*t))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>();
        let functions = class.functions.iter().filter(|f| !self.routines.contains_key(*f)).cloned().collect();
        (tables.into_iter().collect(), functions)
    }
}

/// `a.b` (folded parts) as an identifier PostgreSQL resolves to the same.
fn qualified(name: &str) -> String {
    name.split('.').map(quote_ident).collect::<Vec<_>>().join(".")
}

/// One query for everything the transaction must know about `tables` and
/// `functions`; rows of (name, kind, a, b, c), all text:
/// `c` column (name, default, computed), `k` primary key column,
/// `f` flags (plain, partitioned and plain, plain enough to apply quietly),
/// `g` trigger (name, language, body), `p` function (language, body).
fn facts_sql(tables: &[String], functions: &[String]) -> String {
    let values = |names: &[String], f: &dyn Fn(&str) -> String| {
        if names.is_empty() {
            "SELECT NULL::text, NULL::text WHERE false".to_string()
        } else {
            let rows: Vec<String> = names.iter().map(|n| format!("({}, {})", quote_literal(n), f(n))).collect();
            format!("VALUES {}", rows.join(", "))
        }
    };
    let t = values(tables, &|n| quote_literal(&qualified(n)));
    let p = values(functions, &|n| quote_literal(n));
    let constant = quote_literal(CONSTANT_DEFAULT);
    format!(
        "WITH t(name, ident) AS ({t}), r AS (SELECT name, pg_catalog.to_regclass(ident) AS oid FROM t), \
           p(name, called) AS ({p}) \
         SELECT r.name, 'c', a.attname::text, pg_catalog.pg_get_expr(d.adbin, 0), \
           (a.attidentity <> '' OR (d.adbin IS NOT NULL AND NOT pg_catalog.pg_get_expr(d.adbin, 0) ~ {constant}))::text \
           FROM r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid \
           LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
           WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
         UNION ALL SELECT r.name, 'k', a.attname::text, NULL, NULL FROM r \
           JOIN pg_catalog.pg_index i ON i.indrelid = r.oid AND i.indisprimary \
           JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
         UNION ALL SELECT r.name, 'f', \
           (c.relkind = 'r' AND NOT c.relhassubclass AND NOT c.relhasrules AND NOT c.relrowsecurity \
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal))::text, \
           (c.relkind = 'p' AND NOT c.relhasrules AND NOT c.relrowsecurity \
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_partition_tree(c.oid) x \
               JOIN pg_catalog.pg_trigger g ON g.tgrelid = x.relid WHERE NOT g.tgisinternal))::text, \
           (c.relkind = 'r' AND NOT c.relhassubclass AND NOT c.relhasrules AND NOT c.relrowsecurity \
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.confrelid = c.oid AND k.contype = 'f' \
               AND (k.confdeltype NOT IN ('a', 'r') OR k.confupdtype NOT IN ('a', 'r'))))::text \
           FROM r JOIN pg_catalog.pg_class c ON c.oid = r.oid AND c.relkind IN ('r', 'p') AND c.relpersistence <> 't' \
         UNION ALL SELECT r.name, 'g', g.tgname::text, l.lanname::text, f.prosrc FROM r \
           JOIN pg_catalog.pg_trigger g ON g.tgrelid = r.oid AND NOT g.tgisinternal \
           JOIN pg_catalog.pg_proc f ON f.oid = g.tgfoid \
           JOIN pg_catalog.pg_namespace fn ON fn.oid = f.pronamespace AND fn.nspname <> 'pg_catalog' \
           JOIN pg_catalog.pg_language l ON l.oid = f.prolang \
         UNION ALL SELECT p.name, 'p', l.lanname::text, f.prosrc, NULL FROM p \
           JOIN pg_catalog.pg_proc f ON f.proname = pg_catalog.split_part(p.called, '.', -1) \
           JOIN pg_catalog.pg_namespace n ON n.oid = f.pronamespace \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_chorus') \
             AND (p.called NOT LIKE '%.%' OR n.nspname = pg_catalog.split_part(p.called, '.', 1)) \
           JOIN pg_catalog.pg_language l ON l.oid = f.prolang \
           WHERE f.provolatile <> 'i' AND f.prokind IN ('f', 'p')"
    )
}

/// Fold the rows of [`facts_sql`] into what the transaction knows.
fn absorb(facts: &mut TxnFacts, tables: &[String], functions: &[String], rows: &[Vec<Option<String>>]) {
    #[derive(Default)]
    struct Building {
        primary_key: Vec<String>,
        computed: Vec<String>,
        volatile: Vec<(String, String)>,
        flags: Option<(bool, bool, bool)>,
        triggers: Nature,
    }
    let mut building: HashMap<&str, Building> = HashMap::new();
    let mut routines: HashMap<&str, Nature> = HashMap::new();
    let col = |r: &Vec<Option<String>>, i: usize| r.get(i).cloned().flatten();
    let yes = |v: Option<String>| v.as_deref() == Some("true");
    for r in rows {
        let (Some(name), Some(kind)) = (r.first().and_then(|v| v.as_deref()), col(r, 1)) else { continue };
        let Some(name) = tables.iter().chain(functions).find(|n| n.as_str() == name) else { continue };
        match kind.as_str() {
            "p" => {
                let nature = routine::judge(&col(r, 2).unwrap_or_default(), &col(r, 3).unwrap_or_default());
                routines.entry(name).or_default().absorb(&nature);
            }
            "c" => {
                let b = building.entry(name).or_default();
                let (column, default) = (col(r, 2).unwrap_or_default(), col(r, 3));
                if yes(col(r, 4)) {
                    b.computed.push(column.clone());
                }
                if let Some(expr) = default {
                    let differs =
                        crate::sql::rewrite::plan(&format!("SELECT {expr}")).map_or(true, |p| !p.is_identity());
                    if differs {
                        b.volatile.push((column, expr));
                    }
                }
            }
            "k" => building.entry(name).or_default().primary_key.extend(col(r, 2)),
            "f" => building.entry(name).or_default().flags = Some((yes(col(r, 2)), yes(col(r, 3)), yes(col(r, 4)))),
            "g" => {
                let trigger = col(r, 2).unwrap_or_default();
                if trigger.starts_with("_chorus_") {
                    continue; // chorus's own (session::trigger_rows)
                }
                let mut nature = routine::judge(&col(r, 3).unwrap_or_default(), &col(r, 4).unwrap_or_default());
                nature.nondeterministic = nature.nondeterministic.map(|why| format!("its trigger {trigger} {why}"));
                building.entry(name).or_default().triggers.absorb(&nature);
            }
            _ => {}
        }
    }
    for t in tables {
        let entry = building.remove(t.as_str()).and_then(|b| {
            let (plain, partitioned_plain, quiet_base) = b.flags?;
            let facts = TableFacts {
                primary_key: b.primary_key,
                plain,
                computed_defaults: b.computed,
                capturable: plain || partitioned_plain,
                quiet_capturable: quiet_base && !b.triggers.writes,
                // Capturing trigger rows needs the catalog's view of their
                // tables; after DDL in the transaction it is refused.
                trigger_rows: None,
                triggers: b.triggers,
            };
            Some(Arc::new(TxnTable { facts: Arc::new(facts), volatile_defaults: b.volatile }))
        });
        facts.tables.insert(t.clone(), entry);
    }
    for f in functions {
        facts.routines.insert(f.clone(), routines.remove(f.as_str()));
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Before planning a request in a transaction that ran DDL: read what
    /// its statements' tables and functions are now, through the
    /// transaction's connection. `false`: the connection is busy, and the
    /// request must wait until it is idle.
    pub(super) async fn read_txn_facts(&mut self, classes: &[Arc<Classification>]) -> bool {
        if !self.txn_facts.ddl {
            return true;
        }
        let (mut tables, mut functions) = (Vec::new(), Vec::new());
        for c in classes {
            let (t, f) = self.txn_facts.missing(c);
            tables.extend(t);
            functions.extend(f);
        }
        tables.sort();
        tables.dedup();
        functions.sort();
        functions.dedup();
        if tables.is_empty() && functions.is_empty() {
            return true;
        }
        let Some(node) = self.txn_node else { return true };
        if self.busy() {
            return false;
        }
        let Some(conn) = self.conns[node].as_mut() else { return true };
        match conn.query_text_oob(&facts_sql(&tables, &functions)).await {
            Ok(rows) => absorb(&mut self.txn_facts, &tables, &functions, &rows),
            // An aborted transaction: its writes fail on the server anyway,
            // and nothing read means every lookup says "unknown".
            Err(e) => tracing::debug!(error = %e, "could not read the transaction's schema"),
        }
        true
    }

    /// What the catalog, or the transaction's own DDL, says about `table`.
    pub(super) async fn table_facts(&self, table: &str) -> Option<Arc<TableFacts>> {
        if self.txn_facts.ddl
            && let Some(t) = self.txn_facts.table(table)
        {
            return t.map(|t| t.facts.clone());
        }
        self.ctx.catalog.table_facts(&self.database, table).await
    }

    /// Columns of `tables` whose DEFAULT a follower would compute differently:
    /// (table, column, default expression).
    pub(super) async fn volatile_defaults(&self, tables: &[String]) -> Vec<(String, String, String)> {
        if !self.txn_facts.ddl {
            return self.ctx.catalog.volatile_defaults(&self.database, tables).await;
        }
        let mut out = Vec::new();
        for t in tables {
            match self.txn_facts.table(t) {
                Some(Some(tt)) => {
                    out.extend(tt.volatile_defaults.iter().map(|(c, e)| (t.clone(), c.clone(), e.clone())))
                }
                Some(None) => {}
                None => out.extend(self.ctx.catalog.volatile_defaults(&self.database, std::slice::from_ref(t)).await),
            }
        }
        out
    }

    /// The user functions among `functions` with what their bodies do.
    pub(super) async fn routines(&self, functions: &[String]) -> Vec<(String, Nature)> {
        if !self.txn_facts.ddl {
            return self.ctx.catalog.routines(&self.database, functions).await;
        }
        let mut out = Vec::new();
        for f in functions {
            match self.txn_facts.routine(f) {
                Some(Some(n)) => {
                    // Its callees as committed (ones created in this
                    // transaction too are not followed).
                    let mut n = n.clone();
                    let callees = self.ctx.catalog.routines(&self.database, &n.calls).await;
                    routine::fold_callees(&mut n, &callees);
                    out.push((f.clone(), n));
                }
                Some(None) => {}
                None => out.extend(self.ctx.catalog.routines(&self.database, std::slice::from_ref(f)).await),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: &[Option<&str>]) -> Vec<Option<String>> {
        v.iter().map(|s| s.map(str::to_string)).collect()
    }

    #[test]
    fn rows_become_table_facts() {
        let tables = vec!["t".to_string(), "gone".to_string()];
        let functions = vec!["f".to_string(), "lower".to_string()];
        let rows = vec![
            row(&[Some("t"), Some("c"), Some("id"), Some("nextval('t_id_seq'::regclass)"), Some("true")]),
            row(&[Some("t"), Some("c"), Some("u"), Some("gen_random_uuid()"), Some("true")]),
            row(&[Some("t"), Some("c"), Some("n"), Some("7"), Some("false")]),
            row(&[Some("t"), Some("k"), Some("id"), None, None]),
            row(&[Some("t"), Some("f"), Some("false"), Some("false"), Some("true")]),
            row(&[
                Some("t"),
                Some("g"),
                Some("touch"),
                Some("plpgsql"),
                Some("BEGIN NEW.at := now(); RETURN NEW; END"),
            ]),
            row(&[Some("f"), Some("p"), Some("sql"), Some("SELECT random()"), None]),
        ];
        let mut facts = TxnFacts { ddl: true, ..Default::default() };
        absorb(&mut facts, &tables, &functions, &rows);
        let t = facts.table("t").unwrap().unwrap();
        assert_eq!(t.facts.primary_key, ["id"]);
        assert_eq!(t.facts.computed_defaults, ["id", "u"]);
        assert_eq!(t.volatile_defaults, [("u".to_string(), "gen_random_uuid()".to_string())]);
        assert!(!t.facts.plain && t.facts.quiet_capturable);
        assert!(t.facts.triggers.nondeterministic.as_deref().unwrap().starts_with("its trigger touch"));
        assert!(facts.table("gone").unwrap().is_none(), "known to be absent");
        assert!(facts.table("other").is_none(), "not read");
        assert!(facts.routine("f").unwrap().unwrap().nondeterministic.is_some());
        assert!(facts.routine("lower").unwrap().is_none());
        let sql = facts_sql(&tables, &functions);
        assert!(sql.contains("('t', '\"t\"')") && sql.contains("('gone', '\"gone\"')"), "{sql}");
        facts.stale();
        assert!(facts.table("t").is_none() && facts.ddl);
    }
}
