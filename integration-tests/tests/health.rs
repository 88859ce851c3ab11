//! Health and failures of the servers behind chorus, each test on a private
//! cluster (leader + 2 followers) so it can stop and kill nodes: a stopped
//! follower leaves the read rotation and comes back after a restart, a killed
//! follower does not break a session that had used it, server connections
//! killed on the server are not handed out again, and a down leader gives
//! writes a quick, clear error while reads go on.

use integration_tests::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(200);

/// Checks every 200 ms. The check timeout stays generous: on a loaded machine
/// (tests of this binary start clusters in parallel) a slow but healthy node
/// must not leave the rotation; stopped and killed nodes fail at once anyway.
fn fast_health(c: &mut chorus::config::Config) {
    c.health.interval = INTERVAL;
    c.health.timeout = Duration::from_secs(3);
}

/// The SQLSTATE, or the error text when it is not a server error (for messages).
fn sqlstate_or_text(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map(|d| d.code().code().to_string()).unwrap_or_else(|| format!("(no SQLSTATE: {e})"))
}

/// Which server answered a plain read, or the error (under a hang guard).
async fn read_port(client: &tokio_postgres::Client) -> Result<String, String> {
    let fut = client.simple_query("SELECT current_setting('port')");
    match tokio::time::timeout(Duration::from_secs(15), fut).await {
        Err(_) => panic!("a read hung"),
        Ok(Err(e)) => Err(format!("{} {e:?}", sqlstate_or_text(&e))),
        Ok(Ok(msgs)) => Ok(msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .expect("a row")),
    }
}

/// `n` reads that must all succeed; the ports that answered them.
async fn reads_ok(client: &tokio_postgres::Client, n: usize, what: &str) -> Vec<String> {
    let mut ports = Vec::new();
    for i in 0..n {
        match read_port(client).await {
            Ok(p) => ports.push(p),
            Err(e) => panic!("{what}: read {i} failed: {e}"),
        }
    }
    ports
}

/// Retry reads until `ok(port)` holds for one, for up to `limit`; panics with
/// what the reads returned otherwise.
async fn wait_for_read(client: &tokio_postgres::Client, limit: Duration, what: &str, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let r = read_port(client).await;
        if r.as_deref().is_ok_and(&ok) {
            return;
        }
        seen.push(r);
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}; reads returned {seen:?}");
        tokio::time::sleep(INTERVAL / 4).await;
    }
}

