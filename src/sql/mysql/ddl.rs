//! Pure: which existing tables a DDL statement changes, when MariaDB lets
//! it run under `LOCK TABLES ... WRITE` on them (see
//! `session::mysql::ddl`: holding them keeps every other write to them out
//! until the DDL is in the log).
//!
//! Lockable: `ALTER TABLE t ...` (not renaming it), `CREATE ... INDEX i ON
//! t`, `DROP INDEX i ON t`, `TRUNCATE [TABLE] t`, `DROP TABLE a, b`. Not:
//! `CREATE TABLE` (a table that does not exist cannot be locked), `RENAME
//! TABLE` and renaming ALTERs (refused under LOCK TABLES), views,
//! triggers, routines, databases, accounts: those run unlocked.

use super::lex::Token;

fn is_word(t: Option<&Token<'_>>, w: &str) -> bool {
    matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w))
}

/// A table name at `i` (`t`, `` `t` ``, `db.t`...): its text and the index
/// after it.
fn name_at(toks: &[Token<'_>], i: usize) -> Option<(String, usize)> {
    let part = |t: Option<&Token<'_>>| match t {
        Some(Token::Word(w)) => Some(w.to_string()),
        Some(Token::Quoted(q)) => Some(q.to_string()),
        _ => None,
    };
    let first = part(toks.get(i))?;
    if toks.get(i + 1) == Some(&Token::Symbol('.')) {
        let second = part(toks.get(i + 2))?;
        return Some((format!("{first}.{second}"), i + 3));
    }
    Some((first, i + 1))
}

