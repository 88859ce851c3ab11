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
//! elsewhere (`functions`). Functions called from the body are followed
//! ([`follow_calls`]): a body that calls a user function is what that
//! function is, too.

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
    /// When it writes and every write is a plain `INSERT INTO table` (no
    /// `ON CONFLICT`; the audit trigger's kind): those tables, folded as
    /// written (maybe schema-qualified). Chorus can capture what such
    /// writes insert (`session::trigger_rows`). `None` otherwise.
    pub inserts_into: Option<Vec<String>>,
    /// Functions the body calls by name (folded, maybe schema-qualified),
    /// as written: [`follow_calls`] folds their natures into this one.
    pub calls: Vec<String>,
}

/// Judge a function written in `language` with source `body`.
pub fn judge(language: &str, body: &str) -> Nature {
    if !matches!(language, "sql" | "plpgsql") {
        return Nature {
            nondeterministic: Some(format!("is written in {language}, which chorus cannot inspect")),
            writes: true,
            inserts_into: None,
            calls: Vec::new(),
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
    let writes = has_word(body, WRITES);
    let inserts_into = if writes { plain_inserts(body) } else { None };
    Nature { nondeterministic, writes, inserts_into, calls: calls(body) }
}

impl Nature {
    /// Take in what `other` (a callee, another trigger of the same table,
    /// an overload) does too: writing if either writes, nondeterministic
    /// (with its reason) if this one is not yet, its calls.
    pub fn absorb(&mut self, other: &Nature) {
        self.inserts_into = match (self.writes, other.writes) {
            (_, false) => self.inserts_into.take(),
            (false, true) => other.inserts_into.clone(),
            (true, true) => match (self.inserts_into.take(), &other.inserts_into) {
                (Some(mut mine), Some(theirs)) => {
                    for t in theirs {
                        if !mine.contains(t) {
                            mine.push(t.clone());
                        }
                    }
                    Some(mine)
                }
                _ => None,
            },
        };
        self.writes |= other.writes;
        if self.nondeterministic.is_none() {
            self.nondeterministic = other.nondeterministic.clone();
        }
        for c in &other.calls {
            if !self.calls.contains(c) {
                self.calls.push(c.clone());
            }
        }
    }
}

/// The tables a body inserts into, if every write in it is a plain
/// `INSERT INTO name` (one of [`WRITES`] other than such an INSERT, or an
/// `ON CONFLICT`, makes it `None`).
fn plain_inserts(body: &str) -> Option<Vec<String>> {
    let words = words(body);
    let mut tables = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let (w, quoted, qualified) = &words[i];
        if *quoted || *qualified || !WRITES.contains(&w.as_str()) && w != "conflict" {
            i += 1;
            continue;
        }
        if w != "insert" || words.get(i + 1).is_none_or(|(n, q, _)| *q || n != "into") {
            return None;
        }
        // The table: a name, maybe `schema.name`.
        let (first, _, _) = words.get(i + 2)?;
        let mut name = first.clone();
        if let Some((second, _, true)) = words.get(i + 3) {
            name = format!("{first}.{second}");
            i += 1;
        }
        if !tables.contains(&name) {
            tables.push(name);
        }
        i += 3;
    }
    Some(tables)
}

/// The words of a text outside strings and comments, in order: (the word,
/// folded as PostgreSQL folds identifiers; quoted; right after a dot).
fn words(text: &str) -> Vec<(String, bool, bool)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => i = skip_quoted(b, i + 1, b'\'', i > 0 && matches!(b[i - 1], b'e' | b'E')),
            b'"' => {
                let end = skip_quoted(b, i + 1, b'"', false);
                let word = text[i + 1..end.saturating_sub(1).max(i + 1)].replace("\"\"", "\"");
                out.push((word, true, i > 0 && b[i - 1] == b'.'));
                i = end;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i),
            b'$' if i == 0 || !is_ident_byte(b[i - 1]) => i = skip_dollar_quote(b, i),
            c if is_ident_byte(c) && !c.is_ascii_digit() => {
                let start = i;
                while i < b.len() && (is_ident_byte(b[i]) || b[i] == b'$') {
                    i += 1;
                }
                out.push((text[start..i].to_lowercase(), false, start > 0 && b[start - 1] == b'.'));
            }
            _ => i += 1,
        }
    }
    out
}

