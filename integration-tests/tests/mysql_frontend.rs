//! The MySQL frontend against real MariaDB servers and real clients: the
//! mariadb command-line tools and mysql_async (text and binary protocol),
//! authentication plugins, TLS, COM_CHANGE_USER / RESET_CONNECTION, KILL,
//! LOAD DATA LOCAL, packets larger than 16 MiB, errors.

use chorus::config::{MysqlAuth, User};
use integration_tests::*;
use mysql_async::prelude::*;
use std::time::Duration;

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

fn extra_users(c: &mut chorus::config::Config) {
    let user = |name: &str, mysql_auth| User {
        name: name.into(),
        password: Some(format!("{name}-pw")),
        auth: chorus::config::AuthMethod::ScramSha256,
        mysql_auth,
    };
    c.users.push(user("sha2_only", Some(MysqlAuth::CachingSha2Password)));
    c.users.push(user("native_only", Some(MysqlAuth::NativePassword)));
    c.users.push(user("other_app", None));
}

#[tokio::test]
async fn the_mariadb_cli_works_through_chorus() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let out = chorus.cli(
        db.name(),
        &[],
        "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20));\
         INSERT INTO t (v) VALUES ('a'), ('b');\
         SELECT LAST_INSERT_ID(), ROW_COUNT();\
         SELECT id, v FROM t ORDER BY id;\
         SELECT @@port",
    );
    assert!(out.success(), "{out:?}");
    let leader_port = maria_cluster().leader().port().to_string();
    assert_eq!(out.stdout, format!("1\t2\n1\ta\n2\tb\n{leader_port}\n"));

    // An error keeps the connection usable: the CLI's --force goes on after it.
    let script = b"SELECT * FROM missing;\nSELECT 'still here';\n";
    let out = mariadb_cli(&chorus.url(db.name()), &["--force"], Some(script));
    assert!(out.stderr.contains("ERROR 1146 (42S02)"), "{out:?}");
    assert!(out.stdout.contains("still here"), "{out:?}");

    // The rows are on the leader, written there directly.
    let mut leader = db.connect_leader().await;
    let n: Option<i64> = leader.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(2));

    // mariadb-admin: ping and status pass, shutdown is refused.
    let port = chorus.port().to_string();
    let admin = |cmd: &str| {
        let mut c = std::process::Command::new("mariadb-admin");
        c.args(["--no-defaults", "--protocol=TCP", "-h", "127.0.0.1", "-P", &port, "-u", CHORUS_USER])
            .arg(format!("-p{CHORUS_PASSWORD}"))
            .arg(cmd);
        chorus::localcluster::run_with_timeout(&mut c, None, Duration::from_secs(30)).unwrap()
    };
    let ping = admin("ping");
    assert!(ping.success() && ping.stdout.contains("alive"), "{ping:?}");
    let status = admin("status");
    assert!(status.success() && status.stdout.contains("Uptime"), "{status:?}");
    let shutdown = admin("shutdown");
    assert!(!shutdown.success() && shutdown.stderr.contains("not available through chorus"), "{shutdown:?}");
    assert!(maria_cluster().leader().is_running());
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn prepared_statements_and_the_binary_protocol() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop(
        "CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR(50), price DECIMAL(10,2), \
         seen DATETIME(6), data BLOB, note TEXT)",
    )
    .await
    .unwrap();
    let stmt = "INSERT INTO items (id, name, price, seen, data, note) VALUES (?, ?, ?, ?, ?, ?)";
    c.exec_batch(
        stmt,
        (1..=50).map(|i: i64| {
            (
                i,
                format!("item {i}"),
                format!("{}.{:02}", i, i % 100),
                mysql_async::Value::Date(2026, 12, 2, 10, 30, (i % 60) as u8, 123_456),
                vec![i as u8; i as usize],
                if i % 3 == 0 { None } else { Some("n") },
            )
        }),
    )
    .await
    .unwrap();
    let rows: Vec<(i64, String, Option<String>)> =
        c.exec("SELECT id, name, note FROM items WHERE id > ? AND id <= ? ORDER BY id", (45, 48)).await.unwrap();
    assert_eq!(
        rows,
        [
            (46, "item 46".into(), Some("n".into())),
            (47, "item 47".into(), Some("n".into())),
            (48, "item 48".into(), None)
        ]
    );
    let blob: Option<Vec<u8>> = c.exec_first("SELECT data FROM items WHERE id = ?", (7,)).await.unwrap();
    assert_eq!(blob, Some(vec![7u8; 7]));
    // A statement error leaves the connection usable; prepare errors too.
    let e = c.exec_drop(stmt, (1, "dup", "1.00", None::<String>, None::<Vec<u8>>, None::<String>)).await.unwrap_err();
    assert_eq!(server_code(&e), Some(1062), "{e}");
    let e = c.prep("SELECT nope FROM items").await.unwrap_err();
    assert_eq!(server_code(&e), Some(1054), "{e}");
    let n: Option<i64> = c.exec_first("SELECT COUNT(*) FROM items WHERE note IS NULL", ()).await.unwrap();
    assert_eq!(n, Some(16));

    // Transactions keep their status through chorus.
    let mut tx = c.start_transaction(Default::default()).await.unwrap();
    tx.exec_drop("DELETE FROM items WHERE id = ?", (1,)).await.unwrap();
    tx.rollback().await.unwrap();
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM items").await.unwrap();
    assert_eq!(n, Some(50));
    c.disconnect().await.unwrap();
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn payloads_larger_than_one_packet_cross_in_both_directions() {
    let db = fresh_maria_database().await;
    // 20 MiB values need a larger max_allowed_packet than the 16 MiB default.
    maria_cluster().execute_on_all("SET GLOBAL max_allowed_packet = 67108864").await.unwrap();
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE big (id INT PRIMARY KEY, b LONGBLOB)").await.unwrap();
    let big: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    c.exec_drop("INSERT INTO big VALUES (?, ?)", (1, big.clone())).await.unwrap();
    // The text protocol: one query packet over 16 MiB.
    let hex: String = big[..9 * 1024 * 1024].iter().map(|b| format!("{b:02x}")).collect();
    c.query_drop(format!("INSERT INTO big VALUES (2, x'{hex}')")).await.unwrap();
    let back: Option<Vec<u8>> = c.exec_first("SELECT b FROM big WHERE id = ?", (1,)).await.unwrap();
    assert!(back.as_deref() == Some(&big[..]), "the 20 MiB value came back changed");
    let back: Option<Vec<u8>> = c.query_first("SELECT b FROM big WHERE id = 2").await.unwrap();
    assert!(back.as_deref() == Some(&big[..9 * 1024 * 1024]));
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM big").await.unwrap();
    assert_eq!(n, Some(2), "the connection is still in step after the big rows");
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn authentication_plugins_and_their_errors() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus_with(maria_cluster(), extra_users);
    let opts = |user: &str, pass: &str| chorus.opts(db.name()).user(Some(user)).pass(Some(pass));

    // Wrong password, unknown user: 1045, as a server says it.
    let e = mysql_async::Conn::new(opts(CHORUS_USER, "wrong")).await.unwrap_err();
    assert_eq!(server_code(&e), Some(1045), "{e}");
    assert!(e.to_string().contains("Access denied for user"), "{e}");
    let e = mysql_async::Conn::new(opts("nobody", "x")).await.unwrap_err();
    assert_eq!(server_code(&e), Some(1045), "{e}");

    // caching_sha2_password: the first login authenticates in full (the
    // client fetches chorus's RSA key: no TLS here), the next takes the fast path.
    for _ in 0..2 {
        let mut c = mysql_async::Conn::new(opts("sha2_only", "sha2_only-pw")).await.unwrap();
        let v: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
        assert!(v.is_some());
        c.disconnect().await.unwrap();
    }
    let e = mysql_async::Conn::new(opts("sha2_only", "wrong")).await.unwrap_err();
    assert_eq!(server_code(&e), Some(1045), "{e}");

    // A client starting with caching_sha2_password is switched to native.
    let out = chorus.cli(
        db.name(),
        &["--default-auth=caching_sha2_password", "-unative_only", "-pnative_only-pw"],
        "SELECT 'in'",
    );
    assert!(out.success() && out.stdout == "in\n", "{out:?}");

    // The server's own refusals reach the client: an unknown database.
    let e = mysql_async::Conn::new(chorus.opts("no_such_database")).await.unwrap_err();
    assert_eq!(server_code(&e), Some(1049), "{e}");
    assert_no_chorus_panics();
}

