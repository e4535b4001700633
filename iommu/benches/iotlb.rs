//! `cargo bench -p iommu`: medians of the device's hot paths, each next to
//! the same operation on a plain `std::collections::HashMap` as an anchor.
//! No criterion (build time); `harness = false`.
//!
//! * IOTLB hit: `Iommu::translate` on a hit (stale check off, then on) and
//!   the bare set-associative lookup, vs `HashMap::get`.
//! * Miss: `translate` with a 4-level walk from the root (PWC off), and with
//!   a PWC hit (one level read), vs a 4-level walk over a HashMap of entries
//!   plus a HashMap TLB insert/remove.
//! * Invalidation throughput: page-selective descriptors through the real
//!   queue (doorbell per 255 descriptors + wait), vs `HashMap::remove`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use abi::iommu::{self as wire, reg, AccessOp, InvDesc};
use iommu::build::{guest_memory, PageTableBuilder};
use iommu::cache::{CacheConfig, Replacement, SetAssoc};
use iommu::pagetable::{pte, va_index};
use iommu::{mem, Iommu, IommuConfig, IotlbKey};
use vm_memory::GuestMemoryMmap;

const PASID: u32 = 1;
const PASID_TABLE: u64 = 0x1000;
const QUEUE: u64 = 0x8_0000;
const STATUS: u64 = 0x9_0000;
const DATA: u64 = 0x10_0000;
const VA: u64 = 0x7f00_0000_0000;
const PAGES: u64 = 64;
const BATCHES: usize = 31;

/// Median over `BATCHES` of the time per op of `f(ops)` doing `ops` ops.
fn median_ns(ops: u64, mut f: impl FnMut(u64)) -> f64 {
    f(ops); // warm up
    let mut t: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let s = Instant::now();
            f(ops);
            s.elapsed().as_nanos() as f64 / ops as f64
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[BATCHES / 2]
}

fn setup(cfg: IommuConfig) -> (GuestMemoryMmap, Iommu, PageTableBuilder) {
    let mem = guest_memory(0x80_0000);
    let mut pt = PageTableBuilder::new(&mem, 0x1_0000, 0x8_0000).unwrap();
    for i in 0..PAGES {
        pt.map(&mem, VA + i * 0x1000, DATA + i * 0x1000, pte::P | pte::RW | pte::US).unwrap();
    }
    mem::store_u64(&mem, PASID_TABLE + 8, wire::pasid::entry(pt.root(), false)).unwrap();
    let mut iommu = Iommu::new(cfg).unwrap();
    let _ = iommu.mmio_write(reg::PASID_TABLE, wire::pasid::table_reg(PASID_TABLE, 0), &mem);
    let _ = iommu.mmio_write(reg::IQA, wire::iqa::encode(QUEUE, false, 0), &mem);
    (mem, iommu, pt)
}

fn row(what: &str, ours: f64, anchor_what: &str, anchor: f64) {
    println!("{what:<44} {ours:>9.1} ns/op   | HashMap {anchor_what:<28} {anchor:>7.1} ns/op");
}

