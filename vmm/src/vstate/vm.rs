//! One VM run: checks, KVM set-up, guest memory, the services' wiring, vCPU
//! threads, and the supervisor loop (event-manager) that waits for the guest
//! to end, the watchdog, or a service's watch.

use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use abi::config::{GuestMode, TlbModel};
use abi::layout;
use abi::BootInfo;
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{kvm_msi, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_MEM_READONLY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};
use vmm_sys_util::timerfd::TimerFd;

use super::exit::ExitHook;
use super::fault::{EndReason, VcpuDump};
use super::service::{GuestClock, MsiSender, Service, SetupError, Watch, Wiring};
use super::vcpu::{kick_handler, Vcpu, KICK_SIGNAL_OFFSET};
use crate::boot::{self, ImageError};

/// RAM stays below the 32-bit MMIO hole (LAPIC, IOAPIC, device pages).
pub const MAX_MEM_MIB: u64 = 3072;

/// The VM itself: what every run has, whatever the mode.
#[derive(Clone, Debug)]
pub struct VmConfig {
    pub vcpus: u64,
    pub mem_mib: u64,
    pub cmdline: String,
    /// The watchdog.
    pub timeout: Duration,
    pub image: Arc<[u8]>,
    /// Shown in messages about the image (`<embedded guest>` for the default).
    pub image_path: PathBuf,
    /// vCPU TLB model: under `lazy`/`evict` the page-table region is a
    /// read-only memslot (a direct store exits to the VMM).
    pub tlb: TlbModel,
    /// Seed for everything random in the run's services.
    pub seed: u64,
    /// What the guest runs ([`BootInfo::mode`]) and its argument.
    pub mode: GuestMode,
    pub mode_arg: u64,
}

/// Errors that stop a VM from being built or run (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {source}{hint}")]
    KvmUnavailable {
        #[source]
        source: kvm_ioctls::Error,
        hint: &'static str,
    },
    #[error("KVM {what} failed: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("--vcpus {requested}: {reason}")]
    BadVcpus { requested: u64, reason: String },
    #[error("--mem {requested} MiB: {reason}")]
    BadMemory { requested: u64, reason: String },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("guest memory: {0}")]
    Memory(String),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("{what}: {source}")]
    Host {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, VmError>;

/// Shorthand for mapping a KVM ioctl error with what we were doing.
pub fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

fn host(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |source| VmError::Host { what, source }
}

/// How a run went, as the VM sees it (results live in the services).
#[derive(Debug)]
pub struct RunOutcome {
    pub end: EndReason,
    /// From starting the vCPU threads to the guest's end.
    pub boot_to_exit: Duration,
}

/// State shared by the vCPU threads and the supervisor: only the VM's own.
pub struct VmCore {
    pub stop: AtomicBool,
    pub dump: AtomicBool,
    end: Mutex<Option<EndReason>>,
    exit_evt: EventFd,
    pub dumps: Mutex<Vec<Option<VcpuDump>>>,
}

impl VmCore {
    /// Records how the run ended (the first report wins) and wakes the supervisor.
    pub fn end(&self, reason: EndReason) {
        let mut end = self.end.lock().unwrap_or_else(|e| e.into_inner());
        if end.is_none() {
            *end = Some(reason);
        }
        self.stop.store(true, Ordering::Release);
        let _ = self.exit_evt.write(1);
    }
}

fn deliver_msi(vm: &VmFd, address: u64, data: u32) {
    let m = kvm_msi { address_lo: address as u32, address_hi: (address >> 32) as u32, data, ..Default::default() };
    if let Err(e) = vm.signal_msi(m) {
        log::warn!("IOMMU MSI {address:#x}/{data:#x} not delivered: {e}");
    }
}

/// Checks the configuration against the host and the image, with messages
/// that say what to change. Nothing is started before this passes.
pub fn check_config(kvm: &Kvm, cfg: &VmConfig) -> Result<()> {
    let max = (kvm.get_max_vcpus() as u64).min(layout::MAX_VCPUS);
    if cfg.vcpus == 0 {
        return Err(VmError::BadVcpus { requested: 0, reason: "need at least 1 vCPU".into() });
    }
    if cfg.vcpus > max {
        return Err(VmError::BadVcpus {
            requested: cfg.vcpus,
            reason: format!("this host's KVM and shootdown's memory map allow at most {max}"),
        });
    }
    let min_mib = layout::MIN_MEM >> 20;
    if cfg.mem_mib < min_mib || cfg.mem_mib > MAX_MEM_MIB {
        return Err(VmError::BadMemory {
            requested: cfg.mem_mib,
            reason: format!("must be between {min_mib} and {MAX_MEM_MIB} MiB"),
        });
    }
    Ok(boot::check_image(&cfg.image_path, &cfg.image, cfg.mem_mib << 20)?)
}

/// Checks `cfg` (vCPUs, memory, image) against this host's KVM without
/// starting anything: bad input is refused before any output.
pub fn validate(cfg: &VmConfig) -> Result<()> {
    check_config(&open_kvm()?, cfg)
}

pub fn open_kvm() -> Result<Kvm> {
    Kvm::new().map_err(|source| {
        let hint = match source.errno() {
            libc::ENOENT => {
                ": /dev/kvm does not exist: this host has no KVM (load kvm_intel/kvm_amd, or run on a KVM host)"
            }
            libc::EACCES | libc::EPERM => ": permission denied: add your user to the `kvm` group or run as root",
            _ => "",
        };
        VmError::KvmUnavailable { source, hint }
    })
}

/// Guest memory: separate regions so the page-table and shadow regions can
/// be read-only memslots (under lazy/evict a guest store to them exits).
pub fn guest_memory(mem_size: u64) -> Result<GuestMemoryMmap> {
    let regions = [
        (0, layout::PT_BASE),
        (layout::PT_BASE, layout::PT_SIZE),
        (layout::SHADOW_BASE, layout::SHADOW_SIZE),
        (layout::FREE_START, mem_size.saturating_sub(layout::FREE_START)),
    ];
    let ranges: Vec<(GuestAddress, usize)> = regions.iter().map(|&(a, l)| (GuestAddress(a), l as usize)).collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| VmError::Memory(e.to_string()))
}

