//! Page tables and data pages, done by the VMM for the guest: PT_OP (host
//! atomics on the page-table region), PT_TABLE (a table page is born empty,
//! and the IOMMU learns which tables are live), PAGE_OP (zero/copy/compare
//! data pages), PT_BATCH (several of them in one exit), and the guard on
//! the read-only page-table region that
//! reports a direct store (EXPECT_STRAY_STORE / LAST_STRAY_STORE let the
//! self-test make one on purpose).

use std::sync::{Arc, Mutex};

use abi::hypercall::calls::{self, PageOpReply, PtBatchReply, PtOpReply, StrayStoreReply};
use abi::hypercall::{BatchEntry, Flag, Op, PageOpKind, TableEvent};
use abi::layout::{self, PAGE_SIZE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::shadow;
use crate::vstate::exit::le_value;
use crate::vstate::{
    BusDevice, Call, Flow, GuestFault, HypercallHandler, Reply, Service, SetupError, VcpuCtx, VmSetup,
};

/// Told when the guest allocates or frees a page-table page (the IOMMU's
/// live-table registry).
pub trait TableTracker: Send + Sync {
    fn table_allocated(&self, gpa: u64);
    fn table_freed(&self, gpa: u64);
}

#[derive(Default, Clone, Copy)]
struct StrayState {
    expected: bool,
    last: Option<StrayStoreReply>,
}

/// Flushes a vCPU's modelled TLB (a `PT_BATCH`'s flush entry: the TLB
/// service's FLUSH without its follow-ups).
pub trait LocalFlush: Send + Sync {
    fn flush_local(
        &self,
        ctx: &VcpuCtx<'_>,
        kind: abi::hypercall::FlushKind,
        va: u64,
        len: u64,
        last_level: bool,
    ) -> Result<(), String>;
}

pub struct Mmu {
    tables: Option<Arc<dyn TableTracker>>,
    tlb: Option<Arc<dyn LocalFlush>>,
    stray: Mutex<Vec<StrayState>>,
}

impl Mmu {
    pub fn new(tables: Option<Arc<dyn TableTracker>>, tlb: Option<Arc<dyn LocalFlush>>) -> Arc<Self> {
        Arc::new(Mmu { tables, tlb, stray: Mutex::new(Vec::new()) })
    }

    fn stray(&self, cpu: u64, f: impl FnOnce(&mut StrayState)) {
        let mut s = self.stray.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(st) = s.get_mut(cpu as usize) {
            f(st);
        }
    }
}

impl Mmu {
    /// A page-table page was allocated (it is zeroed: the guest cannot
    /// write the region) or freed; the IOMMU's live-table registry hears it.
    fn pt_table(&self, mem: &GuestMemoryMmap, event: TableEvent, table: u64) -> Result<(), String> {
        if !layout::in_pt_region(table) || !table.is_multiple_of(PAGE_SIZE) {
            return Err(format!("PT_TABLE {table:#x} is not a page of the page-table region"));
        }
        match event {
            TableEvent::Allocated => {
                let zero = [0u8; PAGE_SIZE as usize];
                mem.write_slice(&zero, GuestAddress(table)).map_err(|e| format!("PT_TABLE {table:#x}: {e}"))?;
                if let Some(t) = &self.tables {
                    t.table_allocated(table);
                }
            }
            TableEvent::Freed => {
                if let Some(t) = &self.tables {
                    t.table_freed(table);
                }
            }
        }
        Ok(())
    }
}

impl Service for Mmu {
    fn name(&self) -> &'static str {
        "mmu"
    }

    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError> {
        *self.stray.lock().unwrap_or_else(|e| e.into_inner()) = vec![StrayState::default(); vm.vcpus as usize];
        vm.add_mmio(layout::PT_BASE, layout::PT_SIZE, Arc::new(PtRegionGuard(self.clone())))?;
        vm.add_hypercalls(self)
    }
}

/// A data page a PAGE_OP may touch: 4 KiB aligned, `FREE_START` up, in RAM.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PageOpError {
    #[error("PAGE_OP on GPA {gpa:#x}: not a 4 KiB-aligned data page ({:#x}..{end:#x})", layout::FREE_START)]
    NotADataPage { gpa: u64, end: u64 },
    #[error("PAGE_OP on GPA {gpa:#x}: {reason}")]
    Memory { gpa: u64, reason: String },
}

/// `PAGE_OP`: zero, copy or compare whole data pages on host memory.
pub fn page_op(mem: &GuestMemoryMmap, kind: PageOpKind, dst: u64, src: u64) -> Result<bool, PageOpError> {
    const PAGE: usize = PAGE_SIZE as usize;
    let end = mem.last_addr().0.saturating_add(1);
    let check = |gpa: u64| {
        let fits = gpa.checked_add(PAGE_SIZE).is_some_and(|e| e <= end);
        if gpa.is_multiple_of(PAGE_SIZE) && gpa >= layout::FREE_START && fits {
            Ok(GuestAddress(gpa))
        } else {
            Err(PageOpError::NotADataPage { gpa, end })
        }
    };
    let me = |gpa: u64| move |e: vm_memory::GuestMemoryError| PageOpError::Memory { gpa, reason: e.to_string() };
    let mut buf = [0u8; PAGE];
    match kind {
        PageOpKind::Zero => {
            mem.write_slice(&buf, check(dst)?).map_err(me(dst))?;
            Ok(true)
        }
        PageOpKind::Copy => {
            mem.read_slice(&mut buf, check(src)?).map_err(me(src))?;
            mem.write_slice(&buf, check(dst)?).map_err(me(dst))?;
            Ok(true)
        }
        PageOpKind::Compare => {
            let mut other = [0u8; PAGE];
            mem.read_slice(&mut buf, check(dst)?).map_err(me(dst))?;
            mem.read_slice(&mut other, check(src)?).map_err(me(src))?;
            Ok(buf == other)
        }
        PageOpKind::Init => {
            buf[..8].copy_from_slice(&src.to_le_bytes());
            mem.write_slice(&buf, check(dst)?).map_err(me(dst))?;
            Ok(true)
        }
    }
}

