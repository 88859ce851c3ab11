//! Pure classification of SQL text (PostgreSQL dialect) into a [`Classification`].

use super::{Classification, LeaderReason};

/// Classify one query text. Never fails: what does not parse goes to the leader.
pub fn classify(sql: &str) -> Classification {
    let _ = sql;
    Classification { leader_reason: Some(LeaderReason::Unparsed), statement_count: 1, ..Default::default() }
}
