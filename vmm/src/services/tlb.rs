//! The vCPUs' modelled TLBs (`crate::shadow`): FILL, FLUSH, SWITCH_MM,
//! TLB_CONFIG, `evict:P`'s eviction at every exit, and the zap lists that
//! keep the host's own view of the shadow tables coherent (`abi::zap`).
//! Owns each vCPU's shadow MMU and the shadow-page pool they share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use abi::config::TlbModel;
use abi::hypercall::calls::{self, FillReply, SwitchMmReply, TlbConfigReply};
use abi::hypercall::{FlushKind, Op, TlbConfigAction, TlbModelKind, ZAP_PORT};
use abi::{layout, zap};
use iommu::mem as gmem;

use super::mmu::LocalFlush;
use super::sched::{send_ipis, Waker};
use crate::devices::TraceSink;
use crate::shadow::{ShadowMmu, ShadowPool};
use crate::vstate::{
    BusDevice, Call, Caller, ExitHook, Flow, GuestFault, HypercallHandler, MsiSender, Reply, Service, SetupError,
    VcpuCtx, VmSetup,
};

pub struct Tlb {
    model: TlbModel,
    seed: u64,
    trace: Option<Arc<dyn TraceSink>>,
    pool: ShadowPool,
    /// One modelled TLB per vCPU, made at set-up.
    vcpus: OnceLock<Vec<Vcpu>>,
    msi: OnceLock<MsiSender>,
    vcpu_count: OnceLock<u64>,
    /// Wakes the waiters of a FLUSH's `ack` word.
    waker: Option<Arc<dyn Waker>>,
}

struct Vcpu {
    mmu: Mutex<ShadowMmu>,
    /// The exit in progress came from CPL0 code that clears the zap list
    /// itself before going on (a FLUSH or SWITCH_MM through the kernel
    /// mailbox, a zap-list refill): no interrupt needed.
    drains_inline: AtomicBool,
}

impl Tlb {
    pub fn new(
        model: TlbModel,
        seed: u64,
        trace: Option<Arc<dyn TraceSink>>,
        waker: Option<Arc<dyn Waker>>,
    ) -> Arc<Self> {
        Arc::new(Tlb {
            model,
            seed,
            trace,
            pool: ShadowPool::new(),
            vcpus: OnceLock::new(),
            msi: OnceLock::new(),
            vcpu_count: OnceLock::new(),
            waker,
        })
    }

    /// A FLUSH_THEN's follow-ups (see `FlushThenRequest`): the ack word set to 0
    /// and woken, then the IPIs.
    fn flush_follow_ups(&self, ctx: &VcpuCtx<'_>, r: &calls::FlushThenRequest) -> Result<(), String> {
        if r.ack != 0 {
            if !r.ack.is_multiple_of(8) {
                return Err(format!("FLUSH ack word {:#x}: not 8-byte aligned", r.ack));
            }
            gmem::store_u64(ctx.mem, r.ack, 0).map_err(|e| format!("FLUSH ack word {:#x}: {e}", r.ack))?;
            if let Some(w) = &self.waker {
                w.wake(r.ack);
            }
        }
        if r.ipi_cpus != 0 {
            let (Some(msi), Some(&vcpus)) = (self.msi.get(), self.vcpu_count.get()) else {
                return Err("FLUSH with IPIs before set-up".into());
            };
            send_ipis(msi, vcpus, &[r.ipi_cpus], r.ipi_vector)?;
        }
        Ok(())
    }

    fn vcpu(&self, cpu: u64) -> &Vcpu {
        let vcpus = self.vcpus.get().expect("set up before any vCPU runs");
        &vcpus[cpu as usize]
    }

    fn mmu(&self, cpu: u64) -> MutexGuard<'_, ShadowMmu> {
        self.vcpu(cpu).mmu.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the slots this vCPU's TLB cleared to the guest's zap list
    /// (as many as fit; `MORE` says there are others); returns how many.
    /// When the guest emptied the list and nothing is pending, the tables
    /// emptied earlier may be reused.
    fn publish_zaps(&self, cpu: u64, mem: &vm_memory::GuestMemoryMmap) -> u64 {
        let mut mmu = self.mmu(cpu);
        let list = layout::zap_list(cpu);
        let count = gmem::load_u64(mem, list + zap::COUNT).unwrap_or(0).min(zap::CAPACITY);
        if count == 0 && mmu.zaps_pending() == 0 {
            mmu.zaps_done(&self.pool);
            return 0;
        }
        let slots = mmu.take_zaps((zap::CAPACITY - count) as usize);
        for (i, slot) in slots.iter().enumerate() {
            let _ = gmem::store_u64(mem, list + zap::SLOTS + 8 * (count + i as u64), *slot);
        }
        let _ = gmem::store_u64(mem, list + zap::MORE, (mmu.zaps_pending() > 0) as u64);
        let _ = gmem::store_u64(mem, list + zap::COUNT, count + slots.len() as u64);
        slots.len() as u64
    }
}

