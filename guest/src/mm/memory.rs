//! `mm/memory.c` for the test mm: the page-fault path (`handle_mm_fault`,
//! `do_anonymous_page`, `do_fault`, `do_wp_page` → `wp_page_reuse` /
//! `wp_page_shared` / `wp_page_copy`, `do_swap_page`, migration-entry
//! waits), zapping (`unmap_page_range` → `zap_pte_range` with an
//! `mmu_gather`), and fork's `copy_present_pte` write-protect (`cow`).
//!
//! Simplifications, each deliberate: a read fault on anonymous memory maps
//! a fresh page rather than the shared zero page; huge pages do not exist;
//! the fork child of `cow` holds page references but has no page tables;
//! `do_wp_page` reuses an anonymous page by its reference count (the
//! v5.9-v5.18 rule of 09854ba94c6a), in every profile.

use abi::layout::PAGE_SIZE;
use abi::litmus::Hook;
use abi::policy::{DirtySharedFlush, FlushScheme, PteAccessible, WpFaultFlush, ZapRangeFlush};

use super::hooks::hook;
use super::locking::{self, mmap_write_lock};
use super::mm_types::{page_align, MmStruct, Segv, Vma, TEST_MM, VM_READ, VM_UFFD_WP, VM_WRITE};
use super::mmu_gather::MmuGather;
use super::mmu_notifier::{MmuNotifierRange, Site};
use super::page::{self, get_page, page, put_page, PG_ANON, PG_DIRTY, PG_KSM, PG_MIGRC, PG_SWAPBACKED};
use super::pgtable::{self, pte, pte_dirty, pte_maps_page, pte_none, pte_page, pte_write, swp};
use super::ptdesc::{PteTable, PMD_SIZE};
use super::{filemap, flush, migrate, page_alloc, policy, rmap, swap, tlb};

/// The PTE bits of a user page mapping (rights added by the caller).
pub const PAGE_USER: u64 = pte::P | pte::US;

impl MmStruct {
    /// The PTE table mapping `va`, if it exists.
    pub fn pte_table(&self, va: u64) -> Option<u64> {
        self.pt().pte_lookup(va).map(|p| p & !(PAGE_SIZE - 1))
    }

    /// The PTE table mapping `va`, allocated if missing (`pte_alloc`).
    pub fn pte_table_alloc(&self, va: u64) -> u64 {
        self.pt().pte_alloc_with(page_align(va), &mut |t| self.table_added(t)) & !(PAGE_SIZE - 1)
    }

    /// The PTE of `va` read without the PTL (`ptep_get_lockless`); 0 if
    /// its table does not exist.
    pub fn pte_lockless(&self, va: u64) -> u64 {
        self.pt().pte_lookup(va).map_or(0, pgtable::read_entry)
    }

    /// `pte_offset_map_lock`: the PTL of the table that maps `va`, taken
    /// and then checked against the PMD again — `free_pgtables` may have
    /// unhooked (and the allocator reused) the table between the lockless
    /// lookup and the lock (the `pmd_same` recheck of 6.5+). `None` if no
    /// table maps `va`.
    pub fn pte_offset_map_lock(&self, va: u64) -> Option<PteTable> {
        loop {
            let t = self.pte_table(va)?;
            let pt = PteTable::lock(t, va);
            if self.pte_table(va) == Some(t) {
                return Some(pt);
            }
        }
    }

    /// `pte_alloc_map_lock`: as [`Self::pte_offset_map_lock`], allocating
    /// missing tables.
    pub fn pte_alloc_map_lock(&self, va: u64) -> PteTable {
        loop {
            let t = self.pte_table_alloc(va);
            let pt = PteTable::lock(t, va);
            if self.pte_table(va) == Some(t) {
                return pt;
            }
        }
    }

    /// `follow_page`: the page `va` maps, with a reference taken under the
    /// PTL (so a concurrent zap cannot free it first).
    pub fn follow_page(&self, va: u64) -> Option<u64> {
        let pt = self.pte_offset_map_lock(va)?;
        let e = pt.get(va);
        pte_maps_page(e).then(|| {
            get_page(pte_page(e));
            pte_page(e)
        })
    }

