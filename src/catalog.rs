//! What the leader's catalog says about functions: which ones are safe to run on
//! a follower (not volatile). Loaded per database on first need, refreshed after
//! DDL seen through chorus and after a time-to-live, so functions created behind
//! chorus's back are picked up. A function chorus does not know is treated as
//! volatile: the query goes to the leader, which is always correct.

use crate::config::Node;
use dashmap::DashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(30);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// A DEFAULT expression (as `pg_get_expr` prints it) that is a constant: a
/// literal, possibly negated, parenthesized and cast (`0`, `'x'::text`,
/// `'{}'::integer[]`, `('-1'::integer)`, `false`, `NULL::numeric(10,2)`).
const CONSTANT_DEFAULT: &str =
    r#"^\(*-?('([^']|'')*'|[0-9][0-9.e+-]*|true|false|NULL)\)*(::[a-zA-Z0-9_ ."\[\](),]+)*\)*$"#;

/// What one database's catalog says, loaded in one go.
#[derive(Default)]
struct Snapshot {
    /// Functions that are not volatile, by `name` and `schema.name`.
    safe: HashSet<String>,
    /// Columns whose DEFAULT a follower would evaluate to something else
    /// (transaction time, random, uuid ...), by table `name` and `schema.name`:
    /// (column, default expression).
    volatile_defaults: std::collections::HashMap<String, Vec<(String, String)>>,
    /// What a keyed write needs to know about its table, by `name` (when no
    /// other schema has a table of that name) and `schema.name`.
    tables: std::collections::HashMap<String, Arc<TableFacts>>,
}

/// What the session needs to know to let a keyed write take its LSN at
/// commit (see `sql::keyed`).
#[derive(Debug, Default)]
pub struct TableFacts {
    /// The primary key's columns (empty: none).
    pub primary_key: Vec<String>,
    /// A plain table: no user triggers, rules, row security or inheritance
    /// children, so a write to it does nothing but change its rows.
    pub plain: bool,
    /// Columns whose DEFAULT is not a constant (sequences, identity, functions).
    pub computed_defaults: Vec<String>,
    /// The rows a statement writes are all it changes, so chorus can
    /// replicate a write to it by those rows (capture mode): a plain table,
    /// or a partitioned one with no rules or row security and no user
    /// triggers on it or any partition.
    pub capturable: bool,
}

struct Entry {
    snap: Arc<Snapshot>,
    loaded: Instant,
}

pub struct FunctionCatalog {
    leader: Node,
    dbs: DashMap<String, Entry>,
    loading: tokio::sync::Mutex<()>,
}

impl FunctionCatalog {
    pub fn new(leader: Node) -> Self {
        FunctionCatalog { leader, dbs: DashMap::new(), loading: tokio::sync::Mutex::new(()) }
    }

    fn cached(&self, db: &str) -> Option<Arc<Snapshot>> {
        self.dbs.get(db).filter(|e| e.loaded.elapsed() < TTL).map(|e| e.snap.clone())
    }

