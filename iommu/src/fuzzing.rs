//! The body of the `queue` fuzz target (`iommu/fuzz`), also run by the
//! normal test suite as a seeded property test.
//!
//! Arbitrary bytes drive a small guest: raw and well-formed descriptors
//! written into the invalidation queue, doorbells with any tail, writes of
//! any value to any register (4 or 8 bytes), page-table changes, table
//! frees, and DMA accesses. After every step the harness checks the
//! device's invariants; any panic is a bug (the device must never panic on
//! guest input).

use abi::iommu::{self as wire, reg, status, DevTlbScope, InvDesc};
use vm_memory::GuestMemoryMmap;

use crate::build::{guest_memory, PageTableBuilder};
use crate::pagetable::{pte, AccessOp, PageSize};
use crate::{mem, CacheConfig, DmaError, Eviction, Iommu, IommuConfig, Replacement, Source};

const MEM_SIZE: usize = 0x20_0000 * 2; // 4 MiB: one 2 MiB page fits
const PASID_TABLE: u64 = 0x1000;
const POOL: (u64, u64) = (0x1_0000, 0x4_0000);
const QUEUE: u64 = 0x8_0000; // up to 8 pages
const PRQ: u64 = 0x9_0000;
const STATUS_WORD: u64 = 0xa_0000;
const DATA: u64 = 0x10_0000; // 64 data pages
const VA_BASE: u64 = 0x4000_0000;
const LARGE_VA: u64 = 0x8000_0000;
const LARGE_PA: u64 = 0x20_0000;
const PAGES: u64 = 16;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u64(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..8 {
            v |= (self.u8()? as u64) << (8 * i);
        }
        Some(v)
    }
}

/// The state of one fuzz run.
pub struct Harness {
    pub mem: GuestMemoryMmap,
    pub iommu: Iommu,
    pub pt: PageTableBuilder,
    sw_tail: u64,
}

impl Harness {
    /// A device with PASID 1 bound to 16 mapped 4 KiB pages and one 2 MiB
    /// page; `knobs` picks PWC, device TLB, descriptor width, replacement.
    pub fn new(knobs: u8) -> Self {
        let mem = guest_memory(MEM_SIZE);
        let replacement = match knobs & 3 {
            0 => Replacement::Lru,
            1 => Replacement::Fifo,
            _ => Replacement::Random,
        };
        let cfg = IommuConfig {
            iotlb: CacheConfig {
                sets: 2,
                ways: 4,
                replacement,
                eviction: if knobs & 0x40 != 0 { Eviction::Evict(0.1) } else { Eviction::Lazy },
            },
            pwc: (knobs & 4 != 0).then_some(CacheConfig::new(2, 2, replacement)),
            devtlb: (knobs & 8 != 0).then_some(CacheConfig::new(1, 4, replacement)),
            seed: knobs as u64,
            track_tables: knobs & 0x20 != 0,
            stale_hit_check: true,
        };
        let mut iommu = Iommu::new(cfg).expect("valid config");
        let mut pt = PageTableBuilder::new(&mem, POOL.0, POOL.1).expect("root");
        for i in 0..PAGES {
            let flags = pte::P | pte::US | if i % 4 == 3 { 0 } else { pte::RW };
            pt.map(&mem, VA_BASE + i * 0x1000, DATA + i * 0x1000, flags).expect("map");
        }
        pt.map_sized(&mem, LARGE_VA, LARGE_PA, PageSize::Size2M, pte::P | pte::RW | pte::US, crate::build::TABLE_FLAGS)
            .expect("map 2M");
        for &t in pt.tables() {
            iommu.table_allocated(t);
        }
        mem::store_u64(&mem, PASID_TABLE + 8, wire::pasid::entry(pt.root(), false)).expect("pasid");
        let dw256 = knobs & 0x10 != 0;
        let _ = iommu.mmio_write(reg::PASID_TABLE, wire::pasid::table_reg(PASID_TABLE, 0), &mem);
        let _ = iommu.mmio_write(reg::IQA, wire::iqa::encode(QUEUE, dw256, 0), &mem);
        let _ = iommu.mmio_write(reg::PQA, wire::pqa::encode(PRQ, 0), &mem);
        let _ = iommu.mmio_write(reg::IEADDR, 0xfee0_0000, &mem);
        let _ = iommu.mmio_write(reg::IEDATA, 0x41, &mem);
        Harness { mem, iommu, pt, sw_tail: 0 }
    }

    fn qbytes(&self) -> (u64, u64, u64) {
        let iqa = self.iommu.mmio_read(reg::IQA);
        (iqa & wire::iqa::BASE_MASK, wire::iqa::queue_bytes(iqa), wire::iqa::desc_bytes(iqa))
    }