    /// Whether `va` is still inside a VMA: the fault path's check under the
    /// PTL, so it never installs a page a concurrent munmap already zapped.
    fn vma_still_there(&self, va: u64) -> bool {
        self.find_vma(va).is_some()
    }

    /// A flush of this table's entries that another operation deferred is
    /// still outstanding (`mm_tlb_flush_pending` and its per-table forms):
    /// under `pending` the mm's count, under `per-ptl` the table's, under
    /// `generation` an unflushed generation of the table's last change.
    pub(super) fn deferred_flush_pending(&self, pt: &PteTable) -> bool {
        match policy::get::<FlushScheme>() {
            FlushScheme::Pending => self.tlb_flush_pending(),
            FlushScheme::PerPtl => pt.desc().flush_pending.load(core::sync::atomic::Ordering::Acquire) > 0,
            FlushScheme::Generation => {
                self.gen_unflushed(pt.desc().tlb_gen.load(core::sync::atomic::Ordering::Acquire), 0)
            }
            FlushScheme::Ptl => false,
        }
    }

    /// x86 `pte_accessible(mm, pte)`: present, or PROT_NONE while a flush
    /// is pending (20841405940e; `pte-accessible=present-only` is the
    /// kernel before it) — a PROT_NONE PTE may still be cached writable by
    /// a TLB whose mprotect flush has not happened.
    pub(super) fn pte_accessible(&self, pt: &PteTable, e: u64) -> bool {
        e & pte::P != 0
            || (e & pte::PROTNONE != 0
                && policy::get::<PteAccessible>() == PteAccessible::PendingCheck
                && self.deferred_flush_pending(pt))
    }

    /// `ptep_clear_flush`: clear the PTE and flush it if it may be cached
    /// (`pte_accessible`). Returns the old PTE.
    pub(super) fn ptep_clear_flush(&self, pt: &mut PteTable, va: u64) -> u64 {
        let old = pt.get_and_clear(va);
        if self.pte_accessible(pt, old) {
            flush::flush_tlb_page(self, va);
        }
        old
    }

    // ---- the fault path ----

    /// `handle_mm_fault`: make `va` accessible for a read or a write, or
    /// say why not. `Ok` means "retry the access" (it may fault again if
    /// someone changed the PTE meanwhile, as in Linux). The caller holds
    /// what the fault path locks (`locking::lock_for_fault`).
    pub fn handle_mm_fault(&self, va: u64, write: bool) -> Result<(), Segv> {
        let va = page_align(va);
        let vma = self.find_vma(va).ok_or(Segv)?;
        if (write && vma.flags & VM_WRITE == 0) || vma.flags & VM_READ == 0 {
            return Err(Segv);
        }
        self.pte_table_alloc(va);
        let orig = self.pte_lockless(va);
        let r = if pte_none(orig) {
            if vma.is_anon() {
                self.do_anonymous_page(&vma, va)
            } else {
                self.do_fault(&vma, va, write)
            }
        } else if swp::is_migration_entry(orig) {
            // `migration_entry_wait`: without the fault lock's help — Linux
            // waits on the page lock, which the migration holds.
            self.migration_entry_wait(va, orig);
            Ok(())
        } else if swp::is_swap_pte(orig) {
            self.do_swap_page(&vma, va, orig, write)
        } else if orig & pte::P == 0 {
            // A PROT_NONE entry in an accessible VMA (an mprotect upgrade
            // is on its way): restore the VMA's protection.
            let mut pt = self.pte_alloc_map_lock(va);
            if pt.get(va) == orig {
                pt.set(va, (orig & !pte::PROTNONE) | PAGE_USER);
            }
            Ok(())
        } else {
            let pt = self.pte_alloc_map_lock(va);
            let e = pt.get(va);
            if e != orig {
                Ok(()) // raced: retry
            } else if write && e & pte::UFFD_WP != 0 && vma.flags & VM_UFFD_WP != 0 {
                // `handle_userfault(vmf, VM_UFFD_WP)`: the write goes to the
                // monitor; no monitor thread is modelled, the access faults.
                Err(Segv)
            } else if write && !pte_write(e) {
                self.do_wp_page(&vma, pt, va, e)
            } else {
                // Spurious: the access is allowed (another CPU fixed the
                // PTE first); the retry fills the TLB.
                Ok(())
            }
        };
        hook(Hook::AfterFault);
        r
    }

