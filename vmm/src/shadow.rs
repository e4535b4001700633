//! The shadow MMU: each vCPU's TLB, modelled as a per-vCPU shadow page table
//! that the VMM owns, and the guest's page-table ops done with host atomics.
//!
//! Under `lazy` and `evict:P`, vCPU k runs on its own shadow root: PML4 slot 0
//! is the kernel's identity map (static, shared); the user half is filled
//! only on a miss (guest #PF -> FILL hypercall -> the same walker the IOMMU
//! uses, setting A and D as hardware does) and emptied only by k's own
//! flushes — so an entry stays usable exactly as long as the architecture
//! allows a TLB to keep it, and any missing flush shows on every run.
//! `evict:P` additionally drops each *stale* entry with probability P at
//! every exit of the vCPU (a finite hardware TLB). Under `native` the guest's
//! page tables are the hardware's and this module only does the page-table ops.
//!
//! Beside the leaf entries, each vCPU may have a paging-structure (walk)
//! cache (`walk-cache=`): the PTE table a 2 MiB region's walk last went
//! through. A miss in such a region starts the walk there instead of at
//! the root — through a table the guest may have unhooked, freed and reused
//! since (seed 003, 7a30df49f63a). What a flush drops follows the
//! architecture: on x86 any INVLPG or CR3 write drops every walk-cache
//! entry (Intel SDM 4.10.4.1); on arm64 a last-level invalidation (TLBI
//! VALE1IS, the guest's `flush::LAST_LEVEL` hint = Linux's `!freed_tables`)
//! keeps them and only a non-leaf one drops those of its range.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use abi::config::TlbModel;
use abi::hypercall::{FillResult, PtOpKind};
use abi::layout::{self, PAGE_SIZE};
use abi::policy::WalkCache;
use abi::rng::SplitMix64;
use abi::trace::{source, Kind};
use iommu::mem::{self as gmem, MemError};
use iommu::pagetable::{self as pt, pte, Access, AccessOp, Perms, TableCheck, WalkMode, WalkStart};
use vm_memory::GuestMemoryMmap;

use crate::devices::TraceSink;

/// A bad page-table op, switch or fill (a guest bug, reported with vCPU and RIP).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ShadowError {
    #[error(
        "page-table op on GPA {gpa:#x}: not an 8-byte aligned entry in the page-table region {:#x}..{:#x}",
        layout::PT_BASE,
        layout::PT_BASE + layout::PT_SIZE
    )]
    NotAnEntry { gpa: u64 },
    #[error("switch_mm to PGD {0:#x}: not a page of the page-table region")]
    NotAPgd(u64),
    #[error("GPA {gpa:#x}: {source}")]
    Memory {
        gpa: u64,
        #[source]
        source: MemError,
    },
    #[error("shadow region exhausted (too many cached translations)")]
    Exhausted,
    #[error("the eviction probability applies to the lazy/evict models only")]
    NotShadowed,
    #[error("unknown walk-cache model {0} (valid: 0 none, 1 x86, 2 arm64)")]
    UnknownWalkCache(u64),
}

/// Walks of the modelled TLB go through page-table-region pages only: a
/// guest entry pointing a table anywhere else (its data, the VMM's shadow
/// tables) faults instead of letting the walker set A/D bits there.
pub struct PtRegionOnly;

impl TableCheck for PtRegionOnly {
    fn is_live_table(&self, gpa: u64) -> bool {
        layout::in_pt_region(gpa)
    }
}

/// Does a page-table op on the entry at `gpa` with a host atomic; returns
/// (old value, changed).
pub fn pt_op(mem: &GuestMemoryMmap, kind: PtOpKind, gpa: u64, a: u64, b: u64) -> Result<(u64, bool), ShadowError> {
    if !layout::in_pt_region(gpa) || !gpa.is_multiple_of(8) {
        return Err(ShadowError::NotAnEntry { gpa });
    }
    let me = |source: MemError| ShadowError::Memory { gpa, source };
    let old = match kind {
        PtOpKind::Set | PtOpKind::Xchg => gmem::xchg_u64(mem, gpa, a).map_err(me)?,
        PtOpKind::Clear => gmem::xchg_u64(mem, gpa, 0).map_err(me)?,
        PtOpKind::Cmpxchg => match gmem::cmpxchg_u64(mem, gpa, a, b).map_err(me)? {
            Ok(old) | Err(old) => old,
        },
        PtOpKind::ClearBits => {
            gmem::with_u64(mem, gpa, true, |w| w.fetch_and(!a, std::sync::atomic::Ordering::SeqCst)).map_err(me)?
        }
        PtOpKind::SetBits => {
            gmem::with_u64(mem, gpa, true, |w| w.fetch_or(a, std::sync::atomic::Ordering::SeqCst)).map_err(me)?
        }
    };
    let new = match kind {
        PtOpKind::Set | PtOpKind::Xchg => a,
        PtOpKind::Clear => 0,
        PtOpKind::Cmpxchg => {
            if old == a {
                b
            } else {
                old
            }
        }
        PtOpKind::ClearBits => old & !a,
        PtOpKind::SetBits => old | a,
    };
    Ok((old, new != old))
}

