//! One VM run: checks, KVM set-up, vCPU threads, and the supervisor loop
//! (event-manager) that waits for the guest to end or the watchdog to fire.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use abi::layout;
use abi::BootInfo;
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use iommu::{Iommu, IommuConfig, Msi};
use kvm_bindings::{kvm_msi, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_MEM_READONLY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};
use vmm_sys_util::timerfd::TimerFd;

use super::vcpu::{kick_handler, Vcpu, KICK_SIGNAL_OFFSET};
use crate::boot;
use crate::dma::DmaEngine;
use crate::error::{kvm, Error, Result};
use crate::hypercall::{BenchFigure, ProbeResult};
use crate::litmus_run::LitmusSession;
use crate::report::Results;
use crate::shadow::{ShadowPool, TlbModel};
use crate::trace::{DeviceSink, TraceConfig, Tracer};

/// RAM stays below the 32-bit MMIO hole (LAPIC, IOAPIC, device pages).
pub const MAX_MEM_MIB: u64 = 3072;

#[derive(Clone, Debug)]
pub struct VmConfig {
    pub vcpus: u64,
    pub mem_mib: u64,
    pub cmdline: String,
    pub timeout: Duration,
    pub image: Arc<[u8]>,
    /// Shown in messages about the image (`<embedded guest>` for the default).
    pub image_path: PathBuf,
    /// Collect result lines instead of printing them, and no serial output.
    pub quiet: bool,
    /// vCPU TLB model (`--tlb`).
    pub tlb: TlbModel,
    /// Seed for everything random (`--seed`).
    pub seed: u64,
    /// The emulated IOMMU's caches (`iotlb=`, `pwc=` policies).
    pub iommu: IommuConfig,
    /// Set for `mode=litmus` boots: the blob, and where results go.
    pub litmus: Option<Arc<LitmusSession>>,
    /// Set for traced boots (`vmm litmus --trace`).
    pub trace: Option<TraceConfig>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum EndReason {
    /// The guest wrote this status to the exit port.
    GuestExit(u32),
    /// A litmus iteration made no progress within its time limit; the
    /// session holds where every thread was.
    IterationTimeout,
    /// The guest misbehaved.
    GuestError { vcpu: u64, rip: u64, cause: String },
    /// The watchdog fired; where every vCPU was.
    Timeout { dumps: Vec<VcpuDump> },
}

#[derive(Debug, Clone)]
pub struct VcpuDump {
    pub vcpu: u64,
    pub rip: Option<u64>,
    pub rsp: Option<u64>,
    pub cr3: Option<u64>,
    pub halted: bool,
}

pub struct RunOutcome {
    pub end: EndReason,
    pub results: Results,
    /// From starting the vCPU threads to the guest's end.
    pub boot_to_exit: Duration,
    pub bench: Vec<BenchFigure>,
    pub probes: Vec<ProbeResult>,
}

/// Serial interrupts are not wired: the guest polls (it only writes).
pub struct NoIrq;
impl Trigger for NoIrq {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        Ok(())
    }
}

pub type SerialDevice = Serial<NoIrq, vm_superio::serial::NoEvents, Box<dyn Write + Send>>;

/// State shared by the vCPU threads and the supervisor.
pub struct VmShared {
    pub stop: AtomicBool,
    pub dump: AtomicBool,
    end: Mutex<Option<EndReason>>,
    exit_evt: EventFd,
    pub results: Mutex<Results>,
    pub serial: Mutex<SerialDevice>,
    pub dumps: Mutex<Vec<Option<VcpuDump>>>,
    pub bench: Mutex<Vec<BenchFigure>>,
    pub probes: Mutex<Vec<ProbeResult>>,
    pub tlb: TlbModel,
    pub seed: u64,
    pub shadow_pool: ShadowPool,
    /// Page-table pages the guest says are live (PT_TABLE).
    pub live_tables: Mutex<BTreeSet<u64>>,
    /// The secondary MMU (SVA IOMMU), shared by the vCPUs (MMIO, table
    /// tracking) and the DMA engine.
    pub iommu: Arc<Mutex<Iommu>>,
    pub dma: DmaEngine,
    pub litmus: Option<Arc<LitmusSession>>,
    /// This boot's tracing, if traced.
    pub trace: Option<Arc<Tracer>>,
    vm_fd: Arc<VmFd>,
}

