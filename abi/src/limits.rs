//! The limits of a litmus test, defined once.
//!
//! The guest interpreter sizes its tables from these constants,
//! [`crate::litmus::Blob::parse`] refuses a blob that exceeds any of them
//! (so the guest never meets one it cannot run), and the host checker
//! (crate `litmus`) refuses a file that would exceed them at the file's
//! line and column, before anything boots. Whatever the checker accepts
//! compiles to a blob `Blob::parse` accepts: the front-end fuzz test holds
//! the two to that.

use crate::dma;
use crate::layout::{self, PAGE_SIZE};

/// Locations of one test: declared ones plus implicit flags (names used
/// only by `wait`/`signal`). Every location has a kernel word (`var`s and
/// flags live there; the page kinds leave theirs unused) in the one page at
/// [`layout::LITMUS_VARS`], and a slot in the guest's per-iteration VA table.
pub const MAX_LOCATIONS: usize = 256;
const _: () = assert!(MAX_LOCATIONS as u64 * 8 <= PAGE_SIZE);
/// Location indices are `u16` on the wire with `0xffff` meaning "none".
const _: () = assert!(MAX_LOCATIONS < 0xffff);

/// Threads of one test, vCPU and device threads together (the guest's
/// register file and position words are sized by this).
pub const MAX_THREADS: usize = 64;
/// vCPU and device counts are `u8` in the blob header.
const _: () = assert!(MAX_THREADS <= u8::MAX as usize);

/// Device threads of one test: each has one device-program slot of
/// [`DEVICE_PROGRAM_SLOT`] bytes in the guest.
pub const MAX_DEVICE_THREADS: usize = 16;
const _: () = assert!(MAX_DEVICE_THREADS <= MAX_THREADS);

/// Bytes of one device thread's program slot (the DMA-engine program the
/// guest unrolls the thread into: header plus op records).
pub const DEVICE_PROGRAM_SLOT: u64 = 0x1_0000;

/// DMA-engine ops one device thread may unroll to: loop bodies repeated,
/// `barrier` counting two (an arrival add and a wait), every other op one
/// (see [`crate::litmus::Op::device_program_ops`]). What fits in a
/// [`DEVICE_PROGRAM_SLOT`]: 2,047.
pub const MAX_DEVICE_OPS: u64 = (DEVICE_PROGRAM_SLOT - dma::HEADER_SIZE) / dma::OP_SIZE;
const _: () = assert!(MAX_DEVICE_OPS <= dma::MAX_OPS);

/// Registers per thread: `r0` … `r31`.
pub const MAX_REGS: u8 = 32;

/// Maximal nesting of blocks (loop bodies, hook groups), the thread body
/// counting as one.
pub const MAX_DEPTH: usize = 8;

/// Values one iteration reports (`[final] observe` plus what the condition
/// reads): the guest's result buffer; 512 bytes fit a hypercall's data area.
pub const MAX_OBSERVED: usize = 64;
const _: () = assert!(MAX_OBSERVED * 8 <= crate::hypercall::DATA_LEN);

/// Instruction records over all threads of one test (a statement is one
/// record; a hook group adds one; a loop body is stored once, not unrolled).
pub const MAX_RECORDS: usize = 32_768;

/// Bytes of one name: the test's, a location's, a thread's (names are
/// `u16`-length strings on the wire; the limit keeps the string table and
/// the printed results readable).
pub const MAX_NAME_LEN: usize = 255;

/// The user half where a test's pages live: a pinned `va` must lie in
/// `[TEST_VA_START, TEST_VA_END)`, 4 KiB aligned. Below it is the guest
/// kernel's identity map (PML4 slot 0, shared by every address space).
pub const TEST_VA_START: u64 = layout::USER_BASE;
pub const TEST_VA_END: u64 = layout::USER_END;

/// Nesting of `(` … `)` and `!` in a `[final]` condition. Host only (the
/// guest never sees conditions): keeps the checker's recursion, and every
/// later walk of the condition tree, far from the end of a thread's stack.
pub const MAX_CONDITION_DEPTH: usize = 64;

/// `[expect]` entries of one test (each is a policy the test runs under by
/// default). Host only.
pub const MAX_EXPECTATIONS: usize = 256;

/// Bytes of a compiled blob: the area the VMM writes it to.
pub const MAX_BLOB_LEN: usize = layout::LITMUS_BLOB_MAX as usize;

/// The largest blob the limits above allow fits there.
const _: () = assert!(
    crate::litmus::HEADER_LEN
        + MAX_LOCATIONS * crate::litmus::LOC_LEN
        + MAX_THREADS * crate::litmus::THREAD_LEN
        + MAX_RECORDS * crate::litmus::INSTR_LEN
        + MAX_OBSERVED * crate::litmus::OBS_LEN
        + (1 + MAX_LOCATIONS + MAX_THREADS) * MAX_NAME_LEN
        + 8
        <= MAX_BLOB_LEN
);
/// Names fit their `u16` length fields.
const _: () = assert!(MAX_NAME_LEN <= u16::MAX as usize);
