//! Classification cache keyed by statement text: the hot path of a repeated
//! statement is one hash look-up instead of a parse.

use super::Classification;
use dashmap::DashMap;
use std::sync::Arc;

/// Bounded, shared cache of classifications.
pub struct ClassifyCache {
    map: DashMap<Box<str>, Arc<Classification>>,
    capacity: usize,
}

impl ClassifyCache {
    pub fn new(capacity: usize) -> Self {
        ClassifyCache { map: DashMap::new(), capacity }
    }

    /// Classification of `sql`, parsed at most once while cached.
    pub fn get(&self, sql: &str) -> Arc<Classification> {
        if let Some(c) = self.map.get(sql) {
            return c.clone();
        }
        let c = Arc::new(super::classify(sql));
        if self.map.len() >= self.capacity {
            // Crude but bounded: drop everything; hot statements come back at once.
            self.map.clear();
        }
        self.map.insert(sql.into(), c.clone());
        c
    }
}