fn port_of(node: &PgNode) -> String {
    node.port().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_follower_leaves_the_rotation_and_returns_after_restart() {
    let cluster = private_cluster(2);
    let db = fresh_database_on(&cluster).await;
    let chorus = start_chorus_with(&cluster, fast_health);
    let (f1, f2) = (&cluster.followers()[0], &cluster.followers()[1]);
    let client = chorus.connect(db.name()).await;

    // Reads are spread over both followers.
    let ports: BTreeSet<String> = reads_ok(&client, 10, "before").await.into_iter().collect();
    assert_eq!(ports, BTreeSet::from([port_of(f1), port_of(f2)]), "reads before the stop");

    f1.stop().unwrap();
    // The session had a connection to f1; chorus must notice it is gone.
    // A brief window is allowed for the health check to notice the node.
    let until = Instant::now() + INTERVAL * 5;
    let mut window_errors = Vec::new();
    while Instant::now() < until {
        match read_port(&client).await {
            Ok(p) if p == port_of(f1) => panic!("a stopped follower answered"),
            Ok(_) => {}
            Err(e) => window_errors.push(e),
        }
    }
    assert!(window_errors.is_empty(), "reads failed after the follower stopped: {window_errors:?}");
    tokio::time::sleep(INTERVAL * 3).await;
    // Exact: every read succeeds, on the other follower, in this session and in new ones.
    let ports = reads_ok(&client, 20, "follower stopped, old session").await;
    assert!(ports.iter().all(|p| *p == port_of(f2)), "reads while f1 is down: {ports:?}");
    let fresh = chorus.connect(db.name()).await;
    let ports = reads_ok(&fresh, 10, "follower stopped, new session").await;
    assert!(ports.iter().all(|p| *p == port_of(f2)), "{ports:?}");
    let out = psql(&chorus.url(db.name()), &["-A", "-t", "-c", "SELECT current_setting('port')"], None);
    assert!(out.success() && out.stdout.trim() == port_of(f2), "{out:?}");

    // Back: after a few health intervals reads reach it again.
    f1.start().unwrap();
    assert_eq!(f1.port().to_string(), port_of(f1));
    wait_for_read(&client, Duration::from_secs(10), "reads reach the restarted follower", |p| p == port_of(f1)).await;
    let ports: BTreeSet<String> = reads_ok(&client, 10, "after the restart").await.into_iter().collect();
    assert_eq!(ports, BTreeSet::from([port_of(f1), port_of(f2)]), "reads after the restart");
    let ports: BTreeSet<String> = reads_ok(&fresh, 10, "after the restart").await.into_iter().collect();
    assert_eq!(ports, BTreeSet::from([port_of(f1), port_of(f2)]), "reads after the restart (second session)");
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_follower_does_not_break_an_idle_session_that_used_it() {
    let cluster = private_cluster(2);
    let db = fresh_database_on(&cluster).await;
    let chorus = start_chorus_with(&cluster, fast_health);
    let (f1, f2) = (&cluster.followers()[0], &cluster.followers()[1]);
    let client = chorus.connect(db.name()).await;
    let other = chorus.connect(db.name()).await;
    let ports: BTreeSet<String> = reads_ok(&client, 6, "before").await.into_iter().collect();
    assert!(ports.contains(&port_of(f1)), "the session never used f1: {ports:?}");
    reads_ok(&other, 6, "before").await;
    drop(other); // its connections go back to chorus's pool

    f1.kill().unwrap();
    // No waiting for the health check: the session's next reads work at once.
    let ports = reads_ok(&client, 10, "right after SIGKILL").await;
    assert!(ports.iter().all(|p| *p == port_of(f2)), "{ports:?}");
    // A new session (which may be handed pooled connections) too.
    let fresh = chorus.connect(db.name()).await;
    let ports = reads_ok(&fresh, 10, "new session after SIGKILL").await;
    assert!(ports.iter().all(|p| *p == port_of(f2)), "{ports:?}");

    // Restarted after a crash: back in rotation, for the old session too.
    f1.start().unwrap();
    wait_for_read(&client, Duration::from_secs(10), "reads reach the restarted follower", |p| p == port_of(f1)).await;
    let ports: BTreeSet<String> = reads_ok(&client, 10, "after the restart").await.into_iter().collect();
    assert_eq!(ports, BTreeSet::from([port_of(f1), port_of(f2)]));
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn server_connections_terminated_on_the_server_are_not_reused() {
    let cluster = private_cluster(2);
    let db = fresh_database_on(&cluster).await;
    let chorus = start_chorus_with(&cluster, fast_health);
    db.execute_on_all("CREATE TABLE t (id int)").await;
    // Fill chorus's pool: sessions that used every node at the same time, then left.
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let c = chorus.connect(db.name()).await;
        c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
        reads_ok(&c, 4, "filling the pool").await;
        sessions.push(c);
    }
    drop(sessions);
    let idle = chorus.connect(db.name()).await;
    reads_ok(&idle, 4, "the idle session").await;
    tokio::time::sleep(Duration::from_millis(300)).await; // pooled after DISCARD ALL

    // An administrator (or idle_session_timeout) ends chorus's connections to
    // this database on every node; the nodes themselves stay up.
    for node in cluster.nodes() {
        let c = node.connect("postgres").await.unwrap();
        let n: i64 = c
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = $1 AND application_name = 'chorus' AND pid <> pg_backend_pid()",
                &[&db.name()],
            )
            .await
            .unwrap()
            .get(0);
        assert!(n > 0, "no chorus connection to terminate on {}", node.name());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // New sessions get working connections, reads and writes alike.
    for i in 0..3 {
        let c = tokio::time::timeout(Duration::from_secs(15), try_connect(&chorus.url(db.name())))
            .await
            .expect("connect hung")
            .unwrap_or_else(|e| panic!("session {i} could not start: {} {e:?}", sqlstate_or_text(&e)));
        reads_ok(&c, 4, &format!("new session {i}")).await;
        c.execute("INSERT INTO t VALUES (2)", &[])
            .await
            .unwrap_or_else(|e| panic!("write in new session {i}: {} {e:?}", sqlstate_or_text(&e)));
    }
    // The idle session too.
    reads_ok(&idle, 4, "the idle session").await;
    idle.execute("INSERT INTO t VALUES (3)", &[])
        .await
        .unwrap_or_else(|e| panic!("write in the idle session: {} {e:?}", sqlstate_or_text(&e)));
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_leader_fails_writes_quickly_and_reads_go_on() {
    let cluster = private_cluster(2);
    let db = fresh_database_on(&cluster).await;
    db.execute_on_all("CREATE TABLE t (id int)").await;
    let chorus = start_chorus_with(&cluster, fast_health);
    let leader = cluster.leader();
    let followers: Vec<String> = cluster.followers().iter().map(port_of).collect();
    let client = chorus.connect(db.name()).await;
    client.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    reads_ok(&client, 4, "before").await;

    leader.stop().unwrap();
    let write = async |c: &tokio_postgres::Client| {
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(20), c.execute("INSERT INTO t VALUES (2)", &[]))
            .await
            .expect("a write hung while the leader was down");
        (r, started.elapsed())
    };
    // The session that had a leader connection: a clear error, quickly.
    let (r, took) = write(&client).await;
    let e = r.expect_err("a write succeeded without a leader");
    assert!(["57P03", "08006"].contains(&sqlstate_or_text(&e).as_str()), "{e:?}");
    assert!(took < Duration::from_secs(10), "the error took {took:?}");
    // Reads still work there, from the followers.
    let ports = reads_ok(&client, 6, "leader down").await;
    assert!(ports.iter().all(|p| followers.contains(p)), "{ports:?}");
    // New sessions can start, read, and get the same clear error on writes.
    let fresh = chorus.connect(db.name()).await;
    let ports = reads_ok(&fresh, 6, "leader down, new session").await;
    assert!(ports.iter().all(|p| followers.contains(p)), "{ports:?}");
    let (r, took) = write(&fresh).await;
    let e = r.expect_err("a write succeeded without a leader");
    assert!(["57P03", "08006"].contains(&sqlstate_or_text(&e).as_str()), "{e:?}");
    assert!(took < Duration::from_secs(10), "the error took {took:?}");
    // The error says what is wrong.
    let msg = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    assert!(msg.contains("leader"), "{msg}");
    let out = psql(&chorus.url(db.name()), &["-c", "INSERT INTO t VALUES (3)"], None);
    assert!(!out.success() && out.stderr.contains("leader"), "{out:?}");
    // An explicit transaction cannot start its work either, and the session survives.
    fresh.batch_execute("BEGIN").await.ok();
    assert!(fresh.execute("INSERT INTO t VALUES (4)", &[]).await.is_err());
    fresh.batch_execute("ROLLBACK").await.ok();
    reads_ok(&fresh, 2, "after a failed transaction").await;

    // Leader back: writes work again, in both sessions.
    leader.start().unwrap();
    for (name, c) in [("old session", &client), ("new session", &fresh)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match write(c).await.0 {
                Ok(1) => break,
                Ok(n) => panic!("{name}: inserted {n} rows"),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(INTERVAL).await;
                }
                Err(e) => panic!("{name}: writes still fail after the leader returned: {e:?}"),
            }
        }
    }
    let n: i64 = db.connect_leader().await.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 3, "rows on the leader: the one before, one per session after");
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_killed_during_a_write_ends_that_request_with_an_error() {
    let cluster = private_cluster(1);
    let db = fresh_database_on(&cluster).await;
    db.execute_on_all("CREATE TABLE t (id int)").await;
    let chorus = start_chorus_with(&cluster, fast_health);
    let client = chorus.connect(db.name()).await;
    let running = tokio::spawn({
        let sql = "INSERT INTO t SELECT 1 FROM pg_sleep(30)";
        async move { tokio::time::timeout(Duration::from_secs(25), client.execute(sql, &[])).await }
    });
    // Kill the leader only once the write runs there: before that, chorus
    // answers 57P03 (cannot reach the leader), a different case.
    let observer = db.connect_leader().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Active: the statement runs (an idle connection shows its last
        // query too, e.g. once only the client's prepare is done).
        let sql = "SELECT count(*) FROM pg_stat_activity \
                   WHERE state = 'active' AND query LIKE 'INSERT INTO t SELECT 1 FROM pg_sleep%'";
        let n: i64 = observer.query_one(sql, &[]).await.unwrap().get(0);
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the write never reached the leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    cluster.leader().kill().unwrap();
    let r = running.await.unwrap().expect("the interrupted write hung");
    let e = r.expect_err("the write survived its server's death");
    assert!(started.elapsed() < Duration::from_secs(15));
    // chorus's FATAL 08006 (outcome unknown), or the connection simply closed.
    if let Some(db_err) = e.as_db_error() {
        assert_eq!(db_err.code().code(), "08006", "{e:?}");
    }
    // Others can still connect and read.
    let fresh = chorus.connect(db.name()).await;
    let ports = reads_ok(&fresh, 3, "after the leader died").await;
    assert!(ports.iter().all(|p| *p == port_of(&cluster.followers()[0])), "{ports:?}");
    assert_no_chorus_panics();
}

/// SIGSTOPs a server's postmaster and its children (a hung server: the kernel
/// still accepts TCP connections, nothing answers); SIGCONT on drop.
struct Frozen(i32);

impl Frozen {
    fn freeze(node: &PgNode) -> Frozen {
        let pid = node.pid().expect("the node runs");
        // The postmaster first, so no backend is forked after we list them.
        let status = std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status().expect("kill");
        assert!(status.success());
        signal_tree("-STOP", pid);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal_tree("-CONT", self.0);
        // As root the server runs under `runuser`, which stops itself when its
        // child stops (job-control emulation) and must be continued too.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0)).unwrap_or_default();
        let ppid = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)).unwrap_or("");
        if !ppid.is_empty() && ppid != std::process::id().to_string() {
            let _ = std::process::Command::new("kill").args(["-CONT", ppid]).status();
        }
    }
}