impl Service for Tlb {
    fn name(&self) -> &'static str {
        "tlb"
    }

    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError> {
        let vcpus = (0..vm.vcpus)
            .map(|cpu| Vcpu {
                mmu: Mutex::new(ShadowMmu::with_trace(cpu, self.model, self.seed, self.trace.clone())),
                drains_inline: AtomicBool::new(false),
            })
            .collect();
        self.vcpus.set(vcpus).map_err(|_| SetupError::service("tlb", "set up twice"))?;
        let _ = self.msi.set(vm.msi.clone());
        let _ = self.vcpu_count.set(vm.vcpus);
        // Under every model: the guest may raise its eviction probability (TLB_CONFIG).
        vm.add_exit_hook(self.clone());
        vm.add_pio(ZAP_PORT, 1, Arc::new(ZapPort(self.clone())))?;
        vm.add_hypercalls(self)
    }
}

impl LocalFlush for Tlb {
    fn flush_local(
        &self,
        ctx: &VcpuCtx<'_>,
        kind: FlushKind,
        va: u64,
        len: u64,
        last_level: bool,
    ) -> Result<(), String> {
        let mut mmu = self.mmu(ctx.cpu);
        match kind {
            FlushKind::Page => mmu.flush_page(ctx.mem, va, last_level),
            FlushKind::Range => mmu.flush_range(ctx.mem, &self.pool, va, len, last_level),
            FlushKind::All => mmu.flush_all(ctx.mem, &self.pool),
        }
        Ok(())
    }
}

impl ExitHook for Tlb {
    /// `evict:P`: at an exit that is not waiting, drop each stale entry
    /// with probability P (a finite TLB's entries go when the vCPU does
    /// something, not while the harness waits on a flag). Then every slot
    /// cleared since the last exit goes to the zap list, with the zap
    /// interrupt unless the code that exited drains it itself.
    fn after_exit(&self, ctx: &mut VcpuCtx<'_>, waiting: bool) {
        if !waiting {
            self.mmu(ctx.cpu).evict_stale(ctx.mem);
        }
        let inline = self.vcpu(ctx.cpu).drains_inline.swap(false, Ordering::Relaxed);
        if self.publish_zaps(ctx.cpu, ctx.mem) > 0 && !inline {
            if let Some(msi) = self.msi.get() {
                msi(0xfee0_0000 | (ctx.cpu << 12), zap::VECTOR as u32);
            }
        }
    }
}

/// `ZAP_PORT`: the guest cleared a full zap list and wants the rest.
struct ZapPort(Arc<Tlb>);

impl BusDevice for ZapPort {
    fn write(&self, ctx: &mut VcpuCtx<'_>, _: u64, _: &[u8]) -> Result<Flow, GuestFault> {
        // The exit hook publishes; the caller goes on draining.
        self.0.vcpu(ctx.cpu).drains_inline.store(true, Ordering::Relaxed);
        Ok(Flow::Resume)
    }
}

impl HypercallHandler for Tlb {
    fn name(&self) -> &'static str {
        "tlb"
    }

    fn ops(&self) -> &'static [Op] {
        &[Op::Fill, Op::Flush, Op::FlushThen, Op::SwitchMm, Op::TlbConfig]
    }

    fn handle(&self, ctx: &mut VcpuCtx<'_>, call: &Call<'_>) -> Result<Reply, GuestFault> {
        if matches!(call.op, Op::Flush | Op::FlushThen | Op::SwitchMm) && call.caller == Caller::Kernel {
            self.vcpu(ctx.cpu).drains_inline.store(true, Ordering::Relaxed);
        }
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
                drop(mmu);
                self.flush_local(ctx, r.kind, r.va, r.len, r.last_level.get())
                    .map_err(|e| GuestFault::rejected(call.op, e))?;
                Ok(Reply::empty())
            }
            Op::FlushThen => {
                let r = call.request::<calls::FlushThen>()?;
                drop(mmu);
                self.flush_local(ctx, r.kind, r.va, r.len, r.last_level.get())
                    .and_then(|()| self.flush_follow_ups(ctx, &r))
                    .map_err(|e| GuestFault::rejected(call.op, e))?;
                let park_again = r.repark.get() && self.waker.as_ref().is_some_and(|w| w.repark(ctx.mem, ctx.cpu));
                Ok(if park_again { Reply::empty().then_park() } else { Reply::empty() })
            }
            Op::SwitchMm => {
                let r = call.request::<calls::SwitchMm>()?;
                let cr3 = mmu.switch_mm(ctx.mem, &self.pool, r.pgd).map_err(|e| GuestFault::rejected(call.op, e))?;
                Ok(Reply::of::<calls::SwitchMm>(SwitchMmReply { cr3 }))
            }
            Op::TlbConfig => {
                let r = call.request::<calls::TlbConfig>()?;
                match r.action {
                    TlbConfigAction::SetEvictPpm => mmu
                        .set_evict_ppm(r.evict_ppm)
                        .map_err(|e| GuestFault::rejected(call.op, format_args!("TLB_CONFIG: {e}")))?,
                    TlbConfigAction::SetWalkCache => mmu
                        .set_walk_cache(r.walk_cache)
                        .map_err(|e| GuestFault::rejected(call.op, format_args!("TLB_CONFIG: {e}")))?,
                    TlbConfigAction::Query => {}
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
