//! `mm/rmap.c`: reverse-map walks over the addresses that map a page —
//! `try_to_unmap_one` (reclaim; since 72b252aed506, v4.3, with
//! `TTU_BATCH_FLUSH`: the flush is batched per CPU,
//! `set_tlb_ubc_flush_pending`, and done later by `try_to_unmap_flush`)
//! and `page_mkclean_one` — plus `flush_tlb_batched_pending`, which every
//! path that changes PTEs under the PTL calls so that a flush reclaim
//! batched is not skipped (3ea277194daa, v4.13; `batched-pending-check=`).
//! These walks take no mmap_lock: the page lock and the PTL.

use core::sync::atomic::{AtomicBool, Ordering};

use abi::layout::PAGE_SIZE;
use abi::litmus::Hook;
use abi::policy::{BatchedPendingCheck, Notifier, ReclaimBatch};

use super::hooks::hook;
use super::mm_types::MmStruct;
use super::mmu_notifier::{arch_invalidate_secondary_tlbs, MmuNotifierRange, Site};
use super::page::{page, put_page, PG_ANON, PG_DIRTY, PG_SWAPBACKED};
use super::pgtable::{pte, pte_dirty, pte_maps_page, pte_page, pte_write, swp};
use super::{flush, policy, swap};
use crate::percpu;

const N: usize = abi::layout::MAX_VCPUS as usize;
/// `current->tlb_ubc`: this CPU batched a flush (`flush_required`) …
static UBC_FLUSH: [AtomicBool; N] = [const { AtomicBool::new(false) }; N];
/// … of which at least one entry was writable (`writable`).
static UBC_WRITABLE: [AtomicBool; N] = [const { AtomicBool::new(false) }; N];

/// `TLB_FLUSH_BATCH_FLUSHED_SHIFT` and `TLB_FLUSH_BATCH_PENDING_MASK`.
const FLUSHED_SHIFT: u32 = 16;
const PENDING_MASK: u32 = (1 << (FLUSHED_SHIFT - 1)) - 1;
const PENDING_LARGE: u32 = PENDING_MASK / 2;

