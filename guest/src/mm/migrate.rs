//! `mm/migrate.c`: `migrate L` moves the page to a new one
//! (`migrate_pages` → `migrate_folio_unmap`: lock the page,
//! `try_to_migrate` puts a migration entry in every PTE — faults on it wait
//! — then `move_to_new_folio` copies, and `remove_migration_ptes` maps the
//! new page). `migrate L` is an asynchronous migration (NUMA balancing,
//! async compaction: `MIGRATE_ASYNC`), which since v6.3 batches the unmap
//! flushes (`migrate-batch=`, 7e12beb8ca2a). Plus migrc (seed 001): for a page mapped read-only the TLB
//! flush is deferred and the source page kept until the deferred flush
//! (`migrc_try_flush_free_folios`), which a later write-enable of the page
//! forces — in `do_wp_page` only (`migrc-upgrade=wp-only`, the v3 patch) or
//! also in `mprotect` (`all`). Migration takes no mmap_lock (compaction,
//! NUMA balancing): the page lock of the source page.

use core::sync::atomic::Ordering;

use abi::layout::PAGE_SIZE;
use abi::litmus::Hook;
use abi::policy::{MigrateBatch, Migrc, Notifier};

use super::hooks::hook;
use super::mm_types::{page_align, MmStruct, Segv, MAX_MIGRC, VM_READ, VM_WRITE};
use super::mmu_notifier::{arch_invalidate_secondary_tlbs, MmuNotifierRange, Site};
use super::page::{
    self, get_page, lock_page, page, put_page, unlock_page, PG_ANON, PG_DIRTY, PG_FILE, PG_KSM, PG_MIGRC, PG_SWAPBACKED,
};
use super::pgtable::{pte, pte_dirty, pte_maps_page, pte_page, pte_write, swp};
use super::{filemap, flush, page_alloc, policy, rmap};
use crate::guest_assert;

/// A PTE `try_to_migrate_one` replaced, for `remove_migration_ptes`.
#[derive(Clone, Copy, Default)]
struct Migrated {
    va: u64,
    write: bool,
    dirty: bool,
    /// migrc deferred this PTE's flush.
    deferred: bool,
}

impl MmStruct {
    /// `migrate L`.
    pub fn migrate(&self, va: u64) -> Result<(), Segv> {
        let va = page_align(va);
        // Isolation: a reference taken under the PTL.
        let Some(old) = self.follow_page(va) else { return Ok(()) };
        if page(old).test(PG_KSM) {
            put_page(old);
            return Ok(()); // KSM pages migrate through the stable tree; not modelled
        }
        let Some(new) = page_alloc::alloc_page_nozero() else {
            put_page(old);
            return Err(Segv);
        };
        lock_page(old);
        let mut done = [Migrated::default(); page::RMAP_SLOTS];
        let mut n = 0;
        for v in page(old).rmap().into_iter().filter(|&v| v != 0) {
            if let Some(m) = self.try_to_migrate_one(old, v) {
                done[n] = m;
                n += 1;
            }
        }
        let deferred = done[..n].iter().any(|m| m.deferred);
        if policy::get::<MigrateBatch>() == MigrateBatch::On {
            // migrate_pages_batch (7e12beb8ca2a, v6.3): "Flush TLBs for
            // all unmapped folios" — after the unmap, before the move
            // (copy), the source folio still locked.
            rmap::try_to_unmap_flush(self);
        }
        page::copy_page(new, old);
        page(new).flags.fetch_or(
            page(old).flags.load(Ordering::Acquire) & (PG_ANON | PG_SWAPBACKED | PG_DIRTY | PG_FILE),
            Ordering::AcqRel,
        );
        if page(old).test(PG_FILE) {
            let file = page(old).index.load(Ordering::Relaxed) as usize;
            page(new).index.store(file as u64, Ordering::Relaxed);
            if filemap::replace_page_cache(file, old, new) {
                put_page(old); // the cache's reference moved to `new`
            }
        }
        hook(Hook::AfterCopy);
        for m in &done[..n] {
            self.remove_migration_pte(old, new, m);
        }
        unlock_page(old);
        put_page(new);
        if deferred {
            self.migrc_keep(old);
        } else {
            super::swap::free_swap_cache(old);
            put_page(old);
        }
        Ok(())
    }

