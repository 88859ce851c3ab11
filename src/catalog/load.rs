//! Reading one database's catalog on the leader into a [`Snapshot`]: which
//! functions are safe on followers, which columns have defaults a follower
//! would compute differently (views inheriting their tables'), what each
//! table is (keys, triggers, whether its writes can be captured), and what
//! user functions' bodies do (`sql::routine`).
//!
//! These queries must never wait for a lock: a session in a transaction
//! that holds a table lock may be waiting for this load, and DDL queued
//! behind that session would then block the load (a wait cycle the server
//! cannot see). Catalog scans take no relation locks, but pg_get_expr(expr,
//! relid) opens the relation; a DEFAULT never refers to columns, so it is
//! deparsed without one (relid 0).

use super::{Snapshot, TableFacts};
use crate::sql::routine::{self, Nature};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio_postgres::Client;

/// A DEFAULT expression (as `pg_get_expr` prints it) that is a constant: a
/// literal, possibly negated, parenthesized and cast (`0`, `'x'::text`,
/// `'{}'::integer[]`, `('-1'::integer)`, `false`, `NULL::numeric(10,2)`).
pub(crate) const CONSTANT_DEFAULT: &str =
    r#"^\(*-?('([^']|'')*'|[0-9][0-9.e+-]*|true|false|NULL)\)*(::[a-zA-Z0-9_ ."\[\](),]+)*\)*$"#;

const USER_SCHEMAS: &str = "NOT IN ('pg_catalog', 'information_schema', '_chorus')";

