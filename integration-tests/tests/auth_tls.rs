//! Client authentication at the proxy and TLS, with real clients: SCRAM-SHA-256
//! through tokio-postgres and psql (plain and stored-verifier passwords),
//! wrong passwords and unknown users (28P01, indistinguishable), trust users;
//! TLS with a self-signed certificate (psql `sslmode=require` / `verify-full`),
//! and the plain-text behaviour without `[tls]`.

use chorus::config::{AuthMethod, Config, User};
use integration_tests::raw::{RawConn, ssl_request};
use integration_tests::*;
use std::path::Path;
use std::time::Duration;

fn user(name: &str, password: Option<&str>, auth: AuthMethod) -> User {
    User { name: name.into(), password: password.map(str::to_string), auth, mysql_auth: None }
}

async fn select_one(client: &tokio_postgres::Client) -> i32 {
    client.query_one("SELECT 1", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_users_log_in_with_the_right_password_only() {
    let db = fresh_database().await;
    let odd_password = "pä$$ w'rd:@/?ü";
    let chorus = start_chorus_with(cluster(), |c: &mut Config| {
        c.users.push(user("second", Some("second-pw"), AuthMethod::ScramSha256));
        c.users.push(user("odd", Some(odd_password), AuthMethod::ScramSha256));
    });

    // The harness's user, through tokio-postgres (extended and simple protocol) and psql.
    let client = chorus.connect(db.name()).await;
    assert_eq!(select_one(&client).await, 1);
    assert_eq!(psql_sql(&chorus.url(db.name()), "SELECT 'psql in'"), "psql in");
    // Other users, each with their own password; a non-ASCII one included.
    for (name, pw) in [("second", "second-pw"), ("odd", odd_password)] {
        let c = connect(&chorus.url_as(name, pw, db.name())).await;
        assert_eq!(select_one(&c).await, 1, "{name}");
        assert_eq!(psql_sql(&chorus.url_as(name, pw, db.name()), "SELECT 2"), "2", "{name}");
    }

    // Wrong passwords, including another user's: 28P01.
    let wrong = [
        (CHORUS_USER, "not-the-password"),
        (CHORUS_USER, ""),
        (CHORUS_USER, &CHORUS_PASSWORD.to_uppercase()),
        ("second", CHORUS_PASSWORD),
        ("odd", "pa$$ w'rd:@/?u"),
    ];
    for (name, pw) in wrong {
        let url = chorus.url_as(name, pw, db.name());
        if !pw.is_empty() {
            let e = try_connect(&url).await.err().unwrap_or_else(|| panic!("{name}/{pw:?} got in"));
            assert_eq!(sqlstate(&e), "28P01", "{name}/{pw:?}: {e:?}");
            assert_eq!(db_message(&e), format!("password authentication failed for user \"{name}\""));
        }
        let out = psql(&url, &["-w", "-c", "SELECT 1"], None);
        assert!(!out.success(), "{name}/{pw:?} got in with psql");
        let expected = if pw.is_empty() { "no password supplied" } else { "password authentication failed" };
        assert!(out.stderr.contains(expected), "{name}/{pw:?}: {}", out.stderr);
    }

    // An unknown user fails exactly like a wrong password (no user enumeration).
    let e = try_connect(&chorus.url_as("nobody_here", "whatever", db.name())).await.expect_err("unknown user got in");
    assert_eq!(sqlstate(&e), "28P01");
    assert_eq!(db_message(&e), "password authentication failed for user \"nobody_here\"");
    let out = psql(&chorus.url_as("nobody_here", "whatever", db.name()), &["-w", "-c", "SELECT 1"], None);
    assert!(!out.success() && out.stderr.contains("password authentication failed"), "{out:?}");

    // Failed logins disturbed nobody.
    assert_eq!(select_one(&client).await, 1);
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_scram_verifier_works_as_the_password() {
    let db = fresh_database().await;
    // The verifier PostgreSQL stored for the harness's user: chorus must accept
    // it as configuration and check the real password against it.
    let leader = db.connect_leader().await;
    let verifier: String =
        leader.query_one("SELECT rolpassword FROM pg_authid WHERE rolname = $1", &[&CHORUS_USER]).await.unwrap().get(0);
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let chorus =
        start_chorus_with(cluster(), |c| c.users.push(user("stored", Some(&verifier), AuthMethod::ScramSha256)));
    let c = connect(&chorus.url_as("stored", CHORUS_PASSWORD, db.name())).await;
    assert_eq!(select_one(&c).await, 1);
    assert_eq!(psql_sql(&chorus.url_as("stored", CHORUS_PASSWORD, db.name()), "SELECT 3"), "3");
    // The verifier itself is not a password.
    let e =
        try_connect(&chorus.url_as("stored", &verifier, db.name())).await.expect_err("verifier accepted as password");
    assert_eq!(sqlstate(&e), "28P01");
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_users_need_no_password() {
    let db = fresh_database().await;
    let chorus = start_chorus_with(cluster(), |c| c.users.push(user("local", None, AuthMethod::Trust)));
    let url = format!("postgres://local@{}/{}", chorus.addr(), db.name());
    let c = connect(&url).await;
    assert_eq!(select_one(&c).await, 1);
    // psql -w: never prompts, so it fails if chorus asks for a password.
    let out = psql(&url, &["-w", "-A", "-t", "-c", "SELECT 'trusted'"], None);
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout.trim(), "trusted");
    // A password sent anyway is not asked for, so it does not matter.
    let c = connect(&chorus.url_as("local", "anything", db.name())).await;
    assert_eq!(select_one(&c).await, 1);
    // Trusting one user does not trust the others.
    let out =
        psql(&format!("postgres://{CHORUS_USER}@{}/{}", chorus.addr(), db.name()), &["-w", "-c", "SELECT 1"], None);
    assert!(!out.success() && out.stderr.contains("no password supplied"), "{out:?}");
    assert_no_chorus_panics();
}

/// psql's `\conninfo` for `url` (extra libpq parameters appended), or its stderr.
fn conninfo(url: &str, params: &str) -> Result<String, String> {
    let out = psql(&format!("{url}?{params}"), &["-w", "-c", "\\conninfo"], None);
    if out.success() { Ok(out.stdout) } else { Err(out.stderr) }
}

fn url_with_cert_path(p: &Path) -> String {
    chorus::localcluster::url_encode(&p.display().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_a_configured_certificate() {
    let db = fresh_database().await;
    let cert = SelfSigned::create("on");
    let chorus = start_chorus_with(cluster(), |c| c.tls = Some(cert.tls()));
    let url = chorus.url(db.name());

    let info = conninfo(&url, "sslmode=require").expect("sslmode=require failed");
    assert!(info.contains("SSL connection (protocol: TLSv1."), "{info}");
    // The certificate served is ours: psql verifies it against it, host name included.
    let verify = format!("sslmode=verify-full&sslrootcert={}", url_with_cert_path(&cert.cert));
    let info = conninfo(&url, &verify).expect("sslmode=verify-full failed");
    assert!(info.contains("SSL connection"), "{info}");
    // ... and a query runs over it.
    let out = psql(&format!("{url}?sslmode=require"), &["-A", "-t", "-c", "SELECT 40 + 2"], None);
    assert!(out.success() && out.stdout.trim() == "42", "{out:?}");
    // A wrong password over TLS is still 28P01.
    let bad = chorus.url_as(CHORUS_USER, "wrong", db.name());
    let err = conninfo(&bad, "sslmode=require").expect_err("wrong password accepted over TLS");
    assert!(err.contains("password authentication failed"), "{err}");
    // Plain text stays possible (TLS is offered, not imposed).
    let info = conninfo(&url, "sslmode=disable").expect("sslmode=disable failed");
    assert!(!info.contains("SSL"), "{info}");

    // A client that asks for TLS and then sends no TLS handshake is closed.
    let mut c = RawConn::connect(chorus.addr()).await;
    c.send(&ssl_request()).await.unwrap();
    assert_eq!(c.read_byte().await, Some(b'S'));
    let _ = c.send(&integration_tests::raw::garbage(7, 300)).await;
    c.shutdown_write().await;
    let rest = tokio::time::timeout(Duration::from_secs(20), c.until_closed()).await.expect("hung");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(psql_sql(&format!("{url}?sslmode=require"), "SELECT 'after'"), "after");
    assert_no_chorus_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_tls_require_fails_and_prefer_falls_back() {
    let db = fresh_database().await;
    let chorus = start_chorus(cluster());
    assert!(chorus.config().tls.is_none());
    let url = chorus.url(db.name());
    let err = conninfo(&url, "sslmode=require").expect_err("sslmode=require connected without TLS");
    assert!(err.contains("server does not support SSL"), "{err}");
    let info = conninfo(&url, "sslmode=prefer").expect("sslmode=prefer failed");
    assert!(info.contains("You are connected") && !info.contains("SSL"), "{info}");
    // tokio-postgres's default (prefer without a TLS connector) too.
    assert_eq!(select_one(&connect(&format!("{url}?sslmode=prefer")).await).await, 1);
    assert_no_chorus_panics();
}
