//! A small MySQL lexer, just enough for chorus's decisions: where statements
//! end in a multi-statement query, the words of a statement with literals
//! and comments out of the way, and where its `?` placeholders are.
//!
//! It knows MySQL's quoting: '...' and "..." strings (doubled quotes, and
//! backslash escapes unless NO_BACKSLASH_ESCAPES), `...` identifiers,
//! `#` and `-- ` comments to the end of the line, /* ... */ comments
//! (`/*! ... */` executable comments are code, and lexed as such).

/// One piece of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token<'a> {
    /// A keyword or unquoted identifier, as written.
    Word(&'a str),
    /// A quoted string (quotes included).
    Str(&'a str),
    /// A `quoted` identifier (backticks included).
    Quoted(&'a str),
    Number(&'a str),
    /// `@name` or `@@name` (the @s included).
    Variable(&'a str),
    /// A `?` placeholder, at this byte offset.
    Placeholder(usize),
    /// Any other character: punctuation, operators.
    Symbol(char),
    /// `;`, ending a statement, at this byte offset.
    End(usize),
}

/// Tokens of `sql`; `backslash_escapes` is false under NO_BACKSLASH_ESCAPES.
pub fn tokens(sql: &str, backslash_escapes: bool) -> Vec<Token<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => i += 1,
            b'#' => i = line_end(b, i),
            b'-' if b.get(i + 1) == Some(&b'-') && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) => {
                i = line_end(b, i)
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                if b.get(i + 2) == Some(&b'!') || (b.get(i + 2) == Some(&b'M') && b.get(i + 3) == Some(&b'!')) {
                    // Executable comment: its content is code; skip the marker and
                    // an optional version number, and the closing */ later.
                    i += if b[i + 2] == b'!' { 3 } else { 4 };
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    i = match sql[i + 2..].find("*/") {
                        Some(k) => i + 2 + k + 2,
                        None => b.len(),
                    };
                }
            }
            b'*' if b.get(i + 1) == Some(&b'/') => i += 2, // end of an executable comment
            b'\'' | b'"' => {
                let end = string_end(b, i, backslash_escapes);
                out.push(Token::Str(&sql[i..end]));
                i = end;
            }
            b'`' => {
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => break,
                        Some(b'`') if b.get(j + 1) == Some(&b'`') => j += 2,
                        Some(b'`') => {
                            j += 1;
                            break;
                        }
                        Some(_) => j += 1,
                    }
                }
                out.push(Token::Quoted(&sql[i..j]));
                i = j;
            }
            b'?' => {
                out.push(Token::Placeholder(i));
                i += 1;
            }
            b';' => {
                out.push(Token::End(i));
                i += 1;
            }
            b'@' => {
                let mut j = i + 1;
                if b.get(j) == Some(&b'@') {
                    j += 1;
                }
                if matches!(b.get(j), Some(b'\'' | b'"' | b'`')) {
                    j = if b[j] == b'`' { string_end(b, j, false) } else { string_end(b, j, backslash_escapes) };
                } else {
                    while j < b.len() && (b[j].is_ascii_alphanumeric() || b"_$.".contains(&b[j])) {
                        j += 1;
                    }
                }
                out.push(Token::Variable(&sql[i..j]));
                i = j;
            }
            c if c.is_ascii_digit() => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.') {
                    j += 1;
                }
                out.push(Token::Number(&sql[i..j]));
                i = j;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'$' || b[j] >= 0x80) {
                    j += 1;
                }
                // x'..', b'..', N'..', _charset'..': one string literal.
                if b.get(j) == Some(&b'\'') {
                    let end = string_end(b, j, backslash_escapes);
                    out.push(Token::Str(&sql[i..end]));
                    i = end;
                } else {
                    out.push(Token::Word(&sql[i..j]));
                    i = j;
                }
            }
            _ => {
                let ch = sql[i..].chars().next().expect("in bounds");
                out.push(Token::Symbol(ch));
                i += ch.len_utf8();
            }
        }
    }
    out
}

