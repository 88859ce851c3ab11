//! Pure: the names in a MySQL statement that the leader's catalog is asked
//! about: the tables it writes (their triggers run again on a follower),
//! the columns an INSERT gives values (the others take their DEFAULT), the
//! functions it calls. Over-approximating is fine (a name that is no table
//! or routine is simply not found); missing a written table is not.

use super::lex::Token;

/// A table or routine as a statement names it, folded to lower case
/// (`db` when qualified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub db: Option<String>,
    pub name: String,
}

impl Name {
    /// `db.name`, the unqualified name resolved in `default_db`; None when
    /// unqualified with no default database.
    pub fn key(&self, default_db: Option<&str>) -> Option<String> {
        let db = self.db.as_deref().or(default_db)?;
        Some(format!("{}.{}", db.to_ascii_lowercase(), self.name))
    }
}

/// An INSERT's (or REPLACE's) target and the columns it gives values: None
/// when it gives every column by position (`VALUES` / `SELECT` without a
/// list), Some(empty) for `()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertShape {
    pub table: Name,
    pub columns: Option<Vec<String>>,
}

/// An identifier token, unquoted and folded.
pub fn ident(t: Option<&Token<'_>>) -> Option<String> {
    match t? {
        Token::Word(w) => Some(w.to_ascii_lowercase()),
        Token::Quoted(q) => Some(super::lex::quoted_name(q).to_ascii_lowercase()),
        _ => None,
    }
}

fn is_word(t: Option<&Token<'_>>, w: &str) -> bool {
    matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w))
}

