//! User variables (`@x`) that a data-changing statement reads. They live in
//! the leader's session only, so chorus reads their values there right
//! before the statement runs and logs them as `SET @x = <literal>` in the
//! statement's context (what MySQL's binlog does with its User_var events).
//! The literal keeps the variable's type: an integer, an exact DECIMAL, a
//! DOUBLE, a string in its character set and collation, a binary string, or
//! NULL. Pure: the names, the query that reads them and the literals.

use super::lex::Token;

/// The user variables `toks` names (not `@@system` ones), each once, as
/// written (`@x`, `` @`my var` ``); names compare without case, as MySQL's do.
pub fn names(toks: &[Token<'_>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in toks {
        if let Token::Variable(v) = t
            && !v.starts_with("@@")
            && v.len() > 1
            && !out.iter().any(|o| o.eq_ignore_ascii_case(v))
        {
            out.push(v.to_string());
        }
    }
    out
}

/// Columns [`capture_sql`] selects per variable.
pub const COLUMNS: usize = 4;

/// The query that reads every variable of `names` in a form [`assignments`]
/// turns into literals: value, its bytes, character set and collation.
pub fn capture_sql(names: &[String]) -> String {
    let cols: Vec<String> = names.iter().map(|v| format!("{v}, HEX({v}), CHARSET({v}), COLLATION({v})")).collect();
    format!("SELECT {}", cols.join(", "))
}

use crate::protocol::mysql::consts::column_type as ty;

/// One variable's value as a literal of its type: `value` as the server
/// printed it, `hex` its bytes, `charset`/`collation` as the server names them.
pub fn literal(column_type: u8, value: Option<&str>, hex: &str, charset: &str, collation: &str) -> String {
    let Some(value) = value else { return "NULL".to_string() };
    let plain_name = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let number = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    match column_type {
        // The server prints integers and DECIMALs exactly, and a DECIMAL
        // literal keeps its scale (1.50 stays DECIMAL(3,2)).
        ty::TINY | ty::SHORT | ty::LONG | ty::LONGLONG | ty::INT24 | ty::DECIMAL | ty::NEWDECIMAL if number => {
            value.to_string()
        }
        // ... and doubles with the digits that read back as the same double;
        // the exponent makes the literal a DOUBLE, not a DECIMAL.
        ty::FLOAT | ty::DOUBLE if number => {
            if value.contains(['e', 'E']) {
                value.to_string()
            } else {
                format!("{value}e0")
            }
        }
        // Not what HEX() prints (cannot happen with a server that answered
        // the capture query): the text the server printed, as UTF-8.
        _ if !hex.bytes().all(|b| b.is_ascii_hexdigit()) || !hex.len().is_multiple_of(2) => {
            let bytes: String = value.bytes().map(|b| format!("{b:02X}")).collect();
            format!("_utf8mb4 X'{bytes}'")
        }
        _ if charset == "binary" || !plain_name(charset) => format!("_binary X'{hex}'"),
        _ if plain_name(collation) => format!("_{charset} X'{hex}' COLLATE {collation}"),
        _ => format!("_{charset} X'{hex}'"),
    }
}

/// `SET` assignments for `names`, from the capture query's one row and its
/// column types.
pub fn assignments(names: &[String], types: &[u8], row: &[Option<String>]) -> Vec<(String, String)> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let at = |k: usize| row.get(i * COLUMNS + k).cloned().flatten();
            let ty = types.get(i * COLUMNS).copied().unwrap_or(253);
            let value = at(0);
            let expr = literal(
                ty,
                value.as_deref(),
                &at(1).unwrap_or_default(),
                &at(2).unwrap_or_default(),
                &at(3).unwrap_or_default(),
            );
            (name.clone(), expr)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::mysql::lex::tokens;

    #[test]
    fn names_are_user_variables_once_each_and_not_system_ones() {
        let toks = tokens("INSERT INTO t VALUES (@a, @A, @`b c`, @@session.sql_mode, '@x', @'d')", true);
        assert_eq!(names(&toks), vec!["@a", "@`b c`", "@'d'"]);
        assert!(names(&tokens("UPDATE t SET a = 1 -- @x", true)).is_empty());
        assert_eq!(capture_sql(&["@a".into()]), "SELECT @a, HEX(@a), CHARSET(@a), COLLATION(@a)");
    }

    #[test]
    fn literals_keep_the_variables_type() {
        assert_eq!(literal(8, Some("-5"), "FFFFFFFFFFFFFFFB", "binary", "binary"), "-5");
        assert_eq!(literal(8, Some("18446744073709551615"), "FF", "binary", "binary"), "18446744073709551615");
        assert_eq!(literal(246, Some("1.50"), "1", "binary", "binary"), "1.50");
        assert_eq!(literal(5, Some("0.30000000000000004"), "0", "binary", "binary"), "0.30000000000000004e0");
        assert_eq!(literal(5, Some("1e300"), "0", "binary", "binary"), "1e300");
        assert_eq!(
            literal(253, Some("x€"), "78E282AC", "utf8mb4", "utf8mb4_bin"),
            "_utf8mb4 X'78E282AC' COLLATE utf8mb4_bin"
        );
        assert_eq!(literal(252, Some("ab"), "6162", "binary", "binary"), "_binary X'6162'");
        assert_eq!(
            literal(253, Some(""), "", "utf8mb4", "utf8mb4_general_ci"),
            "_utf8mb4 X'' COLLATE utf8mb4_general_ci"
        );
        assert_eq!(literal(252, Some(""), "", "binary", "binary"), "_binary X''");
        assert_eq!(literal(6, None, "", "binary", "binary"), "NULL");
        assert_eq!(literal(8, None, "", "binary", "binary"), "NULL");
        // A name that could inject text is not used.
        assert_eq!(literal(253, Some("a"), "61", "x; DROP", "y"), "_binary X'61'");
        let row = vec![Some("7".to_string()), Some("7".into()), Some("binary".into()), Some("binary".into())];
        assert_eq!(assignments(&["@n".into()], &[8, 253, 253, 253], &row), vec![("@n".to_string(), "7".to_string())]);
    }
}
