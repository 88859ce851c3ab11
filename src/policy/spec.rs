//! The policy part of `[reads]` and of every rule: the consistency levels a
//! read needs, how long it waits for a follower, and what happens then.
//! Turned into a validated [`ReadPolicy`] with every problem reported.

use crate::consistency::{Fallback, ReadPolicy};
use serde::Deserialize;
use std::time::Duration;

/// One consistency level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    ReadYourWrites,
    Monotonic,
    Bounded,
    Eventual,
    Leader,
}

/// See [`Fallback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnTimeout {
    Leader,
    Error,
}

/// A read policy as configured; every field may be left out.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub consistency: Option<Vec<Level>>,
    #[serde(default, with = "humantime_serde")]
    pub wait: Option<Duration>,
    pub on_timeout: Option<OnTimeout>,
    #[serde(default, with = "humantime_serde")]
    pub max_lag: Option<Duration>,
    pub max_lag_txns: Option<u64>,
}

impl PolicySpec {
    /// The policy this spec describes, on top of `base` for what it leaves
    /// out; `Err` lists every problem, each prefixed with `at`.
    pub fn resolve(&self, base: &ReadPolicy, at: &str) -> Result<ReadPolicy, Vec<String>> {
        let mut problems = Vec::new();
        let mut p = base.clone();
        if let Some(levels) = &self.consistency {
            let has = |l: Level| levels.contains(&l);
            if levels.is_empty() {
                problems.push(format!("{at}consistency: name at least one level"));
            }
            for alone in [Level::Eventual, Level::Leader] {
                if has(alone) && levels.len() > 1 {
                    problems.push(format!("{at}consistency: {} cannot be combined with other levels", name(alone)));
                }
            }
            p.read_your_writes = has(Level::ReadYourWrites);
            p.monotonic = has(Level::Monotonic);
            p.leader_only = has(Level::Leader);
            if has(Level::Bounded) {
                if self.max_lag.is_none() && self.max_lag_txns.is_none() {
                    problems.push(format!("{at}consistency: \"bounded\" needs max_lag and/or max_lag_txns"));
                }
                p.max_lag = self.max_lag;
                p.max_lag_txns = self.max_lag_txns;
            } else {
                if self.max_lag.is_some() || self.max_lag_txns.is_some() {
                    problems.push(format!("{at}max_lag, max_lag_txns: only apply with consistency \"bounded\""));
                }
                p.max_lag = None;
                p.max_lag_txns = None;
            }
        } else if self.max_lag.is_some() || self.max_lag_txns.is_some() {
            problems.push(format!("{at}max_lag, max_lag_txns: only apply with consistency \"bounded\""));
        }
        if let Some(w) = self.wait {
            if w > Duration::from_secs(60) {
                problems.push(format!("{at}wait: at most 60s (a read holds its client that long)"));
            }
            p.wait = w;
        }
        if let Some(t) = self.on_timeout {
            p.on_timeout = match t {
                OnTimeout::Leader => Fallback::Leader,
                OnTimeout::Error => Fallback::Error,
            };
        }
        if problems.is_empty() { Ok(p) } else { Err(problems) }
    }
}

fn name(l: Level) -> &'static str {
    match l {
        Level::ReadYourWrites => "read-your-writes",
        Level::Monotonic => "monotonic",
        Level::Bounded => "bounded",
        Level::Eventual => "eventual",
        Level::Leader => "leader",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml: &str) -> PolicySpec {
        #[derive(Deserialize)]
        struct W {
            reads: PolicySpec,
        }
        let w: W = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        w.reads
    }

    #[test]
    fn specs_resolve_on_top_of_the_default() {
        let d = ReadPolicy::default();
        assert_eq!(spec("[reads]\n").resolve(&d, "").unwrap(), d);
        let p = spec("[reads]\nconsistency = [\"eventual\"]\nwait = \"0s\"\n").resolve(&d, "").unwrap();
        assert_eq!(p, ReadPolicy { wait: Duration::ZERO, ..ReadPolicy::eventual() });
        let p = spec("[reads]\nconsistency = [\"bounded\", \"read-your-writes\"]\nmax_lag = \"2s\"\nmax_lag_txns = 50\non_timeout = \"error\"\n")
            .resolve(&d, "")
            .unwrap();
        assert!(p.read_your_writes && !p.monotonic && !p.leader_only);
        assert_eq!(
            (p.max_lag, p.max_lag_txns, p.on_timeout),
            (Some(Duration::from_secs(2)), Some(50), Fallback::Error)
        );
        let p = spec("[reads]\nconsistency = [\"leader\"]\n").resolve(&d, "").unwrap();
        assert!(p.leader_only);
    }

    #[test]
    fn every_problem_is_reported() {
        let d = ReadPolicy::default();
        let problems = spec("[reads]\nconsistency = [\"eventual\", \"monotonic\", \"bounded\"]\nwait = \"2m\"\n")
            .resolve(&d, "reads.")
            .unwrap_err();
        assert_eq!(
            problems,
            [
                "reads.consistency: eventual cannot be combined with other levels",
                "reads.consistency: \"bounded\" needs max_lag and/or max_lag_txns",
                "reads.wait: at most 60s (a read holds its client that long)",
            ]
        );
        let problems = spec("[reads]\nmax_lag = \"1s\"\n").resolve(&d, "").unwrap_err();
        assert_eq!(problems, ["max_lag, max_lag_txns: only apply with consistency \"bounded\""]);
        let problems = spec("[reads]\nconsistency = []\n").resolve(&d, "").unwrap_err();
        assert_eq!(problems, ["consistency: name at least one level"]);
    }
}
