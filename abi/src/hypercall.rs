//! Hypercalls: the guest fills its per-vCPU [`Mailbox`] (at
//! [`crate::layout::mailbox`]`(cpu)`), then does one `out` to [`HC_PORT`].
//! The VMM knows which vCPU exited, reads that vCPU's mailbox, acts, writes
//! `status`/`ret`/`data` back and resumes. One exit per call, like KVM
//! selftests' `ucall`.

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
/// `vmm explore`: a 32-bit write of thread index t parks this vCPU until the
/// explore area's turn word names t, for at most about a millisecond (the
/// caller loops). A port write, not a hypercall, so the vCPU goes back into
/// the guest with interrupts enabled and a shootdown IPI reaches it.
pub const EXPLORE_PARK_PORT: u16 = 0x0515;
/// 16550 UART (COM1).
pub const SERIAL_PORT: u16 = 0x03f8;

/// Size of the free-form data area of a mailbox.
pub const DATA_LEN: usize = 4096 - 15 * 8;

/// Per-vCPU mailbox page. Field offsets are part of the wire format.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Mailbox {
    /// One of the `op::*` values.
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

/// Hypercall operations.
pub mod op {
    /// `ret[i] = !args[i]` for i < 4; `data[..len]` returned reversed.
    pub const ECHO: u64 = 1;
    /// A self-test starts: `data` = its name.
    pub const TEST_BEGIN: u64 = 2;
    /// A self-test ends: `args[0]` = `report::*`, `data` = "name\0reason".
    pub const TEST_END: u64 = 3;
    /// A guest assertion failed: `args[0]` = line, `args[1]` = flags
    /// (bit 0: fatal, the guest then exits; bit 1: expected, a deliberate
    /// report by the `assert.report` self-test); `data` = "file\0message".
    pub const ASSERT_FAIL: u64 = 4;
    /// An exception reached the guest's handler: `args` = vector, error
    /// code, RIP, CR2, RSP, CS, 1 if the guest recovers (expected) else 0.
    pub const EXCEPTION: u64 = 5;
    /// What the VMM last recorded for this vCPU: `ret` = vector, error
    /// code, CR2, RIP of the last EXCEPTION; `args[0]` = 1 asks instead for
    /// the last ASSERT_FAIL: `ret[0]` = line, `data` = "file\0message";
    /// `args[0]` = 2 for the last expected stray page-table store:
    /// `ret` = GPA, value, RIP, 1 if one was recorded.
    pub const LAST_REPORT: u64 = 6;
    /// Guest log line: `data` = text (printed by the VMM with the vCPU index).
    pub const LOG: u64 = 7;
    /// A benchmark figure measured in the guest: `args[0]` = `bench::*`
    /// metric, `args[1]` = median picoseconds per operation, `args[2]` = samples.
    pub const BENCH_RESULT: u64 = 8;
    /// A page-table op done by the VMM with a host atomic (Xen PV
    /// `mmu_update` style): `args[0]` = `ptop::*`, `args[1]` = GPA of the
    /// entry (8-byte aligned, inside the page-table region), `args[2]`,
    /// `args[3]` = operands; `ret[0]` = the entry's old value, `ret[1]` = 1
    /// if the op changed the entry.
    pub const PT_OP: u64 = 9;
    /// A #PF on a user address under the lazy/evict TLB models: walk the
    /// current mm's page tables as the hardware would (A, and D on writes)
    /// and fill this vCPU's modelled TLB. `args[0]` = VA, `args[1]` = #PF
    /// error code. `ret[0]` = `fill::*`, `ret[1]` = the leaf PTE or the
    /// faulting entry.
    pub const FILL: u64 = 10;
    /// Drop entries of this vCPU's modelled TLB: `args[0]` = `flush::*`,
    /// `args[1]` = VA, `args[2]` = length in bytes (range). The guest then
    /// executes the real `invlpg`/CR3 reload.
    pub const FLUSH: u64 = 11;
    /// Switch this vCPU to the mm whose PGD is at `args[0]` (a GPA in the
    /// page-table region). `ret[0]` = the value the guest must load into
    /// CR3 (its shadow root, or the PGD itself in native mode).
    pub const SWITCH_MM: u64 = 12;
    /// TLB model: `args[0]` = 0 query, 1 set the eviction probability to
    /// `args[1]` parts per million (lazy/evict models only).
    /// `ret[0]` = `tlb_model::*`, `ret[1]` = eviction ppm, `ret[2]` = fills
    /// served for this vCPU so far, `ret[3]` = entries evicted so far.
    pub const TLB_CONFIG: u64 = 13;
    /// The guest allocated (`args[0]` = 1) or freed (0) the page-table page
    /// at GPA `args[1]` (level `args[2]`); the VMM and the IOMMU track live tables.
    pub const PT_TABLE: u64 = 14;
    /// The next direct store to the page-table region from this vCPU is
    /// deliberate (the `tlb.stray-store.reported` self-test): report it
    /// without ending the VM. `LAST_REPORT` with `args[0]` = 2 returns it.
    pub const EXPECT_STRAY_STORE: u64 = 15;
    /// A `vmm probe` result: `args[0]` = `probe::*`, `args[1]` = tries that
    /// saw the stale page, `args[2]` = tries.
    pub const PROBE_RESULT: u64 = 16;
    /// Run the device program at GPA `args[0]` (`crate::dma`) on the DMA
    /// engine; returns at once, the engine marks the header DONE.
    pub const DMA_SUBMIT: u64 = 17;
    /// IOMMU counters: `ret` = IOTLB entries, PWC entries, stale hits, stale walks.
    pub const IOMMU_STATS: u64 = 18;
    /// One litmus iteration finished: `args[0]` = iteration number,
    /// `args[1]` = number of observed values (u64 LE in `data`),
    /// `args[2]` = data pages leaked, `args[3]` = page-table pages leaked
    /// (both as signed deltas against the start of the iteration),
    /// `args[4]` = iteration time in ns (guest TSC).
    pub const LITMUS_RESULT: u64 = 19;
    // 20..=22 reserved for the litmus runner; 25..=27 for tracing.
    /// This vCPU's trace ring is full (`crate::trace`): the VMM consumes
    /// every ring, then returns. `ret[0]` = records consumed.
    pub const TRACE_DRAIN: u64 = 24;
    /// A page operation done by the VMM on host memory (Xen PV's
    /// `MMUEXT_CLEAR_PAGE` / `MMUEXT_COPY_PAGE`): `args[0]` = `pageop::*`,
    /// `args[1]` = destination (or first) page, `args[2]` = source (or
    /// second) page; both 4 KiB-aligned data pages (`FREE_START` up).
    /// `ret[0]` = 1 if COMPARE found the pages identical. On hosts that
    /// emulate every guest instruction a page loop costs ~1 ms in the guest.
    pub const PAGE_OP: u64 = 28;
    /// `vmm explore`: the previous schedule (if any) is over — its log is
    /// in the explore area (`abi::explore`), its values came with
    /// LITMUS_RESULT; the VMM writes the next schedule's plan there.
    /// `ret[0]` = 1 if there is one, 0 when the search is over.
    pub const EXPLORE_NEXT: u64 = 33;
}