impl VmShared {
    /// Records how the run ended (the first report wins) and wakes the supervisor.
    pub fn end(&self, reason: EndReason) {
        let mut end = self.end.lock().unwrap();
        if end.is_none() {
            *end = Some(reason);
        }
        self.stop.store(true, Ordering::Release);
        let _ = self.exit_evt.write(1);
    }

    /// Raises an MSI from the IOMMU (in-kernel irqchip, KVM_SIGNAL_MSI).
    pub fn deliver_msi(&self, msi: Msi) {
        deliver_msi(&self.vm_fd, msi);
    }

    pub fn log(&self, cpu: u64, msg: &str) {
        eprintln!("[guest vCPU {cpu}] {msg}");
    }
}

fn deliver_msi(vm: &VmFd, msi: Msi) {
    let m = kvm_msi {
        address_lo: msi.address as u32,
        address_hi: (msi.address >> 32) as u32,
        data: msi.data,
        ..Default::default()
    };
    if let Err(e) = vm.signal_msi(m) {
        eprintln!("vmm: warning: IOMMU MSI {:#x}/{:#x} not delivered: {e}", msi.address, msi.data);
    }
}

/// Checks the configuration against the host and the image, with messages
/// that say what to change. Nothing is started before this passes.
pub fn check_config(kvm: &Kvm, cfg: &VmConfig) -> Result<()> {
    let max = (kvm.get_max_vcpus() as u64).min(layout::MAX_VCPUS);
    if cfg.vcpus == 0 {
        return Err(Error::BadVcpus { requested: 0, reason: "need at least 1 vCPU".into() });
    }
    if cfg.vcpus > max {
        return Err(Error::BadVcpus {
            requested: cfg.vcpus,
            reason: format!("this host's KVM and shootdown's memory map allow at most {max}"),
        });
    }
    let min_mib = layout::MIN_MEM >> 20;
    if cfg.mem_mib < min_mib || cfg.mem_mib > MAX_MEM_MIB {
        return Err(Error::BadMemory {
            requested: cfg.mem_mib,
            reason: format!("must be between {min_mib} and {MAX_MEM_MIB} MiB"),
        });
    }
    boot::check_image(&cfg.image_path, &cfg.image, cfg.mem_mib << 20)
}

/// Checks `cfg` (vCPUs, memory, image) against this host's KVM without
/// starting anything: bad input is refused before any output.
pub fn validate(cfg: &VmConfig) -> Result<()> {
    check_config(&open_kvm()?, cfg)
}

pub fn open_kvm() -> Result<Kvm> {
    Kvm::new().map_err(|e| {
        let hint = match e.errno() {
            libc::ENOENT => {
                "/dev/kvm does not exist: this host has no KVM (load kvm_intel/kvm_amd, or run on a KVM host)"
            }
            libc::EACCES | libc::EPERM => "permission denied: add your user to the `kvm` group or run as root",
            _ => "",
        };
        Error::KvmUnavailable(if hint.is_empty() { e.to_string() } else { format!("{e}: {hint}") })
    })
}

