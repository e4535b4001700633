//! `mm/rmap.c`: reverse-map walks over the addresses that map a page —
//! `try_to_unmap_one` (reclaim, with `TTU_BATCH_FLUSH`: the flush is
//! batched per CPU, `set_tlb_ubc_flush_pending`, and done later by
//! `try_to_unmap_flush`) and `page_mkclean_one` — plus
//! `flush_tlb_batched_pending`, which every path that changes PTEs under
//! the PTL calls so that a flush reclaim batched is not skipped
//! (3ea277194daa; `batched-pending-check=off` is the kernel before it).

use core::sync::atomic::{AtomicBool, Ordering};

use abi::layout::{PAGE_SIZE, USER_BASE, USER_END};
use abi::litmus::{Hook, NotifierPlacement};

use super::hooks::hook;
use super::mm_types::MmStruct;
use super::mmu_notifier::{invalidate_secondary, MmuNotifierRange, PteChange};
use super::page::{page, put_page, PG_ANON, PG_DIRTY, PG_SWAPBACKED};
use super::pgtable::{pte, pte_dirty, pte_maps_page, pte_page, pte_write, swp};
use super::{flush, policy, swap};
use crate::percpu;

const N: usize = abi::layout::MAX_VCPUS as usize;
/// `current->tlb_ubc`: this CPU batched a flush (`flush_required`) …
static UBC_FLUSH: [AtomicBool; N] = [const { AtomicBool::new(false) }; N];
/// … of which at least one entry was writable (`writable`).
static UBC_WRITABLE: [AtomicBool; N] = [const { AtomicBool::new(false) }; N];

/// `flush_tlb_batched_pending`: called with a PTL held; if reclaim batched
/// a flush of this mm that has not run, flush the mm now.
pub fn flush_tlb_batched_pending(mm: &MmStruct) {
    if policy::batched_pending_check() && mm.tlb_flush_batched.load(Ordering::Acquire) {
        flush::flush_tlb_mm(mm);
        // Cleared only once the flush is done: a PTL holder arriving
        // meanwhile must flush too, not return early.
        mm.tlb_flush_batched.store(false, Ordering::Release);
    }
}

/// `set_tlb_ubc_flush_pending`: queue the flush of `va` on this CPU's batch
/// (and, 6.6+, tell the secondary MMU now: `arch_tlbbatch_add_pending`).
fn set_tlb_ubc_flush_pending(mm: &MmStruct, va: u64, writable: bool) {
    let c = percpu::cpu() as usize;
    UBC_FLUSH[c].store(true, Ordering::Release);
    if writable {
        UBC_WRITABLE[c].store(true, Ordering::Release);
    }
    mm.tlb_flush_batched.store(true, Ordering::Release);
    if policy::notifier() == NotifierPlacement::TlbFlush {
        invalidate_secondary(mm, va, va + PAGE_SIZE, true);
    }
    hook(Hook::AfterBatchAdd);
}

/// `try_to_unmap_flush`: do this CPU's batched flush.
pub fn try_to_unmap_flush(mm: &MmStruct) {
    let c = percpu::cpu() as usize;
    if UBC_FLUSH[c].swap(false, Ordering::AcqRel) {
        UBC_WRITABLE[c].store(false, Ordering::Release);
        hook(Hook::BeforeBatchFlush);
        // `arch_tlbbatch_flush`: a full flush of the CPUs in the batch's mask.
        flush::flush_primary(mm, USER_BASE, USER_END);
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
/// no longer mapped.
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
    let old = pt.get_and_clear(va);
    if batch {
        set_tlb_ubc_flush_pending(mm, va, pte_write(old));
    } else {
        flush::flush_tlb_page(mm, va);
    }
    range.ptl_changed(va, PteChange::Replace);
    let pg = page(p);
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
    pg.remove_rmap(va);
    drop(pt);
    range.end();
    put_page(p);
    true
}

/// `folio_mkclean` → `page_mkclean_one` for every address mapping `p`:
/// write-protect and clean each writable or dirty PTE (`ptep_clear_flush`).
/// True if one was dirty.
pub fn page_mkclean(mm: &MmStruct, p: u64) -> bool {
    let mut dirty = false;
    for va in page(p).rmap().into_iter().filter(|&v| v != 0) {
        let mut range = MmuNotifierRange::start(mm, va, va + PAGE_SIZE);
        let Some(mut pt) = mm.pte_offset_map_lock(va) else {
            range.end();
            continue;
        };
        let e = pt.get(va);
        if e & pte::P != 0 && pte_page(e) == p && (pte_dirty(e) || pte_write(e)) {
            let old = pt.get_and_clear(va);
            flush::flush_tlb_page(mm, va);
            range.ptl_changed(va, PteChange::Protect);
            dirty |= pte_dirty(old);
            pt.set(va, old & !(pte::RW | pte::D));
        }
        drop(pt);
        range.end();
    }
    dirty
}
