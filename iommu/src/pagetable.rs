//! The x86-64 4-level page-table walker: one walker, two TLBs.
//!
//! Both the IOMMU (this crate) and the VMM's shadow MMU (vCPU TLB fills)
//! translate through the guest's page tables with [`walk`]. It behaves like
//! the hardware walker with `CR0.WP = 1`, `EFER.NXE = 1`, no SMEP/SMAP and
//! no protection keys:
//!
//! * levels 4 (PML4E) .. 1 (PTE); `PS` in a PDPTE maps 1 GiB, in a PDE 2 MiB;
//!   `PS` in a PML4E and a misaligned large-page frame are reserved-bit
//!   faults;
//! * rights are the AND of `RW` and `US`, and the OR of `NX`, over the levels
//!   walked; a user access needs `US` everywhere, a write (user or
//!   supervisor) needs `RW` everywhere, a fetch needs `NX` clear everywhere;
//! * with [`WalkMode::SetAccessedDirty`], `A` is set in every paging-structure
//!   entry the walk goes through, and in the leaf — plus `D` for a write —
//!   only once the access is known to be allowed (a faulting access leaves
//!   the leaf untouched). Each update is a compare-exchange on guest memory:
//!   if the guest changed the entry meanwhile, the entry is evaluated again
//!   from the new value, so a concurrent guest PTE operation is never lost
//!   and A/D never land on an entry the walk did not use;
//! * [`WalkMode::Peek`] writes nothing: the shadow MMU and the IOMMU use it to
//!   ask "what would a walk give now?" when checking a cached translation.
//!
//! A [`TableCheck`] says which pages are live page tables; reading an entry
//! from any other page ends the walk with [`WalkFault::StaleTable`] — the
//! device walked through a page table the guest had already freed.

use abi::iommu::{is_canonical, FaultReason};
use vm_memory::GuestMemory;

use crate::mem;

pub use abi::iommu::AccessOp;

/// Page-table entry bits.
pub mod pte {
    pub const P: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const US: u64 = 1 << 2;
    pub const PWT: u64 = 1 << 3;
    pub const PCD: u64 = 1 << 4;
    pub const A: u64 = 1 << 5;
    pub const D: u64 = 1 << 6;
    /// Page size (in a PDPTE / PDE); PAT in a PTE.
    pub const PS: u64 = 1 << 7;
    pub const G: u64 = 1 << 8;
    /// PAT bit of a 2 MiB / 1 GiB leaf.
    pub const PAT_LARGE: u64 = 1 << 12;
    pub const NX: u64 = 1 << 63;
    /// Physical address bits 51:12.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
}

/// Entries per table.
pub const ENTRIES: u64 = 512;

/// Bit position of the VA bits a level's index is taken from.
pub const fn level_shift(level: u8) -> u32 {
    12 + 9 * (level as u32 - 1)
}

/// Index of `va` in a table of `level` (4 = PML4 .. 1 = PT).
pub const fn va_index(va: u64, level: u8) -> u64 {
    (va >> level_shift(level)) & (ENTRIES - 1)
}

/// Bytes of VA one entry of `level` maps (4 KiB at level 1 .. 512 GiB at 4).
pub const fn level_span(level: u8) -> u64 {
    1 << level_shift(level)
}

/// Who accesses, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    pub op: AccessOp,
    /// A user-mode (CPL 3 / unprivileged PASID) access: needs `US`.
    pub user: bool,
}

impl Access {
    pub const fn new(op: AccessOp, user: bool) -> Self {
        Access { op, user }
    }
    pub const fn read(user: bool) -> Self {
        Access::new(AccessOp::Read, user)
    }
    pub const fn write(user: bool) -> Self {
        Access::new(AccessOp::Write, user)
    }
    pub const fn exec(user: bool) -> Self {
        Access::new(AccessOp::Exec, user)
    }
    pub const fn is_write(&self) -> bool {
        matches!(self.op, AccessOp::Write)
    }
    /// The access a guest #PF error code describes (bit 1 W/R, bit 2 U/S,
    /// bit 4 I/D): what the shadow MMU walks for on a fill.
    pub const fn from_pf_error_code(ec: u64) -> Self {
        let op = if ec & (1 << 4) != 0 {
            AccessOp::Exec
        } else if ec & (1 << 1) != 0 {
            AccessOp::Write
        } else {
            AccessOp::Read
        };
        Access::new(op, ec & (1 << 2) != 0)
    }
}

