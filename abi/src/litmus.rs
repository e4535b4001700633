//! Litmus bytecode: the host compiler (crate `litmus`) writes it, the guest
//! interpreter reads it in place.
//!
//! # Why this shape
//!
//! The guest has no allocator worth the name and must never trust the blob
//! blindly, so the format is a flat byte string of fixed-size little-endian
//! records, addressed by offsets from a fixed header. [`Blob::parse`] checks
//! every offset, count, index, opcode and nesting once; after that the
//! accessors are cheap and infallible for in-range indices. Records are decoded
//! field by field with `from_le_bytes` (no pointer casts, no `unsafe`, no
//! alignment assumptions about where the VMM put the blob).
//!
//! # Layout (all integers little-endian, every section 8-byte aligned)
//!
//! ```text
//! offset 0                 Header            HEADER_LEN (192) bytes, includes the PolicyAbi
//! header.locs_off          [LocDesc; n_locs]        32 bytes each
//! header.threads_off       [ThreadDesc; n_threads]  16 bytes each (vCPU threads first, then devices)
//! header.instrs_off        [Instr; n_instrs]        32 bytes each, threads' code back to back
//! header.obs_off           [ObsDesc; n_obs]          8 bytes each
//! header.strings_off       UTF-8 names (locations, threads, test), not NUL-terminated
//! ```
//!
//! # Code structure inside one thread's instruction range
//!
//! A *block* is a sequence of *items*. An item is one instruction record
//! followed by its hook groups: if `instr.nhooks == k`, the next `k` groups
//! each start with an [`Op::At`] record (`arg` = [`Hook`] id, `len` = number
//! of sync records that follow) and then `len` sync records
//! ([`Op::Wait`], [`Op::Signal`], [`Op::Delay`], [`Op::Barrier`]).
//! An [`Op::Loop`] record (`imm` = iteration count, `len` = body length in
//! records) is followed by its body, itself a block. So the interpreter walks
//! a thread linearly, and to "skip" an item it adds `1 + sum(1 + at.len)` or
//! `1 + loop.len`. Nesting depth is at most [`MAX_DEPTH`].
//!
//! # Values
//!
//! Registers and observed locations hold `u64`. The top [`RESERVED_VALUES`]
//! values are sentinels that cannot be written by a test: [`VALUE_FAULT`]
//! (the access faulted), [`VALUE_STALE_WALK`] (the device walked a freed
//! page-table page), [`VALUE_TIMEOUT`] (the iteration ran out of time before
//! the value was produced).
//!
//! # What the guest reports per iteration
//!
//! One `u64` per [`ObsDesc`], in order: a register's final value, or for a
//! location the first word of the page read through the kernel's view of its
//! current mapping (`VALUE_FAULT` if nothing is mapped there at the end), or a
//! kernel word's value for a `var`.

/// `b"SDLITMUS"`.
pub const MAGIC: [u8; 8] = *b"SDLITMUS";
/// Bumped on any incompatible layout change.
pub const VERSION: u16 = 2;
/// Bytes of the fixed header, policy included.
pub const HEADER_LEN: usize = 192;
pub const LOC_LEN: usize = 32;
pub const THREAD_LEN: usize = 16;
pub const INSTR_LEN: usize = 32;
pub const OBS_LEN: usize = 8;
/// "No register" in [`Instr::dst`], [`Instr::src`], [`Instr::src2`].
pub const NO_REG: u8 = 0xff;
/// "No location" in [`Instr::loc`] / [`Instr::loc2`].
pub const NO_LOC: u16 = 0xffff;
// The limits of a test are defined in `crate::limits`; these three are
// re-exported here because every reader of the format needs them.
pub use crate::limits::{MAX_DEPTH, MAX_REGS, MAX_THREADS};