    /// `do_anonymous_page`: a fresh zeroed page.
    fn do_anonymous_page(&self, vma: &Vma, va: u64) -> Result<(), Segv> {
        let new = page_alloc::alloc_page().ok_or(Segv)?;
        let mut pt = self.pte_alloc_map_lock(va);
        if !pte_none(pt.get(va)) || !self.vma_still_there(va) {
            drop(pt);
            put_page(new);
            return Ok(());
        }
        let mut entry = new | PAGE_USER;
        if vma.flags & VM_WRITE != 0 {
            entry |= pte::RW;
        }
        page(new).set(PG_ANON | PG_SWAPBACKED);
        page(new).add_rmap(va);
        pt.set(va, entry);
        Ok(())
    }

    /// `do_read_fault` / `do_shared_fault` of a shared file page: the page
    /// cache page (read from the backing copy if not cached). Dirty
    /// tracking is by write-notify, as for a file system with
    /// `page_mkwrite`: a read fault maps it read-only, a write fault
    /// dirties the page and maps it writable.
    fn do_fault(&self, vma: &Vma, va: u64, write: bool) -> Result<(), Segv> {
        let file = vma.file_id().ok_or(Segv)?;
        let p = filemap::filemap_fault(file).ok_or(Segv)?;
        let mut pt = self.pte_alloc_map_lock(va);
        if !pte_none(pt.get(va)) || !self.vma_still_there(va) {
            drop(pt);
            put_page(p);
            return Ok(());
        }
        let mut entry = p | PAGE_USER;
        if write {
            entry |= pte::RW | pte::D;
            page(p).set(PG_DIRTY);
        }
        page(p).add_rmap(va);
        pt.set(va, entry);
        Ok(())
    }

    /// A write fault on a present, read-only PTE (`do_wp_page`, PTL held).
    fn do_wp_page(&self, vma: &Vma, mut pt: PteTable, va: u64, orig: u64) -> Result<(), Segv> {
        // "Userfaultfd write-protect can defer flushes. Ensure the TLB is
        // flushed in this case before copying" (6ce64428d620, v5.11):
        // `userfaultfd_wp(vma) && mm_tlb_flush_pending(mm)`; the per-table
        // proposals ask their table instead of the mm.
        let check = match policy::get::<WpFaultFlush>() {
            WpFaultFlush::None => false,
            WpFaultFlush::UffdWp => vma.flags & VM_UFFD_WP != 0,
            WpFaultFlush::AnyVma => true,
        };
        if check && self.deferred_flush_pending(&pt) {
            flush::flush_tlb_page(self, va);
        }
        let old = pte_page(orig);
        if page(old).test(PG_MIGRC) {
            // The migrc patch (seed 001): a write-enable of a page whose
            // migration flush was deferred does that flush first.
            migrate::migrc_flush(self);
        }
        if !vma.is_anon() {
            // `wp_page_shared`: page_mkwrite, dirty, writable again.
            page(old).set(PG_DIRTY);
            pt.set_bits(va, pte::RW | pte::D);
            return Ok(());
        }
        // v5.9-v5.18 (09854ba94c6a): reuse only a page nobody else holds a
        // reference to, and only if its lock can be taken at once.
        if !page(old).test(PG_KSM) && page(old).count() == 1 && page::trylock_page(old) {
            let reuse = page(old).count() == 1;
            page::unlock_page(old);
            if reuse {
                // `wp_page_reuse`: we are the only user; an upgrade, no flush.
                pt.set_bits(va, pte::RW | pte::D);
                return Ok(());
            }
        }
        drop(pt);
        self.wp_page_copy(va, orig)
    }

