//! Trace records: one fixed-size record per event from the guest mm model,
//! the VMM's shadow MMU and the emulated device, ordered by one global
//! sequence number (a shared counter in guest memory that guest and host
//! both increment atomically, so the order is consistent with causality).
//!
//! Record (48 bytes, little-endian):
//! `seq u64 | tsc u64 | kind u16 | source u8 | unit u8 | iteration u32 | va u64 | a u64 | b u64`.
//! The meaning of `va`, `a` and `b` depends on [`Kind`] (documented per kind).

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
    /// An iteration starts: `a` = test hash, `b` = policy bytes 0..8.
    IterBegin = 1 => "iter_begin",
    /// An iteration ended: `a` = 0 ok / 1 timeout.
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
    // ---- VMM (shadow MMU) ----
    /// Shadow fill of one translation: `va`, `a` = guest PTE used, `b` = GPA of the page.
    ShadowFill = 32 => "shadow_fill",
    /// Shadow flush on this vCPU: `va` = start, `a` = end (0/0 = everything).
    ShadowFlush = 33 => "shadow_flush",
    /// A shadow entry evicted (`evict:P` model): `va`.
    ShadowEvict = 34 => "shadow_evict",
    // ---- device (IOMMU, DMA engine) ----
    /// IOTLB filled by a walk: `va`, `a` = PTE, `b` = GPA.
    IotlbFill = 48 => "iotlb_fill",
    /// IOTLB hit: `va`, `b` = GPA.
    IotlbHit = 49 => "iotlb_hit",
    /// IOTLB hit on an entry that no longer matches the page table: `va`, `a` = current PTE, `b` = GPA used.
    IotlbStaleHit = 50 => "iotlb_stale_hit",
    /// Paging-structure-cache hit: `va`, `a` = level, `b` = table GPA.
    PwcHit = 51 => "pwc_hit",
    /// Invalidation descriptor received: `va` = start, `a` = end.
    InvReceived = 52 => "inv_received",
    /// Invalidation descriptor completed: `va` = start, `a` = end.
    InvCompleted = 53 => "inv_completed",
    /// Invalidation wait descriptor completed.
    WaitCompleted = 54 => "wait_completed",
    /// Device access: `va`, `a` = value (or `VALUE_FAULT`/`VALUE_STALE_WALK`), `b` = GPA used.
    DevAccess = 55 => "dev_access",
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