/// `flush_tlb_batched_pending`: called with a PTL held; if reclaim batched
/// a flush of this mm that has not run, flush the mm now. Two forms:
///
/// * `flag` (3ea277194daa, v4.13-v5.16): flush, then clear the flag — a
///   reclaim under another PTL that batches in between sets a flag this
///   clears, and the next PTL holder skips the flush;
/// * `counted` (5ee2fa2f0636, v5.17): pending and flushed batch counts in
///   one word, cleared with `atomic_cmpxchg` only if no batch was added
///   meanwhile, "to avoid losing flushing".
pub fn flush_tlb_batched_pending(mm: &MmStruct) {
    match policy::get::<BatchedPendingCheck>() {
        BatchedPendingCheck::Off => {}
        BatchedPendingCheck::Flag => {
            if mm.tlb_flush_batched.load(Ordering::Acquire) != 0 {
                flush::flush_tlb_mm(mm);
                mm.tlb_flush_batched.store(0, Ordering::Release);
            }
        }
        BatchedPendingCheck::Counted => {
            let batch = mm.tlb_flush_batched.load(Ordering::Acquire);
            let pending = batch & PENDING_MASK;
            let flushed = batch >> FLUSHED_SHIFT;
            if pending != flushed {
                flush::flush_tlb_mm(mm);
                let _ = mm.tlb_flush_batched.compare_exchange(
                    batch,
                    pending | (pending << FLUSHED_SHIFT),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
        }
    }
}

/// `set_tlb_ubc_flush_pending`: queue the flush of `va` on this CPU's
/// batch and mark the mm (the flag, or one more pending generation); since
/// v6.6 `arch_tlbbatch_add_pending` also tells the secondary MMU now, with
/// the flush-all range `[0, -1UL)` (6bbd42e2df8f).
pub(super) fn set_tlb_ubc_flush_pending(mm: &MmStruct, writable: bool) {
    let c = percpu::cpu() as usize;
    if policy::get::<Notifier>() == Notifier::TlbFlush {
        arch_invalidate_secondary_tlbs(mm, 0, flush::TLB_FLUSH_ALL);
    }
    UBC_FLUSH[c].store(true, Ordering::Release);
    match policy::get::<BatchedPendingCheck>() {
        BatchedPendingCheck::Counted => {
            let mut batch = mm.tlb_flush_batched.load(Ordering::Acquire);
            loop {
                if batch & PENDING_MASK > PENDING_LARGE {
                    // "Prevent `pending' from catching up with `flushed'
                    // because of overflow."
                    match mm.tlb_flush_batched.compare_exchange(batch, 1, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => break,
                        Err(now) => batch = now,
                    }
                } else {
                    mm.tlb_flush_batched.fetch_add(1, Ordering::AcqRel);
                    break;
                }
            }
        }
        _ => mm.tlb_flush_batched.store(1, Ordering::Release),
    }
    if writable {
        UBC_WRITABLE[c].store(true, Ordering::Release);
    }
    hook(Hook::AfterBatchAdd);
}

/// `try_to_unmap_flush`: do this CPU's batched flush.
pub fn try_to_unmap_flush(mm: &MmStruct) {
    let c = percpu::cpu() as usize;
    if UBC_FLUSH[c].swap(false, Ordering::AcqRel) {
        UBC_WRITABLE[c].store(false, Ordering::Release);
        hook(Hook::BeforeBatchFlush);
        // `arch_tlbbatch_flush`: a full flush of the CPUs in the batch's
        // mask (the secondary MMU was told when the batch was added).
        flush::flush_primary(mm, 0, flush::TLB_FLUSH_ALL, false);
    }
}

/// `try_to_unmap_flush_dirty`: before writing a page back, flush if any
/// batched entry was writable (it could still dirty the page).
pub fn try_to_unmap_flush_dirty(mm: &MmStruct) {
    if UBC_WRITABLE[percpu::cpu() as usize].load(Ordering::Acquire) {
        try_to_unmap_flush(mm);
    }
}

/// `try_to_unmap`: unmap `p` from every address mapping it; true if it is
/// no longer mapped. The caller holds the page lock.
pub fn try_to_unmap(mm: &MmStruct, p: u64, batch: bool) -> bool {
    for va in page(p).rmap().into_iter().filter(|&v| v != 0) {
        if !try_to_unmap_one(mm, p, va, batch) {
            return false;
        }
    }
    !page(p).mapped()
}

/// `try_to_unmap_one` for the PTE of `va`: clear it (flush batched or
/// immediate), move its dirty bit to the page, install a swap entry for
/// a swap-backed anonymous page; a clean lazy-free page is discarded, a
/// re-dirtied one is mapped again (false: keep the page).
fn try_to_unmap_one(mm: &MmStruct, p: u64, va: u64, batch: bool) -> bool {
    let mut range = MmuNotifierRange::start(mm, va, va + PAGE_SIZE);
    let Some(mut pt) = mm.pte_offset_map_lock(va) else {
        range.end();
        return true;
    };
    let e = pt.get(va);
    if !pte_maps_page(e) || pte_page(e) != p {
        drop(pt);
        range.end();
        return true;
    }
    let pg = page(p);
    let site = if pg.test(PG_ANON) { Site::UnmapAnon } else { Site::UnmapFile };
    let old = if batch && policy::get::<ReclaimBatch>() == ReclaimBatch::On {
        let old = pt.get_and_clear(va);
        set_tlb_ubc_flush_pending(mm, pte_write(old) && pte_dirty(old));
        old
    } else {
        mm.ptep_clear_flush(&mut pt, va)
    };
    if pte_dirty(old) {
        pg.set(PG_DIRTY);
    }
    if pg.test(PG_ANON) {
        if !pg.test(PG_SWAPBACKED) {
            if pg.test(PG_DIRTY) {
                // MADV_FREE page written again: it cannot be discarded.
                pt.set(va, old);
                pg.set(PG_SWAPBACKED);
                drop(pt);
                range.end();
                return false;
            }
        } else {
            let slot = pg.private.load(Ordering::Acquire) as usize;
            swap::swap_duplicate(slot);
            pt.set(va, swp::entry(swp::SWAPFILE, slot as u64));
        }
    }
    range.ptl_changed(va, site);
    pg.remove_rmap(va);
    drop(pt);
    range.after_unlock(va, site);
    range.end();
    put_page(p);
    true
}

/// `folio_mkclean` → `page_mkclean_one` for every address mapping `p`
/// (page lock held): write-protect and clean each writable or dirty PTE
/// (`ptep_clear_flush`). True if one was dirty. A page no PTE maps any
/// more is not walked at all (`folio_mkclean` returns early when
/// `!folio_mapped`), so a zap that removed the rmap before its flush
/// (`dirty-shared-flush=under-ptl`) is not waited for.
pub fn page_mkclean(mm: &MmStruct, p: u64) -> bool {
    let mut dirty = false;
    for va in page(p).rmap().into_iter().filter(|&v| v != 0) {
        let mut range = MmuNotifierRange::start(mm, va, va + PAGE_SIZE);
        let Some(mut pt) = mm.pte_offset_map_lock(va) else {
            range.end();
            continue;
        };
        let e = pt.get(va);
        let cleaned = e & pte::P != 0 && pte_page(e) == p && (pte_dirty(e) || pte_write(e));
        if cleaned {
            let old = mm.ptep_clear_flush(&mut pt, va);
            dirty |= pte_dirty(old);
            pt.set(va, old & !(pte::RW | pte::D));
            range.ptl_changed(va, Site::Mkclean);
        }
        drop(pt);
        if cleaned {
            range.after_unlock(va, Site::Mkclean);
        }
        range.end();
    }
    dirty
}