/// Pages of the shadow region, shared by every vCPU's shadow MMU.
pub struct ShadowPool {
    free: Mutex<Vec<u64>>,
}

impl ShadowPool {
    pub fn new() -> Self {
        let pages = (0..layout::SHADOW_SIZE / PAGE_SIZE).rev().map(|i| layout::SHADOW_BASE + i * PAGE_SIZE).collect();
        Self { free: Mutex::new(pages) }
    }

    fn alloc(&self, mem: &GuestMemoryMmap) -> Option<u64> {
        let page = self.free.lock().unwrap().pop()?;
        for i in 0..512 {
            let _ = gmem::store_u64(mem, page + 8 * i, 0);
        }
        Some(page)
    }

    fn free(&self, pages: impl IntoIterator<Item = u64>) {
        self.free.lock().unwrap().extend(pages);
    }
}

impl Default for ShadowPool {
    fn default() -> Self {
        Self::new()
    }
}

/// Non-leaf shadow entries allow everything; the leaf carries the rights.
/// A and D are preset everywhere so the hardware never writes the shadow
/// tables (read-only in the guest's page tables).
const SHADOW_TABLE_FLAGS: u64 = pte::P | pte::RW | pte::US | pte::A;

/// Bytes of virtual address space one PTE table maps.
const PMD_SIZE: u64 = 1 << 21;

/// One vCPU's modelled TLB.
pub struct ShadowMmu {
    cpu: u64,
    model: TlbModel,
    /// Eviction probability in parts per million (`evict:P`; settable by the guest).
    evict_ppm: u64,
    rng: SplitMix64,
    /// GPA of this vCPU's shadow PML4 (shadowed models only).
    root: Option<u64>,
    /// PGD of the mm this vCPU runs.
    guest_root: Option<u64>,
    /// Cached translations: VA page -> shadow leaf entry.
    entries: BTreeMap<u64, u64>,
    /// The walk-cache model (`walk-cache=`, set by the guest per run).
    walk_cache: WalkCache,
    /// Walk cache: 2 MiB region -> (PTE table its walk went through, the
    /// rights of the levels above).
    walk_entries: BTreeMap<u64, (u64, Perms)>,
    pub walk_hits: u64,
    /// Shadow table pages below the root and the slot linking each, in the
    /// order they were linked; returned to the pool after a full flush.
    tables: Vec<(u64, u64)>,
    /// Slots whose present entry was cleared and that the guest has not
    /// been told to clear again yet (`abi::zap`).
    zaps: Vec<u64>,
    /// Table pages emptied by a full flush, waiting until the guest has
    /// cleared their entries (the host's shadow of a page that still
    /// holds old entries would resurface when the page is linked again).
    quarantine: Vec<u64>,
    pub fills: u64,
    pub evictions: u64,
    /// Fills, flushes and evictions go to the trace (traced runs).
    trace: Option<Arc<dyn TraceSink>>,
}

impl ShadowMmu {
    pub fn new(cpu: u64, model: TlbModel, seed: u64) -> Self {
        Self::with_trace(cpu, model, seed, None)
    }

    pub fn with_trace(cpu: u64, model: TlbModel, seed: u64, trace: Option<Arc<dyn TraceSink>>) -> Self {
        let evict_ppm = model.evict_ppm() as u64;
        let rng = SplitMix64::new(seed ^ (cpu + 1).wrapping_mul(0xa076_1d64_78bd_642f));
        Self {
            cpu,
            model,
            evict_ppm,
            rng,
            root: None,
            guest_root: None,
            entries: BTreeMap::new(),
            walk_cache: WalkCache::None,
            walk_entries: BTreeMap::new(),
            walk_hits: 0,
            tables: Vec::new(),
            zaps: Vec::new(),
            quarantine: Vec::new(),
            fills: 0,
            evictions: 0,
            trace,
        }
    }

