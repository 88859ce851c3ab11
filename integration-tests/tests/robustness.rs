//! Bad input and limits, end to end: garbage startup packets, unsupported
//! protocol versions, SSL/GSSENC requests without TLS, unknown and malformed
//! messages, cancel requests with wrong and right keys, the connection and
//! message-size limits, and server errors passed through. Every bad client must
//! get the right ErrorResponse or a clean close, never a hang; other sessions
//! carry on; chorus never panics.

use chorus::config::{AuthMethod, Config, User};
use integration_tests::raw::*;
use integration_tests::*;
use std::time::{Duration, Instant};

/// A user that logs in without a password, so raw-protocol tests need no SCRAM.
const TRUST_USER: &str = "raw_trust";

fn add_trust_user(c: &mut Config) {
    c.users.push(User { name: TRUST_USER.into(), password: None, auth: AuthMethod::Trust, mysql_auth: None });
}

/// A bystander session that must keep working while other clients misbehave.
async fn still_works(client: &tokio_postgres::Client, what: &str) {
    let rows = tokio::time::timeout(Duration::from_secs(15), client.simple_query("SELECT 1"))
        .await
        .unwrap_or_else(|_| panic!("bystander session hung after {what}"))
        .unwrap_or_else(|e| panic!("bystander session failed after {what}: {e}"));
    assert_eq!(first_value(&rows).as_deref(), Some("1"), "after {what}");
}

