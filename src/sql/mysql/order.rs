//! `DELETE` / `UPDATE ... LIMIT n` without `ORDER BY` changes whichever n
//! rows the server finds first, which a follower need not find in the same
//! order. The client asked for any n rows, so chorus chooses them: it adds
//! `ORDER BY` the table's primary key in front of the `LIMIT`, and the
//! leader and the followers run that same text (chunked purges, ORMs'
//! `limit().delete()`). Pure: where the ORDER BY goes, and the new text.

use super::lex::Token;
use super::targets::{self, Name};

fn is_word(t: &Token<'_>, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.eq_ignore_ascii_case(w))
}

/// A single-table `UPDATE` or `DELETE` with a `LIMIT` and no `ORDER BY`
/// (both outside parentheses): its table, and the byte offset in `sql` of
/// its `LIMIT`. `toks` are `sql`'s tokens (one statement).
pub fn unordered_limit(sql: &str, toks: &[Token<'_>]) -> Option<(Name, usize)> {
    let first = toks.first()?;
    if !is_word(first, "UPDATE") && !is_word(first, "DELETE") {
        return None;
    }
    let mut depth = 0i32;
    let mut limit = None;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => depth -= 1,
            // Several tables (a join, `UPDATE a, b`): MySQL takes no LIMIT there.
            Token::Symbol(',') if depth == 0 && limit.is_none() && is_word(first, "UPDATE") && !past_set(toks, i) => {
                return None;
            }
            Token::Word(w) if depth == 0 && w.eq_ignore_ascii_case("JOIN") => return None,
            Token::Word(w) if depth == 0 && w.eq_ignore_ascii_case("ORDER") => return None,
            Token::Word(w) if depth == 0 && w.eq_ignore_ascii_case("LIMIT") && limit.is_none() => {
                limit = Some(w.as_ptr() as usize - sql.as_ptr() as usize)
            }
            _ => {}
        }
    }
    let at = limit?;
    let mut tables = targets::written_tables(toks);
    if tables.len() != 1 {
        return None;
    }
    Some((tables.remove(0), at))
}

/// Is `toks[i]` after the SET of an UPDATE (a comma between assignments)?
fn past_set(toks: &[Token<'_>], i: usize) -> bool {
    toks[..i].iter().any(|t| is_word(t, "SET"))
}

/// `sql` with `ORDER BY` the `key` columns inserted at byte offset `at`.
pub fn with_order(sql: &str, at: usize, key: &[String]) -> String {
    let columns: Vec<String> = key.iter().map(|c| format!("`{}`", c.replace('`', "``"))).collect();
    format!("{}ORDER BY {} {}", &sql[..at], columns.join(", "), &sql[at..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::mysql::lex::tokens;

    fn rewrite(sql: &str) -> Option<String> {
        let toks = tokens(sql, true);
        let (table, at) = unordered_limit(sql, &toks)?;
        assert_eq!(table.name, "logs");
        Some(with_order(sql, at, &["id".to_string(), "se`q".to_string()]))
    }

    #[test]
    fn the_order_by_goes_in_front_of_the_limit() {
        assert_eq!(
            rewrite("DELETE FROM logs WHERE at < NOW() - INTERVAL 1 DAY LIMIT 1000").as_deref(),
            Some("DELETE FROM logs WHERE at < NOW() - INTERVAL 1 DAY ORDER BY `id`, `se``q` LIMIT 1000")
        );
        assert_eq!(
            rewrite("update logs set a = 1, b = (SELECT 1 LIMIT 1) where c in (1, 2) limit ?").as_deref(),
            Some("update logs set a = 1, b = (SELECT 1 LIMIT 1) where c in (1, 2) ORDER BY `id`, `se``q` limit ?")
        );
        assert_eq!(
            rewrite("DELETE LOW_PRIORITY QUICK FROM s.logs LIMIT 5").as_deref().map(|s| s.contains("ORDER BY")),
            Some(true)
        );
        for untouched in [
            "DELETE FROM logs ORDER BY id LIMIT 5",
            "DELETE FROM logs WHERE id IN (SELECT id FROM x LIMIT 5)",
            "DELETE FROM logs",
            "UPDATE logs, other SET logs.a = 1 LIMIT 3",
            "UPDATE logs JOIN other ON logs.id = other.id SET logs.a = 1 LIMIT 3",
            "INSERT INTO logs SELECT * FROM x LIMIT 3",
        ] {
            assert_eq!(rewrite(untouched), None, "{untouched}");
        }
    }
}
