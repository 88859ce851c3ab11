//! Pure classification of SQL text (PostgreSQL dialect) into a [`Classification`].
//!
//! One tokenization splits the text into statements ([`super::split`]); each is
//! parsed once with sqlparser and visited once ([`super::collect`]); what does not
//! parse is retried after small rewrites or classified by its leading keywords
//! ([`super::fallback`]). The classification summarizes all statements: the
//! leader if any needs it, the first pin, settings in order, all functions and
//! tables. `shape` is only set when the text holds exactly one statement.

use sqlparser::ast::{Set, Statement, Visit};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan};

use super::collect::{Collector, access_mode};
use super::{Classification, LeaderReason, Shape, StmtOp, fallback, ops, split};

/// Classify one query text. Never fails: what does not parse goes to the leader.
pub fn classify(sql: &str) -> Classification {
    let Ok(chunks) = split::split(sql) else {
        return Classification {
            leader_reason: Some(LeaderReason::Unparsed),
            statement_count: 1,
            ops: vec![StmtOp::Write],
            ..Default::default()
        };
    };
    let count = chunks.len();
    let mut collector = Collector::default();
    let mut shape = Shape::Other;
    let mut ops = Vec::with_capacity(count);
    let mut keyed = Vec::with_capacity(count);
    let mut capture = Vec::new();
    for chunk in chunks {
        collector.start_statement(chunk.text);
        // The tokens go to the parser; the rare statement it rejects is
        // tokenized again from its text for the fallback.
        let (parsed, tokens) = match parse(chunk.tokens) {
            Some(stmt) => (Some(stmt), Vec::new()),
            None => {
                let tokens = split::tokenize(chunk.text).unwrap_or_default();
                (fallback::rewrite(&tokens).and_then(parse), tokens)
            }
        };
        let this_shape = match &parsed {
            Some(stmt) => {
                let _ = stmt.visit(&mut collector);
                shape_of(stmt)
            }
            None => fallback::classify(&tokens, chunk.text, &mut collector),
        };
        ops.push(ops::op_of(parsed.as_ref(), chunk.text, collector.statement_effect()));
        if let Some(k) = parsed.as_ref().and_then(super::keyed::keyed) {
            keyed.push((ops.len() - 1, k));
        }
        if let Some(c) = parsed.as_ref().and_then(super::capture::shape) {
            capture.push((ops.len() - 1, c));
        }
        if count == 1 {
            shape = this_shape;
        }
    }
    let mut class = collector.finish(shape, count);
    class.ops = ops;
    class.keyed = keyed;
    class.capture = capture;
    class
}

/// Exactly one statement from the tokens, or `None`.
fn parse(tokens: Vec<TokenWithSpan>) -> Option<Statement> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let stmt = parser.parse_statement().ok()?;
    (parser.peek_token().token == Token::EOF).then_some(stmt)
}

