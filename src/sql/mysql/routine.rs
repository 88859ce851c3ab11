//! Pure: what the body of a MySQL trigger or stored routine, or a column's
//! DEFAULT expression, means for statement replay. A follower replays a
//! statement by running it, so the triggers of the tables it writes, the
//! functions it calls and the defaults of the columns it leaves out are
//! evaluated there again: exact when they are deterministic (NOW() and
//! RAND() are, under the timestamp and seeds chorus replays with), wrong
//! when they call UUID(), SYSDATE(), read a user variable... or insert into
//! a table whose AUTO_INCREMENT ids the follower hands out in its own
//! order (the leader's ids also went to rolled-back and concurrent
//! transactions; `SET INSERT_ID` covers only the statement's own table).
//!
//! [`judge_body`] reads one body; [`settle`] then gives every routine and
//! every table's triggers the nature of what they call and fire, to any depth.

use super::classify::nondeterminism;
use super::lex::{Token, tokens};
use super::targets::{self, Name};
use std::collections::HashMap;

/// What a body does, as far as replication cares (names resolved to
/// `db.name` keys in the body's own database).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nature {
    /// Why running it again on a follower may compute other values, or None.
    pub nondeterministic: Option<String>,
    /// It may change rows (DML, procedure calls).
    pub writes: bool,
    /// The stored routines it calls.
    pub calls: Vec<String>,
    /// The tables it writes (their triggers fire too).
    pub writes_tables: Vec<String>,
    /// Its INSERTs: the table and the columns given (None: all, by position).
    pub inserts: Vec<(String, Option<Vec<String>>)>,
}

/// Words after which a statement of a compound body begins.
const STATEMENT_START: &[&str] = &["BEGIN", "THEN", "ELSE", "DO", "LOOP", "REPEAT", "ATOMIC"];

fn word_is(t: &Token<'_>, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.eq_ignore_ascii_case(w))
}

