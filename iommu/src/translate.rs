//! Translation: IOTLB / device-TLB lookups with the stale-hit check, the
//! paging-structure cache, the walk, fills, random eviction and faults.

use abi::iommu::{AccessOp, FaultReason, PageRequest};
use vm_memory::GuestMemory;

use crate::cache::Eviction;
use crate::mem;
use crate::pagetable::{self, pte, Access, Perms, WalkFault, WalkMode, WalkStart};
use crate::tlb::{IotlbEntry, IotlbKey, PwcEntry, PwcKey, Tlb};
use crate::{CacheKind, DeviceFault, DmaError, Event, EvictReason, Iommu, StaleCause};

/// Where a device translation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    DevTlb,
    Iotlb,
    /// A walk; `pwc_level` is the level of the PWC entry it started below.
    Walk {
        pwc_level: Option<u8>,
    },
}

/// The result of [`Iommu::translate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceTranslation {
    /// The GPA `va` maps to.
    pub pa: u64,
    pub perms: Perms,
    pub source: Source,
    /// A cached translation that no longer matches the page tables.
    pub stale: bool,
}

/// Counters (monotonic until [`Iommu::reset`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub translations: u64,
    pub iotlb_hits: u64,
    pub devtlb_hits: u64,
    pub stale_hits: u64,
    pub misses: u64,
    pub pwc_hits: u64,
    pub walks: u64,
    pub faults: u64,
    pub stale_walks: u64,
    pub evictions: u64,
    pub descriptors: u64,
    pub waits: u64,
    pub queue_errors: u64,
    pub page_requests: u64,
    pub page_requests_dropped: u64,
}

impl Iommu {
    // ---- translation ----------------------------------------------------

    fn random_evictions(&mut self) {
        let sink = &self.sink;
        let stats = &mut self.stats;
        let tlbs = std::iter::once(&mut self.iotlb).chain(self.devtlb.as_mut());
        for tlb in tlbs {
            if let Eviction::Evict(p) = tlb.cache.config().eviction {
                let kind = tlb.kind;
                let mut gone = Vec::new();
                tlb.cache.drop_random(p, |k, e| gone.push((k, e)));
                for (k, e) in gone {
                    tlb.note_gone(&e);
                    stats.evictions += 1;
                    sink.record(&Event::Evict {
                        cache: kind,
                        pasid: k.pasid,
                        va: k.vpn << 12,
                        level: e.size.level(),
                        reason: EvictReason::Random,
                    });
                }
            }
        }
        if let Some(pwc) = &mut self.pwc {
            if let Eviction::Evict(p) = pwc.config().eviction {
                pwc.drop_random(p, |k, _| {
                    stats.evictions += 1;
                    sink.record(&Event::Evict {
                        cache: CacheKind::Pwc,
                        pasid: k.pasid,
                        va: k.region().0,
                        level: k.level,
                        reason: EvictReason::Random,
                    });
                });
            }
        }
    }

    fn tlb_mut(&mut self, kind: CacheKind) -> Option<&mut Tlb> {
        match kind {
            CacheKind::Iotlb => Some(&mut self.iotlb),
            CacheKind::DevTlb => self.devtlb.as_mut(),
            CacheKind::Pwc => None,
        }
    }

    /// Looks `key` up in one TLB. An entry that does not allow the access
    /// (rights, or a write to a page cached before it was dirty) is dropped
    /// and the access walks again, as an x86 TLB re-walks to set `D`.
    fn tlb_hit<M: GuestMemory + ?Sized>(
        &mut self,
        kind: CacheKind,
        key: IotlbKey,
        va: u64,
        op: AccessOp,
        mem: &M,
    ) -> Option<DeviceTranslation> {
        let tlb = self.tlb_mut(kind)?;
        let e = *tlb.cache.lookup(&key)?;
        let access = Access::new(op, !e.privileged);
        if !e.perms.allows(access) || (access.is_write() && !e.dirty) {
            tlb.remove(&key);
            self.stats.evictions += 1;
            self.emit(Event::Evict {
                cache: kind,
                pasid: key.pasid,
                va: va & !0xfff,
                level: e.size.level(),
                reason: EvictReason::Refill,
            });
            return None;
        }
        match kind {
            CacheKind::DevTlb => self.stats.devtlb_hits += 1,
            _ => self.stats.iotlb_hits += 1,
        }
        let pa = e.pa | (va & 0xfff);
        let stale = self.cfg.stale_hit_check && self.check_stale(kind, key.pasid, va, op, &e, mem);
        self.emit(Event::Hit { cache: kind, pasid: key.pasid, va, pa, stale });
        Some(DeviceTranslation {
            pa,
            perms: e.perms,
            source: if kind == CacheKind::DevTlb { Source::DevTlb } else { Source::Iotlb },
            stale,
        })
    }

