//! Table tests of `plan` + `render` on whole statements.

use std::borrow::Cow;

use super::scan::{DO_BLOCK, FROM};
use super::shape::{ADD_COLUMN, MATERIALIZED_VIEW};
use super::{Nondeterministic, plan, rewrite};

/// 2023-11-14 22:13:20.123456 UTC.
const MICROS: i64 = 1_700_000_000_123_456;
const S: &str = "2023-11-14 22:13:20.123456+00";

/// Expands `$T` (the timestamp as a typed literal) and `$S` (its text) in a wanted output.
fn expand(want: &str) -> String {
    want.replace("$T", &format!("CAST('{S}' AS timestamp with time zone)")).replace("$S", S)
}

fn function(name: &str) -> Nondeterministic {
    Nondeterministic::Function { name: name.into() }
}

fn literal(literal: &str) -> Nondeterministic {
    Nondeterministic::Literal { literal: literal.into() }
}

fn placement(expr: &str, place: &'static str) -> Nondeterministic {
    Nondeterministic::Placement { expr: expr.into(), place }
}

/// `None`: the text replays as it is.
type Want = Result<Option<&'static str>, Nondeterministic>;

#[test]
fn replacements() {
    let cases: &[(&str, &str)] = &[
        ("INSERT INTO t (ts) VALUES (now())", "INSERT INTO t (ts) VALUES (($T))"),
        ("UPDATE t SET a = NOW ()", "UPDATE t SET a = ($T)"),
        ("update t set a = transaction_timestamp( /* c */ )", "update t set a = ($T)"),
        ("UPDATE t SET a = CURRENT_TIMESTAMP WHERE id = 1", "UPDATE t SET a = ($T) WHERE id = 1"),
        ("UPDATE t SET a = current_timestamp ( 3 )", "UPDATE t SET a = (CAST($T AS timestamp(3) with time zone))"),
        ("UPDATE t SET a = LOCALTIMESTAMP", "UPDATE t SET a = (CAST($T AS timestamp without time zone))"),
        ("UPDATE t SET a = localtimestamp(2)", "UPDATE t SET a = (CAST($T AS timestamp(2) without time zone))"),
        ("UPDATE t SET d = Current_Date", "UPDATE t SET d = (CAST($T AS pg_catalog.date))"),
        (
            "UPDATE t SET a = CURRENT_TIME, b = current_time(0)",
            "UPDATE t SET a = (CAST($T AS time with time zone)), b = (CAST($T AS time(0) with time zone))",
        ),
        ("UPDATE t SET a = LOCALTIME(6)", "UPDATE t SET a = (CAST($T AS time(6) without time zone))"),
        ("INSERT INTO t VALUES (pg_catalog.now())", "INSERT INTO t VALUES (($T))"),
        ("INSERT INTO t VALUES (\"pg_catalog\" . \"now\"())", "INSERT INTO t VALUES (($T))"),
        ("DELETE FROM t WHERE ts < now() - interval '1 day'", "DELETE FROM t WHERE ts < ($T) - interval '1 day'"),
        ("INSERT INTO t (a, b) VALUES (1, now()), (2, now())", "INSERT INTO t (a, b) VALUES (1, ($T)), (2, ($T))"),
        ("INSERT INTO log SELECT id, now() FROM t", "INSERT INTO log SELECT id, ($T) FROM t"),
        (
            "BEGIN; INSERT INTO t VALUES (now()); UPDATE u SET x = CURRENT_DATE; COMMIT",
            "BEGIN; INSERT INTO t VALUES (($T)); UPDATE u SET x = (CAST($T AS pg_catalog.date)); COMMIT",
        ),
        (
            "INSERT INTO t VALUES (now()::date, now() AT TIME ZONE 'UTC')",
            "INSERT INTO t VALUES (($T)::date, ($T) AT TIME ZONE 'UTC')",
        ),
        (
            "WITH x AS (UPDATE t SET a = now() RETURNING id) INSERT INTO l SELECT id FROM x",
            "WITH x AS (UPDATE t SET a = ($T) RETURNING id) INSERT INTO l SELECT id FROM x",
        ),
        ("(SELECT now()) UNION ALL (SELECT 1)", "(SELECT ($T)) UNION ALL (SELECT 1)"),
        ("UPDATE t SET a = age(now(), ts)", "UPDATE t SET a = age(($T), ts)"),
        ("UPDATE t SET y = extract(year FROM now())", "UPDATE t SET y = extract(year FROM ($T))"),
        // Evaluated once by DDL.
        ("CREATE TABLE t2 AS SELECT now() AS created", "CREATE TABLE t2 AS SELECT ($T) AS created"),
        (
            "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (CURRENT_DATE) TO (MAXVALUE)",
            "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM ((CAST($T AS pg_catalog.date))) TO (MAXVALUE)",
        ),
        (
            "ALTER TABLE t ALTER COLUMN c TYPE timestamptz USING now(), ALTER COLUMN d SET DEFAULT now()",
            "ALTER TABLE t ALTER COLUMN c TYPE timestamptz USING ($T), ALTER COLUMN d SET DEFAULT now()",
        ),
        // Special strings with an explicit type.
        ("INSERT INTO t VALUES ('now'::timestamptz)", "INSERT INTO t VALUES ('$S'::timestamptz)"),
        (
            "INSERT INTO t VALUES (CAST(' Now ' AS timestamp with time zone))",
            "INSERT INTO t VALUES (CAST('$S' AS timestamp with time zone))",
        ),
        (
            "INSERT INTO t VALUES (timestamptz 'now', TIMESTAMP(3) WITH TIME ZONE E'now', \
             'now'::pg_catalog.timestamptz(0))",
            "INSERT INTO t VALUES (timestamptz '$S', TIMESTAMP(3) WITH TIME ZONE '$S', \
             '$S'::pg_catalog.timestamptz(0))",
        ),
        ("INSERT INTO t VALUES ('now'::timestamp)", "INSERT INTO t VALUES (($T)::timestamp)"),
        (
            "INSERT INTO t VALUES ('today'::date, 'tomorrow' :: pg_catalog.date, CAST('yesterday' AS timestamp))",
            "INSERT INTO t VALUES ((CAST($T AS pg_catalog.date))::date, (CAST($T AS pg_catalog.date) + 1) :: \
             pg_catalog.date, CAST((CAST($T AS pg_catalog.date) - 1) AS timestamp))",
        ),
        (
            "INSERT INTO t VALUES (date 'today', timestamp without time zone 'now')",
            "INSERT INTO t VALUES ((CAST((CAST($T AS pg_catalog.date)) AS date)), \
             (CAST(($T) AS timestamp without time zone)))",
        ),
        // A timestamptz constant is the leader's value even when stored.
        (
            "CREATE TABLE t (c timestamptz DEFAULT 'now'::timestamptz)",
            "CREATE TABLE t (c timestamptz DEFAULT '$S'::timestamptz)",
        ),
        (
            "CREATE FUNCTION f() RETURNS timestamptz LANGUAGE sql BEGIN ATOMIC SELECT now(); SELECT CURRENT_DATE; END; \
             INSERT INTO t VALUES (now())",
            "CREATE FUNCTION f() RETURNS timestamptz LANGUAGE sql BEGIN ATOMIC SELECT now(); SELECT CURRENT_DATE; END; \
             INSERT INTO t VALUES (($T))",
        ),
    ];
    for &(sql, want) in cases {
        check(sql, Ok(Some(want)));
    }
}

