//! Session settings (startup parameters and SETs) that must hold on every server
//! connection a session uses, not just the one that ran the SET.
//!
//! Settings changed inside a transaction only count once it commits: PostgreSQL
//! reverts them on rollback. Startup parameters are the session's defaults:
//! RESET and RESET ALL return to them, as PostgreSQL does.

use crate::sql::SettingChange;
use crate::sql::quote::quote_literal;

/// Settings a follower connection never takes from a client: they would turn the
/// server-side read-only guard off.
pub(super) const FOLLOWER_SKIP: &[&str] =
    &["default_transaction_read_only", "transaction_read_only", "session_characteristics"];

#[derive(Default)]
pub struct Settings {
    /// Startup parameters as (name, SQL that applies it): what RESET returns to.
    startup: Vec<(String, String)>,
    /// (name, SQL that re-applies it), in the order they were set.
    entries: Vec<(String, String)>,
    /// Bumped on every committed change; each server connection records the
    /// version it has applied.
    pub version: u64,
    /// Changes made inside the current transaction.
    pending: Vec<SettingChange>,
    /// The transaction's savepoints: (name, length of `pending` when it was set).
    savepoints: Vec<(String, usize)>,
}

impl Settings {
    /// Settings from the client's startup packet, applied with set_config so the
    /// value is taken exactly as the server would take it from a startup packet.
    pub fn from_startup(params: &[(String, String)]) -> Settings {
        let mut s = Settings::default();
        // Server connections carry chorus's own application_name; a client that
        // sends none must see PostgreSQL's default (empty), not chorus's.
        let default_app = [("application_name".to_string(), String::new())];
        let has_app = params.iter().any(|(k, _)| k.eq_ignore_ascii_case("application_name"));
        let params =
            if has_app { params.iter().collect::<Vec<_>>() } else { default_app.iter().chain(params).collect() };
        for (k, v) in params {
            let name = k.to_ascii_lowercase();
            let sql = format!("SELECT pg_catalog.set_config({}, {}, false)", quote_literal(k), quote_literal(v));
            s.startup.retain(|(n, _)| *n != name);
            s.startup.push((name, sql));
        }
        s.version = 1;
        s
    }

    fn apply(&mut self, change: &SettingChange) {
        match change {
            SettingChange::Set { name, sql } => {
                self.entries.retain(|(n, _)| n != name);
                self.entries.push((name.clone(), sql.clone()));
            }
            SettingChange::Reset { name } => self.entries.retain(|(n, _)| n != name),
            SettingChange::ResetAll => self.entries.clear(),
            SettingChange::Savepoint { .. } | SettingChange::RollbackTo { .. } | SettingChange::Release { .. } => {}
        }
    }

    /// Record changes that succeeded; they count when the transaction commits.
    /// `ROLLBACK TO` a savepoint drops the changes made after it, as the server
    /// reverts them.
    pub fn stage(&mut self, changes: &[SettingChange]) {
        for c in changes {
            match c {
                SettingChange::Savepoint { name } => self.savepoints.push((name.clone(), self.pending.len())),
                SettingChange::RollbackTo { name } => {
                    // The savepoint stays after ROLLBACK TO; later ones are gone.
                    if let Some(i) = self.savepoints.iter().rposition(|(n, _)| n == name) {
                        self.pending.truncate(self.savepoints[i].1);
                        self.savepoints.truncate(i + 1);
                    }
                }
                SettingChange::Release { name } => {
                    if let Some(i) = self.savepoints.iter().rposition(|(n, _)| n == name) {
                        self.savepoints.truncate(i);
                    }
                }
                _ => self.pending.push(c.clone()),
            }
        }
    }

    /// The transaction ended: apply staged changes if it committed. Returns true
    /// if the connection that ran the transaction now holds exactly these
    /// settings; false if a RESET there went back to the server connection's
    /// own defaults instead of the session's startup values, so it needs the
    /// script again.
    pub fn finish_transaction(&mut self, committed: bool) -> bool {
        self.savepoints.clear();
        if self.pending.is_empty() {
            return true;
        }
        let pending = std::mem::take(&mut self.pending);
        if !committed {
            return true;
        }
        let mut in_sync = true;
        for c in &pending {
            in_sync &= match c {
                SettingChange::Set { .. } => true,
                SettingChange::Reset { name } => !self.startup.iter().any(|(n, _)| n == name),
                SettingChange::ResetAll => self.startup.is_empty(),
                _ => true,
            };
            self.apply(c);
        }
        self.version += 1;
        in_sync
    }

