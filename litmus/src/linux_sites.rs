//! Scheduling points in Linux's words, for witness timelines: the
//! statement a thread is at, or the mm function an operation is in when a
//! hook fires (`zap_pte_range: pte_unmap_unlock`, `tlb_finish_mmu →
//! flush_tlb_mm_range`, …) — the form of the multi-CPU traces in the
//! mailing-list threads.

use abi::explore::site;
use abi::litmus::{Advice, Hook, Op};

use crate::ast::{Stmt, Test};

/// The statement at thread-relative record `pc` (records laid out as the
/// compiler does: statement, loop body, then each hook group's `at` record
/// and body).
pub fn stmt_at(code: &[Stmt], pc: u32) -> Option<&Stmt> {
    fn walk<'a>(code: &'a [Stmt], pc: u32, at: &mut u32) -> Option<&'a Stmt> {
        for s in code {
            if *at == pc {
                return Some(s);
            }
            *at += 1;
            if let Some(f) = walk(&s.body, pc, at) {
                return Some(f);
            }
            for h in &s.hooks {
                *at += 1;
                if let Some(f) = walk(&h.body, pc, at) {
                    return Some(f);
                }
            }
        }
        None
    }
    walk(code, pc, &mut 0)
}

/// The Linux path an operation takes (the entry function the model mirrors).
pub fn op_function(s: &Stmt) -> &'static str {
    match s.op {
        Op::Madvise if Advice::from_u8(s.arg) == Some(Advice::Free) => "madvise_free_single_vma",
        Op::Madvise => "madvise(MADV_DONTNEED): zap_page_range_single",
        Op::Munmap => "do_vmi_munmap: unmap_region",
        Op::Mmap => "mmap_region",
        Op::Mprotect => "mprotect_fixup: change_protection",
        Op::Touch if s.arg == 1 => "write access (a fault: handle_mm_fault → do_wp_page)",
        Op::Touch => "read access (a fault: handle_mm_fault)",
        Op::Cow => "fork: copy_present_pte (write-protect, share)",
        Op::Ksm => "ksm: try_to_merge_one_page",
        Op::Migrate => "migrate_pages: try_to_migrate, move_to_new_folio",
        Op::Mkclean => "folio_mkclean + writeback",
        Op::Reclaim => "shrink_folio_list: try_to_unmap (TTU_BATCH_FLUSH)",
        Op::Mremap => "mremap: move_page_tables → move_ptes",
        Op::Alloc => "mmap + page fault: do_anonymous_page",
        _ => "",
    }
}

/// Where in the operation `op` the hook `h` fires, in Linux's names.
pub fn hook_function(op: &Stmt, h: Hook) -> String {
    let zap = matches!(op.op, Op::Madvise | Op::Munmap) && Advice::from_u8(op.arg) != Some(Advice::Free);
    let prot = matches!(op.op, Op::Mprotect) || (op.op == Op::Madvise && Advice::from_u8(op.arg) == Some(Advice::Free));
    let fault = matches!(op.op, Op::Touch | Op::Load | Op::Store | Op::Xchg | Op::Cmpxchg | Op::FetchAdd);
    let table = if zap {
        "zap_pte_range"
    } else if prot {
        "change_pte_range"
    } else if fault {
        "wp_page_copy"
    } else {
        match op.op {
            Op::Cow => "copy_present_pte",
            Op::Ksm => "write_protect_page/replace_page",
            Op::Migrate => "try_to_migrate_one/remove_migration_pte",
            Op::Mkclean => "page_mkclean_one",
            Op::Reclaim => "try_to_unmap_one",
            Op::Mremap => "move_ptes",
            _ => "",
        }
    };
    let t = |what: &str| if table.is_empty() { what.to_string() } else { format!("{table}: {what}") };
    match h {
        Hook::AfterPtlAcquire => t("pte_offset_map_lock"),
        Hook::AfterPteClear if zap => t("ptep_get_and_clear_full"),
        Hook::AfterPteClear => t("ptep_clear"),
        Hook::AfterPteSet if prot => t("ptep_modify_prot_commit"),
        Hook::AfterPteSet if fault => t("set_pte_at_notify"),
        Hook::AfterPteSet => t("set_pte_at"),
        Hook::AfterPtlRelease => t("pte_unmap_unlock"),
        Hook::BeforeFlush => "tlb_flush_mmu → flush_tlb_mm_range".into(),
        Hook::AfterFlush => "flush_tlb_mm_range done (IPIs acknowledged)".into(),
        Hook::BeforeNotifier => "mmu_notifier: secondary TLB invalidation".into(),
        Hook::AfterNotifier => "mmu_notifier: invalidation returned".into(),
        Hook::AfterCopy => match op.op {
            Op::Migrate => "folio_copy".into(),
            Op::Ksm => "pages_identical".into(),
            _ => "wp_page_copy: __wp_page_copy_user".into(),
        },
        Hook::BeforeFree => "tlb_finish_mmu: free_pages_and_swap_cache → free_page".into(),
        Hook::AfterInvalidateStart => "mmu_notifier_invalidate_range_start".into(),
        Hook::BeforeInvalidateEnd => "mmu_notifier_invalidate_range_end".into(),
        Hook::AfterIncPending => "inc_tlb_flush_pending".into(),
        Hook::BeforeDecPending => "dec_tlb_flush_pending".into(),
        Hook::AfterPmdClear => "free_pgtables: pmd_clear".into(),
        Hook::BeforeFreeTables => "tlb_remove_table".into(),
        Hook::AfterMigrationEntry => "try_to_migrate_one: set_pte_at(migration entry)".into(),
        Hook::AfterCompare => "try_to_merge_one_page: pages_identical".into(),
        Hook::AfterMkclean => "page_mkclean_one: PTE clean and write-protected".into(),
        Hook::AfterBatchAdd => "try_to_unmap_one: set_tlb_ubc_flush_pending".into(),
        Hook::BeforeBatchFlush => "try_to_unmap_flush".into(),
        Hook::AfterFault => "handle_mm_fault returned".into(),
        Hook::AfterPageLock => "folio_lock".into(),
        Hook::AfterInvalidateEnd => "mmu_notifier_invalidate_range_end returned".into(),
        Hook::LockContended => "waits for a lock another thread holds".into(),
        Hook::LockAcquire => "takes a lock".into(),
    }
}

