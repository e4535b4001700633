//! What a run costs, counted: KVM's per-vCPU binary statistics
//! (`KVM_GET_STATS_FD`, Linux 5.14+: emulated instructions, every VM exit
//! including the ones KVM serves in the kernel, halts, injected
//! interrupts) and the VMM's own counts of the exits that reach it —
//! by kind, hypercalls by op — and the CPU time its vCPU threads spend
//! serving them. Counts are what `vmm bench` compares across changes:
//! they are stable across runs and machines of a kind, seconds are not.
//!
//! Each vCPU thread increments only its own counters (relaxed atomics, no
//! sharing); a [`StatsSnapshot`] sums every vCPU at one moment, and the
//! difference of two is what happened in between.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use abi::hypercall::Op;

/// KVM's per-vCPU counters `vmm bench` reports, by their KVM names.
pub const KVM_COUNTERS: [&str; 16] = [
    "insn_emulation",
    "insn_emulation_fail",
    "exits",
    "io_exits",
    "mmio_exits",
    "signal_exits",
    "irq_window_exits",
    "halt_exits",
    "irq_exits",
    "request_irq_exits",
    "irq_injections",
    "pf_taken",
    "pf_guest",
    "invlpg",
    "tlb_flush",
    "halt_wakeup",
];

/// Index of a counter in [`KVM_COUNTERS`].
pub fn kvm_counter(name: &str) -> Option<usize> {
    KVM_COUNTERS.iter().position(|n| *n == name)
}

/// The exits that reach the VMM, by what the guest did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserExit {
    /// A write to a hypercall port (the op is counted too).
    Hypercall = 0,
    /// The yield port (a spin-wait giving its host CPU away).
    Yield = 1,
    /// Any other port I/O (console, exit, nop).
    OtherPort = 2,
    /// An MMIO access (device registers, a stray store).
    Mmio = 3,
    /// KVM_RUN returned without an exit: the thread was kicked (a signal:
    /// a wake-up of a parked vCPU, a stop request).
    Interrupted = 4,
    /// Anything else (faults, shutdown).
    Other = 5,
}

impl UserExit {
    pub const ALL: [UserExit; 6] = [
        UserExit::Hypercall,
        UserExit::Yield,
        UserExit::OtherPort,
        UserExit::Mmio,
        UserExit::Interrupted,
        UserExit::Other,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            UserExit::Hypercall => "hypercall",
            UserExit::Yield => "yield",
            UserExit::OtherPort => "other_port",
            UserExit::Mmio => "mmio",
            UserExit::Interrupted => "kicked",
            UserExit::Other => "other",
        }
    }
}

/// Hypercall ops are counted in an array indexed by their value.
const MAX_OP: usize = 64;

/// One vCPU's counts, written by its own thread only.
pub struct VcpuCounters {
    user_exits: [AtomicU64; UserExit::ALL.len()],
    hypercalls: [AtomicU64; MAX_OP],
    /// CPU time of the vCPU thread outside KVM_RUN (serving exits), ns.
    vmm_ns: AtomicU64,
}

impl VcpuCounters {
    fn new() -> Self {
        Self {
            user_exits: [const { AtomicU64::new(0) }; UserExit::ALL.len()],
            hypercalls: [const { AtomicU64::new(0) }; MAX_OP],
            vmm_ns: AtomicU64::new(0),
        }
    }

