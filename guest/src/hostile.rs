//! A hostile guest (`mode=hostile.KIND`): input the VMM must contain — not
//! hang on, not grow without bound, not let write where it may not. Each
//! kind ends the VM with status 0 if the VMM held (`dma-confined`: with the
//! VMM's bad-hypercall error for its last, deliberately bad submission), or
//! a guest assertion saying what got through. The end-to-end tests run them.

use abi::dma::{self, op as dop, OpRecord, ProgramHeader};
use abi::hypercall::calls::{self, DmaSubmitRequest, TestEndReport};
use abi::hypercall::Outcome;
use abi::layout;

use crate::mm::page_alloc;
use crate::{guest_assert, hypercall};

fn write_program(page: u64, ops: &[(u64, u64, u64)]) {
    let hdr = ProgramHeader { pasid: 1, nops: ops.len() as u64, status: dma::status::PENDING, reserved: 0 };
    // SAFETY: a data page of ours, identity-mapped; the engine has not been
    // handed it yet.
    unsafe {
        core::ptr::write_volatile(page as *mut ProgramHeader, hdr);
        for (i, &(op, va, value)) in ops.iter().enumerate() {
            let rec = OpRecord { op, va, value, result: 0 };
            core::ptr::write_volatile((page + dma::HEADER_SIZE + dma::OP_SIZE * i as u64) as *mut OpRecord, rec);
        }
    }
}

fn status(page: u64) -> u64 {
    // SAFETY: the header's status word of our program page.
    unsafe { core::ptr::read_volatile((page + dma::STATUS_OFFSET) as *const u64) }
}

/// 2,000 submissions of programs that wait for a word nobody writes, then
/// sleep a second per op — and the guest exits at once. The VMM keeps one
/// worker per slot and must end within milliseconds of the exit.
fn dma_spam() {
    let word = layout::LITMUS_VARS + 8 * 100;
    let mut pages = [0u64; dma::MAX_SLOTS as usize];
    for p in pages.iter_mut() {
        *p = page_alloc::alloc_page().unwrap_or(0);
        let ops = [(dop::WAIT_EQ, word, 1), (dop::DELAY_US, 0, 1_000_000), (dop::DELAY_US, 0, 1_000_000)];
        write_program(*p, &ops);
    }
    let mut refused = 0;
    for i in 0..2000u64 {
        let slot = i % dma::MAX_SLOTS;
        let r = hypercall::call::<calls::DmaSubmit>(DmaSubmitRequest { program: pages[slot as usize], slot });
        refused += !r.accepted.get() as u64;
    }
    guest_assert!(refused > 0, "the VMM queued all 2000 programs");
}

/// Device programs aimed at the page-table and shadow regions: refused,
/// nothing written.
fn dma_confined() {
    let page = page_alloc::alloc_page().unwrap_or(0);
    let pte = layout::PT_BASE + 0x800;
    let shadow = layout::SHADOW_BASE + 0x10;
    // SAFETY: the page-table and shadow regions are identity-mapped and readable.
    let read = |a: u64| unsafe { core::ptr::read_volatile(a as *const u64) };
    let (pte0, shadow0) = (read(pte), read(shadow));
    for (kind, target) in [(dop::SIGNAL, pte), (dop::KADD, pte), (dop::SIGNAL, shadow), (dop::WAIT_EQ, pte)] {
        write_program(page, &[(kind, target, 0x67)]);
        hypercall::call::<calls::DmaSubmit>(DmaSubmitRequest { program: page, slot: 1 });
        let done = crate::time::spin_until(5_000, || status(page) != dma::status::PENDING);
        guest_assert!(done, "the engine never finished a program");
        guest_assert!(status(page) == dma::status::BAD_PROGRAM, "op {} on {:#x} was not refused", kind, target);
    }
    guest_assert!(read(pte) == pte0 && read(shadow) == shadow0, "DMA wrote the page-table or shadow region");
    // A program whose header lies in the page-table region is refused outright.
    let r = hypercall::call::<calls::DmaSubmit>(DmaSubmitRequest { program: layout::PT_BASE + 0x1000, slot: 2 });
    let _ = r; // not reached: the VMM ends the VM with a bad-hypercall error
}

/// 20,000 self-test results: the VMM keeps and prints at most its cap.
fn result_spam() {
    for _ in 0..20_000 {
        hypercall::call_data::<calls::TestEnd>(TestEndReport { outcome: Outcome::Pass }, b"spam\0");
    }
}

/// Runs hostile kind `kind`; false if it is unknown.
pub fn run(kind: &str) -> bool {
    match kind {
        "dma-spam" => dma_spam(),
        "dma-confined" => dma_confined(),
        "result-spam" => result_spam(),
        _ => return false,
    }
    true
}