    fn emit(&self, kind: Kind, va: u64, a: u64, b: u64) {
        if let Some(t) = &self.trace {
            t.emit(source::VMM, self.cpu as u8, kind, va, a, b);
        }
    }

    pub fn model(&self) -> TlbModel {
        self.model
    }

    pub fn evict_ppm(&self) -> u64 {
        self.evict_ppm
    }

    /// `walk-cache=` for this vCPU (`TLB_CONFIG` `SetWalkCache`).
    pub fn set_walk_cache(&mut self, model: u64) -> Result<(), ShadowError> {
        let m = u8::try_from(model).ok().and_then(WalkCache::from_u8).ok_or(ShadowError::UnknownWalkCache(model))?;
        self.walk_cache = if self.model.is_shadowed() { m } else { WalkCache::None };
        self.walk_entries.clear();
        Ok(())
    }

    pub fn walk_cache(&self) -> WalkCache {
        self.walk_cache
    }

    pub fn set_evict_ppm(&mut self, ppm: u64) -> Result<(), ShadowError> {
        if !self.model.is_shadowed() {
            return Err(ShadowError::NotShadowed);
        }
        self.evict_ppm = ppm.min(1_000_000);
        Ok(())
    }

    /// Switches to the mm with PGD `pgd`; returns the CR3 the guest must load.
    /// Like a CR3 write without PCID, it empties the user half of the TLB.
    pub fn switch_mm(&mut self, mem: &GuestMemoryMmap, pool: &ShadowPool, pgd: u64) -> Result<u64, ShadowError> {
        if !layout::in_pt_region(pgd) || !pgd.is_multiple_of(PAGE_SIZE) {
            return Err(ShadowError::NotAPgd(pgd));
        }
        self.guest_root = Some(pgd);
        if !self.model.is_shadowed() {
            return Ok(pgd);
        }
        let root = match self.root {
            Some(r) => r,
            None => {
                let r = pool.alloc(mem).ok_or(ShadowError::Exhausted)?;
                // The kernel half: the boot identity map, shared and static.
                gmem::store_u64(mem, r, layout::BOOT_PDPT | SHADOW_TABLE_FLAGS)
                    .map_err(|source| ShadowError::Memory { gpa: r, source })?;
                self.root = Some(r);
                r
            }
        };
        self.flush_all(mem, pool);
        Ok(root)
    }

    /// Serves a #PF at `va` with x86 error code `error`.
    pub fn fill(
        &mut self,
        mem: &GuestMemoryMmap,
        pool: &ShadowPool,
        va: u64,
        error: u64,
    ) -> Result<(FillResult, u64), ShadowError> {
        let (Some(root), Some(pgd)) = (self.root, self.guest_root) else {
            return Ok((if self.model.is_shadowed() { FillResult::Fault } else { FillResult::Native }, 0));
        };
        if !layout::is_user_va(va) {
            return Ok((FillResult::Fault, 0));
        }
        let op = if error & (1 << 4) != 0 {
            AccessOp::Exec
        } else if error & (1 << 1) != 0 {
            AccessOp::Write
        } else {
            AccessOp::Read
        };
        let access = Access::new(op, error & (1 << 2) != 0);
        let region = va & !(PMD_SIZE - 1);
        let cached = match self.walk_cache {
            WalkCache::None => None,
            _ => self.walk_entries.get(&region).copied(),
        };
        let walk = match cached {
            Some((table, perms)) => {
                // The walk starts at the cached PTE table, as hardware does
                // after a paging-structure-cache hit: if the guest unhooked
                // that table since, this reads (and sets A/D in) whatever
                // the page holds now.
                self.walk_hits += 1;
                let linked = pmd_target(mem, pgd, va);
                self.emit(Kind::ShadowWalkHit, va & !0xfff, table, (linked != Some(table)) as u64);
                pt::walk_from(
                    mem,
                    WalkStart { level: 1, table, perms },
                    va,
                    access,
                    WalkMode::SetAccessedDirty,
                    &PtRegionOnly,
                )
            }
            None => {
                let w = pt::walk(mem, pgd, va, access, WalkMode::SetAccessedDirty, &PtRegionOnly);
                if self.walk_cache != WalkCache::None {
                    // Cache the PDE whenever the walk got to the PTE table.
                    let mut perms = Perms::ALL;
                    for s in w.path.steps() {
                        if s.level == 1 {
                            self.walk_entries.insert(region, (s.table, perms));
                            break;
                        }
                        perms = perms.and_entry(s.entry);
                    }
                }
                w
            }
        };
        let t = match walk.result {
            Ok(t) => t,
            Err(f) => return Ok((FillResult::Fault, f.entry())),
        };
        // Writable in the TLB only once D is set: a write through an entry
        // filled for a read faults again and sets D then, as on x86.
        let mut leaf = t.pa_4k() | pte::P | pte::A;
        if t.perms.write && t.dirty {
            leaf |= pte::RW | pte::D;
        }
        if t.perms.user {
            leaf |= pte::US;
        }
        if !t.perms.exec {
            leaf |= pte::NX;
        }
        let slot = self.leaf_slot(mem, pool, root, va)?;
        gmem::store_u64(mem, slot, leaf).map_err(|source| ShadowError::Memory { gpa: slot, source })?;
        self.entries.insert(va & !0xfff, leaf);
        self.fills += 1;
        self.emit(Kind::ShadowFill, va & !0xfff, t.leaf, t.pa_4k());
        Ok((FillResult::Filled, t.leaf))
    }

