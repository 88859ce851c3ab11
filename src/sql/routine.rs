//! Pure: what a user function's body means for statement replay. A follower
//! replays a statement by running it, so a function (or a trigger function)
//! it calls runs there again: exact if the body is deterministic, wrong if it
//! reads the clock (`now()` is the follower's), draws random values or
//! uuids. Whether the body also writes other tables decides whether chorus
//! may replicate the statement by the rows it wrote instead (capture): the
//! rows of the table written carry the function's values, writes elsewhere
//! would be lost.
//!
//! The judgement reads the source text (`pg_proc.prosrc`) of SQL and PL/pgSQL
//! functions; a body in another language cannot be read and counts as both
//! nondeterministic and writing. Built-in functions (`pg_catalog`) are judged
//! elsewhere (`functions`). Functions called from the body are not followed.

use super::normalize::{is_ident_byte, skip_block_comment, skip_dollar_quote, skip_quoted};

/// What a function body does, as far as replication cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nature {
    /// Why running it again on a follower may compute other values (a
    /// predicate: "calls random()"), or `None` when it does not.
    pub nondeterministic: Option<String>,
    /// It may change rows other than the one a trigger is given (DML,
    /// dynamic SQL, procedure calls).
    pub writes: bool,
}

/// Judge a function written in `language` with source `body`.
pub fn judge(language: &str, body: &str) -> Nature {
    if !matches!(language, "sql" | "plpgsql") {
        return Nature {
            nondeterministic: Some(format!("is written in {language}, which chorus cannot inspect")),
            writes: true,
        };
    }
    use super::rewrite::Nondeterministic as N;
    let nondeterministic = match super::rewrite::plan_body(body) {
        Err(N::Function { name }) => Some(format!("calls {name}()")),
        Err(N::Literal { literal }) => Some(format!("reads the literal {literal} as the current time")),
        Err(N::Placement { expr, .. }) => Some(format!("reads the transaction's clock ({expr})")),
        Ok(p) if !p.is_identity() => Some("reads the transaction's clock (now(), CURRENT_TIMESTAMP ...)".into()),
        Ok(_) => None,
    };
    Nature { nondeterministic, writes: has_word(body, WRITES) }
}

/// Keywords of statements that change data or schema, or run SQL chorus
/// cannot see (`EXECUTE` of a string, `CALL`).
const WRITES: &[&str] =
    &["insert", "update", "delete", "merge", "truncate", "copy", "execute", "call", "create", "alter", "drop"];

/// Does the text use one of `words` as a keyword (outside strings, quoted
/// identifiers and comments)?
fn has_word(text: &str, words: &[&str]) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => i = skip_quoted(b, i + 1, b'\'', i > 0 && matches!(b[i - 1], b'e' | b'E')),
            b'"' => i = skip_quoted(b, i + 1, b'"', false),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i),
            b'$' if i == 0 || !is_ident_byte(b[i - 1]) => i = skip_dollar_quote(b, i),
            c if is_ident_byte(c) => {
                let start = i;
                while i < b.len() && (is_ident_byte(b[i]) || b[i] == b'$') {
                    i += 1;
                }
                // `NEW.update` or `t.delete` is a column, not a statement.
                let qualified = start > 0 && b[start - 1] == b'.';
                if !qualified && words.iter().any(|w| b[start..i].eq_ignore_ascii_case(w.as_bytes())) {
                    return true;
                }
            }
            _ => i += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_bodies() {
        let updated_at = "BEGIN NEW.updated_at := now(); RETURN NEW; END";
        let n = judge("plpgsql", updated_at);
        assert!(n.nondeterministic.is_some() && !n.writes, "{n:?}");
        let audit = "BEGIN IF TG_OP = 'UPDATE' THEN INSERT INTO audit VALUES (OLD.id, 'x'); END IF; RETURN NEW; END";
        let n = judge("plpgsql", audit);
        assert_eq!(n, Nature { nondeterministic: None, writes: true });
        let check = "BEGIN -- update nothing\n IF NEW.v < 0 THEN RAISE EXCEPTION 'no delete'; END IF; RETURN NEW; END";
        assert_eq!(judge("plpgsql", check), Nature::default());
        let uuid = "BEGIN NEW.u := gen_random_uuid(); RETURN NEW; END";
        assert_eq!(judge("plpgsql", uuid).nondeterministic.as_deref(), Some("calls gen_random_uuid()"));
        assert_eq!(judge("sql", "SELECT $1 * 2").nondeterministic, None);
        assert!(judge("sql", "SELECT random() * $1").nondeterministic.is_some());
        assert!(judge("plpgsql", "BEGIN EXECUTE format('SELECT %s', 1); END").writes);
        let log = " BEGIN INSERT INTO log (doc, at) VALUES (NEW.id, now()); RETURN NEW; END ";
        assert!(judge("plpgsql", log).nondeterministic.is_some());
        let c = judge("c", "moddatetime");
        assert!(c.nondeterministic.is_some() && c.writes);
    }
}