    fn check_stale<M: GuestMemory + ?Sized>(
        &mut self,
        kind: CacheKind,
        pasid_: u32,
        va: u64,
        op: AccessOp,
        e: &IotlbEntry,
        mem: &M,
    ) -> bool {
        let cause = match self.binding(pasid_, mem) {
            Err((r, _, _)) => Some(StaleCause::PasidUnbound(r)),
            Ok(b) => {
                let access = Access::new(op, !e.privileged);
                match pagetable::walk(mem, b.root, va, access, WalkMode::Peek, &self.tables).result {
                    Ok(t) if t.pa_4k() == e.pa => None,
                    Ok(t) => Some(StaleCause::Remapped { pa: t.pa_4k(), pte: t.leaf }),
                    Err(WalkFault::Protection { reason, entry, .. })
                        if entry & pte::ADDR_MASK & !(e.size.bytes() - 1) == e.pa & !(e.size.bytes() - 1) =>
                    {
                        Some(StaleCause::PermissionRevoked { reason, pte: entry })
                    }
                    Err(WalkFault::Protection { reason, entry, .. }) => {
                        let _ = reason;
                        Some(StaleCause::Remapped { pa: entry & pte::ADDR_MASK, pte: entry })
                    }
                    Err(f) => Some(StaleCause::Unmapped(f)),
                }
            }
        };
        let Some(cause) = cause else { return false };
        self.stats.stale_hits += 1;
        self.emit(Event::StaleHit {
            cache: kind,
            pasid: pasid_,
            va,
            cached_pa: e.pa | (va & 0xfff),
            cached_pte: e.pte,
            cause,
        });
        true
    }

    /// Where a walk starts: below the lowest paging-structure-cache hit, or
    /// the root. The third value is set when the hit points at a table
    /// that was freed after the entry was cached.
    fn pwc_start(&mut self, pasid_: u32, va: u64, root: u64) -> (WalkStart, Option<u8>, bool) {
        if let Some(pwc) = &mut self.pwc {
            for level in [2u8, 3, 4] {
                if let Some(e) = pwc.lookup(&PwcKey::for_va(pasid_, level, va)) {
                    let start = WalkStart { level: level - 1, table: e.table, perms: e.perms };
                    let freed = self.tables.tracking() && e.table_gen != self.tables.generation(e.table);
                    self.stats.pwc_hits += 1;
                    self.sink.record(&Event::PwcHit { pasid: pasid_, va, level, table: e.table });
                    return (start, Some(level), freed);
                }
            }
        }
        (WalkStart::root(root), None, false)
    }

    /// Caches the non-leaf entries a walk read (present, not a large leaf,
    /// `A` already set by the walk).
    fn pwc_fill(&mut self, pasid_: u32, va: u64, start: WalkStart, path: &pagetable::Path) {
        let Some(pwc) = &mut self.pwc else { return };
        let mut perms = start.perms;
        for s in path.steps() {
            perms = perms.and_entry(s.entry);
            if s.level < 2 || s.entry & pte::P == 0 || s.entry & pte::PS != 0 {
                continue;
            }
            let key = PwcKey::for_va(pasid_, s.level, va);
            let table = s.entry & pte::ADDR_MASK;
            let table_gen = self.tables.generation(table);
            let victim = pwc.insert(key, PwcEntry { table, perms, entry: s.entry, table_gen });
            self.sink.record(&Event::PwcFill {
                pasid: pasid_,
                va: key.region().0,
                level: s.level,
                table,
                entry: s.entry,
            });
            if let Some((k, _)) = victim {
                self.stats.evictions += 1;
                self.sink.record(&Event::Evict {
                    cache: CacheKind::Pwc,
                    pasid: k.pasid,
                    va: k.region().0,
                    level: k.level,
                    reason: EvictReason::Capacity,
                });
            }
        }
    }

    fn tlb_fill(&mut self, kind: CacheKind, key: IotlbKey, e: IotlbEntry, va: u64) {
        let Some(tlb) = self.tlb_mut(kind) else { return };
        let victim = tlb.insert(key, e);
        self.emit(Event::Fill {
            cache: kind,
            pasid: key.pasid,
            va,
            pa: e.pa | (va & 0xfff),
            pte: e.pte,
            size: e.size,
            perms: e.perms,
            dirty: e.dirty,
        });
        if let Some((k, v)) = victim {
            self.stats.evictions += 1;
            self.emit(Event::Evict {
                cache: kind,
                pasid: k.pasid,
                va: k.vpn << 12,
                level: v.size.level(),
                reason: EvictReason::Capacity,
            });
        }
    }