    fn push_desc(&mut self, words: [u64; 4]) {
        let (base, qbytes, dbytes) = self.qbytes();
        self.sw_tail %= qbytes;
        for i in 0..dbytes / 8 {
            // The queue may point anywhere after a raw IQA write: ignore
            // stores that miss guest RAM (the device will report a fetch error).
            let _ = mem::store_u64(&self.mem, base.wrapping_add(self.sw_tail + 8 * i), words[i as usize]);
        }
        self.sw_tail = (self.sw_tail + dbytes) % qbytes;
    }

    fn va(&self, sel: u8) -> u64 {
        match sel % 8 {
            0..=5 => VA_BASE + (sel as u64 % PAGES) * 0x1000 + (sel as u64 % 3) * 8,
            6 => LARGE_VA + (sel as u64) * 0x1000,
            _ => (sel as u64) << 40, // non-canonical or unmapped
        }
    }

    /// Runs one step; None when the input is used up.
    fn step(&mut self, b: &mut Bytes) -> Option<()> {
        let op = b.u8()?;
        let mem = &self.mem;
        match op % 12 {
            0 => {
                let w = [b.u64()?, b.u64()?, if op & 0x80 != 0 { b.u64()? } else { 0 }, 0];
                self.push_desc(w);
            }
            1 => {
                let sel = b.u8()?;
                let arg = b.u8()?;
                let pasid = (arg & 3) as u32;
                let addr = VA_BASE + ((arg as u64 >> 2) % PAGES) * 0x1000;
                let d = match sel % 7 {
                    0 => InvDesc::PasidPages {
                        pasid,
                        addr: addr & !((0x1000 << (sel as u64 / 7 % 3)) - 1),
                        am: sel / 7 % 3,
                        leaf_only: sel & 0x80 != 0,
                    },
                    1 => InvDesc::PasidAll { pasid },
                    2 => InvDesc::Global,
                    3 => InvDesc::DevTlb(DevTlbScope::Pasid { pasid }),
                    4 => InvDesc::DevTlb(DevTlbScope::Pages { pasid, addr, am: 0 }),
                    5 => InvDesc::DevTlb(DevTlbScope::All),
                    _ => InvDesc::Wait {
                        status_addr: Some(STATUS_WORD + (arg as u64 % 8) * 4),
                        data: arg as u32,
                        irq: sel & 0x80 != 0,
                        fence: false,
                        drain_prq: false,
                    },
                };
                self.push_desc(d.encode256());
            }
            2 => {
                if op & 0x40 != 0 && self.iommu.mmio_read(reg::STATUS) & status::IQE != 0 {
                    // Recover like Linux's qi_check_fault: replace the
                    // faulting descriptor with a wait, clear IQE.
                    let (base, _, dbytes) = self.qbytes();
                    let head = self.iommu.mmio_read(reg::IQH);
                    let wait = InvDesc::Wait {
                        status_addr: Some(STATUS_WORD),
                        data: 1,
                        irq: false,
                        fence: true,
                        drain_prq: false,
                    }
                    .encode256();
                    for i in 0..dbytes / 8 {
                        let _ = mem::store_u64(mem, base.wrapping_add(head + 8 * i), wait[i as usize]);
                    }
                    let _ = self.iommu.mmio_write(reg::STATUS, status::IQE, mem);
                }
                let v = if op & 0x80 != 0 { b.u64()? } else { self.sw_tail };
                let before = self.iommu.mmio_read(reg::STATUS) & status::IQE;
                let out = self.iommu.mmio_write(reg::IQT, v, mem);
                let after = self.iommu.mmio_read(reg::STATUS) & status::IQE;
                if before == 0 && out.error.is_none() {
                    assert_eq!(self.iommu.mmio_read(reg::IQH), self.iommu.mmio_read(reg::IQT));
                }
                if out.error.is_some() {
                    assert_ne!(after, 0, "an error sets IQE");
                }
            }
            3 => {
                let off = (b.u8()? as u64 * 8) % reg::END.next_multiple_of(8);
                let v = b.u64()?;
                if off == reg::PASID_TABLE && op & 0x40 == 0 {
                    // Keep the binding most of the time so DMA gets far.
                    return Some(());
                }
                let out = self.iommu.mmio_write(off, v, mem);
                if off == reg::IQA {
                    self.sw_tail = 0;
                }
                let _ = out;
            }
            4 => {
                let v = b.u8()? as u64 & status::ALL;
                let _ = self.iommu.mmio_write(reg::STATUS, v, mem);
            }
            5..=7 => {
                let sel = b.u8()?;
                let p = b.u8()?;
                // Mostly the bound PASID 1; sometimes 0, 2, 3 (unbound).
                let pasid = if p & 3 == 0 { (p as u32 >> 2) & 3 } else { 1 };
                let va = self.va(sel);
                let r = match op % 5 {
                    0 => self.iommu.dma_load_u64(pasid, va, mem),
                    1 => self.iommu.dma_store_u64(pasid, va, sel as u64, mem).map(|_| 0),
                    2 => self.iommu.dma_xchg_u64(pasid, va, 1, mem),
                    3 => self.iommu.dma_fetch_add_u64(pasid, va, 1, mem),
                    _ => self.iommu.prefetch(pasid, va, mem).map(|_| 0),
                };
                match r {
                    Ok(_) | Err(DmaError::Fault(_)) | Err(DmaError::StaleWalk { .. }) => {}
                    Err(DmaError::Misaligned { va }) => assert_ne!(va % 8, 0),
                    Err(DmaError::BadTarget { .. }) => {}
                }
            }
            8 => {
                // Change a PTE the way the guest's trapped ops do (atomically).
                let sel = b.u8()?;
                let va = VA_BASE + (sel as u64 % PAGES) * 0x1000;
                if let Some(gpa) = self.pt.entry_gpa(mem, va, 1) {
                    let new = match sel >> 6 {
                        0 => 0,
                        1 => (DATA + ((sel as u64 * 7) % 64) * 0x1000) | pte::P | pte::RW | pte::US,
                        2 => (DATA + (sel as u64 % PAGES) * 0x1000) | pte::P | pte::US,
                        _ => b.u64()?,
                    };
                    let _ = mem::xchg_u64(mem, gpa, new);
                }
            }
            9 => {
                let sel = b.u8()? as usize;
                let tables = self.pt.tables();
                let t = tables[sel % tables.len()];
                if sel & 0x80 != 0 {
                    self.iommu.table_freed(t);
                } else {
                    self.iommu.table_allocated(t);
                }
                if sel & 0x40 != 0 {
                    let on = !self.iommu.tables().tracking();
                    self.iommu.set_table_tracking(on);
                }
            }
            10 => {
                let off = b.u8()? as u64 % reg::END;
                let v = b.u64()?;
                let len = if op & 0x80 != 0 { 4 } else { 8 };
                if off & !7 == reg::PASID_TABLE && op & 0x40 == 0 {
                    return Some(());
                }
                let _ = self.iommu.mmio_write_bytes(off, &v.to_le_bytes()[..len], mem);
                let mut buf = [0u8; 4];
                self.iommu.mmio_read_bytes(off, &mut buf);
            }
            _ => {
                // Consume page requests like the driver's PRQ thread.
                let pqt = self.iommu.mmio_read(reg::PQT);
                let _ = self.iommu.mmio_write(reg::PQH, pqt, mem);
                let _ = self.iommu.mmio_write(reg::STATUS, status::PPR | status::PRO, mem);
            }
        }
        self.check();
        Some(())
    }

