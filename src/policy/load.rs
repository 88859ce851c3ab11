//! Policy files: every `*.toml` of a directory, in file-name order, each a
//! list of `[[rule]]` tables. Loading reports every problem of every file at
//! once; nothing is half loaded.

use super::PolicySet;
use super::rules::{Rule, RuleSpec};
use crate::consistency::ReadPolicy;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

/// Everything wrong with a policy directory.
#[derive(Debug, thiserror::Error)]
#[error("invalid policies:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct PolicyError(pub Vec<String>);

/// The `*.toml` files of `dir`, sorted by name.
fn files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: cannot read the directory: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Load every rule under `dir` on top of `default`. `followers`: the
/// followers' names and node indexes, for `prefer`.
pub fn load_dir(dir: &Path, default: &ReadPolicy, followers: &[(String, usize)]) -> Result<PolicySet, PolicyError> {
    let mut problems = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let files = files(dir).map_err(|e| PolicyError(vec![e]))?;
    for file in &files {
        let shown = file.display().to_string();
        let parsed: Result<PolicyFile, String> =
            std::fs::read_to_string(file).map_err(|e| e.to_string()).and_then(|text| {
                config::Config::builder()
                    .add_source(config::File::from_str(&text, config::FileFormat::Toml))
                    .build()
                    .and_then(|c| c.try_deserialize())
                    .map_err(|e| e.to_string())
            });
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("{shown}: {e}"));
                continue;
            }
        };
        for (i, spec) in parsed.rule.iter().enumerate() {
            let at = format!("{shown}: rule[{i}]");
            if names.contains(&spec.name) {
                problems.push(format!("{at}: another rule is already named {:?}", spec.name));
            }
            names.push(spec.name.clone());
            match Rule::compile(spec, default, followers, &at) {
                Ok(r) => rules.push(r),
                Err(p) => problems.extend(p),
            }
        }
    }
    if !problems.is_empty() {
        return Err(PolicyError(problems));
    }
    Ok(PolicySet::new(rules, default.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ReadFacts;
    use std::time::Duration;

    fn dir(files: &[(&str, &str)]) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let d = std::env::temp_dir().join(format!("chorus-policy-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for (name, text) in files {
            std::fs::write(d.join(name), text).unwrap();
        }
        d
    }

    const FOLLOWERS: &[(&str, usize)] = &[("f1", 1), ("f2", 2)];

    fn followers() -> Vec<(String, usize)> {
        FOLLOWERS.iter().map(|(n, i)| (n.to_string(), *i)).collect()
    }

    #[test]
    fn rules_are_matched_in_file_order_first_match_wins() {
        let d = dir(&[
            (
                "20-analytics.toml",
                "[[rule]]\nname = \"analytics\"\nuser = \"analytics\"\nconsistency = [\"bounded\"]\nmax_lag = \"30s\"\nwait = \"0s\"\nprefer = [\"f2\"]\n",
            ),
            (
                "10-billing.toml",
                "[[rule]]\nname = \"billing\"\ntables = [\"billing.*\", \"invoices\"]\nconsistency = [\"leader\"]\n\
                 [[rule]]\nname = \"reports\"\nstatement = '^SELECT .* FROM report_'\nconsistency = [\"eventual\"]\n",
            ),
            ("README.md", "not a policy"),
        ]);
        let set = load_dir(&d, &ReadPolicy::default(), &followers()).unwrap();
        let names: Vec<&str> = set.rules.iter().map(|r| &*r.chosen.rule).collect();
        assert_eq!(names, ["billing", "reports", "analytics"]);
        assert!(set.needs_text && set.per_statement);

        let tables = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let inv = tables(&["public.invoices"]);
        let plain = tables(&["orders"]);
        let billing = tables(&["billing.lines"]);
        let none: Vec<String> = Vec::new();
        // (user, app, tables, text) => rule
        let cases: &[(&str, &str, &Vec<String>, &str, &str)] = &[
            ("app", "web", &plain, "SELECT * FROM orders", "default"),
            ("app", "web", &inv, "SELECT * FROM public.invoices", "billing"),
            ("analytics", "bi", &billing, "SELECT * FROM billing.lines", "billing"),
            ("analytics", "bi", &plain, "SELECT * FROM orders", "analytics"),
            ("app", "web", &none, "SELECT a FROM report_daily", "reports"),
            ("analytics", "bi", &none, "SELECT a FROM report_daily", "reports"),
        ];
        for (user, app, t, text, want) in cases {
            let texts = [*text];
            let facts = ReadFacts { user, database: "shop", application_name: app, tables: t, texts: &texts };
            assert_eq!(&*set.choose(&facts).rule, *want, "{user} {app} {t:?} {text}");
        }
        let analytics = &set.rules[2].chosen;
        assert_eq!(analytics.prefer, [2]);
        assert_eq!(analytics.policy.max_lag, Some(Duration::from_secs(30)));
        assert_eq!(analytics.policy.wait, Duration::ZERO);
        assert!(!analytics.policy.read_your_writes && !analytics.policy.monotonic);
        assert!(set.rules[0].chosen.policy.leader_only);
    }

    #[test]
    fn every_problem_of_every_file_is_reported() {
        let d = dir(&[
            (
                "a.toml",
                "[[rule]]\nname = \"x\"\nstatement = \"(\"\nprefer = [\"nobody\"]\nconsistency = [\"eventual\", \"leader\"]\n",
            ),
            ("b.toml", "[[rule]]\nname = \"x\"\nuser = \"\"\n"),
            ("c.toml", "this is not toml ["),
        ]);
        let e = load_dir(&d, &ReadPolicy::default(), &followers()).unwrap_err();
        let text = e.to_string();
        for needle in [
            "a.toml: rule[0] (\"x\"): consistency: eventual cannot be combined",
            "a.toml: rule[0] (\"x\"): statement: invalid regular expression",
            "a.toml: rule[0] (\"x\"): prefer: no follower named \"nobody\"",
            "b.toml: rule[0]: another rule is already named \"x\"",
            "b.toml: rule[0] (\"x\"): user: must not be empty",
            "c.toml",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        // b.toml's unknown key makes the whole file unreadable: reported, not ignored.
        let d2 = dir(&[("b.toml", "[[rule]]\nname = \"y\"\ncolour = \"blue\"\n")]);
        let e = load_dir(&d2, &ReadPolicy::default(), &followers()).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        assert!(load_dir(&d.join("missing"), &ReadPolicy::default(), &followers()).is_err());
    }

    #[test]
    fn the_example_policies_load_and_route_as_their_comments_say() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let set = load_dir(&dir, &ReadPolicy::default(), &followers()).unwrap_or_else(|e| panic!("{e}"));
        let t = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&str, &str, Vec<String>, &str, &str)] = &[
            (
                "app",
                "web",
                t(&["billing.invoices"]),
                "SELECT * FROM billing.invoices WHERE id = 0",
                "always-fresh-tables",
            ),
            ("app", "web", t(&["public.account_balances"]), "SELECT 0", "always-fresh-tables"),
            ("analytics", "psql", t(&["orders"]), "SELECT count(*) FROM orders", "analytics-user"),
            ("app", "metabase-1.50", t(&["orders"]), "SELECT count(*) FROM orders", "bi-tools"),
            (
                "app",
                "web",
                t(&["report_daily"]),
                "SELECT day, total FROM report_daily WHERE day > ''",
                "report-queries",
            ),
            ("app", "web", t(&["orders"]), "SELECT * FROM orders WHERE id = 0", "default"),
        ];
        for (user, app, tables, text, want) in cases {
            let texts = [*text];
            let facts = ReadFacts { user, database: "shop", application_name: app, tables, texts: &texts };
            assert_eq!(&*set.choose(&facts).rule, *want, "{user} {app} {tables:?} {text}");
        }
        let by_name = |n: &str| set.rules.iter().find(|r| &*r.chosen.rule == n).unwrap().chosen.policy.clone();
        assert!(by_name("always-fresh-tables").leader_only);
        assert_eq!(by_name("analytics-user").max_lag_txns, Some(10000));
        assert_eq!(by_name("report-queries"), ReadPolicy::eventual());
        assert_eq!(by_name("default"), ReadPolicy::default());
    }
}