/// Boots the guest and runs it to the end.
pub fn run(cfg: &VmConfig) -> Result<RunOutcome> {
    let kvm_fd = open_kvm()?;
    check_config(&kvm_fd, cfg)?;
    let vm = Arc::new(kvm_fd.create_vm().map_err(kvm("KVM_CREATE_VM"))?);
    vm.set_tss_address(0xfffb_d000).map_err(kvm("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip().map_err(kvm("KVM_CREATE_IRQCHIP"))?;

    let mem_size = cfg.mem_mib << 20;
    // Separate regions so the page-table and shadow regions can be read-only
    // memslots: under lazy/evict a guest store to them exits to the VMM.
    let regions = [
        (0, layout::PT_BASE),
        (layout::PT_BASE, layout::PT_SIZE),
        (layout::SHADOW_BASE, layout::SHADOW_SIZE),
        (layout::FREE_START, mem_size - layout::FREE_START),
    ];
    let ranges: Vec<(GuestAddress, usize)> = regions.iter().map(|&(a, l)| (GuestAddress(a), l as usize)).collect();
    let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&ranges).map_err(|e| Error::Memory(e.to_string()))?;
    for (slot, region) in mem.iter().enumerate() {
        let start = region.start_addr().0;
        let read_only = (start == layout::PT_BASE && cfg.tlb.is_shadowed()) || start == layout::SHADOW_BASE;
        let host =
            region.get_host_address(vm_memory::MemoryRegionAddress(0)).map_err(|e| Error::Memory(e.to_string()))?;
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

    if let Some(l) = &cfg.litmus {
        if l.blob.len() as u64 > layout::LITMUS_BLOB_MAX {
            return Err(Error::Other(format!(
                "litmus test too large: {} bytes of bytecode (at most {})",
                l.blob.len(),
                layout::LITMUS_BLOB_MAX
            )));
        }
        mem.write_slice(&l.blob, GuestAddress(layout::LITMUS_BLOB)).map_err(|e| Error::Memory(e.to_string()))?;
    }
    let mut iommu = Iommu::new(cfg.iommu).map_err(|e| Error::Other(format!("IOMMU config: {e}")))?;
    iommu.set_table_tracking(true);
    let tracer = match &cfg.trace {
        Some(tc) => Some(Tracer::new(tc, &mem, cfg.vcpus)?),
        None => None,
    };
    if let Some(t) = &tracer {
        iommu.set_sink(Arc::new(DeviceSink { tracer: t.clone() }));
    }
    let iommu = Arc::new(Mutex::new(iommu));
    let vm_for_msi = vm.clone();
    let dma = DmaEngine::start(mem.clone(), iommu.clone(), Arc::new(move |msi| deliver_msi(&vm_for_msi, msi)))
        .map_err(|e| Error::Other(format!("cannot start the DMA engine thread: {e}")))?;
    let out: Box<dyn Write + Send> = if cfg.quiet { Box::new(std::io::sink()) } else { Box::new(std::io::stdout()) };
    let shared = Arc::new(VmShared {
        stop: AtomicBool::new(false),
        dump: AtomicBool::new(false),
        end: Mutex::new(None),
        exit_evt: EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Other(format!("eventfd: {e}")))?,
        results: Mutex::new(Results::new(cfg.quiet)),
        serial: Mutex::new(Serial::new(NoIrq, out)),
        dumps: Mutex::new(vec![None; cfg.vcpus as usize]),
        bench: Mutex::new(Vec::new()),
        probes: Mutex::new(Vec::new()),
        tlb: cfg.tlb,
        seed: cfg.seed,
        shadow_pool: ShadowPool::new(),
        live_tables: Mutex::new(BTreeSet::new()),
        iommu,
        dma,
        litmus: cfg.litmus.clone(),
        trace: tracer.clone(),
        vm_fd: vm.clone(),
    });

    let supported = kvm_fd.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(kvm("KVM_GET_SUPPORTED_CPUID"))?;
    let mut vcpus = Vec::with_capacity(cfg.vcpus as usize);
    for i in 0..cfg.vcpus {
        let mut v = Vcpu::new(&vm, i, mem.clone(), shared.clone())?;
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
        ..Default::default()
    };
    boot::write_boot_info(&mem, &info)?;
    if let Some(t) = &tracer {
        t.begin(info.tsc_khz, vcpus[0].tsc_offset());
    }

    register_signal_handler(SIGRTMIN() + KICK_SIGNAL_OFFSET, kick_handler)
        .map_err(|e| Error::Other(format!("cannot install the vCPU kick signal handler: {e}")))?;

    let start = Instant::now();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for (i, v) in vcpus.into_iter().enumerate() {
        let t = std::thread::Builder::new()
            .name(format!("vcpu{i}"))
            .spawn(move || v.run())
            .map_err(|e| Error::Other(format!("cannot start vCPU thread {i}: {e}")))?;
        threads.push(t);
    }

    let stall_check = cfg.litmus.as_ref().map(|l| {
        let (l, mem) = (l.clone(), mem.clone());
        Box::new(move || l.stalled(&mem)) as Box<dyn FnMut() -> bool + Send>
    });
    let fired = supervise(&shared, cfg.timeout, stall_check)?;
    let timed_out = fired == Fired::Watchdog;
    let boot_to_exit = start.elapsed();
    if timed_out {
        shared.dump.store(true, Ordering::Release);
    }
    shared.stop.store(true, Ordering::Release);
    for t in &threads {
        // A thread that already left its loop has nothing to kick; errors are harmless.
        let _ = t.kill(SIGRTMIN() + KICK_SIGNAL_OFFSET);
    }
    for t in threads {
        let _ = t.join();
    }

    let end = if timed_out {
        let dumps = shared.dumps.lock().unwrap().iter().flatten().cloned().collect();
        EndReason::Timeout { dumps }
    } else if fired == Fired::IterationStall {
        EndReason::IterationTimeout
    } else {
        shared.end.lock().unwrap().clone().unwrap_or(EndReason::GuestExit(abi::exit::GUEST_PANIC))
    };
    if let Some(t) = &tracer {
        t.finish(&match &end {
            EndReason::GuestExit(s) => format!("exit {s}"),
            EndReason::IterationTimeout => "iteration-timeout".into(),
            EndReason::GuestError { vcpu, rip, cause } => format!("guest-error: vCPU {vcpu} at RIP {rip:#x}: {cause}"),
            EndReason::Timeout { .. } => "watchdog".into(),
        });
    }
    let mut results = std::mem::take(&mut *shared.results.lock().unwrap());
    match &end {
        EndReason::GuestError { vcpu, rip, cause } => {
            results.abort_current(&format!("guest error on vCPU {vcpu} at RIP {rip:#x}: {cause}"))
        }
        EndReason::Timeout { .. } => results.abort_current(&format!("timed out after {:?}", cfg.timeout)),
        EndReason::GuestExit(_) => results.abort_current("guest exited in the middle of the test"),
        EndReason::IterationTimeout => {}
    }
    let bench = std::mem::take(&mut *shared.bench.lock().unwrap());
    let probes = std::mem::take(&mut *shared.probes.lock().unwrap());
    Ok(RunOutcome { end, results, boot_to_exit, bench, probes })
}

/// How often a litmus run's iteration watchdog looks at the progress mark.
const STALL_TICK: Duration = Duration::from_millis(50);

type StallCheck = Box<dyn FnMut() -> bool + Send>;

/// Waits (event-manager, no polling) for the guest's end, the watchdog or,
/// in a litmus run, an iteration that stopped making progress.
fn supervise(shared: &Arc<VmShared>, timeout: Duration, stall_check: Option<StallCheck>) -> Result<Fired> {
    let err = |what: &str, e: &dyn std::fmt::Display| Error::Other(format!("{what}: {e}"));
    let mut timer = TimerFd::new().map_err(|e| err("timerfd", &e))?;
    timer.reset(timeout, None).map_err(|e| err("timerfd", &e))?;
    let exit_evt = shared.exit_evt.try_clone().map_err(|e| err("eventfd", &e))?;
    let stall = match stall_check {
        Some(check) => {
            let mut tick = TimerFd::new().map_err(|e| err("timerfd", &e))?;
            tick.reset(STALL_TICK, Some(STALL_TICK)).map_err(|e| err("timerfd", &e))?;
            Some((tick, check))
        }
        None => None,
    };
    let sup = Arc::new(Mutex::new(Supervisor { exit_evt, timer, stall, fired: None }));
    let mut em = EventManager::<Arc<Mutex<Supervisor>>>::new().map_err(|e| err("event manager", &e))?;
    em.add_subscriber(sup.clone());
    loop {
        em.run().map_err(|e| err("event manager", &e))?;
        if let Some(f) = sup.lock().unwrap().fired {
            return Ok(f);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fired {
    GuestEnded,
    Watchdog,
    IterationStall,
}

struct Supervisor {
    exit_evt: EventFd,
    timer: TimerFd,
    /// Litmus runs: a periodic tick and the progress check it runs.
    stall: Option<(TimerFd, StallCheck)>,
    fired: Option<Fired>,
}

impl MutEventSubscriber for Supervisor {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.exit_evt.as_raw_fd() {
            let _ = self.exit_evt.read();
            self.fired.get_or_insert(Fired::GuestEnded);
        } else if events.fd() == self.timer.as_raw_fd() {
            let _ = self.timer.wait();
            self.fired.get_or_insert(Fired::Watchdog);
        } else if let Some((tick, check)) = &mut self.stall {
            if events.fd() == tick.as_raw_fd() {
                let _ = tick.wait();
                if check() {
                    self.fired.get_or_insert(Fired::IterationStall);
                }
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let tick = self.stall.as_ref().map(|(t, _)| t.as_raw_fd());
        for fd in [self.exit_evt.as_raw_fd(), self.timer.as_raw_fd()].into_iter().chain(tick) {
            ops.add(Events::new_raw(fd, event_manager::EventSet::IN)).expect("register supervisor fds");
        }
    }
}
