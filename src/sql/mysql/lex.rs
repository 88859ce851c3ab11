//! A small MySQL lexer, just enough for chorus's decisions: where statements
//! end in a multi-statement query, the words of a statement with literals
//! and comments out of the way, and where its `?` placeholders are.
//!
//! It knows MySQL's quoting: '...' and "..." strings (doubled quotes, and
//! backslash escapes unless NO_BACKSLASH_ESCAPES), `...` identifiers,
//! `#` and `-- ` comments to the end of the line, /* ... */ comments
//! (`/*! ... */` executable comments are code, and lexed as such).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

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

/// The name a `quoted` identifier token stands for: backquotes off,
/// doubled ones single. An unterminated one (at the very end of the text)
/// is taken as far as it goes.
pub fn quoted_name(q: &str) -> String {
    let inner = q.strip_prefix('`').unwrap_or(q);
    inner.strip_suffix('`').unwrap_or(inner).replace("``", "`")
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
                if let Some(code) = executable_comment(b, i) {
                    // Executable comment the server runs: its content is code;
                    // skip the marker and version, and the closing */ later.
                    i = code;
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
                // A stored program's body holds `;`s of its own: the rest of
                // the query is that one statement (what the mariadb CLI
                // sends for a body it read under DELIMITER).
                if !defines_stored_program(statement_start(&out)) {
                    out.push(Token::End(i));
                }
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

/// The version of the server behind chorus, as executable comments compare
/// it (MAJOR * 10000 + MINOR * 100 + PATCH), and whether it is MariaDB.
/// Until the leader has greeted chorus: every versioned comment but
/// mariadb-dump's `/*M!999999\- enable the sandbox mode */` counts as code.
static SERVER_VERSION: AtomicU32 = AtomicU32::new(999_998);
static SERVER_IS_MARIADB: AtomicBool = AtomicBool::new(true);

/// Learn the server's version from its greeting (`5.5.5-10.11.6-MariaDB`,
/// `8.0.36`): a `/*!NNNNN ... */` comment is code only on servers at least
/// that version, `/*M!NNNNNN ... */` only on MariaDB, as the servers decide.
/// One value per process: chorus fronts one MySQL/MariaDB group.
pub fn set_server_version(greeting_version: &str) {
    if let Some((version, mariadb)) = parse_server_version(greeting_version) {
        SERVER_VERSION.store(version, Ordering::Relaxed);
        SERVER_IS_MARIADB.store(mariadb, Ordering::Relaxed);
    }
}

fn parse_server_version(v: &str) -> Option<(u32, bool)> {
    let mariadb = v.contains("MariaDB");
    let v = v.strip_prefix("5.5.5-").unwrap_or(v);
    let mut parts = v.split(|c: char| !c.is_ascii_digit()).take(3).map(|p| p.parse::<u32>().ok());
    let (major, minor, patch) = (parts.next()??, parts.next()??, parts.next()??);
    Some((major * 10000 + minor.min(99) * 100 + patch.min(99), mariadb))
}

/// If `/*` at `i` opens an executable comment the server runs, where its
/// code starts (after `/*!`, `/*M!` and the version number).
pub(crate) fn executable_comment(b: &[u8], i: usize) -> Option<usize> {
    code_start(b, i, SERVER_VERSION.load(Ordering::Relaxed), SERVER_IS_MARIADB.load(Ordering::Relaxed))
}

/// [`executable_comment`] for a server of `version`.
fn code_start(b: &[u8], i: usize, version: u32, mariadb: bool) -> Option<usize> {
    let (marker, mariadb_only) = match (b.get(i + 2), b.get(i + 3)) {
        (Some(b'!'), _) => (3, false),
        (Some(b'M'), Some(b'!')) => (4, true),
        _ => return None,
    };
    if mariadb_only && !mariadb {
        return None;
    }
    let start = i + marker;
    let digits = b[start..].iter().take(6).take_while(|c| c.is_ascii_digit()).count();
    if digits < 5 {
        return Some(start);
    }
    let needs: u32 = std::str::from_utf8(&b[start..start + digits]).ok()?.parse().ok()?;
    (needs <= version).then_some(start + digits)
}

/// The tokens of the statement being lexed (after the last `;`).
fn statement_start<'t, 'a>(out: &'t [Token<'a>]) -> &'t [Token<'a>] {
    let from = out.iter().rposition(|t| matches!(t, Token::End(_))).map_or(0, |i| i + 1);
    &out[from..]
}

