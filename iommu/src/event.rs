//! Events the IOMMU reports to a caller-provided [`EventSink`].
//!
//! The sink is called synchronously at the moment the event happens (with
//! the IOMMU's lock held, if the VMM wraps it in one), so a sink that takes a
//! sequence number from the trace's shared counter places each event in the
//! one total order of guest, VMM and device events.

use std::sync::Mutex;

use abi::iommu::{FaultReason, InvDesc, PageRequest};

use crate::pagetable::{Access, PageSize, Path, Perms, WalkFault};

/// Which translation cache an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheKind {
    /// The IOMMU's IOTLB.
    Iotlb,
    /// The device's own TLB (ATS translation cache), if configured.
    DevTlb,
    /// The paging-structure cache.
    Pwc,
}

/// A device memory access primitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmaOp {
    Load,
    Store,
    Xchg,
    FetchAdd,
    CmpXchg,
    /// Translate (and fill the caches) only.
    Prefetch,
}

/// Why an entry left a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EvictReason {
    /// Replaced to make room in its set.
    Capacity,
    /// Dropped by `evict:P`.
    Random,
    /// Dropped by an invalidation descriptor (or [`crate::Iommu::flush_caches`]).
    Invalidation,
    /// Dropped because it did not allow the access (the access walked again).
    Refill,
}

/// How a cached translation differs from the page tables now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleCause {
    /// The VA now maps another page.
    Remapped { pa: u64, pte: u64 },
    /// Still mapped to the same page but the access is no longer allowed.
    PermissionRevoked { reason: FaultReason, pte: u64 },
    /// A walk now faults (not present, reserved bit, table not RAM) or
    /// goes through a freed table.
    Unmapped(WalkFault),
    /// The PASID entry no longer binds page tables (reason says why).
    PasidUnbound(FaultReason),
}

/// One thing the IOMMU did. Addresses: `va` is the device's virtual
/// address, `pa` a guest-physical address.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A device access used a cached translation.
    Hit {
        cache: CacheKind,
        pasid: u32,
        va: u64,
        pa: u64,
        /// It differed from the page tables (a [`Event::StaleHit`] precedes).
        stale: bool,
    },
    /// A cache hit whose translation is no longer what the page tables say.
    /// The access still uses the cached translation — that is the point.
    StaleHit {
        cache: CacheKind,
        pasid: u32,
        va: u64,
        cached_pa: u64,
        cached_pte: u64,
        cause: StaleCause,
    },
    /// The paging-structure cache gave the table of `level - 1` for `va`.
    PwcHit {
        pasid: u32,
        va: u64,
        /// Level of the cached entry (4 = PML4E, 3 = PDPTE, 2 = PDE).
        level: u8,
        /// The table it points to, which the walk reads next.
        table: u64,
    },
    /// A page-table walk ran (`path` = entries read, with A/D as set).
    Walk {
        pasid: u32,
        va: u64,
        access: Access,
        /// Level of the PWC entry the walk started below, if any.
        pwc_level: Option<u8>,
        path: Path,
    },
    /// A translation was put in `cache`.
    Fill {
        cache: CacheKind,
        pasid: u32,
        va: u64,
        pa: u64,
        pte: u64,
        size: PageSize,
        perms: Perms,
        dirty: bool,
    },
    /// A non-leaf entry was put in the paging-structure cache.
    PwcFill {
        pasid: u32,
        /// First VA the entry covers.
        va: u64,
        level: u8,
        /// The next table's GPA.
        table: u64,
        entry: u64,
    },
    /// An entry left a cache. For the PWC, `va` is the first VA covered.
    Evict {
        cache: CacheKind,
        pasid: u32,
        va: u64,
        level: u8,
        reason: EvictReason,
    },
    /// A translation fault (recorded in the page-request queue if `queued`).
    Fault {
        request: PageRequest,
        queued: bool,
    },
    /// The walk would have read an entry from `table`, which is not a live
    /// page table. The access does not complete.
    StaleWalk {
        pasid: u32,
        va: u64,
        level: u8,
        table: u64,
        /// The value the entry has in the freed page (read without side effects).
        entry: Option<u64>,
        /// Whether the walk got to the freed table through the PWC.
        via_pwc: bool,
    },
    /// A memory access completed at `pa`.
    Access {
        pasid: u32,
        va: u64,
        pa: u64,
        op: DmaOp,
        /// Value read (old value for RMW ops; 0 for stores and prefetch).
        old: u64,
        /// Value written (0 for loads and prefetch).
        new: u64,
        /// Done through a stale cached translation.
        stale: bool,
    },
    /// The translation gave a GPA that is not guest RAM.
    BadTarget {
        pasid: u32,
        va: u64,
        pa: u64,
        op: DmaOp,
    },
    /// A descriptor was fetched from the invalidation queue at byte offset `head`.
    InvalidationReceived {
        head: u64,
        desc: InvDesc,
    },
    /// A descriptor's invalidation is done; counts of entries dropped.
    InvalidationCompleted {
        head: u64,
        desc: InvDesc,
        iotlb: usize,
        devtlb: usize,
        pwc: usize,
    },
    /// A wait descriptor completed (status written, MSI raised if `irq`).
    WaitCompleted {
        head: u64,
        status_addr: Option<u64>,
        data: u32,
        irq: bool,
    },
    /// The invalidation queue stopped with an error (`STATUS.IQE`).
    QueueError {
        head: u64,
        code: u8,
    },
    /// The VMM reported a page-table page allocated / freed.
    TableAllocated {
        gpa: u64,
    },
    TableFreed {
        gpa: u64,
    },
}

/// Receives events. `&self`: the sink does its own synchronisation.
pub trait EventSink: Send + Sync {
    fn record(&self, e: &Event);
}

/// Discards everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopSink;

impl EventSink for NoopSink {
    fn record(&self, _e: &Event) {}
}

/// Any `Fn(&Event)` is a sink.
impl<F: Fn(&Event) + Send + Sync> EventSink for F {
    fn record(&self, e: &Event) {
        self(e)
    }
}

/// Keeps every event in memory (tests, small tools).
#[derive(Debug, Default)]
pub struct RecordingSink {
    events: Mutex<Vec<Event>>,
}

impl RecordingSink {
    pub fn new() -> Self {
        Self::default()
    }
    /// Takes the events recorded so far.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
    /// A copy of the events recorded so far.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl EventSink for RecordingSink {
    fn record(&self, e: &Event) {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push(e.clone());
    }
}
