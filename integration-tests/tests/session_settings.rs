//! Session settings follow the session onto every server it uses: SETs, startup
//! parameters (application_name, `options=-c ...`), and their undoing (rolled-back
//! transactions, RESET, RESET ALL), compared with what PostgreSQL itself does on
//! a direct connection.

use integration_tests::*;
use std::collections::BTreeSet;
use tokio_postgres::Client;

/// The settings the tests look at, as one row of text; the first column is the
/// answering port. `which` resolves through search_path; the timestamp shows
/// TimeZone, the interval IntervalStyle.
const PROBE: &str = "SELECT current_setting('port'), current_setting('search_path'), current_setting('TimeZone'), \
     current_setting('application_name'), current_setting('IntervalStyle'), (SELECT v FROM which), \
     timestamptz '2020-01-01 00:00:00+00' || '', interval '1 day 2 hours' || ''";

const FIXTURE: &str = "CREATE SCHEMA s1;
     CREATE TABLE public.which (v text); INSERT INTO public.which VALUES ('public');
     CREATE TABLE s1.which (v text); INSERT INTO s1.which VALUES ('s1');
     CREATE TABLE t (id int)";

/// The probe's values without the port.
type Values = Vec<Option<String>>;

async fn probe_simple(client: &Client) -> (String, Values) {
    let mut row = simple_rows(client, PROBE).await.remove(0);
    let port = row.remove(0).unwrap();
    (port, row)
}

async fn probe_extended(client: &Client, stmt: &tokio_postgres::Statement) -> (String, Values) {
    let row = client.query_one(stmt, &[]).await.unwrap_or_else(|e| panic!("{}", error_text(&e)));
    let port: String = row.get(0);
    (port, (1..row.len()).map(|i| row.get::<_, Option<String>>(i)).collect())
}

/// The probe on the leader, through chorus, inside a read-write transaction.
async fn probe_leader(client: &Client) -> (String, Values) {
    client.batch_execute("BEGIN").await.unwrap();
    let r = probe_simple(client).await;
    client.batch_execute("COMMIT").await.unwrap();
    r
}

/// Probe enough times to see every server; every answer must equal `expected`.
async fn assert_everywhere(db: &TestDb<'_>, client: &Client, expected: &Values, what: &str) {
    // Prepared once: then every probe is one routed request, and the rotation
    // over the followers alternates (a one-off query() adds requests of its own
    // whose pipelining depends on timing).
    let stmt = client.prepare(PROBE).await.unwrap_or_else(|e| panic!("{}", error_text(&e)));
    let mut simple = BTreeSet::new();
    let mut extended = BTreeSet::new();
    for _ in 0..3 {
        let (port, values) = probe_simple(client).await;
        assert_eq!(&values, expected, "{what}: answered by {port}");
        simple.insert(port);
    }
    for _ in 0..3 {
        let (port, values) = probe_extended(client, &stmt).await;
        assert_eq!(&values, expected, "{what}: answered by {port} (extended)");
        extended.insert(port);
    }
    assert_eq!(simple, db.follower_ports(), "{what}: reads did not reach every follower");
    assert_eq!(extended, db.follower_ports(), "{what}: extended reads did not reach every follower");
    let (port, values) = probe_leader(client).await;
    assert_eq!(port, db.leader_port());
    assert_eq!(&values, expected, "{what}: on the leader");
}