/// Number of reserved sentinel values at the top of the `u64` range.
pub const RESERVED_VALUES: u64 = 16;
/// Smallest reserved value; test immediates must be below it.
pub const RESERVED_MIN: u64 = u64::MAX - (RESERVED_VALUES - 1);
/// The access faulted (primary MMU #PF that the mm could not resolve, or a
/// device translation fault).
pub const VALUE_FAULT: u64 = u64::MAX;
/// A device walk passed through a page-table page the guest had freed.
pub const VALUE_STALE_WALK: u64 = u64::MAX - 1;
/// The iteration ran out of time before this value was produced.
pub const VALUE_TIMEOUT: u64 = u64::MAX - 2;

/// The printed name of a sentinel value (`fault`, `stale-walk`, `timeout`).
pub const fn special_value_name(v: u64) -> Option<&'static str> {
    match v {
        VALUE_FAULT => Some("fault"),
        VALUE_STALE_WALK => Some("stale-walk"),
        VALUE_TIMEOUT => Some("timeout"),
        _ => None,
    }
}

/// Inverse of [`special_value_name`].
pub fn special_value_from_name(s: &str) -> Option<u64> {
    match s {
        "fault" => Some(VALUE_FAULT),
        "stale-walk" => Some(VALUE_STALE_WALK),
        "timeout" => Some(VALUE_TIMEOUT),
        _ => None,
    }
}

