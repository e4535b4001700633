//! Trace records: one fixed-size record per event from the guest mm model,
//! the VMM's shadow MMU and the emulated device, ordered by one global
//! sequence number (a shared counter in guest memory that guest and host
//! both increment atomically, so the order is consistent with causality).
//!
//! Record (48 bytes, little-endian):
//! `seq u64 | tsc u64 | kind u16 | source u8 | unit u8 | iteration u32 | va u64 | a u64 | b u64`.
//! The meaning of `va`, `a` and `b` depends on [`Kind`] (documented per kind).
//! `tsc` is the guest's TSC (host-side records are converted to it);
//! `iteration` is the litmus iteration the record belongs to (the guest
//! writes 0; the VMM stamps the iteration in progress — the litmus state
//! page's `ITERATION` word — when it drains the record or makes its own).
//!
//! # The trace area ([`crate::layout::TRACE_BASE`], [`crate::layout::TRACE_SIZE`])
//!
//! ```text
//! +0x0000  control page: magic, enabled flag, ring geometry (VMM-written),
//!          global sequence counter
//! +0x1000  ring headers, RING_HDR_LEN bytes per vCPU: head (producer),
//!          tail (consumer), dropped, blocked
//! +0x4000  ring data: vCPU k's ring at DATA_OFF + k * capacity * RECORD_LEN
//! ```
//!
//! Each vCPU appends to its own ring without exiting (interrupts off while
//! it writes a record, so an IPI handler's records cannot interleave). When
//! its ring is full it makes the `TRACE_DRAIN` hypercall, and the VMM
//! consumes every ring before it returns: nothing is lost. A record that
//! still could not be stored is counted in `dropped`, which the trace file
//! reports. The VMM and the device take their sequence numbers from the
//! same counter with host atomics.

/// Version of the record format and the trace area layout.
pub const VERSION: u32 = 1;

/// Offsets in the trace area.
pub mod area {
    /// Control page: `MAGIC_VALUE` while the VMM traces this boot.
    pub const MAGIC: u64 = 0;
    pub const MAGIC_VALUE: u64 = u64::from_le_bytes(*b"SHTRACE1");
    /// Non-zero: record. Guest trace points test only this word.
    pub const ENABLED: u64 = 8;
    /// Number of rings: two per vCPU ([`ring_of`]).
    pub const NRINGS: u64 = 16;
    /// Records per ring, a power of two.
    pub const CAPACITY: u64 = 24;
    /// The global sequence counter (its own cache line). Starts at 1.
    pub const SEQ: u64 = 128;
    /// Ring headers.
    pub const RINGS: u64 = 0x1000;
    pub const RING_HDR_LEN: u64 = 32;
    /// Ring header fields.
    pub const HEAD: u64 = 0;
    pub const TAIL: u64 = 8;
    /// Records that could not be stored (ring full and the drain failed).
    pub const DROPPED: u64 = 16;
    /// Times the ring was full and the vCPU waited for the VMM to drain it.
    pub const BLOCKED: u64 = 24;
    /// First byte of ring data.
    pub const DATA_OFF: u64 = 0x5000;
    const _: () = assert!(RINGS + RING_HDR_LEN * 2 * crate::layout::MAX_VCPUS <= DATA_OFF);

    /// Rings of a VM with `vcpus` vCPUs: each vCPU has one for its kernel
    /// code (written with interrupts off) and one for its CPL3 code (which
    /// cannot mask interrupts: an interrupt handler's records go to the
    /// other ring, so no record is torn; readers order by `seq`).
    pub const fn rings(vcpus: u64) -> u64 {
        2 * vcpus
    }

    /// The ring of `cpu`'s CPL0 or CPL3 records, of `nrings` rings.
    pub const fn ring_of(cpu: u64, cpl3: bool, nrings: u64) -> u64 {
        if cpl3 {
            nrings / 2 + cpu
        } else {
            cpu
        }
    }

    /// Records per ring for `nrings` rings: the largest power of two that fits.
    pub const fn capacity(nrings: u64) -> u64 {
        let n = if nrings == 0 { 1 } else { nrings };
        let per = (crate::layout::TRACE_SIZE - DATA_OFF) / n / super::RECORD_LEN as u64;
        if per == 0 {
            return 0;
        }
        1u64 << (63 - per.leading_zeros())
    }
    const _: () = assert!(capacity(rings(crate::layout::MAX_VCPUS)) >= 256);

    /// GPA of ring `k`'s header.
    pub const fn ring_header(k: u64) -> u64 {
        crate::layout::TRACE_BASE + RINGS + k * RING_HDR_LEN
    }

    /// GPA of ring `k`'s data for rings of `capacity` records.
    pub const fn ring_data(k: u64, capacity: u64) -> u64 {
        crate::layout::TRACE_BASE + DATA_OFF + k * capacity * super::RECORD_LEN as u64
    }

    /// GPA of a control-page word.
    pub const fn word(off: u64) -> u64 {
        crate::layout::TRACE_BASE + off
    }
}

/// `unit` of device records produced by the IOMMU itself (invalidation
/// queue), not by one device thread.
pub const UNIT_IOMMU: u8 = 0xff;

