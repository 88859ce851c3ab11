//! chorus's own settings, in SQL that any client can send: `SHOW chorus.x`,
//! `SET chorus.x = ...`, `RESET chorus.x`. chorus answers these itself; they
//! never reach a server (PostgreSQL would accept `SET chorus.x` as a
//! placeholder variable and silently do nothing).
//!
//! - `chorus.position`: the session's position in the log (see
//!   [`crate::consistency::Position::token`]). `SHOW` reads it after a write;
//!   `SET` on another connection makes that connection's reads wait for it.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// A setting chorus owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Position,
    /// Read-only: the nodes, roles, health and lag (see [`crate::status`]).
    Status,
}

impl Setting {
    pub fn name(self) -> &'static str {
        match self {
            Setting::Position => "chorus.position",
            Setting::Status => "chorus.status",
        }
    }
}

/// One statement addressed to chorus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(Setting),
    /// The value as written (quotes removed).
    Set(Setting, String),
    Reset(Setting),
}

/// Why a statement naming a chorus setting cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub sqlstate: &'static str,
    pub message: String,
    pub hint: &'static str,
}

const HINT: &str = "chorus knows chorus.position (SHOW it after a write, SET chorus.position = '<value>' \
                    on another connection to read at least that state) and chorus.status (SHOW it).";

/// Cheap test run on every query: could the text address a chorus setting?
pub fn mentions_chorus(sql: &str) -> bool {
    sql.as_bytes().windows(7).any(|w| w.eq_ignore_ascii_case(b"chorus."))
}

/// The chorus command `sql` is, `None` when it addresses no chorus setting,
/// or an error when it does but cannot be run as written.
pub fn parse(sql: &str) -> Option<Result<Command, CommandError>> {
    if !mentions_chorus(sql) {
        return None;
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let words: Vec<Token> = tokens.into_iter().filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF)).collect();
    // Statements: split on top-level semicolons, drop empty ones.
    let statements: Vec<&[Token]> = words.split(|t| *t == Token::SemiColon).filter(|s| !s.is_empty()).collect();
    let mut found = None;
    for st in &statements {
        if let Some(r) = statement(st) {
            if statements.len() > 1 {
                return Some(Err(CommandError {
                    sqlstate: "0A000",
                    message: "chorus settings must be sent as a query of their own, not with other statements".into(),
                    hint: HINT,
                }));
            }
            found = Some(r);
        }
    }
    found
}

fn word(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) => Some(w.value.to_ascii_lowercase()),
        _ => None,
    }
}

/// `chorus` `.` `name` at the start of `t` (quoted parts allowed): the name.
fn chorus_name(t: &[Token]) -> Option<(String, usize)> {
    match t {
        [Token::Word(a), Token::Period, Token::Word(b), ..] if a.value.eq_ignore_ascii_case("chorus") => {
            Some((b.value.to_ascii_lowercase(), 3))
        }
        // `"chorus.position"` as one quoted identifier.
        [Token::Word(w), ..] if w.quote_style.is_some() && w.value.to_ascii_lowercase().starts_with("chorus.") => {
            Some((w.value["chorus.".len()..].to_ascii_lowercase(), 1))
        }
        _ => None,
    }
}

fn setting(name: &str) -> Result<Setting, CommandError> {
    match name {
        "position" => Ok(Setting::Position),
        "status" => Ok(Setting::Status),
        other => Err(CommandError {
            sqlstate: "42704",
            message: format!("unrecognized chorus setting \"chorus.{other}\""),
            hint: HINT,
        }),
    }
}

fn statement(t: &[Token]) -> Option<Result<Command, CommandError>> {
    let head = word(t.first()?)?;
    match head.as_str() {
        "show" => {
            let (name, used) = chorus_name(&t[1..])?;
            Some(setting(&name).and_then(|s| end(&t[1 + used..]).map(|()| Command::Show(s))))
        }
        "reset" => {
            let (name, used) = chorus_name(&t[1..])?;
            Some(setting(&name).and_then(|s| end(&t[1 + used..]).map(|()| Command::Reset(s))))
        }
        "set" => {
            let mut at = 1;
            let scope = t.get(1).and_then(word);
            if scope.as_deref() == Some("session") {
                at += 1;
            }
            let local = scope.as_deref() == Some("local");
            if local {
                at += 1;
            }
            let (name, used) = chorus_name(&t[at..])?;
            at += used;
            if local {
                return Some(Err(CommandError {
                    sqlstate: "0A000",
                    message: format!("SET LOCAL is not supported for chorus.{name}: it applies to the session"),
                    hint: HINT,
                }));
            }
            let s = match setting(&name) {
                Ok(s) => s,
                Err(e) => return Some(Err(e)),
            };
            match t.get(at) {
                Some(Token::Eq) => at += 1,
                Some(w) if word(w).as_deref() == Some("to") => at += 1,
                _ => return Some(Err(syntax(s))),
            }
            let value = match t.get(at) {
                Some(Token::SingleQuotedString(v)) => v.clone(),
                Some(Token::Number(n, _)) => n.clone(),
                Some(Token::Word(w)) => w.value.clone(),
                _ => return Some(Err(syntax(s))),
            };
            Some(end(&t[at + 1..]).map(|()| Command::Set(s, value)))
        }
        _ => None,
    }
}

fn syntax(s: Setting) -> CommandError {
    CommandError {
        sqlstate: "42601",
        message: format!("syntax error in SET {}: expected SET {} = '<value>'", s.name(), s.name()),
        hint: HINT,
    }
}

fn end(rest: &[Token]) -> Result<(), CommandError> {
    if rest.is_empty() {
        return Ok(());
    }
    Err(CommandError {
        sqlstate: "42601",
        message: format!("syntax error at \"{}\" in a chorus setting statement", rest[0]),
        hint: HINT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_recognised_in_every_spelling() {
        let pos = Setting::Position;
        let cases: &[(&str, Option<Command>)] = &[
            ("SHOW chorus.position", Some(Command::Show(pos))),
            ("  show CHORUS.Position ;", Some(Command::Show(pos))),
            ("/* c */ SHOW \"chorus.position\"", Some(Command::Show(pos))),
            ("SET chorus.position = '42'", Some(Command::Set(pos, "42".into()))),
            ("set session chorus.position to 42;", Some(Command::Set(pos, "42".into()))),
            ("RESET chorus.position", Some(Command::Reset(pos))),
            ("SHOW chorus.status", Some(Command::Show(Setting::Status))),
            ("SELECT 1", None),
            ("SHOW search_path", None),
            ("SELECT * FROM chorus.position", None),
            ("SET search_path = chorus, public", None),
        ];
        for (sql, want) in cases {
            assert_eq!(parse(sql).map(|r| r.unwrap()), *want, "{sql}");
        }
    }

    #[test]
    fn mistakes_get_clear_errors() {
        let cases = [
            ("SHOW chorus.nope", "42704"),
            ("SET chorus.position", "42601"),
            ("SET chorus.position = ", "42601"),
            ("SET LOCAL chorus.position = '1'", "0A000"),
            ("SHOW chorus.position extra", "42601"),
            ("SELECT 1; SHOW chorus.position", "0A000"),
            ("SET chorus.position = '1'; SELECT 1", "0A000"),
        ];
        for (sql, code) in cases {
            let e = parse(sql).expect("addressed to chorus").expect_err(sql);
            assert_eq!(e.sqlstate, code, "{sql}: {}", e.message);
        }
    }
}