    /// One simple-query script that brings a connection to exactly these settings.
    pub fn script(&self, follower: bool) -> String {
        let mut sql = String::from("RESET ALL");
        for (name, stmt) in self.startup.iter().chain(&self.entries) {
            if follower && FOLLOWER_SKIP.contains(&name.as_str()) {
                continue;
            }
            sql.push_str("; ");
            sql.push_str(stmt);
        }
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_discards_and_commit_applies() {
        let mut s = Settings::from_startup(&[("TimeZone".into(), "UTC".into())]);
        assert_eq!(s.version, 1);
        s.stage(&[SettingChange::Set { name: "search_path".into(), sql: "SET search_path = a".into() }]);
        assert!(s.finish_transaction(false));
        assert_eq!(s.version, 1);
        assert_eq!(
            s.script(false),
            "RESET ALL; SELECT pg_catalog.set_config('application_name', '', false); \
             SELECT pg_catalog.set_config('TimeZone', 'UTC', false)"
        );
        s.stage(&[SettingChange::Set { name: "search_path".into(), sql: "SET search_path = a".into() }]);
        assert!(s.finish_transaction(true));
        assert_eq!(s.version, 2);
        assert!(s.script(false).ends_with("; SET search_path = a"));
        s.stage(&[SettingChange::Set {
            name: "default_transaction_read_only".into(),
            sql: "SET default_transaction_read_only = off".into(),
        }]);
        s.finish_transaction(true);
        assert!(s.script(false).contains("default_transaction_read_only"));
        assert!(!s.script(true).contains("default_transaction_read_only"));
        s.stage(&[SettingChange::ResetAll]);
        assert!(!s.finish_transaction(true), "RESET ALL on the server lost the startup TimeZone");
        assert_eq!(
            s.script(false),
            "RESET ALL; SELECT pg_catalog.set_config('application_name', '', false); \
             SELECT pg_catalog.set_config('TimeZone', 'UTC', false)"
        );
    }

    #[test]
    fn rollback_to_savepoint_drops_later_changes() {
        let mut s = Settings::default();
        let set = |name: &str| SettingChange::Set { name: name.into(), sql: format!("SET {name} = x") };
        let sp = |name: &str| SettingChange::Savepoint { name: name.into() };
        let rollback_to = |name: &str| SettingChange::RollbackTo { name: name.into() };
        s.stage(&[set("a"), sp("s1"), set("b"), sp("s2"), set("c")]);
        s.stage(&[rollback_to("s1")]);
        // s1 survives its ROLLBACK TO; s2 is gone.
        s.stage(&[set("d"), rollback_to("s1"), set("e"), rollback_to("s2")]);
        s.stage(&[SettingChange::Release { name: "s1".into() }, set("f"), rollback_to("s1")]);
        assert!(s.finish_transaction(true));
        assert_eq!(s.script(false), "RESET ALL; SET a = x; SET e = x; SET f = x");
        // Savepoints end with their transaction.
        s.stage(&[sp("s1")]);
        s.finish_transaction(false);
        s.stage(&[set("g"), rollback_to("s1")]);
        s.finish_transaction(true);
        assert!(s.script(false).ends_with("SET g = x"));
    }

    #[test]
    fn reset_returns_to_startup_values() {
        let mut s = Settings::from_startup(&[("application_name".into(), "app".into())]);
        let set = |name: &str, v: &str| SettingChange::Set { name: name.into(), sql: format!("SET {name} = {v}") };
        s.stage(&[set("application_name", "other"), set("search_path", "a")]);
        assert!(s.finish_transaction(true));
        assert_eq!(
            s.script(false),
            "RESET ALL; SELECT pg_catalog.set_config('application_name', 'app', false); \
             SET application_name = other; SET search_path = a"
        );
        s.stage(&[SettingChange::Reset { name: "search_path".into() }]);
        assert!(s.finish_transaction(true), "not a startup parameter: the server's RESET is right");
        s.stage(&[SettingChange::Reset { name: "application_name".into() }]);
        assert!(!s.finish_transaction(true));
        assert_eq!(s.script(false), "RESET ALL; SELECT pg_catalog.set_config('application_name', 'app', false)");
        s.stage(&[SettingChange::ResetAll]);
        assert!(!s.finish_transaction(true));
        assert!(Settings::default().finish_transaction(true));
    }
}
