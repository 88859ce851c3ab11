//! Literal-free cache keys: `... WHERE aid = 42` and `... WHERE aid = 43` need
//! the same routing decision, so they share one cache entry and one parse.
//!
//! A single byte scan replaces numeric literals with `0` and string literals
//! with `''`, leaving identifiers, keywords, comments, dollar-quoted bodies and
//! parameters (`$1`) alone. Classification never depends on a literal's value
//! (only on statement shape, functions and tables), with two exceptions: the
//! sequence a `nextval('s')` / `currval` / `setval` names is kept in the key,
//! and the replay text of a SET is handled by the cache, which classifies such
//! statements from their original text.

use std::borrow::Cow;

/// The cache key for `sql`: borrowed when it holds no literal to strip.
pub fn normalize(sql: &str) -> Cow<'_, str> {
    let b = sql.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0; // bytes of `sql` already reflected in `out`
    let mut i = 0;
    let mut prev_ident = false; // previous byte continues an identifier / parameter
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |p| i + p);
                prev_ident = false;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(b, i);
                prev_ident = false;
            }
            b'"' => {
                i = skip_quoted(b, i + 1, b'"', false);
                prev_ident = true;
            }
            b'$' if !prev_ident => {
                // $1 parameter or $tag$ ... $tag$ dollar quote.
                if b.get(i + 1).is_some_and(|x| x.is_ascii_digit()) {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    prev_ident = true;
                } else {
                    i = skip_dollar_quote(b, i);
                    prev_ident = false;
                }
            }
            b'\'' => {
                // E'..' allows backslash escapes; the E is kept as written.
                let escapes = i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !is_ident_byte(b[i - 2]));
                let end = skip_quoted(b, i + 1, b'\'', escapes);
                if names_sequence(&b[..i]) {
                    i = end;
                    prev_ident = false;
                    continue;
                }
                let o = out.get_or_insert_with(|| String::with_capacity(sql.len()));
                o.push_str(&sql[copied..i]);
                o.push_str("''");
                copied = end;
                i = end;
                prev_ident = false;
            }
            b'0'..=b'9' if !prev_ident => {
                let end = skip_number(b, i);
                let o = out.get_or_insert_with(|| String::with_capacity(sql.len()));
                o.push_str(&sql[copied..i]);
                o.push('0');
                copied = end;
                i = end;
                prev_ident = false;
            }
            _ => {
                prev_ident = is_ident_byte(c);
                i += 1;
            }
        }
    }
    match out {
        None => Cow::Borrowed(sql),
        Some(mut o) => {
            o.push_str(&sql[copied..]);
            Cow::Owned(o)
        }
    }
}

/// The text before a string literal ends with `nextval(`, `currval(` or
/// `setval(`: the literal names a sequence, which classification records
/// (`Classification::sequences`), so it stays in the key.
fn names_sequence(before: &[u8]) -> bool {
    let before = before.trim_ascii_end();
    let Some(before) = before.strip_suffix(b"(") else { return false };
    let before = before.trim_ascii_end();
    let start = before.iter().rposition(|&c| !is_ident_byte(c)).map_or(0, |p| p + 1);
    let word = &before[start..];
    (start == 0 || !matches!(before[start - 1], b'"'))
        && ["nextval", "currval", "setval"].iter().any(|f| word.eq_ignore_ascii_case(f.as_bytes()))
}

pub(crate) fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

pub(crate) fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    // PostgreSQL block comments nest.
    let mut depth = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// From just after an opening quote to just after its closing quote.
pub(crate) fn skip_quoted(b: &[u8], mut i: usize, q: u8, backslash_escapes: bool) -> usize {
    while i < b.len() {
        if backslash_escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

pub(crate) fn skip_dollar_quote(b: &[u8], start: usize) -> usize {
    let mut j = start + 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    if b.get(j) != Some(&b'$') {
        return start + 1; // a lone '$': not a quote
    }
    let tag = &b[start..=j];
    let mut k = j + 1;
    while k + tag.len() <= b.len() {
        if &b[k..k + tag.len()] == tag {
            return k + tag.len();
        }
        k += 1;
    }
    b.len()
}

pub(crate) fn skip_number(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
        if matches!(b[i], b'e' | b'E') && matches!(b.get(i + 1), Some(b'+' | b'-')) {
            i += 2;
            continue;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn table() {
        let cases = [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
                "SELECT abalance FROM pgbench_accounts WHERE aid = 0;",
            ),
            ("SELECT 1.5e-3, 0x1F, 1_000", "SELECT 0, 0, 0"),
            ("select 'it''s', E'a\\'b', x from t", "select '', E'', x from t"),
            ("select \"col 1\", t2.c3 from t2 where c = $1", "select \"col 1\", t2.c3 from t2 where c = $1"),
            ("select $$ 'x' 1 $$, $f$a$f$", "select $$ 'x' 1 $$, $f$a$f$"),
            ("select 1 -- 'c' 2\n, 3 /* 4 /* 5 */ 6 */", "select 0 -- 'c' 2\n, 0 /* 4 /* 5 */ 6 */"),
            ("SELECT col2 FROM t1", "SELECT col2 FROM t1"),
            ("insert into t values (-1, 'x'), (2,'y')", "insert into t values (-0, ''), (0,'')"),
            ("select 'unterminated", "select ''"),
            ("select e'x'", "select e''"),
            ("select name'x'", "select name''"),
            ("SELECT nextval('s'), CURRVAL ( 'T' ), f('x')", "SELECT nextval('s'), CURRVAL ( 'T' ), f('')"),
            ("select pg_catalog.setval('a.b', 5)", "select pg_catalog.setval('a.b', 0)"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "{input}");
        }
        assert!(matches!(normalize("SELECT a FROM b"), std::borrow::Cow::Borrowed(_)));
    }
}