/// `DevAccess` `b`: bits 0..52 the GPA used; op in bits 56..60
/// ([`dev_op`]); bit 63 set if the access used a stale cached translation.
pub mod dev_access {
    pub const GPA_MASK: u64 = (1 << 52) - 1;
    pub const OP_SHIFT: u32 = 56;
    pub const OP_MASK: u64 = 0xf << OP_SHIFT;
    pub const STALE: u64 = 1 << 63;
}

/// Device access ops in `DevAccess` records.
pub mod dev_op {
    pub const LOAD: u64 = 0;
    pub const STORE: u64 = 1;
    pub const XCHG: u64 = 2;
    pub const FETCH_ADD: u64 = 3;
    pub const CMPXCHG: u64 = 4;
    pub const PREFETCH: u64 = 5;

    pub fn name(op: u64) -> &'static str {
        match op {
            LOAD => "load",
            STORE => "store",
            XCHG => "xchg",
            FETCH_ADD => "fetch_add",
            CMPXCHG => "cmpxchg",
            PREFETCH => "prefetch",
            _ => "access",
        }
    }
}

/// Bytes of one record.
pub const RECORD_LEN: usize = 48;

/// Who produced a record (`source`); `unit` is the vCPU index (guest, VMM)
/// or the device thread index (device).
pub mod source {
    pub const GUEST: u8 = 0;
    pub const VMM: u8 = 1;
    pub const DEVICE: u8 = 2;
}