/// Skip the words in `optional` (in any order) from `i`.
fn skip_words(toks: &[Token<'_>], mut i: usize, optional: &[&str]) -> usize {
    while optional.iter().any(|w| is_word(toks.get(i), w)) {
        i += 1;
    }
    i
}

/// `IF [NOT] EXISTS` at `i`: the index after it.
fn skip_if_exists(toks: &[Token<'_>], i: usize) -> usize {
    if !is_word(toks.get(i), "IF") {
        return i;
    }
    let j = if is_word(toks.get(i + 1), "NOT") { i + 2 } else { i + 1 };
    if is_word(toks.get(j), "EXISTS") { j + 1 } else { i }
}

/// `... ON t` after an index name: the table.
fn index_table(toks: &[Token<'_>], i: usize) -> Option<Vec<String>> {
    let (_, mut i) = name_at(toks, skip_if_exists(toks, i))?;
    if is_word(toks.get(i), "USING") {
        i += 2;
    }
    if !is_word(toks.get(i), "ON") {
        return None;
    }
    let (table, _) = name_at(toks, i + 1)?;
    Some(vec![table])
}

/// `CREATE [OR REPLACE] TABLE ... SELECT`: a DDL that copies rows (chorus
/// runs it with a consistent read, see `session::mysql::ddl`).
pub fn copies_rows(toks: &[Token<'_>]) -> bool {
    let i = if is_word(toks.get(1), "OR") && is_word(toks.get(2), "REPLACE") { 3 } else { 1 };
    is_word(toks.first(), "CREATE") && is_word(toks.get(i), "TABLE") && toks.iter().any(|t| is_word(Some(t), "SELECT"))
}

/// The existing tables a DDL statement changes, if it can run with them
/// write-locked; None when it cannot (or chorus cannot tell).
pub fn lockable_tables(toks: &[Token<'_>]) -> Option<Vec<String>> {
    let verb = match toks.first() {
        Some(Token::Word(w)) => w.to_ascii_uppercase(),
        _ => return None,
    };
    match verb.as_str() {
        "ALTER" => {
            let i = skip_words(toks, 1, &["ONLINE", "IGNORE"]);
            if !is_word(toks.get(i), "TABLE") {
                return None;
            }
            let (table, rest) = name_at(toks, skip_if_exists(toks, i + 1))?;
            let mut depth = 0i32;
            for t in &toks[rest..] {
                match t {
                    Token::Symbol('(') => depth += 1,
                    Token::Symbol(')') => depth -= 1,
                    Token::Word(w) if depth == 0 && w.eq_ignore_ascii_case("RENAME") => {
                        // RENAME COLUMN / INDEX / KEY keep the table's name.
                        return None;
                    }
                    _ => {}
                }
            }
            Some(vec![table])
        }
        "CREATE" => {
            let mut i = 1;
            if is_word(toks.get(i), "OR") && is_word(toks.get(i + 1), "REPLACE") {
                i += 2;
            }
            let i = skip_words(toks, i, &["ONLINE", "OFFLINE", "UNIQUE", "FULLTEXT", "SPATIAL"]);
            if !is_word(toks.get(i), "INDEX") {
                return None;
            }
            index_table(toks, i + 1)
        }
        "DROP" => {
            if is_word(toks.get(1), "INDEX") {
                return index_table(toks, skip_words(toks, 2, &["ONLINE", "OFFLINE"]));
            }
            if !is_word(toks.get(1), "TABLE") {
                return None;
            }
            let mut i = skip_if_exists(toks, 2);
            let mut tables = Vec::new();
            loop {
                let (table, next) = name_at(toks, i)?;
                tables.push(table);
                if toks.get(next) != Some(&Token::Symbol(',')) {
                    break;
                }
                i = next + 1;
            }
            Some(tables)
        }
        "TRUNCATE" => {
            let i = if is_word(toks.get(1), "TABLE") { 2 } else { 1 };
            let (table, _) = name_at(toks, i)?;
            Some(vec![table])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::lex::tokens;
    use super::*;

    fn tables(sql: &str) -> Option<Vec<String>> {
        lockable_tables(&tokens(sql, true))
    }

    #[test]
    fn the_tables_a_ddl_changes() {
        let one = |t: &str| Some(vec![t.to_string()]);
        assert_eq!(tables("ALTER TABLE t ADD COLUMN c INT DEFAULT 3"), one("t"));
        assert_eq!(tables("alter online ignore table `db`.`t` drop column c"), one("`db`.`t`"));
        assert_eq!(tables("ALTER TABLE IF EXISTS shop.orders ADD INDEX (a), ALGORITHM=INPLACE"), one("shop.orders"));
        assert_eq!(tables("CREATE UNIQUE INDEX i ON t (a, b)"), one("t"));
        assert_eq!(tables("CREATE OR REPLACE INDEX IF NOT EXISTS i USING BTREE ON `t` (a)"), one("`t`"));
        assert_eq!(tables("DROP INDEX IF EXISTS i ON db.t"), one("db.t"));
        assert_eq!(tables("TRUNCATE TABLE t"), one("t"));
        assert_eq!(tables("truncate t"), one("t"));
        assert_eq!(
            tables("DROP TABLE IF EXISTS a, `b`, c.d CASCADE"),
            Some(vec!["a".into(), "`b`".into(), "c.d".into()])
        );
        // A column named like a keyword inside parentheses is no rename.
        assert_eq!(tables("ALTER TABLE t ADD CHECK (rename > 0)"), one("t"));
    }

    #[test]
    fn ddl_that_cannot_run_under_lock_tables() {
        for sql in [
            "CREATE TABLE t (id INT)",
            "ALTER TABLE t RENAME TO u",
            "ALTER TABLE t RENAME COLUMN a TO b",
            "RENAME TABLE a TO b",
            "CREATE VIEW v AS SELECT 1",
            "DROP VIEW v",
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1",
            "DROP DATABASE d",
            "ALTER DATABASE d CHARACTER SET utf8mb4",
            "CREATE USER u",
            "ALTER TABLE \"t\" ADD c INT",
        ] {
            assert_eq!(tables(sql), None, "{sql}");
        }
    }
}