    /// `wp_page_copy`: copy the shared page (outside the PTL), then under
    /// the PTL, if the PTE is still the one we faulted on, clear and flush
    /// it (`ptep_clear_flush_notify`) and install the copy, writable. The
    /// old page's reference is dropped after `mmu_notifier_invalidate_range_end`.
    fn wp_page_copy(&self, va: u64, orig: u64) -> Result<(), Segv> {
        // The reference of do_wp_page's `vmf->page`, taken under the PTL.
        let Some(old) = self.follow_page(va) else { return Ok(()) };
        if old != pte_page(orig) {
            put_page(old);
            return Ok(());
        }
        let Some(new) = page_alloc::alloc_page_nozero() else {
            put_page(old);
            return Err(Segv);
        };
        page::copy_page(new, old);
        hook(Hook::AfterCopy);
        let mut range = MmuNotifierRange::start(self, va, va + PAGE_SIZE);
        let mut pt = self.pte_alloc_map_lock(va);
        let replaced = pt.get(va) == orig;
        if replaced {
            // `ptep_clear_flush_notify`.
            self.ptep_clear_flush(&mut pt, va);
            range.ptl_changed(va, Site::Replace);
            page(new).set(PG_ANON | PG_SWAPBACKED);
            page(new).add_rmap(va);
            pt.set(va, new | PAGE_USER | pte::RW | pte::D);
            page(old).remove_rmap(va);
        }
        drop(pt);
        range.end();
        put_page(if replaced { old } else { new });
        put_page(old);
        Ok(())
    }

    /// `do_swap_page`: the page from the swap cache or read back from its
    /// slot; writable if the VMA is and this is a write fault.
    fn do_swap_page(&self, vma: &Vma, va: u64, orig: u64, write: bool) -> Result<(), Segv> {
        let slot = swp::offset(orig) as usize;
        let p = match swap::lookup_swap_cache(slot) {
            Some(p) => p,
            None => {
                let p = page_alloc::alloc_page_nozero().ok_or(Segv)?;
                swap::swap_readpage(slot, p);
                page(p).set(PG_ANON | PG_SWAPBACKED);
                p
            }
        };
        let mut pt = self.pte_alloc_map_lock(va);
        if pt.get(va) != orig || !self.vma_still_there(va) {
            drop(pt);
            swap::free_swap_cache(p);
            put_page(p);
            return Ok(());
        }
        let mut entry = p | PAGE_USER;
        if write && vma.flags & VM_WRITE != 0 {
            entry |= pte::RW | pte::D;
        }
        page(p).add_rmap(va);
        pt.set(va, entry);
        drop(pt);
        swap::swap_free(slot);
        Ok(())
    }

    /// `migration_entry_wait`: wait (without the PTL) until the migration
    /// of this page finished and the PTE changed; the access is retried.
    pub(super) fn migration_entry_wait(&self, va: u64, orig: u64) {
        let mut spins = 0u32;
        while self.pte_lockless(va) == orig {
            if let Some(ptep) = self.pt().pte_lookup(va) {
                crate::explore::wait_change(ptep, orig);
            }
            if self.pte_lockless(va) != orig {
                break;
            }
            page::relax(&mut spins);
        }
    }

    // ---- zap (mm/memory.c, mm/madvise.c) ----

    /// `madvise(MADV_DONTNEED)` under `mmap_read_lock`:
    /// `zap_page_range_single` inside an `mmu_gather`, between
    /// `mmu_notifier_invalidate_range_start/_end`.
    pub fn madvise_dontneed(&self, start: u64, len: u64) {
        let _l = locking::mmap_read_lock(self);
        let end = start + len;
        let mut tlb = MmuGather::new(self, start, end);
        let mut range = MmuNotifierRange::start(self, start, end);
        let vmas = self.vmas_in(start, end);
        let always = policy::get::<ZapRangeFlush>() == ZapRangeFlush::Always;
        for v in vmas.as_slice() {
            let (s, e) = (start.max(v.start), end.min(v.end));
            self.unmap_page_range(&mut tlb, &mut range, v, s, e);
            if always {
                // 4647706ebeee (v4.14 only): "ensure that no stale TLB
                // entries exist when this call returns".
                flush::flush_tlb_range(self, s, e);
            }
        }
        range.end();
        tlb.finish();
    }

    /// `unmap_mapping_range` of a whole one-page file: every VMA that maps
    /// it, each by `zap_page_range_single` (own mmu_gather and notifier
    /// range; no mmap_lock — the caller is truncate).
    pub(super) fn unmap_mapping_range(&self, file: usize) {
        for v in self.file_vmas(file).as_slice() {
            let mut tlb = MmuGather::new(self, v.start, v.end);
            let mut range = MmuNotifierRange::start(self, v.start, v.end);
            self.unmap_page_range(&mut tlb, &mut range, v, v.start, v.end);
            range.end();
            tlb.finish();
        }
    }