/// A possibly qualified name at `toks[i..]`, and the index after it.
pub(crate) fn name_at(toks: &[Token<'_>], i: usize) -> Option<(Name, usize)> {
    let first = ident(toks.get(i))?;
    if toks.get(i + 1) == Some(&Token::Symbol('.'))
        && let Some(second) = ident(toks.get(i + 2))
    {
        return Some((Name { db: Some(first), name: second }, i + 3));
    }
    Some((Name { db: None, name: first }, i + 1))
}

/// The index after the parenthesis group opening at `toks[i]`.
fn after_group(toks: &[Token<'_>], i: usize) -> usize {
    let mut depth = 0i32;
    for (k, t) in toks.iter().enumerate().skip(i) {
        match t {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// The shape of an `INSERT` / `REPLACE` statement (`toks` starting at its verb).
pub fn insert_shape(toks: &[Token<'_>]) -> Option<InsertShape> {
    if is_word(toks.first(), "LOAD") {
        return load_shape(toks);
    }
    if !is_word(toks.first(), "INSERT") && !is_word(toks.first(), "REPLACE") {
        return None;
    }
    let mut i = 1;
    while ["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO"].iter().any(|w| is_word(toks.get(i), w)) {
        i += 1;
    }
    let (table, mut i) = name_at(toks, i)?;
    if is_word(toks.get(i), "PARTITION") {
        i = after_group(toks, i + 1);
    }
    let columns = match toks.get(i) {
        Some(Token::Symbol('(')) => {
            let inner = toks.get(i + 1);
            if ["SELECT", "WITH", "VALUES", "TABLE"].iter().any(|w| is_word(inner, w)) {
                None
            } else {
                let end = after_group(toks, i) - 1;
                let mut cols = Vec::new();
                for part in toks[i + 1..end.max(i + 1)].split(|t| *t == Token::Symbol(',')) {
                    // `t.c` names column c.
                    if let Some(c) = part.iter().rev().find_map(|t| ident(Some(t))) {
                        cols.push(c);
                    }
                }
                Some(cols)
            }
        }
        Some(Token::Word(w)) if w.eq_ignore_ascii_case("SET") => Some(assigned_columns(&toks[i + 1..])),
        _ => None,
    };
    Some(InsertShape { table, columns })
}

/// `LOAD DATA | XML ... INTO TABLE t [PARTITION (...)] ... [(col_or_@var, ...)]
/// [SET c = expr, ...]`: the table, and the columns the file's fields and the
/// SET list fill (None without a column list: every column, in order).
fn load_shape(toks: &[Token<'_>]) -> Option<InsertShape> {
    let into = toks.windows(2).position(|w| is_word(w.first(), "INTO") && is_word(w.get(1), "TABLE"))?;
    let (table, mut i) = name_at(toks, into + 2)?;
    let mut columns: Option<Vec<String>> = None;
    while i < toks.len() {
        match &toks[i] {
            Token::Word(w) if w.eq_ignore_ascii_case("PARTITION") => i = after_group(toks, i + 1),
            Token::Symbol('(') if columns.is_none() => {
                let end = after_group(toks, i) - 1;
                let mut cols = Vec::new();
                for part in toks[i + 1..end.max(i + 1)].split(|t| *t == Token::Symbol(',')) {
                    // A user variable (`@x`) is not a column.
                    if let [t] = part
                        && let Some(c) = ident(Some(t))
                    {
                        cols.push(c);
                    }
                }
                columns = Some(cols);
                i = end + 1;
            }
            Token::Word(w) if w.eq_ignore_ascii_case("SET") => {
                if let Some(cols) = columns.as_mut() {
                    cols.extend(assigned_columns(&toks[i + 1..]));
                }
                break;
            }
            _ => i += 1,
        }
    }
    Some(InsertShape { table, columns })
}

/// The columns of `c = expr, d = expr ...` (an INSERT's or UPDATE's SET list),
/// up to `ON DUPLICATE KEY`, `RETURNING`, `WHERE`... at depth 0.
fn assigned_columns(toks: &[Token<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (k, t) in toks.iter().enumerate() {
        match t {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => depth -= 1,
            Token::Symbol('=') if depth == 0 && k > start => {
                if let Some(c) = ident(toks.get(k - 1)) {
                    out.push(c);
                }
            }
            Token::Symbol(',') if depth == 0 => start = k + 1,
            Token::Word(w)
                if depth == 0
                    && ["ON", "RETURNING", "WHERE", "ORDER", "LIMIT"].iter().any(|x| w.eq_ignore_ascii_case(x)) =>
            {
                break;
            }
            _ => {}
        }
    }
    out
}

/// The tables a data-changing statement writes (whose triggers fire): an
/// INSERT's or REPLACE's target; every table an UPDATE names before its
/// SET; every table a DELETE names before WHERE (multi-table forms
/// included: aliases come along, and match nothing).
pub fn written_tables(toks: &[Token<'_>]) -> Vec<Name> {
    let Some(verb) = toks.first() else { return Vec::new() };
    if let Some(shape) = insert_shape(toks) {
        return vec![shape.table];
    }
    let stops: &[&str] = if is_word(Some(verb), "UPDATE") {
        &["SET"]
    } else if is_word(Some(verb), "DELETE") {
        &["WHERE", "ORDER", "LIMIT", "RETURNING"]
    } else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut expect = true;
    let mut i = 1;
    while i < toks.len() {
        let t = &toks[i];
        match t {
            Token::Symbol('(') => {
                depth += 1;
                expect = true;
            }
            Token::Symbol(')') => depth -= 1,
            Token::Symbol(',') => expect = true,
            Token::Word(w) if depth == 0 && stops.iter().any(|s| w.eq_ignore_ascii_case(s)) => break,
            Token::Word(w)
                if ["FROM", "JOIN", "USING", "LOW_PRIORITY", "QUICK", "IGNORE", "STRAIGHT_JOIN"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                expect = true
            }
            Token::Word(_) | Token::Quoted(_) if expect => {
                if let Some((name, next)) = name_at(toks, i) {
                    out.push(name);
                    expect = false;
                    i = next;
                    continue;
                }
            }
            _ => expect = false,
        }
        i += 1;
    }
    out
}

/// The functions a statement calls by name (`f(`, `` `f`( ``, `db.f(`),
/// and the procedures it `CALL`s. Built-ins come along (and are no user
/// routine's key).
pub fn calls(toks: &[Token<'_>]) -> Vec<Name> {
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if !matches!(t, Token::Word(_) | Token::Quoted(_)) {
            continue;
        }
        let procedure = i > 0 && is_word(toks.get(i - 1), "CALL") && toks.get(i + 1) != Some(&Token::Symbol('.'));
        if toks.get(i + 1) != Some(&Token::Symbol('(')) && !procedure {
            continue;
        }
        let Some(name) = ident(Some(t)) else { continue };
        let db = (i >= 2 && toks[i - 1] == Token::Symbol('.')).then(|| ident(toks.get(i - 2))).flatten();
        out.push(Name { db, name });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::mysql::lex::tokens;

    fn n(db: Option<&str>, name: &str) -> Name {
        Name { db: db.map(String::from), name: name.into() }
    }

    fn shape(sql: &str) -> Option<InsertShape> {
        insert_shape(&tokens(sql, true))
    }

    #[test]
    fn an_insert_names_its_target_and_columns() {
        let s = shape("INSERT IGNORE INTO `Shop`.t (a, `B`, t.c) VALUES (1, 2, 3)").unwrap();
        assert_eq!(s.table, n(Some("shop"), "t"));
        assert_eq!(s.columns, Some(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(shape("INSERT INTO t VALUES (1)").unwrap().columns, None);
        assert_eq!(shape("INSERT INTO t () VALUES ()").unwrap().columns, Some(vec![]));
        assert_eq!(shape("INSERT INTO t (SELECT * FROM u)").unwrap().columns, None);
        assert_eq!(shape("REPLACE t PARTITION (p0) (a) SELECT 1").unwrap().columns, Some(vec!["a".into()]));
        assert_eq!(
            shape("INSERT INTO t SET a = 1, b = f(2, 3) ON DUPLICATE KEY UPDATE c = 4").unwrap().columns,
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(shape("UPDATE t SET a = 1"), None);
        assert_eq!(shape("SELECT REPLACE('a', 'b', 'c')"), None);
    }

    #[test]
    fn updates_and_deletes_name_the_tables_they_may_write() {
        let w = |sql: &str| written_tables(&tokens(sql, true));
        assert_eq!(w("UPDATE t SET a = 1 WHERE b IN (SELECT c FROM u)"), [n(None, "t")]);
        assert_eq!(
            w("UPDATE LOW_PRIORITY db.t AS x JOIN u ON x.id = u.id SET x.a = u.a"),
            [n(Some("db"), "t"), n(None, "u")]
        );
        assert_eq!(w("UPDATE t, (u) SET t.a = 1"), [n(None, "t"), n(None, "u")]);
        assert_eq!(w("DELETE FROM t WHERE id = 1"), [n(None, "t")]);
        assert_eq!(
            w("DELETE a, b FROM t1 a JOIN t2 b ON a.id = b.id WHERE a.x = 1"),
            [n(None, "a"), n(None, "b"), n(None, "t1"), n(None, "t2")]
        );
        assert_eq!(
            w("DELETE FROM t1, t2 USING t1 JOIN t2"),
            [n(None, "t1"), n(None, "t2"), n(None, "t1"), n(None, "t2")]
        );
        assert_eq!(w("INSERT INTO x.y SELECT * FROM z"), [n(Some("x"), "y")]);
        assert_eq!(w("SELECT 1"), []);
    }

    #[test]
    fn an_unterminated_quoted_name_is_no_panic() {
        for sql in ["UPDATE `", "INSERT INTO `", "DELETE FROM x.`", "CALL `", "SAVEPOINT `"] {
            let toks = tokens(sql, true);
            let _ = (written_tables(&toks), calls(&toks), insert_shape(&toks), crate::sql::mysql::classify(&toks));
        }
        assert_eq!(written_tables(&tokens("UPDATE `a``b", true)), [n(None, "a`b")]);
    }

    #[test]
    fn calls_are_names_before_parentheses() {
        let c = calls(&tokens("SELECT f(1), db.g(2), `h` (3), 'k(4)', COUNT(*) FROM t; CALL p; CALL q.r()", true));
        assert_eq!(
            c,
            [n(None, "f"), n(Some("db"), "g"), n(None, "h"), n(None, "count"), n(None, "p"), n(Some("q"), "r")]
        );
    }
}
