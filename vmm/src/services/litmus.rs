//! The litmus session of one (test, policy): the blob the guest interprets,
//! LITMUS_RESULT (each iteration's observed values), and the iteration
//! watch — a periodic timer on the supervisor that ends a boot whose
//! iteration stopped making progress, after reading where every thread was
//! from the guest's state page.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use abi::hypercall::{calls, Op};
use abi::litmus::{state, Hook, VALUE_TIMEOUT};
use abi::{dma, layout};
use iommu::mem as gmem;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::timerfd::TimerFd;

use crate::vstate::{
    Call, EndReason, GuestFault, HypercallHandler, Reply, Service, SetupError, StatsSnapshot, VcpuCtx, VmSetup,
    VmStats, Watch,
};

/// What one iteration reported (`LITMUS_RESULT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IterReport {
    pub iteration: u64,
    pub values: Vec<u64>,
    /// Data / page-table pages not returned after teardown.
    pub leaked_pages: i64,
    pub leaked_tables: i64,
    pub guest_ns: u64,
    /// When the VMM received it.
    pub received: Instant,
}

/// Where the threads were when an iteration ran out of time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stall {
    pub iteration: u64,
    pub phase: u64,
    /// Per thread (vCPU threads, then devices): `None` = finished, else
    /// (pc, hook).
    pub positions: Vec<Option<(u32, Option<Hook>)>>,
}

/// Told when an iteration reported (the trace drains and flushes then).
pub trait IterationObserver: Send + Sync {
    fn iteration_done(&self, iteration: u64);
}

/// Why the supervisor stopped a boot: the session's stall.
pub const STALLED: &str = "iteration-timeout";

/// Most observed values one iteration may report (the interpreter's limit).
pub const MAX_VALUES: u64 = 64;

/// Shared between the runner, the VM's hypercall handler and its supervisor.
#[derive(Debug)]
pub struct LitmusSession {
    pub blob: Vec<u8>,
    n_vcpu_threads: usize,
    n_device_threads: usize,
    /// Iterations of the whole run: reports for others are a guest error.
    iterations: u64,
    iteration_timeout: Duration,
    reports: Mutex<Vec<IterReport>>,
    /// Bumped by every report: the watch's progress mark.
    progress: AtomicU64,
    last_progress: Mutex<(u64, Instant)>,
    stall: Mutex<Option<Stall>>,
    /// Hears every report (the command's progress display).
    progress_observer: Mutex<Option<Arc<dyn IterationObserver>>>,
    /// `vmm bench`: count what the iterations cost (see [`Measured`]).
    measure: std::sync::atomic::AtomicBool,
    measured: Mutex<Measured>,
}

/// What the measured iterations cost, summed over the boots: the counts
/// from each boot's first LITMUS_RESULT to its last, so boot and the
/// first iteration's set-up stay out.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// Iterations between the first and last report of each boot.
    pub iterations: u64,
    pub counts: Option<StatsSnapshot>,
    /// Wall time of those iterations.
    pub elapsed: Duration,
}

/// One boot's first and latest report (iteration, counts, when).
type Marks = Option<((u64, StatsSnapshot, Instant), (u64, StatsSnapshot, Instant))>;