/// `CREATE [OR REPLACE] [DEFINER = user] [AGGREGATE] {PROCEDURE | FUNCTION |
/// TRIGGER | EVENT | PACKAGE}`: a statement whose body may be a compound
/// statement (BEGIN ... END with `;` between its statements).
pub fn defines_stored_program(toks: &[Token<'_>]) -> bool {
    let word = |i: usize, w: &str| matches!(toks.get(i), Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
    if !word(0, "CREATE") {
        return false;
    }
    let mut i = 1;
    if word(i, "OR") && word(i + 1, "REPLACE") {
        i += 2;
    }
    if word(i, "DEFINER") {
        i += 1;
        if toks.get(i) == Some(&Token::Symbol('=')) {
            i += 1;
        }
        if word(i, "CURRENT_USER") {
            i += 1;
            if toks.get(i) == Some(&Token::Symbol('(')) && toks.get(i + 1) == Some(&Token::Symbol(')')) {
                i += 2;
            }
        } else {
            i += 1; // the user's name; then its @host
            if matches!(toks.get(i), Some(Token::Variable(v)) if !v.starts_with("@@")) {
                i += 1;
            }
        }
    }
    if word(i, "AGGREGATE") {
        i += 1;
    }
    ["PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "PACKAGE"].iter().any(|w| word(i, w))
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

    #[test]
    fn a_stored_programs_body_is_one_statement() {
        let body = "CREATE DEFINER=`root`@`localhost` PROCEDURE p() BEGIN INSERT INTO t VALUES (1); SELECT 1; END";
        assert_eq!(statement_count(&tokens(body, true)), 1);
        let dump = "/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER tr BEFORE INSERT ON o \
                    FOR EACH ROW BEGIN SET NEW.n = 1; SET NEW.m = 2; END */";
        assert_eq!(statement_count(&tokens(dump, true)), 1);
        for sql in [
            "CREATE OR REPLACE FUNCTION f() RETURNS INT BEGIN DECLARE x INT; RETURN 1; END",
            "CREATE DEFINER = CURRENT_USER() TRIGGER t AFTER UPDATE ON x FOR EACH ROW BEGIN END; ",
            "create definer='app'@'%' event e on schedule every 1 day do begin delete from t; end",
            "CREATE AGGREGATE FUNCTION g(x INT) RETURNS INT BEGIN RETURN 1; END",
        ] {
            assert_eq!(statement_count(&tokens(sql, true)), 1, "{sql}");
        }
        // Other statements before one still split; the program takes the rest.
        assert_eq!(
            statement_count(&tokens("DROP PROCEDURE IF EXISTS p; CREATE PROCEDURE p() BEGIN SELECT 1; END", true)),
            2
        );
        assert_eq!(statement_count(&tokens("CREATE TABLE function (a INT); SELECT 1", true)), 2);
        assert_eq!(statement_count(&tokens("CREATE VIEW v AS SELECT 1; SELECT 2", true)), 2);
    }

    #[test]
    fn versioned_comments_are_code_only_where_the_server_runs_them() {
        assert_eq!(parse_server_version("5.5.5-10.11.6-MariaDB-0+deb12u1"), Some((101106, true)));
        assert_eq!(parse_server_version("8.0.36"), Some((80036, false)));
        assert_eq!(parse_server_version("11.4.2-MariaDB"), Some((110402, true)));
        fn maria(sql: &str) -> Option<&str> {
            code_start(sql.as_bytes(), 0, 101106, true).map(|i| &sql[i..])
        }
        fn mysql(sql: &str) -> Option<&str> {
            code_start(sql.as_bytes(), 0, 80036, false).map(|i| &sql[i..])
        }
        assert_eq!(maria("/*! SET a=1 */"), Some(" SET a=1 */"));
        assert_eq!(maria("/*!40101 SET a=1 */"), Some(" SET a=1 */"));
        assert_eq!(maria("/*!80016 DEFAULT ENCRYPTION='N' */"), Some(" DEFAULT ENCRYPTION='N' */"));
        assert_eq!(maria("/*!110400 x */"), None);
        assert_eq!(maria("/*M!100100 SET a=1 */"), Some(" SET a=1 */"));
        assert_eq!(maria("/*M!999999 enable the sandbox mode */"), None);
        assert_eq!(mysql("/*M!100100 SET a=1 */"), None);
        assert_eq!(mysql("/*!80016 x */"), Some(" x */"));
        assert_eq!(mysql("/*!80037 x */"), None);
        assert_eq!(maria("/* plain */"), None);
        // mariadb-dump's first line, as the mariadb CLI sends it with the next statement.
        let sql =
            "/*M!999999 enable the sandbox mode */ \n/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */";
        let t = tokens(sql, true);
        assert_eq!(t[0], Word("SET"), "{t:?}");
        assert_eq!(statement_count(&t), 1);
    }
}
