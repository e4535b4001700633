//! What the caches hold: IOTLB / device-TLB and paging-structure-cache
//! keys and entries, and a TLB that counts its large-page pieces.

use crate::cache::{CacheConfig, SetAssoc, SetKey};
use crate::event::CacheKind;
use crate::pagetable::{self, level_shift, PageSize, Perms};

/// An IOTLB / device-TLB key: the 4 KiB page of `va` in `pasid`'s space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IotlbKey {
    pub pasid: u32,
    /// `va >> 12`.
    pub vpn: u64,
}

impl SetKey for IotlbKey {
    fn set_hash(&self) -> u64 {
        // Low VPN bits select the set; the PASID perturbs it so that two
        // address spaces using the same VAs do not always collide.
        self.vpn ^ (self.pasid as u64).wrapping_mul(0x9e37_79b9)
    }
}

/// A cached translation of one 4 KiB page (a large page is cached as 4 KiB
/// pieces, but invalidating any part of it drops every piece).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IotlbEntry {
    /// PA of the 4 KiB page.
    pub pa: u64,
    /// Start VA and size of the page the leaf maps.
    pub page_va: u64,
    pub size: PageSize,
    pub perms: Perms,
    /// `D` was set in the leaf: writes may use this entry.
    pub dirty: bool,
    /// The request was supervisor-mode (PASID entry `PRIV`).
    pub privileged: bool,
    /// The leaf entry when cached, and its GPA.
    pub pte: u64,
    pub pte_gpa: u64,
}

impl IotlbEntry {
    /// True if the page this entry comes from overlaps `[start, start + len)`.
    pub fn overlaps(&self, start: u64, len: u64) -> bool {
        ranges_overlap(self.page_va, self.size.bytes(), start, len)
    }
}

pub(crate) fn ranges_overlap(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    let (a, alen, b, blen) = (a as u128, alen as u128, b as u128, blen as u128);
    a < b + blen && b < a + alen
}

/// A paging-structure-cache key: the non-leaf entry of `level` for VA
/// prefix `prefix = va >> level_shift(level)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PwcKey {
    pub pasid: u32,
    /// 4 = PML4E, 3 = PDPTE, 2 = PDE.
    pub level: u8,
    pub prefix: u64,
}

impl PwcKey {
    pub fn for_va(pasid: u32, level: u8, va: u64) -> Self {
        PwcKey { pasid, level, prefix: va >> level_shift(level) }
    }
    /// First VA and size of the region the entry covers.
    pub fn region(&self) -> (u64, u64) {
        (self.prefix << level_shift(self.level), pagetable::level_span(self.level))
    }
}

impl SetKey for PwcKey {
    fn set_hash(&self) -> u64 {
        self.prefix ^ (self.level as u64).wrapping_mul(0x5bd1_e995) ^ (self.pasid as u64).wrapping_mul(0x9e37_79b9)
    }
}

/// A cached non-leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PwcEntry {
    /// GPA of the table it points to (level `key.level - 1`).
    pub table: u64,
    /// Rights of the levels down to and including this entry.
    pub perms: Perms,
    /// The entry's value when cached.
    pub entry: u64,
    /// [`TableRegistry::generation`] of `table` when cached: if the table
    /// was freed since, a walk starting here is a stale walk (even when the
    /// page has become a live table again, of some other range).
    pub table_gen: u64,
}

/// A TLB (IOTLB or device TLB) plus the count of large-page pieces in it,
/// which decides whether a small invalidation may look up pages directly.
#[derive(Clone, Debug)]
pub(crate) struct Tlb {
    pub(crate) kind: CacheKind,
    pub(crate) cache: SetAssoc<IotlbKey, IotlbEntry>,
    pub(crate) large: usize,
}

impl Tlb {
    pub(crate) fn new(kind: CacheKind, cfg: CacheConfig, seed: u64) -> Self {
        Tlb { kind, cache: SetAssoc::new(cfg, seed), large: 0 }
    }
    pub(crate) fn note_gone(&mut self, e: &IotlbEntry) {
        if e.size != PageSize::Size4K {
            self.large -= 1;
        }
    }
    pub(crate) fn insert(&mut self, k: IotlbKey, e: IotlbEntry) -> Option<(IotlbKey, IotlbEntry)> {
        if let Some(old) = self.cache.peek(&k) {
            if old.size != PageSize::Size4K {
                self.large -= 1;
            }
        }
        if e.size != PageSize::Size4K {
            self.large += 1;
        }
        let victim = self.cache.insert(k, e);
        if let Some((_, v)) = &victim {
            self.note_gone(v);
        }
        victim
    }
    pub(crate) fn remove(&mut self, k: &IotlbKey) -> Option<IotlbEntry> {
        let e = self.cache.remove(k)?;
        self.note_gone(&e);
        Some(e)
    }
    /// Drops the entries for which `gone` holds; returns them.
    pub(crate) fn drop_where(&mut self, gone: impl Fn(&IotlbKey, &IotlbEntry) -> bool) -> Vec<(IotlbKey, IotlbEntry)> {
        let mut out = Vec::new();
        self.cache.retain(|k, e| !gone(k, e), |k, e| out.push((k, e)));
        for (_, e) in &out {
            if e.size != PageSize::Size4K {
                self.large -= 1;
            }
        }
        out
    }
    /// Drops `pasid`'s entries overlapping `[start, start + len)`.
    pub(crate) fn drop_range(&mut self, pasid: u32, start: u64, len: u64) -> Vec<(IotlbKey, IotlbEntry)> {
        const DIRECT_PAGES: u64 = 64;
        let pages = len >> 12;
        if self.large == 0 && pages <= DIRECT_PAGES {
            // Only 4 KiB entries: each page of the range is one key.
            let mut out = Vec::new();
            for i in 0..pages {
                let k = IotlbKey { pasid, vpn: (start >> 12).wrapping_add(i) };
                if let Some(e) = self.remove(&k) {
                    out.push((k, e));
                }
            }
            out
        } else {
            self.drop_where(|k, e| k.pasid == pasid && e.overlaps(start, len))
        }
    }
}