#[test]
fn left_alone() {
    let cases: &[&str] = &[
        "INSERT INTO t (\"now\", \"CURRENT_DATE\") SELECT now, \"current_date\" FROM s",
        "INSERT INTO t VALUES (myschema.now(), s.current_date, x.current_timestamp, myschema.random(), t.random)",
        "INSERT INTO t SELECT 1 AS current_date, now AS now, \"NOW\"() FROM t",
        "INSERT INTO t VALUES ('call now() later', E'it\\'s now() -- or CURRENT_DATE', U&'wait for now\\0021 x', \
         $$ then now() $$)",
        "INSERT INTO t VALUES ('snow', 'nowhere', 'I did it today', 'epoch'::timestamptz, '2026-01-01'::date)",
        "INSERT INTO t VALUES ('now'::text, varchar(10) 'today', 'yesterday'::character varying, N'now')",
        "INSERT INTO t VALUES (1) -- now()\n",
        "INSERT INTO t VALUES (1) /* now() /* nested CURRENT_DATE */ random() */",
        "CREATE FUNCTION f() RETURNS timestamptz LANGUAGE plpgsql AS $$ BEGIN RETURN now() + random(); END $$",
        "CREATE FUNCTION f() RETURNS timestamptz LANGUAGE sql RETURN now()",
        "CREATE TABLE t (id uuid DEFAULT gen_random_uuid(), ts timestamptz DEFAULT now(), d date DEFAULT CURRENT_DATE)",
        "ALTER TABLE t ALTER COLUMN ts SET DEFAULT now(), ADD CONSTRAINT c CHECK (ts <= now())",
        "CREATE VIEW v AS SELECT * FROM t WHERE ts > now() - interval '1 hour'",
        "CREATE MATERIALIZED VIEW mv AS SELECT now(), random() WITH NO DATA",
        "PREPARE p AS INSERT INTO t VALUES (now())",
        "GRANT EXECUTE ON FUNCTION random() TO app",
        "DO $$ BEGIN INSERT INTO t VALUES (1); END $$",
        "SELECT 'unterminated now()",
    ];
    for &sql in cases {
        check(sql, Ok(None));
    }
}

