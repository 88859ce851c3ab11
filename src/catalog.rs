//! What the leader's catalog says, per database: which functions are safe
//! to run on a follower (not volatile), which columns have defaults a
//! follower would compute differently, what each table is (primary key,
//! triggers, whether its writes can be keyed or captured), and what user
//! functions' bodies do. Loaded per database on first need (`load`),
//! refreshed after DDL seen through chorus and after a time-to-live, so
//! objects created behind chorus's back are picked up. A function chorus
//! does not know is treated as volatile: the query goes to the leader, which
//! is always correct.

pub(crate) mod load;
pub mod mysql;

use crate::config::Node;
use crate::sql::routine::Nature;
use dashmap::DashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(30);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

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
    /// What user functions' bodies do (`sql::routine`), by `name` (the worst
    /// of its overloads) and `schema.name`. Immutable ones are not listed.
    routines: std::collections::HashMap<String, Nature>,
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
    /// What the table's user triggers do: why one would compute other values
    /// when it runs again on a follower, and whether one writes other rows.
    pub triggers: Nature,
    /// Its triggers' only writes are INSERTs into these plain tables
    /// (schema, table), and it is otherwise quietly capturable: chorus can
    /// capture its writes together with what its triggers inserted
    /// (`session::trigger_rows`). `None` when not.
    pub trigger_rows: Option<Vec<(String, String)>>,
    /// Its writes can be captured and applied on followers with its triggers
    /// left out (they ran on the leader, and change nothing but the row they
    /// are given): an ordinary table with no rules, row security or
    /// inheritance children, no trigger that writes, and no foreign key
    /// pointing at it with an ON DELETE/UPDATE action (which triggers run).
    pub quiet_capturable: bool,
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

    /// The user functions among `functions` whose bodies chorus has judged
    /// (see `sql::routine`), with their natures.
    pub async fn routines(&self, db: &str, functions: &[String]) -> Vec<(String, Nature)> {
        if functions.is_empty() {
            return Vec::new();
        }
        let Some(snap) = self.snapshot(db).await else { return Vec::new() };
        functions.iter().filter_map(|f| snap.routines.get(f).map(|n| (f.clone(), n.clone()))).collect()
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
        let snap = load::snapshot(&client).await;
        task.abort();
        let snap = Arc::new(snap?);
        self.dbs.insert(db.to_string(), Entry { snap: snap.clone(), loaded: Instant::now() });
        Ok(snap)
    }
}
