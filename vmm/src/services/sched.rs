//! Scheduling help for the guest: WAIT/WAKE (a futex on guest words: the
//! waiter's vCPU sleeps inside KVM instead of spinning through exits) and
//! IPI (interrupts sent by code at CPL3, which cannot write the x2APIC ICR).
//! The DMA engine's kernel-word stores wake waiters through [`Waker`].

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use abi::hypercall::calls::{self, IpiReply, WaitReply, WakeReply};
use abi::hypercall::{Flag, Op};
use iommu::mem as gmem;

use crate::vstate::{
    Call, GuestFault, HypercallHandler, MsiSender, Parking, Reply, Service, SetupError, VcpuCtx, VmSetup,
};

/// Wakes the vCPUs waiting on a guest word (after a store to it that was
/// not a guest instruction: a device's `SIGNAL`/`KADD`).
pub trait Waker: Send + Sync {
    fn wake(&self, gpa: u64) -> u64;

    /// vCPU `cpu`'s park in `WAIT` was ended by an interrupt whose handler
    /// is done (its last hypercall asks, `FlushThenRequest::repark`): parks it
    /// again, as it was, if nothing woke it since and its word still holds
    /// the value it waited on. True if the caller is to park the vCPU.
    fn repark(&self, _mem: &vm_memory::GuestMemoryMmap, _cpu: u64) -> bool {
        false
    }
}

/// x2APIC MSI address of vCPU `cpu` (physical destination, fixed delivery).
const fn msi_address(cpu: u64) -> u64 {
    0xfee0_0000 | (cpu << 12)
}

/// Sends fixed interrupt `vector` to every vCPU whose bit is set in
/// `targets` (bit i of word w = vCPU 64w + i) of a VM with `vcpus`; how
/// many. Checked first: a bad vector or vCPU sends nothing.
pub fn send_ipis(msi: &MsiSender, vcpus: u64, targets: &[u64], vector: u64) -> Result<u64, String> {
    if !(32..=255).contains(&vector) {
        return Err(format!("IPI vector {vector} (32..=255)"));
    }
    let cpus = || {
        targets
            .iter()
            .enumerate()
            .flat_map(|(word, &bits)| (0..64).filter(move |i| bits >> i & 1 == 1).map(move |i| word as u64 * 64 + i))
    };
    if let Some(cpu) = cpus().find(|&c| c >= vcpus) {
        return Err(format!("IPI to vCPU {cpu} of a VM with {vcpus}"));
    }
    let mut sent = 0;
    for cpu in cpus() {
        msi(msi_address(cpu), vector as u32);
        sent += 1;
    }
    Ok(sent)
}

struct Wiring {
    parking: Arc<Parking>,
    msi: MsiSender,
    vcpus: u64,
}

pub struct Sched {
    wiring: OnceLock<Wiring>,
    /// Per vCPU, the word it waits on and its park ticket. One entry per
    /// vCPU (a vCPU waits on one word at a time): bounded whatever the
    /// guest does. The lock orders a WAIT's look at its word against a
    /// WAKE's look at the waiters.
    /// (word, ticket, the value it waited on): the vCPU's last `WAIT`
    /// parked and no `WAKE` came for it yet.
    waiters: Mutex<Vec<Option<(u64, u64, u64)>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sched {
    pub fn new() -> Arc<Self> {
        Arc::new(Sched { wiring: OnceLock::new(), waiters: Mutex::new(Vec::new()) })
    }

    fn wake_word(&self, gpa: u64) -> u64 {
        let Some(w) = self.wiring.get() else { return 0 };
        let mut waiters = lock(&self.waiters);
        let mut woken = 0;
        for (cpu, slot) in waiters.iter_mut().enumerate() {
            if let Some((g, ticket, _)) = *slot {
                if g == gpa {
                    *slot = None;
                    woken += w.parking.wake(cpu as u64, ticket) as u64;
                }
            }
        }
        woken
    }
}

impl Waker for Sched {
    fn wake(&self, gpa: u64) -> u64 {
        self.wake_word(gpa)
    }

