//! Temporary tables: they live in one session on the leader, so chorus runs
//! what touches only them there and logs none of it (the followers never
//! see them), like the PostgreSQL side. A statement that writes a regular
//! table from a temporary one, or both, cannot be replayed (MySQL has no
//! row capture here) and is refused. Pure: which statements create, drop
//! or touch temporary tables, judged against the session's set of them.

use super::MyClass;
use super::lex::Token;
use super::targets::{self, Name};
use std::collections::HashSet;

/// What a statement does to the session's temporary tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `CREATE [OR REPLACE] TEMPORARY TABLE [IF NOT EXISTS] t ...`.
    Create(Name),
    /// `DROP [TEMPORARY] TABLE [IF EXISTS] a, b ...` of temporary tables.
    Drop(Vec<Name>),
}

/// How chorus treats a statement, given the session's temporary tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not about temporary tables: as classified.
    Regular,
    /// Touches only temporary tables: run on the leader, not logged; once
    /// it succeeded, the change (if any) applies to the session's set.
    LeaderOnly(Option<Change>),
    Refuse(String),
}

fn is_word(t: Option<&Token<'_>>, w: &str) -> bool {
    matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w))
}

/// `db.table`, folded, as the session's set holds it.
fn key(name: &Name, db: Option<&str>) -> Option<String> {
    name.key(db)
}

