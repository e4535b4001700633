//! Which guest pages are live page-table pages.
//!
//! The VMM sees every page-table page the guest allocates or frees (its
//! paravirtual page-table ops say so) and reports them here. A walk that
//! reads an entry from any other page — typically a table the guest freed
//! while a paging-structure cache still points into it (seed 003) — is a
//! stale walk. Until the VMM turns tracking on, every page counts as a live
//! table, so the IOMMU works before (or without) that wiring.

use std::collections::{HashMap, HashSet};

use crate::pagetable::TableCheck;

#[derive(Clone, Debug, Default)]
pub struct TableRegistry {
    tracking: bool,
    live: HashSet<u64>,
    /// How many times each page was freed as a table: a paging-structure
    /// cache entry filled before a free still points at the freed table
    /// even after the page is reused as a table elsewhere.
    frees: HashMap<u64, u64>,
}

impl TableRegistry {
    pub fn new(tracking: bool) -> Self {
        TableRegistry { tracking, live: HashSet::new(), frees: HashMap::new() }
    }
    /// Records `gpa`'s 4 KiB page as a live table (kept while tracking is off).
    pub fn allocated(&mut self, gpa: u64) {
        self.live.insert(gpa & !0xfff);
    }
    pub fn freed(&mut self, gpa: u64) {
        self.live.remove(&(gpa & !0xfff));
        *self.frees.entry(gpa & !0xfff).or_default() += 1;
    }
    /// The table page's generation: how often it was freed so far.
    pub fn generation(&self, gpa: u64) -> u64 {
        self.frees.get(&(gpa & !0xfff)).copied().unwrap_or(0)
    }
    pub fn set_tracking(&mut self, on: bool) {
        self.tracking = on;
    }
    pub fn tracking(&self) -> bool {
        self.tracking
    }
    /// Number of pages recorded live.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }
    pub fn clear(&mut self) {
        self.live.clear();
        self.frees.clear();
    }
}

impl TableCheck for TableRegistry {
    fn is_live_table(&self, gpa: u64) -> bool {
        !self.tracking || self.live.contains(&(gpa & !0xfff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_switch() {
        let mut t = TableRegistry::new(false);
        assert!(t.is_live_table(0x5000));
        t.allocated(0x5008);
        t.set_tracking(true);
        assert!(t.is_live_table(0x5000));
        assert!(!t.is_live_table(0x6000));
        assert_eq!(t.generation(0x5000), 0);
        t.freed(0x5000);
        assert!(!t.is_live_table(0x5ff8));
        assert_eq!(t.live_count(), 0);
        assert_eq!(t.generation(0x5008), 1);
        t.allocated(0x5000);
        assert!(t.is_live_table(0x5000));
        assert_eq!(t.generation(0x5000), 1);
    }
}
