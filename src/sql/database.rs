//! Pure: what a `CREATE DATABASE` or `DROP DATABASE` statement does to the
//! set of databases, read from its tokens: the database it names, and for a
//! CREATE the template it copies.
//!
//! These statements change no database's contents, so they have no place in
//! any database's log: chorus runs them on the leader as sent and mirrors
//! them on the followers itself (`session::databases`,
//! `replication::Replication::{created, retire}`).

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer, Word};

/// One `CREATE DATABASE` / `DROP DATABASE` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseStmt {
    /// The database, folded as PostgreSQL folds identifiers.
    pub name: String,
    pub drop: bool,
    /// `CREATE ... TEMPLATE x` (folded), unless it is `DEFAULT`.
    pub template: Option<String>,
}

impl DatabaseStmt {
    /// Does the new database start as a copy of another database's contents
    /// (not one of the standard, empty templates)?
    pub fn copies_a_database(&self) -> bool {
        self.template.as_deref().is_some_and(|t| t != "template0" && t != "template1")
    }
}

/// The statement, if `text` is one `CREATE DATABASE` or `DROP DATABASE`
/// chorus can read (its name a plain or quoted identifier).
pub fn parse(text: &str) -> Option<DatabaseStmt> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, text).with_unescape(true).tokenize().ok()?;
    let mut it = tokens.into_iter().filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF | Token::SemiColon));
    let drop = match word(it.next()?)?.as_str() {
        "create" => false,
        "drop" => true,
        _ => return None,
    };
    if word(it.next()?)? != "database" {
        return None;
    }
    let mut next = it.next()?;
    if drop && is_keyword(&next, "if") {
        if !is_keyword(&it.next()?, "exists") {
            return None;
        }
        next = it.next()?;
    }
    let name = word(next)?;
    let mut template = None;
    if !drop {
        // Options: `[WITH] name [=] value ...`; only TEMPLATE matters here.
        let rest: Vec<Token> = it.collect();
        for (i, t) in rest.iter().enumerate() {
            if is_keyword(t, "template") {
                let value = rest[i + 1..].iter().find(|t| !matches!(t, Token::Eq))?;
                if !is_keyword(value, "default") {
                    template = Some(word(value.clone()).or_else(|| string(value))?);
                }
                break;
            }
        }
    }
    Some(DatabaseStmt { name, drop, template })
}

/// An identifier folded as PostgreSQL does (unquoted: lower-cased).
fn word(t: Token) -> Option<String> {
    match t {
        Token::Word(Word { value, quote_style: None, .. }) => Some(value.to_lowercase()),
        Token::Word(Word { value, quote_style: Some('"'), .. }) => Some(value),
        _ => None,
    }
}

/// A template may also be written as a string literal.
fn string(t: &Token) -> Option<String> {
    match t {
        Token::SingleQuotedString(s) => Some(s.clone()),
        _ => None,
    }
}

fn is_keyword(t: &Token, kw: &str) -> bool {
    matches!(t, Token::Word(Word { value, quote_style: None, .. }) if value.eq_ignore_ascii_case(kw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, template: Option<&str>) -> Option<DatabaseStmt> {
        Some(DatabaseStmt { name: name.into(), drop: false, template: template.map(Into::into) })
    }
    fn drop(name: &str) -> Option<DatabaseStmt> {
        Some(DatabaseStmt { name: name.into(), drop: true, template: None })
    }

    #[test]
    fn reads_names_and_templates() {
        let cases: &[(&str, Option<DatabaseStmt>)] = &[
            ("CREATE DATABASE shop", create("shop", None)),
            ("create database Shop;", create("shop", None)),
            ("CREATE DATABASE \"Test DB\"", create("Test DB", None)),
            ("CREATE DATABASE \"a\"\"b\"", create("a\"b", None)),
            ("CREATE DATABASE /* c */ shop -- x\n", create("shop", None)),
            ("CREATE DATABASE t WITH OWNER = app ENCODING 'UTF8'", create("t", None)),
            ("CREATE DATABASE t TEMPLATE template0 LC_COLLATE 'C'", create("t", Some("template0"))),
            ("CREATE DATABASE t WITH TEMPLATE = \"Src\"", create("t", Some("Src"))),
            ("CREATE DATABASE t TEMPLATE = DEFAULT", create("t", None)),
            ("CREATE DATABASE t TEMPLATE 'src'", create("t", Some("src"))),
            ("DROP DATABASE shop", drop("shop")),
            ("DROP DATABASE IF EXISTS \"Shop\" WITH (FORCE)", drop("Shop")),
            ("drop database if exists test_app", drop("test_app")),
            ("CREATE TABLE database (x int)", None),
            ("DROP DATABASE", None),
            ("DROP DATABASE IF shop", None),
            ("CREATE DATABASE 'x'", None),
            ("CREATE DATABASE t TEMPLATE", None),
        ];
        for (sql, want) in cases {
            assert_eq!(&parse(sql), want, "{sql}");
        }
    }

    #[test]
    fn standard_templates_copy_nothing() {
        assert!(!parse("CREATE DATABASE t").unwrap().copies_a_database());
        assert!(!parse("CREATE DATABASE t TEMPLATE template1").unwrap().copies_a_database());
        assert!(!parse("CREATE DATABASE t TEMPLATE template0").unwrap().copies_a_database());
        assert!(parse("CREATE DATABASE t TEMPLATE test_app").unwrap().copies_a_database());
    }
}
