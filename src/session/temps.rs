//! The session's temporary objects, which live on the leader only.
//!
//! Temporary tables, views and sequences exist in one server session: a
//! follower's applier has no such session (and the one it has would keep
//! them, so the next session creating the same name would fail there).
//! Creating them and writing only to them is not logged; a write that mixes
//! them with regular tables cannot be replayed and is refused.
//!
//! chorus knows them by name, as the session created them, through either
//! protocol. A name counts from the statement that creates it; what a
//! transaction creates or drops becomes the session's for good only when the
//! transaction commits (a rolled-back or failed `CREATE TEMP TABLE x` leaves
//! `x` meaning the regular table), `ON COMMIT DROP` ends with the
//! transaction, `DROP` and `DISCARD TEMP` / `DISCARD ALL` forget names.
//! Pure: the session feeds it the statements and transaction outcomes.

use crate::sql::Classification;
use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Create { name: String, until_commit: bool },
    Drop(String),
    DropAll,
}

#[derive(Debug, Default, Clone)]
pub(super) struct TempObjects {
    /// Names of the temporary objects committed transactions left.
    live: HashSet<String>,
    /// Changes of the open transaction (or the requests not answered yet),
    /// in order.
    pending: Vec<Change>,
}

/// What a query is to the session's temporary objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It involves none of them: logged as usual.
    Regular,
    /// It writes only temporary objects (reading anything): not logged.
    OnlyTemp,
    /// It writes regular tables from temporary ones (or its functions might):
    /// replay cannot reproduce it; only capture can.
    Mixed,
}

/// Judge `class` by `is_temp` (a relation name, folded, maybe qualified).
pub(super) fn verdict(class: &Classification, is_temp: impl Fn(&str) -> bool) -> Verdict {
    let mut involved = class.tables.iter().chain(&class.sequences).chain(&class.targets);
    if !involved.any(|r| is_temp(r)) {
        return Verdict::Regular;
    }
    let only_temp_written = if class.targets.is_empty() {
        class.tables.iter().chain(&class.sequences).all(|r| is_temp(r))
    } else {
        class.targets.iter().all(|r| is_temp(r))
    };
    if only_temp_written && class.writes_only_targets() { Verdict::OnlyTemp } else { Verdict::Mixed }
}

/// `x` or `pg_temp.x` (`pg_temp_3.x`): the name a temporary object can be
/// reached by; a name in another schema is never temporary.
fn temp_name(relation: &str) -> Option<&str> {
    match relation.rsplit_once('.') {
        None => Some(relation),
        Some((schema, name)) if schema.starts_with("pg_temp") => Some(name),
        Some(_) => None,
    }
}

impl TempObjects {
    /// Nothing temporary exists or is being created: the common case, with
    /// nothing to check.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && !self.pending.iter().any(|c| matches!(c, Change::Create { .. }))
    }

    /// Whether `relation` names one of the session's temporary objects, as of
    /// the last statement noted.
    pub fn contains(&self, relation: &str) -> bool {
        let Some(name) = temp_name(relation) else { return false };
        let mut found = self.live.contains(name);
        for change in &self.pending {
            match change {
                Change::Create { name: n, .. } if n == name => found = true,
                Change::Drop(n) if n == name => found = false,
                Change::DropAll => found = false,
                _ => {}
            }
        }
        found
    }

    /// A statement creates a temporary object (`StmtOp::CreateTemp`).
    pub fn created(&mut self, name: &str, until_commit: bool) {
        self.pending.push(Change::Create { name: name.to_string(), until_commit });
    }

    /// A `DROP` of relations the session holds as temporary.
    pub fn dropped(&mut self, relation: &str) {
        if let Some(name) = temp_name(relation) {
            self.pending.push(Change::Drop(name.to_string()));
        }
    }

    /// `DISCARD TEMP` / `DISCARD ALL`.
    pub fn discarded(&mut self) {
        self.pending.push(Change::DropAll);
    }

    /// The transaction ended: its changes stand if it committed.
    pub fn finish_transaction(&mut self, committed: bool) {
        let pending = std::mem::take(&mut self.pending);
        if !committed {
            return;
        }
        for change in pending {
            match change {
                Change::Create { name, until_commit: false } => {
                    self.live.insert(name);
                }
                Change::Create { name, until_commit: true } => {
                    self.live.remove(&name);
                }
                Change::Drop(name) => {
                    self.live.remove(&name);
                }
                Change::DropAll => self.live.clear(),
            }
        }
    }
}