/// Give every function in `natures` (by name) the nature of the functions
/// it calls, directly or not: nondeterministic if any of them is (saying
/// through which), writing if any of them writes. Names not in `natures`
/// (built-ins, immutable functions taken at their word) add nothing.
pub fn follow_calls(natures: &mut std::collections::HashMap<String, Nature>) {
    let mut resolved = Vec::new();
    for (name, nature) in natures.iter() {
        let mut seen = vec![name.as_str()];
        // Each callee with the chain of calls that reaches it.
        let mut stack: Vec<(&str, Vec<&str>)> = nature.calls.iter().rev().map(|c| (c.as_str(), vec![])).collect();
        let mut folded = Nature { calls: Vec::new(), ..nature.clone() };
        while let Some((callee, mut via)) = stack.pop() {
            if seen.contains(&callee) {
                continue;
            }
            seen.push(callee);
            let Some(n) = natures.get(callee) else { continue };
            via.push(callee);
            let chain: String = via.iter().map(|f| format!("calls {f}(), which ")).collect();
            let why = n.nondeterministic.as_ref().map(|why| format!("{chain}{why}"));
            folded.absorb(&Nature { nondeterministic: why, calls: Vec::new(), ..n.clone() });
            stack.extend(n.calls.iter().rev().map(|c| (c.as_str(), via.clone())));
        }
        resolved.push((name.clone(), folded));
    }
    for (name, folded) in resolved {
        if let Some(n) = natures.get_mut(&name) {
            n.nondeterministic = folded.nondeterministic;
            n.writes = folded.writes;
            n.inserts_into = folded.inserts_into;
        }
    }
}

/// Fold into `nature` the natures of the functions it calls, each already
/// followed to the end (from a map [`follow_calls`] resolved).
pub fn fold_callees(nature: &mut Nature, callees: &[(String, Nature)]) {
    for (callee, n) in callees {
        let why = n.nondeterministic.as_ref().map(|why| format!("calls {callee}(), which {why}"));
        nature.absorb(&Nature { nondeterministic: why, calls: Vec::new(), ..n.clone() });
    }
}

/// Words that take a parenthesis without being function calls.
const NOT_CALLS: &[&str] = &[
    "in",
    "values",
    "exists",
    "any",
    "all",
    "some",
    "as",
    "on",
    "using",
    "and",
    "or",
    "not",
    "into",
    "from",
    "where",
    "select",
    "return",
    "returns",
    "if",
    "elsif",
    "when",
    "then",
    "else",
    "case",
    "over",
    "filter",
    "within",
    "table",
    "array",
    "row",
    "cast",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "join",
    "lateral",
    "by",
    "is",
    "like",
    "ilike",
    "similar",
    "between",
    "with",
    "recursive",
    "set",
    "loop",
    "while",
    "for",
    "foreach",
    "query",
    "perform",
    "raise",
    "limit",
    "offset",
    "having",
    "union",
    "except",
    "intersect",
];

