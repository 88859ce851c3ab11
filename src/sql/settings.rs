//! Session settings a statement changes: SET / RESET / DISCARD ALL, from the AST,
//! or from tokens for the SET forms sqlparser does not parse (`SET SCHEMA 'x'`,
//! `SET XML OPTION ...`, `RESET TIME ZONE` ...).
//!
//! Names are lower-case and canonical, so a `SET TIME ZONE` and a later
//! `RESET timezone` (or a startup `TimeZone`) name the same setting.
//! Transaction-scoped forms (`SET LOCAL ...`, `SET TRANSACTION ...`) change
//! nothing that outlives the transaction and give no [`SettingChange`].
//! Savepoints are reported too: `ROLLBACK TO` a savepoint undoes the SETs after it.

use sqlparser::ast::{
    ContextModifier, DiscardObject, Ident, ObjectName, ObjectNamePart, Reset, ResetStatement, Set, Statement,
};
use sqlparser::tokenizer::{Token, TokenWithSpan};

use super::SettingChange;

/// What a parsed SET-like statement changes, if it is one.
/// `None`: not a setting statement. `Some(None)`: a setting statement that leaves
/// the session's settings as they are (LOCAL, TRANSACTION ...).
pub(super) fn from_statement(stmt: &Statement, sql: &str) -> Option<Option<SettingChange>> {
    let set = |name: &str| Some(Some(SettingChange::Set { name: name.to_string(), sql: sql.to_string() }));
    match stmt {
        Statement::Set(s) => match s {
            Set::SingleAssignment { scope, variable, .. } => {
                if *scope == Some(ContextModifier::Local) {
                    return Some(None);
                }
                set(&setting_name(variable))
            }
            Set::SetTimeZone { local: true, .. } => Some(None),
            Set::SetTimeZone { local: false, .. } => set("timezone"),
            Set::SetNames { .. } | Set::SetNamesDefault {} => set("client_encoding"),
            Set::SetRole { context_modifier: Some(ContextModifier::Local), .. } => Some(None),
            Set::SetRole { .. } => set("role"),
            Set::SetSessionAuthorization(p) if p.scope == ContextModifier::Local => Some(None),
            Set::SetSessionAuthorization(_) => set("session_authorization"),
            Set::SetTransaction { session: true, .. } => set("session_characteristics"),
            Set::SetTransaction { session: false, .. } => Some(None),
            // Not PostgreSQL syntax (MySQL / Snowflake / MS-SQL forms): the server will reject it.
            Set::ParenthesizedAssignments { .. } | Set::MultipleAssignments { .. } | Set::SetSessionParam(_) => {
                Some(None)
            }
        },
        Statement::Reset(ResetStatement { reset }) => Some(Some(match reset {
            Reset::ALL => SettingChange::ResetAll,
            Reset::SessionAuthorization => SettingChange::Reset { name: "session_authorization".into() },
            Reset::ConfigurationParameter(name) => SettingChange::Reset { name: setting_name(name) },
        })),
        Statement::Discard { object_type: DiscardObject::ALL } => Some(Some(SettingChange::ResetAll)),
        Statement::Savepoint { name } => Some(Some(SettingChange::Savepoint { name: savepoint_name(name) })),
        Statement::Rollback { savepoint: Some(name), .. } => {
            Some(Some(SettingChange::RollbackTo { name: savepoint_name(name) }))
        }
        Statement::ReleaseSavepoint { name } => Some(Some(SettingChange::Release { name: savepoint_name(name) })),
        _ => None,
    }
}

/// A savepoint's name as PostgreSQL folds it.
pub(super) fn savepoint_name(id: &Ident) -> String {
    if id.quote_style.is_some() { id.value.clone() } else { id.value.to_lowercase() }
}

/// A setting's name as PostgreSQL looks it up: case-insensitive, even quoted.
fn setting_name(name: &ObjectName) -> String {
    let mut out = String::new();
    for (i, part) in name.0.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        match part {
            ObjectNamePart::Identifier(id) => out.push_str(&id.value.to_lowercase()),
            other => out.push_str(&other.to_string().to_lowercase()),
        }
    }
    out
}

