//! The Linux mm model for a test address space, after `mm/memory.c`,
//! `mm/mmu_gather.c`, `mm/madvise.c` and `mm/mmap.c`: VMAs, split
//! page-table locks, the anonymous fault path, and zapping with an
//! `mmu_gather` whose flush scheme and mmu_notifier placement follow the
//! run's policy (`abi::litmus::PolicyAbi`). Named hook points let a test
//! pause a thread at the exact places the mailing-list traces talk about.
//!
//! This is the first slice of the model: fault, zap (madvise DONTNEED,
//! munmap with free_pgtables) and the flush schemes `ptl`, `gather`,
//! `pending` with the nested-zap check. The other operations come next.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use abi::layout::{self, PAGE_SIZE};
use abi::litmus::{FlushScheme, Hook, NotifierPlacement, OnOff, PolicyAbi, ResetRange};

use super::hooks::hook;
use super::page_alloc;
use super::pgtable::{self, pte, Mm};
use super::tlb;
use crate::iommu;
use crate::sync::SpinLock;
use crate::trace::{self, Kind};

// ---- policy ---------------------------------------------------------------

static POLICY: SpinLock<PolicyAbi> = SpinLock::new(PolicyAbi {
    tlb: 0,
    iotlb: 0,
    pwc: 1,
    flush: FlushScheme::Pending as u8,
    notifier: NotifierPlacement::TlbFlush as u8,
    madv_nested_check: OnOff::On as u8,
    batched_pending_check: OnOff::On as u8,
    mremap_flush: 0,
    reset_range: ResetRange::KeepFreedTables as u8,
    nested_range: 0,
    dirty_shared_flush: 0,
    migrc: 0,
    migrc_upgrade: 1,
    _pad: [0; 3],
    tlb_evict_ppm: 0,
    iotlb_evict_ppm: 0,
});

pub fn set_policy(p: PolicyAbi) {
    *POLICY.lock() = p;
}

pub fn policy() -> PolicyAbi {
    *POLICY.lock()
}

fn flush_scheme() -> FlushScheme {
    FlushScheme::from_u8(policy().flush).unwrap_or(FlushScheme::Pending)
}

fn notifier() -> NotifierPlacement {
    NotifierPlacement::from_u8(policy().notifier).unwrap_or(NotifierPlacement::TlbFlush)
}

// ---- split page-table locks -----------------------------------------------

const PT_PAGES: usize = (layout::PT_SIZE / PAGE_SIZE) as usize;
static PTL: [AtomicBool; PT_PAGES] = [const { AtomicBool::new(false) }; PT_PAGES];

fn ptl_of(table: u64) -> &'static AtomicBool {
    &PTL[((table - layout::PT_BASE) / PAGE_SIZE) as usize % PT_PAGES]
}

/// `pte_offset_map_lock`: take the PTL of the PTE table `table`, which
/// maps the 2 MiB region holding `va`.
fn pte_lock(table: u64, va: u64) {
    let l = ptl_of(table);
    while l.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        core::hint::spin_loop();
    }
    trace::emit(Kind::PtlAcquire, va & !((1 << 21) - 1), table, 0);
    hook(Hook::AfterPtlAcquire);
}

fn pte_unlock(table: u64, va: u64) {
    ptl_of(table).store(false, Ordering::Release);
    trace::emit(Kind::PtlRelease, va & !((1 << 21) - 1), table, 0);
    hook(Hook::AfterPtlRelease);
}

// ---- the test mm -----------------------------------------------------------

pub const VM_READ: u8 = 1;
pub const VM_WRITE: u8 = 2;

#[derive(Clone, Copy, Default)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub flags: u8,
}

const MAX_VMAS: usize = 16;

/// `struct mm_struct` of the test address space (one at a time).
pub struct MmStruct {
    pgd: AtomicU64,
    vmas: SpinLock<[Vma; MAX_VMAS]>,
    /// `mm->tlb_flush_pending`.
    tlb_flush_pending: AtomicU64,
    /// PASID the SVA driver bound this mm to (0 = no secondary MMU; the
    /// binding API comes with the device forms of the scenarios).
    pasid: AtomicU64,
}

pub static TEST_MM: MmStruct = MmStruct {
    pgd: AtomicU64::new(0),
    vmas: SpinLock::new([Vma { start: 0, end: 0, flags: 0 }; MAX_VMAS]),
    tlb_flush_pending: AtomicU64::new(0),
    pasid: AtomicU64::new(0),
};

/// A failed fault: the access is not allowed (SIGSEGV in Linux).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segv;

