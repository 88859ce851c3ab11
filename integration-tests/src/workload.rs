//! A seeded, randomized write workload through chorus: many concurrent sessions
//! mixing autocommit and explicit transactions, the simple and the extended
//! protocol with parameters, rollbacks, failing statements, savepoints,
//! conflicting updates of the same rows (and the deadlocks they cause),
//! upserts, deletes, COPY, transaction-time functions, DDL, and writes chorus
//! captures (per-row random(), volatile defaults, LIMIT without ORDER BY). It does not
//! check results itself: the caller runs `verify` after it.
//!
//! The seed is printed; `CHORUS_WORKLOAD_SEED=<seed>` replays a run's choices
//! (the interleaving of sessions is the scheduler's, so a failure may need a
//! few runs).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Size and seed of a run.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub seed: u64,
    pub sessions: usize,
    /// Transactions (units of work) per session.
    pub transactions: usize,
}

impl WorkloadOptions {
    /// `sessions` x `transactions`, seeded from `CHORUS_WORKLOAD_SEED` or the clock.
    pub fn from_env(sessions: usize, transactions: usize) -> WorkloadOptions {
        let seed = std::env::var("CHORUS_WORKLOAD_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        WorkloadOptions { seed, sessions, transactions }
    }
}

/// What happened, for the test's assertions and the benchmark's report.
#[derive(Debug, Default)]
pub struct WorkloadStats {
    pub committed: u64,
    pub rolled_back: u64,
    /// Statements that failed as intended (duplicate keys) or by contention
    /// (deadlocks, serialization failures).
    pub errors: u64,
}

/// splitmix64: small, seedable, good enough to pick cases.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const ACCOUNTS: i64 = 40;

/// Tables the workload uses, created through chorus.
pub const SCHEMA: &str = "
CREATE TABLE w_accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text, touched timestamptz);
INSERT INTO w_accounts SELECT g, 1000, 'init', NULL FROM generate_series(1, 40) g;
CREATE TABLE w_events (id bigint PRIMARY KEY, session int NOT NULL, kind text NOT NULL, amount numeric(12,2),
                       at timestamptz, day date, payload jsonb);
CREATE TABLE w_kv (k text PRIMARY KEY, v int NOT NULL, updated timestamp);
CREATE TABLE w_seq (id serial PRIMARY KEY, session int NOT NULL, note text NOT NULL);
CREATE SEQUENCE w_counter;
CREATE TABLE w_rand (id bigserial PRIMARY KEY, session int NOT NULL, u uuid NOT NULL DEFAULT gen_random_uuid(),
                     at timestamptz DEFAULT clock_timestamp(), r float8);
";