    /// The PTE tables mapping `[start, end)`, each locked in turn
    /// (`walk_pmd_range`): `f(locked table, start, end)` for the part of
    /// the range each one maps; ranges without a table are skipped.
    pub(super) fn for_each_pte_table(&self, start: u64, end: u64, mut f: impl FnMut(PteTable, u64, u64)) {
        let mut va = page_align(start);
        while va < end {
            let stop = ((va & !(PMD_SIZE - 1)) + PMD_SIZE).min(end);
            if let Some(pt) = self.pte_offset_map_lock(va) {
                f(pt, va, stop);
            }
            va = stop;
        }
    }

    /// `unmap_page_range`: one PTE table (2 MiB) at a time, as `zap_pmd_range`.
    pub(super) fn unmap_page_range(
        &self,
        tlb: &mut MmuGather,
        range: &mut MmuNotifierRange,
        vma: &Vma,
        start: u64,
        end: u64,
    ) {
        self.for_each_pte_table(start, end, |pt, s, e| self.zap_pte_range(tlb, range, vma, pt, s, e));
    }

    /// `zap_pte_range`: clear the PTEs of one table under its PTL, gathering
    /// the pages (freed after the flush). The flush is deferred to the
    /// mmu_gather unless `flush=ptl`, or a dirty shared PTE was zapped and
    /// the kernel forces the flush under the PTL (1cf35d47712d, v3.15);
    /// since 5df397dec7c4 (v6.2, `dirty-shared-flush=delay-rmap`) such a
    /// page also stays in the reverse map until that flush is done
    /// (`tlb_delay_rmap`), so `folio_mkclean` waits for the PTL instead of
    /// cleaning the page while a TLB still holds a writable entry.
    fn zap_pte_range(
        &self,
        tlb: &mut MmuGather,
        range: &mut MmuNotifierRange,
        vma: &Vma,
        mut pt: PteTable,
        start: u64,
        end: u64,
    ) {
        rmap::flush_tlb_batched_pending(self);
        tlb.check_nested(&pt);
        let dirty_flush = policy::get::<DirtySharedFlush>();
        let mut delayed = [(0u64, 0u64); 8];
        let mut ndelayed = 0;
        let mut force_flush = false;
        let mut va = start;
        while va < end {
            let e = pt.get(va);
            if pte_maps_page(e) {
                let old = pt.get_and_clear(va);
                tlb.remove_tlb_entry(&pt, va);
                range.ptl_changed(va, Site::Range);
                let p = pte_page(old);
                if !vma.is_anon() && pte_dirty(old) {
                    page(p).set(PG_DIRTY);
                    force_flush |= dirty_flush != DirtySharedFlush::Deferred;
                    if dirty_flush == DirtySharedFlush::DelayRmap && ndelayed < delayed.len() {
                        delayed[ndelayed] = (p, va);
                        ndelayed += 1;
                        tlb.remove_page(p);
                        va += PAGE_SIZE;
                        continue;
                    }
                }
                page(p).remove_rmap(va);
                tlb.remove_page(p);
            } else if swp::is_migration_entry(e) {
                pt.get_and_clear(va);
            } else if swp::is_swap_pte(e) {
                pt.get_and_clear(va);
                swap::swap_free(swp::offset(e) as usize);
            }
            va += PAGE_SIZE;
        }
        if force_flush || tlb.scheme() == FlushScheme::Ptl {
            tlb.flush_tlbonly();
        }
        for &(p, va) in &delayed[..ndelayed] {
            page(p).remove_rmap(va);
        }
        drop(pt);
        if force_flush {
            tlb.flush();
        }
    }

    // ---- fork's write-protect (`cow L`) ----

