//! Keeping sequences identical on the followers.
//!
//! Replaying a statement replays its `nextval` calls, so followers produce the
//! same ids as long as their sequences start where the leader's did. They stop
//! doing so when the leader consumes values that are never replayed: a
//! rolled-back transaction, a failed statement (even one undone by `ROLLBACK
//! TO`), a lost session. Sequences are not transactional, so those values stay
//! consumed on the leader only.
//!
//! chorus marks a database "dirty" whenever that may have happened, always
//! before the transaction that consumed the values releases the LSN row lock
//! (before forwarding its ROLLBACK, when its statement failed while it still
//! holds the lock, or when its connection is dropped). The next writing
//! transaction, which takes the lock after that, then captures the state of
//! every sequence together with its LSN and logs it as `setval` calls ahead of
//! its statements: the followers start from exactly the leader's state. A
//! transaction that continues after `ROLLBACK TO` captures again before its
//! next write. The one window left: a COMMIT that fails at commit time
//! (deferred constraint) releases the lock before chorus sees the failure.

use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// SQL returning one text value: `setval` calls reproducing every sequence of
/// the database (chorus's own and temporary ones excepted), or ''.
pub const CAPTURE_SQL: &str = "(SELECT coalesce(string_agg(format('SELECT pg_catalog.setval(%L, %s, %L)', \
     format('%I.%I', schemaname, sequencename), coalesce(last_value, start_value), last_value IS NOT NULL), \
     '; ' ORDER BY schemaname, sequencename), '') FROM pg_catalog.pg_sequences \
     WHERE schemaname <> '_chorus' AND schemaname NOT LIKE 'pg\\_temp\\_%' AND schemaname NOT LIKE 'pg\\_toast\\_temp\\_%')";

#[derive(Default)]
struct Epochs {
    dirty: AtomicU64,
    synced: AtomicU64,
}

/// Per database: has the leader consumed sequence values since the last capture
/// that committed?
#[derive(Default)]
pub struct SequenceSync {
    dbs: DashMap<String, Epochs>,
}

impl SequenceSync {
    /// Values may have been consumed without being logged.
    pub fn mark_dirty(&self, db: &str) {
        self.dbs.entry(db.to_string()).or_default().dirty.fetch_add(1, Ordering::SeqCst);
    }

    /// `Some(epoch)`: the next transaction must capture; pass the epoch to
    /// [`SequenceSync::synced`] once it commits.
    pub fn needs_capture(&self, db: &str) -> Option<u64> {
        // A database seen for the first time is dirty: values may have been
        // consumed before this chorus started.
        let e = self
            .dbs
            .entry(db.to_string())
            .or_insert_with(|| Epochs { dirty: AtomicU64::new(1), synced: AtomicU64::new(0) });
        let dirty = e.dirty.load(Ordering::SeqCst);
        (dirty != e.synced.load(Ordering::SeqCst)).then_some(dirty)
    }

    /// A transaction that captured at `epoch` committed.
    pub fn synced(&self, db: &str, epoch: u64) {
        if let Some(e) = self.dbs.get(db) {
            e.synced.fetch_max(epoch, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_after_the_capture_survives_its_commit() {
        let s = SequenceSync::default();
        let first = s.needs_capture("d").expect("unknown databases are dirty");
        s.synced("d", first);
        assert_eq!(s.needs_capture("d"), None);
        s.mark_dirty("d");
        let e = s.needs_capture("d").expect("dirty");
        s.mark_dirty("d"); // another rollback while the capturing transaction runs
        s.synced("d", e);
        let e2 = s.needs_capture("d").expect("still dirty");
        s.synced("d", e2);
        assert_eq!(s.needs_capture("d"), None);
    }
}