    pub fn user_exit(&self, kind: UserExit) {
        self.user_exits[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn hypercall(&self, op: Op) {
        if let Some(c) = self.hypercalls.get(op as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn vmm_time(&self, ns: u64) {
        self.vmm_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// The counts of one VM: the VMM's per vCPU, and KVM's once the vCPUs exist.
pub struct VmStats {
    vcpus: Vec<VcpuCounters>,
    kvm: OnceLock<Result<Vec<KvmStatsFd>, String>>,
    /// Whether the vCPU threads time what serving each exit costs (two
    /// `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` system calls an exit: only
    /// for runs that report it, `vmm bench`).
    timing: AtomicBool,
}

impl VmStats {
    pub fn new(vcpus: u64) -> Self {
        Self {
            vcpus: (0..vcpus).map(|_| VcpuCounters::new()).collect(),
            kvm: OnceLock::new(),
            timing: AtomicBool::new(false),
        }
    }

    /// Time the VMM's service of every exit from now on (`vmm_ns`).
    pub fn enable_timing(&self) {
        self.timing.store(true, Ordering::Relaxed);
    }

    /// The calling thread's CPU time, ns, if exits are timed; else 0.
    pub fn exit_clock(&self) -> u64 {
        if self.timing.load(Ordering::Relaxed) {
            thread_cpu_ns()
        } else {
            0
        }
    }

    /// vCPU `cpu`'s counters (a spare set for an index out of range: unit
    /// tests drive exits of made-up vCPUs).
    pub fn vcpu(&self, cpu: u64) -> &VcpuCounters {
        static SPARE: OnceLock<VcpuCounters> = OnceLock::new();
        self.vcpus.get(cpu as usize).unwrap_or_else(|| SPARE.get_or_init(VcpuCounters::new))
    }

    /// The vCPUs' KVM stats files (or why there are none), once.
    pub(super) fn set_kvm(&self, fds: Result<Vec<KvmStatsFd>, String>) {
        let _ = self.kvm.set(fds);
    }

    /// Every counter now, summed over the vCPUs.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        match self.kvm.get() {
            Some(Ok(fds)) => {
                let mut kvm = [Some(0u64); KVM_COUNTERS.len()];
                for fd in fds {
                    match fd.read() {
                        Ok(v) => {
                            for (acc, x) in kvm.iter_mut().zip(v) {
                                *acc = match (*acc, x) {
                                    (Some(a), Some(x)) => Some(a + x),
                                    _ => None,
                                };
                            }
                        }
                        Err(e) => {
                            s.kvm_unavailable = Some(format!("reading KVM's binary stats failed: {e}"));
                            kvm = [None; KVM_COUNTERS.len()];
                            break;
                        }
                    }
                }
                s.kvm = kvm;
            }
            Some(Err(e)) => s.kvm_unavailable = Some(e.clone()),
            None => s.kvm_unavailable = Some("the vCPUs do not exist yet".into()),
        }
        for v in &self.vcpus {
            for (acc, c) in s.user_exits.iter_mut().zip(&v.user_exits) {
                *acc += c.load(Ordering::Relaxed);
            }
            for (acc, c) in s.hypercalls.iter_mut().zip(&v.hypercalls) {
                *acc += c.load(Ordering::Relaxed);
            }
            s.vmm_ns += v.vmm_ns.load(Ordering::Relaxed);
        }
        s
    }
}

/// Every count at one moment, summed over the vCPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// KVM's counters ([`KVM_COUNTERS`]); `None` where this KVM lacks one.
    pub kvm: [Option<u64>; KVM_COUNTERS.len()],
    /// Why KVM's counters are missing altogether, if they are.
    pub kvm_unavailable: Option<String>,
    pub user_exits: [u64; UserExit::ALL.len()],
    pub hypercalls: [u64; MAX_OP],
    pub vmm_ns: u64,
}

impl Default for StatsSnapshot {
    fn default() -> Self {
        Self {
            kvm: [None; KVM_COUNTERS.len()],
            kvm_unavailable: None,
            user_exits: [0; UserExit::ALL.len()],
            hypercalls: [0; MAX_OP],
            vmm_ns: 0,
        }
    }
}

impl StatsSnapshot {
    /// What happened between `earlier` and `self`; added to `into`.
    pub fn accumulate_since(&self, earlier: &StatsSnapshot, into: &mut StatsSnapshot) {
        for ((acc, now), then) in into.kvm.iter_mut().zip(&self.kvm).zip(&earlier.kvm) {
            *acc = match (*acc, now, then) {
                (Some(a), Some(n), Some(t)) => Some(a + n.saturating_sub(*t)),
                _ => None,
            };
        }
        if into.kvm_unavailable.is_none() {
            into.kvm_unavailable = self.kvm_unavailable.clone().or_else(|| earlier.kvm_unavailable.clone());
        }
        for ((acc, n), t) in into.user_exits.iter_mut().zip(&self.user_exits).zip(&earlier.user_exits) {
            *acc += n.saturating_sub(*t);
        }
        for ((acc, n), t) in into.hypercalls.iter_mut().zip(&self.hypercalls).zip(&earlier.hypercalls) {
            *acc += n.saturating_sub(*t);
        }
        into.vmm_ns += self.vmm_ns.saturating_sub(earlier.vmm_ns);
    }

    /// All zero (KVM's counters present): the start of an accumulation.
    pub fn zero() -> Self {
        Self { kvm: [Some(0); KVM_COUNTERS.len()], ..Default::default() }
    }

    /// KVM's counter `name`, if this KVM has it.
    pub fn kvm_counter(&self, name: &str) -> Option<u64> {
        kvm_counter(name).and_then(|i| self.kvm[i])
    }

    /// Hypercalls by op, the ops made at least once.
    pub fn hypercalls_by_op(&self) -> Vec<(Op, u64)> {
        (0..MAX_OP as u64)
            .filter_map(|i| Op::from_u64(i).map(|op| (op, self.hypercalls[i as usize])))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn hypercalls_total(&self) -> u64 {
        self.hypercalls.iter().sum()
    }

    pub fn user_exits_total(&self) -> u64 {
        self.user_exits.iter().sum()
    }
}

/// One vCPU's KVM stats file: where each of [`KVM_COUNTERS`] lives in it.
pub struct KvmStatsFd {
    fd: OwnedFd,
    /// Byte offset of the data block and its length.
    data_off: u64,
    data_len: usize,
    /// Offset of each counter in the data block, `None` if KVM lacks it.
    offsets: [Option<usize>; KVM_COUNTERS.len()],
}

/// `_IO(KVMIO, 0xce)`.
const KVM_GET_STATS_FD: libc::c_ulong = 0xae00 | 0xce;
/// `KVM_STATS_TYPE_CUMULATIVE` in the low four bits of a descriptor's flags.
const KVM_STATS_TYPE_MASK: u32 = 0xf;

fn pread_exact(fd: &OwnedFd, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    // SAFETY: `buf` is a valid writable buffer of its length; `fd` is open.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n as usize != buf.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read of the KVM stats file"));
    }
    Ok(())
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl KvmStatsFd {
    /// Opens the stats of the vCPU behind `vcpu` and parses the
    /// descriptors once (`Documentation/virt/kvm/api.rst`, 4.133).
    pub fn open(vcpu: &impl AsRawFd) -> std::io::Result<Self> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd.
        let raw = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_GET_STATS_FD as _) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the ioctl returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Self::parse(fd)
    }

    fn parse(fd: OwnedFd) -> std::io::Result<Self> {
        let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("KVM stats: {what}"));
        // struct kvm_stats_header: flags, name_size, num_desc, id_offset, desc_offset, data_offset.
        let mut hdr = [0u8; 24];
        pread_exact(&fd, &mut hdr, 0)?;
        let (name_size, num) = (le32(&hdr, 4) as usize, le32(&hdr, 8) as usize);
        let (desc_off, data_off) = (le32(&hdr, 16) as u64, le32(&hdr, 20) as u64);
        if name_size > 4096 || num > 4096 {
            return Err(bad("implausible header"));
        }
        // struct kvm_stats_desc: flags, exponent, size (in u64s), offset, bucket_size, name.
        let dsz = 16 + name_size;
        let mut d = vec![0u8; dsz * num];
        pread_exact(&fd, &mut d, desc_off)?;
        let mut offsets = [None; KVM_COUNTERS.len()];
        let mut data_len = 0usize;
        for b in d.chunks_exact(dsz) {
            let flags = le32(b, 0);
            let size = u16::from_le_bytes([b[6], b[7]]) as usize;
            let off = le32(b, 8) as usize;
            data_len = data_len.max(off + 8 * size);
            let name = std::str::from_utf8(&b[16..]).unwrap_or("").trim_end_matches('\0');
            if flags & KVM_STATS_TYPE_MASK != 0 || size != 1 {
                continue;
            }
            if let Some(k) = kvm_counter(name) {
                offsets[k] = Some(off);
            }
        }
        if data_len > 1 << 20 {
            return Err(bad("implausible data block"));
        }
        Ok(Self { fd, data_off, data_len, offsets })
    }

    /// The counters now (one read of the data block).
    pub fn read(&self) -> std::io::Result<[Option<u64>; KVM_COUNTERS.len()]> {
        let mut data = vec![0u8; self.data_len];
        pread_exact(&self.fd, &mut data, self.data_off)?;
        let mut v = [None; KVM_COUNTERS.len()];
        for (out, off) in v.iter_mut().zip(&self.offsets) {
            *out = off.map(|o| u64::from_le_bytes(data[o..o + 8].try_into().unwrap_or([0; 8])));
        }
        Ok(v)
    }
}

/// CPU time of the calling thread, ns.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_is_what_happened_in_between_and_unavailable_stays_unavailable() {
        let stats = VmStats::new(2);
        stats.set_kvm(Err("no KVM_GET_STATS_FD".into()));
        let a = stats.snapshot();
        stats.vcpu(0).user_exit(UserExit::Hypercall);
        stats.vcpu(1).user_exit(UserExit::Yield);
        stats.vcpu(1).hypercall(Op::PtOp);
        stats.vcpu(0).vmm_time(500);
        let b = stats.snapshot();
        let mut d = StatsSnapshot::zero();
        b.accumulate_since(&a, &mut d);
        assert_eq!(d.user_exits_total(), 2);
        assert_eq!(d.hypercalls_by_op(), vec![(Op::PtOp, 1)]);
        assert_eq!(d.vmm_ns, 500);
        assert_eq!(d.kvm_counter("exits"), None);
        assert_eq!(d.kvm_unavailable.as_deref(), Some("no KVM_GET_STATS_FD"));
    }
}
