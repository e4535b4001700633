//! Property tests against the reference walker in `common`, over random
//! page tables built in a `GuestMemoryMmap`.

mod common;

use std::collections::{HashMap, HashSet};

use abi::iommu::{AccessOp, InvDesc};
use common::*;
use iommu::cache::{CacheConfig, Replacement, SetAssoc, SetKey};
use iommu::pagetable::pte;
use iommu::{DmaError, IommuConfig, Source};
use proptest::prelude::*;

/// 24 VA slots: 8 pages in each of three regions (two share a PDPT, the
/// third has its own PML4 entry), so the PWC has something to share.
const REGIONS: [u64; 3] = [0x7f00_0000_0000, 0x7f00_0020_0000, 0x7f80_0000_0000];
const SLOTS: usize = 24;
const DATA_PAGES: u64 = 16;

fn slot_va(s: usize) -> u64 {
    REGIONS[s / 8] + (s as u64 % 8) * 0x1000
}

/// A leaf: data page, writable, user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Leaf {
    page: u64,
    rw: bool,
    us: bool,
}

impl Leaf {
    fn pte(self) -> u64 {
        (DATA + self.page * 0x1000) | pte::P | if self.rw { pte::RW } else { 0 } | if self.us { pte::US } else { 0 }
    }
}

fn leaf() -> impl Strategy<Value = Option<Leaf>> {
    prop_oneof![
        1 => Just(None),
        4 => (0..DATA_PAGES, any::<bool>(), prop::bool::weighted(0.85)).prop_map(|(page, rw, us)| Some(Leaf { page, rw, us })),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Access { slot: usize, write: bool },
    SetLeaf { slot: usize, leaf: Option<Leaf> },
    InvPages { slot: usize, am: u8, leaf_only: bool },
    InvPasid,
    InvGlobal,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SLOTS, any::<bool>()).prop_map(|(slot, write)| Op::Access { slot, write }),
        3 => (0..SLOTS, leaf()).prop_map(|(slot, leaf)| Op::SetLeaf { slot, leaf }),
        2 => (0..SLOTS, 0u8..4, any::<bool>()).prop_map(|(slot, am, leaf_only)| Op::InvPages { slot, am, leaf_only }),
        1 => Just(Op::InvPasid),
        1 => Just(Op::InvGlobal),
    ]
}

fn small_config() -> impl Strategy<Value = IommuConfig> {
    (1usize..4, 1usize..4, 0u8..3, any::<bool>(), any::<u64>()).prop_map(|(sets, ways, r, pwc, seed)| {
        let replacement = [Replacement::Lru, Replacement::Fifo, Replacement::Random][r as usize];
        IommuConfig {
            iotlb: CacheConfig::new(sets, ways, replacement),
            pwc: pwc.then_some(CacheConfig::new(2, 2, replacement)),
            seed,
            ..IommuConfig::default()
        }
    })
}

/// A test bed with every slot's tables built and the initial leaves set.
fn bed(cfg: IommuConfig, leaves: &[Option<Leaf>]) -> Env {
    let mut e = Env::new(cfg);
    for (s, l) in leaves.iter().enumerate() {
        e.map(slot_va(s), DATA, USER_RW);
        e.set_pte(slot_va(s), l.map_or(0, Leaf::pte));
    }
    e
}

fn reference(e: &Env, slot: usize) -> Option<RefTrans> {
    reference_walk(&e.mem, e.pt.root(), slot_va(slot))
}

fn allowed(r: Option<RefTrans>, write: bool) -> bool {
    r.is_some_and(|r| r.user && (r.write || !write))
}

fn inv_pages(slot: usize, am: u8, leaf_only: bool) -> InvDesc {
    let size = 0x1000u64 << am;
    InvDesc::PasidPages { pasid: PASID, addr: slot_va(slot) & !(size - 1), am, leaf_only }
}