    /// Invariants that hold after every step.
    pub fn check(&self) {
        let i = &self.iommu;
        let iqa = i.mmio_read(reg::IQA);
        let iqh = i.mmio_read(reg::IQH);
        assert!(iqh < wire::iqa::queue_bytes(iqa), "IQH in range");
        assert_eq!(iqh % wire::iqa::desc_bytes(iqa), 0, "IQH aligned");
        if i.mmio_read(reg::STATUS) & status::IQE != 0 {
            assert_ne!(wire::iqe::code(i.mmio_read(reg::IQERCD)), 0, "IQE has a code");
        }
        let pqa = i.mmio_read(reg::PQA);
        assert!(i.mmio_read(reg::PQT) < wire::pqa::queue_bytes(pqa));
        assert!(i.iotlb_len() <= i.config().iotlb.capacity());
        assert_eq!(i.iotlb_len(), i.iotlb_entries().len());
        assert!(i.pwc_len() <= i.config().pwc.map_or(0, |c| c.capacity()));
        assert!(i.devtlb_len() <= i.config().devtlb.map_or(0, |c| c.capacity()));
        // A cached translation that is not stale equals a fresh walk.
        for (k, e) in i.iotlb_entries() {
            let va = k.vpn << 12;
            if let Ok(t) = i.peek_walk(k.pasid, va, AccessOp::Read, &self.mem) {
                if t.pa_4k() == e.pa {
                    assert!(e.overlaps(va, 0x1000));
                }
            }
        }
    }
}

/// Runs `data` through a fresh harness; None for empty input.
fn drive(data: &[u8]) -> Option<Harness> {
    let mut b = Bytes(data);
    let knobs = b.u8()?;
    let mut h = Harness::new(knobs);
    // Bounded work per input whatever its length.
    for _ in 0..4096 {
        if h.step(&mut b).is_none() {
            break;
        }
    }
    Some(h)
}

/// Runs the fuzz input; panics on a broken invariant.
pub fn run_queue(data: &[u8]) {
    let Some(mut h) = drive(data) else { return };
    // Whatever state the input left, the device still translates or fails
    // cleanly, and says where a translation came from.
    if let Ok(t) = h.iommu.translate(1, VA_BASE, AccessOp::Read, &h.mem) {
        assert!(matches!(t.source, Source::Iotlb | Source::DevTlb | Source::Walk { .. }));
    }
    h.check();
}

/// Like [`run_queue`], returning the device's counters (coverage checks).
pub fn run_queue_stats(data: &[u8]) -> crate::Stats {
    drive(data).map(|h| *h.iommu.stats()).unwrap_or_default()
}
