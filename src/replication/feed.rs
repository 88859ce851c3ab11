//! The leader side of one replicated database: a connection that LISTENs for
//! `_chorus_log`, publishes the leader's committed LSN, serves log fetches to
//! the database's appliers, and trims the leader's log.

use super::state::ReplicationState;
use super::{Failures, Lsn, ReplicationError, connect_raw, query_error};
use crate::config::Node;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{AsyncMessage, Client};

/// How often the LSN is read when no notification arrives.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How often applied log rows older than the retention are deleted: every
/// 30 s, more often (down to every second) for retentions under a minute.
pub fn trim_every(retention: Duration) -> Duration {
    (retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// One row of `_chorus.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    pub lsn: Lsn,
    pub seq: i32,
    pub kind: u8,
    /// The statement (or, for the header, the SET script) as stored.
    pub sql: Option<String>,
    /// What to send to the follower: `sql` in the client encoding the header
    /// sets (the same bytes as `sql` unless the client used another encoding).
    pub text: Vec<u8>,
    pub param_types: Option<Vec<u32>>,
    pub params: Option<Vec<u8>>,
    /// `committed_at` in PostgreSQL's binary form: microseconds since 2000-01-01 UTC.
    pub committed_at: i64,
}

impl LogRow {
    /// A row whose text is sent as stored (UTF-8).
    pub fn new(lsn: Lsn, seq: i32, kind: u8, sql: Option<&str>) -> LogRow {
        LogRow {
            lsn,
            seq,
            kind,
            sql: sql.map(str::to_string),
            text: sql.unwrap_or("").as_bytes().to_vec(),
            param_types: None,
            params: None,
            committed_at: 0,
        }
    }
}

/// All log rows of one LSN (none: the LSN logged nothing), in `seq` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedTxn {
    pub lsn: Lsn,
    pub rows: Vec<LogRow>,
}

impl LoggedTxn {
    /// The header's SET script, if the transaction has one.
    pub fn header(&self) -> Option<&LogRow> {
        self.rows.first().filter(|r| r.kind == b'h')
    }
}

/// A timestamptz read in binary form, without a date-time crate.
struct RawTimestamp(i64);

impl<'a> FromSql<'a> for RawTimestamp {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw.try_into().map_err(|_| "timestamptz is not 8 bytes")?;
        Ok(RawTimestamp(i64::from_be_bytes(bytes)))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

/// The log of LSNs `after + 1 ..= upto`, one [`LoggedTxn`] per LSN.
pub async fn fetch(
    client: &Client,
    leader: &Node,
    db: &str,
    after: Lsn,
    upto: Lsn,
) -> Result<Vec<LoggedTxn>, ReplicationError> {
    let rows = client
        .query(
            "SELECT lsn, seq, kind, sql, param_types, params, committed_at FROM _chorus.log \
             WHERE lsn > $1 AND lsn <= $2 ORDER BY lsn, seq",
            &[&after, &upto],
        )
        .await
        .map_err(query_error(leader, db, "reading _chorus.log"))?;
    let mut txns: Vec<LoggedTxn> = (after + 1..=upto).map(|lsn| LoggedTxn { lsn, rows: Vec::new() }).collect();
    for r in rows {
        let lsn: Lsn = r.get(0);
        let sql: Option<String> = r.get(3);
        let row = LogRow {
            lsn,
            seq: r.get(1),
            kind: r.get::<_, i8>(2) as u8,
            text: sql.as_deref().unwrap_or("").as_bytes().to_vec(),
            sql,
            param_types: r.get(4),
            params: r.get(5),
            committed_at: r.get::<_, RawTimestamp>(6).0,
        };
        txns[(lsn - after - 1) as usize].rows.push(row);
    }
    for txn in &mut txns {
        let encoding = txn.header().and_then(|h| client_encoding_in(h.sql.as_deref().unwrap_or("")));
        if let Some(enc) = encoding {
            reencode(client, leader, db, txn, &enc).await?;
        }
    }
    Ok(txns)
}

/// Statement texts of a transaction whose client used a non-UTF-8 encoding:
/// the log holds them in the database's encoding; the follower reads them
/// after the header set the client's, so send them in that one.
async fn reencode(
    client: &Client,
    leader: &Node,
    db: &str,
    txn: &mut LoggedTxn,
    encoding: &str,
) -> Result<(), ReplicationError> {
    let rows = client
        .query(
            "SELECT seq, pg_catalog.convert_to(sql, $2) FROM _chorus.log WHERE lsn = $1 AND seq > 0 AND sql IS NOT NULL",
            &[&txn.lsn, &encoding],
        )
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) if e.code().is_some() => {
            tracing::warn!(db, lsn = txn.lsn, encoding, error = %super::pg_text(&e), "cannot convert statements to the client encoding; sending them as UTF-8");
            return Ok(());
        }
        Err(e) => return Err(query_error(leader, db, "converting statements to the client encoding")(e)),
    };
    for r in rows {
        let seq: i32 = r.get(0);
        if let Some(row) = txn.rows.iter_mut().find(|row| row.seq == seq) {
            row.text = r.get(1);
        }
    }
    Ok(())
}

