//! The policy table: every policy key, its values, its default, what each
//! value means and which upstream commits and releases it stands for —
//! defined once, here. Everything else follows from it:
//!
//! * the wire form [`PolicyAbi`] (one byte per key, in table order);
//! * the typed value of each key ([`FlushScheme`], [`Notifier`], …) and the
//!   guest's accessor `policy::get::<T>()` ([`PolicyValue`]);
//! * the host parser's keys and values, `vmm litmus --list-policies` and the
//!   guide's policy table (crate `litmus`);
//! * the kernel profiles (`kernel=v4.14`): a profile is a release, and its
//!   value of every kernel key is the value whose [`Era`] contains that
//!   release ([`profile_abi`]) — so a profile cannot disagree with the
//!   commits its values cite, and a combination whose eras never overlap is
//!   recognisably one no kernel ever had (crate `litmus` refuses it unless
//!   `--allow-hypothetical`).
//!
//! # Adding a value (see docs/modelling.md)
//!
//! Add a line to the key's `enum` block below: a wire number (never reuse
//! one), the name used in policy strings, its [`Status`] (the releases it
//! was upstream as [`Era`]s, or [`Status::Proposal`] for a patch that never
//! merged), and one sentence naming the commit(s) and the file/function it
//! models. Then make the guest's mm model honour it (`policy::get::<T>()`).
//! A unit test checks that every kernel key still has exactly one value per
//! profile release.

use core::fmt;

mod wire;
pub use wire::{profile_abi, PolicyAbi, POLICY_LEN, PPM};

/// A Linux release `x.y` (its `vx.y` tag, the `.0` release).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Release {
    pub major: u8,
    pub minor: u8,
}

/// Shorthand for [`Release`] in the table.
pub const fn r(major: u8, minor: u8) -> Release {
    Release { major, minor }
}

impl Release {
    /// Before every release the table distinguishes.
    pub const EPOCH: Release = r(0, 0);
    /// Today's mainline (after every numbered release).
    pub const MAINLINE: Release = r(254, 0);
    /// "Still there": the end of an era that has not ended.
    pub const OPEN: Release = r(255, 0);

    pub const fn lt(self, o: Release) -> bool {
        self.major < o.major || (self.major == o.major && self.minor < o.minor)
    }
    pub const fn same(self, o: Release) -> bool {
        self.major == o.major && self.minor == o.minor
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.same(Release::MAINLINE) {
            f.write_str("mainline")
        } else if self.same(Release::OPEN) {
            f.write_str("now")
        } else if self.same(Release::EPOCH) {
            f.write_str("the beginning")
        } else {
            write!(f, "v{}.{}", self.major, self.minor)
        }
    }
}

/// The releases `[since, until)` that had a behaviour: `since` is the first
/// release containing the commit that introduced it, `until` the first
/// release containing the commit that replaced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Era {
    pub since: Release,
    pub until: Release,
}

impl Era {
    pub const fn contains(&self, rel: Release) -> bool {
        !rel.lt(self.since) && rel.lt(self.until)
    }
}

/// `[since, until)`.
pub const fn era(since: Release, until: Release) -> Era {
    Era { since, until }
}
/// From `since` to today.
pub const fn since(rel: Release) -> Era {
    Era { since: rel, until: Release::OPEN }
}
/// Every release before `until`.
pub const fn before(until: Release) -> Era {
    Era { since: Release::EPOCH, until }
}

/// What a policy value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Upstream Linux behaved this way in these releases.
    Kernel(&'static [Era]),
    /// Posted on a mailing list, never merged: labelled *proposal*.
    Proposal,
    /// No kernel: a reference point of the model (a bound, a broken
    /// driver). Refused unless `--allow-hypothetical`.
    Model,
    /// A property of the emulated hardware, not of the kernel.
    Hardware,
    /// `kernel=`: the profile of this release.
    Profile(Release),
}

impl Status {
    /// Whether the value was upstream in `rel`.
    pub const fn in_release(&self, rel: Release) -> bool {
        match self {
            Status::Kernel(eras) => {
                let mut i = 0;
                while i < eras.len() {
                    if eras[i].contains(rel) {
                        return true;
                    }
                    i += 1;
                }
                false
            }
            _ => false,
        }
    }
}

