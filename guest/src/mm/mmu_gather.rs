//! `struct mmu_gather` (`mm/mmu_gather.c`, `include/asm-generic/tlb.h`):
//! PTE changes whose TLB flush is deferred past the page-table lock, the
//! pages and page tables that may only be freed after that flush, and the
//! bookkeeping that lets other paths notice the deferred flush — which is
//! exactly what the `flush=` schemes differ in:
//!
//! * `ptl` — no deferral: callers flush before they drop the PTL (a model
//!   bound, no kernel);
//! * `pending` — `inc/dec_tlb_flush_pending` on the mm; since
//!   99baac21e458 (v4.13, `madv-nested-check=on`) every gather raises it
//!   and `tlb_finish_mmu` flushes everything when another deferral is in
//!   flight; before, only `change_protection` raised it;
//! * `per-ptl` — the pending count lives in each page table, raised under
//!   its PTL (Andy's proposal, seed 000);
//! * `generation` — each table records the mm generation of its last
//!   deferred change; a path that meets an unflushed generation flushes
//!   (Nadav's proposal, seeds 000/002).
//!
//! Every deferring path (zap, MADV_FREE, change_protection) publishes its
//! deferral ([`MmuGather::remove_tlb_entry`]) and checks others' on every
//! table it walks ([`MmuGather::check_nested`]), whatever the scheme.

use core::sync::atomic::Ordering;

use abi::layout::{PAGE_SIZE, USER_END};
use abi::litmus::Hook;
use abi::policy::{FlushScheme, MadvNestedCheck, MprotectGather, ResetRange};

use super::hooks::hook;
use super::mm_types::MmStruct;
use super::mmu_notifier::gather_invalidate;
use super::page::put_page;
use super::pgtable;
use super::ptdesc::{ptdesc, PteTable, PMD_SIZE};
use super::{flush, policy};
use crate::trace::{self, Kind};

// Small batches, as Linux's on-stack bundle: zero-initialising a large one
// costs more than an extra flush on hosts that emulate every instruction.
const GATHER_PAGES: usize = 16;
const GATHER_TABLES: usize = 4;

pub struct MmuGather<'a> {
    pub mm: &'a MmStruct,
    /// The range `tlb_gather_mmu` was given (v5.1's signature): what the
    /// pre-7a30df49f63a nested flush falls back to.
    op_start: u64,
    op_end: u64,
    /// `tlb->start`/`tlb->end` (`__tlb_adjust_range`).
    start: u64,
    end: u64,
    fullmm: bool,
    pub freed_tables: bool,
    /// `per-ptl`/`generation`: a zap met another operation's deferred
    /// flush on a table it walked (the per-table form of `mm_tlb_flush_nested`).
    nested: bool,
    pages: [u64; GATHER_PAGES],
    npages: usize,
    tables: [u64; GATHER_TABLES],
    ntables: usize,
    /// `per-ptl`: tables whose `flush_pending` this gather raised, with
    /// their `PtDesc::epoch` then.
    deferred: [(u64, u32); GATHER_TABLES],
    ndeferred: usize,
    /// `generation`: the generation of this gather's unflushed changes.
    gen: u64,
    scheme: FlushScheme,
    /// This gather raised `mm->tlb_flush_pending`.
    raised: bool,
    /// `tlb_finish_mmu` checks for a nested deferral (mm_tlb_flush_nested).
    nested_check: bool,
}

impl<'a> MmuGather<'a> {
    /// `tlb_gather_mmu`: `inc_tlb_flush_pending` since 99baac21e458.
    pub fn new(mm: &'a MmStruct, start: u64, end: u64) -> Self {
        let on = policy::get::<MadvNestedCheck>() == MadvNestedCheck::On;
        Self::with_pending(mm, start, end, on, on)
    }

    /// `change_protection`'s deferral (mprotect, userfaultfd write-protect):
    /// it raises `mm->tlb_flush_pending` in every era
    /// (`inc_tlb_flush_pending`, 20841405940e, v3.13), and checks for a
    /// nested deferral only since it is an mmu_gather (4a18419f71cd, v6.0).
    pub fn new_protection(mm: &'a MmStruct, start: u64, end: u64) -> Self {
        let gather = policy::get::<MprotectGather>() == MprotectGather::On;
        Self::with_pending(mm, start, end, true, gather)
    }

