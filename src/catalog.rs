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

struct Entry {
    safe: Arc<HashSet<String>>,
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

    fn cached(&self, db: &str) -> Option<Arc<HashSet<String>>> {
        self.dbs.get(db).filter(|e| e.loaded.elapsed() < TTL).map(|e| e.safe.clone())
    }

    /// True when every function is known to be non-volatile in `db`.
    pub async fn all_safe(&self, db: &str, functions: &[String]) -> bool {
        if functions.is_empty() {
            return true;
        }
        let safe = match self.cached(db) {
            Some(s) => s,
            None => match self.load(db).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(db, error = %e, "function catalog unavailable; routing to the leader");
                    // Remember the failure briefly so a down leader does not
                    // cost every read a connection attempt.
                    let loaded = Instant::now().checked_sub(TTL - RETRY_AFTER_FAILURE).unwrap_or_else(Instant::now);
                    self.dbs.insert(db.to_string(), Entry { safe: Arc::new(HashSet::new()), loaded });
                    return false;
                }
            },
        };
        functions.iter().all(|f| safe.contains(f.as_str()))
    }

    /// Forget what we know about `db` (after DDL).
    pub fn invalidate(&self, db: &str) {
        self.dbs.remove(db);
    }

    async fn load(&self, db: &str) -> Result<Arc<HashSet<String>>, tokio_postgres::Error> {
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
        // An unqualified name is safe only if no overload in any schema is volatile.
        let rows = client
            .query(
                "SELECT p.proname::text, n.nspname::text, bool_and(p.provolatile <> 'v') \
                 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                 GROUP BY 1, 2",
                &[],
            )
            .await;
        task.abort();
        let rows = rows?;
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
        let safe = Arc::new(safe);
        self.dbs.insert(db.to_string(), Entry { safe: safe.clone(), loaded: Instant::now() });
        Ok(safe)
    }
}