impl MmStruct {
    /// Creates the address space (no VMAs).
    pub fn init(&self) {
        let mm = Mm::new();
        self.pgd.store(mm.pgd, Ordering::Release);
        *self.vmas.lock() = [Vma::default(); MAX_VMAS];
        self.tlb_flush_pending.store(0, Ordering::Relaxed);
        self.pasid.store(0, Ordering::Relaxed);
    }

    pub fn pt(&self) -> Mm {
        Mm { pgd: self.pgd.load(Ordering::Acquire) }
    }

    pub fn is_live(&self) -> bool {
        self.pgd.load(Ordering::Acquire) != 0
    }

    /// Unmaps everything and frees the page tables.
    pub fn teardown(&self) {
        let vmas = *self.vmas.lock();
        for v in vmas.iter().filter(|v| v.end > v.start) {
            self.munmap(v.start, v.end - v.start);
        }
        let pasid = self.pasid.swap(0, Ordering::AcqRel);
        if pasid != 0 {
            iommu::unbind_mm(pasid as u32);
        }
        let pgd = self.pgd.swap(0, Ordering::AcqRel);
        if pgd != 0 {
            Mm { pgd }.destroy();
        }
    }

    /// `mmap` of an anonymous range; pages are populated on fault.
    pub fn mmap(&self, start: u64, len: u64, flags: u8) -> bool {
        let mut vmas = self.vmas.lock();
        match vmas.iter_mut().find(|v| v.end <= v.start) {
            Some(slot) => {
                *slot = Vma { start, end: start + len, flags };
                true
            }
            None => false,
        }
    }

    fn find_vma(&self, va: u64) -> Option<Vma> {
        self.vmas.lock().iter().copied().find(|v| v.start <= va && va < v.end)
    }

    fn mm_tlb_flush_nested(&self) -> bool {
        self.tlb_flush_pending.load(Ordering::Acquire) > 1
    }

    fn secondary_invalidate(&self, start: u64, end: u64, leaf_only: bool) {
        let pasid = self.pasid.load(Ordering::Acquire);
        if pasid != 0 {
            hook(Hook::BeforeNotifier);
            trace::emit(Kind::NotifierBegin, start, end, leaf_only as u64);
            let _ = iommu::invalidate_range(pasid as u32, start, end, leaf_only);
            trace::emit(Kind::NotifierEnd, start, end, leaf_only as u64);
            hook(Hook::AfterNotifier);
        }
    }

    // ---- fault path (mm/memory.c) ----

    /// `handle_mm_fault`: make `va` accessible for a read or a write.
    pub fn handle_mm_fault(&self, va: u64, write: bool) -> Result<(), Segv> {
        let vma = self.find_vma(va).ok_or(Segv)?;
        if write && vma.flags & VM_WRITE == 0 || vma.flags & VM_READ == 0 {
            return Err(Segv);
        }
        let pt = self.pt();
        let ptep = pt.pte_alloc(va & !(PAGE_SIZE - 1));
        let table = ptep & !(PAGE_SIZE - 1);
        pte_lock(table, va);
        let entry = pgtable::read_entry(ptep);
        let page = va & !(PAGE_SIZE - 1);
        let r = if entry & pte::ADDR_MASK == 0 {
            do_anonymous_page(ptep, &vma, page)
        } else if entry & pte::P == 0 {
            // PROT_NONE entry with an accessible VMA: restore the protection.
            pgtable::set_pte(ptep, prot_entry(entry, vma.flags));
            trace::emit(Kind::PteChange, page, entry, prot_entry(entry, vma.flags));
            Ok(())
        } else if write && entry & pte::RW == 0 {
            do_wp_page(ptep, entry, page)
        } else {
            Ok(())
        };
        pte_unlock(table, va);
        hook(Hook::AfterFault);
        r
    }

    // ---- mprotect (mm/mprotect.c) ----

    /// `mprotect` of exactly one VMA: new VMA flags, then
    /// `change_protection`. Returns false if no VMA is exactly `start..+len`.
    pub fn mprotect(&self, start: u64, len: u64, flags: u8) -> bool {
        {
            let mut vmas = self.vmas.lock();
            match vmas.iter_mut().find(|v| v.start == start && v.end == start + len) {
                Some(v) => v.flags = flags,
                None => return false,
            }
        }
        self.change_protection(start, start + len, flags);
        true
    }

