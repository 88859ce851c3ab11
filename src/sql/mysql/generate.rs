//! Values MySQL generates differently on every server that chorus can fix
//! in the text instead: in an INSERT ... VALUES each `UUID()` /
//! `UUID_SHORT()` call is evaluated once per occurrence, so chorus replaces
//! each with a literal it generated, and the leader and the followers store
//! the same value. (Evaluated per row, as in INSERT ... SELECT or UPDATE,
//! one literal would be wrong: those are refused by the classifier.)

use super::lex::Token;

/// The functions [`substitute`] replaces.
pub const GENERATED: &[&str] = &["UUID", "UUID_SHORT"];

/// Is this an INSERT/REPLACE whose rows are all listed in VALUES (no query)?
pub fn values_only(toks: &[Token<'_>]) -> bool {
    let verb = matches!(toks.first(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("INSERT") || w.eq_ignore_ascii_case("REPLACE"));
    let values = toks
        .iter()
        .any(|t| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case("VALUES") || w.eq_ignore_ascii_case("VALUE")));
    let query = toks
        .iter()
        .any(|t| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case("SELECT") || w.eq_ignore_ascii_case("TABLE")));
    verb && values && !query
}

/// `sql` with each generated-value call replaced by `make(function)`; None
/// when there is none. `toks` are `sql`'s tokens.
pub fn substitute(sql: &str, toks: &[Token<'_>], make: impl FnMut(&str) -> String) -> Option<String> {
    replace_calls(sql, toks, GENERATED, make)
}

/// `sql` with each call without arguments of one of `functions` (upper
/// case, unqualified) replaced by `make(function)`; None when there is none.
pub fn replace_calls(
    sql: &str,
    toks: &[Token<'_>],
    functions: &[&'static str],
    mut make: impl FnMut(&str) -> String,
) -> Option<String> {
    let base = sql.as_ptr() as usize;
    let mut out = String::with_capacity(sql.len() + 64);
    let mut from = 0;
    for (i, t) in toks.iter().enumerate() {
        let Token::Word(w) = t else { continue };
        let Some(f) = functions.iter().find(|f| w.eq_ignore_ascii_case(f)) else { continue };
        let qualified = i > 0 && toks[i - 1] == Token::Symbol('.');
        if qualified || toks.get(i + 1) != Some(&Token::Symbol('(')) || toks.get(i + 2) != Some(&Token::Symbol(')')) {
            continue;
        }
        let start = w.as_ptr() as usize - base;
        let close = start + sql[start..].find(')')?;
        out.push_str(&sql[from..start]);
        out.push_str(&make(f));
        from = close + 1;
    }
    if from == 0 {
        return None;
    }
    out.push_str(&sql[from..]);
    Some(out)
}

/// A value like MySQL's UUID() (36 characters, version 1 layout: the time
/// in 100 ns steps, a random clock sequence and node), as a string literal.
pub fn uuid_literal() -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    // 100 ns intervals since 1582-10-15, as version 1 counts.
    let t = now.as_nanos() as u64 / 100 + 0x01B2_1DD2_1381_4000;
    let clock: u16 = rng.random::<u16>() & 0x3FFF | 0x8000;
    let node: u64 = rng.random::<u64>() & 0xFFFF_FFFF_FFFF | 0x0100_0000_0000;
    format!(
        "'{:08x}-{:04x}-{:04x}-{:04x}-{:012x}'",
        t & 0xFFFF_FFFF,
        (t >> 32) & 0xFFFF,
        ((t >> 48) & 0x0FFF) | 0x1000,
        clock,
        node
    )
}

/// A value for UUID_SHORT(): a positive 63-bit integer.
pub fn uuid_short_literal() -> String {
    use rand::RngExt;
    (rand::rng().random::<u64>() >> 1).to_string()
}

#[cfg(test)]
mod tests {
    use super::super::lex::tokens;
    use super::*;

    #[test]
    fn each_call_gets_its_own_literal() {
        let sql = "INSERT INTO t VALUES (uuid(), 'uuid()', x.uuid()), (UUID( ), UUID_SHORT())";
        let toks = tokens(sql, true);
        assert!(values_only(&toks));
        let mut n = 0;
        let out = substitute(sql, &toks, |f| {
            n += 1;
            format!("<{f}{n}>")
        });
        assert_eq!(
            out.as_deref(),
            Some("INSERT INTO t VALUES (<UUID1>, 'uuid()', x.uuid()), (<UUID2>, <UUID_SHORT3>)")
        );
        assert_eq!(substitute("SELECT 1", &tokens("SELECT 1", true), |_| String::new()), None);
        assert!(!values_only(&tokens("INSERT INTO t SELECT UUID()", true)));
        assert!(!values_only(&tokens("UPDATE t SET u = UUID()", true)));
        let u = uuid_literal();
        assert_eq!(u.len(), 38, "{u}");
        assert_eq!(&u[15..16], "1", "version 1 layout: {u}");
    }
}