    async fn snapshot(&self, db: &str) -> Option<Arc<Snapshot>> {
        match self.cached(db) {
            Some(s) => Some(s),
            None => match self.load(db).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!(db, error = %e, "catalog unavailable");
                    // Remember the failure briefly so a down leader does not
                    // cost every query a connection attempt.
                    let loaded = Instant::now().checked_sub(TTL - RETRY_AFTER_FAILURE).unwrap_or_else(Instant::now);
                    self.dbs.insert(db.to_string(), Entry { snap: Arc::new(Snapshot::default()), loaded });
                    None
                }
            },
        }
    }

    /// Columns of `tables` whose DEFAULT would differ when evaluated again on a
    /// follower: (table, column, default expression). Unknown while the
    /// catalog cannot be read (then nothing is reported: the leader is down,
    /// and the write fails anyway).
    pub async fn volatile_defaults(&self, db: &str, tables: &[String]) -> Vec<(String, String, String)> {
        if tables.is_empty() {
            return Vec::new();
        }
        let Some(snap) = self.snapshot(db).await else { return Vec::new() };
        let mut out = Vec::new();
        for t in tables {
            if let Some(cols) = snap.volatile_defaults.get(t) {
                out.extend(cols.iter().map(|(c, e)| (t.clone(), c.clone(), e.clone())));
            }
        }
        out
    }

    /// What the catalog says about a table a keyed write names; `None` when
    /// it is not a known plain or partitioned table, or the catalog cannot be read.
    pub async fn table_facts(&self, db: &str, table: &str) -> Option<Arc<TableFacts>> {
        self.snapshot(db).await?.tables.get(table).cloned()
    }

    /// True when every function is known to be non-volatile in `db`.
    pub async fn all_safe(&self, db: &str, functions: &[String]) -> bool {
        if functions.is_empty() {
            return true;
        }
        match self.snapshot(db).await {
            Some(snap) => functions.iter().all(|f| snap.safe.contains(f.as_str())),
            None => false,
        }
    }

    /// Forget what we know about `db` (after DDL).
    pub fn invalidate(&self, db: &str) {
        self.dbs.remove(db);
    }

    async fn load(&self, db: &str) -> Result<Arc<Snapshot>, tokio_postgres::Error> {
        let _guard = self.loading.lock().await;
        if let Some(s) = self.cached(db) {
            return Ok(s);
        }
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.leader.host)
            .port(self.leader.port)
            .user(&self.leader.user)
            .dbname(db)
            .application_name("chorus-catalog")
            .connect_timeout(Duration::from_secs(5));
        if let Some(p) = &self.leader.password {
            cfg.password(p);
        }
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        let task = tokio::spawn(conn);
        // These queries must never wait for a lock: a session in a transaction
        // that holds a table lock may be waiting for this load, and DDL queued
        // behind that session would then block the load (a wait cycle the
        // server cannot see). Catalog scans take no relation locks, but
        // pg_get_expr(expr, relid) opens the relation; a DEFAULT never refers
        // to columns, so it is deparsed without one (relid 0).
        // An unqualified name is safe only if no overload in any schema is volatile.
        let rows = client
            .query(
                "SELECT p.proname::text, n.nspname::text, bool_and(p.provolatile <> 'v') \
                 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                 GROUP BY 1, 2",
                &[],
            )
            .await;
        let defaults = client
            .query(
                "SELECT n.nspname::text, c.relname::text, a.attname::text, pg_catalog.pg_get_expr(d.adbin, 0) \
                 FROM pg_catalog.pg_attrdef d \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
                 JOIN pg_catalog.pg_class c ON c.oid = d.adrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE NOT a.attisdropped AND a.attgenerated = '' \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_chorus')",
                &[],
            )
            .await;
        // What each view reads (its rule's dependencies): a write through an
        // updatable view takes the defaults of the table below it.
        let views = client
            .query(
                "SELECT DISTINCT vn.nspname::text, v.relname::text, bn.nspname::text, b.relname::text \
                 FROM pg_catalog.pg_class v JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace \
                 JOIN pg_catalog.pg_rewrite r ON r.ev_class = v.oid \
                 JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
                   AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                   AND d.refobjid <> v.oid \
                 JOIN pg_catalog.pg_class b ON b.oid = d.refobjid JOIN pg_catalog.pg_namespace bn ON bn.oid = b.relnamespace \
                 WHERE v.relkind = 'v' AND vn.nspname NOT IN ('pg_catalog', 'information_schema', '_chorus')",
                &[],
            )
            .await;
        let facts = client
            .query(
                "SELECT n.nspname::text, c.relname::text, \
                   coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_catalog.pg_index i \
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
                     WHERE i.indrelid = c.oid AND i.indisprimary), '{}'), \
                   c.relkind = 'r' AND NOT c.relhassubclass AND NOT c.relhasrules AND NOT c.relrowsecurity \
                     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid \
                       AND NOT t.tgisinternal AND t.tgname NOT LIKE '\\_chorus\\_%'), \
                   coalesce((SELECT array_agg(a.attname::text) FROM pg_catalog.pg_attribute a \
                     LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
                       AND (a.attidentity <> '' OR (d.adbin IS NOT NULL \
                         AND NOT pg_catalog.pg_get_expr(d.adbin, 0) ~ $1))), '{}'), \
                   c.relkind = 'p' AND NOT c.relhasrules AND NOT c.relrowsecurity \
                     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_partition_tree(c.oid) p \
                       JOIN pg_catalog.pg_trigger t ON t.tgrelid = p.relid WHERE NOT t.tgisinternal) \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_chorus') \
                   AND c.relpersistence <> 't'",
                &[&CONSTANT_DEFAULT],
            )
            .await;
        task.abort();
        let rows = rows?;
        let mut tables: std::collections::HashMap<String, Arc<TableFacts>> = Default::default();
        let mut names: std::collections::HashMap<String, usize> = Default::default();
        for r in facts? {
            let (schema, table): (String, String) = (r.get(0), r.get(1));
            let plain: bool = r.get(3);
            let partitioned_plain: bool = r.get(5);
            let f = Arc::new(TableFacts {
                primary_key: r.get(2),
                plain,
                computed_defaults: r.get(4),
                capturable: plain || partitioned_plain,
            });
            *names.entry(table.clone()).or_default() += 1;
            tables.insert(format!("{schema}.{table}"), f.clone());
            tables.insert(table, f);
        }
        // A name several schemas use depends on the search_path: unknown.
        for (name, n) in names {
            if n > 1 {
                tables.remove(&name);
            }
        }
        let mut volatile_defaults: std::collections::HashMap<String, Vec<(String, String)>> = Default::default();
        for r in defaults? {
            let (schema, table, column, expr): (String, String, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            // Transaction time (rewritable in a statement, not in a default) or
            // a value chorus cannot know: the follower would compute another.
            // (The rewrite planner judges statements: a bare expression is a definition.)
            let differs = crate::sql::rewrite::plan(&format!("SELECT {expr}")).map_or(true, |p| !p.is_identity());
            if differs {
                for key in [table.clone(), format!("{schema}.{table}")] {
                    volatile_defaults.entry(key).or_default().push((column.clone(), expr.clone()));
                }
            }
        }
        // Views inherit the volatile defaults of what they read (views of
        // views too, a few levels deep).
        let mut reads: Vec<(String, String, String)> = Vec::new(); // (view, schema.view, schema.base)
        for r in views? {
            let (vs, v, bs, b): (String, String, String, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
            reads.push((v.clone(), format!("{vs}.{v}"), format!("{bs}.{b}")));
        }
        for _ in 0..4 {
            let mut grew = false;
            for (view, qualified, base) in &reads {
                let Some(cols) = volatile_defaults.get(base).cloned() else { continue };
                for key in [view, qualified] {
                    let have = volatile_defaults.entry(key.clone()).or_default();
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
        let mut unqualified: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
        let mut safe = HashSet::new();
        for r in rows {
            let name: String = r.get(0);
            let schema: String = r.get(1);
            let ok: bool = r.get(2);
            if ok {
                safe.insert(format!("{schema}.{name}"));
            }
            let e = unqualified.entry(name).or_insert(true);
            *e &= ok;
        }
        safe.extend(unqualified.into_iter().filter(|(_, ok)| *ok).map(|(n, _)| n));
        let snap = Arc::new(Snapshot { safe, volatile_defaults, tables });
        self.dbs.insert(db.to_string(), Entry { snap: snap.clone(), loaded: Instant::now() });
        Ok(snap)
    }
}