    /// `change_protection`: rewrite the PTEs under their PTL with
    /// `tlb_flush_pending` raised; flush after the PTLs are released, and
    /// only if a permission was removed (a pure upgrade does not flush,
    /// as in Linux since the series of seed 002).
    fn change_protection(&self, start: u64, end: u64, flags: u8) {
        let pending = flush_scheme() != FlushScheme::Gather;
        if pending {
            self.tlb_flush_pending.fetch_add(1, Ordering::AcqRel);
            hook(Hook::AfterIncPending);
        }
        mmu_notifier_invalidate_range_start(self, start, end);
        let pt = self.pt();
        let mut demoted = false;
        let mut va = start & !(PAGE_SIZE - 1);
        while va < end {
            let table_end = (((va >> 21) + 1) << 21).min(end);
            if let Some(ptep0) = pt.pte_lookup(va) {
                let table = ptep0 & !(PAGE_SIZE - 1);
                pte_lock(table, va);
                let mut a = va;
                while a < table_end {
                    let ptep = table + 8 * ((a >> 12) & 511);
                    let old = pgtable::read_entry(ptep);
                    if old & pte::ADDR_MASK != 0 {
                        let new = prot_entry(old, flags);
                        if new != old {
                            pgtable::set_pte(ptep, new);
                            trace::emit(Kind::PteChange, a, old, new);
                            hook(Hook::AfterPteSet);
                            demoted |=
                                (old & pte::RW != 0 && new & pte::RW == 0) || (old & pte::P != 0 && new & pte::P == 0);
                        }
                    }
                    a += PAGE_SIZE;
                }
                if flush_scheme() == FlushScheme::Ptl && demoted {
                    self.flush_range(start, end);
                }
                pte_unlock(table, va);
            }
            va = table_end;
        }
        mmu_notifier_invalidate_range_end(self, start, end);
        if demoted && flush_scheme() != FlushScheme::Ptl {
            self.flush_range(start, end);
        }
        if pending {
            hook(Hook::BeforeDecPending);
            self.tlb_flush_pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// `flush_tlb_range`, and the 6.6+ secondary invalidation from the flush path.
    fn flush_range(&self, start: u64, end: u64) {
        hook(Hook::BeforeFlush);
        tlb::flush_tlb_mm_range(&self.pt(), start, end);
        hook(Hook::AfterFlush);
        if notifier() == NotifierPlacement::TlbFlush {
            self.secondary_invalidate(start, end, true);
        }
    }

    // ---- zap (mm/memory.c, mm/madvise.c, mm/mmap.c) ----

    /// `madvise(MADV_DONTNEED)`: `zap_page_range_single` inside an
    /// `mmu_gather`, between `mmu_notifier_invalidate_range_start/_end`.
    pub fn madvise_dontneed(&self, start: u64, len: u64) {
        let end = start + len;
        let mut tlb = MmuGather::new(self);
        mmu_notifier_invalidate_range_start(self, start, end);
        self.unmap_page_range(&mut tlb, start, end);
        mmu_notifier_invalidate_range_end(self, start, end);
        tlb.finish();
    }

    /// `munmap`: zap, then `free_pgtables` for PTE tables the range covers
    /// whole, then drop the VMA.
    pub fn munmap(&self, start: u64, len: u64) {
        let end = start + len;
        let mut tlb = MmuGather::new(self);
        mmu_notifier_invalidate_range_start(self, start, end);
        self.unmap_page_range(&mut tlb, start, end);
        mmu_notifier_invalidate_range_end(self, start, end);
        self.free_pgtables(&mut tlb, start, end);
        tlb.finish();
        let mut vmas = self.vmas.lock();
        for v in vmas.iter_mut().filter(|v| v.start >= start && v.end <= end) {
            *v = Vma::default();
        }
    }

    fn unmap_page_range(&self, tlb: &mut MmuGather, start: u64, end: u64) {
        let pt = self.pt();
        let mut va = start & !(PAGE_SIZE - 1);
        while va < end {
            // One PTE table (2 MiB) at a time, as zap_pmd_range does.
            let table_end = ((va >> 21) + 1) << 21;
            let stop = table_end.min(end);
            if let Some(ptep) = pt.pte_lookup(va) {
                zap_pte_range(self, tlb, ptep & !(PAGE_SIZE - 1), va, stop);
            }
            va = stop;
        }
    }

    /// `free_pgtables`: PTE tables whose 2 MiB the range covers entirely are
    /// unhooked from their PMD now and freed after the flush.
    fn free_pgtables(&self, tlb: &mut MmuGather, start: u64, end: u64) {
        let pt = self.pt();
        let mut va = (start + (1 << 21) - 1) & !((1 << 21) - 1);
        while va + (1 << 21) <= end {
            if let Some(pmd_slot) = pt.pmd_entry(va) {
                let e = pgtable::read_entry(pmd_slot);
                if e & pte::P != 0 {
                    pgtable::set_pte(pmd_slot, 0);
                    trace::emit(Kind::PmdClear, va, e & pte::ADDR_MASK, 0);
                    hook(Hook::AfterPmdClear);
                    tlb.freed_tables = true;
                    tlb.adjust_range(va, 1 << 21);
                    tlb.remove_table(e & pte::ADDR_MASK);
                }
            }
            va += 1 << 21;
        }
    }
}

/// The PTE for an existing page under VMA `flags` (PROT_NONE clears P and
/// keeps the page, as `_PAGE_PROTNONE` does).
fn prot_entry(old: u64, flags: u8) -> u64 {
    let mut e = old & !(pte::RW | pte::P);
    if flags & VM_READ != 0 {
        e |= pte::P;
    }
    if flags & VM_WRITE != 0 {
        e |= pte::RW;
    }
    e
}

/// `do_wp_page` for an exclusively owned anonymous page: `wp_page_reuse`
/// makes the PTE writable again (CoW of shared pages comes with refcounts).
fn do_wp_page(ptep: u64, entry: u64, va: u64) -> Result<(), Segv> {
    pgtable::set_pte(ptep, entry | pte::RW);
    trace::emit(Kind::PteChange, va, entry, entry | pte::RW);
    hook(Hook::AfterPteSet);
    Ok(())
}

fn do_anonymous_page(ptep: u64, vma: &Vma, va: u64) -> Result<(), Segv> {
    let page = page_alloc::alloc_page().ok_or(Segv)?;
    let mut flags = pte::P | pte::US;
    if vma.flags & VM_WRITE != 0 {
        flags |= pte::RW;
    }
    pgtable::set_pte(ptep, page | flags);
    trace::emit(Kind::PteChange, va, 0, page | flags);
    hook(Hook::AfterPteSet);
    Ok(())
}

/// `zap_pte_range`: clear the PTEs of one table under its PTL, gathering
/// the pages; the flush happens under the PTL only for `flush=ptl`.
fn zap_pte_range(mm: &MmStruct, tlb: &mut MmuGather, table: u64, start: u64, end: u64) {
    pte_lock(table, start);
    let mut va = start;
    while va < end {
        let ptep = table + 8 * ((va >> 12) & 511);
        if pgtable::read_entry(ptep) & pte::ADDR_MASK != 0 {
            let old = pgtable::ptep_get_and_clear(ptep);
            trace::emit(Kind::PteChange, va, old, 0);
            hook(Hook::AfterPteClear);
            tlb.remove_tlb_entry(va);
            if notifier() == NotifierPlacement::Ptl {
                // `ptep_clear_flush_notify`: the secondary MMU hears under the PTL.
                mm.secondary_invalidate(va, va + PAGE_SIZE, true);
            }
            tlb.remove_page(old & pte::ADDR_MASK);
        }
        va += PAGE_SIZE;
    }
    if flush_scheme() == FlushScheme::Ptl {
        tlb.flush_tlbonly();
    }
    pte_unlock(table, start);
}

fn mmu_notifier_invalidate_range_start(_mm: &MmStruct, _start: u64, _end: u64) {
    hook(Hook::AfterInvalidateStart);
}

/// `mmu_notifier_invalidate_range_end`: unconditional over the whole range
/// (Andrea's point in seed 004) for the `end` / `only-end` placements.
fn mmu_notifier_invalidate_range_end(mm: &MmStruct, start: u64, end: u64) {
    hook(Hook::BeforeInvalidateEnd);
    if matches!(notifier(), NotifierPlacement::End | NotifierPlacement::OnlyEnd) {
        mm.secondary_invalidate(start, end, false);
    }
}

const GATHER_BATCH: usize = 128;

/// `struct mmu_gather`.
pub struct MmuGather<'a> {
    mm: &'a MmStruct,
    start: u64,
    end: u64,
    freed_tables: bool,
    pages: [u64; GATHER_BATCH],
    npages: usize,
    tables: [u64; 8],
    ntables: usize,
    pending: bool,
}

impl<'a> MmuGather<'a> {
    /// `tlb_gather_mmu`: raises `mm->tlb_flush_pending` unless the scheme
    /// predates it (`gather`) or flushes under the PTL anyway.
    fn new(mm: &'a MmStruct) -> Self {
        let pending = flush_scheme() != FlushScheme::Gather;
        if pending {
            mm.tlb_flush_pending.fetch_add(1, Ordering::AcqRel);
            hook(Hook::AfterIncPending);
        }
        let mut t = MmuGather {
            mm,
            start: 0,
            end: 0,
            freed_tables: false,
            pages: [0; GATHER_BATCH],
            npages: 0,
            tables: [0; 8],
            ntables: 0,
            pending,
        };
        t.reset_range();
        t
    }