fn shape_of(stmt: &Statement) -> Shape {
    match stmt {
        Statement::StartTransaction { modes, modifier: None, statements, exception: None, .. }
            if statements.is_empty() =>
        {
            Shape::Begin { read_only: access_mode(modes), plain: modes.is_empty() }
        }
        Statement::Set(Set::SetTransaction { modes, snapshot: None, session: false })
            if access_mode(modes) == Some(true) =>
        {
            Shape::SetTransactionReadOnly
        }
        Statement::Commit { chain: false, modifier: None, .. } => Shape::Commit,
        Statement::Rollback { chain: false, savepoint: None } => Shape::Rollback,
        _ => Shape::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PinReason, SettingChange};
    use super::*;
    use LeaderReason::*;

    fn vf(name: &str) -> Option<LeaderReason> {
        Some(VolatileFunction(name.to_string()))
    }

    #[test]
    fn leader_reasons() {
        let cases: Vec<(&str, Option<LeaderReason>)> = vec![
            // reads
            ("SELECT 1", None),
            ("select * from t where a = $1", None),
            ("VALUES (1), (2)", None),
            ("TABLE t", None),
            ("SHOW search_path", None),
            ("SHOW ALL", None),
            ("EXPLAIN SELECT * FROM t", None),
            ("EXPLAIN ANALYZE SELECT * FROM t", None),
            ("EXPLAIN UPDATE t SET a = 1", None),
            ("EXPLAIN (ANALYZE false) DELETE FROM t", None),
            ("EXPLAIN (ANALYZE off, VERBOSE) DELETE FROM t", None),
            ("EXPLAIN SELECT nextval('s')", None),
            ("COPY t TO STDOUT", None),
            ("COPY (SELECT a FROM t) TO STDOUT WITH (FORMAT csv)", None),
            ("WITH x AS (SELECT 1) SELECT * FROM x", None),
            ("SELECT now(), current_setting('port'), pg_sleep(1)", None),
            ("SELECT my_func(1)", None), // unknown: for the router's catalog check
            ("SET search_path = a", None),
            ("SET default_transaction_read_only = on", None),
            ("SET TRANSACTION READ ONLY", None),
            ("SET TRANSACTION READ WRITE", Some(Utility)),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE", Some(Utility)),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", None),
            ("SET LOCAL transaction_read_only = off", Some(Utility)),
            ("SET LOCAL TRANSACTION_READ_ONLY TO false", Some(Utility)),
            ("SET LOCAL statement_timeout = 0", None),
            ("BEGIN READ ONLY", None),
            ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", None),
            ("COMMIT", None),
            ("END", None),
            ("ROLLBACK", None),
            ("ABORT", None),
            ("SAVEPOINT a", None),
            ("RELEASE SAVEPOINT a", None),
            ("ROLLBACK TO SAVEPOINT a", None),
            ("FETCH 10 FROM c", None),
            ("MOVE NEXT IN c", None),
            ("CLOSE c", None),
            ("DECLARE c CURSOR FOR SELECT * FROM t", None),
            ("DEALLOCATE p", None),
            ("DISCARD ALL", None),
            ("RESET ALL", None),
            // writes
            ("INSERT INTO t VALUES (1)", Some(Write)),
            ("UPDATE t SET a = 1", Some(Write)),
            ("DELETE FROM t", Some(Write)),
            ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", Some(Write)),
            ("COPY t FROM STDIN", Some(Write)),
            ("COPY t (a, b) FROM STDIN WITH (FORMAT binary)", Some(Write)),
            ("SELECT * INTO newt FROM t", Some(Write)),
            ("CREATE TABLE x AS SELECT * FROM t", Some(Write)),
            ("REFRESH MATERIALIZED VIEW mv", Some(Write)),
            ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", Some(Write)),
            ("EXPLAIN ANALYZE DELETE FROM t", Some(Write)),
            ("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", Some(Write)),
            ("EXPLAIN (ANALYZE true) INSERT INTO t VALUES (1)", Some(Write)),
            ("INSERT INTO t SELECT * FROM u FOR UPDATE", Some(Write)),
            ("COPY (INSERT INTO t VALUES (1) RETURNING a) TO STDOUT", Some(Write)),
            // DDL
            ("CREATE TABLE t (a int)", Some(Ddl)),
            ("CREATE UNLOGGED TABLE t (a int)", Some(Ddl)),
            ("ALTER TABLE t ADD COLUMN b int", Some(Ddl)),
            ("DROP TABLE t", Some(Ddl)),
            ("TRUNCATE t", Some(Ddl)),
            ("GRANT SELECT ON t TO bob", Some(Ddl)),
            ("REVOKE SELECT ON t FROM bob", Some(Ddl)),
            ("COMMENT ON TABLE t IS 'x'", Some(Ddl)),
            ("CREATE INDEX CONCURRENTLY i ON t (a)", Some(Ddl)),
            ("CREATE VIEW v AS SELECT nextval('s')", Some(Ddl)),
            ("CREATE MATERIALIZED VIEW mv AS SELECT 1", Some(Ddl)),
            ("CREATE SEQUENCE s", Some(Ddl)),
            ("CREATE EXTENSION pgcrypto", Some(Ddl)),
            ("CREATE SCHEMA s", Some(Ddl)),
            ("CREATE ROLE r", Some(Ddl)),
            ("CREATE TYPE mood AS ENUM ('a')", Some(Ddl)),
            ("CREATE FUNCTION f() RETURNS int AS $$ INSERT INTO t VALUES (1); SELECT 1 $$ LANGUAGE sql", Some(Ddl)),
            ("CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END", Some(Ddl)),
            ("CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", Some(Ddl)),
            ("CREATE POLICY p ON t USING (true)", Some(Ddl)),
            ("CREATE PUBLICATION p FOR ALL TABLES", Some(Ddl)),
            ("CREATE RULE r AS ON INSERT TO t DO NOTHING", Some(Ddl)),
            ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob", Some(Ddl)),
            ("DROP OWNED BY a", Some(Ddl)),
            ("REASSIGN OWNED BY a TO b", Some(Ddl)),
            ("SECURITY LABEL ON TABLE t IS 'x'", Some(Ddl)),
            ("IMPORT FOREIGN SCHEMA x FROM SERVER s INTO y", Some(Ddl)),
            ("ALTER ROLE r SET search_path = a", Some(Ddl)),
            // locking reads and writable CTEs
            ("SELECT * FROM t FOR UPDATE", Some(LockingRead)),
            ("SELECT * FROM t FOR SHARE OF t", Some(LockingRead)),
            ("SELECT * FROM t FOR NO KEY UPDATE OF t NOWAIT", Some(LockingRead)),
            ("SELECT * FROM t FOR KEY SHARE SKIP LOCKED", Some(LockingRead)),
            ("SELECT * FROM t WHERE a IN (SELECT a FROM u FOR UPDATE)", Some(LockingRead)),
            ("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", Some(LockingRead)),
            ("WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", Some(WritableCte)),
            ("WITH a AS (SELECT 1), d AS (DELETE FROM t RETURNING *) SELECT * FROM d", Some(WritableCte)),
            ("WITH u AS (UPDATE t SET a = 1 RETURNING a) SELECT count(*) FROM u", Some(WritableCte)),
            // volatile functions
            ("SELECT nextval('s')", vf("nextval")),
            ("SELECT pg_catalog.nextval('s'::regclass)", vf("pg_catalog.nextval")),
            ("SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c = setval('x', 1))", vf("setval")),
            ("SELECT random()", vf("random")),
            ("SELECT gen_random_uuid()", vf("gen_random_uuid")),
            ("SELECT public.uuid_generate_v4()", vf("public.uuid_generate_v4")),
            ("SELECT clock_timestamp()", vf("clock_timestamp")),
            ("SELECT txid_current()", vf("txid_current")),
            ("SELECT pg_notify('ch', 'x')", vf("pg_notify")),
            ("SELECT pg_advisory_xact_lock(1)", vf("pg_advisory_xact_lock")),
            ("SELECT lo_import('/tmp/x')", vf("lo_import")),
            ("SELECT pg_terminate_backend(42)", vf("pg_terminate_backend")),
            ("SELECT * FROM dblink('db', 'select 1') AS t(a int)", vf("dblink")),
            ("SELECT NEXTVAL('s'), random()", vf("nextval")),
            ("SELECT set_config('a.b', 'c', true)", vf("set_config")),
            // transactions
            ("BEGIN", Some(Transaction)),
            ("BEGIN WORK", Some(Transaction)),
            ("START TRANSACTION", Some(Transaction)),
            ("BEGIN READ WRITE", Some(Transaction)),
            ("BEGIN ISOLATION LEVEL SERIALIZABLE", Some(Transaction)),
            ("BEGIN READ ONLY, READ WRITE", Some(Transaction)),
            ("BEGIN DEFERRABLE", Some(Transaction)),
            ("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", None),
            // utility
            ("VACUUM t", Some(Utility)),
            ("VACUUM FULL ANALYZE t", Some(Utility)),
            ("ANALYZE t", Some(Utility)),
            ("CLUSTER t", Some(Utility)),
            ("REINDEX TABLE t", Some(Utility)),
            ("CHECKPOINT", Some(Utility)),
            ("CALL p(1)", Some(Utility)),
            ("DO $$ BEGIN PERFORM 1; END $$", Some(Utility)),
            ("NOTIFY ch, 'x'", Some(Utility)),
            ("UNLISTEN *", Some(Utility)),
            ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", Some(Utility)),
            ("LOAD 'auto_explain'", Some(Utility)),
            ("EXECUTE p(1)", Some(Utility)),
            ("ALTER SYSTEM SET work_mem = '1MB'", Some(Utility)),
            ("PREPARE TRANSACTION 'x'", Some(Utility)),
            ("COMMIT PREPARED 'x'", Some(Utility)),
            ("ROLLBACK PREPARED 'x'", Some(Utility)),
            ("COPY t TO '/tmp/t.csv'", Some(Utility)),
            // garbage
            ("this is not sql", Some(Unparsed)),
            ("SELECT (1", Some(Unparsed)),
            ("INSERT INTO", Some(Unparsed)),
            ("\\d t", Some(Unparsed)),
            ("SELECT 1 END", Some(Unparsed)),
            ("SELECT 'unterminated", Some(Unparsed)),
        ];
        for (sql, want) in cases {
            assert_eq!(classify(sql).leader_reason, want, "{sql}");
        }
    }

    #[test]
    fn shapes() {
        use Shape::*;
        let cases: &[(&str, Shape)] = &[
            ("BEGIN", Begin { read_only: None, plain: true }),
            ("BEGIN;", Begin { read_only: None, plain: true }),
            ("begin work", Begin { read_only: None, plain: true }),
            ("BEGIN TRANSACTION", Begin { read_only: None, plain: true }),
            ("START TRANSACTION", Begin { read_only: None, plain: true }),
            ("BEGIN READ ONLY", Begin { read_only: Some(true), plain: false }),
            ("START TRANSACTION READ WRITE", Begin { read_only: Some(false), plain: false }),
            ("BEGIN ISOLATION LEVEL REPEATABLE READ", Begin { read_only: None, plain: false }),
            ("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY", Begin { read_only: Some(true), plain: false }),
            ("BEGIN READ ONLY DEFERRABLE", Begin { read_only: Some(true), plain: false }),
            ("BEGIN DEFERRABLE", Begin { read_only: None, plain: false }),
            ("/* hi */ BEGIN -- there", Begin { read_only: None, plain: true }),
            ("SET TRANSACTION READ ONLY", SetTransactionReadOnly),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY", SetTransactionReadOnly),
            ("SET TRANSACTION READ WRITE", Other),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", Other),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", Other),
            ("COMMIT", Commit),
            ("COMMIT WORK;", Commit),
            ("END", Commit),
            ("END TRANSACTION", Commit),
            ("COMMIT AND NO CHAIN", Commit),
            ("COMMIT AND CHAIN", Other),
            ("COMMIT PREPARED 'x'", Other),
            ("ROLLBACK", Rollback),
            ("ABORT", Rollback),
            ("ROLLBACK WORK", Rollback),
            ("ROLLBACK AND CHAIN", Other),
            ("ROLLBACK TO SAVEPOINT a", Other),
            ("ROLLBACK TO a", Other),
            ("ROLLBACK PREPARED 'x'", Other),
            ("SAVEPOINT a", Other),
            ("SELECT 1", Other),
            ("BEGIN; SELECT 1", Other),
            ("BEGIN; COMMIT", Other),
            ("COMMIT; BEGIN", Other),
            ("", Other),
        ];
        for (sql, want) in cases {
            assert_eq!(classify(sql).shape, *want, "{sql}");
        }
    }

    #[test]
    fn statement_counts() {
        let cases: &[(&str, usize)] = &[
            ("", 0),
            ("   \n\t", 0),
            (";", 0),
            (";;;", 0),
            ("-- just a comment", 0),
            ("/* block */", 0),
            ("/* a */ ; -- b\n ;", 0),
            ("SELECT 1", 1),
            ("SELECT 1;", 1),
            ("SELECT 1;;", 1),
            ("SELECT 1; SELECT 2", 2),
            ("BEGIN; INSERT INTO t VALUES (1); COMMIT;", 3),
            ("SELECT 'a;b'; SELECT $$;$$", 2),
            ("garbage; SELECT 1", 2),
            ("SELECT 'unterminated; SELECT 1", 1),
            ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2", 2),
        ];
        for (sql, want) in cases {
            assert_eq!(classify(sql).statement_count, *want, "{sql}");
        }
    }

    #[test]
    fn sequences_and_targets() {
        let c = classify("SELECT nextval('tseq'), currval('\"S\"'), setval('pg_catalog.x', 1)");
        assert_eq!(c.sequences, vec!["tseq", "S", "pg_catalog.x"]);
        assert_eq!(c.targets, vec!["tseq", "pg_catalog.x"]);
        let c = classify("INSERT INTO a SELECT nextval(s) FROM b");
        assert_eq!(c.targets, vec!["a", "?"]);
        let c = classify("WITH d AS (DELETE FROM a RETURNING *) UPDATE b SET x = 1 FROM d");
        assert_eq!(c.targets.len(), 2, "{:?}", c.targets);
        let c = classify("CREATE VIEW v AS SELECT nextval('s')");
        assert!(c.targets == vec!["v"] && c.sequences.is_empty(), "{c:?}");
    }

    #[test]
    fn empty_texts_are_reads_with_nothing() {
        for sql in ["", "  ", ";", "-- c", "/* c */ ;"] {
            assert_eq!(classify(sql), Classification::default(), "{sql:?}");
        }
    }

    #[test]
    fn pgbench_statements() {
        use crate::sql::keyed::{KeyedKind, KeyedWrite};
        let c = classify("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;");
        assert_eq!(
            c,
            Classification {
                leader_reason: Some(Write),
                tables: vec!["pgbench_accounts".into()],
                targets: vec!["pgbench_accounts".into()],
                ops: vec![StmtOp::Write],
                statement_count: 1,
                keyed: vec![(
                    0,
                    KeyedWrite {
                        table: "pgbench_accounts".into(),
                        kind: KeyedKind::Update { keys: vec!["aid".into()] }
                    }
                )],
                capture: c.capture.clone(),
                ..Default::default()
            }
        );
        let c = classify("SELECT abalance FROM pgbench_accounts WHERE aid = $1;");
        assert_eq!(
            c,
            Classification {
                tables: vec!["pgbench_accounts".into()],
                statement_count: 1,
                ops: vec![StmtOp::Read],
                ..Default::default()
            }
        );
        let c = classify(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
        );
        assert_eq!(
            c,
            Classification {
                leader_reason: Some(Write),
                tables: vec!["pgbench_history".into()],
                targets: vec!["pgbench_history".into()],
                statement_count: 1,
                ops: vec![StmtOp::Write],
                keyed: c.keyed.clone(),
                capture: c.capture.clone(),
                ..Default::default()
            }
        );
        let c = classify("BEGIN;");
        assert_eq!(
            c,
            Classification {
                leader_reason: Some(Transaction),
                shape: Shape::Begin { read_only: None, plain: true },
                statement_count: 1,
                ops: vec![StmtOp::Begin { isolation: None }],
                ..Default::default()
            }
        );
        let c = classify("END;");
        assert_eq!(
            c,
            Classification {
                shape: Shape::Commit,
                statement_count: 1,
                ops: vec![StmtOp::Commit],
                ..Default::default()
            }
        );
    }

    #[test]
    fn multi_statement_texts_summarize() {
        // The write is more telling than the BEGIN.
        let c = classify("BEGIN; INSERT INTO t VALUES (nextval('s')); COMMIT;");
        assert_eq!(c.leader_reason, Some(Write));
        assert_eq!(c.shape, Shape::Other);
        assert_eq!(c.functions, vec!["nextval"]);
        assert_eq!(c.tables, vec!["t"]);
        assert_eq!(c.statement_count, 3);

        let c = classify("BEGIN; SELECT 1; COMMIT");
        assert_eq!(c.leader_reason, Some(Transaction));

        let c = classify("SELECT 1; SELECT * FROM t FOR UPDATE; DELETE FROM u");
        assert_eq!(c.leader_reason, Some(LockingRead));
        assert_eq!(c.tables, vec!["t", "u"]);

        let c = classify("SELECT 1; garbage here; SELECT 2");
        assert_eq!(c.leader_reason, Some(Unparsed));
        assert_eq!(c.statement_count, 3);

        let c = classify("SET search_path = a; CREATE TEMP TABLE x (a int); LISTEN ch");
        assert_eq!(c.pin_reason, Some(PinReason::TempTable));
        assert_eq!(c.leader_reason, Some(Ddl));
        assert_eq!(
            c.settings,
            vec![SettingChange::Set { name: "search_path".into(), sql: "SET search_path = a".into() }]
        );

        let c = classify("SELECT f(1); SELECT g(2), f(3)");
        assert_eq!(c.functions, vec!["f", "g"]);
        assert_eq!(c.leader_reason, None);
    }

    #[test]
    fn comments_and_quoting() {
        let c = classify("/* leading */ -- line\nSELECT a /* ; */ FROM \"MySchema\".\"MyTable\" -- ;\n;");
        assert_eq!(c.leader_reason, None);
        assert_eq!(c.tables, vec!["MySchema.MyTable"]);
        assert_eq!(c.statement_count, 1);

        let c = classify("SELECT 'DELETE FROM t; INSERT' AS \"INSERT\", $q$ ; UPDATE x $q$");
        assert_eq!(c.leader_reason, None);
        assert_eq!(c.statement_count, 1);
        assert!(c.tables.is_empty());

        let c = classify("SELECT E'it\\'s; here', 'x''y;z'");
        assert_eq!((c.leader_reason, c.statement_count), (None, 1));

        let c = classify("-- INSERT INTO t VALUES (1);\nSELECT 1");
        assert_eq!((c.leader_reason, c.statement_count), (None, 1));
    }

    #[test]
    fn psql_describe_queries_are_catalog_reads() {
        let queries = [
            "SELECT n.nspname as \"Schema\",\n  c.relname as \"Name\",\n  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' END as \"Type\",\n  pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\"\nFROM pg_catalog.pg_class c\n     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\nWHERE c.relkind IN ('r','p','v','m','S','f','')\n      AND n.nspname <> 'pg_catalog'\n      AND n.nspname !~ '^pg_toast'\n  AND pg_catalog.pg_table_is_visible(c.oid)\nORDER BY 1,2;",
            "SELECT a.attname,\n  pg_catalog.format_type(a.atttypid, a.atttypmod),\n  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)\n   FROM pg_catalog.pg_attrdef d\n   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),\n  a.attnotnull,\n  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t\n   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation\nFROM pg_catalog.pg_attribute a\nWHERE a.attrelid = '16384' AND a.attnum > 0 AND NOT a.attisdropped\nORDER BY a.attnum;",
            "SELECT pg_catalog.obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c WHERE c.oid = '16384'",
            "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3;",
            "SELECT pg_catalog.pg_get_viewdef('16393'::pg_catalog.oid, true);",
        ];
        for sql in queries {
            let c = classify(sql);
            assert_eq!(c.leader_reason, Some(SystemCatalog), "{sql}");
            assert_eq!(c.pin_reason, None, "{sql}");
            assert!(c.functions.is_empty(), "{sql}: {:?}", c.functions);
            assert_eq!(c.statement_count, 1, "{sql}");
            assert!(c.tables.iter().all(|t| t.starts_with("pg_catalog.")), "{sql}: {:?}", c.tables);
        }
    }

    #[test]
    fn system_catalog_reads() {
        let cases: Vec<(&str, Option<LeaderReason>)> = vec![
            ("SELECT * FROM pg_class", Some(SystemCatalog)),
            ("SELECT count(*) FROM pg_catalog.pg_stat_activity", Some(SystemCatalog)),
            ("SELECT relname FROM pg_stat_user_tables", Some(SystemCatalog)),
            ("SELECT 't'::regclass", Some(SystemCatalog)),
            ("SELECT CAST('t' AS pg_catalog.regclass)::oid", Some(SystemCatalog)),
            ("SELECT 'int4'::regtype::text", Some(SystemCatalog)),
            ("SELECT * FROM information_schema.columns", None),
            ("SELECT * FROM app.pg_things", None),
            ("SELECT '1'::int8", None),
            // A write's own reason is the telling one.
            ("INSERT INTO t SELECT oid FROM pg_class", Some(Write)),
            ("SELECT * FROM pg_class; DELETE FROM t", Some(Write)),
            ("BEGIN; SELECT * FROM pg_class", Some(Transaction)),
        ];
        for (sql, want) in cases {
            assert_eq!(classify(sql).leader_reason, want, "{sql}");
        }
    }

    #[test]
    fn current_setting_and_select_one() {
        let want = Classification { statement_count: 1, ops: vec![StmtOp::Read], ..Default::default() };
        assert_eq!(classify("SELECT current_setting('port')"), want);
        assert_eq!(classify("SELECT 1"), want);
        assert_eq!(classify("select 1;"), want);
    }
}