/// Hand parser for the SET / RESET forms sqlparser rejects:
/// `SET [SESSION | LOCAL] { name {TO | =} ... | SCHEMA x | NAMES x | TIME ZONE x |
/// XML OPTION x | ROLE x | SESSION AUTHORIZATION x | SESSION CHARACTERISTICS ... }`
/// and `RESET { name | ALL | TIME ZONE | SESSION AUTHORIZATION }`.
/// Same convention as [`from_statement`]; `None` when the text is no such form.
pub(super) fn from_tokens(tokens: &[TokenWithSpan], sql: &str) -> Option<Option<SettingChange>> {
    let toks: Vec<&Token> =
        tokens.iter().map(|t| &t.token).filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF)).collect();
    let word = |i: usize| match toks.get(i) {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    };
    let is = |i: usize, kw: &str| word(i).as_deref() == Some(kw);
    let set = |name: &str| Some(Some(SettingChange::Set { name: name.to_string(), sql: sql.to_string() }));
    if is(0, "SET") {
        let mut i = 1;
        if is(i, "LOCAL") {
            return Some(None);
        }
        if is(i, "SESSION") && !is(i + 1, "AUTHORIZATION") && !is(i + 1, "CHARACTERISTICS") {
            i += 1;
        }
        // (canonical name, number of words naming it)
        let special = match word(i).as_deref() {
            Some("SCHEMA") => Some(("search_path", 1)),
            Some("NAMES") => Some(("client_encoding", 1)),
            Some("ROLE") => Some(("role", 1)),
            Some("TIME") if is(i + 1, "ZONE") => Some(("timezone", 2)),
            Some("XML") if is(i + 1, "OPTION") => Some(("xmloption", 2)),
            Some("SESSION") if is(i + 1, "AUTHORIZATION") => Some(("session_authorization", 2)),
            Some("SESSION") if is(i + 1, "CHARACTERISTICS") => Some(("session_characteristics", 2)),
            Some("TRANSACTION") => return Some(None),
            _ => None,
        };
        if let Some((name, words)) = special {
            return if toks.len() > i + words { set(name) } else { None };
        }
        let (name, next) = dotted_name(&toks, i)?;
        return match toks.get(next) {
            Some(Token::Eq) if toks.len() > next + 1 => set(&name),
            Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("TO") && toks.len() > next + 1 => set(&name),
            _ => None,
        };
    }
    if is(0, "RESET") {
        let change = match toks.len() {
            2 if is(1, "ALL") => SettingChange::ResetAll,
            3 if is(1, "TIME") && is(2, "ZONE") => SettingChange::Reset { name: "timezone".into() },
            3 if is(1, "SESSION") && is(2, "AUTHORIZATION") => {
                SettingChange::Reset { name: "session_authorization".into() }
            }
            _ => match dotted_name(&toks, 1)? {
                (name, next) if next == toks.len() => SettingChange::Reset { name },
                _ => return None,
            },
        };
        return Some(Some(change));
    }
    None
}