/// The names the text calls (`name(` outside strings, quoted identifiers and
/// comments), folded as PostgreSQL folds identifiers, deduplicated. Some
/// are not calls (`INSERT INTO t (a)` names a table); only names that are
/// user functions count where this is used.
fn calls(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    let mut name: Vec<String> = Vec::new(); // the dotted name being read
    let mut after_dot = false;
    while i < b.len() {
        match b[i] {
            b'\'' => {
                i = skip_quoted(b, i + 1, b'\'', i > 0 && matches!(b[i - 1], b'e' | b'E'));
                name.clear();
            }
            b'"' => {
                let end = skip_quoted(b, i + 1, b'"', false);
                let part = text[i + 1..end.saturating_sub(1).max(i + 1)].replace("\"\"", "\"");
                if !after_dot {
                    name.clear();
                }
                name.push(part);
                after_dot = false;
                i = end;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p + 1);
                name.clear();
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(b, i);
                name.clear();
            }
            b'$' if i == 0 || !is_ident_byte(b[i - 1]) => {
                i = skip_dollar_quote(b, i);
                name.clear();
            }
            b'.' => {
                after_dot = !name.is_empty();
                i += 1;
            }
            b'(' => {
                let keyword = name.len() == 1 && NOT_CALLS.contains(&name[0].as_str());
                if !name.is_empty() && !keyword {
                    let called = name.join(".");
                    if !out.contains(&called) {
                        out.push(called);
                    }
                }
                name.clear();
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            c if is_ident_byte(c) && !c.is_ascii_digit() => {
                let start = i;
                while i < b.len() && (is_ident_byte(b[i]) || b[i] == b'$') {
                    i += 1;
                }
                if !after_dot {
                    name.clear();
                }
                name.push(text[start..i].to_lowercase());
                after_dot = false;
            }
            _ => {
                name.clear();
                after_dot = false;
                i += 1;
            }
        }
    }
    out
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
        assert_eq!(n, Nature { writes: true, inserts_into: Some(vec!["audit".into()]), ..Nature::default() });
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

    #[test]
    fn writes_that_are_only_inserts_name_their_tables() {
        let inserts = |body: &str| judge("plpgsql", body).inserts_into;
        let cases: &[(&str, Option<Vec<&str>>)] = &[
            ("BEGIN RETURN NEW; END", None),
            ("BEGIN INSERT INTO audit.log (a) VALUES (NEW.id); RETURN NEW; END", Some(vec!["audit.log"])),
            (
                "BEGIN IF TG_OP = 'DELETE' THEN INSERT INTO hist SELECT OLD.*; ELSE INSERT INTO \"Audit\".\"Log\" \
                 VALUES (NEW.id, now()); INSERT INTO hist SELECT NEW.*; END IF; RETURN NULL; END",
                Some(vec!["hist", "Audit.Log"]),
            ),
            ("BEGIN INSERT INTO counts VALUES (1) ON CONFLICT (k) DO UPDATE SET n = counts.n + 1; RETURN NULL; END", None),
            ("BEGIN INSERT INTO log VALUES (1); UPDATE totals SET n = n + 1; RETURN NULL; END", None),
            ("BEGIN EXECUTE 'INSERT INTO log VALUES (1)'; RETURN NULL; END", None),
            ("BEGIN DELETE FROM log WHERE id = OLD.id; RETURN OLD; END", None),
            // A column named like a keyword is not a statement.
            ("BEGIN INSERT INTO log (id) VALUES (NEW.update); RETURN NEW; END", Some(vec!["log"])),
        ];
        for (body, want) in cases {
            let want = want.as_ref().map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(inserts(body), want, "{body}");
        }
        // Folding: inserts-only stays so only while every part is.
        let mut a = judge("plpgsql", "BEGIN INSERT INTO a VALUES (1); RETURN NEW; END");
        a.absorb(&judge("plpgsql", "BEGIN NEW.x := 1; RETURN NEW; END"));
        a.absorb(&judge("plpgsql", "BEGIN INSERT INTO b VALUES (now()); RETURN NEW; END"));
        assert_eq!(a.inserts_into, Some(vec!["a".to_string(), "b".to_string()]));
        assert!(a.nondeterministic.is_some());
        a.absorb(&judge("plpgsql", "BEGIN UPDATE c SET n = 1; RETURN NEW; END"));
        assert_eq!((a.writes, a.inserts_into), (true, None));
    }

    #[test]
    fn called_names() {
        let body = "BEGIN NEW.code := app.make_code(NEW.id, lower(NEW.name)); \
                    INSERT INTO audit (id) VALUES (\"Stamp\"(NEW.id)); \
                    PERFORM helper(); -- ignored(1)\n RETURN NEW; END";
        assert_eq!(calls(body), vec!["app.make_code", "lower", "audit", "Stamp", "helper"]);
        assert_eq!(calls("SELECT x IN (1) FROM t WHERE EXISTS (SELECT 1) AND 'f(' = $1"), Vec::<String>::new());
    }

    #[test]
    fn natures_of_callees_are_followed() {
        let mut natures: std::collections::HashMap<String, Nature> = [
            ("outer_fn", judge("plpgsql", "BEGIN RETURN middle($1) + 1; END")),
            ("middle", judge("sql", "SELECT leaf($1)")),
            ("leaf", judge("sql", "SELECT random() * $1")),
            ("writer", judge("plpgsql", "BEGIN INSERT INTO log VALUES ($1); RETURN 1; END")),
            ("uses_writer", judge("sql", "SELECT writer($1)")),
            ("loop_a", judge("sql", "SELECT loop_b($1)")),
            ("loop_b", judge("sql", "SELECT loop_a($1)")),
            ("pure", judge("sql", "SELECT lower($1)")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        follow_calls(&mut natures);
        let why = natures["outer_fn"].nondeterministic.as_deref();
        assert_eq!(why, Some("calls middle(), which calls leaf(), which calls random()"));
        assert!(natures["middle"].nondeterministic.is_some() && !natures["outer_fn"].writes);
        assert!(natures["uses_writer"].writes && natures["uses_writer"].nondeterministic.is_none());
        assert!(natures["loop_a"].nondeterministic.is_none() && !natures["loop_a"].writes);
        assert_eq!(natures["pure"], Nature { calls: vec!["lower".into()], ..Nature::default() });
    }
}
