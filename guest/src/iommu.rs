//! The guest's SVA driver for the emulated IOMMU (Intel-SVM-like): PASID
//! table, invalidation queue with `qi_submit_sync` (descriptors + a wait
//! descriptor, then poll its status word), page-request queue, MSIs, and
//! device programs for the DMA engine.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::dma::{self, OpRecord, ProgramHeader};
use abi::hypercall::calls::{DmaSubmit, DmaSubmitRequest, IommuStats};
use abi::hypercall::Empty;
use abi::iommu::{self as hw, reg, InvDesc, PageRequest, IOMMU_MMIO_BASE};

use crate::mm::page_alloc;
use crate::sync::SpinLock;
use crate::{hypercall, time};

/// MSI vectors (delivered to CPU 0).
pub const FAULT_VECTOR: u64 = 0xe0;
pub const WAIT_VECTOR: u64 = 0xe1;
const MSI_ADDR_CPU0: u64 = 0xfee0_0000;

/// Interrupts received, for the self-tests.
pub static FAULT_IRQS: AtomicU64 = AtomicU64::new(0);
pub static WAIT_IRQS: AtomicU64 = AtomicU64::new(0);

pub fn mmio_read(off: u64) -> u64 {
    // SAFETY: the IOMMU register page; every access exits to the VMM.
    unsafe { core::ptr::read_volatile((IOMMU_MMIO_BASE + off) as *const u64) }
}

pub fn mmio_write(off: u64, v: u64) {
    // The device must see the page-table updates made before.
    crate::mm::pgtable::lazy_mmu_flush();
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile((IOMMU_MMIO_BASE + off) as *mut u64, v) }
}

struct Driver {
    pasid_table: u64,
    iq: u64,
    iq_tail: u64,
    iq_bytes: u64,
    pq: u64,
    pq_bytes: u64,
    /// Page holding the wait descriptors' status word.
    status_page: u64,
    seq: u32,
}

static DRIVER: SpinLock<Option<Driver>> = SpinLock::new(None);

/// Sets up the IOMMU once: PASID table, queues, MSIs.
pub fn init() {
    let mut d = DRIVER.lock();
    if d.is_some() {
        return;
    }
    let page = || page_alloc::alloc_page().unwrap_or(0);
    let drv = Driver {
        pasid_table: page(),
        iq: page(),
        iq_tail: 0,
        iq_bytes: 4096,
        pq: page(),
        pq_bytes: 4096,
        status_page: page(),
        seq: 0,
    };
    mmio_write(reg::PASID_TABLE, hw::pasid::table_reg(drv.pasid_table, 0));
    mmio_write(reg::IQA, hw::iqa::encode(drv.iq, false, 0));
    mmio_write(reg::PQA, hw::pqa::encode(drv.pq, 0));
    mmio_write(reg::FEADDR, MSI_ADDR_CPU0);
    mmio_write(reg::FEDATA, FAULT_VECTOR);
    mmio_write(reg::PEADDR, MSI_ADDR_CPU0);
    mmio_write(reg::PEDATA, FAULT_VECTOR);
    mmio_write(reg::IEADDR, MSI_ADDR_CPU0);
    mmio_write(reg::IEDATA, WAIT_VECTOR);
    *d = Some(drv);
}

/// `intel_svm_bind_mm`: device accesses with `pasid` use the page tables at `pgd`.
pub fn bind_mm(pasid: u32, pgd: u64) {
    let d = DRIVER.lock();
    let Some(d) = d.as_ref() else { return };
    // SAFETY: the PASID table is our data page; the IOMMU reads it from memory.
    unsafe { core::ptr::write_volatile((d.pasid_table + 8 * pasid as u64) as *mut u64, hw::pasid::entry(pgd, false)) };
}

pub fn unbind_mm(pasid: u32) {
    {
        let d = DRIVER.lock();
        let Some(d) = d.as_ref() else { return };
        // SAFETY: as in `bind_mm`.
        unsafe { core::ptr::write_volatile((d.pasid_table + 8 * pasid as u64) as *mut u64, 0) };
    }
    let _ = qi_submit_sync(&[InvDesc::PasidAll { pasid }], false);
}

/// A queue error: `IQERCD` code and the head of the faulting descriptor.
#[derive(Clone, Copy, Debug)]
pub struct QueueError {
    pub code: u8,
    pub head: u64,
}