    fn with_pending(mm: &'a MmStruct, start: u64, end: u64, raise: bool, nested_check: bool) -> Self {
        let scheme = policy::get::<FlushScheme>();
        let raised = raise && scheme == FlushScheme::Pending;
        if raised {
            mm.tlb_flush_pending.fetch_add(1, Ordering::AcqRel);
        }
        hook(Hook::AfterIncPending);
        let mut t = MmuGather {
            mm,
            op_start: start,
            op_end: end,
            start: 0,
            end: 0,
            fullmm: false,
            freed_tables: false,
            nested: false,
            pages: [0; GATHER_PAGES],
            npages: 0,
            tables: [0; GATHER_TABLES],
            ntables: 0,
            deferred: [(0, 0); GATHER_TABLES],
            ndeferred: 0,
            gen: 0,
            scheme,
            raised,
            nested_check,
        };
        t.reset_range();
        t
    }

    pub fn scheme(&self) -> FlushScheme {
        self.scheme
    }

    /// `__tlb_reset_range`.
    fn reset_range(&mut self) {
        if self.fullmm {
            self.start = u64::MAX;
            self.end = u64::MAX;
        } else {
            self.start = USER_END;
            self.end = 0;
        }
        self.freed_tables = false;
    }

    /// `__tlb_adjust_range`.
    pub fn adjust_range(&mut self, addr: u64, size: u64) {
        self.start = self.start.min(addr);
        self.end = self.end.max(addr + size);
    }

    /// `tlb_remove_tlb_entry` for a PTE changed under `pt`'s lock: the
    /// flush of `va` is now owed, and the schemes that publish deferred
    /// flushes do so before the PTL is dropped.
    pub fn remove_tlb_entry(&mut self, pt: &PteTable, va: u64) {
        self.adjust_range(va & !(PAGE_SIZE - 1), PAGE_SIZE);
        match self.scheme {
            FlushScheme::PerPtl => {
                let t = pt.table();
                if !self.deferred[..self.ndeferred].iter().any(|d| d.0 == t) {
                    if self.ndeferred == GATHER_TABLES {
                        // Out of slots: pay the flush now rather than lose track.
                        self.flush_tlbonly();
                    }
                    pt.desc().flush_pending.fetch_add(1, Ordering::AcqRel);
                    self.deferred[self.ndeferred] = (t, pt.desc().epoch.load(Ordering::Acquire));
                    self.ndeferred += 1;
                }
            }
            FlushScheme::Generation => {
                if self.gen == 0 {
                    self.gen = self.mm.gen_begin();
                }
                pt.desc().tlb_gen.fetch_max(self.gen, Ordering::AcqRel);
            }
            _ => {}
        }
    }

    /// Whether another operation has a flush of entries of `pt`'s table
    /// still outstanding (checked under its PTL): the per-table schemes'
    /// answer to "a PTE I find empty may still be cached".
    pub fn others_deferred(&self, pt: &PteTable) -> bool {
        match self.scheme {
            FlushScheme::PerPtl => {
                let mine = self.deferred[..self.ndeferred].iter().any(|d| d.0 == pt.table()) as u32;
                pt.desc().flush_pending.load(Ordering::Acquire) > mine
            }
            FlushScheme::Generation => self.mm.gen_unflushed(pt.desc().tlb_gen.load(Ordering::Acquire), self.gen),
            _ => false,
        }
    }

    /// Called by every deferring path on every table it walks, under the
    /// table's PTL: the per-table schemes' `mm_tlb_flush_nested`.
    pub fn check_nested(&mut self, pt: &PteTable) {
        if self.others_deferred(pt) {
            self.nested = true;
        }
    }

    /// `tlb_remove_page`: freed after the flush.
    pub fn remove_page(&mut self, page: u64) {
        if self.npages == GATHER_PAGES {
            self.flush();
        }
        self.pages[self.npages] = page;
        self.npages += 1;
    }