/// `op::PAGE_OP` kinds.
pub mod pageop {
    pub const ZERO: u64 = 0;
    pub const COPY: u64 = 1;
    pub const COMPARE: u64 = 2;
}

/// Native-TLB fidelity probes (`vmm probe`).
pub mod probe {
    /// Same vCPU reads after a guest PTE store, without `invlpg`.
    pub const SAME_VCPU: u64 = 0;
    /// Another vCPU reads after the PTE store, without any flush.
    pub const REMOTE_VCPU: u64 = 1;
    /// Same vCPU reads after a VMM-side PTE write (PT_OP), without `invlpg`.
    pub const VMM_WRITE: u64 = 2;

    pub fn name(id: u64) -> &'static str {
        match id {
            SAME_VCPU => "same vCPU, guest PTE store, no invlpg",
            REMOTE_VCPU => "other vCPU, guest PTE store, no flush",
            VMM_WRITE => "same vCPU, VMM-side PTE write, no invlpg",
            _ => "unknown probe",
        }
    }
}

/// `op::PT_OP` kinds.
pub mod ptop {
    /// entry = args[2]
    pub const SET: u64 = 0;
    /// entry = args[2], old value returned
    pub const XCHG: u64 = 1;
    /// if entry == args[2] { entry = args[3] }
    pub const CMPXCHG: u64 = 2;
    /// entry = 0 (`ptep_get_and_clear`)
    pub const CLEAR: u64 = 3;
    /// entry &= !args[2] (e.g. `ptep_test_and_clear_young`, write-protect)
    pub const CLEAR_BITS: u64 = 4;
    /// entry |= args[2]
    pub const SET_BITS: u64 = 5;
}