/// Boots the guest with `services` and runs it to the end.
pub fn run(cfg: &VmConfig, services: &[Arc<dyn Service>]) -> Result<RunOutcome> {
    let kvm_fd = open_kvm()?;
    check_config(&kvm_fd, cfg)?;
    let vm = Arc::new(kvm_fd.create_vm().map_err(kvm("KVM_CREATE_VM"))?);
    vm.set_tss_address(0xfffb_d000).map_err(kvm("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip().map_err(kvm("KVM_CREATE_IRQCHIP"))?;

    let mem_size = cfg.mem_mib << 20;
    let mem = guest_memory(mem_size)?;
    for (slot, region) in mem.iter().enumerate() {
        let start = region.start_addr().0;
        let read_only = (start == layout::PT_BASE && cfg.tlb.is_shadowed()) || start == layout::SHADOW_BASE;
        let host =
            region.get_host_address(vm_memory::MemoryRegionAddress(0)).map_err(|e| VmError::Memory(e.to_string()))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags: if read_only { KVM_MEM_READONLY } else { 0 },
        };
        // SAFETY: the region is a live mmap owned by `mem`, which outlives the VM
        // (dropped after every vCPU thread has been joined below).
        unsafe { vm.set_user_memory_region(r) }.map_err(kvm("KVM_SET_USER_MEMORY_REGION"))?;
    }

    let image = boot::load_image(&cfg.image_path, &cfg.image, &mem)?;
    boot::write_boot_page_tables(&mem)?;
    boot::write_gdt(&mem)?;
    let cmdline_len = boot::write_cmdline(&mem, &cfg.cmdline)?;
    if image.pvh_entry.is_some() {
        boot::write_pvh_start_info(&mem, mem_size)?;
    }

    // The services wire themselves in.
    let vm_for_msi = vm.clone();
    let msi: MsiSender = Arc::new(move |address, data| deliver_msi(&vm_for_msi, address, data));
    let Wiring { buses, exit_hooks, watches } = Wiring::wire(&mem, cfg.vcpus, msi, services)?;
    let buses = Arc::new(buses);
    let exit_hooks: Arc<[Arc<dyn ExitHook>]> = exit_hooks.into();

    let core = Arc::new(VmCore {
        stop: AtomicBool::new(false),
        dump: AtomicBool::new(false),
        end: Mutex::new(None),
        exit_evt: EventFd::new(libc::EFD_NONBLOCK).map_err(host("eventfd"))?,
        dumps: Mutex::new(vec![None; cfg.vcpus as usize]),
    });

    let supported = kvm_fd.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(kvm("KVM_GET_SUPPORTED_CPUID"))?;
    let mut vcpus = Vec::with_capacity(cfg.vcpus as usize);
    for i in 0..cfg.vcpus {
        let mut v = Vcpu::new(&vm, i, mem.clone(), core.clone(), buses.clone(), exit_hooks.clone())?;
        v.configure(&supported, image.entry, image.pvh_entry)?;
        vcpus.push(v);
    }
    let info = BootInfo {
        num_vcpus: cfg.vcpus,
        mem_size,
        cmdline_addr: layout::CMDLINE,
        cmdline_len,
        tsc_khz: vcpus[0].tsc_khz(),
        kernel_start: image.start,
        kernel_end: image.end,
        free_start: layout::FREE_START,
        mode: cfg.mode as u64,
        mode_arg: cfg.mode_arg,
        ..Default::default()
    };
    boot::write_boot_info(&mem, &info)?;
    let clock = GuestClock { tsc_khz: info.tsc_khz, tsc_offset: vcpus[0].tsc_offset() };
    for s in services {
        s.started(clock);
    }

    register_signal_handler(SIGRTMIN() + KICK_SIGNAL_OFFSET, kick_handler)
        .map_err(|e| host("cannot install the vCPU kick signal handler")(std::io::Error::from(e)))?;

    let start = Instant::now();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for (i, v) in vcpus.into_iter().enumerate() {
        match std::thread::Builder::new().name(format!("vcpu{i}")).spawn(move || v.run()) {
            Ok(t) => threads.push(t),
            Err(e) => {
                stop_vcpus(&core, services, threads);
                return Err(host("cannot start a vCPU thread")(e));
            }
        }
    }

    let fired = supervise(&core, cfg.timeout, &watches, &mem);
    let boot_to_exit = start.elapsed();
    if matches!(fired, Ok(Fired::Watchdog)) {
        core.dump.store(true, Ordering::Release);
    }
    stop_vcpus(&core, services, threads);
    let fired = fired?;

    let end = match fired {
        Fired::Watchdog => {
            let dumps = core.dumps.lock().unwrap_or_else(|e| e.into_inner()).iter().flatten().cloned().collect();
            EndReason::Timeout { dumps }
        }
        Fired::Watch(reason) => reason,
        Fired::GuestEnded => core
            .end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or(EndReason::GuestExit(abi::exit::GUEST_PANIC)),
    };
    for s in services {
        s.finished(&end);
    }
    Ok(RunOutcome { end, boot_to_exit })
}

/// Tells every vCPU to stop, kicks it out of KVM_RUN, and joins it.
fn stop_vcpus(core: &VmCore, services: &[Arc<dyn Service>], threads: Vec<JoinHandle<()>>) {
    core.stop.store(true, Ordering::Release);
    for s in services {
        s.stopping();
    }
    for t in &threads {
        // A thread that already left its loop has nothing to kick; errors are harmless.
        let _ = t.kill(SIGRTMIN() + KICK_SIGNAL_OFFSET);
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Waits (event-manager, no polling) for the guest's end, the watchdog or
/// a service's watch.
fn supervise(core: &VmCore, timeout: Duration, watches: &[Arc<dyn Watch>], mem: &GuestMemoryMmap) -> Result<Fired> {
    let errno = |e: vmm_sys_util::errno::Error| std::io::Error::from_raw_os_error(e.errno());
    let mut timer = TimerFd::new().map_err(|e| host("timerfd")(errno(e)))?;
    timer.reset(timeout, None).map_err(|e| host("timerfd")(errno(e)))?;
    let exit_evt = core.exit_evt.try_clone().map_err(host("eventfd"))?;
    let sup = Arc::new(Mutex::new(Supervisor {
        exit_evt,
        timer,
        watches: watches.iter().map(|w| (w.fd(), w.clone())).collect(),
        mem: mem.clone(),
        fired: None,
    }));
    let em_err = |e: event_manager::Error| host("event manager")(std::io::Error::other(e.to_string()));
    let mut em = EventManager::<Arc<Mutex<Supervisor>>>::new().map_err(em_err)?;
    em.add_subscriber(sup.clone());
    loop {
        em.run().map_err(em_err)?;
        if let Some(f) = sup.lock().unwrap_or_else(|e| e.into_inner()).fired.take() {
            return Ok(f);
        }
    }
}

enum Fired {
    GuestEnded,
    Watchdog,
    Watch(EndReason),
}

struct Supervisor {
    exit_evt: EventFd,
    timer: TimerFd,
    watches: Vec<(RawFd, Arc<dyn Watch>)>,
    mem: GuestMemoryMmap,
    fired: Option<Fired>,
}

impl MutEventSubscriber for Supervisor {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.exit_evt.as_raw_fd() {
            let _ = self.exit_evt.read();
            self.fired.get_or_insert(Fired::GuestEnded);
        } else if fd == self.timer.as_raw_fd() {
            let _ = self.timer.wait();
            self.fired.get_or_insert(Fired::Watchdog);
        } else if let Some((_, w)) = self.watches.iter().find(|(f, _)| *f == fd) {
            if let Some(reason) = w.ready(&self.mem) {
                self.fired.get_or_insert(Fired::Watch(reason));
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let fds = [self.exit_evt.as_raw_fd(), self.timer.as_raw_fd()];
        for fd in fds.into_iter().chain(self.watches.iter().map(|(f, _)| *f)) {
            if let Err(e) = ops.add(Events::new_raw(fd, event_manager::EventSet::IN)) {
                log::error!("supervisor: cannot watch fd {fd}: {e}");
            }
        }
    }
}