/// Whether a walk may write A/D bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkMode {
    /// No side effects at all (used to detect stale cached translations).
    Peek,
    /// As the hardware does: `A` on every level, `D` on the leaf for writes.
    SetAccessedDirty,
}

/// Size of the page a leaf maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageSize {
    Size4K,
    Size2M,
    Size1G,
}

impl PageSize {
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
            PageSize::Size1G => 1 << 30,
        }
    }
    /// Level of the leaf entry mapping a page of this size.
    pub const fn level(self) -> u8 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }
}

/// Rights accumulated over the levels walked so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perms {
    pub write: bool,
    pub user: bool,
    pub exec: bool,
}

impl Perms {
    /// Before the first level: everything allowed.
    pub const ALL: Perms = Perms { write: true, user: true, exec: true };

    /// Rights after also going through `entry`.
    pub const fn and_entry(self, entry: u64) -> Perms {
        Perms {
            write: self.write && entry & pte::RW != 0,
            user: self.user && entry & pte::US != 0,
            exec: self.exec && entry & pte::NX == 0,
        }
    }

    /// `Err` with the reason if these rights do not allow `access`. Checked
    /// in the order user/supervisor, write, execute.
    pub const fn check(self, access: Access) -> Result<(), FaultReason> {
        if access.user && !self.user {
            return Err(FaultReason::UserToSupervisor);
        }
        match access.op {
            AccessOp::Write if !self.write => Err(FaultReason::WriteToReadOnly),
            AccessOp::Exec if !self.exec => Err(FaultReason::ExecuteNx),
            _ => Ok(()),
        }
    }

    pub const fn allows(self, access: Access) -> bool {
        self.check(access).is_ok()
    }
}

/// One entry the walk read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// 4 = PML4E .. 1 = PTE.
    pub level: u8,
    /// GPA of the table the entry is in.
    pub table: u64,
    /// GPA of the entry.
    pub entry_gpa: u64,
    /// The entry's value as the walk used it (including A/D it set).
    pub entry: u64,
}

/// The entries a walk read, top level first. At most four.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Path {
    steps: [Step; 4],
    len: u8,
}

impl Path {
    fn push(&mut self, s: Step) {
        // A walk reads at most one entry per level (4 levels), so this never
        // overflows; stay panic-free regardless.
        if let Some(slot) = self.steps.get_mut(self.len as usize) {
            *slot = s;
            self.len += 1;
        }
    }
    pub fn steps(&self) -> &[Step] {
        &self.steps[..self.len as usize]
    }
    pub fn last(&self) -> Option<&Step> {
        self.steps().last()
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The VA translated.
    pub va: u64,
    /// The physical address of `va` (page frame + offset).
    pub pa: u64,
    pub size: PageSize,
    /// Rights over all levels.
    pub perms: Perms,
    /// `D` is set in the leaf (after this walk): a cached copy may be used
    /// for writes without walking again.
    pub dirty: bool,
    /// The leaf entry and its GPA.
    pub leaf: u64,
    pub leaf_gpa: u64,
}

impl Translation {
    /// Start of the (possibly large) page, VA and PA.
    pub const fn page_va(&self) -> u64 {
        self.va & !(self.size.bytes() - 1)
    }
    pub const fn page_pa(&self) -> u64 {
        self.pa & !(self.size.bytes() - 1)
    }
    /// PA of the 4 KiB page holding `va`.
    pub const fn pa_4k(&self) -> u64 {
        self.pa & !0xfff
    }
}

/// Why a walk did not give a translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkFault {
    /// `P` = 0 in the entry at `level`.
    NotPresent { level: u8, entry: u64, entry_gpa: u64 },
    /// The rights do not allow the access (`reason` is one of
    /// `UserToSupervisor`, `WriteToReadOnly`, `ExecuteNx`); `level`/`entry`
    /// are the leaf's, as x86 reports protection faults per page.
    Protection { reason: FaultReason, level: u8, entry: u64, entry_gpa: u64 },
    /// A reserved bit is set in the entry at `level`.
    ReservedBit { level: u8, entry: u64, entry_gpa: u64 },
    /// The VA is not canonical; nothing was read.
    NonCanonical,
    /// The entry of `level` at `entry_gpa` is not guest RAM.
    TableNotRam { level: u8, entry_gpa: u64 },
    /// The table of `level` at `table` is not a live page table: the walk
    /// would have read a freed page. Nothing was read from it.
    StaleTable { level: u8, table: u64 },
}

