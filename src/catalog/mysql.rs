//! What a MySQL/MariaDB leader's catalog says about replay
//! (`sql::mysql::safety::Facts`): its triggers' and stored routines' bodies,
//! the columns whose DEFAULT differs per server, what its views read, its
//! AUTO_INCREMENT columns. One snapshot for the whole server (a MySQL
//! statement may name any database), read from `information_schema` on a
//! connection of chorus's own when a write first needs it, again after DDL
//! seen through chorus and after a time-to-live, so objects created behind
//! chorus's back are picked up too.
//!
//! When it cannot be read, chorus goes on with what it last read (nothing,
//! at the start): the statement still runs, and the failure is logged. The
//! catalog connection waits at most `LOCK_WAIT_SECS` for a metadata lock
//! (information_schema opens table definitions): a session waiting for the
//! load may hold a lock a DDL queued before the load needs.

use crate::config::Node;
use crate::replication::mysql::conn;
use crate::sql::mysql::routine::{self, Nature};
use crate::sql::mysql::safety::{Facts, VolatileDefault};
use mysql_async::prelude::Queryable;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(30);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);
const MISSING_RECHECK: Duration = Duration::from_secs(1);
const LOCK_WAIT_SECS: u32 = 2;

const SYSTEM_SCHEMAS: &str = "('mysql', 'information_schema', 'performance_schema', 'sys', '_chorus')";

pub struct MyCatalog {
    leader: Node,
    connect_timeout: Duration,
    /// The facts, when they were read (None: to be read again), and a
    /// generation `invalidate` bumps, so a load that started before a DDL
    /// does not pass for fresh.
    current: parking_lot::Mutex<(Arc<Facts>, Option<Instant>, u64)>,
    loading: tokio::sync::Mutex<Option<mysql_async::Conn>>,
}

impl MyCatalog {
    pub fn new(leader: Node, connect_timeout: Duration) -> Self {
        MyCatalog {
            leader,
            connect_timeout,
            current: parking_lot::Mutex::new((Arc::new(Facts::default()), None, 0)),
            loading: tokio::sync::Mutex::new(None),
        }
    }

    fn fresh(&self) -> Option<Arc<Facts>> {
        let (facts, at, _) = &*self.current.lock();
        at.filter(|at| at.elapsed() < TTL).map(|_| facts.clone())
    }

    /// The leader's catalog, read if what chorus has is older than the TTL.
    pub async fn facts(&self) -> Arc<Facts> {
        if let Some(f) = self.fresh() {
            return f;
        }
        let mut conn = self.loading.lock().await;
        if let Some(f) = self.fresh() {
            return f;
        }
        let generation = self.current.lock().2;
        let started = Instant::now();
        let loaded = self.load(&mut conn).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if elapsed_ms > 1000 {
            tracing::warn!(elapsed_ms, "reading the MySQL leader's catalog was slow");
        } else {
            tracing::debug!(elapsed_ms, "read the MySQL leader's catalog");
        }
        match loaded {
            Ok(facts) => {
                let facts = Arc::new(facts);
                let mut current = self.current.lock();
                let fresh = (current.2 == generation).then(Instant::now);
                *current = (facts.clone(), fresh, current.2);
                facts
            }
            Err(e) => {
                *conn = None;
                tracing::warn!(error = %e, "cannot read the MySQL leader's catalog (triggers, routines, defaults); \
                    going on with what was read before");
                let mut current = self.current.lock();
                current.1 = Instant::now().checked_sub(TTL - RETRY_AFTER_FAILURE);
                current.0.clone()
            }
        }
    }

    /// A statement names an object chorus did not find (made behind its
    /// back, maybe): read the catalog again at the next need, unless it was
    /// read less than `MISSING_RECHECK` ago, so a client repeating such a
    /// statement does not make chorus read the whole catalog each time.
    pub fn recheck_missing(&self) {
        let mut current = self.current.lock();
        if current.1.is_none_or(|at| at.elapsed() >= MISSING_RECHECK) {
            current.1 = None;
        }
    }

    /// Read it again at the next need (after DDL).
    pub fn invalidate(&self) {
        let mut current = self.current.lock();
        current.1 = None;
        current.2 += 1;
    }