    /// GPA of the shadow leaf slot for `va`, allocating shadow tables on the way.
    fn leaf_slot(&mut self, mem: &GuestMemoryMmap, pool: &ShadowPool, root: u64, va: u64) -> Result<u64, ShadowError> {
        let mut table = root;
        for level in (2..=4u8).rev() {
            let slot = table + 8 * pt::va_index(va, level);
            let e = gmem::load_u64(mem, slot).map_err(|source| ShadowError::Memory { gpa: slot, source })?;
            table = if e & pte::P != 0 {
                e & pte::ADDR_MASK
            } else {
                let t = pool.alloc(mem).ok_or(ShadowError::Exhausted)?;
                self.tables.push((t, slot));
                gmem::store_u64(mem, slot, t | SHADOW_TABLE_FLAGS)
                    .map_err(|source| ShadowError::Memory { gpa: slot, source })?;
                t
            };
        }
        Ok(table + 8 * pt::va_index(va, 1))
    }

    fn drop_entry(&mut self, mem: &GuestMemoryMmap, va_page: u64) {
        if self.entries.remove(&va_page).is_none() {
            return;
        }
        let Some(mut table) = self.root else { return };
        for level in (2..=4u8).rev() {
            match gmem::load_u64(mem, table + 8 * pt::va_index(va_page, level)) {
                Ok(e) if e & pte::P != 0 => table = e & pte::ADDR_MASK,
                _ => return,
            }
        }
        self.clear_slot(mem, table + 8 * pt::va_index(va_page, 1));
    }

    /// Clears a present shadow entry and lists the slot for the guest.
    fn clear_slot(&mut self, mem: &GuestMemoryMmap, slot: u64) {
        if gmem::load_u64(mem, slot).is_ok_and(|e| e & pte::P != 0) {
            let _ = gmem::store_u64(mem, slot, 0);
            self.zaps.push(slot);
        }
    }

    /// Up to `max` slots the guest must clear again, oldest first.
    pub fn take_zaps(&mut self, max: usize) -> Vec<u64> {
        let n = max.min(self.zaps.len());
        self.zaps.drain(..n).collect()
    }

    /// Slots not handed to the guest yet.
    pub fn zaps_pending(&self) -> usize {
        self.zaps.len()
    }

    /// The guest has cleared every slot it was given: the emptied tables
    /// may be used again.
    pub fn zaps_done(&mut self, pool: &ShadowPool) {
        if self.zaps.is_empty() {
            pool.free(self.quarantine.drain(..));
        }
    }

    /// What a flush of `[va, end)` does to the walk cache: x86 drops
    /// everything (INVLPG invalidates all paging-structure-cache entries
    /// of the PCID), arm64 only the regions of a non-leaf flush.
    fn flush_walk_cache(&mut self, va: u64, end: u64, last_level: bool) {
        match self.walk_cache {
            WalkCache::None => {}
            WalkCache::X86 => self.walk_entries.clear(),
            WalkCache::Arm64 if last_level => {}
            WalkCache::Arm64 => {
                let first = va & !(PMD_SIZE - 1);
                self.walk_entries.retain(|&r, _| r < first || r >= end);
            }
        }
    }

