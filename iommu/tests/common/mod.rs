//! Shared test bed: guest memory, page tables for PASID 1, a configured
//! invalidation queue and page-request queue, and an independent reference
//! walker.
#![allow(dead_code)]

use std::sync::Arc;

use abi::iommu::{self as wire, reg, InvDesc};
use iommu::build::{guest_memory, PageTableBuilder};
use iommu::pagetable::pte;
use iommu::{mem, Event, Iommu, IommuConfig, MmioOutcome, RecordingSink};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const MEM_SIZE: usize = 0x80_0000; // 8 MiB
pub const PASID_TABLE: u64 = 0x1000;
pub const POOL: (u64, u64) = (0x1_0000, 0x8_0000);
pub const QUEUE: u64 = 0x8_0000; // one page: 256 x 16 B or 128 x 32 B
pub const PRQ: u64 = 0x9_0000; // one page: 128 records
pub const STATUS_WORD: u64 = 0xa_0000;
pub const DATA: u64 = 0x10_0000; // data pages from here
pub const PASID: u32 = 1;
pub const MSI_ADDR: u64 = 0xfee0_0000;

pub struct Env {
    pub mem: GuestMemoryMmap,
    pub iommu: Iommu,
    pub pt: PageTableBuilder,
    pub sink: Arc<RecordingSink>,
    pub dw256: bool,
    tail: u64,
    wait_seq: u32,
}

impl Env {
    pub fn new(cfg: IommuConfig) -> Env {
        Self::with(cfg, false)
    }

    pub fn with(cfg: IommuConfig, dw256: bool) -> Env {
        let mem = guest_memory(MEM_SIZE);
        let sink = Arc::new(RecordingSink::new());
        let mut iommu = Iommu::with_sink(cfg, sink.clone()).unwrap();
        let pt = PageTableBuilder::new(&mem, POOL.0, POOL.1).unwrap();
        mem::store_u64(&mem, PASID_TABLE + 8 * PASID as u64, wire::pasid::entry(pt.root(), false)).unwrap();
        let mut w = |off, v| assert_eq!(iommu.mmio_write(off, v, &mem), MmioOutcome::default());
        w(reg::PASID_TABLE, wire::pasid::table_reg(PASID_TABLE, 0));
        w(reg::IQA, wire::iqa::encode(QUEUE, dw256, 0));
        w(reg::PQA, wire::pqa::encode(PRQ, 0));
        w(reg::IEADDR, MSI_ADDR);
        w(reg::IEDATA, 0x41);
        w(reg::PEADDR, MSI_ADDR);
        w(reg::PEDATA, 0x42);
        w(reg::FEADDR, MSI_ADDR);
        w(reg::FEDATA, 0x43);
        Env { mem, iommu, pt, sink, dw256, tail: 0, wait_seq: 0 }
    }

    /// Maps a 4 KiB page and reports new tables to the IOMMU.
    pub fn map(&mut self, va: u64, pa: u64, flags: u64) -> u64 {
        let before = self.pt.tables().len();
        let gpa = self.pt.map(&self.mem, va, pa, flags).unwrap();
        for &t in &self.pt.tables()[before..] {
            self.iommu.table_allocated(t);
        }
        gpa
    }

    pub fn pte_gpa(&self, va: u64) -> u64 {
        self.pt.entry_gpa(&self.mem, va, 1).unwrap()
    }
    pub fn pte(&self, va: u64) -> u64 {
        mem::load_u64(&self.mem, self.pte_gpa(va)).unwrap()
    }
    pub fn set_pte(&self, va: u64, v: u64) {
        mem::store_u64(&self.mem, self.pte_gpa(va), v).unwrap();
    }

    /// Writes raw descriptor words at the software tail (no doorbell).
    pub fn write_raw(&mut self, words: [u64; 4]) {
        let n = if self.dw256 { 4 } else { 2 };
        for (i, w) in words.iter().take(n).enumerate() {
            mem::store_u64(&self.mem, QUEUE + self.tail + 8 * i as u64, *w).unwrap();
        }
        self.tail = (self.tail + 8 * n as u64) % 0x1000;
    }