#[tokio::test]
async fn tls_and_a_full_caching_sha2_login_over_it() {
    let db = fresh_maria_database().await;
    let cert = SelfSigned::create("mysql");
    let chorus = start_mysql_chorus_with(maria_cluster(), |c| {
        c.tls = Some(cert.tls());
        extra_users(c);
    });
    // Plain password over TLS (full authentication), then the fast path without TLS.
    let out = chorus.cli(
        db.name(),
        &[
            "--ssl",
            "--ssl-verify-server-cert=0",
            "-usha2_only",
            "-psha2_only-pw",
            "--default-auth=caching_sha2_password",
        ],
        "SHOW SESSION STATUS LIKE 'Ssl_version'; SELECT 'over tls'",
    );
    assert!(out.success() && out.stdout.contains("over tls"), "{out:?}");
    let mut c = mysql_async::Conn::new(
        chorus
            .opts(db.name())
            .user(Some("sha2_only"))
            .pass(Some("sha2_only-pw"))
            .ssl_opts(Some(mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true))),
    )
    .await
    .unwrap();
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    c.disconnect().await.unwrap();
    assert_no_chorus_panics();
}

#[tokio::test]
async fn change_user_and_reset_connection_start_a_clean_session() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus_with(maria_cluster(), extra_users);
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("SET @marker = 42").await.unwrap();
    assert!(c.reset().await.unwrap(), "COM_RESET_CONNECTION is used");
    let v: Option<Option<i64>> = c.query_first("SELECT @marker").await.unwrap();
    assert_eq!(v, Some(None), "the reset cleared the user variable");

    c.query_drop("SET @marker = 7").await.unwrap();
    c.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("other_app".into()))
            .with_pass(Some("other_app-pw".into())),
    )
    .await
    .unwrap();
    let v: Option<Option<i64>> = c.query_first("SELECT @marker").await.unwrap();
    assert_eq!(v, Some(None));
    let d: Option<String> = c.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(d.as_deref(), Some(db.name()), "the database survives the change");
    let e = c
        .change_user(
            mysql_async::ChangeUserOpts::default().with_user(Some("other_app".into())).with_pass(Some("bad".into())),
        )
        .await
        .unwrap_err();
    assert_eq!(server_code(&e), Some(1045), "{e}");
    assert_no_chorus_panics();
}