fn at_statement_start(seg: &[Token<'_>], i: usize) -> bool {
    i == 0 || seg[i - 1] == Token::Symbol(':') || STATEMENT_START.iter().any(|w| word_is(&seg[i - 1], w))
}

/// Judge a body (trigger action, routine definition) stored in `schema`.
pub fn judge_body(body: &str, schema: &str) -> Nature {
    let toks = tokens(body, true);
    let key = |n: &Name| n.key(Some(schema));
    let mut nature = Nature::default();
    for seg in toks.split(|t| matches!(t, Token::End(_))) {
        if nature.nondeterministic.is_none() {
            nature.nondeterministic = nondeterminism(seg, false, false);
        }
        for (i, t) in seg.iter().enumerate() {
            if !at_statement_start(seg, i) {
                continue;
            }
            let verb = [
                "INSERT", "REPLACE", "UPDATE", "DELETE", "CALL", "PREPARE", "EXECUTE", "COMMIT", "ROLLBACK", "START",
                "SET", "LOCK", "UNLOCK", "CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE", "XA",
            ]
            .into_iter()
            .find(|w| word_is(t, w) && seg.get(i + 1) != Some(&Token::Symbol('(')));
            let next = seg.get(i + 1);
            let ends_transaction = match verb {
                Some(
                    "COMMIT" | "ROLLBACK" | "LOCK" | "UNLOCK" | "CREATE" | "ALTER" | "DROP" | "RENAME" | "TRUNCATE"
                    | "XA",
                ) => true,
                Some("START") => next.is_some_and(|n| word_is(n, "TRANSACTION")),
                Some("SET") => next.is_some_and(|n| word_is(n, "autocommit") || word_is(n, "@@autocommit")),
                _ => false,
            } || word_is(t, "BEGIN") && next.is_some_and(|n| word_is(n, "WORK"));
            if ends_transaction {
                // A procedure's COMMIT (or statement that commits implicitly)
                // would commit chorus's transaction before its log entry.
                nature.nondeterministic.get_or_insert_with(|| {
                    "controls the transaction (COMMIT, ROLLBACK, LOCK TABLES or DDL inside), which chorus cannot \
                     log as one entry"
                        .into()
                });
                continue;
            }
            match verb {
                Some("PREPARE" | "EXECUTE") => {
                    nature.nondeterministic.get_or_insert_with(|| {
                        "runs dynamic SQL (PREPARE / EXECUTE), which chorus cannot inspect".into()
                    });
                    nature.writes = true;
                }
                Some("INSERT" | "REPLACE" | "UPDATE" | "DELETE" | "CALL") => {
                    nature.writes = true;
                    let rest = &seg[i..];
                    nature.writes_tables.extend(targets::written_tables(rest).iter().filter_map(key));
                    if let Some(shape) = targets::insert_shape(rest)
                        && let Some(table) = key(&shape.table)
                    {
                        nature.inserts.push((table, shape.columns));
                    }
                }
                _ => {}
            }
        }
    }
    let session_value = toks.windows(2).find_map(|w| match w {
        [Token::Word(f), Token::Symbol('(')] if f.eq_ignore_ascii_case("LAST_INSERT_ID") => Some(f),
        _ => None,
    });
    if let Some(f) = session_value {
        nature.nondeterministic.get_or_insert_with(|| {
            format!("reads {f}(), the session's own value (another on the follower's connection)")
        });
    }
    nature.calls = targets::calls(&toks).iter().filter_map(key).collect();
    nature
}

/// Judge a column's DEFAULT expression (as information_schema prints it)
/// of a table in `schema`: what it calls, whether it differs per server.
pub fn judge_default(expr: &str, schema: &str) -> Nature {
    let toks = tokens(expr, true);
    Nature {
        nondeterministic: nondeterminism(&toks, false, false),
        calls: targets::calls(&toks).iter().filter_map(|n| n.key(Some(schema))).collect(),
        ..Nature::default()
    }
}

/// Fold into each routine (by `db.name`) and each table's triggers (by
/// `db.table`) the natures of what they call and fire, directly or not,
/// and judge their INSERTs against the tables' AUTO_INCREMENT columns
/// (`auto_increment`: `db.table` -> column).
pub fn settle(
    routines: &mut HashMap<String, Nature>,
    triggers: &mut HashMap<String, Nature>,
    auto_increment: &HashMap<String, String>,
) {
    for nature in routines.values_mut().chain(triggers.values_mut()) {
        if nature.nondeterministic.is_some() {
            continue;
        }
        let generated = nature.inserts.iter().find_map(|(table, cols)| {
            let col = auto_increment.get(table)?;
            cols.as_ref().is_none_or(|c| !c.contains(col)).then(|| (table.clone(), col.clone()))
        });
        if let Some((table, col)) = generated {
            nature.nondeterministic = Some(format!(
                "inserts into {table}, whose AUTO_INCREMENT ids a follower would hand out in its own order \
                 (on the leader, rolled-back and concurrent transactions took ids too); give {col} a value \
                 the row determines (e.g. NEW.id), or drop AUTO_INCREMENT there"
            ));
        }
    }
    // To a fixed point: a node takes the first nondeterminism and any write
    // of what it reaches in one step, until nothing changes.
    loop {
        let mut changed = false;
        let snapshot: Vec<(String, Option<String>, bool)> = routines
            .iter()
            .map(|(k, n)| (format!("r:{k}"), n.nondeterministic.clone(), n.writes))
            .chain(triggers.iter().map(|(k, n)| (format!("t:{k}"), n.nondeterministic.clone(), n.writes)))
            .collect();
        let facts: HashMap<&str, (&Option<String>, bool)> =
            snapshot.iter().map(|(k, n, w)| (k.as_str(), (n, *w))).collect();
        for nature in routines.values_mut().chain(triggers.values_mut()) {
            let reached = nature
                .calls
                .iter()
                .map(|c| (format!("r:{c}"), format!("calls {c}()")))
                .chain(nature.writes_tables.iter().map(|t| (format!("t:{t}"), format!("writes {t}"))));
            for (node, via) in reached {
                let Some((why, writes)) = facts.get(node.as_str()) else { continue };
                if *writes && !nature.writes {
                    nature.writes = true;
                    changed = true;
                }
                if let (None, Some(why)) = (&nature.nondeterministic, why) {
                    nature.nondeterministic = Some(format!("{via}: {why}"));
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_say_what_they_call_write_and_compute() {
        let n = judge_body(
            "BEGIN IF NEW.a > 0 THEN INSERT INTO audit (tid, at) VALUES (NEW.id, NOW()); END IF; \
             UPDATE other.c SET n = n + 1 WHERE id = NEW.id; SET NEW.b = f(NEW.a); CALL p(1); END",
            "shop",
        );
        assert_eq!(n.nondeterministic, None);
        assert!(n.writes);
        assert_eq!(n.inserts, [("shop.audit".to_string(), Some(vec!["tid".to_string(), "at".to_string()]))]);
        assert_eq!(n.writes_tables, ["shop.audit", "other.c"]);
        assert!(n.calls.contains(&"shop.f".to_string()) && n.calls.contains(&"shop.p".to_string()));

        let n = judge_body("SET NEW.u = UUID()", "shop");
        assert!(n.nondeterministic.unwrap().contains("UUID()"));
        assert!(!n.writes);
        assert!(judge_body("RETURN SYSDATE()", "s").nondeterministic.unwrap().contains("SYSDATE()"));
        assert!(judge_body("SET NEW.x = @flag", "s").nondeterministic.unwrap().contains("@flag"));
        assert!(judge_body("BEGIN PREPARE s FROM 'DELETE FROM t'; EXECUTE s; END", "s").nondeterministic.is_some());
        // NOW() and RAND() replay with the leader's timestamp and seeds.
        assert_eq!(judge_body("SET NEW.at = NOW(), NEW.r = RAND()", "s").nondeterministic, None);
        // A procedure that ends the transaction chorus logs it in.
        for body in [
            "BEGIN START TRANSACTION; UPDATE t SET a = 1; COMMIT; END",
            "BEGIN UPDATE t SET a = 1; ROLLBACK; END",
            "BEGIN CREATE TABLE x (a INT); END",
            "BEGIN SET autocommit = 1; END",
        ] {
            assert!(judge_body(body, "s").nondeterministic.unwrap().contains("transaction"), "{body}");
        }
        assert!(judge_body("BEGIN INSERT INTO t VALUES (LAST_INSERT_ID()); END", "s").nondeterministic.is_some());
        assert_eq!(judge_body("BEGIN DECLARE x INT; SET x = 1; UPDATE t SET a = x; END", "s").nondeterministic, None);
        // REPLACE( is the string function; ON DUPLICATE KEY UPDATE is no statement of its own.
        assert!(!judge_body("SET NEW.a = REPLACE(NEW.a, 'x', 'y')", "s").writes);
        assert!(judge_default("uuid()", "s").nondeterministic.is_some());
        assert_eq!(judge_default("current_timestamp(6)", "s").nondeterministic, None);
        assert_eq!(judge_default("'uuid()'", "s").nondeterministic, None);
    }

    #[test]
    fn natures_spread_through_calls_triggers_and_generated_ids() {
        let mut routines = HashMap::from([
            ("s.stamp".to_string(), judge_body("RETURN UUID()", "s")),
            ("s.wrap".to_string(), judge_body("RETURN CONCAT('x', stamp())", "s")),
            ("s.log".to_string(), judge_body("INSERT INTO audit (msg) VALUES ('hi')", "s")),
            ("s.pure".to_string(), judge_body("RETURN x * 2", "s")),
        ]);
        let mut triggers = HashMap::from([
            ("s.t".to_string(), judge_body("INSERT INTO u (id, v) VALUES (NEW.id, pure(NEW.v))", "s")),
            ("s.u".to_string(), judge_body("SET NEW.w = wrap()", "s")),
            ("s.plain".to_string(), judge_body("SET NEW.w = pure(1)", "s")),
        ]);
        let auto = HashMap::from([("s.audit".to_string(), "id".to_string())]);
        settle(&mut routines, &mut triggers, &auto);
        assert!(routines["s.wrap"].nondeterministic.as_deref().unwrap().starts_with("calls s.stamp(): UUID()"));
        assert!(routines["s.log"].nondeterministic.as_deref().unwrap().contains("AUTO_INCREMENT"));
        assert!(routines["s.log"].writes);
        assert_eq!(routines["s.pure"].nondeterministic, None);
        // t writes u, whose trigger calls wrap(), which calls stamp().
        let t = triggers["s.t"].nondeterministic.as_deref().unwrap();
        assert!(t.starts_with("writes s.u: calls s.wrap(): calls s.stamp(): UUID()"), "{t}");
        assert_eq!(triggers["s.plain"].nondeterministic, None);
    }
}