    pub fn write_desc(&mut self, d: InvDesc) {
        self.write_raw(d.encode256());
    }

    /// Rings the doorbell with the software tail.
    pub fn doorbell(&mut self) -> MmioOutcome {
        self.iommu.mmio_write(reg::IQT, self.tail, &self.mem)
    }

    /// Submits descriptors and rings the doorbell.
    pub fn submit(&mut self, descs: &[InvDesc]) -> MmioOutcome {
        for d in descs {
            self.write_desc(*d);
        }
        self.doorbell()
    }

    /// Like Linux's `qi_submit_sync`: the descriptors plus a wait descriptor
    /// with a status write, and checks the status word arrived.
    pub fn qi_submit_sync(&mut self, descs: &[InvDesc]) {
        self.wait_seq += 1;
        let seq = self.wait_seq;
        let mut all = descs.to_vec();
        all.push(InvDesc::Wait {
            status_addr: Some(STATUS_WORD),
            data: seq,
            irq: false,
            fence: true,
            drain_prq: false,
        });
        let out = self.submit(&all);
        assert_eq!(out.error, None, "queue error");
        assert_eq!(out.processed, all.len() as u64);
        let got: u32 = self.mem.read_obj(GuestAddress(STATUS_WORD)).unwrap();
        assert_eq!(got, seq, "wait status written");
    }

    pub fn events(&self) -> Vec<Event> {
        self.sink.take()
    }
}

/// A reference translation: (4 KiB PA, writable, user, executable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefTrans {
    pub pa: u64,
    pub write: bool,
    pub user: bool,
    pub exec: bool,
}

/// An independent, recursive, side-effect-free walker (non-atomic reads,
/// 4 KiB / 2 MiB / 1 GiB pages, no reserved-bit checks beyond PS in PML4E).
pub fn reference_walk(mem: &GuestMemoryMmap, cr3: u64, va: u64) -> Option<RefTrans> {
    fn go(mem: &GuestMemoryMmap, table: u64, va: u64, level: u32, acc: RefTrans) -> Option<RefTrans> {
        let shift = 12 + 9 * (level - 1);
        let idx = (va >> shift) & 511;
        let e: u64 = mem.read_obj(GuestAddress(table + idx * 8)).ok()?;
        if e & 1 == 0 {
            return None;
        }
        let acc = RefTrans {
            pa: 0,
            write: acc.write && e & 2 != 0,
            user: acc.user && e & 4 != 0,
            exec: acc.exec && e >> 63 == 0,
        };
        let frame = e & 0x000f_ffff_ffff_f000;
        if level == 1 || (level < 4 && e & 0x80 != 0) {
            let size = 1u64 << shift;
            return Some(RefTrans { pa: (frame & !(size - 1)) | (va & (size - 1) & !0xfff), ..acc });
        }
        if level == 4 && e & 0x80 != 0 {
            return None;
        }
        go(mem, frame, va, level - 1, acc)
    }
    let top = (va as i64) >> 47;
    if top != 0 && top != -1 {
        return None;
    }
    go(mem, cr3 & 0x000f_ffff_ffff_f000, va, 4, RefTrans { pa: 0, write: true, user: true, exec: true })
}

/// Leaf flags for a user page.
pub const USER_RW: u64 = pte::P | pte::RW | pte::US;
pub const USER_RO: u64 = pte::P | pte::US;

/// Proptest configuration for this suite: `cases` cases, a fixed seed so CI
/// is deterministic (set `PROPTEST_RNG_SEED` to explore others), and no
/// regression files written next to the sources.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let base = Config::default();
    Config {
        cases,
        failure_persistence: None,
        rng_seed: match base.rng_seed {
            RngSeed::Random => RngSeed::Fixed(0x5400_7d0f),
            fixed => fixed,
        },
        ..base
    }
}