fn values(items: &[&str]) -> Values {
    items.iter().map(|s| Some(s.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sets_apply_on_every_server() {
    let db = fresh_database().await;
    db.execute_on_all(FIXTURE).await;
    let chorus = start_chorus(cluster());
    let client = chorus.connect(db.name()).await;

    let defaults = probe_simple(&client).await.1;
    assert_eq!(defaults[4].as_deref(), Some("public"), "{defaults:?}");

    client.batch_execute("SET search_path = s1, public; SET TimeZone = 'Asia/Tokyo'").await.unwrap();
    client.execute("SET application_name = 'probe_app'", &[]).await.unwrap();
    client.batch_execute("SET intervalstyle TO 'sql_standard'").await.unwrap();
    let expected =
        values(&["s1, public", "Asia/Tokyo", "probe_app", "sql_standard", "s1", "2020-01-01 09:00:00+09", "1 2:00:00"]);
    assert_everywhere(&db, &client, &expected, "after SET").await;

    // A later SET of the same name replaces the earlier one everywhere.
    client.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    let mut expected = expected;
    expected[1] = Some("UTC".into());
    expected[5] = Some("2020-01-01 00:00:00+00".into());
    assert_everywhere(&db, &client, &expected, "after a second SET").await;

    // Another session is untouched.
    let other = chorus.connect(db.name()).await;
    assert_everywhere(&db, &other, &defaults, "another session").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_parameters_apply_on_every_server() {
    let db = fresh_database().await;
    db.execute_on_all(FIXTURE).await;
    let chorus = start_chorus(cluster());
    let query = "?application_name=startup_app&options=-c%20intervalstyle%3Diso_8601%20-c%20search_path%3Ds1";
    let client = connect(&format!("{}{query}", chorus.url(db.name()))).await;

    let direct = connect(&format!("{}{query}", db.leader_url())).await;
    let expected = probe_simple(&direct).await.1;
    assert_eq!(expected[2].as_deref(), Some("startup_app"));
    assert_eq!(expected[3].as_deref(), Some("iso_8601"));
    assert_eq!(expected[4].as_deref(), Some("s1"));
    assert_eq!(expected[6].as_deref(), Some("P1DT2H"));
    assert_everywhere(&db, &client, &expected, "startup parameters").await;

    // psql, with the parameters in its connection string: each -c is its own
    // query, so they are spread over the servers.
    let url = format!("{}{query}", chorus.url(db.name()));
    let probe = "SELECT current_setting('port') || ' ' || current_setting('application_name') || ' ' || (interval '1 day' || '')";
    let mut args = vec!["-A", "-t"];
    for _ in 0..4 {
        args.extend(["-c", probe]);
    }
    args.extend(["-c", "BEGIN", "-c", probe, "-c", "COMMIT"]);
    let out = psql(&url, &args, None);
    assert!(out.success(), "{}", out.stderr);
    let mut ports = BTreeSet::new();
    for line in out.stdout.lines().filter(|l| !l.is_empty() && *l != "BEGIN" && *l != "COMMIT") {
        let (port, rest) = line.split_once(' ').unwrap();
        assert_eq!(rest, "startup_app P1D", "psql on {port}");
        ports.insert(port.to_string());
    }
    let mut all = db.follower_ports();
    all.insert(db.leader_port());
    assert_eq!(ports, all, "psql:\n{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn sets_in_transactions_count_only_when_committed() {
    let db = fresh_database().await;
    db.execute_on_all(FIXTURE).await;
    let chorus = start_chorus(cluster());
    // A client that sends no application_name sees PostgreSQL's default (empty)
    // on every server, not the name chorus gives its own connections.
    let anonymous = chorus.connect(db.name()).await;
    for _ in 0..4 {
        let v: String = anonymous.query_one("SELECT current_setting('application_name')", &[]).await.unwrap().get(0);
        assert_eq!(v, "", "application_name of a client that sent none");
    }
    // The same application_name both ways.
    let client = connect(&format!("{}?application_name=settings_test", chorus.url(db.name()))).await;
    let direct = connect(&format!("{}?application_name=settings_test", db.leader_url())).await;

    // Each script runs on a direct leader connection and through chorus; the
    // settings afterwards must match, on every server.
    let scripts: &[&[&str]] = &[
        &["BEGIN", "SET search_path = s1", "SET TimeZone = 'Asia/Tokyo'", "ROLLBACK"],
        &["BEGIN", "SET search_path = s1", "SELECT 1/0", "COMMIT"],
        &["BEGIN", "SET LOCAL search_path = s1", "SET LOCAL TimeZone = 'Asia/Tokyo'", "COMMIT"],
        &["SET TimeZone = 'No/Such_Zone'"],
        &["BEGIN READ ONLY", "SET search_path = s1", "ROLLBACK"],
        &["BEGIN", "SAVEPOINT a", "SET search_path = s1", "ROLLBACK TO SAVEPOINT a", "COMMIT"],
        &["BEGIN", "SET application_name = 'committed'", "COMMIT"],
        &["BEGIN", "SAVEPOINT a", "SET TimeZone = 'Europe/Paris'", "RELEASE a", "COMMIT"],
        &["BEGIN READ ONLY", "SET search_path = s1, public", "COMMIT"],
    ];
    for script in scripts {
        for stmt in *script {
            let via_chorus = client.batch_execute(stmt).await.map_err(|e| sqlstate(&e));
            let direct_result = direct.batch_execute(stmt).await.map_err(|e| sqlstate(&e));
            assert_eq!(via_chorus, direct_result, "{stmt} in {script:?}");
        }
        let expected = probe_simple(&direct).await.1;
        assert_everywhere(&db, &client, &expected, &format!("after {script:?}")).await;
    }
    let last = probe_simple(&direct).await.1;
    assert_eq!(
        last[..4],
        values(&["s1, public", "Europe/Paris", "committed", "postgres"])[..],
        "the scripts' committed SETs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_and_reset_all_reset_everywhere() {
    let db = fresh_database().await;
    db.execute_on_all(FIXTURE).await;
    let chorus = start_chorus(cluster());
    let query = "?application_name=startup_app&options=-c%20intervalstyle%3Diso_8601";
    let client = connect(&format!("{}{query}", chorus.url(db.name()))).await;
    let direct = connect(&format!("{}{query}", db.leader_url())).await;

    let scripts: &[&[&str]] = &[
        &["SET search_path = s1", "SET TimeZone = 'Asia/Tokyo'", "SET application_name = 'changed'"],
        &["RESET search_path"],
        &["RESET application_name"],
        &["SET intervalstyle = postgres", "SET search_path = s1"],
        &["RESET ALL"],
        &["SET TimeZone = 'Asia/Tokyo'", "SET intervalstyle = sql_standard", "DISCARD ALL"],
    ];
    for script in scripts {
        for stmt in *script {
            client.batch_execute(stmt).await.unwrap_or_else(|e| panic!("{stmt}: {}", error_text(&e)));
            direct.batch_execute(stmt).await.unwrap();
        }
        let expected = probe_simple(&direct).await.1;
        assert_everywhere(&db, &client, &expected, &format!("after {script:?}")).await;
    }
    // PostgreSQL resets to the session's startup values, not the server's defaults.
    let last = probe_simple(&direct).await.1;
    assert_eq!(last[2..4], values(&["startup_app", "iso_8601"])[..]);
}
