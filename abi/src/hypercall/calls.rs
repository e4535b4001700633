//! One type per hypercall, with its request (`args`) and reply (`ret`).
//! Word order is declaration order; `data` payloads are described per call.

use super::wire::{Empty, Flag};
use super::{
    FillResult, FlushKind, Metric, Outcome, PageOpKind, Probe, PtOpKind, TableEvent, TlbConfigAction, TlbModelKind,
};

// ---------------------------------------------------------------- platform

crate::wire_struct! {
    /// `ECHO`: four words, answered bit-inverted; `data` comes back reversed.
    pub struct EchoWords { pub words: [u64; 4] }
}
crate::hypercall!(
    /// The mailbox round trip (self-test and benchmark).
    Echo = Echo(EchoWords) -> EchoWords
);

crate::hypercall!(
    /// A guest log line: `data` = text (printed by the VMM with the vCPU index).
    Log = Log(Empty) -> Empty
);

crate::wire_struct! {
    /// `EXCEPTION`: an exception reached the guest's handler.
    pub struct ExceptionReport {
        pub vector: u64,
        pub error_code: u64,
        pub rip: u64,
        /// Meaningful for #PF only (0 otherwise).
        pub cr2: u64,
        pub rsp: u64,
        pub cs: u64,
        /// The guest recovers (an exception-table fixup); false ends the VM.
        pub recovered: Flag,
    }
}
crate::hypercall!(
    /// An exception reached the guest's handler.
    Exception = Exception(ExceptionReport) -> Empty
);

crate::wire_struct! {
    /// `LAST_EXCEPTION`'s reply: the last `EXCEPTION` of this vCPU.
    pub struct LastExceptionReply { pub vector: u64, pub error_code: u64, pub rip: u64, pub cr2: u64 }
}
crate::hypercall!(
    /// What the VMM recorded for this vCPU's last `EXCEPTION`.
    LastException = LastException(Empty) -> LastExceptionReply
);

crate::wire_struct! {
    /// `ASSERT_FAIL`: a guest assertion failed; `data` = "file\0message".
    pub struct AssertReport {
        pub line: u64,
        /// The guest ends the VM after this report.
        pub fatal: Flag,
        /// A deliberate report (the `assert.report` self-test): fails nothing.
        pub expected: Flag,
    }
}
crate::hypercall!(
    /// A guest assertion failed (file, line, message).
    AssertFail = AssertFail(AssertReport) -> Empty
);

crate::wire_struct! {
    /// `LAST_ASSERT`'s reply: the line of this vCPU's last `ASSERT_FAIL`;
    /// `data` = its "file\0message".
    pub struct LastAssertReply { pub line: u64 }
}
crate::hypercall!(
    /// What the VMM recorded for this vCPU's last `ASSERT_FAIL`.
    LastAssert = LastAssert(Empty) -> LastAssertReply
);

// ---------------------------------------------------------------- self-tests, bench, probe

crate::hypercall!(
    /// A self-test starts: `data` = its name.
    TestBegin = TestBegin(Empty) -> Empty
);

crate::wire_struct! {
    /// `TEST_END`: `data` = "name\0reason".
    pub struct TestEndReport { pub outcome: Outcome }
}
crate::hypercall!(
    /// A self-test ends.
    TestEnd = TestEnd(TestEndReport) -> Empty
);

crate::hypercall!(
    /// `selftest.list`: one self-test of the guest's table, `data` = its name.
    TestListed = TestListed(Empty) -> Empty
);

crate::wire_struct! {
    /// `BENCH_RESULT`: a figure measured in the guest, by code running at
    /// CPL0 or (`at_cpl3`) at CPL3 as litmus threads run.
    pub struct BenchFigure { pub metric: Metric, pub median_ps: u64, pub samples: u64, pub at_cpl3: Flag }
}
crate::hypercall!(
    /// A benchmark figure measured in the guest.
    BenchResult = BenchResult(BenchFigure) -> Empty
);

crate::wire_struct! {
    /// `PROBE_RESULT`: tries that saw the stale page, of `tries`.
    pub struct ProbeReport { pub probe: Probe, pub stale: u64, pub tries: u64 }
}
crate::hypercall!(
    /// A `vmm probe` result.
    ProbeResult = ProbeResult(ProbeReport) -> Empty
);

// ---------------------------------------------------------------- page tables and the modelled TLB