#[tokio::test]
async fn kill_reaches_the_session_it_names() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus_with(maria_cluster(), extra_users);
    let mut victim = chorus.connect(db.name()).await;
    let mut killer = chorus.connect(db.name()).await;
    let server_thread: Option<u64> = victim.query_first("SELECT CONNECTION_ID()").await.unwrap();
    for id in [u64::from(victim.id()), server_thread.unwrap()] {
        let sleeping = tokio::spawn(async move {
            let r: Result<Option<i64>, _> = victim.query_first("SELECT SLEEP(60)").await;
            (victim, r)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        killer.query_drop(format!("KILL QUERY {id}")).await.unwrap();
        let (v, r) =
            tokio::time::timeout(Duration::from_secs(20), sleeping).await.expect("the query was killed").unwrap();
        // SLEEP returns 1 when interrupted, or the statement fails with 1317.
        assert!(matches!(&r, Ok(Some(1))) || r.as_ref().is_err_and(|e| server_code(e) == Some(1317)), "{r:?}");
        victim = v;
    }
    let e = killer.query_drop("KILL 987654").await.unwrap_err();
    assert_eq!(server_code(&e), Some(1094), "{e}");
    // Another user's session is not the killer's to stop.
    let mut other = mysql_async::Conn::new(chorus.opts(db.name()).user(Some("other_app")).pass(Some("other_app-pw")))
        .await
        .unwrap();
    let e = other.query_drop(format!("KILL {}", victim.id())).await.unwrap_err();
    assert_eq!(server_code(&e), Some(1095), "{e}");
    // KILL CONNECTION ends the victim's session.
    killer.query_drop(format!("KILL CONNECTION {}", victim.id())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(victim.query_drop("SELECT 1").await.is_err(), "the killed connection is gone");
    let one: Option<i64> = killer.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    assert_no_chorus_panics();
}

/// A session whose leader connection is gone (killed on the server, the
/// leader restarted...) ends at its next write, after an error saying the
/// write was rolled back: it must not linger, reading on followers and
/// failing every write, where a pool would never replace it.
#[tokio::test]
async fn a_session_that_lost_its_leader_connection_ends_at_its_next_write() {
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let mut c = chorus.connect(db.name()).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY)").await.unwrap();
    // A write first: chorus knows the session's context from then on, and
    // its next write starts with chorus's own steps on the leader.
    c.query_drop("INSERT INTO t VALUES (-1)").await.unwrap();
    let thread: Option<u64> = c.query_first("SELECT CONNECTION_ID()").await.unwrap();
    let mut leader = db.connect_leader().await;
    leader.query_drop(format!("KILL CONNECTION {}", thread.unwrap())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut server_errors = Vec::new();
    let mut closed = None;
    for i in 0..3 {
        match c.query_drop(format!("INSERT INTO t VALUES ({i})")).await {
            Ok(()) => panic!("a write through a dead leader connection succeeded"),
            Err(mysql_async::Error::Server(e)) => server_errors.push(e),
            Err(e) => {
                closed = Some(e);
                break;
            }
        }
    }
    assert!(closed.is_some(), "the session went on after losing its leader connection: {server_errors:?}");
    // Told first that its write was rolled back, then disconnected.
    assert!(
        server_errors.len() == 1 && server_errors[0].code == 1105 && server_errors[0].message.contains("rolled back"),
        "{server_errors:?}"
    );
    let mut fresh = chorus.connect(db.name()).await;
    fresh.query_drop("INSERT INTO t VALUES (100)").await.unwrap();
    let ids: Vec<i32> = leader.query("SELECT id FROM t ORDER BY id").await.unwrap();
    assert_eq!(ids, [-1, 100], "none of the failed writes is there");
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}

#[tokio::test]
async fn load_data_local_infile_from_the_cli_replicates() {
    // The mariadb CLI sends the file when the server asks; chorus relays it
    // and logs it with the statement. A file on the server's disk (no
    // LOCAL) is refused before it runs.
    let db = fresh_maria_database().await;
    let chorus = start_mysql_chorus(maria_cluster());
    let dir = tests_root().join(format!("infile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rows.csv");
    std::fs::write(&file, "1,a\n2,b\n").unwrap();
    let sql = format!(
        "CREATE TABLE l (id INT PRIMARY KEY, name VARCHAR(30)); \
         LOAD DATA LOCAL INFILE '{}' INTO TABLE l FIELDS TERMINATED BY ','; \
         SELECT COUNT(*) FROM l",
        file.display()
    );
    let out = chorus.cli(db.name(), &["--local-infile=1"], &sql);
    assert!(out.success() && out.stdout == "2\n", "{out:?}");
    let sql = format!("LOAD DATA INFILE '{}' INTO TABLE l FIELDS TERMINATED BY ','", file.display());
    let out = chorus.cli(db.name(), &[], &sql);
    assert!(!out.success() && out.stderr.contains("ERROR 1235 (42000)"), "{out:?}");
    assert!(out.stderr.contains("LOCAL"), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
    chorus.assert_converged(maria_cluster(), db.name()).await;
    assert_no_chorus_panics();
}
