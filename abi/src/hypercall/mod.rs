//! Hypercalls: the guest fills its per-vCPU [`Mailbox`] (at
//! [`crate::layout::mailbox`]`(cpu)`), then does one `out` to [`HC_PORT`].
//! The VMM knows which vCPU exited, reads that vCPU's mailbox, acts, writes
//! `status`/`ret`/`data` back and resumes. One exit per call, like KVM
//! selftests' `ucall`.
//!
//! Every operation is a type implementing [`Hypercall`]: its [`Op`], a
//! typed request (the `args` words) and a typed reply (the `ret` words),
//! declared once in [`calls`] and used by the guest and the VMM alike.
//! Sub-operations are enums ([`PtOpKind`], [`FlushKind`], …): a word that is
//! not one of their values does not decode, and the VMM reports the call as
//! a bad hypercall. Free-form payloads (names, messages, observed values) go
//! in `data`.
//!
//! # Adding a hypercall
//!
//! 1. Here: a new [`Op`] value, and in [`calls`] its request and reply
//!    structs (`wire_struct!`) and its `hypercall!` line.
//! 2. In the VMM: serve it in one service (`vmm/src/services/`) and list it
//!    in that service's `ops()`. Nothing in `vstate/` changes.
//! 3. In the guest: `hypercall::call::<calls::NewOp>(request)`.

/// Port for hypercalls (any value written; the mailbox carries the request).
pub const HC_PORT: u16 = 0x0510;
/// Port whose 32-bit write ends the VM; the value is the exit status.
pub const EXIT_PORT: u16 = 0x0511;
/// A port with no handler behind it in the VMM beyond "resume": the bare
/// port-I/O exit benchmarks compare hypercalls against.
pub const NOP_PORT: u16 = 0x0512;
/// A spinning guest gives its host thread's CPU away (`sched_yield` in the
/// vCPU thread): litmus threads waiting on a flag use it so that, with more
/// vCPUs than host cores, the thread they wait for gets to run.
pub const YIELD_PORT: u16 = 0x0513;
/// Hypercalls made at CPL3: the same protocol through the vCPU's user
/// mailbox ([`crate::layout::user_mailbox`]). The guest's TSS I/O bitmap
/// opens this port to CPL3, not [`HC_PORT`].
pub const HC_USER_PORT: u16 = 0x0514;
/// A write asks the VMM to refill this vCPU's zap list ([`crate::zap`])
/// from the slots that did not fit (CPL0 only). Past
/// [`EXPLORE_PARK_PORT`]'s four bytes.
pub const ZAP_PORT: u16 = 0x0519;
/// `vmm explore`: a 32-bit write of thread index t parks this vCPU until the
/// explore area's turn word names t, for at most about a millisecond (the
/// caller loops). A port write, not a hypercall (which runs with interrupts
/// off), so the vCPU goes back into the guest with interrupts enabled and a
/// shootdown IPI sent meanwhile reaches it.
pub const EXPLORE_PARK_PORT: u16 = 0x0515;
const _: () = assert!(ZAP_PORT >= EXPLORE_PARK_PORT + 4 && EXPLORE_PARK_PORT > HC_USER_PORT);
/// 16550 UART (COM1).
pub const SERIAL_PORT: u16 = 0x03f8;

/// The mailbox's `op` word: the [`Op`] in bits 0..32, and in bits 32..48
/// how many [`BatchEntry`]s the call carries in the last
/// `n * BatchEntry::LEN` bytes of the data area (after the call's own
/// `len` bytes) — the guest's lazy MMU queue, sent with its next call
/// instead of with an exit of its own. The VMM does them first, as a
/// `PT_BATCH`, then the op.
pub const OP_MASK: u64 = 0xffff_ffff;
const CARRIED_SHIFT: u32 = 32;

/// The `op` word of a call of `op` carrying `carried` batch entries.
pub const fn op_word(op: Op, carried: usize) -> u64 {
    op as u64 | (carried as u64) << CARRIED_SHIFT
}

/// The batch entries an `op` word says the call carries.
pub const fn carried_entries(op_word: u64) -> usize {
    ((op_word >> CARRIED_SHIFT) & 0xffff) as usize
}

/// Where in the data area `n` carried entries start.
pub const fn carried_offset(n: usize) -> usize {
    DATA_LEN.saturating_sub(n * BatchEntry::LEN)
}

/// Size of the free-form data area of a mailbox.
pub const DATA_LEN: usize = 4096 - 15 * 8;

/// Per-vCPU mailbox page. Field offsets are part of the wire format.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Mailbox {
    /// An [`Op`] value.
    pub op: u64,
    pub args: [u64; 8],
    /// Filled by the VMM.
    pub ret: [u64; 4],
    /// `status::*`, filled by the VMM.
    pub status: u64,
    /// Bytes of `data` used (request on entry, reply on return).
    pub len: u64,
    pub data: [u8; DATA_LEN],
}