/// `DISCARD TEMP`, `DISCARD TEMPORARY` or `DISCARD ALL`.
pub(super) fn discards_temps(statement: &str) -> bool {
    let mut words = statement.split_whitespace().map(|w| w.trim_end_matches(';').to_ascii_lowercase());
    words.next().as_deref() == Some("discard") && matches!(words.next().as_deref(), Some("temp" | "temporary" | "all"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_count_once_their_transaction_commits() {
        let mut t = TempObjects::default();
        assert!(t.is_empty());
        t.created("x", false);
        assert!(t.contains("x") && t.contains("pg_temp.x") && !t.contains("public.x"));
        t.finish_transaction(false);
        assert!(!t.contains("x") && t.is_empty(), "a rolled-back CREATE leaves nothing");
        t.created("x", false);
        t.created("gone", true);
        assert!(t.contains("gone"));
        t.finish_transaction(true);
        assert!(t.contains("x") && !t.contains("gone"), "ON COMMIT DROP ends with its transaction");
        t.dropped("x");
        assert!(!t.contains("x"), "a dropped name means the regular table at once");
        t.finish_transaction(false);
        assert!(t.contains("x"), "the DROP was rolled back");
        t.dropped("pg_temp.x");
        t.finish_transaction(true);
        assert!(!t.contains("x") && t.is_empty());
        t.created("a", false);
        t.created("b", false);
        t.finish_transaction(true);
        t.discarded();
        t.created("b", false);
        assert!(!t.contains("a") && t.contains("b"));
        t.finish_transaction(true);
        assert!(!t.contains("a") && t.contains("b"));
    }

    #[test]
    fn verdicts() {
        let mut temps = TempObjects::default();
        temps.created("tmp", false);
        temps.created("tseq", false);
        let of = |sql: &str| verdict(&crate::sql::classify(sql), |r| temps.contains(r));
        assert_eq!(of("INSERT INTO t VALUES (1)"), Verdict::Regular);
        assert_eq!(of("SELECT nextval('s')"), Verdict::Regular);
        assert_eq!(of("INSERT INTO tmp VALUES (1)"), Verdict::OnlyTemp);
        assert_eq!(of("INSERT INTO tmp SELECT random() FROM t JOIN u USING (id)"), Verdict::OnlyTemp);
        assert_eq!(of("UPDATE tmp SET a = t.a FROM t WHERE t.id = tmp.id"), Verdict::OnlyTemp);
        assert_eq!(of("SELECT nextval('tseq')"), Verdict::OnlyTemp);
        assert_eq!(of("DROP TABLE tmp"), Verdict::OnlyTemp);
        assert_eq!(of("CREATE INDEX ON tmp (a)"), Verdict::OnlyTemp);
        assert_eq!(of("TRUNCATE pg_temp.tmp"), Verdict::OnlyTemp);
        assert_eq!(of("INSERT INTO t SELECT * FROM tmp"), Verdict::Mixed);
        assert_eq!(of("INSERT INTO t VALUES (nextval('tseq'))"), Verdict::Mixed);
        assert_eq!(of("INSERT INTO tmp VALUES (nextval('s'))"), Verdict::Mixed, "draws from a regular sequence");
        assert_eq!(of("INSERT INTO tmp VALUES (nextval(name_of_seq()))"), Verdict::Mixed);
        assert_eq!(of("INSERT INTO tmp VALUES (my_function())"), Verdict::Mixed, "a user function may write");
        assert_eq!(of("DROP TABLE tmp, t"), Verdict::Mixed);
        assert_eq!(of("INSERT INTO public.tmp VALUES (1)"), Verdict::Regular);
    }

    #[test]
    fn discard_statements() {
        assert!(discards_temps("DISCARD ALL"));
        assert!(discards_temps("discard temporary;"));
        assert!(discards_temps("DISCARD TEMP"));
        assert!(!discards_temps("DISCARD PLANS"));
        assert!(!discards_temps("SELECT 1"));
    }
}
