//! How a service plugs into a VM. The VM core (`vm.rs`, `vcpu.rs`) knows no
//! mode: a command builds its services (platform, MMU, TLB, IOMMU, and its
//! own — self-test results, litmus session, benchmark figures, probe counts,
//! trace) and hands them to [`super::vm::run`]; each wires itself in through
//! [`VmSetup`] and keeps its own results, which the command reads after the
//! run.

use std::os::fd::RawFd;
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use super::bus::{BusConflict, BusDevice};
use super::exit::{Buses, ExitHook};
use super::fault::EndReason;
use super::hypercall::{HandlerConflict, HypercallHandler, HypercallPort, HypercallTable};

/// Raises an MSI (address, data) in the guest.
pub type MsiSender = Arc<dyn Fn(u64, u32) + Send + Sync>;

/// Something that may stop the VM: the supervisor waits on `fd` (with the
/// guest's end and the watchdog, no polling) and calls `ready` when it is
/// readable.
pub trait Watch: Send + Sync {
    fn fd(&self) -> RawFd;
    /// `fd` is readable (consume its readiness); `Some` ends the run.
    fn ready(&self, mem: &GuestMemoryMmap) -> Option<EndReason>;
}

/// The guest's clock, once the vCPUs exist.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestClock {
    pub tsc_khz: u64,
    /// Host TSC minus vCPU 0's guest TSC.
    pub tsc_offset: i64,
}

/// A service could not wire itself in.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Bus(#[from] BusConflict),
    #[error(transparent)]
    Handler(#[from] HandlerConflict),
    #[error("{service}: {source}")]
    Service {
        service: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SetupError {
    pub fn service(service: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        SetupError::Service { service, source: source.into() }
    }
}

/// What a service may touch while the VM is being built.
pub struct VmSetup<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub vcpus: u64,
    pub msi: MsiSender,
    pub(super) buses: &'a mut Buses,
    pub(super) hypercalls: &'a mut HypercallTable,
    pub(super) exit_hooks: &'a mut Vec<Arc<dyn ExitHook>>,
    pub(super) watches: &'a mut Vec<Arc<dyn Watch>>,
}

impl VmSetup<'_> {
    pub fn add_pio(&mut self, port: u16, len: u16, dev: Arc<dyn BusDevice>) -> Result<(), SetupError> {
        Ok(self.buses.pio.insert(port as u64, len as u64, dev)?)
    }
    pub fn add_mmio(&mut self, base: u64, len: u64, dev: Arc<dyn BusDevice>) -> Result<(), SetupError> {
        Ok(self.buses.mmio.insert(base, len, dev)?)
    }
    pub fn add_hypercalls(&mut self, h: Arc<dyn HypercallHandler>) -> Result<(), SetupError> {
        Ok(self.hypercalls.register(h)?)
    }
    pub fn add_exit_hook(&mut self, h: Arc<dyn ExitHook>) {
        self.exit_hooks.push(h);
    }
    pub fn add_watch(&mut self, w: Arc<dyn Watch>) {
        self.watches.push(w);
    }
}

/// A part of the VMM that serves the guest during one run.
pub trait Service: Send + Sync {
    fn name(&self) -> &'static str;
    /// Wires the service in before any vCPU runs (memory contents, bus
    /// devices, hypercall handlers, exit hooks, watches).
    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError>;
    /// The vCPUs are about to start.
    fn started(&self, _clock: GuestClock) {}
    /// The VM is stopping (every vCPU thread has been told to): stop
    /// anything that runs beside the vCPUs.
    fn stopping(&self) {}
    /// The run ended; every vCPU thread has been joined.
    fn finished(&self, _end: &EndReason) {}
}

/// What the services wired in: the buses (with the hypercall port on
/// them), exit hooks and watches. Built by `vm::run` — and by unit tests
/// and fuzz targets, which drive exits through it without KVM.
#[derive(Default)]
pub struct Wiring {
    pub buses: Buses,
    pub exit_hooks: Vec<Arc<dyn ExitHook>>,
    pub watches: Vec<Arc<dyn Watch>>,
}

impl Wiring {
    /// Sets up `services` in order on `mem` for `vcpus` vCPUs.
    pub fn wire(
        mem: &GuestMemoryMmap,
        vcpus: u64,
        msi: MsiSender,
        services: &[Arc<dyn Service>],
    ) -> Result<Wiring, SetupError> {
        let mut w = Wiring::default();
        let mut hypercalls = HypercallTable::new();
        {
            let mut setup = VmSetup {
                mem,
                vcpus,
                msi,
                buses: &mut w.buses,
                hypercalls: &mut hypercalls,
                exit_hooks: &mut w.exit_hooks,
                watches: &mut w.watches,
            };
            for s in services {
                s.clone().setup(&mut setup)?;
            }
        }
        w.buses.pio.insert(abi::hypercall::HC_PORT as u64, 1, Arc::new(HypercallPort(hypercalls)))?;
        Ok(w)
    }
}
