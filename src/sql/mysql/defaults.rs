//! Pure: an INSERT that leaves a column to `DEFAULT (UUID())` (or
//! `UUID_SHORT()`), written out so it can be replicated: the column is
//! added to the column list and each row of VALUES gets the call, which
//! `generate` then turns into a literal per row, the same on every server.
//! ORMs list the columns they set and leave generated keys to the
//! database; this keeps such inserts working. Other volatile defaults (and
//! other INSERT forms: `SELECT`, `SET`, no column list) stay refused
//! (`safety`).

use super::generate::GENERATED;
use super::lex::Token;
use super::safety::Facts;
use super::targets;

fn word_is(t: Option<&Token<'_>>, w: &str) -> bool {
    matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w))
}

/// A default that is exactly a call [`super::generate::substitute`] replaces.
fn generated_call(expression: &str) -> Option<&'static str> {
    let e: String = expression.chars().filter(|c| !c.is_whitespace() && *c != '(' && *c != ')').collect();
    GENERATED.iter().copied().find(|f| f.eq_ignore_ascii_case(&e))
}

/// `sql` (tokens `toks`, default database `db`) with the generated
/// defaults of the columns it omits written out; None when there are none
/// or the statement is not `INSERT|REPLACE ... (columns) VALUES (...), ...`.
pub fn fill_generated_defaults(facts: &Facts, sql: &str, toks: &[Token<'_>], db: Option<&str>) -> Option<String> {
    let shape = targets::insert_shape(toks)?;
    let cols = shape.columns.as_ref().filter(|c| !c.is_empty())?;
    let defaults = facts.volatile_defaults.get(&shape.table.key(db)?)?;
    let fill: Vec<(&str, &str)> = defaults
        .iter()
        .filter(|d| !cols.contains(&d.column))
        .filter_map(|d| Some((d.column.as_str(), generated_call(&d.expression)?)))
        .collect();
    if fill.is_empty() {
        return None;
    }
    let base = sql.as_ptr() as usize;
    let offset = |t: &Token<'_>| -> Option<usize> {
        let s = match t {
            Token::Symbol(_) | Token::End(_) | Token::Placeholder(_) => return None,
            Token::Word(s) | Token::Str(s) | Token::Quoted(s) | Token::Number(s) | Token::Variable(s) => s,
        };
        Some(s.as_ptr() as usize - base + s.len())
    };
    // The column list's `(`: the first one after the table name (with a
    // PARTITION list before it, the statement is left as it is: refused).
    if toks.iter().any(|t| word_is(Some(t), "PARTITION")) {
        return None;
    }
    let open = toks.iter().position(|t| *t == Token::Symbol('('))?;
    let values = toks.iter().position(|t| word_is(Some(t), "VALUES") || word_is(Some(t), "VALUE"))?;
    // Each `)` that closes a group at depth 0: the column list's, then each row's.
    let mut closes = Vec::new();
    let mut depth = 0i32;
    for (i, t) in toks.iter().enumerate().skip(open) {
        match t {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => {
                depth -= 1;
                if depth == 0 {
                    closes.push(i);
                }
            }
            Token::Word(w)
                if depth == 0 && i > values && ["ON", "RETURNING", "AS"].iter().any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                break;
            }
            Token::Word(w) if depth == 0 && i > open && i < values && !w.eq_ignore_ascii_case("VALUES") => return None,
            Token::End(_) => break,
            _ => {}
        }
    }
    if closes.len() < 2 || closes[0] > values {
        return None;
    }
    // A `)` token carries no position: find each one's byte offset after
    // the end of the last token before it that has one (what lies between
    // is symbols, spaces and comments).
    let close_at = |i: usize| -> Option<usize> {
        let mut k = i;
        let from = loop {
            k = k.checked_sub(1)?;
            if let Some(o) = offset(&toks[k]) {
                break o;
            }
        };
        let skip = toks[k + 1..i].iter().filter(|t| **t == Token::Symbol(')')).count();
        let at = sql[from..].match_indices(')').nth(skip).map(|(p, _)| from + p)?;
        // A comment in between could hold a `)` of its own: leave such text alone.
        let between = &sql[from..at];
        (!between.contains("/*") && !between.contains('#') && !between.contains("--")).then_some(at)
    };
    let mut out = String::with_capacity(sql.len() + 32 * closes.len());
    let mut from = 0;
    for (n, &i) in closes.iter().enumerate() {
        let at = close_at(i)?;
        out.push_str(&sql[from..at]);
        for (column, call) in &fill {
            if n == 0 {
                out.push_str(&format!(", `{}`", column.replace('`', "``")));
            } else {
                out.push_str(&format!(", {call}()"));
            }
        }
        from = at;
    }
    out.push_str(&sql[from..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::mysql::lex::tokens;
    use crate::sql::mysql::safety::VolatileDefault;
    use std::collections::HashMap;

    fn facts() -> Facts {
        let d = |column: &str, expression: &str| VolatileDefault {
            column: column.into(),
            expression: expression.into(),
            why: "differs".into(),
        };
        Facts {
            volatile_defaults: HashMap::from([
                ("s.docs".to_string(), vec![d("u", "uuid()"), d("short", "uuid_short()")]),
                ("s.odd".to_string(), vec![d("at", "sysdate(6)")]),
            ]),
            ..Facts::default()
        }
    }

    fn fill(sql: &str) -> Option<String> {
        fill_generated_defaults(&facts(), sql, &tokens(sql, true), Some("s"))
    }

    #[test]
    fn omitted_uuid_defaults_are_written_out_per_row() {
        assert_eq!(
            fill("INSERT INTO docs (id, short) VALUES (1, 5), (f(2), ')')").as_deref(),
            Some("INSERT INTO docs (id, short, `u`) VALUES (1, 5, UUID()), (f(2), ')', UUID())")
        );
        assert_eq!(
            fill("insert into s.docs (id) values (1) on duplicate key update id = 2").as_deref(),
            Some(
                "insert into s.docs (id, `u`, `short`) values (1, UUID(), UUID_SHORT()) on duplicate key update id = 2"
            )
        );
        assert_eq!(fill("INSERT INTO docs (id, u, short) VALUES (1, 'a', 2)"), None);
        assert_eq!(fill("INSERT INTO docs VALUES (1, 'a', 2)"), None);
        assert_eq!(fill("INSERT INTO docs (id) SELECT 1"), None);
        assert_eq!(fill("INSERT INTO odd (id) VALUES (1)"), None);
        assert_eq!(fill("INSERT INTO docs PARTITION (p0) (id) VALUES (1)"), None);
        assert_eq!(fill("INSERT INTO other (id) VALUES (1)"), None);
    }
}