/// `op::FILL` results.
pub mod fill {
    /// The modelled TLB now holds a translation: retry the access.
    pub const FILLED: u64 = 0;
    /// The page tables do not allow the access: a real page fault.
    pub const FAULT: u64 = 1;
    /// Native model: there is no modelled TLB to fill.
    pub const NATIVE: u64 = 2;
}

/// `op::FLUSH` kinds.
pub mod flush {
    pub const PAGE: u64 = 0;
    pub const RANGE: u64 = 1;
    pub const ALL: u64 = 2;
}

/// `op::TLB_CONFIG` models.
pub mod tlb_model {
    pub const LAZY: u64 = 0;
    pub const EVICT: u64 = 1;
    pub const NATIVE: u64 = 2;
}

/// Guest-measured benchmark metrics (`op::BENCH_RESULT`).
pub mod bench {
    /// Round trip of a hypercall with an empty payload (ECHO).
    pub const HYPERCALL_ECHO: u64 = 0;
    /// A bare port-I/O exit to userspace that the VMM ignores (NOP_PORT).
    pub const PORT_IO_EXIT: u64 = 1;
    /// One page-table op (PT_OP SET) including its exit.
    pub const PT_OP: u64 = 2;
    /// Local flush of one page (FLUSH hypercall + invlpg).
    pub const FLUSH_PAGE: u64 = 3;
    /// Local flush of one page then a read that misses and is filled
    /// (#PF -> FILL -> retry); minus FLUSH_PAGE this is the fill cost.
    pub const FLUSH_AND_FILL: u64 = 4;
    /// `flush_tlb_mm_range` of one page with every other vCPU running the mm
    /// (IPI, remote flush, acknowledgement); `samples` carries the vCPU count
    /// in its top 16 bits.
    pub const SHOOTDOWN: u64 = 5;

    pub fn name(metric: u64) -> &'static str {
        match metric {
            HYPERCALL_ECHO => "hypercall round trip (ECHO, empty payload)",
            PORT_IO_EXIT => "bare port-I/O exit (NOP port)",
            PT_OP => "page-table op (PT_OP set)",
            FLUSH_PAGE => "local flush of one page (FLUSH + invlpg)",
            FLUSH_AND_FILL => "local flush + read that refills (#PF, FILL)",
            SHOOTDOWN => "TLB shootdown of one page (flush_tlb_mm_range)",
            _ => "unknown metric",
        }
    }
}

/// `Mailbox::status` values.
pub mod status {
    pub const OK: u64 = 0;
    pub const UNKNOWN_OP: u64 = 1;
    pub const BAD_ARGUMENT: u64 = 2;
}

/// Self-test outcomes, kvm-unit-tests `report.c` vocabulary.
pub mod report {
    pub const PASS: u64 = 0;
    pub const FAIL: u64 = 1;
    pub const SKIP: u64 = 2;
    pub const XFAIL: u64 = 3;
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