impl std::fmt::Debug for dyn IterationObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IterationObserver")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LitmusSession {
    pub fn new(
        blob: Vec<u8>,
        n_vcpu_threads: usize,
        n_device_threads: usize,
        iterations: u64,
        iteration_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(LitmusSession {
            blob,
            n_vcpu_threads,
            n_device_threads,
            iterations,
            iteration_timeout,
            reports: Mutex::new(Vec::new()),
            progress: AtomicU64::new(0),
            last_progress: Mutex::new((0, Instant::now())),
            stall: Mutex::new(None),
            progress_observer: Mutex::new(None),
            measure: std::sync::atomic::AtomicBool::new(false),
            measured: Mutex::new(Measured::default()),
        })
    }

    /// Count what the iterations cost (KVM's and the VMM's counters around
    /// them), for `vmm bench`.
    pub fn measure(&self) {
        self.measure.store(true, Ordering::Relaxed);
    }

    /// What the measured iterations cost so far.
    pub fn measured(&self) -> Measured {
        lock(&self.measured).clone()
    }

    /// Every report of every boot is also told to `o` (progress display).
    pub fn set_progress(&self, o: Arc<dyn IterationObserver>) {
        *lock(&self.progress_observer) = Some(o);
    }

    /// The service for one boot; `observer` hears every iteration.
    pub fn boot(self: &Arc<Self>, observer: Option<Arc<dyn IterationObserver>>) -> Arc<LitmusBoot> {
        *lock(&self.last_progress) = (self.progress.load(Ordering::Acquire), Instant::now());
        Arc::new(LitmusBoot { session: self.clone(), observer, stats: Mutex::new(None), marks: Mutex::new(None) })
    }

    /// The reports received since the last call.
    pub fn take_reports(&self) -> Vec<IterReport> {
        std::mem::take(&mut *lock(&self.reports))
    }

    /// Where the threads were when the watch stopped the boot.
    pub fn take_stall(&self) -> Option<Stall> {
        lock(&self.stall).take()
    }

    /// True (after snapshotting the threads' positions) when no iteration
    /// finished within the limit.
    pub fn stalled(&self, mem: &GuestMemoryMmap) -> bool {
        let now = self.progress.load(Ordering::Acquire);
        let mut last = lock(&self.last_progress);
        if now != last.0 {
            *last = (now, Instant::now());
            return false;
        }
        if last.1.elapsed() < self.iteration_timeout {
            return false;
        }
        *lock(&self.stall) = Some(self.snapshot(mem));
        true
    }

    fn snapshot(&self, mem: &GuestMemoryMmap) -> Stall {
        let word = |off: u64| gmem::load_u64(mem, layout::LITMUS_STATE + off).unwrap_or(0);
        let mut positions = Vec::new();
        for t in 0..self.n_vcpu_threads {
            let w = word(state::POSITIONS + 8 * t as u64);
            positions.push(if w & state::pos::FINISHED != 0 {
                None
            } else {
                let hook = Hook::from_u8(((w & state::pos::HOOK_MASK) >> state::pos::HOOK_SHIFT) as u8);
                Some(((w & state::pos::PC_MASK) as u32, hook))
            });
        }
        for d in 0..self.n_device_threads {
            let prog = word(state::DEVICE_PROGRAMS + 8 * d as u64);
            let nops = prog.checked_add(8).and_then(|a| gmem::load_u64(mem, a).ok()).unwrap_or(0).min(dma::MAX_OPS);
            let stuck = (0..nops).find_map(|i| {
                let at = dma::op_gpa(prog, i)?;
                let result = gmem::load_u64(mem, at.checked_add(dma::RESULT_OFFSET)?).ok()?;
                (result == VALUE_TIMEOUT).then(|| gmem::load_u64(mem, at).ok()).flatten()
            });
            positions.push(stuck.map(|op| ((op >> dma::op::TAG_SHIFT) as u32, None)));
        }
        Stall { iteration: word(state::ITERATION), phase: word(state::PHASE), positions }
    }

    /// Records one LITMUS_RESULT; returns its iteration.
    fn report(&self, call: &Call<'_>, observer: Option<&Arc<dyn IterationObserver>>) -> Result<u64, GuestFault> {
        let r = call.request::<calls::LitmusResult>()?;
        let bad = |reason: String| GuestFault::rejected(call.op, reason);
        if r.iteration >= self.iterations {
            return Err(bad(format!("LITMUS_RESULT for iteration {} of a run of {}", r.iteration, self.iterations)));
        }
        let bytes = r.values.checked_mul(8).filter(|&b| r.values <= MAX_VALUES && b <= call.data.len() as u64);
        let Some(bytes) = bytes else {
            return Err(bad(format!(
                "LITMUS_RESULT with {} values but {} bytes of data (at most {MAX_VALUES} values)",
                r.values,
                call.data.len()
            )));
        };
        let values = call.data[..bytes as usize]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        {
            let mut reports = lock(&self.reports);
            if reports.len() as u64 >= self.iterations {
                return Err(bad(format!("more LITMUS_RESULTs than the run's {} iterations", self.iterations)));
            }
            reports.push(IterReport {
                iteration: r.iteration,
                values,
                leaked_pages: r.leaked_pages,
                leaked_tables: r.leaked_tables,
                guest_ns: r.guest_ns,
                received: Instant::now(),
            });
        }
        self.progress.fetch_add(1, Ordering::AcqRel);
        if let Some(o) = observer {
            o.iteration_done(r.iteration);
        }
        if let Some(o) = lock(&self.progress_observer).as_ref() {
            o.iteration_done(r.iteration);
        }
        Ok(r.iteration)
    }
}

