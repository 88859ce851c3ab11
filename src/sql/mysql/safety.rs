//! Pure: what the leader's catalog (triggers, stored functions, column
//! defaults, views; see `catalog::mysql`) says about replaying one
//! statement. The classifier judges a statement's own text; this judges
//! what runs with it that the text does not show:
//!
//! - a write whose table has a trigger, or that calls a stored function,
//!   that would compute other values on a follower is refused;
//! - an INSERT that leaves a column to a DEFAULT that differs per server
//!   (`DEFAULT (UUID())`), or sets it to DEFAULT, is refused;
//! - a read (`SELECT f()`) that calls a function that writes is a write:
//!   it runs on the leader and is logged, so the followers run it too.

use super::MyClass;
use super::lex::Token;
use super::routine::Nature;
use super::targets::{self, Name};
use std::collections::HashMap;

/// One server's catalog, as far as replay cares (keys `db.name`, folded).
#[derive(Debug, Default)]
pub struct Facts {
    /// Stored functions and procedures, settled (`routine::settle`).
    pub routines: HashMap<String, Nature>,
    /// Per table, what its triggers do together, settled; the reason names the trigger.
    pub triggers: HashMap<String, Nature>,
    /// Per table, the columns whose DEFAULT differs per server.
    pub volatile_defaults: HashMap<String, Vec<VolatileDefault>>,
    /// Per view, the tables (and views) it reads: a write through it writes them.
    pub views: HashMap<String, Vec<String>>,
    /// Per table, its AUTO_INCREMENT column (folded).
    pub auto_increment: HashMap<String, String>,
    /// The leader runs `innodb_autoinc_lock_mode = 2`: the ids of a bulk
    /// insert (`INSERT ... SELECT`, `LOAD DATA`) interleave with other
    /// sessions' and need not be consecutive, which `SET INSERT_ID` (one
    /// first id) cannot reproduce on a follower.
    pub interleaved_ids: bool,
    /// Per table, its primary key's columns in order (as the server spells
    /// them): the total order chorus gives an unordered `LIMIT` (`order`).
    pub primary_keys: HashMap<String, Vec<String>>,
}

impl Facts {
    /// Nothing here could change a verdict.
    pub fn is_empty(&self) -> bool {
        self.routines.is_empty()
            && self.triggers.is_empty()
            && self.volatile_defaults.is_empty()
            && (!self.interleaved_ids || self.auto_increment.is_empty())
    }

    /// Do any of these names (ignoring their databases) name a stored routine?
    pub fn may_call_routine(&self, calls: &[Name]) -> bool {
        !calls.is_empty()
            && self.routines.keys().any(|k| calls.iter().any(|c| k.rsplit('.').next() == Some(c.name.as_str())))
    }

    /// `table` and, when it is a view, the tables below it.
    fn bases(&self, table: String) -> Vec<String> {
        let mut out = vec![];
        let mut todo = vec![table];
        while let Some(t) = todo.pop() {
            if out.contains(&t) || out.len() > 64 {
                continue;
            }
            if let Some(below) = self.views.get(&t) {
                todo.extend(below.iter().cloned());
            }
            out.push(t);
        }
        out
    }
}

/// A column whose DEFAULT a follower would compute anew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolatileDefault {
    /// Folded.
    pub column: String,
    /// As information_schema prints it (`uuid()`).
    pub expression: String,
    /// Why it differs per server.
    pub why: String,
}

/// What to do with a statement, beyond its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// As classified.
    Fine,
    /// Refused, saying why and what to do.
    Refuse(String),
    /// A read that writes through a function: run on the leader and logged
    /// (answered with rows, like a write with RETURNING).
    LoggedRead,
}

