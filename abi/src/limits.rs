//! Limits the guest and the host share, each defined once.
//!
//! # Litmus tests
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

// ---- the guest mm model's capacities (one test mm per iteration)
//
// A test within these never fills a table of the model; the guest sizes
// the tables by them (`guest/src/mm`).

/// Page and unmapped locations: each can become one one-page VMA of the
/// test mm (the VMA table holds this many).
pub const MAX_PAGE_LOCATIONS: usize = 32;

/// Shared (file-backed) page locations: one file each in the model's page
/// cache (`filemap`).
pub const MAX_SHARED_PAGES: usize = 16;
const _: () = assert!(MAX_SHARED_PAGES <= MAX_PAGE_LOCATIONS);

/// Page-table pages the test mm may have at once, its PGD included (see
/// [`page_tables_needed`]).
pub const MAX_PAGE_TABLES: usize = 64;

/// `cow` statements of one test: each run of one gives the phantom fork
/// child one more page reference (the model keeps this many).
pub const MAX_COW_OPS: usize = 32;

/// Addresses one page may be mapped at (the model's reverse map per page).
/// Only `ksm` maps a page at a second address; `mremap` moves a mapping.
/// Locations linked by `ksm` and `mremap` statements (a chain `ksm a b`,
/// `mremap b -> c`, … links a, b, c) may share a page, so a linked group
/// may have at most this many members.
pub const MAX_PAGE_MAPPINGS: usize = 4;

/// Worst-case page-table pages (the PGD, and each PDPT, PD and PT) of a
/// test whose pinned page and unmapped locations are at `pinned`, and, if
/// `window`, with unpinned ones: those go to a random 2 MiB window in the
/// first 256 GiB of [`TEST_VA_START`]'s 512 GiB slot, never a pinned
/// location's 2 MiB, so it needs its own PT and, at worst, its own PD
/// (and its own PDPT unless a pinned location is in that slot). Every
/// location's page may be mapped at once; munmap frees tables and later
/// operations allocate them again, never more than this.
pub fn page_tables_needed(pinned: &[u64], window: bool) -> usize {
    let distinct = |shift: u32| {
        pinned.iter().enumerate().filter(|&(i, &va)| !pinned[..i].iter().any(|&o| o >> shift == va >> shift)).count()
    };
    let mut n = 1 + distinct(39) + distinct(30) + distinct(21);
    if window {
        n += 2 + usize::from(!pinned.iter().any(|&va| va >> 39 == TEST_VA_START >> 39));
    }
    n
}

/// Groups of locations linked by `ksm` and `mremap` (union-find over
/// location indices, fixed size so the guest can use it too): a group
/// larger than [`MAX_PAGE_MAPPINGS`] could map one page at too many
/// addresses.
pub struct LinkedLocations {
    parent: [u16; MAX_LOCATIONS],
    size: [u16; MAX_LOCATIONS],
}

impl Default for LinkedLocations {
    fn default() -> Self {
        let mut parent = [0u16; MAX_LOCATIONS];
        for (i, p) in parent.iter_mut().enumerate() {
            *p = i as u16;
        }
        LinkedLocations { parent, size: [1; MAX_LOCATIONS] }
    }
}

impl LinkedLocations {
    fn root(&mut self, mut i: usize) -> usize {
        while self.parent[i] as usize != i {
            let up = self.parent[i] as usize;
            self.parent[i] = self.parent[up];
            i = up;
        }
        i
    }
    /// Links locations `a` and `b` (indices below [`MAX_LOCATIONS`], else
    /// ignored); returns the size of their group.
    pub fn link(&mut self, a: usize, b: usize) -> usize {
        if a >= MAX_LOCATIONS || b >= MAX_LOCATIONS {
            return 1;
        }
        let (ra, rb) = (self.root(a), self.root(b));
        if ra != rb {
            let (big, small) = if self.size[ra] >= self.size[rb] { (ra, rb) } else { (rb, ra) };
            self.parent[small] = big as u16;
            self.size[big] += self.size[small];
            return self.size[big] as usize;
        }
        self.size[ra] as usize
    }
}

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