/// The client encoding a session-context script sets, if not UTF-8: the
/// last `client_encoding` (or `SET NAMES`) value in it.
pub fn client_encoding_in(script: &str) -> Option<String> {
    let lower = script.to_ascii_lowercase();
    let mut found: Option<(usize, String)> = None;
    for key in ["client_encoding", "names"] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(key).map(|i| i + from) {
            from = i + key.len();
            let before_ok = i == 0 || !is_word(lower.as_bytes()[i - 1]);
            if !before_ok || (key == "names" && !lower[..i].trim_end().ends_with("set")) {
                continue;
            }
            if let Some(v) = value_after(&script[from..])
                && found.as_ref().is_none_or(|(at, _)| i > *at)
            {
                found = Some((i, v));
            }
        }
    }
    let (_, v) = found?;
    let norm = v.to_ascii_uppercase().replace(['-', '_'], "");
    (!matches!(norm.as_str(), "UTF8" | "UNICODE" | "DEFAULT")).then_some(v)
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The value after a setting name: skips `'`, `,`, `=`, `TO` and blanks, then
/// reads an optionally quoted word.
fn value_after(rest: &str) -> Option<String> {
    let mut s = rest.trim_start();
    s = s.strip_prefix('\'').unwrap_or(s).trim_start();
    if let Some(t) = s.strip_prefix(',').or_else(|| s.strip_prefix('=')) {
        s = t.trim_start();
    } else if s.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("to"))
        && s.as_bytes().get(2).is_some_and(|b| !is_word(*b))
    {
        s = s[2..].trim_start();
    } else if !s.starts_with('\'') && !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return None;
    }
    let s = s.strip_prefix(['\'', '"']).unwrap_or(s);
    let v: String = s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    (!v.is_empty()).then_some(v)
}

/// What the database's appliers share: the leader connection for fetches.
pub struct Feed {
    client: watch::Sender<Option<Arc<Client>>>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed { client: watch::channel(None).0 }
    }
}

impl Feed {
    /// The current leader connection, if the feed has one.
    pub fn client(&self) -> Option<Arc<Client>> {
        self.client.borrow().clone()
    }
}