    /// Records a translation fault: page-request queue, event, counters.
    fn fault<M: GuestMemory + ?Sized>(&mut self, request: PageRequest, mem: &M) -> DmaError {
        self.stats.faults += 1;
        let (queued, msi) = self.prq_push(&request, mem);
        self.emit(Event::Fault { request, queued });
        DmaError::Fault(DeviceFault { request, queued, msi })
    }

    /// Translates `va` of `pasid` for an access `op` as the device does:
    /// device TLB (if any) -> IOTLB -> paging-structure cache -> walk (A/D
    /// set), filling the caches. A hit is used even if stale (and reported).
    /// A fault is queued as a page request.
    pub fn translate<M: GuestMemory + ?Sized>(
        &mut self,
        pasid_: u32,
        va: u64,
        op: AccessOp,
        mem: &M,
    ) -> Result<DeviceTranslation, DmaError> {
        self.stats.translations += 1;
        self.random_evictions();
        let key = IotlbKey { pasid: pasid_, vpn: va >> 12 };
        if let Some(t) = self.tlb_hit(CacheKind::DevTlb, key, va, op, mem) {
            return Ok(t);
        }
        if let Some(t) = self.tlb_hit(CacheKind::Iotlb, key, va, op, mem) {
            if self.devtlb.is_some() {
                if let Some(e) = self.iotlb.cache.peek(&key).copied() {
                    self.tlb_fill(CacheKind::DevTlb, key, e, va);
                }
            }
            return Ok(t);
        }
        self.stats.misses += 1;
        let b = match self.binding(pasid_, mem) {
            Ok(b) => b,
            Err((reason, entry, entry_gpa)) => {
                let req = PageRequest { pasid: pasid_, op, privileged: false, level: 0, reason, va, entry, entry_gpa };
                return Err(self.fault(req, mem));
            }
        };
        let access = Access::new(op, !b.privileged);
        let (start, pwc_level, freed_table) = self.pwc_start(pasid_, va, b.root);
        if freed_table {
            // The cached pointer leads into a page-table page the guest
            // freed (and maybe reused): the walk reads it, as hardware
            // would, but its result is the guest's bug, not a translation.
            let (level, table) = (start.level, start.table);
            self.stats.stale_walks += 1;
            let entry = mem::load_u64(mem, table + pagetable::va_index(va, level) * 8).ok();
            self.emit(Event::StaleWalk { pasid: pasid_, va, level, table, entry, via_pwc: true });
            return Err(DmaError::StaleWalk { pasid: pasid_, va, level, table });
        }
        let w = pagetable::walk_from(mem, start, va, access, WalkMode::SetAccessedDirty, &self.tables);
        self.stats.walks += 1;
        self.emit(Event::Walk { pasid: pasid_, va, access, pwc_level, path: w.path });
        self.pwc_fill(pasid_, va, start, &w.path);
        match w.result {
            Ok(t) => {
                let e = IotlbEntry {
                    pa: t.pa_4k(),
                    page_va: t.page_va(),
                    size: t.size,
                    perms: t.perms,
                    dirty: t.dirty,
                    privileged: b.privileged,
                    pte: t.leaf,
                    pte_gpa: t.leaf_gpa,
                };
                self.tlb_fill(CacheKind::Iotlb, key, e, va);
                self.tlb_fill(CacheKind::DevTlb, key, e, va);
                Ok(DeviceTranslation { pa: t.pa, perms: t.perms, source: Source::Walk { pwc_level }, stale: false })
            }
            Err(WalkFault::StaleTable { level, table }) => {
                self.stats.stale_walks += 1;
                let entry = mem::load_u64(mem, table + pagetable::va_index(va, level) * 8).ok();
                self.emit(Event::StaleWalk {
                    pasid: pasid_,
                    va,
                    level,
                    table,
                    entry,
                    via_pwc: pwc_level.is_some() && w.path.is_empty(),
                });
                Err(DmaError::StaleWalk { pasid: pasid_, va, level, table })
            }
            Err(f) => {
                let req = PageRequest {
                    pasid: pasid_,
                    op,
                    privileged: b.privileged,
                    level: f.level(),
                    reason: f.reason().unwrap_or(FaultReason::NotPresent),
                    va,
                    entry: f.entry(),
                    entry_gpa: f.entry_gpa(),
                };
                Err(self.fault(req, mem))
            }
        }
    }
}
