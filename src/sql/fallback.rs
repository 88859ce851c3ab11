//! Statements sqlparser cannot parse: first retried after small token rewrites
//! for its known gaps, then classified by their leading keywords, so that
//! PostgreSQL commands it does not know (REFRESH MATERIALIZED VIEW, CLUSTER,
//! DO, SET SCHEMA ...) still get their proper class. What is not recognised is
//! `Unparsed`: the leader decides what it means.

use sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};

use super::collect::Collector;
use super::{LeaderReason, PinReason, Shape, settings};

/// Rewrites that make sqlparser accept a statement with the same routing meaning:
/// `FOR NO KEY UPDATE` → `FOR UPDATE`, `FOR KEY SHARE` → `FOR SHARE` (both are
/// locking reads) and a leading `TABLE name` → `SELECT * FROM name`.
/// `None` when nothing applies.
pub(super) fn rewrite(tokens: &[TokenWithSpan]) -> Option<Vec<TokenWithSpan>> {
    let sig: Vec<usize> = significant(tokens).collect();
    let is = |k: usize, kw: &str| sig.get(k).is_some_and(|&i| is_word(&tokens[i].token, kw));
    let mut drop = Vec::new();
    for k in 0..sig.len() {
        if is(k, "FOR") {
            if is(k + 1, "NO") && is(k + 2, "KEY") && is(k + 3, "UPDATE") {
                drop.extend([sig[k + 1], sig[k + 2]]);
            } else if is(k + 1, "KEY") && is(k + 2, "SHARE") {
                drop.push(sig[k + 1]);
            }
        }
    }
    let table_at = if is(0, "TABLE") { Some(sig[0]) } else { None };
    if drop.is_empty() && table_at.is_none() {
        return None;
    }
    let mut out = Vec::with_capacity(tokens.len() + 4);
    for (i, t) in tokens.iter().enumerate() {
        if drop.contains(&i) {
            continue;
        }
        if Some(i) == table_at {
            let space = Token::Whitespace(Whitespace::Space);
            for token in [Token::make_keyword("SELECT"), space.clone(), Token::Mul, space, Token::make_keyword("FROM")]
            {
                out.push(TokenWithSpan { token, span: t.span });
            }
        } else {
            out.push(t.clone());
        }
    }
    Some(out)
}

/// Classifies an unparsable statement by its leading keywords into `c`; returns
/// its shape (meaningful only when it is the text's only statement).
pub(super) fn classify(tokens: &[TokenWithSpan], sql: &str, c: &mut Collector<'_>) -> Shape {
    use LeaderReason::*;
    let sig: Vec<&Token> = significant(tokens).map(|i| &tokens[i].token).collect();
    let word = |k: usize| match sig.get(k) {
        Some(Token::Word(w)) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    let has = |a: &str, b: &str| sig.windows(2).any(|w| is_word(w[0], a) && is_word(w[1], b));
    let (first, second) = (word(0), word(1));
    match first.as_str() {
        "SET" | "RESET" => match settings::from_tokens(tokens, sql) {
            Some(Some(change)) => c.setting(change),
            Some(None) => {}
            None => c.lead(Unparsed),
        },
        "BEGIN" | "START" => {
            // Modes sqlparser lacks (DEFERRABLE ...); the last access mode counts.
            let read_only = sig.windows(2).rev().find_map(|w| match (is_word(w[0], "READ"), w[1]) {
                (true, t) if is_word(t, "ONLY") => Some(true),
                (true, t) if is_word(t, "WRITE") => Some(false),
                _ => None,
            });
            if read_only != Some(true) {
                c.lead(Transaction);
            }
            return Shape::Begin { read_only, plain: false };
        }
        "PREPARE" if second == "TRANSACTION" => c.lead(Utility),
        "COMMIT" | "ROLLBACK" if second == "PREPARED" => c.lead(Utility),
        "REFRESH" => c.lead(Write),
        "LISTEN" => {
            c.pin(PinReason::Listen);
            c.lead(Utility);
        }
        "DECLARE" if has("WITH", "HOLD") => {
            c.pin(PinReason::HoldCursor);
            c.lead(Utility);
        }
        "CLUSTER" | "REINDEX" | "CHECKPOINT" | "DO" | "VACUUM" | "ANALYZE" | "ANALYSE" | "LOAD" | "NOTIFY"
        | "UNLISTEN" | "LOCK" | "CALL" | "EXECUTE" => c.lead(Utility),
        "ALTER" if second == "SYSTEM" => c.lead(Utility),
        "CREATE" => {
            let mut k = 1;
            if word(k) == "OR" && word(k + 1) == "REPLACE" {
                k += 2;
            }
            if matches!(word(k).as_str(), "GLOBAL" | "LOCAL") {
                k += 1;
            }
            if matches!(word(k).as_str(), "TEMP" | "TEMPORARY") {
                c.pin(PinReason::TempTable);
            }
            c.lead(Ddl);
        }
        "ALTER" | "DROP" | "COMMENT" | "GRANT" | "REVOKE" | "SECURITY" | "REASSIGN" | "IMPORT" | "TRUNCATE" => {
            c.lead(Ddl)
        }
        // Cursor movement and session/transaction bookkeeping: harmless wherever they go.
        "MOVE" | "FETCH" | "CLOSE" | "SHOW" | "DEALLOCATE" | "SAVEPOINT" | "RELEASE" => {}
        _ => c.lead(Unparsed),
    }
    Shape::Other
}

fn significant(tokens: &[TokenWithSpan]) -> impl Iterator<Item = usize> + '_ {
    tokens.iter().enumerate().filter(|(_, t)| !matches!(t.token, Token::Whitespace(_) | Token::EOF)).map(|(i, _)| i)
}