/// Backoff for reconnecting: 200 ms, doubling, at most 5 s.
#[derive(Debug)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(200))
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        d
    }
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// Aborts a spawned task when dropped (a connection driver outliving its owner).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serve database `db`'s feed until aborted. Ends by itself only when the
/// database no longer exists on the leader.
pub async fn run(
    leader: Node,
    db: String,
    feed: Arc<Feed>,
    state: Arc<ReplicationState>,
    retention: Duration,
    connect_timeout: Duration,
) {
    let mut backoff = Backoff::default();
    let mut failures = Failures::default();
    // The database's id (see migrate.rs), kept across reconnects: if it
    // changes, the database was dropped and created again by someone else
    // (another chorus) meanwhile, and what this feed knew is about another.
    let mut origin: Option<Option<String>> = None;
    loop {
        let e = match connect_raw(&leader, &db, "chorus-feed", connect_timeout).await {
            Ok((client, mut conn)) => {
                let wake = Arc::new(Notify::new());
                let w = wake.clone();
                // Drive the connection; a notification wakes the feed at once.
                let _driver = AbortOnDrop(tokio::spawn(async move {
                    while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                        if let AsyncMessage::Notification(_) = m {
                            w.notify_one();
                        }
                    }
                }));
                let client = Arc::new(client);
                let retry = (&mut backoff, &mut failures);
                let r = serve(&client, &leader, &db, &feed, &state, &wake, retention, retry, &mut origin).await;
                feed.client.send_replace(None);
                // Unseen, other chorus feeds may come: sessions NOTIFY again.
                state.progress(&db).set_alone(false);
                match r {
                    Ok(()) => continue,
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        if e.is_missing_database() {
            tracing::info!(node = %leader.name, db, "database no longer exists on the leader; its replication stops");
            return;
        }
        if matches!(e, ReplicationError::Replaced { .. }) {
            tracing::info!(node = %leader.name, db, "database was dropped and created again on the leader; its replication starts over");
            return;
        }
        let delay = backoff.next_delay();
        if failures.record() {
            tracing::warn!(node = %leader.name, db, error = %e, retry_in = ?delay, "replication feed lost the leader");
        } else {
            tracing::debug!(node = %leader.name, db, error = %e, retry_in = ?delay, "replication feed still cannot reach the leader");
        }
        tokio::time::sleep(delay).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    client: &Arc<Client>,
    leader: &Node,
    db: &str,
    feed: &Feed,
    state: &ReplicationState,
    wake: &Notify,
    retention: Duration,
    (backoff, failures): (&mut Backoff, &mut Failures),
    origin: &mut Option<Option<String>>,
) -> Result<(), ReplicationError> {
    client.batch_execute("LISTEN _chorus_log").await.map_err(query_error(leader, db, "LISTEN"))?;
    feed.client.send_replace(Some(client.clone()));
    // Sessions commit logged transactions without waiting for the WAL flush
    // (session::txnlog): an LSN is handed to the followers only once the
    // WAL written when it was read is flushed, so a leader that crashes and
    // loses unflushed commits never finds them on a follower.
    let read_lsn = client
        .prepare("SELECT lsn, pg_catalog.pg_current_wal_insert_lsn()::text, origin::text FROM _chorus.lsn")
        .await
        .map_err(query_error(leader, db, "preparing"))?;

    let flushed = client
        .prepare("SELECT pg_catalog.pg_current_wal_flush_lsn() >= $1::text::pg_catalog.pg_lsn")
        .await
        .map_err(query_error(leader, db, "preparing"))?;
    // Other chorus processes feeding this database: while there are none,
    // this one's sessions send no NOTIFY (they hand their LSNs over in
    // process; migrations/postgres/0006); once one appears they do again.
    let others = client
        .prepare(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = pg_catalog.current_database() \
             AND application_name = 'chorus-feed' AND pid <> pg_catalog.pg_backend_pid()",
        )
        .await
        .map_err(query_error(leader, db, "preparing"))?;
    let progress = state.progress(db);
    let mut others_checked: Option<Instant> = None;
    let mut last_trim = Instant::now();
    loop {
        let row = client.query_one(&read_lsn, &[]).await.map_err(query_error(leader, db, "reading _chorus.lsn"))?;
        let (lsn, wal): (Lsn, String) = (row.get(0), row.get(1));
        let now: Option<String> = row.get(2);
        match origin {
            None => *origin = Some(now),
            Some(was) if *was != now => return Err(ReplicationError::Replaced { database: db.to_string() }),
            Some(_) => {}
        }
        if state.leader_lsn(db) != Some(lsn) {
            let mut wait = Duration::from_micros(250);
            while !client
                .query_one(&flushed, &[&wal])
                .await
                .map_err(query_error(leader, db, "reading the WAL flush position"))?
                .get::<_, bool>(0)
            {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(20));
            }
        }
        state.set_leader_lsn(db, lsn);
        if others_checked.is_none_or(|at| at.elapsed() >= POLL_EVERY) {
            others_checked = Some(Instant::now());
            let alone = match client.query_one(&others, &[]).await {
                Ok(row) => row.get::<_, i64>(0) == 0,
                Err(_) => false,
            };
            if alone != progress.alone() {
                tracing::debug!(db, alone, "other chorus feeds on the leader changed");
            }
            progress.set_alone(alone);
        }
        // Working: the next failure starts over with a short delay and a warning.
        backoff.reset();
        failures.reset();
        if last_trim.elapsed() >= trim_every(retention) {
            last_trim = Instant::now();
            if let Some(min) = state.min_applied(db) {
                let n = client
                    .execute(
                        "DELETE FROM _chorus.log WHERE lsn <= $1 AND committed_at < pg_catalog.now() - $2 * interval '1 second'",
                        &[&min, &retention.as_secs_f64()],
                    )
                    .await
                    .map_err(query_error(leader, db, "trimming _chorus.log"))?;
                if n > 0 {
                    tracing::debug!(node = %leader.name, db, rows = n, upto = min, "trimmed the leader's log");
                }
            }
        }
        let _ = tokio::time::timeout(POLL_EVERY, async {
            tokio::select! {
                _ = wake.notified() => {}
                _ = progress.feed_woken() => {}
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_encoding_is_found_in_session_scripts() {
        let cases: &[(&str, Option<&str>)] = &[
            ("RESET ALL; SET search_path = a, b", None),
            ("RESET ALL; SELECT pg_catalog.set_config('client_encoding', 'LATIN1', false)", Some("LATIN1")),
            ("RESET ALL; SELECT pg_catalog.set_config('client_encoding', 'UTF8', false)", None),
            ("SET client_encoding = 'WIN1252'", Some("WIN1252")),
            ("SET CLIENT_ENCODING TO sql_ascii", Some("sql_ascii")),
            ("SET NAMES 'LATIN9'", Some("LATIN9")),
            ("SET client_encoding = 'LATIN1'; SET client_encoding = 'utf-8'", None),
            ("SET application_name = 'names'", None),
            ("SET my.client_encoding_x = 'a'", None),
        ];
        for (script, want) in cases {
            assert_eq!(client_encoding_in(script).as_deref(), *want, "{script}");
        }
    }

    #[test]
    fn short_retentions_trim_more_often() {
        assert_eq!(trim_every(Duration::from_secs(3600)), Duration::from_secs(30));
        assert_eq!(trim_every(Duration::from_secs(20)), Duration::from_secs(10));
        assert_eq!(trim_every(Duration::ZERO), Duration::from_secs(1));
    }

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }
}