const _: () = assert!(core::mem::size_of::<Mailbox>() == 4096);

pub const OFF_OP: u64 = core::mem::offset_of!(Mailbox, op) as u64;
pub const OFF_ARGS: u64 = core::mem::offset_of!(Mailbox, args) as u64;
pub const OFF_RET: u64 = core::mem::offset_of!(Mailbox, ret) as u64;
pub const OFF_STATUS: u64 = core::mem::offset_of!(Mailbox, status) as u64;
pub const OFF_LEN: u64 = core::mem::offset_of!(Mailbox, len) as u64;
pub const OFF_DATA: u64 = core::mem::offset_of!(Mailbox, data) as u64;

pub mod calls;
#[macro_use]
pub mod wire;

pub use wire::{DecodeError, Empty, Flag, Wire, WireField};

crate::wire_enum! {
    /// Hypercall operations (`Mailbox::op`). Each has a type in [`calls`].
    pub enum Op {
        Echo = 1,
        TestBegin = 2,
        TestEnd = 3,
        AssertFail = 4,
        Exception = 5,
        LastException = 6,
        Log = 7,
        BenchResult = 8,
        PtOp = 9,
        Fill = 10,
        Flush = 11,
        SwitchMm = 12,
        TlbConfig = 13,
        PtTable = 14,
        ExpectStrayStore = 15,
        ProbeResult = 16,
        DmaSubmit = 17,
        IommuStats = 18,
        LitmusResult = 19,
        ExploreNext = 20,
        // 21..=22 reserved for the litmus runner; 25..=27 for tracing.
        TraceDrain = 24,
        PageOp = 28,
        LastAssert = 29,
        LastStrayStore = 30,
        TestListed = 31,
        Wait = 40,
        Wake = 41,
        Ipi = 42,
        PtBatch = 43,
        FlushThen = 44,
    }
}

impl Op {
    /// The name used in messages (`PT_OP`).
    pub const fn name(self) -> &'static str {
        match self {
            Op::Echo => "ECHO",
            Op::TestBegin => "TEST_BEGIN",
            Op::TestEnd => "TEST_END",
            Op::AssertFail => "ASSERT_FAIL",
            Op::Exception => "EXCEPTION",
            Op::LastException => "LAST_EXCEPTION",
            Op::Log => "LOG",
            Op::BenchResult => "BENCH_RESULT",
            Op::PtOp => "PT_OP",
            Op::Fill => "FILL",
            Op::Flush => "FLUSH",
            Op::FlushThen => "FLUSH_THEN",
            Op::SwitchMm => "SWITCH_MM",
            Op::TlbConfig => "TLB_CONFIG",
            Op::PtTable => "PT_TABLE",
            Op::ExpectStrayStore => "EXPECT_STRAY_STORE",
            Op::ProbeResult => "PROBE_RESULT",
            Op::DmaSubmit => "DMA_SUBMIT",
            Op::IommuStats => "IOMMU_STATS",
            Op::LitmusResult => "LITMUS_RESULT",
            Op::ExploreNext => "EXPLORE_NEXT",
            Op::TraceDrain => "TRACE_DRAIN",
            Op::PageOp => "PAGE_OP",
            Op::LastAssert => "LAST_ASSERT",
            Op::LastStrayStore => "LAST_STRAY_STORE",
            Op::TestListed => "TEST_LISTED",
            Op::Wait => "WAIT",
            Op::Wake => "WAKE",
            Op::Ipi => "IPI",
            Op::PtBatch => "PT_BATCH",
        }
    }
}

/// One hypercall: its operation and the types of its request and reply.
pub trait Hypercall {
    const OP: Op;
    /// `Mailbox::args`.
    type Request: Wire;
    /// `Mailbox::ret`.
    type Reply: Wire;
}

