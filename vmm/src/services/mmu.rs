//! Page tables and data pages, done by the VMM for the guest: PT_OP (host
//! atomics on the page-table region), PT_TABLE (a table page is born empty,
//! and the IOMMU learns which tables are live), PAGE_OP (zero/copy/compare
//! data pages), and the guard on the read-only page-table region that
//! reports a direct store (EXPECT_STRAY_STORE / LAST_STRAY_STORE let the
//! self-test make one on purpose).

use std::sync::{Arc, Mutex};

use abi::hypercall::calls::{self, PageOpReply, PtOpReply, StrayStoreReply};
use abi::hypercall::{Flag, Op, PageOpKind, TableEvent};
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

pub struct Mmu {
    tables: Option<Arc<dyn TableTracker>>,
    stray: Mutex<Vec<StrayState>>,
}

impl Mmu {
    pub fn new(tables: Option<Arc<dyn TableTracker>>) -> Arc<Self> {
        Arc::new(Mmu { tables, stray: Mutex::new(Vec::new()) })
    }

    fn stray(&self, cpu: u64, f: impl FnOnce(&mut StrayState)) {
        let mut s = self.stray.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(st) = s.get_mut(cpu as usize) {
            f(st);
        }
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
    }
}

impl HypercallHandler for Mmu {
    fn name(&self) -> &'static str {
        "mmu"
    }

    fn ops(&self) -> &'static [Op] {
        &[Op::PtOp, Op::PtTable, Op::PageOp, Op::ExpectStrayStore, Op::LastStrayStore]
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
                if !layout::in_pt_region(r.table) || !r.table.is_multiple_of(PAGE_SIZE) {
                    return Err(GuestFault::rejected(
                        call.op,
                        format_args!("PT_TABLE {:#x} is not a page of the page-table region", r.table),
                    ));
                }
                match r.event {
                    TableEvent::Allocated => {
                        // A new table starts empty; the guest cannot write the region itself.
                        let zero = [0u8; PAGE_SIZE as usize];
                        ctx.mem
                            .write_slice(&zero, GuestAddress(r.table))
                            .map_err(|e| GuestFault::rejected(call.op, format_args!("PT_TABLE {:#x}: {e}", r.table)))?;
                        if let Some(t) = &self.tables {
                            t.table_allocated(r.table);
                        }
                    }
                    TableEvent::Freed => {
                        if let Some(t) = &self.tables {
                            t.table_freed(r.table);
                        }
                    }
                }
                Ok(Reply::empty())
            }
            Op::PageOp => {
                let r = call.request::<calls::PageOp>()?;
                let same = page_op(ctx.mem, r.kind, r.dst, r.src).map_err(|e| GuestFault::rejected(call.op, e))?;
                Ok(Reply::of::<calls::PageOp>(PageOpReply { same: same.into() }))
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