/// The first column of the first row of a simple query's result.
fn first_value(msgs: &[tokio_postgres::SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_startup_packets_are_rejected_or_closed() {
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), |c| {
        add_trust_user(c);
        c.limits.startup_timeout = Duration::from_secs(2);
    });
    let bystander = chorus.connect(db.name()).await;

    let mut missing_value = PROTOCOL_3_0.to_be_bytes().to_vec();
    missing_value.extend_from_slice(b"user\0bob"); // value without its terminator
    let mut no_user = PROTOCOL_3_0.to_be_bytes().to_vec();
    no_user.extend_from_slice(b"database\0x\0\0");
    // (what, bytes, expected SQLSTATE)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("length 0", 0i32.to_be_bytes().to_vec(), "08P01"),
        ("length 4 (< 8)", 4i32.to_be_bytes().to_vec(), "08P01"),
        ("length 7 (< 8)", [&7i32.to_be_bytes()[..], &[1, 2, 3]].concat(), "08P01"),
        ("negative length", (-1i32).to_be_bytes().to_vec(), "08P01"),
        ("huge length", i32::MAX.to_be_bytes().to_vec(), "08P01"),
        ("length just over 10000", 10_001i32.to_be_bytes().to_vec(), "08P01"),
        ("unknown protocol code", untagged(&0x1234_5678i32.to_be_bytes()), "0A000"),
        ("parameter without a value terminator", untagged(&missing_value), "08P01"),
        ("no user name", untagged(&no_user), "28000"),
        ("truncated cancel request", untagged(&CANCEL_REQUEST.to_be_bytes()), "08P01"),
    ];
    for (what, bytes, code) in cases {
        let mut c = RawConn::connect(chorus.addr()).await;
        c.send(&bytes).await.unwrap();
        let e = c.expect_fatal_then_close().await;
        assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", code), "{what}: {e:?}");
        still_works(&bystander, what).await;
    }

    // Random bytes: whatever they happen to say, an error and a close, or a
    // plain close once we stop sending; never a hang.
    for seed in 1..=12u64 {
        let mut c = RawConn::connect(chorus.addr()).await;
        let _ = c.send(&garbage(seed, 64)).await;
        c.shutdown_write().await;
        let msgs = c.until_closed().await;
        for m in &msgs {
            assert_eq!(m.tag, b'E', "seed {seed}: chorus answered garbage with {msgs:?}");
            let e = m.error();
            assert!(["08P01", "0A000", "28000"].contains(&e.code.as_str()), "seed {seed}: {e:?}");
        }
        still_works(&bystander, &format!("garbage seed {seed}")).await;
    }

    // Half a length field, then silence: chorus gives up after startup_timeout.
    let started = Instant::now();
    let mut c = RawConn::connect(chorus.addr()).await;
    c.send(&[0, 0]).await.unwrap();
    assert_eq!(c.until_closed().await, vec![], "a silent client is closed without a message");
    assert!(started.elapsed() >= Duration::from_secs(1), "closed before the startup timeout");
    // Nothing at all, then end of file.
    let mut c = RawConn::connect(chorus.addr()).await;
    c.shutdown_write().await;
    assert_eq!(c.until_closed().await, vec![]);

    still_works(&bystander, "all garbage").await;
    let fresh = chorus.connect(db.name()).await;
    still_works(&fresh, "all garbage (new session)").await;
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stalls_authentication_is_cut_off() {
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), |c| c.limits.startup_timeout = Duration::from_secs(1));
    let mut c = RawConn::connect(chorus.addr()).await;
    c.send(&startup_packet(PROTOCOL_3_0, &[("user", CHORUS_USER), ("database", db.name())])).await.unwrap();
    assert_eq!(c.expect_msg().await.auth_code(), 10, "AuthenticationSASL");
    // ... and never answer the challenge.
    let e = c.expect_fatal_then_close().await;
    assert_eq!(e.code, "08P01", "{e:?}");
    still_works(&chorus.connect(db.name()).await, "a stalled authentication").await;
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_versions() {
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), add_trust_user);
    let params = [("user", TRUST_USER), ("database", db.name())];

    // 2.0: refused with 0A000, as PostgreSQL does.
    let mut c = RawConn::connect(chorus.addr()).await;
    c.send(&startup_packet(2 << 16, &params)).await.unwrap();
    let e = c.expect_fatal_then_close().await;
    assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", "0A000"), "{e:?}");
    // 4.0 likewise.
    let mut c = RawConn::connect(chorus.addr()).await;
    c.send(&startup_packet(4 << 16, &params)).await.unwrap();
    assert_eq!(c.expect_fatal_then_close().await.code, "0A000");

    // 3.2: NegotiateProtocolVersion (newest minor 0, no unknown options), then
    // the normal startup, and the session works.
    let mut c = RawConn::connect(chorus.addr()).await;
    c.send(&startup_packet((3 << 16) | 2, &params)).await.unwrap();
    let v = c.expect_msg().await;
    assert_eq!(v.tag, b'v', "{v:?}");
    assert_eq!(v.body, [0, 0, 0, 0, 0, 0, 0, 0], "minor version 0, no options");
    assert_eq!(c.expect_msg().await.auth_code(), 0);
    let rest = c.until_ready().await;
    assert!(rest.iter().any(|m| m.tag == b'S'), "ParameterStatus expected: {rest:?}");
    assert_eq!(data_rows(&c.simple_ok("SELECT 41 + 1").await), ["42"]);

    // A `_pq_.` protocol option is named back as unrecognized.
    let mut c = RawConn::connect(chorus.addr()).await;
    c.send(&startup_packet(PROTOCOL_3_0, &[params[0], params[1], ("_pq_.frobnicate", "on")])).await.unwrap();
    let v = c.expect_msg().await;
    assert_eq!(v.tag, b'v');
    assert_eq!(&v.body[..8], &[0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(&v.body[8..], b"_pq_.frobnicate\0");
    assert_eq!(c.expect_msg().await.auth_code(), 0);
    c.until_ready().await;

    // 3.2 for a SCRAM user: NegotiateProtocolVersion, then AuthenticationSASL.
    let mut c = RawConn::connect(chorus.addr()).await;
    c.send(&startup_packet((3 << 16) | 2, &[("user", CHORUS_USER), ("database", db.name())])).await.unwrap();
    assert_eq!(c.expect_msg().await.tag, b'v');
    let sasl = c.expect_msg().await;
    assert_eq!(sasl.auth_code(), 10);
    assert_eq!(&sasl.body[4..], b"SCRAM-SHA-256\0\0");
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn ssl_and_gssenc_requests_without_tls_are_declined() {
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), add_trust_user);
    let startup = startup_packet(PROTOCOL_3_0, &[("user", TRUST_USER), ("database", db.name())]);

    let mut c = RawConn::connect(chorus.addr()).await;
    c.send(&ssl_request()).await.unwrap();
    assert_eq!(c.read_byte().await, Some(b'N'));
    c.send(&startup).await.unwrap();
    assert_eq!(c.expect_msg().await.auth_code(), 0);
    c.until_ready().await;
    assert_eq!(data_rows(&c.simple_ok("SELECT 'plain'").await), ["plain"]);

    // libpq's order with gssencmode=prefer: GSSENCRequest, then SSLRequest.
    let mut c = RawConn::connect(chorus.addr()).await;
    c.send(&gssenc_request()).await.unwrap();
    assert_eq!(c.read_byte().await, Some(b'N'));
    c.send(&ssl_request()).await.unwrap();
    assert_eq!(c.read_byte().await, Some(b'N'));
    c.send(&startup).await.unwrap();
    assert_eq!(c.expect_msg().await.auth_code(), 0);
    c.until_ready().await;
    c.simple_ok("SELECT 1").await;

    // psql with sslmode=prefer gets the same 'N' and goes on in plain text.
    let url = format!("{}?sslmode=prefer", chorus.url(db.name()));
    assert_eq!(psql_sql(&url, "SELECT 'psql'"), "psql");
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_messages_after_login() {
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), |c| {
        add_trust_user(c);
        c.limits.max_message_bytes = 4096;
    });
    let bystander = chorus.connect(db.name()).await;
    let login = || RawConn::login_trust(chorus.addr(), TRUST_USER, db.name());

    let mut huge_len = vec![b'Q'];
    huge_len.extend_from_slice(&i32::MAX.to_be_bytes());
    let mut short_len = vec![b'Q'];
    short_len.extend_from_slice(&3i32.to_be_bytes());
    let mut negative_len = vec![b'P'];
    negative_len.extend_from_slice(&(-5i32).to_be_bytes());
    // (what, bytes, expected SQLSTATE of the FATAL error)
    let fatal_cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown message type '!'", message(b'!', b"hello")),
        ("unknown message type 0x00", message(0, &[])),
        ("backend-only message type 'Z'", message(b'Z', b"I")),
        ("length field 3 (< 4)", short_len),
        ("negative length field", negative_len),
        ("length field beyond max_message_bytes", huge_len),
        ("Query without its terminator", message(b'Q', b"SELECT 1")),
        ("Query that is not UTF-8", message(b'Q', b"SELECT '\xff\xfe'\0")),
    ];
    for (what, bytes) in fatal_cases {
        let (mut c, _) = login().await;
        c.send(&bytes).await.unwrap();
        let e = c.expect_fatal_then_close().await;
        assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", "08P01"), "{what}: {e:?}");
        still_works(&bystander, what).await;
    }

    // A message cut short by the client going away: chorus just closes.
    let (mut c, _) = login().await;
    let whole = query("SELECT 'never finished'");
    c.send(&whole[..whole.len() - 5]).await.unwrap();
    c.shutdown_write().await;
    assert_eq!(c.until_closed().await, vec![]);
    still_works(&bystander, "a truncated message").await;

    // A malformed extended-protocol message is the server's error (08P01),
    // reported up to Sync, and the session goes on.
    let (mut c, _) = login().await;
    let mut bytes = message(b'P', b"\0"); // statement name, then no query text
    bytes.extend(message(b'S', &[]));
    c.send(&bytes).await.unwrap();
    let msgs = c.until_ready().await;
    let errors: Vec<ErrorFields> = msgs.iter().filter(|m| m.tag == b'E').map(|m| m.error()).collect();
    assert_eq!(errors.len(), 1, "{msgs:?}");
    assert_eq!(errors[0].code, "08P01", "{errors:?}");
    assert_eq!(data_rows(&c.simple_ok("SELECT 'after a bad Parse'").await), ["after a bad Parse"]);

    // Bind of a statement that does not exist: the server's 26000, session goes on.
    let mut bind = b"\0nope\0".to_vec();
    bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut bytes = message(b'B', &bind);
    bytes.extend(message(b'E', b"\0\0\0\0\0"));
    bytes.extend(message(b'S', &[]));
    c.send(&bytes).await.unwrap();
    let msgs = c.until_ready().await;
    let codes: Vec<String> = msgs.iter().filter(|m| m.tag == b'E').map(|m| m.error().code).collect();
    assert_eq!(codes, ["26000"], "{msgs:?}");
    c.simple_ok("SELECT 1").await;

    // Terminate ends the session cleanly.
    c.send(&terminate()).await.unwrap();
    assert_eq!(c.until_closed().await, vec![]);

    still_works(&bystander, "all bad messages").await;
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_requests_need_the_right_key() {
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), add_trust_user);
    let (mut c, _) = RawConn::login_trust(chorus.addr(), TRUST_USER, db.name()).await;
    let key = c.key.expect("BackendKeyData");

    // Wrong secret, wrong pid: ignored; the query runs to its end.
    c.send(&query("SELECT pg_sleep(1.5), 'finished'")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_cancel(chorus.addr(), BackendKey { pid: key.pid, secret: key.secret.wrapping_add(1) }).await;
    send_cancel(chorus.addr(), BackendKey { pid: key.pid ^ 0x5a5a, secret: key.secret }).await;
    let msgs = c.until_ready().await;
    assert!(msgs.iter().all(|m| m.tag != b'E'), "a wrong key cancelled the query: {msgs:?}");
    assert_eq!(msgs.iter().filter(|m| m.tag == b'D').count(), 1, "{msgs:?}");

    // The right key cancels it (resent until it lands: a cancel that arrives
    // before the query reached a server is, as in PostgreSQL, a no-op).
    let started = Instant::now();
    c.send(&query("SELECT pg_sleep(60)")).await.unwrap();
    let first = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        send_cancel(chorus.addr(), key).await;
        if let Ok(reply) = tokio::time::timeout(Duration::from_millis(800), c.read()).await {
            break reply;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the right key never cancelled the query");
    };
    let Reply::Msg(first) = first else { panic!("chorus closed the session on a cancel") };
    let mut msgs = vec![first];
    if msgs[0].tag != b'Z' {
        msgs.extend(c.until_ready().await);
    }
    let codes: Vec<String> = msgs.iter().filter(|m| m.tag == b'E').map(|m| m.error().code).collect();
    assert_eq!(codes, ["57014"], "{msgs:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The session is fine afterwards.
    assert_eq!(data_rows(&c.simple_ok("SELECT 'still here'").await), ["still here"]);
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn tokio_postgres_cancel_token_cancels() {
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = token.cancel_query(tokio_postgres::NoTls).await;
        }
    });
    let r = tokio::time::timeout(Duration::from_secs(30), client.simple_query("SELECT pg_sleep(60)"))
        .await
        .expect("the cancel never landed");
    canceller.abort();
    let e = r.expect_err("pg_sleep(60) was not cancelled");
    assert_eq!(sqlstate(&e), "57014", "{e}");
    still_works(&client, "a cancelled query").await;
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn max_client_connections() {
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), |c| c.limits.max_client_connections = 2);
    let url = chorus.url(db.name());
    let first = connect(&url).await;
    let second = connect(&url).await;
    let e = try_connect(&url).await.expect_err("a third connection was accepted");
    assert_eq!(sqlstate(&e), "53300", "{e}");
    assert!(db_message(&e).contains("too many clients"), "{e:?}");
    let out = psql(&url, &["-c", "SELECT 1"], None);
    assert!(!out.success() && out.stderr.contains("too many clients"), "{out:?}");
    // The two sessions are unaffected.
    still_works(&first, "a refused connection").await;
    still_works(&second, "a refused connection").await;

    // One leaves: a new one gets in (once chorus has seen the close).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let third = loop {
        match try_connect(&url).await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(sqlstate(&e), "53300", "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no slot freed after a client left: {e}"),
        }
    };
    still_works(&third, "reconnecting").await;
    // And the limit still holds.
    let e = try_connect(&url).await.expect_err("a third connection was accepted");
    assert_eq!(sqlstate(&e), "53300");
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn max_message_bytes() {
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), |c| c.limits.max_message_bytes = 4096);
    let bystander = chorus.connect(db.name()).await;
    let client = chorus.connect(db.name()).await;

    // Below the limit: fine.
    let fits = format!("SELECT length('{}')", "x".repeat(3000));
    let rows = client.simple_query(&fits).await.unwrap();
    assert_eq!(first_value(&rows).as_deref(), Some("3000"));

    // Above it: FATAL 08P01 on this connection only.
    let big = format!("SELECT length('{}')", "x".repeat(5000));
    let e = client.simple_query(&big).await.expect_err("an oversized message was accepted");
    assert_eq!(sqlstate(&e), "08P01", "{e}");
    assert!(db_message(&e).contains("max_message_bytes"), "{e:?}");
    assert!(client.simple_query("SELECT 1").await.is_err(), "the session survived a FATAL error");
    assert!(client.is_closed());
    still_works(&bystander, "an oversized message").await;

    // The extended protocol is held to the same limit.
    let other = chorus.connect(db.name()).await;
    let e = other.query(big.as_str(), &[]).await.expect_err("an oversized Parse was accepted");
    assert_eq!(sqlstate(&e), "08P01", "{e}");
    still_works(&bystander, "an oversized Parse").await;
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn large_extended_batches_are_streamed_not_buffered() {
    // A batch past chorus's early-routing threshold (1 MiB) is routed before
    // its Sync and streamed to the server; results must be unaffected.
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;
    let big = "y".repeat(3 << 20);
    let row = client.query_one("SELECT length($1::text), current_setting('port')", &[&big]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 3 << 20);
    let port: String = row.get(1);
    assert!(db.is_leader_port(&port), "an early-routed batch must go to the leader, went to {port}");
    // Several large parameters pipelined on one connection, then normal traffic.
    let futs: Vec<_> = (0..4)
        .map(|i| {
            let c = &client;
            let v = format!("{i}{}", "z".repeat(1 << 20));
            async move { c.query_one("SELECT left($1::text, 1)", &[&v]).await.unwrap().get::<_, String>(0) }
        })
        .collect();
    let got = futures_util::future::join_all(futs).await;
    assert_eq!(got, vec!["0", "1", "2", "3"]);
    still_works(&client, "large batches").await;
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_reach_the_client_and_the_session_goes_on() {
    let db = fresh_database().await;
    db.execute_on_all("CREATE TABLE t (id int PRIMARY KEY)").await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;

    // Syntax error: the server's own 42601 (its message names the token).
    let e = client.simple_query("SELEC 1").await.expect_err("syntax error accepted");
    assert_eq!(sqlstate(&e), "42601");
    assert!(e.as_db_error().unwrap().message().contains("SELEC"), "{e}");
    still_works(&client, "a syntax error").await;
    let e = client.prepare("SELECT FROM WHERE").await.expect_err("syntax error accepted");
    assert_eq!(sqlstate(&e), "42601");
    let n: i32 = client.query_one("SELECT $1::int + 1", &[&41i32]).await.unwrap().get(0);
    assert_eq!(n, 42);

    // Errors from the leader (a write) and from a follower (a read) alike.
    client.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let e = client.execute("INSERT INTO t VALUES (1)", &[]).await.expect_err("duplicate accepted");
    assert_eq!(sqlstate(&e), "23505");
    let e = client.simple_query("SELECT * FROM no_such_table").await.expect_err("missing table");
    assert_eq!(sqlstate(&e), "42P01");
    let e = client.simple_query("SELECT 1/0").await.expect_err("division by zero");
    assert_eq!(sqlstate(&e), "22012");

    // In a transaction: aborted until ROLLBACK, then normal again.
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(sqlstate(&client.simple_query("SELEC").await.unwrap_err()), "42601");
    assert_eq!(sqlstate(&client.simple_query("SELECT 1").await.unwrap_err()), "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    still_works(&client, "an aborted transaction").await;

    // psql shows the server's message and its next command runs.
    let url = chorus.url(db.name());
    let out = psql(&url, &["-v", "ON_ERROR_STOP=0", "-c", "SELEC 1", "-c", "SELECT 'next'"], None);
    assert!(out.stderr.contains("syntax error at or near \"SELEC\""), "{out:?}");
    assert!(out.stdout.contains("next"), "{out:?}");

    // A database that exists nowhere: the server's 3D000, at connect time.
    let e = try_connect(&chorus.url("no_such_database_anywhere"))
        .await
        .expect_err("connected to a database that does not exist");
    assert_eq!(sqlstate(&e), "3D000", "{e}");
    assert!(db_message(&e).contains("no_such_database_anywhere"), "{e:?}");
    let out = psql(&chorus.url("no_such_database_anywhere"), &["-c", "SELECT 1"], None);
    assert!(!out.success() && out.stderr.contains("does not exist"), "{out:?}");
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_authentication_messages() {
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), |c| c.limits.max_message_bytes = 4096);
    let bystander = chorus.connect(db.name()).await;
    let startup = startup_packet(PROTOCOL_3_0, &[("user", CHORUS_USER), ("database", db.name())]);

    let mut initial = b"SCRAM-SHA-256\0".to_vec();
    let first = b"n,,n=,r=abcdefghijklmnop";
    initial.extend_from_slice(&(first.len() as i32).to_be_bytes());
    initial.extend_from_slice(first);
    let mut huge = vec![b'p'];
    huge.extend_from_slice(&1_000_000i32.to_be_bytes());
    let mut wrong_len = b"SCRAM-SHA-256\0".to_vec();
    wrong_len.extend_from_slice(&100i32.to_be_bytes());
    wrong_len.extend_from_slice(b"n,,n=,r=short");
    // (what, messages after AuthenticationSASL, expected SQLSTATE)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("a Query instead of a SASL response", query("SELECT 1"), "08P01"),
        ("an unknown mechanism", message(b'p', b"SCRAM-SHA-1\0\xff\xff\xff\xff"), "08P01"),
        ("SCRAM-SHA-256-PLUS, not offered", message(b'p', b"SCRAM-SHA-256-PLUS\0\xff\xff\xff\xff"), "08P01"),
        ("an empty SASLInitialResponse", message(b'p', &[]), "08P01"),
        ("a data length that lies", message(b'p', &wrong_len), "08P01"),
        (
            "garbage as client-first-message",
            message(b'p', &[b"SCRAM-SHA-256\0\0\0\0\x05".as_slice(), b"xx,yy"].concat()),
            "08P01",
        ),
        ("a SASL response beyond max_message_bytes", huge, "08P01"),
        // A valid first message, then garbage as client-final-message.
        (
            "garbage as client-final-message",
            [message(b'p', &initial), message(b'p', b"c=biws,r=nope,p=AAAA")].concat(),
            "08P01",
        ),
    ];
    for (what, bytes, code) in cases {
        let mut c = RawConn::connect(chorus.addr()).await;
        c.send(&startup).await.unwrap();
        assert_eq!(c.expect_msg().await.auth_code(), 10, "{what}");
        let _ = c.send(&bytes).await;
        let mut msgs = c.until_closed().await;
        // A valid client-first-message gets its challenge before the error.
        msgs.retain(|m| !(m.tag == b'R' && m.auth_code() == 11));
        assert_eq!(msgs.len(), 1, "{what}: {msgs:?}");
        let e = msgs[0].error();
        assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", code), "{what}: {e:?}");
        still_works(&bystander, what).await;
    }
    // Leaving in the middle of the exchange (psql does this to prompt for a password).
    let mut c = RawConn::connect(chorus.addr()).await;
    c.send(&startup).await.unwrap();
    assert_eq!(c.expect_msg().await.auth_code(), 10);
    c.shutdown_write().await;
    assert_eq!(c.until_closed().await, vec![]);
    still_works(&bystander, "a client leaving during authentication").await;
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_startup_parameters_are_the_servers_errors() {
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), add_trust_user);
    let cases = [
        ("TimeZone", "Nowhere/Bogus", "22023"),
        ("DateStyle", "sideways", "22023"),
        ("no_such_setting", "1", "42704"),
        ("options", "-c statement_timeout=soon", "22023"),
        ("options", "-x", "0A000"),
    ];
    for (name, value, code) in cases {
        let mut c = RawConn::connect(chorus.addr()).await;
        c.send(&startup_packet(PROTOCOL_3_0, &[("user", TRUST_USER), ("database", db.name()), (name, value)]))
            .await
            .unwrap();
        let msgs = c.until_closed().await;
        let errors: Vec<ErrorFields> = msgs.iter().filter(|m| m.tag == b'E').map(|m| m.error()).collect();
        assert_eq!(errors.len(), 1, "{name}={value}: {msgs:?}");
        assert_eq!((errors[0].severity.as_str(), errors[0].code.as_str()), ("FATAL", code), "{name}={value}");
        assert!(msgs.iter().all(|m| m.tag != b'Z'), "{name}={value}: the session started: {msgs:?}");
    }
    // Good values do start the session, and apply.
    let (mut c, _) = RawConn::login_trust(chorus.addr(), TRUST_USER, db.name()).await;
    c.simple_ok("SELECT 1").await;
    let mut c2 = RawConn::connect(chorus.addr()).await;
    c2.send(&startup_packet(
        PROTOCOL_3_0,
        &[("user", TRUST_USER), ("database", db.name()), ("TimeZone", "Asia/Tokyo"), ("options", "-c work_mem=3MB")],
    ))
    .await
    .unwrap();
    assert_eq!(c2.expect_msg().await.auth_code(), 0);
    c2.until_ready().await;
    let rows =
        data_rows(&c2.simple_ok("SELECT current_setting('TimeZone') || ' ' || current_setting('work_mem')").await);
    assert_eq!(rows, ["Asia/Tokyo 3MB"]);
    assert_no_chorus_panics();
}
