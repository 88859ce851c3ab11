//! One policy rule: the conditions under which it applies, compiled once, and
//! the pure test of a read against them.

use super::Chosen;
use super::spec::PolicySpec;
use crate::consistency::ReadPolicy;
use serde::Deserialize;
use std::sync::Arc;

/// A rule as written in a policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    pub user: Option<String>,
    pub database: Option<String>,
    pub application_name: Option<String>,
    #[serde(default)]
    pub tables: Vec<String>,
    pub statement: Option<String>,
    #[serde(default)]
    pub prefer: Vec<String>,
    // The policy (as in [`PolicySpec`]; serde cannot flatten it and still
    // reject unknown keys).
    pub consistency: Option<Vec<super::spec::Level>>,
    #[serde(default, with = "humantime_serde")]
    pub wait: Option<std::time::Duration>,
    pub on_timeout: Option<super::spec::OnTimeout>,
    #[serde(default, with = "humantime_serde")]
    pub max_lag: Option<std::time::Duration>,
    pub max_lag_txns: Option<u64>,
}

impl RuleSpec {
    fn policy(&self) -> PolicySpec {
        PolicySpec {
            consistency: self.consistency.clone(),
            wait: self.wait,
            on_timeout: self.on_timeout,
            max_lag: self.max_lag,
            max_lag_txns: self.max_lag_txns,
        }
    }
}

/// What a read is, for matching.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadFacts<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub application_name: &'a str,
    /// Relations the statements name, folded (`schema.table` when written so).
    pub tables: &'a [String],
    /// The statements' texts with literals stripped (only when a rule needs them).
    pub texts: &'a [&'a str],
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub chosen: Arc<Chosen>,
    pub user: Option<Glob>,
    pub database: Option<Glob>,
    pub application_name: Option<Glob>,
    pub tables: Vec<Glob>,
    pub statement: Option<regex::Regex>,
}

impl Rule {
    /// Compile `spec` (found at `at`, e.g. `policies/10-x.toml: rule[2]`) on
    /// top of `base`; `followers` names the nodes `prefer` may list.
    pub fn compile(
        spec: &RuleSpec,
        base: &ReadPolicy,
        followers: &[(String, usize)],
        at: &str,
    ) -> Result<Rule, Vec<String>> {
        let mut problems = Vec::new();
        let at = format!("{at} ({:?}): ", spec.name);
        if spec.name.trim().is_empty() {
            problems.push(format!("{at}name: must not be empty"));
        }
        let policy = spec.policy().resolve(base, &at).unwrap_or_else(|p| {
            problems.extend(p);
            base.clone()
        });
        let statement = spec.statement.as_deref().and_then(|re| match regex::Regex::new(re) {
            Ok(r) => Some(r),
            Err(e) => {
                let e = e.to_string();
                let e = e.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
                problems.push(format!("{at}statement: invalid regular expression: {e}"));
                None
            }
        });
        let mut prefer = Vec::new();
        for name in &spec.prefer {
            match followers.iter().find(|(n, _)| n == name) {
                Some(&(_, i)) => prefer.push(i),
                None => problems.push(format!("{at}prefer: no follower named {name:?}")),
            }
        }
        let empty = |what: &str, v: &Option<String>, problems: &mut Vec<String>| {
            if v.as_deref().is_some_and(|s| s.is_empty()) {
                problems.push(format!("{at}{what}: must not be empty (leave it out to match any)"));
            }
        };
        empty("user", &spec.user, &mut problems);
        empty("database", &spec.database, &mut problems);
        empty("application_name", &spec.application_name, &mut problems);
        if spec.tables.iter().any(|t| t.is_empty()) {
            problems.push(format!("{at}tables: a pattern must not be empty"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Rule {
            chosen: Arc::new(Chosen { rule: spec.name.as_str().into(), policy, prefer }),
            user: spec.user.as_deref().map(Glob::new),
            database: spec.database.as_deref().map(Glob::new),
            application_name: spec.application_name.as_deref().map(Glob::new),
            tables: spec.tables.iter().map(|t| Glob::new(&t.to_lowercase())).collect(),
            statement,
        })
    }

    /// Does the read meet every condition of this rule?
    pub fn matches(&self, f: &ReadFacts<'_>) -> bool {
        let glob = |g: &Option<Glob>, v: &str| g.as_ref().is_none_or(|g| g.matches(v));
        glob(&self.user, f.user)
            && glob(&self.database, f.database)
            && glob(&self.application_name, f.application_name)
            && (self.tables.is_empty() || f.tables.iter().any(|t| self.tables.iter().any(|g| table_matches(g, t))))
            && self.statement.as_ref().is_none_or(|re| f.texts.iter().any(|t| re.is_match(t)))
    }
}

/// A pattern with a schema (`billing.*`) matches names written with a schema;
/// one without (`invoices`) matches the table's own name, qualified or not.
fn table_matches(g: &Glob, table: &str) -> bool {
    if g.matches(table) {
        return true;
    }
    !g.0.contains('.') && table.rsplit_once('.').is_some_and(|(_, name)| g.matches(name))
}

/// A glob pattern: `*` any run of characters, `?` any one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub fn new(p: &str) -> Glob {
        Glob(p.to_string())
    }

    pub fn matches(&self, s: &str) -> bool {
        let p: Vec<char> = self.0.chars().collect();
        let s: Vec<char> = s.chars().collect();
        // Iterative matching with one backtrack point for the last `*`.
        let (mut i, mut j) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while j < s.len() {
            if i < p.len() && (p[i] == '?' || p[i] == s[j]) {
                i += 1;
                j += 1;
            } else if i < p.len() && p[i] == '*' {
                star = Some((i, j));
                i += 1;
            } else if let Some((si, sj)) = star {
                i = si + 1;
                j = sj + 1;
                star = Some((si, sj + 1));
            } else {
                return false;
            }
        }
        p[i..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("*", "", true),
            ("*", "abc", true),
            ("a*", "abc", true),
            ("a*", "bac", false),
            ("*c", "abc", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("metabase*", "metabase-worker-1", true),
            ("*-worker-*", "metabase-worker-1", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(Glob::new(p).matches(s), want, "{p} ~ {s}");
        }
    }

    #[test]
    fn tables_match_with_or_without_their_schema() {
        let cases = [
            ("invoices", "invoices", true),
            ("invoices", "billing.invoices", true),
            ("billing.invoices", "invoices", false),
            ("billing.*", "billing.invoices", true),
            ("billing.*", "invoices", false),
            ("audit_*", "public.audit_log", true),
            ("audit_*", "auditlog", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(table_matches(&Glob::new(p), t), want, "{p} ~ {t}");
        }
    }
}