fn push(d: &mut Driver, qw: [u64; 2]) {
    // SAFETY: the queue is our data page; the slot is past the hardware's head.
    unsafe {
        core::ptr::write_volatile((d.iq + d.iq_tail) as *mut u64, qw[0]);
        core::ptr::write_volatile((d.iq + d.iq_tail + 8) as *mut u64, qw[1]);
    }
    d.iq_tail = (d.iq_tail + 16) % d.iq_bytes;
}

fn status_word(d: &Driver) -> u32 {
    // SAFETY: our data page, written by the IOMMU.
    unsafe { core::ptr::read_volatile(d.status_page as *const u32) }
}

/// `qi_submit_sync`: queue `descs` and a wait descriptor, ring the
/// doorbell, and poll the wait's status word. `irq` asks the wait to raise
/// its completion MSI too.
pub fn qi_submit_sync(descs: &[InvDesc], irq: bool) -> Result<(), QueueError> {
    let mut g = DRIVER.lock();
    let Some(d) = g.as_mut() else { return Err(QueueError { code: 0, head: 0 }) };
    for desc in descs {
        push(d, desc.encode());
    }
    d.seq = d.seq.wrapping_add(1);
    let seq = d.seq;
    let wait = InvDesc::Wait { status_addr: Some(d.status_page), data: seq, irq, fence: true, drain_prq: false };
    push(d, wait.encode());
    mmio_write(reg::IQT, d.iq_tail);
    wait_status(d, seq)
}

fn wait_status(d: &Driver, seq: u32) -> Result<(), QueueError> {
    let ok = time::spin_until(5_000, || status_word(d) == seq || mmio_read(reg::STATUS) & hw::status::IQE != 0);
    // Done: no register read. `qi_submit_sync` (drivers/iommu/intel/dmar.c)
    // polls `desc_status[wait_index]` and reads the fault status register
    // (`qi_check_fault`) only inside that loop, while the wait is not done.
    if status_word(d) == seq {
        return Ok(());
    }
    let st = mmio_read(reg::STATUS);
    if st & hw::status::IQE != 0 {
        let e = mmio_read(reg::IQERCD);
        return Err(QueueError { code: hw::iqe::code(e), head: hw::iqe::head(e) });
    }
    if !ok {
        return Err(QueueError { code: 0, head: mmio_read(reg::IQH) });
    }
    Ok(())
}

/// Queues raw descriptor words (for testing malformed descriptors) followed
/// by a wait, and rings the doorbell; returns the queue error, if any, and
/// the offset the raw descriptor was written at.
pub fn submit_raw(qw: [u64; 2]) -> (Result<(), QueueError>, u64) {
    let mut g = DRIVER.lock();
    let Some(d) = g.as_mut() else { return (Err(QueueError { code: 0, head: 0 }), 0) };
    let at = d.iq_tail;
    push(d, qw);
    d.seq = d.seq.wrapping_add(1);
    let seq = d.seq;
    push(
        d,
        InvDesc::Wait { status_addr: Some(d.status_page), data: seq, irq: false, fence: true, drain_prq: false }
            .encode(),
    );
    mmio_write(reg::IQT, d.iq_tail);
    (wait_status(d, seq), at)
}

/// After a queue error: replace the descriptor at `head` with a harmless
/// wait (as Linux's `qi_check_fault` does), clear `IQE`, and wait for the
/// rest of the queue to complete.
pub fn recover_from_queue_error(head: u64) -> Result<(), QueueError> {
    let mut g = DRIVER.lock();
    let Some(d) = g.as_mut() else { return Err(QueueError { code: 0, head: 0 }) };
    let nop = InvDesc::Wait { status_addr: None, data: 0, irq: false, fence: false, drain_prq: false }.encode();
    // SAFETY: our queue page; the hardware is stopped at `head`.
    unsafe {
        core::ptr::write_volatile((d.iq + head) as *mut u64, nop[0]);
        core::ptr::write_volatile((d.iq + head + 8) as *mut u64, nop[1]);
    }
    mmio_write(reg::STATUS, hw::status::IQE);
    let seq = d.seq;
    wait_status(d, seq)
}

