//! The shared page-table walker: rights, A/D, large pages, reserved bits,
//! paths, and atomicity of A/D updates against concurrent PTE changes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use abi::iommu::FaultReason;
use common::reference_walk;
use iommu::build::{guest_memory, PageTableBuilder, TABLE_FLAGS};
use iommu::mem;
use iommu::pagetable::{
    pte, walk, walk_from, Access, AllLive, PageSize, Perms, TableCheck, WalkFault, WalkMode, WalkStart,
};
use vm_memory::GuestMemoryMmap;

const VA: u64 = 0x7f12_3456_7000;
const PA: u64 = 0x20_0000;

fn setup(flags: u64) -> (GuestMemoryMmap, PageTableBuilder, u64) {
    let mem = guest_memory(0x40_0000);
    let mut pt = PageTableBuilder::new(&mem, 0x1_0000, 0x10_0000).unwrap();
    let gpa = pt.map(&mem, VA, PA, flags).unwrap();
    (mem, pt, gpa)
}

fn set_ad(
    mem: &GuestMemoryMmap,
    pt: &PageTableBuilder,
    va: u64,
    a: Access,
) -> Result<iommu::pagetable::Translation, WalkFault> {
    walk(mem, pt.root(), va, a, WalkMode::SetAccessedDirty, &AllLive).result
}

#[test]
fn read_sets_accessed_only_write_sets_dirty() {
    let (mem, pt, pte_gpa) = setup(pte::P | pte::RW | pte::US);
    let t = set_ad(&mem, &pt, VA + 0x123, Access::read(true)).unwrap();
    assert_eq!(t.pa, PA + 0x123);
    assert_eq!(t.size, PageSize::Size4K);
    assert!(!t.dirty);
    let leaf = mem::load_u64(&mem, pte_gpa).unwrap();
    assert_eq!(leaf & (pte::A | pte::D), pte::A, "read sets A, not D");
    // Every upper level got A, none got D.
    for level in 2..=4 {
        let e = mem::load_u64(&mem, pt.entry_gpa(&mem, VA, level).unwrap()).unwrap();
        assert_eq!(e & (pte::A | pte::D), pte::A, "level {level}");
    }
    let t = set_ad(&mem, &pt, VA, Access::write(true)).unwrap();
    assert!(t.dirty);
    let leaf = mem::load_u64(&mem, pte_gpa).unwrap();
    assert_eq!(leaf & (pte::A | pte::D), pte::A | pte::D, "write sets D");
    for level in 2..=4 {
        let e = mem::load_u64(&mem, pt.entry_gpa(&mem, VA, level).unwrap()).unwrap();
        assert_eq!(e & pte::D, 0, "D only on the leaf (level {level})");
    }
}

#[test]
fn peek_has_no_side_effects() {
    let (mem, pt, pte_gpa) = setup(pte::P | pte::RW | pte::US);
    let before: Vec<u64> = (1..=4).map(|l| mem::load_u64(&mem, pt.entry_gpa(&mem, VA, l).unwrap()).unwrap()).collect();
    let w = walk(&mem, pt.root(), VA, Access::write(true), WalkMode::Peek, &AllLive);
    assert!(w.result.is_ok());
    let after: Vec<u64> = (1..=4).map(|l| mem::load_u64(&mem, pt.entry_gpa(&mem, VA, l).unwrap()).unwrap()).collect();
    assert_eq!(before, after);
    assert_eq!(mem::load_u64(&mem, pte_gpa).unwrap() & pte::A, 0);
    // The path lists the four entries, top first, with their GPAs.
    let steps = w.path.steps();
    assert_eq!(steps.len(), 4);
    assert_eq!(steps.iter().map(|s| s.level).collect::<Vec<_>>(), vec![4, 3, 2, 1]);
    assert_eq!(steps[0].table, pt.root());
    assert_eq!(steps[3].entry_gpa, pte_gpa);
    assert_eq!(steps[3].entry & pte::ADDR_MASK, PA);
}

#[test]
fn read_only_write_faults_and_leaves_leaf_untouched() {
    let (mem, pt, pte_gpa) = setup(pte::P | pte::US);
    let f = set_ad(&mem, &pt, VA, Access::write(true)).unwrap_err();
    assert_eq!(
        f,
        WalkFault::Protection {
            reason: FaultReason::WriteToReadOnly,
            level: 1,
            entry: PA | pte::P | pte::US,
            entry_gpa: pte_gpa
        }
    );
    assert_eq!(mem::load_u64(&mem, pte_gpa).unwrap() & (pte::A | pte::D), 0);
    // Supervisor writes honour RW too (CR0.WP = 1).
    assert!(matches!(
        set_ad(&mem, &pt, VA, Access::write(false)),
        Err(WalkFault::Protection { reason: FaultReason::WriteToReadOnly, .. })
    ));
    // Reads are fine.
    assert!(set_ad(&mem, &pt, VA, Access::read(true)).is_ok());
}