    /// `__tlb_reset_range`.
    fn reset_range(&mut self) {
        self.start = u64::MAX;
        self.end = 0;
    }

    /// `__tlb_adjust_range`.
    fn adjust_range(&mut self, addr: u64, size: u64) {
        self.start = self.start.min(addr);
        self.end = self.end.max(addr + size);
    }

    /// `tlb_remove_tlb_entry`.
    fn remove_tlb_entry(&mut self, va: u64) {
        self.adjust_range(va, PAGE_SIZE);
    }

    /// `tlb_remove_page`: the page is freed only after the flush.
    fn remove_page(&mut self, page: u64) {
        if self.npages == GATHER_BATCH {
            self.flush();
        }
        self.pages[self.npages] = page;
        self.npages += 1;
    }

    /// `tlb_remove_table`.
    fn remove_table(&mut self, table: u64) {
        if self.ntables == self.tables.len() {
            self.flush();
        }
        self.tables[self.ntables] = table;
        self.ntables += 1;
    }

    /// `tlb_flush_mmu_tlbonly`: flush the gathered range on every CPU
    /// running the mm; under `notifier=tlb-flush` (6.6+) the secondary MMU
    /// is invalidated from here too (`arch_invalidate_secondary_tlbs`),
    /// leaf-only unless page tables were freed.
    fn flush_tlbonly(&mut self) {
        if self.end <= self.start {
            return;
        }
        hook(Hook::BeforeFlush);
        tlb::flush_tlb_mm_range(&self.mm.pt(), self.start, self.end);
        hook(Hook::AfterFlush);
        if notifier() == NotifierPlacement::TlbFlush {
            self.mm.secondary_invalidate(self.start, self.end, !self.freed_tables);
        }
        self.reset_range();
    }