    /// One page; `last_level`: the guest's hint that no table was freed.
    pub fn flush_page(&mut self, mem: &GuestMemoryMmap, va: u64, last_level: bool) {
        self.drop_entry(mem, va & !0xfff);
        self.flush_walk_cache(va, va.saturating_add(PAGE_SIZE), last_level);
        self.emit(Kind::ShadowFlush, va & !0xfff, (va & !0xfff).saturating_add(PAGE_SIZE), 0);
    }

    pub fn flush_range(&mut self, mem: &GuestMemoryMmap, pool: &ShadowPool, va: u64, len: u64, last_level: bool) {
        // Like Linux's tlb_single_page_flush_ceiling: a long range flushes all.
        if len > 64 * PAGE_SIZE {
            return self.flush_all(mem, pool);
        }
        let end = va.saturating_add(len);
        let pages: Vec<u64> = self.entries.range(va & !0xfff..end).map(|(k, _)| *k).collect();
        for p in pages {
            self.drop_entry(mem, p);
        }
        self.flush_walk_cache(va, end, last_level);
        self.emit(Kind::ShadowFlush, va & !0xfff, end, 0);
    }

    pub fn flush_all(&mut self, mem: &GuestMemoryMmap, _pool: &ShadowPool) {
        // Every present entry of the user half: the leaves, then the slots
        // linking the tables, deepest first (all of them go to the guest).
        let leaves: Vec<u64> = self.entries.keys().copied().collect();
        for va in leaves {
            self.drop_entry(mem, va);
        }
        let tables = std::mem::take(&mut self.tables);
        for &(_, link) in tables.iter().rev() {
            self.clear_slot(mem, link);
        }
        self.quarantine.extend(tables.into_iter().map(|(t, _)| t));
        self.walk_entries.clear();
        self.emit(Kind::ShadowFlush, 0, 0, 0);
    }

    /// `evict:P`: at an exit, drop each stale entry with probability P.
    /// An entry is stale if the page tables no longer give it: another
    /// page, fewer rights, or D set over a PTE that was cleaned since (a
    /// TLB entry with D set writes without setting D again); a
    /// walk-cache entry is stale if the PMD no longer points at its table.
    /// Returns true if a leaf entry was dropped (the caller must then make
    /// KVM flush its own cached translations of the shadow tables).
    pub fn evict_stale(&mut self, mem: &GuestMemoryMmap) -> bool {
        let Some(pgd) = self.guest_root else { return false };
        if self.evict_ppm == 0 || (self.entries.is_empty() && self.walk_entries.is_empty()) {
            return false;
        }
        let regions: Vec<u64> = self
            .walk_entries
            .iter()
            .filter(|(&r, &(table, _))| pmd_target(mem, pgd, r) != Some(table))
            .map(|(&r, _)| r)
            .collect();
        for r in regions {
            if self.rng.chance_ppm(self.evict_ppm) {
                self.walk_entries.remove(&r);
            }
        }
        let mut victims = Vec::new();
        for (&va, &leaf) in &self.entries {
            let walk = pt::walk(mem, pgd, va, Access::read(false), WalkMode::Peek, &PtRegionOnly);
            let stale = match walk.result {
                Ok(t) => {
                    t.pa_4k() != leaf & pte::ADDR_MASK
                        || (leaf & pte::RW != 0 && !t.perms.write)
                        // Only D set over a clean PTE: an entry without D
                        // (a read fill of a dirty read-only PTE) is what a
                        // fill gives now, and a write through it faults.
                        || (leaf & pte::D != 0 && !t.dirty)
                }
                Err(_) => true,
            };
            if stale && self.rng.chance_ppm(self.evict_ppm) {
                victims.push(va);
            }
        }
        for va in &victims {
            self.drop_entry(mem, *va);
            self.emit(Kind::ShadowEvict, *va, 0, 0);
        }
        self.evictions += victims.len() as u64;
        !victims.is_empty()
    }

    pub fn cpu(&self) -> u64 {
        self.cpu
    }
}

/// The PTE table the guest's PMD entry for `va` points at now, if any.
fn pmd_target(mem: &GuestMemoryMmap, pgd: u64, va: u64) -> Option<u64> {
    let mut table = pgd & pte::ADDR_MASK;
    for level in (2..=4u8).rev() {
        let e = gmem::load_u64(mem, table + 8 * pt::va_index(va, level)).ok()?;
        if e & pte::P == 0 || (level == 2 && e & pte::PS != 0) {
            return None;
        }
        table = e & pte::ADDR_MASK;
    }
    Some(table)
}