#[test]
fn read_only_upper_level_denies_writes() {
    let mem = guest_memory(0x40_0000);
    let mut pt = PageTableBuilder::new(&mem, 0x1_0000, 0x10_0000).unwrap();
    pt.map_sized(&mem, VA, PA, PageSize::Size4K, pte::P | pte::RW | pte::US, pte::P | pte::US).unwrap();
    assert!(matches!(
        set_ad(&mem, &pt, VA, Access::write(true)),
        Err(WalkFault::Protection { reason: FaultReason::WriteToReadOnly, .. })
    ));
}

#[test]
fn nx_denies_fetch_only() {
    let (mem, pt, _) = setup(pte::P | pte::RW | pte::US | pte::NX);
    assert!(matches!(
        set_ad(&mem, &pt, VA, Access::exec(true)),
        Err(WalkFault::Protection { reason: FaultReason::ExecuteNx, .. })
    ));
    assert!(matches!(
        set_ad(&mem, &pt, VA, Access::exec(false)),
        Err(WalkFault::Protection { reason: FaultReason::ExecuteNx, .. })
    ));
    assert!(set_ad(&mem, &pt, VA, Access::read(true)).is_ok());
    let (mem, pt, _) = setup(pte::P | pte::US);
    assert!(set_ad(&mem, &pt, VA, Access::exec(true)).is_ok());
}

#[test]
fn user_cannot_touch_supervisor_pages() {
    let (mem, pt, pte_gpa) = setup(pte::P | pte::RW);
    assert!(matches!(
        set_ad(&mem, &pt, VA, Access::read(true)),
        Err(WalkFault::Protection { reason: FaultReason::UserToSupervisor, level: 1, .. })
    ));
    assert_eq!(mem::load_u64(&mem, pte_gpa).unwrap() & pte::A, 0);
    // Supervisor may (no SMAP).
    assert!(set_ad(&mem, &pt, VA, Access::write(false)).is_ok());
}

#[test]
fn not_present_reports_level_and_entry() {
    let (mem, pt, pte_gpa) = setup(pte::P | pte::RW | pte::US);
    mem::store_u64(&mem, pte_gpa, 0x5000).unwrap(); // P = 0, junk kept
    assert_eq!(
        set_ad(&mem, &pt, VA, Access::read(true)),
        Err(WalkFault::NotPresent { level: 1, entry: 0x5000, entry_gpa: pte_gpa })
    );
    // A VA under an empty PML4 slot faults at level 4 after one read.
    let w = walk(&mem, pt.root(), 0x1000, Access::read(true), WalkMode::SetAccessedDirty, &AllLive);
    assert!(matches!(w.result, Err(WalkFault::NotPresent { level: 4, .. })));
    assert_eq!(w.path.len(), 1);
}

#[test]
fn large_pages_and_reserved_bits() {
    let mem = guest_memory(0x80_0000);
    let mut pt = PageTableBuilder::new(&mem, 0x1_0000, 0x10_0000).unwrap();
    let va2m = 0x4000_0000;
    let gpa = pt.map_sized(&mem, va2m, 0x40_0000, PageSize::Size2M, pte::P | pte::RW | pte::US, TABLE_FLAGS).unwrap();
    let t = set_ad(&mem, &pt, va2m + 0x12_3456, Access::write(true)).unwrap();
    assert_eq!(t.size, PageSize::Size2M);
    assert_eq!(t.pa, 0x40_0000 + 0x12_3456);
    assert_eq!(t.page_va(), va2m);
    assert_eq!(t.leaf_gpa, gpa);
    assert_eq!(mem::load_u64(&mem, gpa).unwrap() & (pte::A | pte::D), pte::A | pte::D);
    assert_eq!(reference_walk(&mem, pt.root(), va2m + 0x12_3000).map(|r| r.pa), Some(0x52_3000));

    let va1g = 0x80_0000_0000;
    pt.map_sized(&mem, va1g, 0x4000_0000, PageSize::Size1G, pte::P | pte::US, TABLE_FLAGS).unwrap();
    let t = set_ad(&mem, &pt, va1g + 0x3fff_f008, Access::read(true)).unwrap();
    assert_eq!((t.size, t.pa), (PageSize::Size1G, 0x7fff_f008));

    // A 2 MiB frame with bits 20:13 set is a reserved-bit fault.
    mem::store_u64(&mem, gpa, 0x40_2000 | pte::P | pte::PS | pte::US).unwrap();
    assert!(matches!(set_ad(&mem, &pt, va2m, Access::read(true)), Err(WalkFault::ReservedBit { level: 2, .. })));
    // PS in a PML4E is reserved.
    let pml4e = pt.entry_gpa(&mem, va2m, 4).unwrap();
    let v = mem::load_u64(&mem, pml4e).unwrap();
    mem::store_u64(&mem, pml4e, v | pte::PS).unwrap();
    assert!(matches!(set_ad(&mem, &pt, va2m, Access::read(true)), Err(WalkFault::ReservedBit { level: 4, .. })));
}