    /// `tlb_flush_mmu`: flush, then free what was gathered.
    fn flush(&mut self) {
        self.flush_tlbonly();
        for &p in &self.pages[..self.npages] {
            hook(Hook::BeforeFree);
            trace::emit(Kind::PageFree, 0, p, 0);
            page_alloc::free_page(p);
        }
        self.npages = 0;
        if self.ntables > 0 {
            hook(Hook::BeforeFreeTables);
            for &t in &self.tables[..self.ntables] {
                trace::emit(Kind::TableFree, 0, t, 0);
                pgtable::free_table(t);
            }
            self.ntables = 0;
        }
    }

    /// `tlb_finish_mmu`. With another zap of this mm in flight
    /// (`mm_tlb_flush_nested`), our PTE scan may have skipped entries it
    /// cleared, so flush everything (99baac21e458; `madv-nested-check=off`
    /// is the kernel before it). `reset-range=clear-freed-tables` is the
    /// kernel before 7a30df49f63a: the reset also forgot `freed_tables`.
    fn finish(mut self) {
        if self.pending
            && self.mm.mm_tlb_flush_nested()
            && OnOff::from_u8(policy().madv_nested_check) != Some(OnOff::Off)
        {
            if ResetRange::from_u8(policy().reset_range) == Some(ResetRange::ClearFreedTables) {
                self.freed_tables = false;
            }
            self.start = layout::USER_BASE;
            self.end = layout::USER_END;
        }
        self.flush();
        if self.pending {
            hook(Hook::BeforeDecPending);
            self.mm.tlb_flush_pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The page-fault handler's entry: a fault on a user address of the test
/// mm that the modelled TLB could not fill. Returns true if the access can
/// be retried.
pub fn do_user_addr_fault(va: u64, error_code: u64) -> bool {
    if !TEST_MM.is_live() || !tlb::runs_mm(TEST_MM.pgd.load(Ordering::Acquire)) {
        return false;
    }
    TEST_MM.handle_mm_fault(va, error_code & 2 != 0).is_ok()
}

impl MmStruct {
    /// Binds the mm to `pasid` on the SVA driver (`iommu_sva_bind_device`):
    /// from now on the secondary MMU walks its page tables and hears its
    /// invalidations. `teardown` unbinds.
    pub fn bind_pasid(&self, pasid: u32) {
        iommu::bind_mm(pasid, self.pgd.load(Ordering::Acquire));
        self.pasid.store(pasid as u64, Ordering::Release);
    }
}