macro_rules! byte_enum {
    (
        $(#[$m:meta])*
        pub enum $name:ident { $( $(#[$vm:meta])* $var:ident = $num:literal => $text:literal ),* $(,)? }
    ) => {
        $(#[$m])*
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $( $(#[$vm])* $var = $num ),* }

        impl $name {
            /// Every value, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$var),*];
            /// Decode the wire number.
            pub const fn from_u8(v: u8) -> Option<Self> {
                match v { $( $num => Some($name::$var), )* _ => None }
            }
            /// The name used in litmus files and output.
            pub const fn name(self) -> &'static str {
                match self { $( $name::$var => $text ),* }
            }
            /// Inverse of [`Self::name`].
            pub fn from_name(s: &str) -> Option<Self> {
                match s { $( $text => Some($name::$var), )* _ => None }
            }
        }
    };
}

byte_enum! {
    /// Instruction opcodes. Numbers are part of the wire format.
    pub enum Op {
        /// Does nothing (padding; never emitted by the compiler).
        Nop = 0 => "nop",
        // --- memory ops of vCPU threads (through this vCPU's TLB) ---
        /// `load L -> r`: dst = *L.
        Load = 1 => "load",
        /// `store L V|r`: *L = imm or src.
        Store = 2 => "store",
        /// `xchg L V|r -> r`.
        Xchg = 3 => "xchg",
        /// `cmpxchg L OLD NEW -> r`: OLD = imm|src, NEW = imm2|src2, dst = old value.
        Cmpxchg = 4 => "cmpxchg",
        /// `fetch_add L V|r -> r`.
        FetchAdd = 5 => "fetch_add",
        /// `mfence`.
        Mfence = 6 => "mfence",
        // --- sync ops (kernel words, always mapped and coherent) ---
        /// `wait F` (arg = WaitCmp::NonZero) or `wait F == V` (arg = WaitCmp::Eq, imm = V).
        Wait = 16 => "wait",
        /// `signal F [V]`: F = imm (default 1).
        Signal = 17 => "signal",
        /// `barrier`: all threads and devices meet.
        Barrier = 18 => "barrier",
        /// `delay N`: spin imm iterations.
        Delay = 19 => "delay",
        // --- mm operations (vCPU threads) ---
        /// `touch L [write]`: arg = 1 for a write access.
        Touch = 32 => "touch",
        /// `mmap L rw|ro`: arg = Perm.
        Mmap = 33 => "mmap",
        /// `munmap L`.
        Munmap = 34 => "munmap",
        /// `mprotect L rw|ro|none`: arg = Perm.
        Mprotect = 35 => "mprotect",
        /// `madvise L dontneed|free`: arg = Advice.
        Madvise = 36 => "madvise",
        /// `cow L`: share the page copy-on-write, as after fork.
        Cow = 37 => "cow",
        /// `ksm L L2`: write-protect L, compare with L2, replace L by L2's page.
        Ksm = 38 => "ksm",
        /// `migrate L`.
        Migrate = 39 => "migrate",
        /// `mkclean L -> r`: page_mkclean + writeback; dst = value written back.
        Mkclean = 40 => "mkclean",
        /// `reclaim L`: try_to_unmap with batched flush, swap out.
        Reclaim = 41 => "reclaim",
        /// `mremap L -> L2`: move the page tables.
        Mremap = 42 => "mremap",
        /// `alloc L`: map a fresh page at L (most recently freed page first).
        Alloc = 43 => "alloc",
        /// `truncate L`: truncate L's shared file (unmap_mapping_range, the
        /// page leaves the page cache); no mmap_lock.
        Truncate = 44 => "truncate",
        /// `uffd_wp L on|off`: userfaultfd write-protect (arg = 1) or
        /// resolve (arg = 0) under mmap_read_lock.
        UffdWp = 45 => "uffd_wp",
        // --- device ops (DMA engine, test mm's PASID) ---
        /// `dma_load L -> r`.
        DmaLoad = 64 => "dma_load",
        /// `dma_store L V|r`.
        DmaStore = 65 => "dma_store",
        /// `dma_xchg L V|r -> r`.
        DmaXchg = 66 => "dma_xchg",
        /// `dma_fetch_add L V|r -> r`.
        DmaFetchAdd = 67 => "dma_fetch_add",
        /// `prefetch L`: fill the IOTLB only.
        Prefetch = 68 => "prefetch",
        /// `loop N { … }`: imm = N, len = body length in records.
        Loop = 69 => "loop",
        // --- structure ---
        /// Hook group header: arg = Hook, len = number of sync records
        /// following, imm = N of `at HOOK#N` (only the N-th firing; 0 = every firing).
        At = 96 => "at",
    }
}

impl Op {
    /// Ops allowed in vCPU thread bodies.
    pub const fn is_vcpu_op(self) -> bool {
        matches!(self as u8, 1..=6 | 16..=19 | 32..=45)
    }
    /// Ops allowed in device thread bodies.
    pub const fn is_device_op(self) -> bool {
        matches!(self as u8, 16..=19 | 64..=69)
    }
    /// Ops allowed inside a hook group.
    pub const fn is_sync_op(self) -> bool {
        matches!(self as u8, 16..=19)
    }
    /// Ops that take hook groups: memory ops (their fault path) and mm ops.
    pub const fn takes_hooks(self) -> bool {
        matches!(self as u8, 1..=5 | 32..=45)
    }

    /// The first release that has the operation, if it is younger than
    /// every profile (`uffd_wp`: userfaultfd write-protect, 292924b26024).
    pub const fn since(self) -> Option<crate::policy::Release> {
        match self {
            Op::UffdWp => Some(crate::policy::r(5, 7)),
            _ => None,
        }
    }
    /// DMA-engine ops the guest emits for this op of a device thread:
    /// `barrier` two (an arrival add and a wait for everyone), `loop` none
    /// of its own (its body is emitted once per iteration), every other
    /// device op one. [`Blob::parse`] bounds a device thread's total by
    /// [`crate::limits::MAX_DEVICE_OPS`] with it.
    pub const fn device_program_ops(self) -> u64 {
        match self {
            Op::Barrier => 2,
            Op::Loop | Op::Nop | Op::At => 0,
            _ => 1,
        }
    }
    /// Ops that write [`Instr::dst`].
    pub const fn writes_dst(self) -> bool {
        matches!(
            self,
            Op::Load
                | Op::Xchg
                | Op::Cmpxchg
                | Op::FetchAdd
                | Op::Mkclean
                | Op::DmaLoad
                | Op::DmaXchg
                | Op::DmaFetchAdd
        )
    }
}

byte_enum! {
    /// Hook points in the guest's mm model. `OP at HOOK { … }` runs the sync
    /// ops when this thread's OP reaches the hook (every time it does;
    /// `at HOOK#N` only the N-th time, [`Instr::imm`] of the `At` record).
    /// Numbers are part of the wire format; [`Hook::description`] is what
    /// `vmm litmus --list-hooks` prints.
    pub enum Hook {
        AfterPtlAcquire = 1 => "after_ptl_acquire",
        AfterPteClear = 2 => "after_pte_clear",
        AfterPteSet = 3 => "after_pte_set",
        BeforeFlush = 4 => "before_flush",
        AfterFlush = 5 => "after_flush",
        AfterPtlRelease = 6 => "after_ptl_release",
        BeforeNotifier = 7 => "before_notifier",
        AfterNotifier = 8 => "after_notifier",
        AfterCopy = 9 => "after_copy",
        BeforeFree = 10 => "before_free",
        AfterInvalidateStart = 11 => "after_invalidate_start",
        BeforeInvalidateEnd = 12 => "before_invalidate_end",
        AfterIncPending = 13 => "after_inc_pending",
        BeforeDecPending = 14 => "before_dec_pending",
        AfterPmdClear = 15 => "after_pmd_clear",
        BeforeFreeTables = 16 => "before_free_tables",
        AfterMigrationEntry = 17 => "after_migration_entry",
        AfterCompare = 18 => "after_compare",
        AfterMkclean = 19 => "after_mkclean",
        AfterBatchAdd = 20 => "after_batch_add",
        BeforeBatchFlush = 21 => "before_batch_flush",
        AfterFault = 22 => "after_fault",
        AfterPageLock = 23 => "after_page_lock",
        AfterInvalidateEnd = 24 => "after_invalidate_end",
        LockContended = 25 => "lock_contended",
        LockAcquire = 26 => "lock_acquire",
    }
}

impl Hook {
    /// One line for `--list-hooks`: where in the Linux mm path the hook sits.
    pub const fn description(self) -> &'static str {
        match self {
            Hook::AfterPtlAcquire => "the page-table lock (split PTL) of the PTE table was just taken",
            Hook::AfterPteClear => "a PTE was cleared (ptep_get_and_clear / ptep_clear_flush) under the PTL, no flush yet",
            Hook::AfterPteSet => "a new PTE value was installed (set_pte_at, wrprotect, migration/CoW/KSM replace) under the PTL",
            Hook::BeforeFlush => "the primary TLB flush (local invlpg + shootdown IPIs) is about to start",
            Hook::AfterFlush => "the primary TLB flush completed on every CPU it targeted",
            Hook::AfterPtlRelease => "the PTL was just released after PTEs were changed under it; a deferred flush (mmu_gather, pending) may still be queued",
            Hook::BeforeNotifier => "the secondary-MMU invalidation (mmu_notifier invalidate_range / arch_invalidate_secondary_tlbs) is about to run",
            Hook::AfterNotifier => "the secondary-MMU invalidation returned (device invalidation queue drained)",
            Hook::AfterCopy => "page content was copied to the new page (migrate copy, wp_page_copy, KSM compare copy), old PTE still present",
            Hook::BeforeFree => "the old data page is about to be returned to the allocator (free_page / tlb_remove_page)",
            Hook::AfterInvalidateStart => "mmu_notifier_invalidate_range_start returned",
            Hook::BeforeInvalidateEnd => "mmu_notifier_invalidate_range_end is about to run",
            Hook::AfterIncPending => "inc_tlb_flush_pending raised mm->tlb_flush_pending",
            Hook::BeforeDecPending => "dec_tlb_flush_pending is about to lower mm->tlb_flush_pending",
            Hook::AfterPmdClear => "a PMD entry pointing at a PTE table was cleared (free_pgtables / pmd_clear), table not yet freed",
            Hook::BeforeFreeTables => "page-table pages are about to be freed (tlb_remove_table / free_pgtables)",
            Hook::AfterMigrationEntry => "a migration entry replaced the PTE (try_to_migrate_one)",
            Hook::AfterCompare => "KSM compared the two pages (pages_identical) and decided whether to merge",
            Hook::AfterMkclean => "page_mkclean cleaned and write-protected the PTEs, before the writeback copy",
            Hook::AfterBatchAdd => "reclaim queued a batched flush (set_tlb_ubc_flush_pending) instead of flushing",
            Hook::BeforeBatchFlush => "try_to_unmap_flush is about to flush the batched reclaim flushes",
            Hook::AfterFault => "the page-fault handler finished and the access is about to be retried",
            Hook::AfterPageLock => "the page lock (lock_page / folio_lock) of the target page was taken",
            Hook::AfterInvalidateEnd => "mmu_notifier_invalidate_range_end returned (the secondary MMU was told, where the placement does it there)",
            Hook::LockContended => "a lock the operation needs (mmap_lock, VMA lock, PTL, page lock) is held by another thread: it is about to wait",
            Hook::LockAcquire => "a lock (mmap_lock, VMA lock, page-table lock, page lock) is about to be taken: a scheduling point of vmm explore, where its witnesses pause",
        }
    }
}

byte_enum! {
    /// Kind of a location.
    pub enum LocKind {
        /// One 4 KiB page of the test mm, mapped at setup.
        Page = 0 => "page",
        /// A shared kernel word (flag, counter): always mapped, coherent.
        Var = 1 => "var",
        /// A page-sized VA range reserved with nothing mapped.
        Unmapped = 2 => "unmapped",
    }
}

byte_enum! {
    /// Page permission (`mmap`, `mprotect`, a page location's initial mapping).
    pub enum Perm {
        None = 0 => "none",
        Ro = 1 => "ro",
        Rw = 2 => "rw",
    }
}

byte_enum! {
    /// `madvise` advice.
    pub enum Advice {
        DontNeed = 0 => "dontneed",
        Free = 1 => "free",
    }
}

byte_enum! {
    /// How `wait` compares (in [`Instr::arg`]).
    pub enum WaitCmp {
        /// Until the word is non-zero.
        NonZero = 0 => "nonzero",
        /// Until the word equals `imm`.
        Eq = 1 => "eq",
    }
}

byte_enum! {
    /// Thread kinds.
    pub enum ThreadKind {
        Vcpu = 0 => "vcpu",
        Device = 1 => "device",
    }
}

byte_enum! {
    /// Observation kinds.
    pub enum ObsKind {
        Reg = 0 => "reg",
        Loc = 1 => "loc",
    }
}

pub mod state;

// ---------------------------------------------------------------- policy

/// The policy lives in [`crate::policy`]: one table for every key.
pub use crate::policy::{PolicyAbi, POLICY_LEN, PPM};

mod blob;
pub use blob::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for (i, h) in Hook::ALL.iter().enumerate() {
            assert_eq!(Hook::from_name(h.name()), Some(*h));
            assert_eq!(Hook::from_u8(*h as u8), Some(*h));
            assert!(!h.description().is_empty());
            for h2 in &Hook::ALL[i + 1..] {
                assert_ne!(h.name(), h2.name());
            }
        }
        for op in Op::ALL {
            assert_eq!(Op::from_name(op.name()), Some(*op));
        }
        for v in [VALUE_FAULT, VALUE_STALE_WALK, VALUE_TIMEOUT] {
            assert!(v >= RESERVED_MIN);
            assert_eq!(special_value_from_name(special_value_name(v).unwrap()), Some(v));
        }
    }
}