#[test]
fn non_canonical_and_tables_outside_ram() {
    let (mem, pt, pte_gpa) = setup(pte::P | pte::RW | pte::US);
    assert_eq!(set_ad(&mem, &pt, 0x0000_8000_0000_0000, Access::read(true)), Err(WalkFault::NonCanonical));
    // The PDE points at a table far outside guest RAM.
    let pde = pt.entry_gpa(&mem, VA, 2).unwrap();
    mem::store_u64(&mem, pde, 0x000f_0000_0000_0000 | TABLE_FLAGS).unwrap();
    assert!(matches!(set_ad(&mem, &pt, VA, Access::read(true)), Err(WalkFault::TableNotRam { level: 1, .. })));
    let _ = pte_gpa;
}

struct Only(Vec<u64>);
impl TableCheck for Only {
    fn is_live_table(&self, gpa: u64) -> bool {
        self.0.contains(&(gpa & !0xfff))
    }
}

#[test]
fn walk_through_a_non_live_table_is_stale() {
    let (mem, pt, pte_gpa) = setup(pte::P | pte::RW | pte::US);
    let pt_page = pte_gpa & !0xfff;
    let live = Only(pt.tables().iter().copied().filter(|&t| t != pt_page).collect());
    let w = walk(&mem, pt.root(), VA, Access::read(true), WalkMode::SetAccessedDirty, &live);
    assert_eq!(w.result, Err(WalkFault::StaleTable { level: 1, table: pt_page }));
    assert_eq!(w.path.len(), 3, "three live levels read, the freed PT not");
    assert_eq!(mem::load_u64(&mem, pte_gpa).unwrap() & pte::A, 0);
}

#[test]
fn walk_from_a_cached_table_uses_inherited_rights() {
    let (mem, _pt, pte_gpa) = setup(pte::P | pte::RW | pte::US);
    let start = WalkStart { level: 1, table: pte_gpa & !0xfff, perms: Perms { write: false, user: true, exec: true } };
    let w = walk_from(&mem, start, VA, Access::write(true), WalkMode::SetAccessedDirty, &AllLive);
    assert!(matches!(w.result, Err(WalkFault::Protection { reason: FaultReason::WriteToReadOnly, .. })));
    assert_eq!(w.path.len(), 1, "only the PTE is read");
    let w = walk_from(&mem, start, VA + 8, Access::read(true), WalkMode::SetAccessedDirty, &AllLive);
    assert_eq!(w.result.unwrap().pa, PA + 8);
}

/// The walker's A/D updates are compare-exchanges: a guest thread counting
/// in the PTE's software-available bits 61:52 with atomic adds never loses
/// an increment to the walker, and the walker's A/D bits always land.
#[test]
fn accessed_dirty_updates_are_atomic_against_guest_updates() {
    let (mem, pt, pte_gpa) = setup(pte::P | pte::RW | pte::US);
    const ONE: u64 = 1 << 52;
    const INCREMENTS: u64 = 200_000;
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..INCREMENTS {
                mem::fetch_add_u64(&mem, pte_gpa, ONE).unwrap();
            }
            done.store(true, Ordering::Release);
        });
        let mut i = 0u64;
        while !done.load(Ordering::Acquire) {
            // Clear A/D (as page_mkclean / young tracking do), then walk:
            // the walker must put them back without eating the increments.
            mem::with_u64(&mem, pte_gpa, true, |a| a.fetch_and(!(pte::A | pte::D), Ordering::SeqCst)).unwrap();
            let a = if i % 2 == 0 { Access::write(true) } else { Access::read(true) };
            set_ad(&mem, &pt, VA, a).unwrap();
            let v = mem::load_u64(&mem, pte_gpa).unwrap();
            assert_ne!(v & pte::A, 0);
            if a.is_write() {
                assert_ne!(v & pte::D, 0);
            }
            i += 1;
        }
    });
    let v = mem::load_u64(&mem, pte_gpa).unwrap();
    assert_eq!((v >> 52) & 0x3ff, INCREMENTS % 1024, "no guest increment lost");
    assert_eq!(v & pte::ADDR_MASK, PA);
}

#[test]
fn access_from_page_fault_error_code() {
    use iommu::pagetable::AccessOp;
    assert_eq!(Access::from_pf_error_code(0b00110), Access::new(AccessOp::Write, true));
    assert_eq!(Access::from_pf_error_code(0b00000), Access::new(AccessOp::Read, false));
    assert_eq!(Access::from_pf_error_code(0b10101), Access::new(AccessOp::Exec, true));
}