impl HypercallHandler for Mmu {
    fn name(&self) -> &'static str {
        "mmu"
    }

    fn ops(&self) -> &'static [Op] {
        &[Op::PtOp, Op::PtTable, Op::PageOp, Op::PtBatch, Op::ExpectStrayStore, Op::LastStrayStore]
    }

    fn handle(&self, ctx: &mut VcpuCtx<'_>, call: &Call<'_>) -> Result<Reply, GuestFault> {
        match call.op {
            Op::PtOp => {
                let r = call.request::<calls::PtOp>()?;
                let (old, changed) =
                    shadow::pt_op(ctx.mem, r.kind, r.entry, r.a, r.b).map_err(|e| GuestFault::rejected(call.op, e))?;
                Ok(Reply::of::<calls::PtOp>(PtOpReply { old, changed: changed.into() }))
            }
            Op::PtTable => {
                let r = call.request::<calls::PtTable>()?;
                self.pt_table(ctx.mem, r.event, r.table).map_err(|e| GuestFault::rejected(call.op, e))?;
                Ok(Reply::empty())
            }
            Op::PageOp => {
                let r = call.request::<calls::PageOp>()?;
                let same = page_op(ctx.mem, r.kind, r.dst, r.src).map_err(|e| GuestFault::rejected(call.op, e))?;
                Ok(Reply::of::<calls::PageOp>(PageOpReply { same: same.into() }))
            }
            Op::PtBatch => {
                let r = call.request::<calls::PtBatch>()?;
                let n = r.count as usize;
                if n > BatchEntry::MAX || n * BatchEntry::LEN > call.data.len() {
                    return Err(GuestFault::rejected(
                        call.op,
                        format_args!(
                            "PT_BATCH of {n} entries with {} bytes of data (at most {})",
                            call.data.len(),
                            BatchEntry::MAX
                        ),
                    ));
                }
                let mut last = 0;
                for (i, chunk) in call.data[..n * BatchEntry::LEN].chunks_exact(BatchEntry::LEN).enumerate() {
                    let mut w = [0u64; 4];
                    for (k, v) in w.iter_mut().enumerate() {
                        *v = u64::from_le_bytes(chunk[8 * k..8 * k + 8].try_into().unwrap_or([0; 8]));
                    }
                    let entry = BatchEntry::decode(w)
                        .map_err(|e| GuestFault::rejected(call.op, format_args!("entry {i}: {e}")))?;
                    let at = |e: String| GuestFault::rejected(call.op, format_args!("entry {i}: {e}"));
                    last = match entry {
                        BatchEntry::PtOp { kind, entry, a, b } => {
                            shadow::pt_op(ctx.mem, kind, entry, a, b).map_err(|e| at(e.to_string()))?.0
                        }
                        BatchEntry::PtTable { event, table, .. } => {
                            self.pt_table(ctx.mem, event, table).map_err(&at)?;
                            0
                        }
                        BatchEntry::PageOp { kind, dst, src } => {
                            page_op(ctx.mem, kind, dst, src).map_err(|e| at(e.to_string()))? as u64
                        }
                        BatchEntry::Flush { kind, va, len, last_level } => {
                            let tlb = self.tlb.as_ref().ok_or_else(|| at("no TLB to flush".into()))?;
                            tlb.flush_local(ctx, kind, va, len, last_level).map_err(&at)?;
                            0
                        }
                    };
                }
                Ok(Reply::of::<calls::PtBatch>(PtBatchReply { last }))
            }
            Op::ExpectStrayStore => {
                self.stray(ctx.cpu, |s| *s = StrayState { expected: true, last: None });
                Ok(Reply::empty())
            }
            Op::LastStrayStore => {
                let mut last = StrayStoreReply { gpa: 0, value: 0, rip: 0, recorded: Flag::NO };
                self.stray(ctx.cpu, |s| last = s.last.unwrap_or(last));
                Ok(Reply::of::<calls::LastStrayStore>(last))
            }
            other => Err(crate::vstate::HypercallError::NotServed(other).into()),
        }
    }
}

/// The page-table region as the MMIO bus sees it: under lazy/evict it is a
/// read-only memslot, so a direct store exits here. Never applied; a guest
/// error unless the vCPU announced it (the stray-store self-test).
struct PtRegionGuard(Arc<Mmu>);

impl BusDevice for PtRegionGuard {
    fn read(&self, _: &mut VcpuCtx<'_>, offset: u64, data: &mut [u8]) -> Result<(), GuestFault> {
        // The region is RAM: reads never exit. Should one, it is a stray access.
        Err(GuestFault::StrayAccess { addr: layout::PT_BASE + offset, len: data.len(), value: None })
    }

    fn write(&self, ctx: &mut VcpuCtx<'_>, offset: u64, data: &[u8]) -> Result<Flow, GuestFault> {
        let (gpa, value) = (layout::PT_BASE + offset, le_value(data));
        let mut expected = false;
        self.0.stray(ctx.cpu, |s| expected = std::mem::take(&mut s.expected));
        if expected {
            let rip = ctx.regs.rip().unwrap_or(u64::MAX);
            self.0.stray(ctx.cpu, |s| s.last = Some(StrayStoreReply { gpa, value, rip, recorded: Flag::YES }));
            return Ok(Flow::Resume);
        }
        Err(GuestFault::StrayPageTableStore { gpa, value, len: data.len() })
    }
}