impl WalkFault {
    /// The page-request reason; `None` for [`WalkFault::StaleTable`], which
    /// real hardware cannot detect (it is this emulator's oracle).
    pub const fn reason(&self) -> Option<FaultReason> {
        Some(match self {
            WalkFault::NotPresent { .. } => FaultReason::NotPresent,
            WalkFault::Protection { reason, .. } => *reason,
            WalkFault::ReservedBit { .. } => FaultReason::ReservedBit,
            WalkFault::NonCanonical => FaultReason::NonCanonical,
            WalkFault::TableNotRam { .. } => FaultReason::TableNotRam,
            WalkFault::StaleTable { .. } => return None,
        })
    }
    /// Level of the entry involved, 0 if none.
    pub const fn level(&self) -> u8 {
        match *self {
            WalkFault::NotPresent { level, .. }
            | WalkFault::Protection { level, .. }
            | WalkFault::ReservedBit { level, .. }
            | WalkFault::TableNotRam { level, .. }
            | WalkFault::StaleTable { level, .. } => level,
            WalkFault::NonCanonical => 0,
        }
    }
    /// The entry value involved (0 if none was read).
    pub const fn entry(&self) -> u64 {
        match *self {
            WalkFault::NotPresent { entry, .. }
            | WalkFault::Protection { entry, .. }
            | WalkFault::ReservedBit { entry, .. } => entry,
            _ => 0,
        }
    }
    /// GPA of the entry involved (for `StaleTable`: the table), 0 if none.
    pub const fn entry_gpa(&self) -> u64 {
        match *self {
            WalkFault::NotPresent { entry_gpa, .. }
            | WalkFault::Protection { entry_gpa, .. }
            | WalkFault::ReservedBit { entry_gpa, .. }
            | WalkFault::TableNotRam { entry_gpa, .. } => entry_gpa,
            WalkFault::StaleTable { table, .. } => table,
            WalkFault::NonCanonical => 0,
        }
    }
}

/// What a walk read and what it gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    pub path: Path,
    pub result: Result<Translation, WalkFault>,
}

/// Which guest pages are live page tables.
pub trait TableCheck {
    fn is_live_table(&self, gpa: u64) -> bool;
}

/// Every page is a live table (no tracking).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllLive;

impl TableCheck for AllLive {
    fn is_live_table(&self, _gpa: u64) -> bool {
        true
    }
}

/// Where a walk starts: the root, or a table found in a paging-structure
/// cache with the rights of the levels above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkStart {
    /// Level of the entries of `table` (4 = the PML4).
    pub level: u8,
    /// GPA of the table (4 KiB aligned).
    pub table: u64,
    /// Rights of the levels above `level`.
    pub perms: Perms,
}

impl WalkStart {
    /// A walk from `cr3` (flag bits 11:0 and bits 63:52 are dropped).
    pub const fn root(cr3: u64) -> Self {
        WalkStart { level: 4, table: cr3 & pte::ADDR_MASK, perms: Perms::ALL }
    }
}