    async fn load(&self, slot: &mut Option<mysql_async::Conn>) -> Result<Facts, conn::MyReplicationError> {
        let node = &self.leader;
        if slot.is_none() {
            let mut c = conn::connect(node, None, self.connect_timeout).await?;
            c.query_drop(format!("SET SESSION lock_wait_timeout = {LOCK_WAIT_SECS}"))
                .await
                .map_err(conn::query_error(node, "setting up the catalog connection"))?;
            *slot = Some(c);
        }
        let c = slot.as_mut().expect("connected above");
        let q = |what: &'static str| conn::query_error(node, what);
        let version = texts(c.query("SELECT VERSION()").await.map_err(q("reading the version"))?);
        let mariadb = version.first().and_then(|r| col(r, 0)).unwrap_or_default().contains("MariaDB");
        // 2 ("interleaved", MySQL 8's default): a bulk insert's ids need not
        // be consecutive. A server without InnoDB has no such variable.
        let lock_mode: Option<Option<String>> =
            c.query_first("SELECT @@GLOBAL.innodb_autoinc_lock_mode").await.unwrap_or(None);
        let interleaved_ids = lock_mode.flatten().as_deref() == Some("2");

        let rows = c
            .query::<mysql_async::Row, _>(format!(
                "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION FROM information_schema.ROUTINES \
                 WHERE ROUTINE_SCHEMA NOT IN {SYSTEM_SCHEMAS}"
            ))
            .await
            .map_err(q("reading stored routines"))?;
        let mut routines = HashMap::new();
        for r in texts(rows) {
            let (schema, name, body) = (col(&r, 0).unwrap_or_default(), col(&r, 1).unwrap_or_default(), col(&r, 3));
            let nature = match body {
                Some(body) => routine::judge_body(&body, &schema.to_ascii_lowercase()),
                None => Nature {
                    nondeterministic: Some(
                        "has a body chorus's user may not read (grant it SHOW_ROUTINE or SELECT on mysql.proc)".into(),
                    ),
                    writes: true,
                    ..Nature::default()
                },
            };
            routines.insert(format!("{}.{}", schema.to_ascii_lowercase(), name.to_ascii_lowercase()), nature);
        }

        let rows = c
            .query::<mysql_async::Row, _>(format!(
                "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE, EVENT_MANIPULATION, \
                 ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA NOT IN {SYSTEM_SCHEMAS}"
            ))
            .await
            .map_err(q("reading triggers"))?;
        // Per table (what a body's write of it fires) and per table and event.
        let mut triggers: HashMap<String, Nature> = HashMap::new();
        for r in texts(rows) {
            let [schema, name, table_schema, table, event, body] =
                std::array::from_fn(|i| col(&r, i).unwrap_or_default());
            let mut n = routine::judge_body(&body, &schema.to_ascii_lowercase());
            n.nondeterministic = n.nondeterministic.map(|why| format!("trigger {name}: {why}"));
            let table = format!("{}.{}", table_schema.to_ascii_lowercase(), table.to_ascii_lowercase());
            let on_event = format!("{table}/{}", event.to_ascii_lowercase());
            for key in [table, on_event] {
                let all = triggers.entry(key).or_default();
                if all.nondeterministic.is_none() {
                    all.nondeterministic = n.nondeterministic.clone();
                }
                all.writes |= n.writes;
                all.calls.extend(n.calls.iter().cloned());
                all.writes_tables.extend(n.writes_tables.iter().cloned());
                all.inserts.extend(n.inserts.iter().cloned());
            }
        }

        // MariaDB prints a literal DEFAULT quoted and an expression as it is;
        // MySQL prints both bare and marks expressions DEFAULT_GENERATED.
        let rows = c
            .query::<mysql_async::Row, _>(format!(
                "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_DEFAULT, EXTRA FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS} \
                 AND (COLUMN_DEFAULT IS NOT NULL OR EXTRA LIKE '%auto_increment%')"
            ))
            .await
            .map_err(q("reading column defaults"))?;
        let mut auto_increment = HashMap::new();
        let mut defaults: Vec<(String, String, String, Nature)> = Vec::new();
        for r in texts(rows) {
            let [schema, table, column] = std::array::from_fn(|i| col(&r, i).unwrap_or_default());
            let (default, extra) = (col(&r, 3), col(&r, 4).unwrap_or_default());
            let key = format!("{}.{}", schema.to_ascii_lowercase(), table.to_ascii_lowercase());
            let column = column.to_ascii_lowercase();
            let extra = extra.to_ascii_lowercase();
            if extra.contains("auto_increment") {
                auto_increment.insert(key.clone(), column.clone());
            }
            let expression = mariadb || extra.contains("default_generated");
            if let Some(default) = default.filter(|_| expression) {
                let n = routine::judge_default(&default, &schema.to_ascii_lowercase());
                defaults.push((key, column, default, n));
            }
        }
        routine::settle(&mut routines, &mut triggers, &auto_increment);
        let mut volatile_defaults: HashMap<String, Vec<VolatileDefault>> = HashMap::new();
        for (table, column, expression, n) in defaults {
            let why = n.nondeterministic.or_else(|| {
                n.calls.iter().find_map(|f| {
                    let r = routines.get(f)?;
                    r.nondeterministic.as_ref().map(|w| format!("calls {f}(), which {w}"))
                })
            });
            if let Some(why) = why {
                volatile_defaults.entry(table).or_default().push(VolatileDefault { column, expression, why });
            }
        }

        let rows = c
            .query::<mysql_async::Row, _>(format!(
                "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS \
                 WHERE TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS}"
            ))
            .await
            .map_err(q("reading views"))?;
        let mut views = HashMap::new();
        for r in texts(rows) {
            let (schema, name, definition) =
                (col(&r, 0).unwrap_or_default(), col(&r, 1).unwrap_or_default(), col(&r, 2));
            let schema = schema.to_ascii_lowercase();
            let read = view_tables(definition.as_deref().unwrap_or(""), &schema);
            views.insert(format!("{schema}.{}", name.to_ascii_lowercase()), read);
        }
        let rows = c
            .query::<mysql_async::Row, _>(format!(
                "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE CONSTRAINT_NAME = 'PRIMARY' AND TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS} \
                 ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
            ))
            .await
            .map_err(q("reading primary keys"))?;
        let mut primary_keys: HashMap<String, Vec<String>> = HashMap::new();
        for r in texts(rows) {
            let [schema, table, column] = std::array::from_fn(|i| col(&r, i).unwrap_or_default());
            let key = format!("{}.{}", schema.to_ascii_lowercase(), table.to_ascii_lowercase());
            primary_keys.entry(key).or_default().push(column);
        }
        Ok(Facts { routines, triggers, volatile_defaults, views, auto_increment, interleaved_ids, primary_keys })
    }
}

