//! Splits one query text into its statements with a single tokenization, so that
//! each statement is parsed on its own (a statement sqlparser does not know does
//! not hide the ones around it) and its original text is at hand for replay.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

/// One statement of a query text.
pub(super) struct Chunk<'a> {
    /// Its tokens, whitespace and comments included (the parser skips them),
    /// semicolons excluded.
    pub tokens: Vec<TokenWithSpan>,
    /// Its original text, from the first to the last significant token.
    pub text: &'a str,
}

/// The text does not tokenize (unterminated quote or comment ...).
#[derive(Debug)]
pub(super) struct TokenizeError;

/// Tokenizes `sql` and cuts it into statements; empty statements are dropped.
pub(super) fn split(sql: &str) -> Result<Vec<Chunk<'_>>, TokenizeError> {
    let tokens = tokenize(sql)?;
    let lines = LineIndex::new(sql);
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut routine = RoutineBody::default();
    for t in tokens {
        match &t.token {
            Token::SemiColon if routine.depth == 0 => {
                push_chunk(sql, &lines, std::mem::take(&mut current), &mut chunks);
                routine = RoutineBody::default();
                continue;
            }
            Token::Whitespace(_) | Token::EOF => {}
            other => routine.see(other),
        }
        current.push(t);
    }
    push_chunk(sql, &lines, current, &mut chunks);
    Ok(chunks)
}

/// PostgreSQL tokens of `sql`, with locations.
pub(super) fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>, TokenizeError> {
    Tokenizer::new(&PostgreSqlDialect {}, sql).with_unescape(true).tokenize_with_location().map_err(|_| TokenizeError)
}

fn push_chunk<'a>(sql: &'a str, lines: &LineIndex, tokens: Vec<TokenWithSpan>, chunks: &mut Vec<Chunk<'a>>) {
    let significant = |t: &&TokenWithSpan| !matches!(t.token, Token::Whitespace(_) | Token::EOF);
    let (Some(first), Some(last)) = (tokens.iter().find(significant), tokens.iter().rev().find(significant)) else {
        return;
    };
    let (from, to) = (lines.offset(sql, first.span.start), lines.offset(sql, last.span.end));
    let text = sql.get(from..to.max(from)).unwrap_or("").trim();
    chunks.push(Chunk { tokens, text });
}

/// Tracks SQL-standard routine bodies (`CREATE FUNCTION ... BEGIN ATOMIC ...; END`),
/// whose semicolons do not end the statement. Same rule as psql: inside
/// `CREATE [OR REPLACE] FUNCTION|PROCEDURE`, BEGIN and CASE open a block, END closes one.
#[derive(Default)]
struct RoutineBody {
    /// Leading keywords seen so far (up to 4), to recognise the statement.
    head: [Option<Keyword>; 4],
    seen: usize,
    is_routine: bool,
    depth: u32,
}

impl RoutineBody {
    fn see(&mut self, token: &Token) {
        let kw = match token {
            Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
            _ => None,
        };
        if self.seen < self.head.len() {
            self.head[self.seen] = kw;
            self.seen += 1;
            let routine = |k: Option<Keyword>| matches!(k, Some(Keyword::FUNCTION | Keyword::PROCEDURE));
            self.is_routine = self.head[0] == Some(Keyword::CREATE)
                && (routine(self.head[1])
                    || (self.head[1] == Some(Keyword::OR)
                        && self.head[2] == Some(Keyword::REPLACE)
                        && routine(self.head[3])));
            return;
        }
        if self.is_routine {
            match kw {
                Some(Keyword::BEGIN | Keyword::CASE) => self.depth += 1,
                Some(Keyword::END) => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }
}

/// Converts the tokenizer's (line, column) locations, columns counted in
/// characters, to byte offsets.
struct LineIndex {
    /// Byte offset where each line starts; line 1 at index 0.
    starts: Vec<usize>,
    ascii: bool,
}

impl LineIndex {
    fn new(sql: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(sql.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1));
        LineIndex { starts, ascii: sql.is_ascii() }
    }

    fn offset(&self, sql: &str, loc: Location) -> usize {
        let (line, col) = (loc.line as usize, loc.column as usize);
        if line == 0 || line > self.starts.len() {
            return sql.len();
        }
        let start = self.starts[line - 1];
        let col = col.saturating_sub(1);
        if self.ascii {
            return (start + col).min(sql.len());
        }
        sql[start..].char_indices().nth(col).map_or(sql.len(), |(i, _)| start + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<&str> {
        split(sql).unwrap().into_iter().map(|c| c.text).collect()
    }

    #[test]
    fn splits_statements_keeping_original_text() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("   ", &[]),
            (";;; ;", &[]),
            ("-- only a comment", &[]),
            ("/* block */ ; -- x", &[]),
            ("SELECT 1", &["SELECT 1"]),
            ("SELECT 1;", &["SELECT 1"]),
            ("  SELECT 1 ;  ", &["SELECT 1"]),
            ("BEGIN; INSERT INTO t VALUES (1); COMMIT;", &["BEGIN", "INSERT INTO t VALUES (1)", "COMMIT"]),
            ("SELECT 'a;b'; SELECT \"c;d\"", &["SELECT 'a;b'", "SELECT \"c;d\""]),
            ("SELECT $$ ; $$; SELECT $x$;$x$", &["SELECT $$ ; $$", "SELECT $x$;$x$"]),
            ("SELECT 1 -- c;\n; SELECT 2", &["SELECT 1", "SELECT 2"]),
            ("/* a; b */ SELECT 1 /* c */", &["SELECT 1"]),
            ("SET x TO 'it''s'; RESET x", &["SET x TO 'it''s'", "RESET x"]),
            ("SELECT 'é';\nSELECT 'ü' , 2", &["SELECT 'é'", "SELECT 'ü' , 2"]),
            ("SELECT\n  a\n  FROM t;\n\nSELECT 2", &["SELECT\n  a\n  FROM t", "SELECT 2"]),
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SELECT 3",
                &["CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END", "SELECT 3"],
            ),
            (
                "create or replace procedure p() begin atomic select case when true then 1 end; end; select 4",
                &["create or replace procedure p() begin atomic select case when true then 1 end; end", "select 4"],
            ),
            ("BEGIN; SELECT CASE WHEN true THEN 1 END; END", &["BEGIN", "SELECT CASE WHEN true THEN 1 END", "END"]),
        ];
        for (sql, want) in cases {
            assert_eq!(texts(sql), *want, "{sql:?}");
        }
    }

    #[test]
    fn untokenizable_text_is_an_error() {
        assert!(split("SELECT 'unterminated").is_err());
        assert!(split("SELECT $$ unterminated").is_err());
    }

    #[test]
    fn chunk_tokens_exclude_semicolons() {
        let chunks = split("SELECT 1; SELECT 2").unwrap();
        for c in &chunks {
            assert!(c.tokens.iter().all(|t| t.token != Token::SemiColon));
        }
        assert_eq!(chunks.len(), 2);
    }
}