/// Walks the page tables rooted at `cr3` for `va`.
pub fn walk<M: GuestMemory + ?Sized>(
    mem: &M,
    cr3: u64,
    va: u64,
    access: Access,
    mode: WalkMode,
    tables: &dyn TableCheck,
) -> Walk {
    walk_from(mem, WalkStart::root(cr3), va, access, mode, tables)
}

/// Walks from `start` (a level-`start.level` table) down to the leaf for `va`.
/// A `start.level` outside 1..=4 is treated as 4.
pub fn walk_from<M: GuestMemory + ?Sized>(
    mem: &M,
    start: WalkStart,
    va: u64,
    access: Access,
    mode: WalkMode,
    tables: &dyn TableCheck,
) -> Walk {
    let mut path = Path::default();
    let result = walk_inner(mem, start, va, access, mode, tables, &mut path);
    Walk { path, result }
}

fn walk_inner<M: GuestMemory + ?Sized>(
    mem: &M,
    start: WalkStart,
    va: u64,
    access: Access,
    mode: WalkMode,
    tables: &dyn TableCheck,
    path: &mut Path,
) -> Result<Translation, WalkFault> {
    if !is_canonical(va) {
        return Err(WalkFault::NonCanonical);
    }
    let mut level = if (1..=4).contains(&start.level) { start.level } else { 4 };
    let mut table = start.table & pte::ADDR_MASK;
    let mut perms = start.perms;
    loop {
        if !tables.is_live_table(table) {
            return Err(WalkFault::StaleTable { level, table });
        }
        let entry_gpa = table + va_index(va, level) * 8;
        let not_ram = WalkFault::TableNotRam { level, entry_gpa };
        let mut e = mem::load_u64(mem, entry_gpa).map_err(|_| not_ram)?;
        // Evaluate `e`; if setting A/D races with a guest update, evaluate the
        // value the guest left instead (the hardware's locked RMW does the same).
        loop {
            let step = |entry| Step { level, table, entry_gpa, entry };
            if e & pte::P == 0 {
                path.push(step(e));
                return Err(WalkFault::NotPresent { level, entry: e, entry_gpa });
            }
            let large = (level == 2 || level == 3) && e & pte::PS != 0;
            let reserved = match level {
                4 => e & pte::PS != 0,
                3 if large => e & pte::ADDR_MASK & (PageSize::Size1G.bytes() - 1) & !pte::PAT_LARGE != 0,
                2 if large => e & pte::ADDR_MASK & (PageSize::Size2M.bytes() - 1) & !pte::PAT_LARGE != 0,
                _ => false,
            };
            if reserved {
                path.push(step(e));
                return Err(WalkFault::ReservedBit { level, entry: e, entry_gpa });
            }
            let rights = perms.and_entry(e);
            let leaf = level == 1 || large;
            let want = if !leaf {
                pte::A
            } else {
                if let Err(reason) = rights.check(access) {
                    path.push(step(e));
                    return Err(WalkFault::Protection { reason, level, entry: e, entry_gpa });
                }
                if access.is_write() {
                    pte::A | pte::D
                } else {
                    pte::A
                }
            };
            if mode == WalkMode::SetAccessedDirty && e & want != want {
                match mem::cmpxchg_u64(mem, entry_gpa, e, e | want) {
                    Ok(Ok(_)) => e |= want,
                    Ok(Err(actual)) => {
                        e = actual;
                        continue;
                    }
                    Err(_) => return Err(not_ram),
                }
            }
            path.push(step(e));
            if leaf {
                let size = match level {
                    1 => PageSize::Size4K,
                    2 => PageSize::Size2M,
                    _ => PageSize::Size1G,
                };
                let mask = size.bytes() - 1;
                let frame = e & pte::ADDR_MASK & !mask;
                return Ok(Translation {
                    va,
                    pa: frame | (va & mask),
                    size,
                    perms: rights,
                    dirty: e & pte::D != 0,
                    leaf: e,
                    leaf_gpa: entry_gpa,
                });
            }
            perms = rights;
            table = e & pte::ADDR_MASK;
            level -= 1;
            break;
        }
    }
}