crate::wire_struct! {
    /// `PT_OP`: a page-table op done by the VMM with a host atomic (Xen PV
    /// `mmu_update` style) on the entry at GPA `entry` (8-byte aligned,
    /// inside the page-table region).
    pub struct PtOpRequest { pub kind: PtOpKind, pub entry: u64, pub a: u64, pub b: u64 }
}
crate::wire_struct! {
    /// `PT_OP`'s reply.
    pub struct PtOpReply {
        /// The entry's old value.
        pub old: u64,
        /// The op changed the entry.
        pub changed: Flag,
    }
}
crate::hypercall!(
    /// A page-table op.
    PtOp = PtOp(PtOpRequest) -> PtOpReply
);

crate::wire_struct! {
    /// `PT_TABLE`: the guest allocated or freed the page-table page at GPA
    /// `table` (of `level`); the VMM zeroes a new one and the IOMMU tracks
    /// live tables.
    pub struct PtTableRequest { pub event: TableEvent, pub table: u64, pub level: u64 }
}
crate::hypercall!(
    /// A page-table page was allocated or freed.
    PtTable = PtTable(PtTableRequest) -> Empty
);

crate::wire_struct! {
    /// `PT_BATCH`: `count` [`super::BatchEntry`]s in `data`, done in order,
    /// each as its own call would (Linux's lazy MMU mode as Xen PV batches
    /// `mmu_update`s in a multicall: updates nobody else may observe before
    /// the batch ends, sent in one exit).
    pub struct PtBatchRequest { pub count: u64 }
}
crate::wire_struct! {
    /// `PT_BATCH`'s reply: the result of the last entry (a `PT_OP`'s old
    /// value, `PAGE_OP` compare's `same` as 0/1, 0 for a `PT_TABLE`).
    pub struct PtBatchReply { pub last: u64 }
}
crate::hypercall!(
    /// Several page-table, page-table page and page operations.
    PtBatch = PtBatch(PtBatchRequest) -> PtBatchReply
);

crate::wire_struct! {
    /// `PAGE_OP`: zero, copy (`src` → `dst`) or compare whole 4 KiB data
    /// pages (`FREE_START` up) on host memory (Xen PV's `MMUEXT_CLEAR_PAGE`
    /// / `MMUEXT_COPY_PAGE`): on hosts that emulate every guest instruction
    /// a page loop costs ~1 ms in the guest.
    pub struct PageOpRequest { pub kind: PageOpKind, pub dst: u64, pub src: u64 }
}
crate::wire_struct! {
    /// `PAGE_OP`'s reply: for `Compare`, the pages are identical.
    pub struct PageOpReply { pub same: Flag }
}
crate::hypercall!(
    /// A page operation done by the VMM.
    PageOp = PageOp(PageOpRequest) -> PageOpReply
);

crate::wire_struct! {
    /// `FILL`: a #PF on a user address under the lazy/evict TLB models:
    /// walk the current mm's page tables as the hardware would (A, and D on
    /// writes) and fill this vCPU's modelled TLB.
    pub struct FillRequest { pub va: u64, pub error_code: u64 }
}
crate::wire_struct! {
    /// `FILL`'s reply: what happened, and the leaf PTE or the faulting entry.
    pub struct FillReply { pub result: FillResult, pub entry: u64 }
}
crate::hypercall!(
    /// A modelled-TLB miss.
    Fill = Fill(FillRequest) -> FillReply
);

crate::wire_struct! {
    /// `FLUSH`: drop entries of this vCPU's modelled TLB (`va`, `len` in
    /// bytes for a range). `last_level`: no page table was freed (Linux's
    /// `last_level` / `!tlb->freed_tables`), so an arm64 walk cache may keep
    /// its entries. The guest then executes the real `invlpg`/CR3 reload.
    pub struct FlushRequest { pub kind: FlushKind, pub va: u64, pub len: u64, pub last_level: Flag }
}

impl FlushRequest {
    /// A flush of `kind`.
    pub const fn local(kind: FlushKind, va: u64, len: u64, last_level: bool) -> Self {
        FlushRequest { kind, va, len, last_level: Flag::new(last_level) }
    }
}
crate::hypercall!(
    /// A local TLB flush.
    Flush = Flush(FlushRequest) -> Empty
);

crate::wire_struct! {
    /// `FLUSH_THEN`: `FLUSH`, then follow-ups that save a CPL3 caller an
    /// exit each (on `kvm_pvm` an exit from CPL3 costs ~36 µs), done by the
    /// VMM in this order: `ack`, if not 0, is the GPA of a word set to 0 and
    /// woken (`WAKE`) — a shootdown IPI handler's `csd_unlock`; `ipi_cpus`,
    /// a mask of vCPUs 0..63, get interrupt `ipi_vector` (32..=255) —
    /// `flush_tlb_multi`'s IPIs, their CSDs posted before; `repark`: the
    /// IPI interrupted this vCPU's park in `WAIT` and this is its handler's
    /// last call: the vCPU parks again as it was unless it was woken
    /// meanwhile (no exit to park again after the handler returns). A
    /// separate op so that `FLUSH`, which code at CPL0 makes where every
    /// instruction is emulated, stays four words.
    pub struct FlushThenRequest {
        pub kind: FlushKind,
        pub va: u64,
        pub len: u64,
        pub last_level: Flag,
        pub ack: u64,
        pub ipi_vector: u64,
        pub ipi_cpus: u64,
        pub repark: Flag,
    }
}