fn line_end(b: &[u8], i: usize) -> usize {
    b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |k| i + k + 1)
}

/// The end (exclusive) of the quoted string starting at `i`.
pub(crate) fn string_end(b: &[u8], i: usize, backslash_escapes: bool) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if backslash_escapes => j += 2,
            c if c == q && b.get(j + 1) == Some(&q) => j += 2,
            c if c == q => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// How many statements `sql` holds (empty ones between `;`s not counted).
pub fn statement_count(toks: &[Token<'_>]) -> usize {
    toks.split(|t| matches!(t, Token::End(_))).filter(|s| !s.is_empty()).count()
}

/// The text of each statement of `sql` (`toks` are its tokens), without
/// its `;`, trimmed; empty ones left out. A comment between statements goes
/// with the statement after it.
pub fn statement_texts<'a>(sql: &'a str, toks: &[Token<'_>]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut start = 0;
    let ends = toks.iter().filter_map(|t| match t {
        Token::End(at) => Some(*at),
        _ => None,
    });
    for end in ends.chain(std::iter::once(sql.len())) {
        let text = sql[start..end].trim();
        if !text.is_empty() {
            out.push(text);
        }
        start = (end + 1).min(sql.len());
    }
    out
}

/// Byte offsets of the `?` placeholders, in order.
pub fn placeholders(toks: &[Token<'_>]) -> Vec<usize> {
    toks.iter()
        .filter_map(|t| match t {
            Token::Placeholder(at) => Some(*at),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Token::*;

    #[test]
    fn statements_of_a_multi_statement_query() {
        let sql =
            "UPDATE t SET s = 'a;b' WHERE id = 1; ;\n DELETE FROM t WHERE id = 2 /* ; */;INSERT INTO t VALUES (3)";
        let texts = statement_texts(sql, &tokens(sql, true));
        assert_eq!(
            texts,
            ["UPDATE t SET s = 'a;b' WHERE id = 1", "DELETE FROM t WHERE id = 2 /* ; */", "INSERT INTO t VALUES (3)"]
        );
        assert_eq!(statement_texts("SELECT 1;", &tokens("SELECT 1;", true)), ["SELECT 1"]);
    }

    #[test]
    fn strings_comments_and_identifiers_hide_what_is_inside_them() {
        let sql = "SELECT 'a;b?', \"it''s\" -- x?\n, `we``ird?` # c;\n FROM t /* ?; */ WHERE x = ?";
        let t = tokens(sql, true);
        assert_eq!(
            t,
            [
                Word("SELECT"),
                Str("'a;b?'"),
                Symbol(','),
                Str("\"it''s\""),
                Symbol(','),
                Quoted("`we``ird?`"),
                Word("FROM"),
                Word("t"),
                Word("WHERE"),
                Word("x"),
                Symbol('='),
                Placeholder(sql.len() - 1),
            ]
        );
        assert_eq!(statement_count(&t), 1);
    }

    #[test]
    fn backslashes_escape_unless_the_mode_says_not() {
        let sql = r"SELECT 'a\'; DROP TABLE t; --'";
        assert_eq!(statement_count(&tokens(sql, true)), 1);
        assert_eq!(statement_count(&tokens(sql, false)), 3);
    }

    #[test]
    fn statements_variables_and_executable_comments() {
        let t = tokens("SET @a := 1; /*!40101 SET NAMES utf8 */; ;SELECT @@session.sql_mode, x'0A'", true);
        assert_eq!(statement_count(&t), 3);
        assert!(t.contains(&Variable("@a")) && t.contains(&Variable("@@session.sql_mode")));
        assert!(t.contains(&Word("NAMES")) && t.contains(&Str("x'0A'")));
        assert_eq!(tokens("a--b", true), [Word("a"), Symbol('-'), Symbol('-'), Word("b")]);
    }
}