fn is_word(t: &Token, kw: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
}

#[cfg(test)]
mod tests {
    use super::super::{LeaderReason, PinReason, Shape, classify};
    use LeaderReason::*;

    /// Statements sqlparser 0.63 rejects, and what the fallback makes of them.
    #[test]
    fn unparsable_statements_by_keyword() {
        let cases: Vec<(&str, Option<LeaderReason>, Option<PinReason>)> = vec![
            ("REFRESH MATERIALIZED VIEW mv", Some(Write), None),
            ("CLUSTER t USING i", Some(Utility), None),
            ("REINDEX INDEX CONCURRENTLY i", Some(Utility), None),
            ("CHECKPOINT", Some(Utility), None),
            ("DO LANGUAGE plpgsql $$ BEGIN NULL; END $$", Some(Utility), None),
            ("VACUUM (VERBOSE, ANALYZE) t", Some(Utility), None),
            ("PREPARE TRANSACTION 'gid'", Some(Utility), None),
            ("COMMIT PREPARED 'gid'", Some(Utility), None),
            ("ROLLBACK PREPARED 'gid'", Some(Utility), None),
            ("ALTER SYSTEM RESET ALL", Some(Utility), None),
            ("CREATE CAST (int AS text) WITH INOUT", Some(Ddl), None),
            (
                "CREATE OR REPLACE TEMP VIEW v AS SELECT 1 WITH LOCAL CHECK OPTION",
                Some(Ddl),
                Some(PinReason::TempTable),
            ),
            (
                "CREATE LOCAL TEMPORARY TABLE t (LIKE u INCLUDING ALL) WITH (fillfactor=70)",
                Some(Ddl),
                Some(PinReason::TempTable),
            ),
            ("DROP OWNED BY a CASCADE", Some(Ddl), None),
            ("SECURITY LABEL FOR selinux ON TABLE t IS 'x'", Some(Ddl), None),
            ("MOVE FORWARD 5 IN c", None, None),
            ("SET XML OPTION CONTENT", None, None),
            ("FROBNICATE everything", Some(Unparsed), None),
            ("\"SET\" x = 1", Some(Unparsed), None),
        ];
        for (sql, leader, pin) in cases {
            let c = classify(sql);
            assert_eq!((c.leader_reason, c.pin_reason), (leader, pin), "{sql}");
            assert_eq!(c.statement_count, 1, "{sql}");
        }
    }

    #[test]
    fn rewrites_keep_tables_and_functions() {
        let c = classify("SELECT f(a) FROM t JOIN u ON true FOR NO KEY UPDATE OF t SKIP LOCKED");
        assert_eq!(c.leader_reason, Some(LockingRead));
        assert_eq!(c.tables, vec!["t", "u"]);
        assert_eq!(c.functions, vec!["f"]);
        let c = classify("SELECT * FROM t FOR KEY SHARE");
        assert_eq!((c.leader_reason, c.tables), (Some(LockingRead), vec!["t".to_string()]));
        let c = classify("TABLE s.t ORDER BY 1 LIMIT 3");
        assert_eq!((c.leader_reason, c.tables), (None, vec!["s.t".to_string()]));
        // `key` as a column name is no locking clause.
        let c = classify("SELECT key FROM t");
        assert_eq!((c.leader_reason, c.tables), (None, vec!["t".to_string()]));
    }

    #[test]
    fn begin_with_modes_sqlparser_lacks() {
        let cases: &[(&str, Option<LeaderReason>, Shape)] = &[
            ("BEGIN DEFERRABLE", Some(Transaction), Shape::Begin { read_only: None, plain: false }),
            ("BEGIN READ ONLY DEFERRABLE", None, Shape::Begin { read_only: Some(true), plain: false }),
            (
                "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE, NOT DEFERRABLE",
                Some(Transaction),
                Shape::Begin { read_only: Some(false), plain: false },
            ),
            (
                "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
                None,
                Shape::Begin { read_only: Some(true), plain: false },
            ),
        ];
        for (sql, leader, shape) in cases {
            let c = classify(sql);
            assert_eq!((&c.leader_reason, c.shape), (leader, *shape), "{sql}");
        }
    }
}