impl FlushThenRequest {
    /// `flush` with no follow-up yet.
    pub const fn of(flush: FlushRequest) -> Self {
        let FlushRequest { kind, va, len, last_level } = flush;
        FlushThenRequest { kind, va, len, last_level, ack: 0, ipi_vector: 0, ipi_cpus: 0, repark: Flag::NO }
    }
}
crate::hypercall!(
    /// A local TLB flush and its follow-ups.
    FlushThen = FlushThen(FlushThenRequest) -> Empty
);

crate::wire_struct! {
    /// `SWITCH_MM`: switch this vCPU to the mm whose PGD is at `pgd` (a GPA
    /// in the page-table region).
    pub struct SwitchMmRequest { pub pgd: u64 }
}
crate::wire_struct! {
    /// `SWITCH_MM`'s reply: the value the guest must load into CR3 (its
    /// shadow root, or the PGD itself in native mode).
    pub struct SwitchMmReply { pub cr3: u64 }
}
crate::hypercall!(
    /// Switch this vCPU's mm.
    SwitchMm = SwitchMm(SwitchMmRequest) -> SwitchMmReply
);

crate::wire_struct! {
    /// `TLB_CONFIG`: query, or set this vCPU's eviction probability to
    /// `evict_ppm` parts per million, or its walk-cache model to
    /// `walk_cache` (`abi::policy::WalkCache` wire number).
    pub struct TlbConfigRequest { pub action: TlbConfigAction, pub evict_ppm: u64, pub walk_cache: u64 }
}
crate::wire_struct! {
    /// `TLB_CONFIG`'s reply.
    pub struct TlbConfigReply {
        pub model: TlbModelKind,
        pub evict_ppm: u64,
        /// Fills served for this vCPU so far.
        pub fills: u64,
        /// Entries evicted so far.
        pub evictions: u64,
    }
}
crate::hypercall!(
    /// The vCPU TLB model.
    TlbConfig = TlbConfig(TlbConfigRequest) -> TlbConfigReply
);

crate::hypercall!(
    /// The next direct store to the page-table region from this vCPU is
    /// deliberate (the `tlb.stray-store.reported` self-test): report it
    /// without ending the VM; `LAST_STRAY_STORE` returns it.
    ExpectStrayStore = ExpectStrayStore(Empty) -> Empty
);

crate::wire_struct! {
    /// `LAST_STRAY_STORE`'s reply.
    pub struct StrayStoreReply { pub gpa: u64, pub value: u64, pub rip: u64, pub recorded: Flag }
}
crate::hypercall!(
    /// The last expected stray page-table store of this vCPU.
    LastStrayStore = LastStrayStore(Empty) -> StrayStoreReply
);

// ---------------------------------------------------------------- the device

crate::wire_struct! {
    /// `DMA_SUBMIT`: run the device program at GPA `program` (`crate::dma`)
    /// on the DMA engine's worker for device `slot` (0..`dma::MAX_SLOTS`);
    /// returns at once, the engine marks the header DONE.
    pub struct DmaSubmitRequest { pub program: u64, pub slot: u64 }
}
crate::wire_struct! {
    /// `DMA_SUBMIT`'s reply: false if the slot already had a program queued
    /// (the header is then marked `BUSY`).
    pub struct DmaSubmitReply { pub accepted: Flag }
}
crate::hypercall!(
    /// Hand a device program to the DMA engine.
    DmaSubmit = DmaSubmit(DmaSubmitRequest) -> DmaSubmitReply
);

crate::wire_struct! {
    /// `IOMMU_STATS`'s reply.
    pub struct IommuStatsReply { pub iotlb_entries: u64, pub pwc_entries: u64, pub stale_hits: u64, pub stale_walks: u64 }
}
crate::hypercall!(
    /// IOMMU counters.
    IommuStats = IommuStats(Empty) -> IommuStatsReply
);

// ---------------------------------------------------------------- litmus and tracing