/// The lock a lock site takes (its sub-field is the guest's
/// `abi::trace::lock_kind`, the kinds `guest/src/mm/locking.rs` takes).
pub fn lock_function(kind: u8) -> &'static str {
    use abi::trace::lock_kind as k;
    match kind as u64 {
        k::MMAP_READ => "mmap_read_lock",
        k::MMAP_WRITE => "mmap_write_lock",
        k::VMA_READ => "lock_vma_under_rcu: vma_start_read",
        k::VMA_WRITE => "vma_start_write",
        k::PTL => "spin_lock(ptl) (pte_offset_map_lock)",
        k::PAGE => "folio_lock",
        _ => "lock",
    }
}

/// One scheduling point of thread `t` in Linux's words.
pub fn describe(test: &Test, t: usize, at: u64) -> String {
    let Some(th) = test.threads.get(t) else { return format!("thread {t}?") };
    let pc = site::pc(at);
    let stmt = stmt_at(&th.code, pc);
    let text = |s: &Stmt| {
        let mut s = s.clone();
        s.hooks.clear();
        s.to_string()
    };
    match (site::kind(at), stmt) {
        (site::INSTR | site::DEVICE, Some(s)) => {
            let f = op_function(s);
            if f.is_empty() {
                text(s)
            } else {
                format!("{}  [{f}]", text(s))
            }
        }
        (site::HOOK, Some(s)) => match Hook::from_u8(site::sub(at)) {
            Some(h) => format!("  {}", hook_function(s, h)),
            None => "  ?".into(),
        },
        (site::LOCK, _) => format!("  {}", lock_function(site::sub(at))),
        (site::WAIT, _) => "  (waits)".into(),
        _ => format!("record {pc}?"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_source;

    #[test]
    fn records_and_names() {
        let src = "name = \"t\"\n[locations]\nx = { page = \"rw\" }\n[thread.P0]\ncode = \"\"\"\nwait a\nmadvise x dontneed at after_ptl_release { signal b; wait c }\nload x -> r0\nsignal a\nsignal c\n\"\"\"\n[device.D0]\ncode = \"loop 2 { dma_load x -> r1 }\"\n[final]\nobserve = [\"P0:r0\", \"D0:r1\"]\nforbidden = \"P0:r0 == 1\"\n";
        let c = check_source("t.toml", src);
        let t = c.test.unwrap_or_else(|| panic!("{:?}", c.diagnostics));
        let code = &t.threads[0].code;
        let ops: Vec<Op> = (0..8).filter_map(|pc| stmt_at(code, pc)).map(|s| s.op).collect();
        // wait, madvise, [at] signal, wait, load, signal, signal
        assert_eq!(ops, vec![Op::Wait, Op::Madvise, Op::Signal, Op::Wait, Op::Load, Op::Signal, Op::Signal]);
        let dev = &t.threads[1].code;
        assert_eq!(stmt_at(dev, 1).map(|s| s.op), Some(Op::DmaLoad));
        assert!(stmt_at(code, 2).is_none(), "record 2 is the `at` record");
        let d = describe(&t, 0, site::make(site::HOOK, 1, Hook::AfterPtlRelease as u8, 1));
        assert_eq!(d, "  zap_pte_range: pte_unmap_unlock");
        let d = describe(&t, 0, site::make(site::INSTR, 1, 0, 0));
        assert_eq!(d, "madvise x dontneed  [madvise(MADV_DONTNEED): zap_page_range_single]");
        assert_eq!(describe(&t, 0, site::make(site::INSTR, 0, 0, 0)), "wait a");
    }
}