/// What kind of setting a key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// `kernel=`: picks a profile.
    Profile,
    /// The emulated hardware (TLB, IOTLB, caches): not set by profiles.
    Hardware,
    /// Kernel behaviour: set by the profile, overridable one commit at a time.
    Kernel,
}

/// One value of a key.
#[derive(Clone, Copy, Debug)]
pub struct ValueDesc {
    /// Wire number (the byte in [`PolicyAbi`]).
    pub num: u8,
    /// As written in policy strings.
    pub name: &'static str,
    pub status: Status,
    /// What it means, with the commit(s) and file/function it models.
    pub doc: &'static str,
}

/// A key whose value takes a parameter: `evict:P`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// The value that takes it (`evict`).
    pub value: u8,
    /// Which probability slot of [`PolicyAbi`] holds it.
    pub slot: PpmSlot,
}

/// The probability fields of [`PolicyAbi`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PpmSlot {
    Tlb,
    Iotlb,
}

/// One key of the table.
#[derive(Clone, Copy, Debug)]
pub struct KeyDesc {
    pub key: Key,
    /// As written in policy strings.
    pub name: &'static str,
    pub kind: KeyKind,
    /// Wire number of the default value (kernel keys: mainline's value).
    pub default: u8,
    pub param: Option<Param>,
    /// What the key is about.
    pub doc: &'static str,
    pub values: &'static [ValueDesc],
}

impl KeyDesc {
    pub fn value(&self, num: u8) -> Option<&'static ValueDesc> {
        self.values.iter().find(|v| v.num == num)
    }
    pub fn value_named(&self, name: &str) -> Option<&'static ValueDesc> {
        self.values.iter().find(|v| v.name == name)
    }
}

/// A typed key value: the guest asks `policy::get::<FlushScheme>()`.
pub trait PolicyValue: Copy + Sized + 'static {
    const KEY: Key;
    const DEFAULT: Self;
    fn from_u8(v: u8) -> Option<Self>;
    fn to_u8(self) -> u8;
}

