//! Classification cache keyed by statement text: the hot path of a repeated
//! statement is one hash look-up instead of a parse.
//!
//! Bounded with a second-chance (CLOCK-like) eviction: every hit marks its
//! entry; when the cache is full, one eviction pass drops the entries not used
//! since the previous pass and clears the marks of the others, then, if that
//! freed too little (everything was hot), drops arbitrary entries (in hash
//! order) down to half the capacity. Hot statements survive a burst of one-off
//! texts, and each pass is paid for by capacity/2 inserts, so the cost stays
//! O(1) amortized per insert without any global LRU list to lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;

use super::Classification;

/// Texts longer than this are classified every time instead of cached: they are
/// usually one-off (bulk INSERTs with inline values) and would crowd the memory
/// the bound is meant to protect.
pub const MAX_CACHED_TEXT: usize = 16 * 1024;

struct Entry {
    class: Arc<Classification>,
    /// Used since the last eviction pass.
    used: AtomicBool,
}

/// Bounded, shared cache of classifications.
pub struct ClassifyCache {
    map: DashMap<Box<str>, Entry>,
    capacity: usize,
    /// Held by the one thread running an eviction pass; the others insert on.
    evicting: AtomicBool,
}

impl ClassifyCache {
    /// A cache holding at most about `capacity` texts (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        ClassifyCache { map: DashMap::new(), capacity, evicting: AtomicBool::new(false) }
    }

    /// Classification of `sql`, parsed at most once while cached. The key is
    /// the text with its literals stripped ([`super::normalize`]), so queries
    /// that differ only in literal values share one entry.
    pub fn get(&self, sql: &str) -> Arc<Classification> {
        let key = super::normalize::normalize(sql);
        if let Some(e) = self.map.get(&*key) {
            // Load first: no cache-line write on the hot path once marked.
            if !e.used.load(Ordering::Relaxed) {
                e.used.store(true, Ordering::Relaxed);
            }
            return e.class.clone();
        }
        let class = super::classify(&key);
        if !class.settings.is_empty() && matches!(key, std::borrow::Cow::Owned(_)) {
            // A SET's replay text carries its literal values: classify the
            // original text, and don't cache what is specific to one value.
            return Arc::new(super::classify(sql));
        }
        let class = Arc::new(class);
        if self.capacity == 0 || key.len() > MAX_CACHED_TEXT {
            return class;
        }
        if self.map.len() >= self.capacity {
            self.evict();
        }
        self.map
            .insert(key.into_owned().into_boxed_str(), Entry { class: class.clone(), used: AtomicBool::new(false) });
        class
    }

    /// Number of cached texts.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn evict(&self) {
        if self.evicting.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return; // another thread is making room
        }
        self.map.retain(|_, e| e.used.swap(false, Ordering::Relaxed));
        let target = self.capacity / 2;
        let mut excess = self.map.len().saturating_sub(target);
        if excess > 0 {
            self.map.retain(|_, _| {
                if excess > 0 {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
        self.evicting.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_the_same_classification() {
        let cache = ClassifyCache::new(10);
        let a = cache.get("SELECT 1");
        let b = cache.get("SELECT 1");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.statement_count, 1);
        assert_eq!(cache.len(), 1);
        assert!(!Arc::ptr_eq(&a, &cache.get("SELECT c2")));
        // Literal values do not make a new entry.
        assert!(Arc::ptr_eq(&a, &cache.get("SELECT 2")));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn stays_bounded() {
        let cache = ClassifyCache::new(100);
        for i in 0..1000 {
            cache.get(&format!("SELECT c{i}"));
            assert!(cache.len() <= 100, "{} entries after {i}", cache.len());
        }
        assert!(cache.len() >= 50);
    }

    #[test]
    fn hot_entries_survive_a_stream_of_one_off_texts() {
        let cache = ClassifyCache::new(100);
        let hot = cache.get("SELECT hot");
        for i in 0..1000 {
            cache.get(&format!("SELECT c{i}"));
            // Used between every two eviction passes.
            assert!(Arc::ptr_eq(&hot, &cache.get("SELECT hot")), "evicted at {i}");
        }
    }

    #[test]
    fn all_hot_still_makes_room() {
        let cache = ClassifyCache::new(10);
        for i in 0..10 {
            let sql = format!("SELECT c{i}");
            cache.get(&sql);
            cache.get(&sql);
        }
        cache.get("SELECT new");
        assert!(cache.len() <= 6, "{}", cache.len());
        assert_eq!(cache.get("SELECT new").leader_reason, None);
    }

    #[test]
    fn set_statements_keep_their_values() {
        let cache = ClassifyCache::new(10);
        let a = cache.get("SET search_path = 'a'");
        let b = cache.get("SET search_path = 'b'");
        assert_ne!(a.settings, b.settings);
        match &b.settings[0] {
            crate::sql::SettingChange::Set { sql, .. } => assert_eq!(sql, "SET search_path = 'b'"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn zero_capacity_and_huge_texts_are_not_cached() {
        let cache = ClassifyCache::new(0);
        assert_eq!(cache.get("SELECT 1").statement_count, 1);
        assert!(cache.is_empty());

        let cache = ClassifyCache::new(10);
        let huge = format!("SELECT {}", "x".repeat(MAX_CACHED_TEXT));
        assert_eq!(cache.get(&huge).statement_count, 1);
        assert!(cache.is_empty());
    }
}