/// One boot of a session: writes the blob, serves LITMUS_RESULT, watches progress.
pub struct LitmusBoot {
    session: Arc<LitmusSession>,
    observer: Option<Arc<dyn IterationObserver>>,
    /// The VM's counters, when the session measures.
    stats: Mutex<Option<Arc<VmStats>>>,
    marks: Mutex<Marks>,
}

impl LitmusBoot {
    /// A report arrived: the counts at this iteration's end.
    fn mark(&self, iteration: u64) {
        let Some(stats) = lock(&self.stats).clone() else { return };
        let now = (iteration, stats.snapshot(), Instant::now());
        let mut m = lock(&self.marks);
        match &mut *m {
            None => *m = Some((now.clone(), now)),
            Some((_, last)) => *last = now,
        }
    }
}

/// The blob does not fit the guest's window.
#[derive(Debug, thiserror::Error)]
#[error("litmus test too large: {0} bytes of bytecode (at most {max})", max = layout::LITMUS_BLOB_MAX)]
pub struct BlobTooLarge(pub usize);

/// Every `TICK` the watch looks at the progress mark.
const TICK: Duration = Duration::from_millis(50);

struct StallWatch {
    timer: Mutex<TimerFd>,
    session: Arc<LitmusSession>,
}

impl Watch for StallWatch {
    fn fd(&self) -> RawFd {
        lock(&self.timer).as_raw_fd()
    }
    fn ready(&self, mem: &GuestMemoryMmap) -> Option<EndReason> {
        let _ = lock(&self.timer).wait();
        self.session.stalled(mem).then_some(EndReason::Stopped { by: STALLED })
    }
}

impl Service for LitmusBoot {
    fn name(&self) -> &'static str {
        "litmus"
    }

    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError> {
        let blob = &self.session.blob;
        if blob.len() as u64 > layout::LITMUS_BLOB_MAX {
            return Err(SetupError::service("litmus", BlobTooLarge(blob.len())));
        }
        vm.mem.write_slice(blob, GuestAddress(layout::LITMUS_BLOB)).map_err(|e| SetupError::service("litmus", e))?;
        let mut timer = TimerFd::new().map_err(|e| SetupError::service("litmus", e))?;
        timer.reset(TICK, Some(TICK)).map_err(|e| SetupError::service("litmus", e))?;
        vm.add_watch(Arc::new(StallWatch { timer: Mutex::new(timer), session: self.session.clone() }));
        if self.session.measure.load(Ordering::Relaxed) {
            vm.stats.enable_timing();
            *lock(&self.stats) = Some(vm.stats.clone());
        }
        vm.add_hypercalls(self)
    }

    fn finished(&self, _end: &EndReason) {
        let Some(((i0, c0, t0), (i1, c1, t1))) = lock(&self.marks).take() else { return };
        if i1 <= i0 {
            return;
        }
        let mut m = lock(&self.session.measured);
        m.iterations += i1 - i0;
        m.elapsed += t1.saturating_duration_since(t0);
        c1.accumulate_since(&c0, m.counts.get_or_insert_with(StatsSnapshot::zero));
    }
}

impl HypercallHandler for LitmusBoot {
    fn name(&self) -> &'static str {
        "litmus"
    }
    fn ops(&self) -> &'static [Op] {
        &[Op::LitmusResult]
    }
    fn handle(&self, _: &mut VcpuCtx<'_>, call: &Call<'_>) -> Result<Reply, GuestFault> {
        let iteration = self.session.report(call, self.observer.as_ref())?;
        self.mark(iteration);
        Ok(Reply::empty())
    }
}