crate::wire_struct! {
    /// `LITMUS_RESULT`: one iteration finished; `data` = `values` u64 LE.
    pub struct LitmusIteration {
        pub iteration: u64,
        /// Number of observed values in `data`.
        pub values: u64,
        /// Data / page-table pages not returned (signed deltas against the
        /// start of the iteration).
        pub leaked_pages: i64,
        pub leaked_tables: i64,
        /// Iteration time in ns (guest TSC).
        pub guest_ns: u64,
    }
}
crate::hypercall!(
    /// One litmus iteration's result.
    LitmusResult = LitmusResult(LitmusIteration) -> Empty
);

crate::wire_struct! {
    /// `EXPLORE_NEXT`'s reply: whether the VMM wrote another schedule's
    /// plan into the explore area (`abi::explore`).
    pub struct ExploreNextReply { pub more: Flag }
}
crate::hypercall!(
    /// `vmm explore`: the previous schedule (if any) is over — its log is in
    /// the explore area, its values came with `LITMUS_RESULT`; the VMM writes
    /// the next schedule's plan, or says the search is over.
    ExploreNext = ExploreNext(Empty) -> ExploreNextReply
);

crate::wire_struct! {
    /// `TRACE_DRAIN`'s reply: records consumed.
    pub struct TraceDrainReply { pub consumed: u64 }
}
crate::hypercall!(
    /// This vCPU's trace ring is full (`crate::trace`): the VMM consumes every ring.
    TraceDrain = TraceDrain(Empty) -> TraceDrainReply
);

// ---------------------------------------------------------------- scheduling

crate::wire_struct! {
    /// `WAIT`: park this vCPU while the u64 at GPA `gpa` (8-byte aligned,
    /// guest RAM) still holds `expected` — a futex wait. The VMM checks the
    /// word under the lock `WAKE` takes, so no wake-up is lost between the
    /// guest's last look and the park. A parked vCPU sleeps inside KVM as
    /// in `hlt`: an interrupt (an IPI) also wakes it, and callers must
    /// re-check their condition after every return (spurious wake-ups are
    /// allowed, as with `futex(FUTEX_WAIT)`). How long to wait is the
    /// caller's business (the litmus watchdog ends a stuck iteration).
    /// A non-zero `wake_first` (and `wake_also`) is a word whose waiters
    /// are woken before (a `WAKE` of it; one exit for a signal followed by
    /// a wait, or for a thread's last signal and its worker's park).
    pub struct WaitRequest { pub gpa: u64, pub expected: u64, pub wake_first: u64, pub wake_also: u64 }
}
crate::wire_struct! {
    /// `WAIT`'s reply: false if the word no longer held `expected`.
    pub struct WaitReply { pub parked: Flag }
}
crate::hypercall!(
    /// Park this vCPU until `WAKE` on the word (or an interrupt).
    Wait = Wait(WaitRequest) -> WaitReply
);

/// Words one `WAKE` names (several: starting the threads of an iteration
/// wakes each one's worker with one exit, not one each).
pub const WAKE_WORDS: usize = 4;

crate::wire_struct! {
    /// `WAKE`: wake every vCPU parked in `WAIT` on any of the GPAs `gpas`
    /// (0 = no word). With `store`, the VMM first stores `value` into each
    /// word (after the queued page-table updates the call carries, see
    /// `op_word`), so a waiter cannot see the value before those updates
    /// are done — like `FUTEX_WAKE_OP`'s store to a second word. Device
    /// `SIGNAL`/`KADD` ops wake the word they store to as well.
    pub struct WakeRequest { pub gpas: [u64; WAKE_WORDS], pub store: Flag, pub value: u64 }
}

impl WakeRequest {
    /// A `WAKE` of one word.
    pub const fn one(gpa: u64) -> Self {
        let mut gpas = [0; WAKE_WORDS];
        gpas[0] = gpa;
        WakeRequest { gpas, store: Flag::NO, value: 0 }
    }
}
crate::wire_struct! {
    /// `WAKE`'s reply: vCPUs woken.
    pub struct WakeReply { pub woken: u64 }
}
crate::hypercall!(
    /// Wake the vCPUs parked on some words.
    Wake = Wake(WakeRequest) -> WakeReply
);

crate::wire_struct! {
    /// `IPI`: interrupt `vector` (fixed delivery, 32..=255) to every vCPU
    /// whose bit is set in `targets` (bit i of word i / 64 = vCPU i) — the
    /// interprocessor interrupt of code running at CPL3, which cannot write
    /// the x2APIC ICR. One exit for all targets.
    pub struct IpiRequest { pub targets: [u64; 4], pub vector: u64 }
}
crate::wire_struct! {
    /// `IPI`'s reply: interrupts sent.
    pub struct IpiReply { pub sent: u64 }
}
crate::hypercall!(
    /// Send an IPI to a set of vCPUs.
    Ipi = Ipi(IpiRequest) -> IpiReply
);