/// Signal the postmaster `pid` and its direct children (the backends).
fn signal_tree(sig: &str, pid: i32) {
    let pid = pid.to_string();
    let children = std::process::Command::new("pgrep").args(["-P", &pid]).output().expect("pgrep");
    let mut pids: Vec<String> =
        String::from_utf8_lossy(&children.stdout).split_whitespace().map(str::to_string).collect();
    pids.push(pid);
    let status = std::process::Command::new("kill").arg(sig).args(&pids).status().expect("kill");
    assert!(status.success(), "kill {sig} {pids:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_leader_does_not_hold_up_new_sessions_or_reads() {
    let cluster = private_cluster(1);
    let db = fresh_database_on(&cluster).await;
    db.execute_on_all("CREATE TABLE t (id int)").await;
    let connect_timeout = Duration::from_secs(4);
    let chorus = start_chorus_with(&cluster, |c| {
        fast_health(c);
        c.health.timeout = Duration::from_secs(1);
        c.limits.connect_timeout = connect_timeout;
    });
    let follower = port_of(&cluster.followers()[0]);
    // chorus at work (health checks connected) before the leader hangs.
    let warm = chorus.connect(db.name()).await;
    warm.execute("INSERT INTO t VALUES (0)", &[]).await.unwrap();
    tokio::time::sleep(INTERVAL * 2).await;

    let frozen = Frozen::freeze(cluster.leader());
    // Let the health check (timeout 1 s) mark the leader down.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A new session starts without first waiting out a connect to the leader.
    let started = Instant::now();
    let client = tokio::time::timeout(Duration::from_secs(20), try_connect(&chorus.url(db.name())))
        .await
        .expect("connecting hung")
        .unwrap_or_else(|e| panic!("no session while the leader hangs: {e:?}"));
    assert!(
        started.elapsed() < connect_timeout / 2,
        "a new session waited {:?} for the hung leader",
        started.elapsed()
    );
    let ports = reads_ok(&client, 4, "leader hung").await;
    assert!(ports.iter().all(|p| *p == follower), "{ports:?}");
    // A write gets 57P03 once the connect to the leader times out: an error, not a hang.
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), client.execute("INSERT INTO t VALUES (1)", &[]))
        .await
        .expect("a write hung while the leader was frozen");
    let e = r.expect_err("a write succeeded on a frozen leader");
    assert_eq!(sqlstate_or_text(&e), "57P03", "{e:?}");
    assert!(started.elapsed() < connect_timeout * 2, "{:?}", started.elapsed());
    reads_ok(&client, 2, "after the failed write").await;

    drop(frozen);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.execute("INSERT INTO t VALUES (2)", &[]).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(INTERVAL).await;
            }
            Err(e) => panic!("writes still fail after the leader thawed: {e:?}"),
        }
    }
    assert_no_chorus_panics();
}