proptest! {
    #![proptest_config(proptest_config(96))]

    /// The IOTLB never yields a translation that was never valid for that
    /// (PASID, VA); a walk always gives the current one; a fault means the
    /// page tables deny the access now.
    #[test]
    fn never_a_translation_that_was_never_valid(
        cfg in small_config(),
        init in prop::collection::vec(leaf(), SLOTS),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut e = bed(cfg, &init);
        let mut ever: HashMap<usize, HashSet<RefTrans>> = HashMap::new();
        for s in 0..SLOTS {
            ever.entry(s).or_default().extend(reference(&e, s));
        }
        for op in ops {
            match op {
                Op::Access { slot, write } => {
                    let aop = if write { AccessOp::Write } else { AccessOp::Read };
                    let now = reference(&e, slot);
                    match e.iommu.translate(PASID, slot_va(slot), aop, &e.mem) {
                        Ok(t) => {
                            let ok = ever[&slot].iter().any(|r| r.pa == t.pa && r.user && (r.write || !write));
                            prop_assert!(ok, "slot {slot}: {t:?} never valid; ever = {:?}", ever[&slot]);
                            if let Source::Walk { .. } = t.source {
                                prop_assert_eq!(Some(t.pa), now.map(|r| r.pa));
                                prop_assert!(!t.stale);
                            }
                            prop_assert_eq!(t.stale, !(allowed(now, write) && now.map(|r| r.pa) == Some(t.pa)));
                        }
                        Err(DmaError::Fault(f)) => {
                            prop_assert!(!allowed(now, write), "fault {f:?} but reference allows");
                            prop_assert!(f.queued || e.iommu.stats().page_requests_dropped > 0);
                        }
                        Err(other) => prop_assert!(false, "unexpected {other:?}"),
                    }
                }
                Op::SetLeaf { slot, leaf } => {
                    e.set_pte(slot_va(slot), leaf.map_or(0, Leaf::pte));
                    ever.entry(slot).or_default().extend(reference(&e, slot));
                }
                Op::InvPages { slot, am, leaf_only } => e.qi_submit_sync(&[inv_pages(slot, am, leaf_only)]),
                Op::InvPasid => e.qi_submit_sync(&[InvDesc::PasidAll { pasid: PASID }]),
                Op::InvGlobal => e.qi_submit_sync(&[InvDesc::Global]),
            }
            prop_assert!(e.iommu.iotlb_len() <= e.iommu.config().iotlb.capacity());
        }
    }

    /// After a covering invalidation and a wait descriptor (through the real
    /// queue), no access hits a stale translation.
    #[test]
    fn covering_invalidation_then_wait_leaves_nothing_stale(
        cfg in small_config(),
        init in prop::collection::vec(leaf(), SLOTS),
        warm in prop::collection::vec((0..SLOTS, any::<bool>()), 1..40),
        changes in prop::collection::vec((0..SLOTS, leaf()), 1..8),
        how in 0u8..4,
        leaf_only in any::<bool>(),
    ) {
        let mut e = bed(cfg, &init);
        for (slot, write) in warm {
            let aop = if write { AccessOp::Write } else { AccessOp::Read };
            let _ = e.iommu.translate(PASID, slot_va(slot), aop, &e.mem);
        }
        let mut changed = HashSet::new();
        for (slot, l) in &changes {
            e.set_pte(slot_va(*slot), l.map_or(0, Leaf::pte));
            changed.insert(*slot);
        }
        let descs: Vec<InvDesc> = match how {
            0 => changed.iter().map(|&s| inv_pages(s, 0, leaf_only)).collect(),
            // One 4 MiB range per region touched (covers the 8 slots).
            1 => changed.iter().map(|&s| inv_pages(s, 10, leaf_only)).collect(),
            2 => vec![InvDesc::PasidAll { pasid: PASID }],
            _ => vec![InvDesc::Global],
        };
        e.qi_submit_sync(&descs);
        let stale_before = e.iommu.stats().stale_hits;
        for slot in 0..SLOTS {
            for write in [false, true] {
                let aop = if write { AccessOp::Write } else { AccessOp::Read };
                let now = reference(&e, slot);
                match e.iommu.translate(PASID, slot_va(slot), aop, &e.mem) {
                    Ok(t) => {
                        prop_assert!(!t.stale);
                        prop_assert!(allowed(now, write));
                        prop_assert_eq!(Some(t.pa), now.map(|r| r.pa));
                    }
                    Err(DmaError::Fault(_)) => prop_assert!(!allowed(now, write)),
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }
        }
        prop_assert_eq!(e.iommu.stats().stale_hits, stale_before);
    }

    /// A leaf-only invalidation keeps the paging-structure cache; a full one
    /// drops exactly the PWC entries overlapping its range. Both drop exactly
    /// the overlapping IOTLB entries.
    #[test]
    fn leaf_only_keeps_pwc_full_drops_overlapping(
        warm in prop::collection::vec(0..SLOTS, 1..30),
        slot in 0..SLOTS,
        am in 0u8..=10,
        leaf_only in any::<bool>(),
    ) {
        let cfg = IommuConfig {
            iotlb: CacheConfig::new(8, 8, Replacement::Lru),
            pwc: Some(CacheConfig::new(4, 4, Replacement::Lru)),
            ..IommuConfig::default()
        };
        let mut e = bed(cfg, &[Some(Leaf { page: 1, rw: true, us: true }); SLOTS]);
        for s in warm {
            e.iommu.translate(PASID, slot_va(s), AccessOp::Read, &e.mem).unwrap();
        }
        let pwc_before: HashSet<_> = e.iommu.pwc_entries().into_iter().map(|(k, _)| k).collect();
        let tlb_before: HashSet<_> = e.iommu.iotlb_entries().into_iter().map(|(k, _)| k).collect();
        prop_assert!(!pwc_before.is_empty());
        let d = inv_pages(slot, am, leaf_only);
        let InvDesc::PasidPages { addr, .. } = d else { unreachable!() };
        let len = 0x1000u64 << am;
        e.qi_submit_sync(&[d]);
        let pwc_after: HashSet<_> = e.iommu.pwc_entries().into_iter().map(|(k, _)| k).collect();
        let tlb_after: HashSet<_> = e.iommu.iotlb_entries().into_iter().map(|(k, _)| k).collect();
        let overlaps = |(s, l): (u64, u64)| s < addr + len && addr < s + l;
        let tlb_expect: HashSet<_> = tlb_before.iter().copied().filter(|k| !overlaps((k.vpn << 12, 0x1000))).collect();
        prop_assert_eq!(tlb_after, tlb_expect);
        if leaf_only {
            prop_assert_eq!(pwc_after, pwc_before);
        } else {
            let expect: HashSet<_> = pwc_before.iter().copied().filter(|k| !overlaps(k.region())).collect();
            prop_assert_eq!(pwc_after, expect);
        }
    }

    /// The set-associative cache against a model: the same hits, the same
    /// victims (LRU: least recently used; FIFO: oldest inserted), never more
    /// than `ways` entries per set or `capacity` in all.
    #[test]
    fn cache_matches_model(
        sets in 1usize..5,
        ways in 1usize..5,
        lru in any::<bool>(),
        ops in prop::collection::vec((any::<bool>(), 0u64..40), 1..300),
    ) {
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        struct K(u64);
        impl SetKey for K {
            fn set_hash(&self) -> u64 { self.0 }
        }
        let policy = if lru { Replacement::Lru } else { Replacement::Fifo };
        let mut c: SetAssoc<K, u64> = SetAssoc::new(CacheConfig::new(sets, ways, policy), 0);
        // Model: per set, entries (key, last use, insertion) in a Vec.
        let mut model: Vec<Vec<(u64, u64, u64)>> = vec![Vec::new(); sets];
        let mut clock = 0u64;
        for (insert, k) in ops {
            clock += 1;
            let set = c.set_of(&K(k));
            let m = &mut model[set];
            let pos = m.iter().position(|e| e.0 == k);
            if insert {
                let victim = c.insert(K(k), k * 10).map(|(k, _)| k.0);
                let expect = match pos {
                    Some(i) => { m[i] = (k, clock, clock); None }
                    None if m.len() < ways => { m.push((k, clock, clock)); None }
                    None => {
                        let i = (0..m.len()).min_by_key(|&i| if lru { m[i].1 } else { m[i].2 }).unwrap();
                        let v = m[i].0;
                        m[i] = (k, clock, clock);
                        Some(v)
                    }
                };
                prop_assert_eq!(victim, expect);
            } else {
                let hit = c.lookup(&K(k)).copied();
                prop_assert_eq!(hit, pos.map(|_| k * 10));
                if let Some(i) = pos { m[i].1 = clock; }
            }
            prop_assert!(c.len() <= sets * ways);
            prop_assert_eq!(c.len(), model.iter().map(Vec::len).sum::<usize>());
        }
    }

    /// Through the whole device: a fully associative LRU IOTLB of N entries
    /// holds exactly the N most recently used pages.
    #[test]
    fn iotlb_lru_keeps_the_most_recently_used(
        n in 1usize..6,
        seq in prop::collection::vec(0..SLOTS, 1..60),
    ) {
        let cfg = IommuConfig {
            iotlb: CacheConfig::fully_associative(n, Replacement::Lru),
            ..IommuConfig::default()
        };
        let mut e = bed(cfg, &[Some(Leaf { page: 2, rw: true, us: true }); SLOTS]);
        let mut recent: Vec<u64> = Vec::new(); // most recent last
        for s in seq {
            let va = slot_va(s);
            e.iommu.dma_load_u64(PASID, va, &e.mem).unwrap();
            recent.retain(|&v| v != va);
            recent.push(va);
            if recent.len() > n {
                recent.remove(0);
            }
            let mut have: Vec<u64> = e.iommu.iotlb_entries().iter().map(|(k, _)| k.vpn << 12).collect();
            have.sort();
            let mut want = recent.clone();
            want.sort();
            prop_assert_eq!(have, want);
        }
    }
}
