//! Read policies: which consistency a read needs, chosen by rules in TOML.
//!
//! ```toml
//! # chorus.toml
//! [reads]                         # every read no rule matches
//! consistency = ["read-your-writes", "monotonic"]
//! wait = "100ms"
//! on_timeout = "leader"           # or "error"
//!
//! [policies]
//! dir = "policies"                # every *.toml there, in file-name order
//!
//! # policies/20-analytics.toml
//! [[rule]]
//! name = "analytics"
//! user = "analytics"              # glob patterns: * and ?
//! consistency = ["bounded"]
//! max_lag = "30s"
//! wait = "0s"
//! prefer = ["replica-2"]
//! ```
//!
//! A rule matches on `user`, `database`, `application_name` (globs), `tables`
//! (any table the statement names matches any pattern) and `statement` (a
//! regular expression on the statement's text with literals stripped: numbers
//! read `0`, strings `''`);
//! every condition given must hold. The first matching rule wins; its policy
//! fields override `[reads]`.
//!
//! - [`spec`]: the policy fields and their validation.
//! - [`rules`]: one rule: its conditions, compiled, and matching (pure).
//! - [`load`]: the files of a directory into a [`PolicySet`], every problem reported.

pub mod load;
pub mod rules;
pub mod spec;

pub use load::{PolicyError, load_dir};
pub use rules::{ReadFacts, Rule};
pub use spec::{Level, OnTimeout, PolicySpec};

use crate::consistency::ReadPolicy;
use std::sync::Arc;

/// A policy chosen for a read: the rule's name (or "default") and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    pub rule: Arc<str>,
    pub policy: ReadPolicy,
    /// Followers to try first, in order (node indexes).
    pub prefer: Vec<usize>,
}

/// Every rule in force, and the default.
#[derive(Debug)]
pub struct PolicySet {
    pub rules: Vec<Rule>,
    pub default: Arc<Chosen>,
    /// Some rule looks at the statement's text (it must be normalized).
    pub needs_text: bool,
    /// Some rule looks at something a statement says (tables or text): the
    /// choice cannot be made once per session.
    pub per_statement: bool,
}

impl PolicySet {
    /// Only the default.
    pub fn just(default: ReadPolicy) -> PolicySet {
        PolicySet::new(Vec::new(), default)
    }

    pub fn new(rules: Vec<Rule>, default: ReadPolicy) -> PolicySet {
        let needs_text = rules.iter().any(|r| r.statement.is_some());
        let per_statement = rules.iter().any(|r| r.statement.is_some() || !r.tables.is_empty());
        let default = Arc::new(Chosen { rule: "default".into(), policy: default, prefer: Vec::new() });
        PolicySet { rules, default, needs_text, per_statement }
    }

    /// The policy for a read: the first rule that matches, else the default.
    pub fn choose(&self, facts: &ReadFacts<'_>) -> &Arc<Chosen> {
        self.rules.iter().find(|r| r.matches(facts)).map_or(&self.default, |r| &r.chosen)
    }
}