    /// `pte_free_tlb`: a PTE table unhooked from its PMD —
    /// `tlb_flush_pmd_range(tlb, addr, PAGE_SIZE)` at the region's start
    /// (`free_pgd_range` aligns `addr` down to the PMD), `freed_tables`.
    pub fn remove_table(&mut self, table: u64, va: u64) {
        self.freed_tables = true;
        self.adjust_range(va & !(PMD_SIZE - 1), PAGE_SIZE);
        if self.ntables == GATHER_TABLES {
            self.flush();
        }
        self.tables[self.ntables] = table;
        self.ntables += 1;
    }

    /// `tlb_flush_mmu_tlbonly`: x86 `tlb_flush` — `flush_tlb_mm_range` of
    /// the gathered range with `freed_tables` (a full-mm gather: `[0,
    /// TLB_FLUSH_ALL)`), which since v6.6 also tells the secondary MMU;
    /// v3.19-v6.5 then called `mmu_notifier_invalidate_range(tlb->mm,
    /// tlb->start, tlb->end)` here, the range as it stands (`[~0, ~0)`,
    /// empty, after a full-mm reset).
    pub fn flush_tlbonly(&mut self) {
        if self.end == 0 {
            return;
        }
        let (pstart, pend) = if self.fullmm { (0, flush::TLB_FLUSH_ALL) } else { (self.start, self.end) };
        flush::flush_tlb_mm_range(self.mm, pstart, pend, self.freed_tables);
        gather_invalidate(self.mm, self.start, self.end);
        self.flushed();
        self.reset_range();
    }

    /// Every deferred change so far is flushed: lower what was published.
    fn flushed(&mut self) {
        for &(t, epoch) in &self.deferred[..self.ndeferred] {
            let d = ptdesc(t);
            if d.epoch.load(Ordering::Acquire) == epoch {
                d.flush_pending.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.ndeferred = 0;
        if self.gen != 0 {
            self.mm.gen_end(self.gen);
            self.gen = 0;
        }
    }

    /// `tlb_flush_mmu`: flush, then free what was gathered.
    pub fn flush(&mut self) {
        self.flush_tlbonly();
        for &p in &self.pages[..self.npages] {
            // `free_pages_and_swap_cache`.
            super::swap::free_swap_cache(p);
            put_page(p);
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

    /// `tlb_finish_mmu`. When another deferred flush of this mm is in
    /// flight, our scan may have found PTEs cleared by it and skipped their
    /// flush, so flush (99baac21e458; `madv-nested-check=off` is the
    /// kernel before it). What (`reset-range=`): in v4.13-v4.19 the
    /// operation's range; in v4.20-v5.1 the operation's range with
    /// `freed_tables` forgotten by `__tlb_reset_range`, so last-level
    /// only; since 7a30df49f63a (v5.2) a full-mm flush that counts as
    /// having freed tables.
    pub fn finish(mut self) {
        let nested = match self.scheme {
            FlushScheme::Pending => self.nested_check && self.mm.tlb_flush_nested(),
            FlushScheme::PerPtl | FlushScheme::Generation => self.nested,
            FlushScheme::Ptl => false,
        };
        if nested {
            match policy::get::<ResetRange>() {
                ResetRange::KeepFreedTables => {
                    self.fullmm = true;
                    self.reset_range();
                    self.freed_tables = true;
                }
                ResetRange::ClearFreedTables => {
                    self.reset_range();
                    let (s, e) = (self.op_start, self.op_end);
                    self.adjust_range(s, e - s);
                }
                ResetRange::Range => {
                    // v4.13-v4.19: the operation's range; no freed_tables
                    // existed, and the architectures flushed walk caches
                    // when a table was unhooked (arm64 __flush_tlb_pgtable):
                    // the model keeps what free_pgtables recorded.
                    let freed = self.freed_tables;
                    self.reset_range();
                    self.freed_tables = freed;
                    let (s, e) = (self.op_start, self.op_end);
                    self.adjust_range(s, e - s);
                }
            }
        }
        self.flush();
        hook(Hook::BeforeDecPending);
        if self.raised {
            self.mm.tlb_flush_pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