pub(super) async fn snapshot(client: &Client) -> Result<Snapshot, tokio_postgres::Error> {
    // An unqualified name is safe only if no overload in any schema is volatile.
    let rows = client
        .query(
            "SELECT p.proname::text, n.nspname::text, bool_and(p.provolatile <> 'v') \
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
             GROUP BY 1, 2",
            &[],
        )
        .await?;
    let mut snap = Snapshot { safe: safe_functions(&rows), ..Default::default() };
    let defaults = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, a.attname::text, pg_catalog.pg_get_expr(d.adbin, 0) \
                 FROM pg_catalog.pg_attrdef d \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
                 JOIN pg_catalog.pg_class c ON c.oid = d.adrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE NOT a.attisdropped AND a.attgenerated = '' AND n.nspname {USER_SCHEMAS}"
            ),
            &[],
        )
        .await?;
    for r in defaults {
        let (schema, table, column, expr): (String, String, String, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
        // Transaction time (rewritable in a statement, not in a default) or
        // a value chorus cannot know: the follower would compute another.
        // (The rewrite planner judges statements: a bare expression is a definition.)
        let differs = crate::sql::rewrite::plan(&format!("SELECT {expr}")).map_or(true, |p| !p.is_identity());
        if differs {
            for key in [table.clone(), format!("{schema}.{table}")] {
                snap.volatile_defaults.entry(key).or_default().push((column.clone(), expr.clone()));
            }
        }
    }
    // What each view reads (its rule's dependencies): a write through an
    // updatable view takes the defaults of the table below it.
    let views = client
        .query(
            &format!(
                "SELECT DISTINCT vn.nspname::text, v.relname::text, bn.nspname::text, b.relname::text \
                 FROM pg_catalog.pg_class v JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace \
                 JOIN pg_catalog.pg_rewrite r ON r.ev_class = v.oid \
                 JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
                   AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                   AND d.refobjid <> v.oid \
                 JOIN pg_catalog.pg_class b ON b.oid = d.refobjid \
                 JOIN pg_catalog.pg_namespace bn ON bn.oid = b.relnamespace \
                 WHERE v.relkind = 'v' AND vn.nspname {USER_SCHEMAS}"
            ),
            &[],
        )
        .await?;
    let reads: Vec<(String, String, String)> = views
        .iter()
        .map(|r| {
            let (vs, v, bs, b): (String, String, String, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
            (v.clone(), format!("{vs}.{v}"), format!("{bs}.{b}"))
        })
        .collect();
    inherit_view_defaults(&mut snap.volatile_defaults, &reads);

    // User functions' bodies (immutable ones are taken at their word).
    let functions = client
        .query(
            &format!(
                "SELECT p.proname::text, n.nspname::text, l.lanname::text, p.prosrc \
                 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                 JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
                 WHERE n.nspname {USER_SCHEMAS} AND p.provolatile <> 'i' AND p.prokind IN ('f', 'p')"
            ),
            &[],
        )
        .await?;
    for r in functions {
        let (name, schema, language, body): (String, String, String, Option<String>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let mut nature = routine::judge(&language, body.as_deref().unwrap_or(""));
        nature.calls.retain(|c| *c != name);
        // Overloads share a name: the unqualified name gets the worst of them.
        for key in [name.clone(), format!("{schema}.{name}")] {
            snap.routines.entry(key).or_default().absorb(&nature);
        }
    }

    routine::follow_calls(&mut snap.routines);

    // User triggers, per table: built-in trigger functions change only the
    // row they are given and are deterministic.
    let triggers = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, t.tgname::text, pn.nspname::text, l.lanname::text, \
                   p.prosrc \
                 FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid \
                 JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
                 JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
                 WHERE NOT t.tgisinternal AND n.nspname {USER_SCHEMAS}"
            ),
            &[],
        )
        .await?;
    let mut table_triggers: HashMap<String, Nature> = HashMap::new();
    for r in triggers {
        let (schema, table, trigger, fschema, language, body): (
            String,
            String,
            String,
            String,
            String,
            Option<String>,
        ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        // chorus's own capture triggers (session::trigger_rows) are not the table's.
        if fschema == "pg_catalog" || trigger.starts_with("_chorus_") {
            continue;
        }
        let mut nature = routine::judge(&language, body.as_deref().unwrap_or(""));
        let callees: Vec<(String, Nature)> =
            nature.calls.iter().filter_map(|c| snap.routines.get(c).map(|n| (c.clone(), n.clone()))).collect();
        routine::fold_callees(&mut nature, &callees);
        nature.nondeterministic = nature.nondeterministic.map(|why| format!("its trigger {trigger} {why}"));
        nature.calls.clear();
        table_triggers.entry(format!("{schema}.{table}")).or_default().absorb(&nature);
    }

    let facts = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, \
                   coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_catalog.pg_index i \
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
                     WHERE i.indrelid = c.oid AND i.indisprimary), '{{}}'), \
                   c.relkind = 'r' AND NOT c.relhassubclass AND NOT c.relhasrules AND NOT c.relrowsecurity \
                     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid \
                       AND NOT t.tgisinternal AND t.tgname NOT LIKE '\\_chorus\\_%'), \
                   coalesce((SELECT array_agg(a.attname::text) FROM pg_catalog.pg_attribute a \
                     LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
                       AND (a.attidentity <> '' OR (d.adbin IS NOT NULL \
                         AND NOT pg_catalog.pg_get_expr(d.adbin, 0) ~ $1))), '{{}}'), \
                   c.relkind = 'p' AND NOT c.relhasrules AND NOT c.relrowsecurity \
                     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_partition_tree(c.oid) p \
                       JOIN pg_catalog.pg_trigger t ON t.tgrelid = p.relid WHERE NOT t.tgisinternal), \
                   c.relkind = 'r' AND NOT c.relhassubclass AND NOT c.relhasrules AND NOT c.relrowsecurity \
                     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f WHERE f.confrelid = c.oid \
                       AND f.contype = 'f' AND (f.confdeltype NOT IN ('a', 'r') OR f.confupdtype NOT IN ('a', 'r'))) \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND n.nspname {USER_SCHEMAS} AND c.relpersistence <> 't'"
            ),
            &[&CONSTANT_DEFAULT],
        )
        .await?;
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut built = Vec::new();
    // Plain tables by `schema.table`, and by name when one schema has it:
    // where a trigger's inserts may go (session::trigger_rows).
    let mut plain_tables: HashMap<String, Option<(String, String)>> = HashMap::new();
    for r in facts {
        let (schema, table): (String, String) = (r.get(0), r.get(1));
        let plain: bool = r.get(3);
        let partitioned_plain: bool = r.get(5);
        let quiet_base: bool = r.get(6);
        let triggers = table_triggers.remove(&format!("{schema}.{table}")).unwrap_or_default();
        let f = TableFacts {
            primary_key: r.get(2),
            plain,
            computed_defaults: r.get(4),
            capturable: plain || partitioned_plain,
            quiet_capturable: quiet_base && !triggers.writes,
            trigger_rows: None,
            triggers,
        };
        *names.entry(table.clone()).or_default() += 1;
        if plain {
            let named = Some((schema.clone(), table.clone()));
            plain_tables.insert(format!("{schema}.{table}"), named.clone());
            plain_tables.entry(table.clone()).and_modify(|e| *e = None).or_insert(named);
        }
        built.push((schema, table, quiet_base, f));
    }
    for (schema, table, quiet_base, mut f) in built {
        if quiet_base && let Some(targets) = &f.triggers.inserts_into {
            f.trigger_rows = targets.iter().map(|t| plain_tables.get(t).cloned().flatten()).collect();
        }
        let f = Arc::new(f);
        snap.tables.insert(format!("{schema}.{table}"), f.clone());
        snap.tables.insert(table, f);
    }
    // A name several schemas use depends on the search_path: unknown.
    for (name, n) in names {
        if n > 1 {
            snap.tables.remove(&name);
        }
    }
    Ok(snap)
}

/// Functions that are not volatile, by `name` (every overload in every
/// schema) and `schema.name`.
fn safe_functions(rows: &[tokio_postgres::Row]) -> HashSet<String> {
    let mut unqualified: HashMap<String, bool> = HashMap::new();
    let mut safe = HashSet::new();
    for r in rows {
        let name: String = r.get(0);
        let schema: String = r.get(1);
        let ok: bool = r.get(2);
        if ok {
            safe.insert(format!("{schema}.{name}"));
        }
        *unqualified.entry(name).or_insert(true) &= ok;
    }
    safe.extend(unqualified.into_iter().filter(|(_, ok)| *ok).map(|(n, _)| n));
    safe
}

/// Views take the volatile defaults of what they read (views of views too,
/// a few levels deep). `reads`: (view, schema.view, schema.relation read).
fn inherit_view_defaults(defaults: &mut HashMap<String, Vec<(String, String)>>, reads: &[(String, String, String)]) {
    for _ in 0..4 {
        let mut grew = false;
        for (view, qualified, base) in reads {
            let Some(cols) = defaults.get(base).cloned() else { continue };
            for key in [view, qualified] {
                let have = defaults.entry(key.clone()).or_default();
                for c in &cols {
                    if !have.contains(c) {
                        have.push(c.clone());
                        grew = true;
                    }
                }
            }
        }
        if !grew {
            break;
        }
    }
}