    /// `try_to_migrate_one`: the PTE becomes a migration entry; its flush
    /// is done now (`ptep_clear_flush`), batched until `migrate` is about
    /// to copy (`migrate-batch=on`, v6.3+), or — migrc, for a PTE that is
    /// not writable — deferred past the migration.
    fn try_to_migrate_one(&self, p: u64, va: u64) -> Option<Migrated> {
        let mut range = MmuNotifierRange::start(self, va, va + PAGE_SIZE);
        let Some(mut pt) = self.pte_offset_map_lock(va) else {
            range.end();
            return None;
        };
        let e = pt.get(va);
        let r = if pte_maps_page(e) && pte_page(e) == p {
            let deferred = policy::get::<Migrc>() == Migrc::On && !pte_write(e);
            let old = if deferred {
                let old = pt.get_and_clear(va);
                self.migrc_flush_due.store(true, Ordering::Release);
                // 6.6+: the batched path tells the secondary MMU at once.
                if policy::get::<Notifier>() == Notifier::TlbFlush {
                    arch_invalidate_secondary_tlbs(self, 0, flush::TLB_FLUSH_ALL);
                }
                old
            } else if policy::get::<MigrateBatch>() == MigrateBatch::On {
                // 7e12beb8ca2a (v6.3): an asynchronous migration passes
                // TTU_BATCH_FLUSH, and should_defer_flush holds (another
                // CPU in mm_cpumask): clear, and batch the flush as reclaim
                // does — which since 4d4b6d66db63 (v6.4) skips a PTE that
                // is not pte_accessible, as ptep_clear_flush does.
                let old = pt.get_and_clear(va);
                if self.pte_accessible(&pt, old) {
                    rmap::set_tlb_ubc_flush_pending(self, pte_write(old) && pte_dirty(old));
                }
                old
            } else {
                self.ptep_clear_flush(&mut pt, va)
            };
            let m = Migrated { va, write: old & pte::RW != 0, dirty: pte_dirty(old), deferred };
            if m.dirty {
                page(p).set(PG_DIRTY);
            }
            let kind = if m.write { swp::MIGRATION_WRITE } else { swp::MIGRATION_READ };
            pt.set(va, swp::entry(kind, p >> 12));
            range.ptl_changed(va, Site::Migrate);
            hook(Hook::AfterMigrationEntry);
            page(p).remove_rmap(va);
            Some(m)
        } else {
            None
        };
        drop(pt);
        if r.is_some() {
            range.after_unlock(va, Site::Migrate);
        }
        range.end();
        if r.is_some() {
            put_page(p); // the PTE's reference (we still hold ours)
        }
        r
    }

    /// `remove_migration_pte`: map the new page where the migration entry
    /// is, with the VMA's protection (`mk_pte(new, vma->vm_page_prot)`: a
    /// PROT_NONE VMA gets a PROT_NONE PTE), writable only for a writable
    /// migration entry in a VM_WRITE VMA (`maybe_mkwrite`).
    fn remove_migration_pte(&self, old: u64, new: u64, m: &Migrated) {
        let flags = self.find_vma(m.va).map_or(0, |v| v.flags);
        let Some(mut pt) = self.pte_offset_map_lock(m.va) else { return };
        let e = pt.get(m.va);
        if swp::is_migration_entry(e) && swp::migration_page(e) == old {
            let mut entry = if flags & VM_READ == 0 { new | pte::PROTNONE } else { new | pte::P | pte::US };
            if m.write && flags & VM_WRITE != 0 && flags & VM_READ != 0 {
                entry |= pte::RW;
            }
            if m.dirty {
                entry |= pte::D;
            }
            if m.deferred {
                page(new).set(PG_MIGRC);
            }
            get_page(new);
            page(new).add_rmap(m.va);
            pt.set(m.va, entry);
        }
    }

    fn migrc_keep(&self, old: u64) {
        let mut k = self.migrc.lock();
        let n = k.1;
        guest_assert!(n < MAX_MIGRC, "migrc keeps more than {} pages", MAX_MIGRC);
        k.0[n] = old;
        k.1 += 1;
    }
}

static MIGRC_FLUSH: crate::sync::SpinLock<()> = crate::sync::SpinLock::new(());

/// `migrc_try_flush_free_folios`: do the deferred migration flush (all of
/// the mm's translations, on every CPU running it) and free the kept
/// source pages.
pub fn migrc_flush(mm: &MmStruct) {
    // Serialised: a caller that needs the deferred flush done (a write
    // fault, an mprotect upgrade) must not return while another CPU's
    // flush of the same deferral is still in flight.
    let _serial = MIGRC_FLUSH.lock();
    let due = mm.migrc_flush_due.swap(false, Ordering::AcqRel);
    let mut kept = mm.migrc.lock();
    let n = kept.1;
    if !due && n == 0 {
        return;
    }
    let pages = kept.0;
    kept.1 = 0;
    drop(kept);
    flush::flush_tlb_mm(mm);
    for &p in &pages[..n] {
        super::swap::free_swap_cache(p);
        put_page(p);
    }
}