/// Rows as text, whatever their bytes (a body may hold any): no row a
/// server sends can make the load fail, let alone panic.
fn texts(rows: Vec<mysql_async::Row>) -> Vec<Vec<Option<String>>> {
    rows.into_iter()
        .map(|row| {
            (0..row.len())
                .map(|i| match row.as_ref(i) {
                    None | Some(mysql_async::Value::NULL) => None,
                    Some(mysql_async::Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    Some(v) => Some(v.as_sql(true)),
                })
                .collect()
        })
        .collect()
}

/// Column `i` of a row from [`texts`].
fn col(row: &[Option<String>], i: usize) -> Option<String> {
    row.get(i).cloned().flatten()
}

/// The tables a view's definition names after FROM / JOIN / `,` (the
/// server stores it with qualified names), as `db.table` keys.
fn view_tables(definition: &str, schema: &str) -> Vec<String> {
    use crate::sql::mysql::lex::{Token, tokens};
    use crate::sql::mysql::targets::ident;
    let toks = tokens(definition, true);
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let after = matches!(t, Token::Word(w) if w.eq_ignore_ascii_case("FROM") || w.eq_ignore_ascii_case("JOIN"))
            || *t == Token::Symbol(',')
            || *t == Token::Symbol('(');
        if !after {
            continue;
        }
        let Some(first) = ident(toks.get(i + 1)) else { continue };
        let key = match (toks.get(i + 2), ident(toks.get(i + 3))) {
            (Some(Token::Symbol('.')), Some(second)) => format!("{first}.{second}"),
            _ => format!("{schema}.{first}"),
        };
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_views_tables_are_read_off_its_definition() {
        let def = "select `s`.`t`.`a` AS `a`,`u`.`b` AS `b` from (`s`.`t` join `other`.`u` on(`s`.`t`.`a` = `u`.`a`))";
        let read = super::view_tables(def, "s");
        assert!(read.contains(&"s.t".to_string()) && read.contains(&"other.u".to_string()), "{read:?}");
    }
}