/// `name[.name]*` starting at `i`, lower-cased; returns it and the index after it.
fn dotted_name(toks: &[&Token], mut i: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    loop {
        match toks.get(i) {
            Some(Token::Word(w)) => name.push_str(&w.value.to_lowercase()),
            _ => return None,
        }
        i += 1;
        if toks.get(i) != Some(&&Token::Period) {
            return Some((name, i));
        }
        name.push('.');
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SettingChange, classify};

    fn set(name: &str, sql: &str) -> SettingChange {
        SettingChange::Set { name: name.into(), sql: sql.into() }
    }
    fn reset(name: &str) -> SettingChange {
        SettingChange::Reset { name: name.into() }
    }

    /// Through `classify`, so both the AST path and the token fallback are covered.
    #[test]
    fn settings_of_single_statements() {
        let cases: Vec<(&str, Vec<SettingChange>)> = vec![
            (
                "SET search_path TO public, \"My Schema\"",
                vec![set("search_path", "SET search_path TO public, \"My Schema\"")],
            ),
            ("set search_path = a;", vec![set("search_path", "set search_path = a")]),
            (
                "SET SESSION statement_timeout = '5s'",
                vec![set("statement_timeout", "SET SESSION statement_timeout = '5s'")],
            ),
            ("SET \"TimeZone\" = 'UTC'", vec![set("timezone", "SET \"TimeZone\" = 'UTC'")]),
            ("SET TIMEZONE TO -7", vec![set("timezone", "SET TIMEZONE TO -7")]),
            ("SET TIME ZONE 'Europe/Paris'", vec![set("timezone", "SET TIME ZONE 'Europe/Paris'")]),
            ("SET SESSION TIME ZONE DEFAULT", vec![set("timezone", "SET SESSION TIME ZONE DEFAULT")]),
            ("SET NAMES 'UTF8'", vec![set("client_encoding", "SET NAMES 'UTF8'")]),
            ("SET SCHEMA 'app'", vec![set("search_path", "SET SCHEMA 'app'")]),
            ("SET SESSION SCHEMA 'app'", vec![set("search_path", "SET SESSION SCHEMA 'app'")]),
            ("SET ROLE bob", vec![set("role", "SET ROLE bob")]),
            ("SET SESSION ROLE NONE", vec![set("role", "SET SESSION ROLE NONE")]),
            ("SET SESSION AUTHORIZATION bob", vec![set("session_authorization", "SET SESSION AUTHORIZATION bob")]),
            (
                "SET SESSION AUTHORIZATION DEFAULT",
                vec![set("session_authorization", "SET SESSION AUTHORIZATION DEFAULT")],
            ),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                vec![set("session_characteristics", "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")],
            ),
            ("SET XML OPTION DOCUMENT", vec![set("xmloption", "SET XML OPTION DOCUMENT")]),
            ("SET myapp.user_id = '42'", vec![set("myapp.user_id", "SET myapp.user_id = '42'")]),
            ("SET datestyle TO iso, mdy", vec![set("datestyle", "SET datestyle TO iso, mdy")]),
            ("SET statement_timeout TO DEFAULT", vec![set("statement_timeout", "SET statement_timeout TO DEFAULT")]),
            ("SET LOCAL statement_timeout = 5", vec![]),
            ("SET LOCAL TIME ZONE 'UTC'", vec![]),
            ("SET LOCAL ROLE bob", vec![]),
            ("SET LOCAL SESSION AUTHORIZATION bob", vec![]),
            ("SET LOCAL SCHEMA 'x'", vec![]),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", vec![]),
            ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", vec![]),
            ("RESET search_path", vec![reset("search_path")]),
            ("RESET \"TimeZone\"", vec![reset("timezone")]),
            ("RESET TIME ZONE", vec![reset("timezone")]),
            ("RESET ROLE", vec![reset("role")]),
            ("RESET SESSION AUTHORIZATION", vec![reset("session_authorization")]),
            ("RESET myapp.user_id", vec![reset("myapp.user_id")]),
            ("RESET ALL", vec![SettingChange::ResetAll]),
            ("DISCARD ALL", vec![SettingChange::ResetAll]),
            ("DISCARD PLANS", vec![]),
            ("SELECT 1", vec![]),
            ("SAVEPOINT Sp1", vec![SettingChange::Savepoint { name: "sp1".into() }]),
            ("ROLLBACK TO SAVEPOINT \"Sp1\"", vec![SettingChange::RollbackTo { name: "Sp1".into() }]),
            ("ROLLBACK TO sp1", vec![SettingChange::RollbackTo { name: "sp1".into() }]),
            ("RELEASE SAVEPOINT sp1", vec![SettingChange::Release { name: "sp1".into() }]),
            ("RELEASE sp1", vec![SettingChange::Release { name: "sp1".into() }]),
            ("ROLLBACK", vec![]),
        ];
        for (sql, want) in cases {
            let c = classify(sql);
            assert_eq!(c.settings, want, "{sql}");
            assert_eq!(c.leader_reason, None, "{sql}");
            assert_eq!(c.statement_count, 1, "{sql}");
        }
    }

    #[test]
    fn settings_in_multi_statement_texts_keep_order_and_own_text() {
        let c = classify("SET search_path = a; SELECT 1; SET SCHEMA 'b' ; RESET ALL; SET TIME ZONE 'UTC'");
        assert_eq!(
            c.settings,
            vec![
                set("search_path", "SET search_path = a"),
                set("search_path", "SET SCHEMA 'b'"),
                SettingChange::ResetAll,
                set("timezone", "SET TIME ZONE 'UTC'"),
            ]
        );
        assert_eq!(c.statement_count, 5);
        assert_eq!(c.leader_reason, None);
    }

    #[test]
    fn malformed_set_is_unparsed() {
        for sql in ["SET", "SET search_path", "SET x =", "RESET", "RESET a b", "SET TIME ZONE"] {
            let c = classify(sql);
            assert_eq!(c.leader_reason, Some(super::super::LeaderReason::Unparsed), "{sql}");
            assert!(c.settings.is_empty(), "{sql}");
        }
    }
}
