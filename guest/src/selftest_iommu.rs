//! Self-tests of the emulated SVA IOMMU, driven through the guest's driver
//! and the DMA engine, as a device driver would see it.

use core::sync::atomic::Ordering;

use abi::dma::{self, op as dop};
use abi::iommu::{self as hw, reg, FaultReason, InvDesc};
use abi::layout;
use abi::BootInfo;

use crate::iommu;
use crate::mm::page_alloc;
use crate::mm::pgtable::{self, pte, PageTables};
use crate::report::TestResult;
use crate::{check, time};

const PASID: u32 = 7;
const VAL_A: u64 = 0xa11a_0001;
const VAL_B: u64 = 0xb22b_0002;

/// A bound mm with `va` -> page A, page B spare.
struct Dev {
    mm: PageTables,
    va: u64,
    a: u64,
    b: u64,
    ptep: u64,
}

impl Dev {
    fn new(va_off: u64) -> Dev {
        iommu::init();
        let mm = PageTables::new();
        let (a, b) = (page_alloc::alloc_page().unwrap_or(0), page_alloc::alloc_page().unwrap_or(0));
        // SAFETY: fresh identity-mapped data pages.
        unsafe {
            core::ptr::write_volatile(a as *mut u64, VAL_A);
            core::ptr::write_volatile(b as *mut u64, VAL_B);
        }
        let va = layout::USER_BASE + 0x2000_0000 + va_off;
        let ptep = mm.map(va, a, pte::RW | pte::US);
        iommu::bind_mm(PASID, mm.pgd);
        // A fresh binding starts with no cached translations of this PASID.
        let _ = iommu::qi_submit_sync(&[InvDesc::PasidAll { pasid: PASID }], false);
        Dev { mm, va, a, b, ptep }
    }

    fn load(&self, va: u64) -> Option<u64> {
        let mut r = [0u64; 1];
        iommu::run(PASID, &[(dop::LOAD, va, 0)], &mut r).map(|()| r[0])
    }

    fn destroy(self) {
        iommu::unbind_mm(PASID);
        self.mm.destroy();
        page_alloc::free_page(self.a);
        page_alloc::free_page(self.b);
    }
}

fn word(pa: u64) -> u64 {
    // SAFETY: identity-mapped data page.
    unsafe { core::ptr::read_volatile(pa as *const u64) }
}

/// The device reads and writes the mm's pages through the shared page
/// tables, setting A and D in the PTE as the CPU would.
pub fn dma_read_write(_: &BootInfo) -> TestResult {
    let d = Dev::new(0);
    let r = (|| {
        let mut res = [0u64; 3];
        let ok = iommu::run(
            PASID,
            &[(dop::LOAD, d.va, 0), (dop::STORE, d.va + 8, 0x5eed), (dop::FETCH_ADD, d.va, 5)],
            &mut res,
        );
        check!(ok.is_some(), "device program did not complete");
        check!(res[0] == VAL_A, "device load gave {:#x}, expected {:#x}", res[0], VAL_A);
        check!(res[2] == VAL_A, "device fetch_add returned {:#x}", res[2]);
        check!(word(d.a + 8) == 0x5eed, "device store not in memory: {:#x}", word(d.a + 8));
        check!(word(d.a) == VAL_A + 5, "device fetch_add not in memory: {:#x}", word(d.a));
        let e = pgtable::read_entry(d.ptep);
        check!(e & pte::A != 0 && e & pte::D != 0, "PTE {:#x}: the device walk did not set A and D", e);
        Ok(())
    })();
    d.destroy();
    r
}

/// The IOTLB keeps a stale translation after a PTE change until a
/// page-selective invalidation (plus wait) drops it.
pub fn invalidate_page(_: &BootInfo) -> TestResult {
    let d = Dev::new(0x10_0000);
    let r = (|| {
        check!(d.load(d.va) == Some(VAL_A), "first device load wrong");
        let stale0 = iommu::stats()[2];
        let old = pgtable::read_entry(d.ptep);
        pgtable::set_pte(d.ptep, (old & !pte::ADDR_MASK) | d.b);
        let v = d.load(d.va);
        check!(v == Some(VAL_A), "without invalidation the device read {:x?}, not the stale page", v);
        check!(iommu::stats()[2] > stale0, "the stale IOTLB hit was not counted");
        let inv = iommu::invalidate_range(PASID, d.va, d.va + 4096);
        check!(inv.is_ok(), "invalidation failed: {:?}", inv.err());
        let v = d.load(d.va);
        check!(v == Some(VAL_B), "after invalidation + wait the device read {:x?}", v);
        Ok(())
    })();
    d.destroy();
    r
}