/// The trigger events a write fires (as information_schema names them,
/// folded): REPLACE deletes and inserts, ON DUPLICATE KEY UPDATE updates.
fn events(toks: &[Token<'_>]) -> Vec<&'static str> {
    let word = |t: Option<&Token<'_>>, w: &str| matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
    if word(toks.first(), "LOAD") {
        // LOAD DATA ... REPLACE INTO TABLE replaces duplicates as REPLACE does.
        let into = toks.iter().position(|t| word(Some(t), "INTO")).unwrap_or(0);
        let replace = toks[..into].iter().any(|t| word(Some(t), "REPLACE"));
        return if replace { vec!["insert", "delete"] } else { vec!["insert"] };
    }
    let verb = toks
        .iter()
        .find_map(|t| match t {
            Token::Word(w) if ["INSERT", "REPLACE", "UPDATE", "DELETE"].iter().any(|v| w.eq_ignore_ascii_case(v)) => {
                Some(w.to_ascii_uppercase())
            }
            _ => None,
        })
        .unwrap_or_default();
    match verb.as_str() {
        "INSERT" if toks.windows(2).any(|w| word(w.first(), "DUPLICATE") && word(w.get(1), "KEY")) => {
            vec!["insert", "update"]
        }
        "INSERT" => vec!["insert"],
        "REPLACE" => vec!["insert", "delete"],
        "UPDATE" => vec!["update"],
        "DELETE" => vec!["delete"],
        _ => vec!["insert", "update", "delete"],
    }
}

/// A "bulk insert" in InnoDB's sense: one whose number of rows is not
/// known before it runs (`INSERT`/`REPLACE ... SELECT` or `TABLE`, `LOAD
/// DATA`), not a `VALUES` list or `SET`.
fn bulk_insert(toks: &[Token<'_>]) -> bool {
    let word = |t: &Token<'_>, w: &str| matches!(t, Token::Word(x) if x.eq_ignore_ascii_case(w));
    let Some(first) = toks.first() else { return false };
    if word(first, "LOAD") {
        return true;
    }
    if !word(first, "INSERT") && !word(first, "REPLACE") {
        return false;
    }
    // A VALUES list or SET comes before any ON at depth 0 (`ON DUPLICATE
    // KEY UPDATE c = VALUES(c)` follows either form; a SELECT's join's ON
    // follows its SELECT).
    let mut depth = 0i32;
    for t in toks {
        match t {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => depth -= 1,
            _ if depth == 0 && word(t, "ON") => return true,
            _ if depth == 0 && ["VALUES", "VALUE", "SET"].iter().any(|w| word(t, w)) => return false,
            _ => {}
        }
    }
    true
}

/// Does a write fire triggers that change other rows? Then it must be
/// logged even when it changed no row of its own (an UPDATE that matched
/// rows but left them as they were, an INSERT IGNORE that skipped one): the
/// triggers ran on the leader all the same.
pub fn fires_writing_triggers(facts: &Facts, toks: &[Token<'_>], db: Option<&str>) -> bool {
    if facts.triggers.is_empty() {
        return false;
    }
    let events = events(toks);
    targets::written_tables(toks)
        .iter()
        .filter_map(|t| t.key(db))
        .flat_map(|t| facts.bases(t))
        .any(|table| events.iter().any(|e| facts.triggers.get(&format!("{table}/{e}")).is_some_and(|n| n.writes)))
}

/// Judge `toks` (one statement of class `class`, run with default
/// database `db`) by `facts`.
pub fn judge(facts: &Facts, toks: &[Token<'_>], class: &MyClass, db: Option<&str>) -> Verdict {
    if facts.is_empty() {
        return Verdict::Fine;
    }
    let routines = || {
        targets::calls(toks)
            .into_iter()
            .filter_map(|c| c.key(db))
            .filter_map(|k| facts.routines.get(&k).map(|n| (k, n)))
            .collect::<Vec<_>>()
    };
    match class {
        MyClass::Write { .. } => {
            for (key, n) in routines() {
                if let Some(why) = &n.nondeterministic {
                    return Verdict::Refuse(format!(
                        "the stored routine {key}() runs again on every follower, where it would compute other \
                         values ({why}); make it deterministic (NOW() and RAND() are fine: chorus replays the \
                         leader's clock and seeds) or pass its value as a literal"
                    ));
                }
            }
            let events = events(toks);
            let written: Vec<String> =
                targets::written_tables(toks).iter().filter_map(|t| t.key(db)).flat_map(|t| facts.bases(t)).collect();
            for table in &written {
                let fired = events.iter().filter_map(|e| facts.triggers.get(&format!("{table}/{e}")));
                if let Some(why) = fired.filter_map(|n| n.nondeterministic.as_ref()).next() {
                    return Verdict::Refuse(format!(
                        "a trigger on {table} runs again on every follower, where it would compute other values \
                         ({why}); make it deterministic (NOW() and RAND() are fine: chorus replays the leader's \
                         clock and seeds), or compute the value in the statement"
                    ));
                }
            }
            let explicit_default =
                toks.iter().any(|t| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case("DEFAULT")));
            let given = targets::insert_shape(toks).map(|s| s.columns);
            for table in &written {
                for VolatileDefault { column, why, .. } in facts.volatile_defaults.get(table).into_iter().flatten() {
                    let omitted = matches!(&given, Some(Some(cols)) if !cols.contains(column));
                    if omitted || explicit_default {
                        return Verdict::Refuse(format!(
                            "column {column} of {table} takes its DEFAULT here, which a follower computes anew: \
                             {why}; give {column} a value in the statement"
                        ));
                    }
                }
            }
            if facts.interleaved_ids && bulk_insert(toks) {
                for table in &written {
                    let Some(column) = facts.auto_increment.get(table) else { continue };
                    if !matches!(&given, Some(Some(cols)) if cols.contains(column)) {
                        return Verdict::Refuse(format!(
                            "the leader runs innodb_autoinc_lock_mode = 2, which may give the rows of an \
                             INSERT ... SELECT or LOAD DATA AUTO_INCREMENT ids interleaved with other sessions' \
                             (not consecutive), and a follower would number them consecutively; list the columns \
                             and give {table}.{column} its values, or run the leader with \
                             innodb_autoinc_lock_mode = 1 (MariaDB's default)"
                        ));
                    }
                }
            }
            Verdict::Fine
        }
        MyClass::Read | MyClass::Local | MyClass::Session => {
            let writing: Vec<_> = routines().into_iter().filter(|(_, n)| n.writes).collect();
            let Some((key, _)) = writing.first() else { return Verdict::Fine };
            if let Some((key, why)) = writing.iter().find_map(|(k, n)| n.nondeterministic.as_ref().map(|w| (k, w))) {
                return Verdict::Refuse(format!(
                    "the stored function {key}() changes data, and the followers cannot run it again: it would \
                     compute other values ({why})"
                ));
            }
            let select = matches!(toks.first(), Some(Token::Symbol('(')))
                || ["SELECT", "WITH", "VALUES", "TABLE"]
                    .iter()
                    .any(|w| matches!(toks.first(), Some(Token::Word(x)) if x.eq_ignore_ascii_case(w)));
            if *class == MyClass::Read && select {
                Verdict::LoggedRead
            } else {
                Verdict::Refuse(format!(
                    "the stored function {key}() changes data, which chorus replicates only from a SELECT (or \
                     INSERT / UPDATE / DELETE) that calls it; call it as SELECT {key}(...)"
                ))
            }
        }
        _ => Verdict::Fine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::mysql::lex::tokens;
    use crate::sql::mysql::routine::{judge_body, judge_default, settle};

    #[test]
    fn bulk_inserts_into_auto_increment_tables_are_refused_when_ids_interleave() {
        let mut f = Facts {
            auto_increment: HashMap::from([("s.t".to_string(), "id".to_string())]),
            interleaved_ids: true,
            ..Facts::default()
        };
        let verdict = |f: &Facts, sql: &str| {
            let toks = tokens(sql, true);
            judge(f, &toks, &crate::sql::mysql::classify(&toks), Some("s"))
        };
        for bulk in [
            "INSERT INTO t (v) SELECT v FROM u",
            "INSERT INTO t SELECT * FROM u",
            "INSERT INTO t (v) SELECT v FROM u ON DUPLICATE KEY UPDATE v = VALUES(v)",
            "REPLACE INTO s.t (v) TABLE u",
            "INSERT INTO t (v) SELECT u.v FROM u JOIN w ON u.id = w.id",
            "LOAD DATA LOCAL INFILE 'f' INTO TABLE t (v)",
            "LOAD DATA LOCAL INFILE 'f' INTO TABLE t",
        ] {
            assert!(
                matches!(verdict(&f, bulk), Verdict::Refuse(w) if w.contains("innodb_autoinc_lock_mode")),
                "{bulk}"
            );
        }
        for fine in [
            "INSERT INTO t (v) VALUES (1), (2)",
            "INSERT INTO t SET v = 1",
            "INSERT INTO t (v) VALUES (1) ON DUPLICATE KEY UPDATE v = VALUES(v)",
            "INSERT INTO t (id, v) SELECT id, v FROM u",
            "LOAD DATA LOCAL INFILE 'f' INTO TABLE t FIELDS TERMINATED BY ',' (id, @v) SET v = @v",
            "INSERT INTO other (v) SELECT v FROM t",
        ] {
            assert_eq!(verdict(&f, fine), Verdict::Fine, "{fine}");
        }
        f.interleaved_ids = false;
        assert_eq!(verdict(&f, "INSERT INTO t (v) SELECT v FROM u"), Verdict::Fine);
    }

    fn facts() -> Facts {
        let mut routines = HashMap::from([
            ("s.stamp".to_string(), judge_body("RETURN SYSDATE()", "s")),
            ("s.bump".to_string(), judge_body("BEGIN UPDATE counter SET n = n + 1; RETURN 1; END", "s")),
            ("s.twice".to_string(), judge_body("RETURN x * 2", "s")),
        ]);
        let mut triggers = HashMap::from([
            ("s.orders/insert".to_string(), judge_body("SET NEW.token = UUID()", "s")),
            ("s.orders/update".to_string(), judge_body("SET NEW.token = UUID()", "s")),
            ("s.items/insert".to_string(), judge_body("SET NEW.at = NOW()", "s")),
            ("s.items/delete".to_string(), judge_body("SET @gone = UUID()", "s")),
            ("s.counted/update".to_string(), judge_body("UPDATE counter SET n = n + 1", "s")),
        ]);
        settle(&mut routines, &mut triggers, &HashMap::new());
        let why = judge_default("uuid()", "s").nondeterministic.unwrap();
        Facts {
            routines,
            triggers,
            volatile_defaults: HashMap::from([(
                "s.docs".to_string(),
                vec![VolatileDefault { column: "u".into(), expression: "uuid()".into(), why }],
            )]),
            views: HashMap::from([("s.recent_orders".to_string(), vec!["s.orders".to_string()])]),
            ..Facts::default()
        }
    }

    fn verdict(sql: &str) -> Verdict {
        let toks = tokens(sql, true);
        judge(&facts(), &toks, &crate::sql::mysql::classify(&toks), Some("s"))
    }

    fn refused(sql: &str, says: &str) {
        match verdict(sql) {
            Verdict::Refuse(why) => assert!(why.contains(says), "{sql}: {why}"),
            v => panic!("{sql}: {v:?}"),
        }
    }

    #[test]
    fn writes_are_judged_by_what_runs_with_them() {
        refused("INSERT INTO orders (id) VALUES (1)", "a trigger on s.orders");
        refused("UPDATE s.recent_orders SET id = 2", "a trigger on s.orders");
        refused("UPDATE t SET at = stamp()", "s.stamp()");
        refused("INSERT INTO docs (id) VALUES (1)", "column u of s.docs");
        refused("INSERT INTO docs VALUES (1, DEFAULT)", "column u of s.docs");
        refused("LOAD DATA LOCAL INFILE 'f' INTO TABLE orders", "a trigger on s.orders");
        refused("LOAD DATA LOCAL INFILE 'f' INTO TABLE docs (id, @x) SET v = @x", "column u of s.docs");
        assert_eq!(verdict("LOAD DATA LOCAL INFILE 'f' INTO TABLE docs (id, @x) SET u = @x"), Verdict::Fine);
        refused("INSERT INTO docs () VALUES ()", "column u of s.docs");
        assert_eq!(verdict("INSERT INTO docs (id, u) VALUES (1, 'x')"), Verdict::Fine);
        assert_eq!(verdict("INSERT INTO docs VALUES (1, 'x')"), Verdict::Fine);
        assert_eq!(verdict("INSERT INTO items (id) VALUES (1)"), Verdict::Fine);
        // Only the triggers of the events a statement fires count.
        refused("DELETE FROM items WHERE id = 1", "a trigger on s.items");
        refused("REPLACE INTO items (id) VALUES (1)", "a trigger on s.items");
        assert_eq!(verdict("UPDATE items SET v = 1"), Verdict::Fine);
        let f = facts();
        let fires = |sql: &str| fires_writing_triggers(&f, &tokens(sql, true), Some("s"));
        assert!(
            fires("UPDATE s.counted SET v = v") && !fires("DELETE FROM counted") && !fires("UPDATE items SET v = 1")
        );
        assert_eq!(verdict("INSERT INTO other.orders (id) VALUES (1)"), Verdict::Fine);
        assert_eq!(verdict("UPDATE t SET v = twice(v)"), Verdict::Fine);
        // Reading the table is not writing it.
        assert_eq!(verdict("INSERT INTO items SELECT * FROM orders"), Verdict::Fine);
    }

    /// Hostile text: random sequences of the words and symbols the
    /// judgement looks at never panic any of it (seeded, so a failure replays).
    #[test]
    fn any_token_soup_is_judged_without_panicking() {
        const PIECES: &[&str] = &[
            "INSERT",
            "REPLACE",
            "UPDATE",
            "DELETE",
            "INTO",
            "FROM",
            "JOIN",
            "USING",
            "SET",
            "VALUES",
            "VALUE",
            "SELECT",
            "CALL",
            "DEFAULT",
            "ON",
            "DUPLICATE",
            "KEY",
            "WHERE",
            "PARTITION",
            "docs",
            "orders",
            "s",
            "`",
            "`docs`",
            "``",
            "'",
            "')'",
            "(",
            ")",
            ",",
            ".",
            "=",
            ";",
            "?",
            "@x",
            "UUID()",
            "bump",
            "RETURNING",
            "/*",
            "*/",
            "--",
            "#",
            "\n",
        ];
        let facts = facts();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = (state % 12) as usize;
            let sql: Vec<&str> = (0..n).map(|k| PIECES[((state >> (k * 5)) as usize + k * 7) % PIECES.len()]).collect();
            let sql = sql.join(if state & 1 == 0 { " " } else { "" });
            let toks = tokens(&sql, true);
            let class = crate::sql::mysql::classify(&toks);
            let _ = judge(&facts, &toks, &class, Some("s"));
            let _ = judge(&facts, &toks, &MyClass::Write { uses_last_insert_id: false, returning: false }, None);
            let _ = fires_writing_triggers(&facts, &toks, Some("s"));
            let _ = crate::sql::mysql::defaults::fill_generated_defaults(&facts, &sql, &toks, Some("s"));
            let _ = crate::sql::mysql::routine::judge_body(&sql, "s");
        }
    }

    #[test]
    fn reads_that_write_through_a_function_are_logged() {
        assert_eq!(verdict("SELECT bump()"), Verdict::LoggedRead);
        assert_eq!(verdict("SELECT s.bump() FROM dual"), Verdict::LoggedRead);
        assert_eq!(verdict("SELECT twice(2), stamp()"), Verdict::Fine);
        refused("DO bump()", "call it as SELECT");
        refused("SET @x = bump()", "call it as SELECT");
    }
}
