//! The secondary MMU: the IOMMU emulator (`iommu` crate) behind its MMIO
//! register page, the DMA engine that runs device programs through it,
//! DMA_SUBMIT and IOMMU_STATS, and the live-table registry PT_TABLE feeds.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use abi::hypercall::calls::{self, DmaSubmitReply, IommuStatsReply};
use abi::hypercall::Op;
use abi::iommu::{IOMMU_MMIO_BASE, IOMMU_MMIO_SIZE};
use abi::layout;
use iommu::{EventSink, Iommu, IommuConfig};

use super::mmu::TableTracker;
use crate::devices::dma::{DmaEngine, SubmitError};
use crate::devices::iommu::IommuMmio;
use crate::vstate::{Call, GuestFault, HypercallHandler, Reply, Service, SetupError, VcpuCtx, VmSetup};

struct Running {
    iommu: Arc<Mutex<Iommu>>,
    dma: DmaEngine,
}

pub struct IommuService {
    cfg: IommuConfig,
    sink: Option<Arc<dyn EventSink>>,
    running: OnceLock<Running>,
}

impl IommuService {
    pub fn new(cfg: IommuConfig, sink: Option<Arc<dyn EventSink>>) -> Arc<Self> {
        Arc::new(IommuService { cfg, sink, running: OnceLock::new() })
    }

    fn iommu(&self) -> Option<MutexGuard<'_, Iommu>> {
        self.running.get().map(|r| r.iommu.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs the device program at `program` on the calling thread (tests, fuzzing).
    pub fn run_program_now(&self, program: u64) -> Result<(), crate::devices::dma::ProgramError> {
        match self.running.get() {
            Some(r) => r.dma.run_now(program),
            None => Err(crate::devices::dma::ProgramError::Stopped),
        }
    }

    /// Device workers started in this run (at most one per slot).
    pub fn dma_workers(&self) -> usize {
        self.running.get().map_or(0, |r| r.dma.workers())
    }
}

impl Service for IommuService {
    fn name(&self) -> &'static str {
        "iommu"
    }

    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError> {
        let mut io = Iommu::new(self.cfg).map_err(|e| SetupError::service("IOMMU config", e))?;
        io.set_table_tracking(true);
        io.set_write_filter(layout::guest_writable);
        if let Some(s) = &self.sink {
            io.set_sink(s.clone());
        }
        let iommu = Arc::new(Mutex::new(io));
        let msi = vm.msi.clone();
        let dma = DmaEngine::new(vm.mem.clone(), iommu.clone(), Arc::new(move |m| msi(m.address, m.data)));
        vm.add_mmio(
            IOMMU_MMIO_BASE,
            IOMMU_MMIO_SIZE,
            Arc::new(IommuMmio { iommu: iommu.clone(), msi: vm.msi.clone() }),
        )?;
        if self.running.set(Running { iommu, dma }).is_err() {
            return Err(SetupError::service("iommu", "set up twice"));
        }
        vm.add_hypercalls(self)
    }

    fn stopping(&self) {
        if let Some(r) = self.running.get() {
            r.dma.stop();
        }
    }
}

impl TableTracker for IommuService {
    fn table_allocated(&self, gpa: u64) {
        if let Some(mut io) = self.iommu() {
            io.table_allocated(gpa);
        }
    }
    fn table_freed(&self, gpa: u64) {
        if let Some(mut io) = self.iommu() {
            io.table_freed(gpa);
        }
    }
}

impl HypercallHandler for IommuService {
    fn name(&self) -> &'static str {
        "iommu"
    }

    fn ops(&self) -> &'static [Op] {
        &[Op::DmaSubmit, Op::IommuStats]
    }

    fn handle(&self, _ctx: &mut VcpuCtx<'_>, call: &Call<'_>) -> Result<Reply, GuestFault> {
        let Some(running) = self.running.get() else {
            return Err(GuestFault::service(call.op, SubmitError::Stopped));
        };
        match call.op {
            Op::DmaSubmit => {
                let r = call.request::<calls::DmaSubmit>()?;
                let accepted = running.dma.submit(r.slot, r.program).map_err(|e| match e {
                    SubmitError::Stopped | SubmitError::NoThread => GuestFault::service(call.op, e),
                    SubmitError::BadSlot(_) | SubmitError::BadProgram(_) => GuestFault::rejected(call.op, e),
                })?;
                Ok(Reply::of::<calls::DmaSubmit>(DmaSubmitReply { accepted: accepted.into() }))
            }
            Op::IommuStats => {
                let io = running.iommu.lock().unwrap_or_else(|e| e.into_inner());
                let st = io.stats();
                Ok(Reply::of::<calls::IommuStats>(IommuStatsReply {
                    iotlb_entries: io.iotlb_len() as u64,
                    pwc_entries: io.pwc_len() as u64,
                    stale_hits: st.stale_hits,
                    stale_walks: st.stale_walks,
                }))
            }
            other => Err(crate::vstate::HypercallError::NotServed(other).into()),
        }
    }
}