macro_rules! kinds {
    ($( $(#[$m:meta])* $var:ident = $num:literal => $text:literal ),* $(,)?) => {
        /// Event kinds. Numbers are part of the wire format.
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind { $( $(#[$m])* $var = $num ),* }
        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$var),*];
            pub const fn from_u16(v: u16) -> Option<Kind> {
                match v { $( $num => Some(Kind::$var), )* _ => None }
            }
            pub const fn name(self) -> &'static str {
                match self { $( Kind::$var => $text ),* }
            }
        }
    };
}

kinds! {
    // ---- guest (mm model, interpreter) ----
    /// An iteration starts: `a` = test hash, `b` = iteration number.
    IterBegin = 1 => "iter_begin",
    /// An iteration ended (teardown done): `a` = 0, `b` = iteration number.
    IterEnd = 2 => "iter_end",
    /// PTL taken: `a` = GPA of the PTE table.
    PtlAcquire = 3 => "ptl_acquire",
    /// PTL released: `a` = GPA of the PTE table.
    PtlRelease = 4 => "ptl_release",
    /// A PTE changed: `va` = the page it maps, `a` = old entry, `b` = new entry.
    PteChange = 5 => "pte_change",
    /// A PMD entry pointing at a PTE table was cleared: `va` = 2 MiB region, `a` = table GPA.
    PmdClear = 6 => "pmd_clear",
    /// Primary TLB flush starts on the flushing CPU: `va` = start, `a` = end (exclusive).
    FlushBegin = 7 => "flush_begin",
    /// Primary TLB flush done on every targeted CPU: `va` = start, `a` = end.
    FlushEnd = 8 => "flush_end",
    /// Shootdown IPI sent: `a` = target CPU.
    IpiSend = 9 => "ipi_send",
    /// Shootdown IPI received (handler entered): `a` = sender CPU.
    IpiRecv = 10 => "ipi_recv",
    /// Shootdown acknowledged (local flush done in the handler): `a` = sender CPU.
    IpiAck = 11 => "ipi_ack",
    /// Secondary invalidation starts: `va` = start, `a` = end, `b` = 1 leaf-only.
    NotifierBegin = 12 => "notifier_begin",
    /// Secondary invalidation returned (device queue drained): `va` = start, `a` = end.
    NotifierEnd = 13 => "notifier_end",
    /// A hook point was reached (armed or not): `a` = `litmus::Hook` number.
    Hook = 14 => "hook",
    /// A data page was freed: `a` = GPA.
    PageFree = 15 => "page_free",
    /// A page-table page was freed: `a` = GPA.
    TableFree = 16 => "table_free",
    /// A vCPU thread's access: `va`, `a` = value read/written (or litmus
    /// `VALUE_FAULT`), `b` = 0 load / 1 store / 2 rmw.
    Access = 17 => "access",
    /// An mm operation of a litmus thread starts: `va` = its location, `a` = `litmus::Op`.
    OpBegin = 18 => "op_begin",
    /// The mm operation returned: `va`, `a` = `litmus::Op`.
    OpEnd = 19 => "op_end",
    /// This CPU switched address space: `a` = PGD of the mm it runs now,
    /// 0 = the kernel's (no user mm). A litmus thread's body lies between
    /// its switch to the test mm and its switch back.
    MmSwitch = 20 => "mm_switch",
    /// A litmus vCPU thread starts its body on this vCPU (the placement
    /// changes per iteration): `a` = thread index (as in the test).
    ThreadStart = 21 => "thread_start",
    /// A lock of the mm model was taken (`guest::mm::locking`): `va` = the
    /// lock's address (mm, VMA start, PTE table, page), `a` = lock kind
    /// ([`lock_kind`]), `b` = 1 if the thread had to wait for it.
    LockAcquire = 22 => "lock_acquire",
    /// That lock was released: `va`, `a` as for `LockAcquire`.
    LockRelease = 23 => "lock_release",
    // ---- VMM (shadow MMU) ----
    /// Shadow fill of one translation: `va`, `a` = guest PTE used, `b` = GPA of the page.
    ShadowFill = 32 => "shadow_fill",
    /// Shadow flush on this vCPU: `va` = start, `a` = end (0/0 = everything).
    ShadowFlush = 33 => "shadow_flush",
    /// A shadow entry evicted (`evict:P` model): `va`.
    ShadowEvict = 34 => "shadow_evict",
    /// The VMM drained the trace rings because this vCPU's ring was full
    /// (`TRACE_DRAIN`): `a` = records consumed.
    TraceDrain = 35 => "trace_drain",
    /// A fill started from this vCPU's walk cache (`walk-cache=`): `va`,
    /// `a` = the cached PTE-table GPA, `b` = 1 if that table is no longer
    /// the one the page tables link there (a stale walk).
    ShadowWalkHit = 36 => "shadow_walk_hit",
    // ---- device (IOMMU, DMA engine) ----
    /// IOTLB filled by a walk: `va`, `a` = PTE, `b` = GPA.
    IotlbFill = 48 => "iotlb_fill",
    /// IOTLB hit: `va`, `b` = GPA.
    IotlbHit = 49 => "iotlb_hit",
    /// IOTLB hit on an entry that no longer matches the page table: `va`,
    /// `a` = current PTE (0 if the walk faults now), `b` = GPA used.
    IotlbStaleHit = 50 => "iotlb_stale_hit",
    /// Paging-structure-cache hit: `va`, `a` = level, `b` = table GPA.
    PwcHit = 51 => "pwc_hit",
    /// Invalidation descriptor received: `va` = start, `a` = end
    /// (exclusive; 0/`u64::MAX` = every address), `b` = 1 leaf-only (IH).
    InvReceived = 52 => "inv_received",
    /// Invalidation descriptor completed (its entries are gone): `va` =
    /// start, `a` = end as for `InvReceived`, `b` = IOTLB entries dropped.
    InvCompleted = 53 => "inv_completed",
    /// Invalidation wait descriptor completed: `a` = status data.
    WaitCompleted = 54 => "wait_completed",
    /// Device access completed: `va`, `a` = value read (old value for RMW;
    /// value written for stores), `b` = GPA | op | stale flag ([`dev_access`]).
    DevAccess = 55 => "dev_access",
    /// An IOTLB entry left the cache: `va`, `a` = 0 capacity / 1 random /
    /// 2 invalidation / 3 refill.
    IotlbEvict = 56 => "iotlb_evict",
    /// A device translation faulted: `va`, `a` = fault reason code, `b` = 1 write.
    DevFault = 57 => "dev_fault",
    /// A device walk reached a freed page-table page: `va`, `a` = table
    /// GPA, `b` = level | 0x100 if through the paging-structure cache.
    DevStaleWalk = 58 => "dev_stale_walk",
}

/// `a` of [`Kind::LockAcquire`] / [`Kind::LockRelease`].
pub mod lock_kind {
    pub const MMAP_READ: u64 = 1;
    pub const MMAP_WRITE: u64 = 2;
    pub const VMA_READ: u64 = 3;
    pub const VMA_WRITE: u64 = 4;
    pub const PTL: u64 = 5;
    pub const PAGE: u64 = 6;
}

/// One decoded record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub tsc: u64,
    pub kind: u16,
    pub source: u8,
    pub unit: u8,
    pub iteration: u32,
    pub va: u64,
    pub a: u64,
    pub b: u64,
}

impl Record {
    pub fn to_bytes(&self) -> [u8; RECORD_LEN] {
        let mut r = [0u8; RECORD_LEN];
        r[0..8].copy_from_slice(&self.seq.to_le_bytes());
        r[8..16].copy_from_slice(&self.tsc.to_le_bytes());
        r[16..18].copy_from_slice(&self.kind.to_le_bytes());
        r[18] = self.source;
        r[19] = self.unit;
        r[20..24].copy_from_slice(&self.iteration.to_le_bytes());
        r[24..32].copy_from_slice(&self.va.to_le_bytes());
        r[32..40].copy_from_slice(&self.a.to_le_bytes());
        r[40..48].copy_from_slice(&self.b.to_le_bytes());
        r
    }

    pub fn from_bytes(r: &[u8; RECORD_LEN]) -> Record {
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&r[o..o + 8]);
            u64::from_le_bytes(b)
        };
        Record {
            seq: u64_at(0),
            tsc: u64_at(8),
            kind: u16::from_le_bytes([r[16], r[17]]),
            source: r[18],
            unit: r[19],
            iteration: u32::from_le_bytes([r[20], r[21], r[22], r[23]]),
            va: u64_at(24),
            a: u64_at(32),
            b: u64_at(40),
        }
    }

    pub fn kind(&self) -> Option<Kind> {
        Kind::from_u16(self.kind)
    }
}