    fn repark(&self, mem: &vm_memory::GuestMemoryMmap, cpu: u64) -> bool {
        let Some(w) = self.wiring.get() else { return false };
        let mut waiters = lock(&self.waiters);
        let Some(slot) = waiters.get_mut(cpu as usize) else { return false };
        let Some((gpa, _, expected)) = *slot else { return false };
        if gmem::load_u64(mem, gpa).ok() != Some(expected) {
            return false;
        }
        let Some(ticket) = w.parking.park(cpu) else { return false };
        *slot = Some((gpa, ticket, expected));
        true
    }
}

impl Service for Sched {
    fn name(&self) -> &'static str {
        "sched"
    }

    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError> {
        *lock(&self.waiters) = vec![None; vm.vcpus as usize];
        let w = Wiring { parking: vm.parking.clone(), msi: vm.msi.clone(), vcpus: vm.vcpus };
        self.wiring.set(w).map_err(|_| SetupError::service("sched", "set up twice"))?;
        vm.add_hypercalls(self)
    }
}

impl HypercallHandler for Sched {
    fn name(&self) -> &'static str {
        "sched"
    }

    fn ops(&self) -> &'static [Op] {
        &[Op::Wait, Op::Wake, Op::Ipi]
    }

    fn handle(&self, ctx: &mut VcpuCtx<'_>, call: &Call<'_>) -> Result<Reply, GuestFault> {
        let Some(w) = self.wiring.get() else {
            return Err(GuestFault::service(call.op, "the scheduling service is not set up"));
        };
        match call.op {
            Op::Wait => {
                let r = call.request::<calls::Wait>()?;
                for first in [r.wake_first, r.wake_also].into_iter().filter(|&g| g != 0) {
                    self.wake_word(first);
                }
                if !r.gpa.is_multiple_of(8) {
                    return Err(GuestFault::rejected(
                        call.op,
                        format_args!("WAIT on GPA {:#x}: not 8-byte aligned", r.gpa),
                    ));
                }
                let mut waiters = lock(&self.waiters);
                let now = gmem::load_u64(ctx.mem, r.gpa)
                    .map_err(|e| GuestFault::rejected(call.op, format_args!("WAIT on GPA {:#x}: {e}", r.gpa)))?;
                let slot = waiters.get_mut(ctx.cpu as usize);
                if now != r.expected {
                    // An older park's entry goes: only a park's own may be resumed.
                    if let Some(slot) = slot {
                        *slot = None;
                    }
                    return Ok(Reply::of::<calls::Wait>(WaitReply { parked: Flag::NO }));
                }
                let Some(ticket) = w.parking.park(ctx.cpu) else {
                    return Err(GuestFault::service(call.op, format!("no vCPU {}", ctx.cpu)));
                };
                if let Some(slot) = slot {
                    *slot = Some((r.gpa, ticket, r.expected));
                }
                Ok(Reply::of::<calls::Wait>(WaitReply { parked: Flag::YES }).then_park())
            }
            Op::Wake => {
                let r = call.request::<calls::Wake>()?;
                let words = || r.gpas.iter().copied().filter(|&gpa| gpa != 0);
                if r.store.get() {
                    for gpa in words() {
                        if !gpa.is_multiple_of(8) {
                            return Err(GuestFault::rejected(
                                call.op,
                                format_args!("WAKE storing to GPA {gpa:#x}: not 8-byte aligned"),
                            ));
                        }
                        gmem::store_u64(ctx.mem, gpa, r.value).map_err(|e| {
                            GuestFault::rejected(call.op, format_args!("WAKE storing to GPA {gpa:#x}: {e}"))
                        })?;
                    }
                }
                let woken = words().map(|gpa| self.wake_word(gpa)).sum();
                Ok(Reply::of::<calls::Wake>(WakeReply { woken }))
            }
            Op::Ipi => {
                let r = call.request::<calls::Ipi>()?;
                let sent =
                    send_ipis(&w.msi, w.vcpus, &r.targets, r.vector).map_err(|e| GuestFault::rejected(call.op, e))?;
                Ok(Reply::of::<calls::Ipi>(IpiReply { sent }))
            }
            other => Err(crate::vstate::HypercallError::NotServed(other).into()),
        }
    }
}