/// The hardware's IH hint (VT-d 6.5.2.4): a leaf-only invalidation keeps the paging-structure cache, so
/// after the last-level table is freed a device access to a neighbour walks
/// the freed table (`stale-walk`); a full invalidation drops the PWC and the
/// same access faults.
pub fn invalidate_leaf_only_keeps_pwc(_: &BootInfo) -> TestResult {
    let d = Dev::new(0x40_0000);
    let neighbour = d.va + 4096;
    let r = (|| {
        check!(d.load(d.va) == Some(VAL_A), "first device load wrong");
        let freed = d.mm.free_pte_table(d.va);
        check!(freed.is_some(), "could not free the page table");
        // IH as hardware defines it (no Linux driver sets it): a raw descriptor.
        let ih = InvDesc::PasidPages { pasid: PASID, addr: d.va, am: 0, leaf_only: true };
        let inv = iommu::qi_submit_sync(&[ih], false);
        check!(inv.is_ok(), "leaf-only invalidation failed: {:?}", inv.err());
        let v = d.load(neighbour);
        check!(
            v == Some(dma::STALE_WALK),
            "after a leaf-only invalidation the neighbour gave {:x?}, not stale-walk",
            v
        );
        let inv = iommu::invalidate_range(PASID, d.va, d.va + 4096);
        check!(inv.is_ok(), "full invalidation failed: {:?}", inv.err());
        let v = d.load(neighbour);
        check!(v == Some(dma::FAULT), "after a full invalidation the neighbour gave {:x?}, not a fault", v);
        while iommu::pop_page_request().is_some() {}
        Ok(())
    })();
    d.destroy();
    r
}

/// A wait descriptor writes its status word once everything before it is
/// done and, with IF, raises the completion MSI and sets STATUS.IWC.
pub fn wait_status(_: &BootInfo) -> TestResult {
    iommu::init();
    let irqs0 = iommu::WAIT_IRQS.load(Ordering::Relaxed);
    let r = iommu::qi_submit_sync(&[InvDesc::Global], true);
    check!(r.is_ok(), "wait did not complete: {:?}", r.err());
    let got = time::spin_until(5_000, || iommu::WAIT_IRQS.load(Ordering::Relaxed) > irqs0);
    check!(got, "no completion MSI arrived");
    let st = iommu::mmio_read(reg::STATUS);
    check!(st & hw::status::IWC != 0, "STATUS {:#x}: IWC not set", st);
    iommu::mmio_write(reg::STATUS, hw::status::IWC);
    check!(iommu::mmio_read(reg::STATUS) & hw::status::IWC == 0, "IWC is not write-1-to-clear");
    Ok(())
}

/// A device access to an unmapped page faults: a page request is queued
/// (with PASID, VA, reason) and its MSI raised. With RETRY, the device
/// waits while the guest maps the page, then completes.
pub fn fault_page_request(_: &BootInfo) -> TestResult {
    let d = Dev::new(0x80_0000);
    let hole = d.va + 0x20_0000;
    let r = (|| {
        while iommu::pop_page_request().is_some() {}
        let irqs0 = iommu::FAULT_IRQS.load(Ordering::Relaxed);
        let v = d.load(hole);
        check!(v == Some(dma::FAULT), "load of an unmapped page gave {:x?}", v);
        let pr = iommu::pop_page_request();
        check!(pr.is_some(), "no page request queued");
        let pr = pr.unwrap_or_else(|| unreachable!());
        check!(pr.pasid == PASID && pr.va == hole, "page request for PASID {} VA {:#x}", pr.pasid, pr.va);
        check!(pr.reason == FaultReason::NotPresent, "page request reason {:?}", pr.reason);
        check!(time::spin_until(5_000, || iommu::FAULT_IRQS.load(Ordering::Relaxed) > irqs0), "no page-request MSI");

        // Retry: the device waits for the guest to handle the request.
        let prog = iommu::Dma::submit(PASID, &[(dop::LOAD | dop::RETRY, hole, 0)]);
        check!(
            time::spin_until(10_000, || iommu::pop_page_request().is_some()),
            "no page request for the retried access"
        );
        d.mm.map(hole, d.b, pte::RW | pte::US);
        let mut res = [0u64; 1];
        check!(prog.wait(&mut res).is_some(), "the retried program did not complete");
        check!(res[0] == VAL_B, "the retried load gave {:#x}, expected {:#x}", res[0], VAL_B);
        while iommu::pop_page_request().is_some() {}
        Ok(())
    })();
    d.destroy();
    r
}

/// A malformed descriptor stops the queue with STATUS.IQE and IQERCD
/// naming the error and the descriptor; replacing it and clearing IQE
/// resumes processing (Linux's `qi_check_fault`).
pub fn malformed_descriptor_reported(_: &BootInfo) -> TestResult {
    iommu::init();
    let (res, at) = iommu::submit_raw([0xf, 0]); // type 0xf does not exist
    check!(res.is_err(), "a descriptor of unknown type was accepted");
    let e = res.err().unwrap_or(iommu::QueueError { code: 0, head: 0 });
    check!(e.code == hw::iqe::UNKNOWN_TYPE, "IQERCD code {}, expected UNKNOWN_TYPE", e.code);
    check!(e.head == at, "IQERCD head {:#x}, the bad descriptor is at {:#x}", e.head, at);
    check!(iommu::mmio_read(reg::STATUS) & hw::status::IQE != 0, "STATUS.IQE not set");
    let rec = iommu::recover_from_queue_error(e.head);
    check!(rec.is_ok(), "queue did not resume after clearing IQE: {:?}", rec.err());
    let again = iommu::qi_submit_sync(&[InvDesc::Global], false);
    check!(again.is_ok(), "queue unusable after recovery: {:?}", again.err());
    Ok(())
}