#[test]
fn refusals() {
    let cases: &[(&str, Nondeterministic)] = &[
        ("INSERT INTO t VALUES (clock_timestamp())", function("clock_timestamp")),
        ("UPDATE t SET r = RANDOM ()", function("random")),
        ("INSERT INTO t VALUES (pg_catalog.gen_random_uuid())", function("gen_random_uuid")),
        ("INSERT INTO t VALUES (\"statement_timestamp\"())", function("statement_timestamp")),
        ("SELECT now(); INSERT INTO t VALUES (txid_current())", function("txid_current")),
        ("INSERT INTO t SELECT timeofday() FROM s", function("timeofday")),
        ("UPDATE t SET a = age(ts)", function("age")),
        ("INSERT INTO t VALUES ('now')", literal("'now'")),
        ("UPDATE t SET d = ' Today '", literal("' Today '")),
        ("UPDATE t SET note = E'now'", literal("E'now'")),
        ("INSERT INTO t VALUES ($$now$$)", literal("$$now$$")),
        ("INSERT INTO t VALUES ('today 12:00'::timestamp)", literal("'today 12:00'")),
        ("INSERT INTO t VALUES ('{now}')", literal("'{now}'")),
        ("INSERT INTO t VALUES ('now'::mydomain)", literal("'now'")),
        ("CREATE TABLE t (d date DEFAULT 'today'::date)", literal("'today'")),
        ("ALTER TABLE t ADD COLUMN ts timestamptz NOT NULL DEFAULT now()", placement("now()", ADD_COLUMN)),
        ("ALTER TABLE t ADD id uuid DEFAULT gen_random_uuid()", function("gen_random_uuid")),
        ("CREATE MATERIALIZED VIEW mv AS SELECT CURRENT_DATE AS d", placement("CURRENT_DATE", MATERIALIZED_VIEW)),
        ("DO $$ BEGIN UPDATE t SET ts = now(); END $$", placement("now()", DO_BLOCK)),
        ("DO LANGUAGE plpgsql $$ BEGIN PERFORM pg_sleep(random()); END $$", function("random")),
        ("INSERT INTO t SELECT * FROM now()", placement("now()", FROM)),
    ];
    for (sql, err) in cases {
        check(sql, Err(err.clone()));
    }
}

fn check(sql: &str, want: Want) {
    let got = plan(sql);
    match want {
        Err(err) => assert_eq!(got, Err(err), "{sql}"),
        Ok(None) => {
            let plan = got.unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(plan.is_identity(), "{sql}");
            assert!(matches!(plan.render(sql, MICROS), Cow::Borrowed(s) if s == sql), "{sql}");
        }
        Ok(Some(want)) => {
            let plan = got.unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(!plan.is_identity(), "{sql}");
            assert_eq!(plan.render(sql, MICROS), expand(want), "{sql}");
        }
    }
}

#[test]
fn one_plan_renders_each_transaction() {
    let sql = "INSERT INTO t VALUES (now(), 'now'::timestamptz)";
    let plan = plan(sql).unwrap();
    assert_eq!(
        plan.render(sql, 0),
        "INSERT INTO t VALUES ((CAST('1970-01-01 00:00:00.000000+00' AS timestamp with time zone)), \
         '1970-01-01 00:00:00.000000+00'::timestamptz)"
    );
    assert_eq!(rewrite(sql, MICROS).unwrap(), expand("INSERT INTO t VALUES (($T), '$S'::timestamptz)"));
    assert!(matches!(rewrite("UPDATE t SET a = 1", MICROS), Ok(Cow::Borrowed(_))));
}

#[test]
fn messages() {
    assert_eq!(
        function("clock_timestamp").to_string(),
        "chorus cannot replicate clock_timestamp(): its value on the leader is not known to chorus"
    );
    assert_eq!(
        placement("now()", ADD_COLUMN).to_string(),
        "chorus cannot replicate now() in ALTER TABLE ... ADD COLUMN: existing rows would get the leader's value \
         while the default stays an expression"
    );
    let long = format!("INSERT INTO t VALUES ('now {}'::timestamptz)", "1 ".repeat(100));
    let Err(Nondeterministic::Literal { literal }) = plan(&long) else { panic!("not refused") };
    assert!(literal.len() <= 60 && literal.ends_with("..."), "{literal}");
}