/// Run the workload against `url` (a chorus database URL) after creating its tables.
pub async fn run_workload(url: &str, opts: &WorkloadOptions) -> WorkloadStats {
    eprintln!("workload seed {} ({} sessions x {} transactions)", opts.seed, opts.sessions, opts.transactions);
    let setup = crate::connect(url).await;
    setup.batch_execute(SCHEMA).await.unwrap_or_else(|e| panic!("workload schema: {e}"));
    let committed = Arc::new(AtomicU64::new(0));
    let rolled_back = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for s in 0..opts.sessions {
        let url = url.to_string();
        let seed = opts.seed ^ ((s as u64 + 1) * 0x1000_0000_0001);
        let n = opts.transactions;
        let (c, r, e) = (committed.clone(), rolled_back.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let client = crate::connect(&url).await;
            let mut session = Worker {
                client,
                url,
                rng: Rng(seed),
                id: s as i64,
                next_event: 0,
                copy_rounds: 0,
                last: String::new(),
            };
            for _ in 0..n {
                match session.one().await {
                    Outcome::Committed => c.fetch_add(1, Ordering::Relaxed),
                    Outcome::RolledBack => r.fetch_add(1, Ordering::Relaxed),
                    Outcome::Failed => e.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await.expect("workload session panicked");
    }
    WorkloadStats {
        committed: committed.load(Ordering::Relaxed),
        rolled_back: rolled_back.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    }
}

enum Outcome {
    Committed,
    RolledBack,
    Failed,
}

struct Worker {
    client: tokio_postgres::Client,
    rng: Rng,
    id: i64,
    next_event: i64,
    copy_rounds: i64,
    /// What the previous unit did (for a failure's message).
    last: String,
    url: String,
}

/// Errors the workload provokes or runs into by design.
fn expected(e: &tokio_postgres::Error) -> bool {
    let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
    matches!(code.as_str(), "23505" | "23502" | "40P01" | "40001" | "25P02" | "22012" | "55P03")
}

impl Worker {
    fn event_id(&mut self) -> i64 {
        self.next_event += 1;
        self.id * 1_000_000 + self.next_event
    }

    fn account(&mut self) -> i64 {
        // A third of the picks hit the same five hot rows.
        if self.rng.below(3) == 0 { 1 + self.rng.below(5) as i64 } else { 1 + self.rng.below(ACCOUNTS as u64) as i64 }
    }

    async fn one(&mut self) -> Outcome {
        let unit = self.rng.below(13);
        let r = match unit {
            0 | 1 => self.transfer().await,
            2 => self.autocommit_simple().await,
            3 => self.upsert().await,
            4 => self.rollback().await,
            5 => self.duplicate().await,
            6 => self.savepoint().await,
            7 => self.multi_statement().await,
            8 => self.delete_and_reinsert().await,
            9 => self.copy().await,
            10 if self.id == 0 => self.ddl().await,
            12 => self.captured().await,
            _ => self.prepared_insert().await,
        };
        match r {
            Ok(o) => {
                self.last = format!("unit {unit} ok");
                o
            }
            Err(e) if expected(&e) => {
                // Leave any aborted transaction before the next unit.
                if let Err(r) = self.client.batch_execute("ROLLBACK").await {
                    // tokio-postgres loses track of its replies when COPY fails
                    // before it starts (PostgreSQL itself answered the same way:
                    // ErrorResponse and ReadyForQuery): it needs a new connection.
                    if unit != 9 {
                        panic!("workload session {}: ROLLBACK after {e:?} in unit {unit} failed: {r:?}", self.id);
                    }
                    self.client = crate::connect(&self.url).await;
                }
                self.last = format!("unit {unit} failed with {e:?}");
                Outcome::Failed
            }
            Err(e) => {
                panic!("workload session {}: unexpected error in unit {unit}: {e:?} (before: {})", self.id, self.last)
            }
        }
    }

    /// Explicit transaction, extended protocol with parameters, conflicting rows.
    async fn transfer(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        let (a, b) = (self.account() as i32, self.account() as i32);
        let amount = self.rng.below(100) as i64;
        let id = self.event_id();
        let c = &self.client;
        c.batch_execute("BEGIN").await?;
        c.execute("UPDATE w_accounts SET balance = balance - $1 WHERE id = $2", &[&amount, &a]).await?;
        c.execute("UPDATE w_accounts SET balance = balance + $1, touched = now() WHERE id = $2", &[&amount, &b])
            .await?;
        c.execute(
            "INSERT INTO w_events (id, session, kind, amount, at, day) VALUES ($1, $2, 'transfer', $3::int8 / 3.0, \
             CURRENT_TIMESTAMP, CURRENT_DATE)",
            &[&id, &(self.id as i32), &amount],
        )
        .await?;
        c.batch_execute("COMMIT").await?;
        Ok(Outcome::Committed)
    }

    /// Autocommit simple-protocol statements with literals.
    async fn autocommit_simple(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        let a = self.account();
        let n = self.rng.below(1000);
        self.client
            .batch_execute(&format!(
                "UPDATE w_accounts SET note = 'n{n} ' || note, touched = transaction_timestamp() WHERE id = {a}"
            ))
            .await?;
        Ok(Outcome::Committed)
    }

    async fn upsert(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        let k = format!("k{}", self.rng.below(20));
        self.client
            .execute(
                "INSERT INTO w_kv (k, v, updated) VALUES ($1, 1, LOCALTIMESTAMP) \
                 ON CONFLICT (k) DO UPDATE SET v = w_kv.v + 1, updated = LOCALTIMESTAMP",
                &[&k],
            )
            .await?;
        Ok(Outcome::Committed)
    }

    async fn rollback(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        let a = self.account() as i32;
        let id = self.event_id();
        let c = &self.client;
        c.batch_execute("BEGIN").await?;
        c.execute("UPDATE w_accounts SET balance = 0 WHERE id = $1", &[&a]).await?;
        c.execute("INSERT INTO w_events (id, session, kind) VALUES ($1, $2, 'never')", &[&id, &(self.id as i32)])
            .await?;
        c.execute("INSERT INTO w_seq (session, note) VALUES ($1, 'rolled back')", &[&(self.id as i32)]).await?;
        c.batch_execute("ROLLBACK").await?;
        Ok(Outcome::RolledBack)
    }

    /// A statement that fails on the leader: nothing of it may reach a follower.
    async fn duplicate(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        let id = self.event_id();
        let c = &self.client;
        c.batch_execute(&format!("INSERT INTO w_events (id, session, kind) VALUES ({id}, {}, 'dup')", self.id)).await?;
        let r = c.batch_execute(&format!("INSERT INTO w_events (id, session, kind) VALUES ({id}, 0, 'dup2')")).await;
        assert!(r.is_err(), "a duplicate key must fail");
        let r = c.batch_execute(&format!("INSERT INTO w_seq (session, note) VALUES ({}, NULL)", self.id)).await;
        assert!(r.is_err(), "a NULL note must fail");
        Ok(Outcome::Failed)
    }

    async fn savepoint(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        let (id, id2) = (self.event_id(), self.event_id());
        let a = self.account();
        let c = &self.client;
        c.batch_execute("BEGIN").await?;
        c.batch_execute(&format!("INSERT INTO w_events (id, session, kind) VALUES ({id}, {}, 'sp')", self.id)).await?;
        c.batch_execute("SAVEPOINT s1").await?;
        c.batch_execute(&format!("UPDATE w_accounts SET balance = balance + 1 WHERE id = {a}")).await?;
        let dup = c.batch_execute(&format!("INSERT INTO w_events (id, session, kind) VALUES ({id}, 0, 'x')")).await;
        assert!(dup.is_err());
        c.batch_execute("ROLLBACK TO SAVEPOINT s1").await?;
        c.batch_execute("SAVEPOINT s3").await?;
        assert!(c.batch_execute("INSERT INTO w_seq (session, note) VALUES (0, NULL)").await.is_err());
        c.batch_execute("ROLLBACK TO SAVEPOINT s3").await?;
        c.batch_execute(&format!("INSERT INTO w_seq (session, note) VALUES ({}, 'after savepoint')", self.id)).await?;
        c.batch_execute("SAVEPOINT s2").await?;
        c.batch_execute(&format!("INSERT INTO w_events (id, session, kind) VALUES ({id2}, {}, 'sp2')", self.id))
            .await?;
        c.batch_execute("RELEASE SAVEPOINT s2").await?;
        c.batch_execute("COMMIT").await?;
        Ok(Outcome::Committed)
    }

    /// One Query message holding a whole transaction.
    async fn multi_statement(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        let (a, b) = (self.account(), self.account());
        let id = self.event_id();
        self.client
            .batch_execute(&format!(
                "BEGIN; UPDATE w_accounts SET balance = balance * 2 WHERE id = {a}; \
                 UPDATE w_accounts SET balance = balance / 2 WHERE id = {b}; \
                 INSERT INTO w_events (id, session, kind, at, payload) VALUES ({id}, {}, 'multi', now(), \
                 jsonb_build_object('a', {a}, 'b', {b})); COMMIT",
                self.id
            ))
            .await?;
        Ok(Outcome::Committed)
    }

    async fn delete_and_reinsert(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        let k = format!("k{}", self.rng.below(20));
        let c = &self.client;
        c.batch_execute("BEGIN").await?;
        c.execute("DELETE FROM w_kv WHERE k = $1", &[&k]).await?;
        c.execute("INSERT INTO w_kv (k, v) VALUES ($1, (SELECT count(*)::int FROM w_events))", &[&k]).await?;
        c.batch_execute("COMMIT").await?;
        Ok(Outcome::Committed)
    }

    async fn copy(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        use futures_util::SinkExt;
        self.copy_rounds += 1;
        let mut data = String::new();
        for _ in 0..20 {
            let id = self.event_id();
            data.push_str(&format!("{id}\t{}\tcopy\t{}.5\t\\N\t2024-02-29\t{{\"r\": {}}}\n", self.id, id % 97, id));
        }
        let sink =
            self.client.copy_in("COPY w_events (id, session, kind, amount, at, day, payload) FROM STDIN").await?;
        let mut sink = std::pin::pin!(sink);
        sink.send(bytes::Bytes::from(data)).await?;
        sink.as_mut().finish().await?;
        Ok(Outcome::Committed)
    }

    async fn ddl(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        let n = self.rng.below(4);
        self.client
            .batch_execute(&format!(
                "ALTER TABLE w_kv ADD COLUMN IF NOT EXISTS c{n} int DEFAULT {n}; \
                 CREATE INDEX IF NOT EXISTS w_events_day{n} ON w_events (day)"
            ))
            .await?;
        Ok(Outcome::Committed)
    }

    /// Writes whose values differ per row and per node, which chorus replicates
    /// by the rows the leader wrote, mixed with plain writes that draw from
    /// sequences after them.
    async fn captured(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        let session = self.id as i32;
        let c = &self.client;
        match self.rng.below(7) {
            5 => {
                // A whole transaction in one query, as migration tools send it.
                let n = 1 + self.rng.below(10);
                c.batch_execute(&format!(
                    "BEGIN; INSERT INTO w_rand (session, r) SELECT {session}, random() FROM generate_series(1, {n}); \
                     UPDATE w_rand SET u = gen_random_uuid() WHERE session = {session} AND id % 3 = 0; COMMIT;"
                ))
                .await?;
            }
            6 => {
                // Rows staged in a temporary table, then copied into a regular one.
                c.execute("CREATE TEMP TABLE IF NOT EXISTS w_stage (r float8)", &[]).await?;
                c.execute("INSERT INTO w_stage SELECT random() FROM generate_series(1, 3)", &[]).await?;
                c.execute("INSERT INTO w_rand (session, r) SELECT $1, r FROM w_stage", &[&session]).await?;
                c.execute("TRUNCATE w_stage", &[]).await?;
            }
            0 => {
                let n = 1 + self.rng.below(30);
                c.batch_execute(&format!(
                    "INSERT INTO w_rand (session, r) SELECT {session}, random() FROM generate_series(1, {n})"
                ))
                .await?;
            }
            1 => {
                let k = self.rng.below(5) as i64;
                c.batch_execute("BEGIN").await?;
                c.execute("UPDATE w_rand SET r = random() WHERE session = $1 AND id % 5 = $2", &[&session, &k]).await?;
                c.execute("INSERT INTO w_seq (session, note) VALUES ($1, 'after capture')", &[&session]).await?;
                c.execute("INSERT INTO w_rand (session) VALUES ($1)", &[&session]).await?;
                c.batch_execute("COMMIT").await?;
            }
            2 => {
                c.batch_execute(&format!(
                    "DELETE FROM w_rand WHERE id IN (SELECT id FROM w_rand WHERE session = {session} LIMIT 2)"
                ))
                .await?;
            }
            3 => {
                // Shared ids: sessions upsert each other's rows.
                let id = 1 + self.rng.below(50) as i64;
                c.execute(
                    "INSERT INTO w_rand (id, session, r) VALUES ($1, $2, random()) \
                     ON CONFLICT (id) DO UPDATE SET r = random(), u = gen_random_uuid()",
                    &[&id, &session],
                )
                .await?;
            }
            _ => {
                c.batch_execute("BEGIN").await?;
                c.batch_execute(&format!("INSERT INTO w_rand (session, r) VALUES ({session}, random())")).await?;
                c.batch_execute("SAVEPOINT c").await?;
                c.batch_execute(&format!("UPDATE w_rand SET u = gen_random_uuid() WHERE session = {session}")).await?;
                c.batch_execute("ROLLBACK TO SAVEPOINT c").await?;
                c.batch_execute(&format!("INSERT INTO w_seq (session, note) VALUES ({session}, 'sp capture')")).await?;
                c.batch_execute("COMMIT").await?;
            }
        }
        Ok(Outcome::Committed)
    }

    /// A named prepared statement executed several times (extended protocol).
    async fn prepared_insert(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        let stmt = self
            .client
            .prepare("INSERT INTO w_events (id, session, kind, payload) VALUES ($1, $2, $3, $4::text::jsonb)")
            .await?;
        for _ in 0..3 {
            let id = self.event_id();
            let payload = format!("{{\"n\": {id}, \"s\": \"quote ' and \\\\ backslash\"}}");
            self.client.execute(&stmt, &[&id, &(self.id as i32), &"prep", &payload]).await?;
        }
        self.client
            .execute("INSERT INTO w_seq (session, note) VALUES ($1, 'n' || nextval('w_counter'))", &[&(self.id as i32)])
            .await?;
        Ok(Outcome::Committed)
    }
}