/// `CREATE [OR REPLACE] TEMPORARY TABLE [IF NOT EXISTS] name`: the name.
fn created(toks: &[Token<'_>]) -> Option<Name> {
    let mut i = 1;
    if is_word(toks.get(i), "OR") && is_word(toks.get(i + 1), "REPLACE") {
        i += 2;
    }
    if !is_word(toks.first(), "CREATE") || !is_word(toks.get(i), "TEMPORARY") || !is_word(toks.get(i + 1), "TABLE") {
        return None;
    }
    i += 2;
    if is_word(toks.get(i), "IF") && is_word(toks.get(i + 1), "NOT") && is_word(toks.get(i + 2), "EXISTS") {
        i += 3;
    }
    targets::name_at(toks, i).map(|(n, _)| n)
}

/// `DROP [TEMPORARY] TABLE[S] [IF EXISTS] a, b ... [RESTRICT | CASCADE]`:
/// whether TEMPORARY was said, and the names.
fn dropped(toks: &[Token<'_>]) -> Option<(bool, Vec<Name>)> {
    if !is_word(toks.first(), "DROP") {
        return None;
    }
    let temporary = is_word(toks.get(1), "TEMPORARY");
    let mut i = 1 + usize::from(temporary);
    if !is_word(toks.get(i), "TABLE") && !is_word(toks.get(i), "TABLES") {
        return None;
    }
    i += 1;
    if is_word(toks.get(i), "IF") && is_word(toks.get(i + 1), "EXISTS") {
        i += 2;
    }
    let mut names = Vec::new();
    while let Some((name, next)) = targets::name_at(toks, i) {
        names.push(name);
        if toks.get(next) != Some(&Token::Symbol(',')) {
            break;
        }
        i = next + 1;
    }
    Some((temporary, names))
}

/// The table a DDL statement changes, when it names one table:
/// `ALTER [ONLINE | IGNORE] TABLE t`, `TRUNCATE [TABLE] t`, `CREATE [UNIQUE |
/// FULLTEXT | SPATIAL] INDEX i ON t`, `DROP INDEX i ON t`.
fn ddl_target(toks: &[Token<'_>]) -> Option<Name> {
    let at = |i: usize| targets::name_at(toks, i).map(|(n, _)| n);
    if is_word(toks.first(), "TRUNCATE") {
        return at(if is_word(toks.get(1), "TABLE") { 2 } else { 1 });
    }
    if is_word(toks.first(), "ALTER") {
        let t = toks.iter().take(4).position(|t| is_word(Some(t), "TABLE"))?;
        return at(t + 1);
    }
    let index = toks.iter().take(4).position(|t| is_word(Some(t), "INDEX"))?;
    if is_word(toks.first(), "CREATE") || is_word(toks.first(), "DROP") {
        let on = toks.iter().skip(index).position(|t| is_word(Some(t), "ON"))? + index;
        return at(on + 1);
    }
    None
}

/// Does the statement name one of the temporary tables anywhere (as any
/// identifier: chorus does not tell table names from column names here)?
pub fn mentions(toks: &[Token<'_>], temps: &HashSet<String>) -> Option<String> {
    toks.iter().find_map(|t| {
        let id = targets::ident(Some(t))?;
        temps.iter().find(|k| k.rsplit('.').next() == Some(id.as_str())).cloned()
    })
}

/// What `toks` does to the session's temporary tables, if it is a CREATE
/// TEMPORARY TABLE or a DROP [TEMPORARY] TABLE (a DROP TABLE of regular
/// tables removes nothing from the set: their names are not in it).
pub fn change(toks: &[Token<'_>]) -> Option<Change> {
    if let Some(name) = created(toks) {
        return Some(Change::Create(name));
    }
    dropped(toks).map(|(_, names)| Change::Drop(names))
}

/// Judge `toks` (of class `class`, default database `db`) against the
/// session's temporary tables `temps` (`db.table` keys).
pub fn judge(toks: &[Token<'_>], class: &MyClass, temps: &HashSet<String>, db: Option<&str>) -> Verdict {
    if let Some(name) = created(toks) {
        return Verdict::LeaderOnly(Some(Change::Create(name)));
    }
    if let Some((temporary, names)) = dropped(toks) {
        let temp = |n: &Name| key(n, db).is_some_and(|k| temps.contains(&k));
        if temporary || (!names.is_empty() && names.iter().all(temp)) {
            return Verdict::LeaderOnly(Some(Change::Drop(names)));
        }
        if names.iter().any(temp) {
            return Verdict::Refuse(
                "this DROP TABLE names temporary and regular tables; drop the temporary ones with DROP TEMPORARY \
                 TABLE, in a statement of their own"
                    .into(),
            );
        }
        return Verdict::Regular;
    }
    if temps.is_empty() {
        return Verdict::Regular;
    }
    let is_temp = |n: &Name| key(n, db).is_some_and(|k| temps.contains(&k));
    // A write refused for what it computes (RAND(), UUID(), LIMIT...) is
    // fine when no follower runs it.
    let dml = ["INSERT", "REPLACE", "UPDATE", "DELETE", "LOAD"].iter().any(|v| is_word(toks.first(), v));
    match class {
        MyClass::Write { .. } | MyClass::Refuse(_) if dml => {
            let written = targets::written_tables(toks);
            let temp_written = written.iter().filter(|n| is_temp(n)).count();
            if temp_written > 0 && temp_written == written.len() {
                Verdict::LeaderOnly(None)
            } else if temp_written > 0 {
                Verdict::Refuse(
                    "this statement writes temporary and regular tables; the followers have no temporary \
                     tables: write them in statements of their own"
                        .into(),
                )
            } else if let Some(t) = mentions(toks, temps) {
                Verdict::Refuse(format!(
                    "this write reads the temporary table {t}, which exists only in this session on the leader, \
                     so the followers cannot run it again; read the rows into the application and write them \
                     with their values, or use a regular table"
                ))
            } else {
                Verdict::Regular
            }
        }
        MyClass::Ddl => match ddl_target(toks) {
            Some(t) if is_temp(&t) => Verdict::LeaderOnly(None),
            _ => match mentions(toks, temps) {
                Some(t) => Verdict::Refuse(format!(
                    "this statement reads the temporary table {t}, which exists only in this session on the \
                     leader, so the followers cannot run it again; use a regular table"
                )),
                None => Verdict::Regular,
            },
        },
        _ => Verdict::Regular,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::mysql::classify;
    use crate::sql::mysql::lex::tokens;

    fn verdict(sql: &str, temps: &[&str]) -> Verdict {
        let toks = tokens(sql, true);
        let temps: HashSet<String> = temps.iter().map(|s| s.to_string()).collect();
        judge(&toks, &classify(&toks), &temps, Some("s"))
    }

    fn leader_only(sql: &str, temps: &[&str]) -> Option<Change> {
        match verdict(sql, temps) {
            Verdict::LeaderOnly(c) => c,
            v => panic!("{sql}: {v:?}"),
        }
    }

    #[test]
    fn creating_and_dropping_temporary_tables() {
        let name = |n: &str| Name { db: None, name: n.into() };
        assert_eq!(leader_only("CREATE TEMPORARY TABLE tmp (a INT)", &[]), Some(Change::Create(name("tmp"))));
        assert_eq!(
            leader_only("create or replace temporary table if not exists `Tmp` AS SELECT * FROM t", &[]),
            Some(Change::Create(name("tmp")))
        );
        assert_eq!(
            leader_only("DROP TEMPORARY TABLE IF EXISTS a, b", &[]),
            Some(Change::Drop(vec![name("a"), name("b")]))
        );
        assert_eq!(leader_only("DROP TABLE tmp", &["s.tmp"]), Some(Change::Drop(vec![name("tmp")])));
        assert_eq!(verdict("DROP TABLE t", &["s.tmp"]), Verdict::Regular);
        assert!(matches!(verdict("DROP TABLE t, tmp", &["s.tmp"]), Verdict::Refuse(_)));
        assert_eq!(verdict("DROP TABLE tmp", &["other.tmp"]), Verdict::Regular);
    }

    #[test]
    fn what_touches_only_temporary_tables_runs_on_the_leader_alone() {
        let temps = ["s.tmp"];
        for sql in [
            "INSERT INTO tmp SELECT * FROM t",
            "UPDATE tmp SET a = RAND()",
            "DELETE FROM tmp LIMIT 3",
            "INSERT INTO tmp VALUES (UUID())",
            "UPDATE tmp SET a = UUID() WHERE a = @x",
            "ALTER TABLE tmp ADD COLUMN b INT",
            "TRUNCATE tmp",
            "CREATE INDEX i ON tmp (a)",
        ] {
            assert_eq!(leader_only(sql, &temps), None, "{sql}");
        }
        for sql in [
            "INSERT INTO t SELECT * FROM tmp",
            "UPDATE t JOIN tmp ON t.id = tmp.id SET t.a = 1",
            "UPDATE t, tmp SET t.a = 1",
        ] {
            assert!(matches!(verdict(sql, &temps), Verdict::Refuse(_)), "{sql}");
        }
        // (CREATE TABLE ... SELECT from a table is refused by its class already.)
        assert!(matches!(verdict("CREATE VIEW v AS SELECT * FROM tmp", &temps), Verdict::Refuse(_)));
        for sql in ["INSERT INTO t VALUES (1)", "SELECT * FROM tmp", "ALTER TABLE t ADD COLUMN c INT"] {
            assert_eq!(verdict(sql, &temps), Verdict::Regular, "{sql}");
        }
        assert_eq!(verdict("INSERT INTO t SELECT * FROM tmp", &[]), Verdict::Regular);
    }
}