    /// `cow L`: share the page copy-on-write as fork does: `dup_mmap` holds
    /// the parent's mmap_lock for write; `copy_page_range` →
    /// `copy_present_pte` write-protects the parent's PTE under the PTL
    /// (`ptep_set_wrprotect`, inside `mmu_notifier_invalidate_range_start/
    /// end` for a CoW mapping) and gives the child a reference; then
    /// `dup_mmap` flushes the parent's TLB (`flush_tlb_mm(oldmm)`) before it
    /// drops the lock — so no fault ever sees the write-protect unflushed.
    pub fn cow(&self, va: u64) -> Result<(), Segv> {
        let va = page_align(va);
        let w = mmap_write_lock(self);
        let vma = self.find_vma(va).ok_or(Segv)?;
        locking::vma_start_write(self, &w, vma.start, vma.end);
        let mut range = MmuNotifierRange::start(self, va, va + PAGE_SIZE);
        if let Some(mut pt) = self.pte_offset_map_lock(va) {
            let e = pt.get(va);
            if pte_maps_page(e) {
                let p = pte_page(e);
                if vma.is_anon() && pte_write(e) {
                    pt.clear_bits(va, pte::RW);
                    range.ptl_changed(va, Site::Range);
                }
                get_page(p);
                self.fork_ref_add(p);
            }
        }
        range.end();
        flush::flush_tlb_mm(self);
        drop(w);
        Ok(())
    }

    /// The fork child exits: drop every page reference it held.
    pub(super) fn release_fork_refs(&self) {
        let mut refs = self.fork_refs.lock();
        let n = refs.1;
        for &p in &refs.0[..n] {
            swap::free_swap_cache(p);
            put_page(p);
        }
        refs.1 = 0;
    }

    // ---- set-up and inspection (the litmus runner, self-tests) ----

    /// Maps a page at `va` with content `init` as `MAP_POPULATE` would:
    /// an anonymous page, or the file page of `file`, PTE per `flags`
    /// (PROT_NONE for no access).
    pub fn populate(&self, va: u64, flags: u8, file: Option<usize>, init: u64) -> Result<(), Segv> {
        let p = match file {
            Some(f) => filemap::filemap_fault(f).ok_or(Segv)?,
            None => {
                let p = page_alloc::alloc_page_nozero().ok_or(Segv)?;
                page::init_page(p, init);
                page(p).set(PG_ANON | PG_SWAPBACKED);
                p
            }
        };
        let mut entry = p;
        if flags & VM_READ == 0 {
            entry |= pte::PROTNONE;
        } else {
            entry |= PAGE_USER;
            // A shared file page starts clean and read-only (write-notify).
            if flags & VM_WRITE != 0 && file.is_none() {
                entry |= pte::RW | pte::D;
            }
        }
        let mut pt = self.pte_alloc_map_lock(va);
        page(p).add_rmap(va);
        pt.set(va, entry);
        Ok(())
    }

    /// The first word at `va` through the kernel's view of what is there
    /// now: the mapped page (also PROT_NONE or under migration), the swap
    /// slot of a swapped-out page, or a shared file's page-cache page or
    /// backing copy; `None` if nothing is mapped.
    pub fn read_kernel_view(&self, va: u64) -> Option<u64> {
        let e = self.pte_lockless(va);
        if pte_maps_page(e) {
            return Some(page::first_word(pte_page(e)));
        }
        if swp::is_migration_entry(e) {
            return Some(page::first_word(swp::migration_page(e)));
        }
        if swp::is_swap_pte(e) {
            return Some(swap::first_word(swp::offset(e) as usize));
        }
        let file = self.find_vma(va)?.file_id()?;
        filemap::current_value(file)
    }
}

/// The page-fault handler's entry: a fault on a user address of the test
/// mm that the modelled TLB could not fill, handled under the fault path's
/// lock (`lock_mm_and_find_vma` / `lock_vma_under_rcu`). Returns true if
/// the access can be retried.
pub fn do_user_addr_fault(va: u64, error_code: u64) -> bool {
    // The modelled TLB's fill walked tables whose queued updates it could
    // not see: lazy MMU mode regions touch no user memory.
    crate::guest_assert!(!super::pgtable::in_lazy_mmu(), "user fault at {:#x} in lazy MMU mode", va);
    if !TEST_MM.is_live() || !tlb::runs_mm(TEST_MM.pt().pgd) {
        return false;
    }
    let _l = locking::lock_for_fault(&TEST_MM, va);
    TEST_MM.handle_mm_fault(va, error_code & 2 != 0).is_ok()
}