/// Declares the [`Hypercall`] type of an operation and checks at compile
/// time that its request fits `args` and its reply `ret`.
#[macro_export]
macro_rules! hypercall {
    ($(#[$m:meta])* $name:ident = $op:ident ($req:ty) -> $rep:ty) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug)]
        pub enum $name {}
        impl $crate::hypercall::Hypercall for $name {
            const OP: $crate::hypercall::Op = $crate::hypercall::Op::$op;
            type Request = $req;
            type Reply = $rep;
        }
        const _: () = assert!(<$req as $crate::hypercall::Wire>::WORDS <= 8);
        const _: () = assert!(<$rep as $crate::hypercall::Wire>::WORDS <= 4);
    };
}

/// `Mailbox::status` values.
pub mod status {
    pub const OK: u64 = 0;
    pub const UNKNOWN_OP: u64 = 1;
    pub const BAD_ARGUMENT: u64 = 2;
}

crate::wire_enum! {
    /// `PT_OP` kinds: what the VMM does to the entry with a host atomic.
    pub enum PtOpKind {
        /// entry = a
        Set = 0,
        /// entry = a, old value returned
        Xchg = 1,
        /// if entry == a { entry = b }
        Cmpxchg = 2,
        /// entry = 0 (`ptep_get_and_clear`)
        Clear = 3,
        /// entry &= !a (e.g. `ptep_test_and_clear_young`, write-protect)
        ClearBits = 4,
        /// entry |= a
        SetBits = 5,
    }
}

/// One operation of a `PT_BATCH` (lazy MMU mode, `calls::PtBatch`): a
/// page-table op, a page-table page event, a page op or a local TLB flush,
/// four words each in the call's data (`tag`, then the operands). Tags:
/// class in bits 8..16 (0 `PT_OP`, 1 `PT_TABLE`, 2 `PAGE_OP`, 3 `FLUSH`),
/// the sub-kind in bits 0..8 (a flush's `last_level` in bit 16).
///
/// A flush in the batch is Xen PV's: `xen_flush_tlb`/`xen_flush_tlb_one_user`
/// (arch/x86/xen/mmu_pv.c) queue `MMUEXT_TLB_FLUSH_LOCAL`/`MMUEXT_INVLPG_LOCAL`
/// in the multicall batch and issue it with the lazy MMU mode's updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchEntry {
    PtOp { kind: PtOpKind, entry: u64, a: u64, b: u64 },
    PtTable { event: TableEvent, table: u64, level: u64 },
    PageOp { kind: PageOpKind, dst: u64, src: u64 },
    Flush { kind: FlushKind, va: u64, len: u64, last_level: bool },
}

impl BatchEntry {
    /// Bytes of one entry in the data area.
    pub const LEN: usize = 32;
    /// Entries one call carries.
    pub const MAX: usize = DATA_LEN / Self::LEN;

    pub fn encode(&self) -> [u64; 4] {
        match *self {
            BatchEntry::PtOp { kind, entry, a, b } => [kind as u64, entry, a, b],
            BatchEntry::PtTable { event, table, level } => [1 << 8 | event as u64, table, level, 0],
            BatchEntry::PageOp { kind, dst, src } => [2 << 8 | kind as u64, dst, src, 0],
            BatchEntry::Flush { kind, va, len, last_level } => {
                [(last_level as u64) << 16 | 3 << 8 | kind as u64, va, len, 0]
            }
        }
    }

    pub fn decode(w: [u64; 4]) -> Result<Self, DecodeError> {
        let bad = |value| DecodeError { what: "BatchEntry", field: "tag", value };
        let (sub, class, flags) = (w[0] & 0xff, (w[0] >> 8) & 0xff, w[0] >> 16);
        match (class, flags) {
            (0, 0) => {
                Ok(BatchEntry::PtOp { kind: PtOpKind::from_u64(sub).ok_or(bad(w[0]))?, entry: w[1], a: w[2], b: w[3] })
            }
            (1, 0) => {
                Ok(BatchEntry::PtTable { event: TableEvent::from_u64(sub).ok_or(bad(w[0]))?, table: w[1], level: w[2] })
            }
            (2, 0) => {
                Ok(BatchEntry::PageOp { kind: PageOpKind::from_u64(sub).ok_or(bad(w[0]))?, dst: w[1], src: w[2] })
            }
            (3, 0 | 1) => Ok(BatchEntry::Flush {
                kind: FlushKind::from_u64(sub).ok_or(bad(w[0]))?,
                va: w[1],
                len: w[2],
                last_level: flags == 1,
            }),
            _ => Err(bad(w[0])),
        }
    }
}

/// The [`PtOpKind`]s under their Linux-ish short names (`ptop::SET`).
pub mod ptop {
    use super::PtOpKind;
    pub const SET: PtOpKind = PtOpKind::Set;
    pub const XCHG: PtOpKind = PtOpKind::Xchg;
    pub const CMPXCHG: PtOpKind = PtOpKind::Cmpxchg;
    pub const CLEAR: PtOpKind = PtOpKind::Clear;
    pub const CLEAR_BITS: PtOpKind = PtOpKind::ClearBits;
    pub const SET_BITS: PtOpKind = PtOpKind::SetBits;
}

crate::wire_enum! {
    /// `FILL` results.
    pub enum FillResult {
        /// The modelled TLB now holds a translation: retry the access.
        Filled = 0,
        /// The page tables do not allow the access: a real page fault.
        Fault = 1,
        /// Native model: there is no modelled TLB to fill.
        Native = 2,
    }
}

crate::wire_enum! {
    /// `FLUSH` kinds.
    pub enum FlushKind { Page = 0, Range = 1, All = 2 }
}

