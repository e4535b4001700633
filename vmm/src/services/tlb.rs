//! The vCPUs' modelled TLBs (`crate::shadow`): FILL, FLUSH, SWITCH_MM,
//! TLB_CONFIG, and `evict:P`'s eviction at every exit. Owns each vCPU's
//! shadow MMU and the shadow-page pool they share.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use abi::config::TlbModel;
use abi::hypercall::calls::{self, FillReply, SwitchMmReply, TlbConfigReply};
use abi::hypercall::{FlushKind, Op, TlbConfigAction, TlbModelKind};

use crate::devices::TraceSink;
use crate::shadow::{ShadowMmu, ShadowPool};
use crate::vstate::{Call, ExitHook, GuestFault, HypercallHandler, Reply, Service, SetupError, VcpuCtx, VmSetup};

pub struct Tlb {
    model: TlbModel,
    seed: u64,
    trace: Option<Arc<dyn TraceSink>>,
    pool: ShadowPool,
    /// One modelled TLB per vCPU, made at set-up.
    vcpus: OnceLock<Vec<Mutex<ShadowMmu>>>,
}

impl Tlb {
    pub fn new(model: TlbModel, seed: u64, trace: Option<Arc<dyn TraceSink>>) -> Arc<Self> {
        Arc::new(Tlb { model, seed, trace, pool: ShadowPool::new(), vcpus: OnceLock::new() })
    }

    fn mmu(&self, cpu: u64) -> MutexGuard<'_, ShadowMmu> {
        let mmus = self.vcpus.get().expect("set up before any vCPU runs");
        mmus[cpu as usize].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Service for Tlb {
    fn name(&self) -> &'static str {
        "tlb"
    }

    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError> {
        let mmus = (0..vm.vcpus)
            .map(|cpu| Mutex::new(ShadowMmu::with_trace(cpu, self.model, self.seed, self.trace.clone())))
            .collect();
        self.vcpus.set(mmus).map_err(|_| SetupError::service("tlb", "set up twice"))?;
        // Under every model: the guest may raise its eviction probability (TLB_CONFIG).
        vm.add_exit_hook(self.clone());
        vm.add_hypercalls(self)
    }
}

impl ExitHook for Tlb {
    /// `evict:P`: at an exit, drop each stale entry with probability P.
    fn after_exit(&self, ctx: &mut VcpuCtx<'_>) -> bool {
        self.mmu(ctx.cpu).evict_stale(ctx.mem)
    }
}

impl HypercallHandler for Tlb {
    fn name(&self) -> &'static str {
        "tlb"
    }

    fn ops(&self) -> &'static [Op] {
        &[Op::Fill, Op::Flush, Op::SwitchMm, Op::TlbConfig]
    }

    fn handle(&self, ctx: &mut VcpuCtx<'_>, call: &Call<'_>) -> Result<Reply, GuestFault> {
        let mut mmu = self.mmu(ctx.cpu);
        match call.op {
            Op::Fill => {
                let r = call.request::<calls::Fill>()?;
                let (result, entry) = mmu
                    .fill(ctx.mem, &self.pool, r.va, r.error_code)
                    .map_err(|e| GuestFault::service(call.op, format!("TLB fill at {:#x}: {e}", r.va)))?;
                Ok(Reply::of::<calls::Fill>(FillReply { result, entry }))
            }
            Op::Flush => {
                let r = call.request::<calls::Flush>()?;
                match r.kind {
                    FlushKind::Page => mmu.flush_page(ctx.mem, r.va),
                    FlushKind::Range => mmu.flush_range(ctx.mem, &self.pool, r.va, r.len),
                    FlushKind::All => mmu.flush_all(ctx.mem, &self.pool),
                }
                Ok(Reply::empty())
            }
            Op::SwitchMm => {
                let r = call.request::<calls::SwitchMm>()?;
                let cr3 = mmu.switch_mm(ctx.mem, &self.pool, r.pgd).map_err(|e| GuestFault::rejected(call.op, e))?;
                Ok(Reply::of::<calls::SwitchMm>(SwitchMmReply { cr3 }))
            }
            Op::TlbConfig => {
                let r = call.request::<calls::TlbConfig>()?;
                if r.action == TlbConfigAction::SetEvictPpm {
                    mmu.set_evict_ppm(r.evict_ppm)
                        .map_err(|e| GuestFault::rejected(call.op, format_args!("TLB_CONFIG: {e}")))?;
                }
                let model = match mmu.model() {
                    TlbModel::Lazy => TlbModelKind::Lazy,
                    TlbModel::Evict { .. } => TlbModelKind::Evict,
                    TlbModel::Native => TlbModelKind::Native,
                };
                Ok(Reply::of::<calls::TlbConfig>(TlbConfigReply {
                    model,
                    evict_ppm: mmu.evict_ppm(),
                    fills: mmu.fills,
                    evictions: mmu.evictions,
                }))
            }
            other => Err(crate::vstate::HypercallError::NotServed(other).into()),
        }
    }
}