/// The SVA driver's invalidation of `[start, end)` for `pasid`: one
/// descriptor per page for short ranges, the whole PASID otherwise,
/// nothing for an empty range. IH (the leaf-only hint) is never set: the
/// mmu_notifier API carries no such hint and Linux's SVA drivers pass
/// ih = 0 (intel-svm), so the paging-structure cache is always dropped.
/// The driver arithmetic of each era (the VT-d flush-all overflow) is the
/// caller's (`mm::mmu_notifier`).
pub fn invalidate_range(pasid: u32, start: u64, end: u64) -> Result<(), QueueError> {
    if end <= start {
        return Ok(());
    }
    let pages = (end - start).div_ceil(4096);
    if pages > 32 {
        return qi_submit_sync(&[InvDesc::PasidAll { pasid }], false);
    }
    let mut descs = [InvDesc::Global; 32];
    for (i, d) in descs.iter_mut().take(pages as usize).enumerate() {
        *d = InvDesc::PasidPages { pasid, addr: (start & !0xfff) + 4096 * i as u64, am: 0, leaf_only: false };
    }
    qi_submit_sync(&descs[..pages as usize], false)
}

/// The next page request in the queue, consumed (PQH advanced).
pub fn pop_page_request() -> Option<PageRequest> {
    let g = DRIVER.lock();
    let d = g.as_ref()?;
    let (head, tail) = (mmio_read(reg::PQH), mmio_read(reg::PQT));
    if head == tail {
        return None;
    }
    let mut qw = [0u64; 4];
    for (i, w) in qw.iter_mut().enumerate() {
        // SAFETY: our page-request queue page, written by the IOMMU.
        *w = unsafe { core::ptr::read_volatile((d.pq + head + 8 * i as u64) as *const u64) };
    }
    mmio_write(reg::PQH, (head + 32) % d.pq_bytes);
    PageRequest::decode(qw)
}

/// A device program being run by the DMA engine.
pub struct Dma {
    page: u64,
    nops: usize,
}

const MAX_OPS: usize = ((4096 - dma::HEADER_SIZE) / dma::OP_SIZE) as usize;

impl Dma {
    /// Submits `ops` = (op, va, value) for `pasid`; returns at once.
    pub fn submit(pasid: u32, ops: &[(u64, u64, u64)]) -> Dma {
        let page = page_alloc::alloc_page().unwrap_or(0);
        let n = ops.len().min(MAX_OPS);
        let hdr = ProgramHeader { pasid: pasid as u64, nops: n as u64, status: dma::status::PENDING, reserved: 0 };
        // SAFETY: a fresh data page of ours, read by the DMA engine.
        unsafe {
            core::ptr::write_volatile(page as *mut ProgramHeader, hdr);
            for (i, &(op, va, value)) in ops.iter().take(n).enumerate() {
                let rec = OpRecord { op, va, value, result: 0 };
                core::ptr::write_volatile((page + dma::HEADER_SIZE + dma::OP_SIZE * i as u64) as *mut OpRecord, rec);
            }
        }
        // Self-tests run one program at a time, on device slot 0.
        hypercall::call::<DmaSubmit>(DmaSubmitRequest { program: page, slot: 0 });
        Dma { page, nops: n }
    }

    pub fn status(&self) -> u64 {
        // SAFETY: the header's status word, written by the engine.
        unsafe { core::ptr::read_volatile((self.page + 16) as *const u64) }
    }

    /// Waits for the program; copies the results; `None` on timeout or a bad program.
    pub fn wait(self, results: &mut [u64]) -> Option<()> {
        let done = time::spin_until(30_000, || self.status() != dma::status::PENDING);
        let ok = done && self.status() == dma::status::DONE;
        if ok {
            for (i, r) in results.iter_mut().take(self.nops).enumerate() {
                // SAFETY: as above.
                *r = unsafe {
                    core::ptr::read_volatile(
                        (self.page + dma::HEADER_SIZE + dma::OP_SIZE * i as u64 + 24) as *const u64,
                    )
                };
            }
        }
        if done {
            page_alloc::free_page(self.page);
        }
        ok.then_some(())
    }
}

/// Runs a device program to completion.
pub fn run(pasid: u32, ops: &[(u64, u64, u64)], results: &mut [u64]) -> Option<()> {
    Dma::submit(pasid, ops).wait(results)
}

/// (IOTLB entries, PWC entries, stale hits, stale walks) as the VMM counts them.
pub fn stats() -> [u64; 4] {
    let s = hypercall::call::<IommuStats>(Empty);
    [s.iotlb_entries, s.pwc_entries, s.stale_hits, s.stale_walks]
}

pub fn handle_fault_msi() {
    FAULT_IRQS.fetch_add(1, Ordering::Relaxed);
}

pub fn handle_wait_msi() {
    WAIT_IRQS.fetch_add(1, Ordering::Relaxed);
}