fn main() {
    println!("iommu benchmarks: median of {BATCHES} batches\n");

    // ---- IOTLB hit --------------------------------------------------------
    let cfg = IommuConfig {
        iotlb: CacheConfig::new(16, 4, Replacement::Lru),
        stale_hit_check: false,
        ..IommuConfig::default()
    };
    let (mem, mut iommu, _pt) = setup(cfg);
    for i in 0..PAGES {
        iommu.translate(PASID, VA + i * 0x1000, AccessOp::Read, &mem).unwrap();
    }
    assert_eq!(iommu.iotlb_len(), 64);
    let hit = median_ns(100_000, |n| {
        for i in 0..n {
            let va = VA + (i % PAGES) * 0x1000;
            black_box(iommu.translate(PASID, black_box(va), AccessOp::Read, &mem).unwrap());
        }
    });
    let mut map: HashMap<(u32, u64), u64> = HashMap::new();
    for i in 0..PAGES {
        map.insert((PASID, (VA >> 12) + i), DATA + i * 0x1000);
    }
    let map_hit = median_ns(100_000, |n| {
        for i in 0..n {
            black_box(map.get(&(PASID, black_box((VA >> 12) + i % PAGES))));
        }
    });
    row("IOTLB hit: Iommu::translate (no stale check)", hit, "get (hit)", map_hit);

    let mut raw: SetAssoc<IotlbKey, u64> = SetAssoc::new(CacheConfig::new(16, 4, Replacement::Lru), 0);
    let mut k = 0;
    while raw.len() < 64 {
        raw.insert(IotlbKey { pasid: PASID, vpn: (VA >> 12) + k }, k);
        k += 1;
    }
    let keys: Vec<IotlbKey> = raw.iter().map(|(k, _)| *k).collect();
    let raw_hit = median_ns(100_000, |n| {
        for i in 0..n {
            black_box(raw.lookup(black_box(&keys[(i % 64) as usize])));
        }
    });
    row("IOTLB hit: bare set-associative lookup", raw_hit, "get (hit)", map_hit);

    let cfg = IommuConfig { iotlb: CacheConfig::new(16, 4, Replacement::Lru), ..IommuConfig::default() };
    let (mem2, mut iommu2, _pt2) = setup(cfg);
    for i in 0..PAGES {
        iommu2.translate(PASID, VA + i * 0x1000, AccessOp::Read, &mem2).unwrap();
    }
    let hit_checked = median_ns(50_000, |n| {
        for i in 0..n {
            let va = VA + (i % PAGES) * 0x1000;
            black_box(iommu2.translate(PASID, black_box(va), AccessOp::Read, &mem2).unwrap());
        }
    });
    row("IOTLB hit + stale check (peek walk)", hit_checked, "get (hit)", map_hit);

    // ---- Miss with a 4-level walk -----------------------------------------
    // A 1-entry IOTLB and two alternating pages: every access misses.
    let cfg =
        IommuConfig { iotlb: CacheConfig::fully_associative(1, Replacement::Lru), pwc: None, ..IommuConfig::default() };
    let (mem, mut iommu, pt) = setup(cfg);
    let miss = median_ns(50_000, |n| {
        for i in 0..n {
            let va = VA + (i % 2) * 0x1000;
            black_box(iommu.translate(PASID, black_box(va), AccessOp::Read, &mem).unwrap());
        }
    });
    assert!(iommu.stats().walks >= 50_000);
    // The same walk over a HashMap of entries (entry GPA -> value), plus a
    // HashMap TLB fill and removal.
    let mut entries: HashMap<u64, u64> = HashMap::new();
    for &t in pt.tables() {
        for i in 0..512 {
            let v = mem::load_u64(&mem, t + i * 8).unwrap();
            if v != 0 {
                entries.insert(t + i * 8, v);
            }
        }
    }
    let root = pt.root();
    let mut tlb: HashMap<(u32, u64), u64> = HashMap::new();
    let map_miss = median_ns(50_000, |n| {
        for i in 0..n {
            let va = black_box(VA + (i % 2) * 0x1000);
            let mut table = root;
            for level in (1..=4).rev() {
                let e = entries[&(table + va_index(va, level) * 8)];
                table = e & pte::ADDR_MASK;
            }
            tlb.insert((PASID, va >> 12), table);
            black_box(tlb.remove(&(PASID, va >> 12)));
        }
    });
    row("miss + 4-level walk (PWC off)", miss, "4-level walk + insert/remove", map_miss);

    let cfg = IommuConfig { iotlb: CacheConfig::fully_associative(1, Replacement::Lru), ..IommuConfig::default() };
    let (mem, mut iommu, _pt) = setup(cfg);
    let miss_pwc = median_ns(50_000, |n| {
        for i in 0..n {
            let va = VA + (i % 2) * 0x1000;
            black_box(iommu.translate(PASID, black_box(va), AccessOp::Read, &mem).unwrap());
        }
    });
    row("miss + PWC hit (PTE read only)", miss_pwc, "4-level walk + insert/remove", map_miss);

    // ---- Invalidation throughput -------------------------------------------
    let cfg = IommuConfig {
        iotlb: CacheConfig::new(16, 4, Replacement::Lru),
        stale_hit_check: false,
        ..IommuConfig::default()
    };
    let (mem, mut iommu, _pt) = setup(cfg);
    // 255 page-selective descriptors (then a wait) fill the 256-slot queue.
    let descs: Vec<InvDesc> = (0..255u64)
        .map(|i| InvDesc::PasidPages { pasid: PASID, addr: VA + (i % PAGES) * 0x1000, am: 0, leaf_only: i % 2 == 0 })
        .chain(std::iter::once(InvDesc::Wait {
            status_addr: Some(STATUS),
            data: 1,
            irq: false,
            fence: false,
            drain_prq: false,
        }))
        .collect();
    let mut tail = 0u64;
    let ns_per_desc = median_ns(256 * 20, |n| {
        for _ in 0..n / 256 {
            // Refill part of the IOTLB so invalidations find entries.
            for i in 0..8 {
                iommu.translate(PASID, VA + i * 0x1000, AccessOp::Read, &mem).unwrap();
            }
            for d in &descs {
                let [a, b] = d.encode();
                mem::store_u64(&mem, QUEUE + tail, a).unwrap();
                mem::store_u64(&mem, QUEUE + tail + 8, b).unwrap();
                tail = (tail + 16) % 0x1000;
            }
            let out = iommu.mmio_write(reg::IQT, tail, &mem);
            assert_eq!(out.error, None);
            let _ = black_box(out);
        }
    });
    let mut map: HashMap<(u32, u64), u64> = HashMap::new();
    let map_inv = median_ns(256 * 20, |n| {
        for _ in 0..n / 256 {
            for i in 0..8 {
                map.insert((PASID, (VA >> 12) + i), i);
            }
            for i in 0..256u64 {
                black_box(map.remove(&(PASID, black_box((VA >> 12) + i % PAGES))));
            }
        }
    });
    row("invalidation: queue descriptor (incl. fetch)", ns_per_desc, "remove", map_inv);
    println!(
        "\ninvalidation throughput: {:.2} M descriptors/s (HashMap remove: {:.1} M/s)",
        1e3 / ns_per_desc,
        1e3 / map_inv
    );
    println!(
        "IOTLB hit: {hit:.1} ns ({:.1}x HashMap get); 4-level miss: {miss:.1} ns ({:.1}x the HashMap walk)",
        hit / map_hit,
        miss / map_miss
    );
}