crate::wire_enum! {
    /// `TLB_CONFIG` actions.
    pub enum TlbConfigAction {
        /// Only read the state.
        Query = 0,
        /// Set this vCPU's eviction probability (lazy/evict models only).
        SetEvictPpm = 1,
        /// Set this vCPU's walk-cache model (`walk-cache=`).
        SetWalkCache = 2,
    }
}

crate::wire_enum! {
    /// The vCPU TLB model, as `TLB_CONFIG` reports it.
    pub enum TlbModelKind { Lazy = 0, Evict = 1, Native = 2 }
}

crate::wire_enum! {
    /// `PT_TABLE` events.
    pub enum TableEvent { Freed = 0, Allocated = 1 }
}

crate::wire_enum! {
    /// `PAGE_OP` kinds: `clear_page`, `copy_user_highpage`,
    /// `pages_identical`, and `Init` — zero `dst` and make its first word
    /// `src` (the harness's initial content of a litmus location's page).
    pub enum PageOpKind { Zero = 0, Copy = 1, Compare = 2, Init = 3 }
}

crate::wire_enum! {
    /// Self-test outcomes, kvm-unit-tests `report.c` vocabulary.
    pub enum Outcome { Pass = 0, Fail = 1, Skip = 2, Xfail = 3 }
}

crate::wire_enum! {
    /// Native-TLB fidelity probes (`vmm probe`).
    pub enum Probe {
        /// Same vCPU reads after a guest PTE store, without `invlpg`.
        SameVcpu = 0,
        /// Another vCPU reads after the PTE store, without any flush.
        RemoteVcpu = 1,
        /// Same vCPU reads after a VMM-side PTE write (PT_OP), without `invlpg`.
        VmmWrite = 2,
    }
}

impl Probe {
    pub const fn description(self) -> &'static str {
        match self {
            Probe::SameVcpu => "same vCPU, guest PTE store, no invlpg",
            Probe::RemoteVcpu => "other vCPU, guest PTE store, no flush",
            Probe::VmmWrite => "same vCPU, VMM-side PTE write, no invlpg",
        }
    }
}

crate::wire_enum! {
    /// Guest-measured benchmark metrics (`BENCH_RESULT`).
    pub enum Metric {
        /// Round trip of a hypercall with an empty payload (ECHO).
        HypercallEcho = 0,
        /// A bare port-I/O exit to userspace that the VMM ignores (NOP_PORT).
        PortIoExit = 1,
        /// One page-table op (PT_OP SET) including its exit.
        PtOp = 2,
        /// Local flush of one page (FLUSH hypercall + invlpg).
        FlushPage = 3,
        /// Local flush of one page then a read that misses and is filled
        /// (#PF -> FILL -> retry); minus FlushPage this is the fill cost.
        FlushAndFill = 4,
        /// `flush_tlb_multi` of one page with every other vCPU running the mm
        /// (IPI, remote flush, acknowledgement); `samples` carries the vCPU
        /// count in its top 16 bits.
        Shootdown = 5,
    }
}

impl Metric {
    pub const fn description(self) -> &'static str {
        match self {
            Metric::HypercallEcho => "hypercall round trip (ECHO, empty payload)",
            Metric::PortIoExit => "bare port-I/O exit (NOP port)",
            Metric::PtOp => "page-table op (PT_OP set)",
            Metric::FlushPage => "local flush of one page (FLUSH + invlpg)",
            Metric::FlushAndFill => "local flush + read that refills (#PF, FILL)",
            Metric::Shootdown => "TLB shootdown of one page (flush_tlb_mm_range)",
        }
    }
}

/// Exception vectors the guest reports by name.
pub fn vector_name(v: u64) -> &'static str {
    match v {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        _ => "vector",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_entries_round_trip_and_unknown_tags_do_not_decode() {
        let all = [
            BatchEntry::PtOp { kind: PtOpKind::Cmpxchg, entry: 0x300_0008, a: 1, b: 2 },
            BatchEntry::PtTable { event: TableEvent::Freed, table: 0x300_1000, level: 3 },
            BatchEntry::PageOp { kind: PageOpKind::Copy, dst: 0x400_0000, src: 0x400_1000 },
            BatchEntry::Flush { kind: FlushKind::Range, va: 0x4000_0000, len: 0x2000, last_level: true },
            BatchEntry::Flush { kind: FlushKind::All, va: 0, len: 0, last_level: false },
        ];
        for e in all {
            assert_eq!(BatchEntry::decode(e.encode()), Ok(e));
        }
        for tag in [4 << 8, 7, 1 << 8 | 9, 2 << 8 | 9, 3 << 8 | 9, 2 << 16 | 3 << 8, 1 << 16] {
            assert!(BatchEntry::decode([tag, 0, 0, 0]).is_err(), "tag {tag:#x}");
        }
    }
}