macro_rules! policy_table {
    ($(
        $(#[$km:meta])*
        key $key:ident = $kname:literal, $kind:ident, default $def:ident, param $param:expr,
            doc $kdoc:literal,
        enum $ty:ident {
            $( $var:ident = $num:literal => $vname:literal, $status:expr, $vdoc:literal; )*
        }
    )*) => {
        /// The policy keys, in canonical order (the order of the table, of
        /// the wire bytes and of printed policies).
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Key { $( $(#[$km])* $key ),* }

        $(
            #[doc = $kdoc]
            #[repr(u8)]
            #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
            pub enum $ty { $( #[doc = $vdoc] $var = $num ),* }

            impl $ty {
                /// Every value, in table order.
                pub const ALL: &'static [$ty] = &[$($ty::$var),*];
                pub const fn from_u8(v: u8) -> Option<Self> {
                    match v { $( $num => Some($ty::$var), )* _ => None }
                }
                /// The name used in policy strings and output.
                pub const fn name(self) -> &'static str {
                    match self { $( $ty::$var => $vname ),* }
                }
                pub fn from_name(s: &str) -> Option<Self> {
                    match s { $( $vname => Some($ty::$var), )* _ => None }
                }
            }

            impl PolicyValue for $ty {
                const KEY: Key = Key::$key;
                const DEFAULT: Self = $ty::$def;
                fn from_u8(v: u8) -> Option<Self> { $ty::from_u8(v) }
                fn to_u8(self) -> u8 { self as u8 }
            }
        )*

        /// Every key, in canonical order (`KEYS[k as usize].key == k`).
        pub const KEYS: &[KeyDesc] = &[ $(
            KeyDesc {
                key: Key::$key,
                name: $kname,
                kind: KeyKind::$kind,
                default: $ty::$def as u8,
                param: $param,
                doc: $kdoc,
                values: &[ $( ValueDesc { num: $num, name: $vname, status: $status, doc: $vdoc } ),* ],
            }
        ),* ];
    };
}

/// Shorthand for [`Status::Kernel`] in the table.
const fn k(eras: &'static [Era]) -> Status {
    Status::Kernel(eras)
}

policy_table! {
    /// `kernel=`
    key Kernel = "kernel", Profile, default Mainline, param None,
        doc "the kernel release whose mm behaviour every kernel key follows (its x.y.0 tag); keys given with it override it, one commit applied or reverted",
    enum Profile {
        V3_19 = 0 => "v3.19", Status::Profile(r(3, 19)), "Linux 3.19 (Feb 2015): the first release with mmu_notifier invalidate_range (0f0a327fa12c, 34ee645e83b6), the SVA drivers' hook";
        V4_9 = 1 => "v4.9", Status::Profile(r(4, 9)), "Linux 4.9 (Dec 2016, LTS): reclaim batches its flushes (72b252aed506, v4.3), mremap flushes dirty PTEs under the PTL (5d1904204c99)";
        V4_14 = 2 => "v4.14", Status::Profile(r(4, 14)), "Linux 4.14 (Nov 2017, LTS): tlb_flush_pending in mmu_gather with the nested-zap check (56236a59556c, 99baac21e458), invalidate_range under the PTL (369ea8242c0f)";
        V4_19 = 3 => "v4.19", Status::Profile(r(4, 19)), "Linux 4.19 (Oct 2018, LTS): mremap flushes before the PTL release (eb66ae030829, CVE-2018-18281)";
        V5_4 = 4 => "v5.4", Status::Profile(r(5, 4)), "Linux 5.4 (Nov 2019, LTS): munmap zaps under the downgraded mmap_lock (dd2283f2605e, v4.20), the nested flush keeps freed_tables (7a30df49f63a, v5.2)";
        V5_10 = 5 => "v5.10", Status::Profile(r(5, 10)), "Linux 5.10 (Dec 2020, LTS): userfaultfd write-protect (292924b26024, v5.7) without the CoW-fault flush of 6ce64428d620 (v5.12)";
        V6_1 = 6 => "v6.1", Status::Profile(r(6, 1)), "Linux 6.1 (Dec 2022, LTS): mprotect through mmu_gather (4a18419f71cd, v5.19), batched-flush counts (5ee2fa2f0636, v5.17)";
        V6_6 = 7 => "v6.6", Status::Profile(r(6, 6)), "Linux 6.6 (Oct 2023, LTS): secondary TLBs invalidated from the TLB-flush path (6bbd42e2df8f), with the VT-d flush-all overflow (fixed by e7ad6c2a4b1a in v6.7)";
        Mainline = 8 => "mainline", Status::Profile(Release::MAINLINE), "today's mainline (read at v7.0, April 2026)";
    }

    /// `tlb=`
    key Tlb = "tlb", Hardware, default Lazy, param Some(Param { value: 1, slot: PpmSlot::Tlb }),
        doc "the vCPU TLB model",
    enum TlbMode {
        Lazy = 0 => "lazy", Status::Hardware, "entries die only by this vCPU's own flush (deterministic)";
        Evict = 1 => "evict", Status::Hardware, "evict:P — also each stale entry is dropped with probability P at every exit (a finite TLB)";
        Native = 2 => "native", Status::Hardware, "the host's real TLB (see `vmm probe`)";
    }

    /// `iotlb=`
    key Iotlb = "iotlb", Hardware, default Lazy, param Some(Param { value: 1, slot: PpmSlot::Iotlb }),
        doc "the device IOTLB model",
    enum IotlbMode {
        Lazy = 0 => "lazy", Status::Hardware, "entries die only by an invalidation";
        Evict = 1 => "evict", Status::Hardware, "evict:P — also each entry is dropped with probability P per access";
    }

    /// `pwc=`
    key Pwc = "pwc", Hardware, default On, param None,
        doc "the device's paging-structure cache",
    enum Pwc {
        Off = 0 => "off", Status::Hardware, "no paging-structure cache: every IOTLB miss walks from the PASID root";
        On = 1 => "on", Status::Hardware, "the IOMMU caches upper-level entries; an invalidation without IH drops them (VT-d 6.5.2.4)";
    }

    /// `walk-cache=`
    key WalkCache = "walk-cache", Hardware, default X86, param None,
        doc "the vCPU paging-structure (walk) cache",
    enum WalkCache {
        None = 0 => "none", Status::Hardware, "leaf TLB only: every miss walks from the root";
        X86 = 1 => "x86", Status::Hardware, "INVLPG and CR3 writes drop every paging-structure-cache entry of the address space (Intel SDM 4.10.4.1), whatever the range";
        Arm64 = 2 => "arm64", Status::Hardware, "a last-level invalidation (TLBI VALE1IS, __flush_tlb_range(…, last_level=true)) keeps walk-cache entries; only a non-leaf one (VAE1IS, ASIDE1IS) drops them";
    }

    /// `flush=`
    key Flush = "flush", Kernel, default Pending, param None,
        doc "how a flush deferred past the PTL release is published to the paths that must not miss it",
    enum FlushScheme {
        Pending = 2 => "pending", k(&[since(Release::EPOCH)]), "mm->tlb_flush_pending, raised while a flush is deferred: by change_protection_range since 20841405940e (v3.13), by every mmu_gather since 99baac21e458 (v4.13, madv-nested-check=on); checked by pte_accessible, do_wp_page (6ce64428d620), KSM";
        PerPtl = 3 => "per-ptl", Status::Proposal, "proposal (Andy Lutomirski, seed 000, Dec 2020): the pending count lives in each page table, raised under its PTL";
        Generation = 4 => "generation", Status::Proposal, "proposal (Nadav Amit, seeds 000/002, 2020-21): each table records the mm generation of its last deferred change; a path meeting an unflushed generation flushes";
        Ptl = 0 => "ptl", Status::Model, "not a kernel: every path flushes before it releases the PTL (a bound for the deferring schemes)";
    }

    /// `notifier=`
    key Notifier = "notifier", Kernel, default TlbFlush, param None,
        doc "where the secondary MMU (SVA IOMMU) is invalidated",
    enum Notifier {
        Page = 5 => "page", k(&[era(r(3, 19), r(4, 13))]), "v3.19-v4.12: rmap walks (try_to_unmap_one, page_mkclean_one) call mmu_notifier_invalidate_page after the PTL release; wp_page_copy and KSM use ptep_clear_flush_notify under the PTL; range_end and tlb_flush_mmu_tlbonly call invalidate_range (0f0a327fa12c, 34ee645e83b6)";
        Ptl = 0 => "ptl", k(&[era(r(4, 13), r(4, 15))]), "v4.13-v4.14: invalidate_page gone (369ea8242c0f): every PTE change of an rmap walk calls invalidate_range under the PTL; range_end and the mmu_gather flush call it again";
        OnlyEnd = 2 => "only-end", k(&[era(r(4, 15), r(6, 6))]), "v4.15-v6.5: paths that invalidated under the PTL end with mmu_notifier_invalidate_range_only_end (4645b9fe84bf); write-protect downgrades (KSM, mkclean) rely on range_end (0f10851ea475, Documentation/mm/mmu_notifier.rst)";
        TlbFlush = 3 => "tlb-flush", k(&[since(r(6, 6))]), "v6.6+: arch_invalidate_secondary_tlbs from the TLB-flush path (x86 flush_tlb_mm_range) and, as [0, -1UL), from batched unmap (6bbd42e2df8f); range_end no longer invalidates (ec8832d007cb)";
        End = 1 => "end", k(&[before(r(3, 19))]), "before 34ee645e83b6 (v3.19): CoW and KSM use plain ptep_clear_flush and the gather calls no notifier: the secondary MMU hears of a change only in range_end (as a row: v3.19 minus 34ee645e83b6; Andrea Arcangeli argued for the same in try_to_unmap_one, seed 004)";
        None = 4 => "none", Status::Model, "not a kernel: no secondary invalidation at all (a driver without invalidate_range) — shows what a test can detect";
    }

    /// `madv-nested-check=`
    key MadvNestedCheck = "madv-nested-check", Kernel, default On, param None,
        doc "mmu_gather takes part in mm->tlb_flush_pending: tlb_finish_mmu flushes when another deferred flush of the mm is in flight",
    enum MadvNestedCheck {
        Off = 0 => "off", k(&[before(r(4, 13))]), "before 99baac21e458 (v4.13): tlb_gather_mmu raises nothing, and a zap that found pte_none returns with nothing flushed";
        On = 1 => "on", k(&[since(r(4, 13))]), "99baac21e458 (v4.13): tlb_gather_mmu raises mm->tlb_flush_pending (inc_tlb_flush_pending) and tlb_finish_mmu flushes when mm_tlb_flush_nested (mm/mmu_gather.c)";
    }

    /// `reset-range=`
    key ResetRange = "reset-range", Kernel, default KeepFreedTables, param None,
        doc "what the nested flush of tlb_finish_mmu flushes (seed 003)",
    enum ResetRange {
        Range = 2 => "range", k(&[before(r(4, 20))]), "v4.13-v4.19 (99baac21e458): the operation's range [start, end); no freed_tables exists, and arm64 flushed walk caches synchronously when it unhooked a table (__flush_tlb_pgtable), x86 IPIed every CPU";
        ClearFreedTables = 1 => "clear-freed-tables", k(&[era(r(4, 20), r(5, 2))]), "v4.20-v5.1: __tlb_reset_range clears freed_tables (22a61c3c4f13), so the flush of a range whose table munmap freed under the downgraded mmap_lock (dd2283f2605e) is last-level only (arm64 f270ab88fdf2: TLBI VALE1IS keeps walk-cache entries)";
        KeepFreedTables = 0 => "keep-freed-tables", k(&[since(r(5, 2))]), "7a30df49f63a (v5.2): the nested flush is a full-mm flush with freed_tables set";
    }

    /// `nested-range=`
    key NestedRange = "nested-range", Kernel, default Full, param None,
        doc "how the VT-d SVA driver handles the flush-all range [0, -1UL) that the 6.6+ TLB-flush path passes (x86 tlb_flush of a full-mm or nested gather, ranges over 33 pages, batched reclaim)",
    enum NestedRange {
        Full = 0 => "full", k(&[before(r(6, 6)), since(r(6, 7))]), "e7ad6c2a4b1a (v6.7): intel_arch_invalidate_secondary_tlbs flushes the whole PASID for [0, -1UL); before v6.6 no such range reached the driver";
        Sentinel = 1 => "sentinel", k(&[era(r(6, 6), r(6, 7))]), "v6.6: the driver rounds the end up, the page count wraps to 0 and nothing is invalidated (fixed by e7ad6c2a4b1a)";
    }

    /// `reclaim-batch=`
    key ReclaimBatch = "reclaim-batch", Kernel, default On, param None,
        doc "whether reclaim batches the TLB flushes of try_to_unmap (x86 ARCH_WANT_BATCHED_UNMAP_TLB_FLUSH)",
    enum ReclaimBatch {
        Off = 0 => "off", k(&[before(r(4, 3))]), "before 72b252aed506 (v4.3): try_to_unmap_one flushes each PTE at once (ptep_clear_flush)";
        On = 1 => "on", k(&[since(r(4, 3))]), "72b252aed506 (v4.3): TTU_BATCH_FLUSH, set_tlb_ubc_flush_pending, one flush per batch in try_to_unmap_flush";
    }

    /// `migrate-batch=`
    key MigrateBatch = "migrate-batch", Kernel, default On, param None,
        doc "whether (asynchronous) migration batches the TLB flushes of try_to_migrate like reclaim",
    enum MigrateBatch {
        Off = 0 => "off", k(&[before(r(6, 3))]), "before 7e12beb8ca2a (v6.3): try_to_migrate_one flushes each PTE at once (ptep_clear_flush)";
        On = 1 => "on", k(&[since(r(6, 3))]), "7e12beb8ca2a (v6.3): migrate_folio_unmap passes TTU_BATCH_FLUSH for MIGRATE_ASYNC, try_to_migrate_one calls set_tlb_ubc_flush_pending, migrate_pages_batch calls try_to_unmap_flush before moving (copying) the folios";
    }

    /// `batched-pending-check=`
    key BatchedPendingCheck = "batched-pending-check", Kernel, default Counted, param None,
        doc "flush_tlb_batched_pending: a PTL holder flushes what reclaim batched and did not flush yet",
    enum BatchedPendingCheck {
        Off = 0 => "off", k(&[before(r(4, 13))]), "before 3ea277194daa (v4.13): nothing checks reclaim's batched flush";
        Flag = 2 => "flag", k(&[era(r(4, 13), r(5, 17))]), "3ea277194daa (v4.13): mm->tlb_flush_batched is a flag; flush_tlb_batched_pending flushes, then clears it — a batch added in between (under another PTL) is forgotten";
        Counted = 1 => "counted", k(&[since(r(5, 17))]), "5ee2fa2f0636 (v5.17): pending and flushed batch generations in one atomic word, cleared with atomic_cmpxchg \"to avoid losing flushing\" (mm/rmap.c flush_tlb_batched_pending)";
    }

    /// `pte-accessible=`
    key PteAccessible = "pte-accessible", Kernel, default PendingCheck, param None,
        doc "ptep_clear_flush flushes only an accessible PTE (x86 pte_accessible)",
    enum PteAccessible {
        PresentOnly = 0 => "present-only", k(&[before(r(3, 13))]), "before 20841405940e (v3.13): a PROT_NONE PTE is never flushed by ptep_clear_flush";
        PendingCheck = 1 => "pending-check", k(&[since(r(3, 13))]), "20841405940e (v3.13): a PROT_NONE PTE counts as accessible while mm_tlb_flush_pending (arch/x86/include/asm/pgtable.h pte_accessible)";
    }

    /// `dirty-shared-flush=`
    key DirtySharedFlush = "dirty-shared-flush", Kernel, default DelayRmap, param None,
        doc "zap of a dirty shared-file PTE: when the flush happens and when the page leaves the rmap (seed 002)",
    enum DirtySharedFlush {
        Deferred = 1 => "deferred", k(&[before(r(3, 15))]), "before 1cf35d47712d (v3.15): the flush happens after the PTL release";
        UnderPtl = 0 => "under-ptl", k(&[era(r(3, 15), r(6, 2))]), "1cf35d47712d (v3.15) to v6.1: force_flush under the PTL, but page_remove_rmap runs before it, so folio_mkclean does not wait for the PTL";
        DelayRmap = 2 => "delay-rmap", k(&[since(r(6, 2))]), "5df397dec7c4 (v6.2): the rmap is removed only after the flush under the PTL (tlb_delay_rmap, tlb_flush_rmaps)";
    }

    /// `mremap-flush=`
    key MremapFlush = "mremap-flush", Kernel, default BeforeUnlock, param None,
        doc "move_ptes: when the old address is flushed (CVE-2018-18281)",
    enum MremapFlush {
        AfterUnlock = 1 => "after-unlock", k(&[before(r(4, 9))]), "before 5d1904204c99 (v4.9): every moved PTE is flushed after the PTLs are released";
        DirtyUnderPtl = 2 => "dirty-under-ptl", k(&[era(r(4, 9), r(4, 19))]), "5d1904204c99 (v4.9) to v4.18: a dirty PTE forces the flush under the PTL, a clean one is flushed after the release";
        BeforeUnlock = 0 => "before-unlock", k(&[since(r(4, 19))]), "eb66ae030829 (v4.19): every present PTE is flushed before the PTLs are released";
    }

    /// `munmap-lock=`
    key MunmapLock = "munmap-lock", Kernel, default Downgrade, param None,
        doc "which mmap_lock mode munmap zaps and frees page tables under",
    enum MunmapLock {
        Write = 0 => "write", k(&[before(r(4, 20))]), "before dd2283f2605e (v4.20): the whole munmap holds mmap_lock for write";
        Downgrade = 1 => "downgrade", k(&[since(r(4, 20))]), "dd2283f2605e (v4.20): detach under the write lock, downgrade, zap and free page tables under the read lock";
    }

    /// `fault-lock=`
    key FaultLock = "fault-lock", Kernel, default VmaLock, param None,
        doc "what the page-fault path locks",
    enum FaultLock {
        MmapLock = 0 => "mmap-lock", k(&[before(r(6, 4))]), "mmap_read_lock for the whole fault";
        VmaLock = 1 => "vma-lock", k(&[since(r(6, 4))]), "per-VMA lock (5e31275cc997, v6.4; lock_vma_under_rcu), falling back to mmap_read_lock when the VMA is write-locked";
    }

    /// `zap-range-flush=`
    key ZapRangeFlush = "zap-range-flush", Kernel, default Gather, param None,
        doc "whether zap_page_range (MADV_DONTNEED) flushes each VMA's range itself",
    enum ZapRangeFlush {
        Gather = 0 => "gather", k(&[before(r(4, 14)), since(r(4, 19))]), "the mmu_gather flushes what it gathered";
        Always = 1 => "always", k(&[era(r(4, 14), r(4, 19))]), "4647706ebeee (v4.14, reverted by 50c150f26261 in v4.19): flush_tlb_range(vma, start, end) for every VMA, unconditionally, before range_end";
    }

    /// `ksm-pending-check=`
    key KsmPendingCheck = "ksm-pending-check", Kernel, default On, param None,
        doc "KSM's write_protect_page also clears and flushes a clean read-only PTE while a flush is pending",
    enum KsmPendingCheck {
        Off = 0 => "off", k(&[before(r(4, 13))]), "before \"mm: fix KSM data corruption\" (v4.13, with 99baac21e458): a clean read-only PTE is left alone";
        On = 1 => "on", k(&[since(r(4, 13))]), "\"mm: fix KSM data corruption\" (v4.13): || mm_tlb_flush_pending(mm) in write_protect_page's test (mm/ksm.c)";
    }

    /// `mprotect-gather=`
    key MprotectGather = "mprotect-gather", Kernel, default On, param None,
        doc "whether change_protection (mprotect, userfaultfd write-protect) defers its flush through an mmu_gather",
    enum MprotectGather {
        Off = 0 => "off", k(&[before(r(5, 19))]), "before 4a18419f71cd (v5.19): change_protection_range raises mm->tlb_flush_pending and flushes the whole range after the walk if any PTE changed; no nested check; mprotect(RW) leaves an anonymous PTE read-only (the write faults)";
        On = 1 => "on", k(&[since(r(5, 19))]), "4a18419f71cd/c9fe66560bf2 (v5.19): an mmu_gather (tlb_flush_pte_range when pte_needs_flush), with tlb_finish_mmu's nested check; the model ties to it 64fe24a3e05e (v6.0: mprotect makes an exclusive anonymous PTE writable at once)";
    }

    /// `upgrade-flush=`
    key UpgradeFlush = "upgrade-flush", Kernel, default Flush, param None,
        doc "whether change_protection flushes a PTE that gains a permission",
    enum UpgradeFlush {
        Flush = 0 => "flush", k(&[since(Release::EPOCH)]), "every kernel: change_protection_range flushed any changed PTE (before v6.0), and since 4a18419f71cd/c9fe66560bf2 (v6.0) x86 pte_flags_need_flush has _PAGE_RW in flush_on_change; the flush is deferred to the end of the operation";
        Skip = 1 => "skip", Status::Proposal, "proposal (Nadav Amit, seed 002 item 2, Jan 2021): no flush when no permission is removed";
    }

    /// `wp-fault-flush=`
    key WpFaultFlush = "wp-fault-flush", Kernel, default UffdWp, param None,
        doc "do_wp_page flushes before copying when a deferred flush is pending",
    enum WpFaultFlush {
        None = 0 => "none", k(&[before(r(5, 12))]), "before 6ce64428d620 (v5.12): wp_page_copy copies whatever other TLBs may still write";
        UffdWp = 1 => "uffd-wp", k(&[since(r(5, 12))]), "6ce64428d620 (v5.12): flush_tlb_page when userfaultfd_wp(vma) && mm_tlb_flush_pending (mm/memory.c do_wp_page)";
        AnyVma = 2 => "any-vma", Status::Proposal, "proposal (seed 000, Dec 2020): flush on every VMA when mm_tlb_flush_pending — rejected for the flush storms it can cause";
    }

    /// `migrc=`
    key Migrc = "migrc", Kernel, default Off, param None,
        doc "deferring the TLB flush of migrated read-only pages (seed 001)",
    enum Migrc {
        Off = 0 => "off", k(&[since(Release::EPOCH)]), "every kernel: try_to_migrate_one flushes (or batches and flushes before the copy)";
        On = 1 => "on", Status::Proposal, "proposal (Byungchul Park, migrc v3, Nov 2023): keep source and destination, flush later (migrc_try_flush_free_folios)";
    }

    /// `migrc-upgrade=`
    key MigrcUpgrade = "migrc-upgrade", Kernel, default All, param None,
        doc "which permission upgrades force migrc's pending flush",
    enum MigrcUpgrade {
        WpOnly = 0 => "wp-only", Status::Proposal, "proposal (migrc v3): only the write fault (do_wp_page) flushes first";
        All = 1 => "all", Status::Proposal, "proposal (the fix Nadav Amit asked for in seed 001): every upgrade, mprotect included, flushes first";
    }
}

/// A value that only means something together with another key's values.
#[derive(Clone, Copy, Debug)]
pub struct Requirement {
    pub key: Key,
    pub value: u8,
    pub needs: Key,
    pub needs_values: &'static [u8],
    pub why: &'static str,
}

/// Values that only exist in the context of another key's values: a
/// policy that breaks one is hypothetical whatever the eras say.
pub const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        key: Key::Migrc,
        value: Migrc::On as u8,
        needs: Key::MigrateBatch,
        needs_values: &[MigrateBatch::On as u8],
        why: "migrc defers the flush of migrate_pages_batch's batched unmap (7e12beb8ca2a, v6.3): it has no base before that",
    },
    Requirement {
        key: Key::MigrateBatch,
        value: MigrateBatch::On as u8,
        needs: Key::ReclaimBatch,
        needs_values: &[ReclaimBatch::On as u8],
        why: "batched migration uses reclaim's batched-flush machinery (set_tlb_ubc_flush_pending)",
    },
    Requirement {
        key: Key::NestedRange,
        value: NestedRange::Sentinel as u8,
        needs: Key::Notifier,
        needs_values: &[Notifier::TlbFlush as u8],
        why: "the flush-all range reaches the driver only from the 6.6 TLB-flush path",
    },
    Requirement {
        key: Key::MigrcUpgrade,
        value: MigrcUpgrade::WpOnly as u8,
        needs: Key::Migrc,
        needs_values: &[Migrc::On as u8],
        why: "migrc-upgrade is part of the migrc patches",
    },
    Requirement {
        key: Key::BatchedPendingCheck,
        value: BatchedPendingCheck::Flag as u8,
        needs: Key::ReclaimBatch,
        needs_values: &[ReclaimBatch::On as u8],
        why: "flush_tlb_batched_pending checks reclaim's batched flushes",
    },
    Requirement {
        key: Key::BatchedPendingCheck,
        value: BatchedPendingCheck::Counted as u8,
        needs: Key::ReclaimBatch,
        needs_values: &[ReclaimBatch::On as u8],
        why: "flush_tlb_batched_pending checks reclaim's batched flushes",
    },
    Requirement {
        key: Key::MadvNestedCheck,
        value: MadvNestedCheck::On as u8,
        needs: Key::Flush,
        needs_values: &[FlushScheme::Pending as u8, FlushScheme::PerPtl as u8, FlushScheme::Generation as u8],
        why: "the nested check reads the pending count that only flush=pending (or a proposal's own bookkeeping) keeps",
    },
];

/// Number of keys in the table.
pub const N_KEYS: usize = KEYS.len();
/// Key bytes the wire form has room for.
pub const MAX_KEYS: usize = 56;
const _: () = assert!(N_KEYS <= MAX_KEYS);
const _: () = {
    let mut i = 0;
    while i < N_KEYS {
        assert!(KEYS[i].key as usize == i, "KEYS is in Key order");
        i += 1;
    }
};

impl Key {
    pub const fn desc(self) -> &'static KeyDesc {
        &KEYS[self as usize]
    }
    pub const fn name(self) -> &'static str {
        self.desc().name
    }
    pub fn from_name(s: &str) -> Option<Key> {
        KEYS.iter().find(|k| k.name == s).map(|k| k.key)
    }
    pub const fn from_index(i: usize) -> Option<Key> {
        if i < N_KEYS {
            Some(KEYS[i].key)
        } else {
            None
        }
    }
}

impl Profile {
    /// The release this profile stands for.
    pub const fn release(self) -> Release {
        match KEYS[Key::Kernel as usize].values[self as usize].status {
            Status::Profile(r) => r,
            _ => Release::MAINLINE,
        }
    }
}

#[cfg(test)]
mod tests;
