//! The DMA engine: device programs (`abi::dma`) run through the emulated
//! IOMMU, concurrently with the vCPUs.
//!
//! Bounded and stoppable whatever the guest does: one worker thread per
//! device slot (at most [`dma::MAX_SLOTS`], started on the slot's first
//! program), each holding at most one program queued behind the running
//! one; an idle worker blocks on its slot's condition variable. Waits on
//! kernel words, retries after a translation fault and delays park on the
//! engine's condition variable (a bounded back-off, woken at once by a
//! device `SIGNAL`/`KADD` or by [`DmaEngine::stop`]), so a stopped VM's
//! workers end within milliseconds. Every guest-supplied GPA (the program,
//! its results, kernel words) must lie outside the page-table and shadow
//! regions ([`layout::guest_writable`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use abi::dma::{self, AccessKind, Action, Operand, ProgramHeader, WaitCond};
use abi::layout;
use abi::trace::UNIT_IOMMU;
use iommu::mem as gmem;
use iommu::{DmaAccess, DmaError, Iommu, Msi};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// How long a RETRY op waits for the guest to fix a faulting translation.
pub const RETRY_LIMIT: Duration = Duration::from_secs(5);
/// How long a WAIT op waits for its word.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// First and longest park of a waiting op between looks at its word.
const PARK_MIN: Duration = Duration::from_micros(20);
const PARK_MAX: Duration = Duration::from_micros(100);
/// Park between retries of a faulting access.
const RETRY_PARK: Duration = Duration::from_micros(200);

thread_local! {
    /// The device slot this host thread runs (DMA workers); `UNIT_IOMMU`
    /// elsewhere (invalidations processed on a vCPU's exit).
    static DEVICE_UNIT: Cell<u8> = const { Cell::new(UNIT_IOMMU) };
}

/// The trace unit of the current thread: its device slot, or the IOMMU.
pub fn current_device_unit() -> u8 {
    DEVICE_UNIT.with(|u| u.get())
}

/// Why a submission was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("device slot {0} out of range (0..{max})", max = dma::MAX_SLOTS)]
    BadSlot(u64),
    #[error("device program at GPA {0:#x} is not an 8-byte aligned address outside the page-table and shadow regions")]
    BadProgram(u64),
    #[error("DMA engine is not running")]
    Stopped,
    #[error("cannot start a DMA worker thread")]
    NoThread,
}

/// A slot's queue: the program waiting behind the one its worker runs.
#[derive(Default)]
struct SlotState {
    queued: Option<u64>,
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    work: Condvar,
    worker: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    mem: GuestMemoryMmap,
    iommu: Arc<Mutex<Iommu>>,
    deliver: Arc<dyn Fn(Msi) + Send + Sync>,
    stop: AtomicBool,
    slots: Vec<Slot>,
    /// Parked ops wait here; a device store or `stop` wakes them.
    park: Mutex<()>,
    wake: Condvar,
    /// Told the GPA of every kernel word a program stored (`SIGNAL`,
    /// `KADD`) and of each program's status word when it ends.
    on_store: OnceLock<Arc<dyn Fn(u64) + Send + Sync>>,
}

pub struct DmaEngine {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DmaEngine {
    /// `deliver` raises the MSIs the IOMMU asks for (page requests).
    pub fn new(mem: GuestMemoryMmap, iommu: Arc<Mutex<Iommu>>, deliver: Arc<dyn Fn(Msi) + Send + Sync>) -> Self {
        let slots = (0..dma::MAX_SLOTS).map(|_| Slot::default()).collect();
        let shared = Shared {
            mem,
            iommu,
            deliver,
            stop: AtomicBool::new(false),
            slots,
            park: Mutex::new(()),
            wake: Condvar::new(),
            on_store: OnceLock::new(),
        };
        DmaEngine { shared: Arc::new(shared) }
    }

    /// Calls `f(gpa)` after every kernel-word store of a program and after
    /// a program's status word is set at its end (vCPUs parked on the word
    /// wake up). Set once, before programs run.
    pub fn on_kernel_store(&self, f: Arc<dyn Fn(u64) + Send + Sync>) {
        let _ = self.shared.on_store.set(f);
    }

    /// Queues the program at `program` on `slot`'s worker. `Ok(false)`: the
    /// slot already had a program queued; the header is marked `BUSY`.
    pub fn submit(&self, slot: u64, program: u64) -> Result<bool, SubmitError> {
        let s = &self.shared;
        if s.stop.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let Some(sl) = s.slots.get(slot as usize) else { return Err(SubmitError::BadSlot(slot)) };
        if !program.is_multiple_of(8) || !layout::guest_writable(program, dma::HEADER_SIZE) {
            return Err(SubmitError::BadProgram(program));
        }
        {
            let mut st = lock(&sl.state);
            if st.queued.is_some() {
                drop(st);
                let _ = gmem::store_u64(&s.mem, program + dma::STATUS_OFFSET, dma::status::BUSY);
                return Ok(false);
            }
            st.queued = Some(program);
        }
        let mut worker = lock(&sl.worker);
        if worker.is_none() {
            let shared = self.shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("dma-slot{slot}"))
                .spawn(move || worker_loop(&shared, slot))
                .map_err(|_| SubmitError::NoThread)?;
            *worker = Some(h);
        }
        sl.work.notify_one();
        Ok(true)
    }

    /// Runs the program at `program` on the calling thread, to its end or
    /// its first error, without touching its status word (tests, fuzzing).
    pub fn run_now(&self, program: u64) -> Result<(), ProgramError> {
        run_program(&self.shared, program)
    }

    /// Workers that have been started (at most one per slot).
    pub fn workers(&self) -> usize {
        self.shared.slots.iter().filter(|s| lock(&s.worker).is_some()).count()
    }

    /// Stops every worker: waiting, retrying and delaying ops give up at
    /// once, queued programs are dropped. Returns after the workers ended.
    pub fn stop(&self) {
        let s = &self.shared;
        s.stop.store(true, Ordering::Release);
        for sl in &s.slots {
            let _g = lock(&sl.state);
            sl.work.notify_all();
        }
        {
            let _g = lock(&s.park);
            s.wake.notify_all();
        }
        for sl in &s.slots {
            if let Some(h) = lock(&sl.worker).take() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for DmaEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

fn worker_loop(s: &Shared, slot: u64) {
    DEVICE_UNIT.with(|u| u.set(slot as u8));
    let sl = &s.slots[slot as usize];
    loop {
        let program = {
            let mut st = lock(&sl.state);
            loop {
                if s.stop.load(Ordering::Acquire) {
                    return;
                }
                if let Some(p) = st.queued.take() {
                    break p;
                }
                st = sl.work.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        let status = match run_program(s, program) {
            Ok(()) => dma::status::DONE,
            Err(e) => {
                log::debug!("DMA slot {slot}: program at {program:#x} rejected: {e}");
                dma::status::BAD_PROGRAM
            }
        };
        if !s.stop.load(Ordering::Acquire) {
            let _ = gmem::store_u64(&s.mem, program + dma::STATUS_OFFSET, status);
            if let Some(f) = s.on_store.get() {
                f(program + dma::STATUS_OFFSET);
            }
        }
    }
}

/// Why a program stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    #[error(transparent)]
    Decode(#[from] dma::DecodeError),
    #[error("op {0}: its record or kernel word lies outside guest-writable RAM")]
    Memory(u64),
    #[error("stopped")]
    Stopped,
}

/// Runs the program at `gpa`: reads its header and each op as it comes
/// (the guest may not change a submitted program; it only reads results).
fn run_program(s: &Shared, gpa: u64) -> Result<(), ProgramError> {
    let mem = &s.mem;
    let hdr = ProgramHeader {
        pasid: mem.read_obj(GuestAddress(gpa)).map_err(|_| ProgramError::Memory(0))?,
        nops: mem.read_obj(GuestAddress(gpa.wrapping_add(8))).map_err(|_| ProgramError::Memory(0))?,
        status: 0,
        reserved: 0,
    };
    let (pasid, nops) = dma::decode_header(gpa, &hdr)?;
    let end = dma::op_gpa(gpa, nops).ok_or(ProgramError::Memory(nops))?;
    if !layout::guest_writable(gpa, end - gpa) {
        return Err(ProgramError::Memory(0));
    }
    // Under `vmm explore` each op is a scheduling point of this device thread.
    let mut sched = super::explore::DeviceThread::join(mem, current_device_unit() as u64);
    let stopped = || s.stop.load(Ordering::Acquire);
    for i in 0..nops {
        let at = dma::op_gpa(gpa, i).ok_or(ProgramError::Memory(i))?;
        let rd = |off: u64| mem.read_obj::<u64>(GuestAddress(at + off)).map_err(|_| ProgramError::Memory(i));
        let rec = dma::OpRecord { op: rd(0)?, va: rd(8)?, value: rd(16)?, result: 0 };
        let action = dma::decode_op(i, &rec)?;
        if let Some(d) = &mut sched {
            let wanted = match action {
                Action::Wait { value, .. } => operand(s, gpa, i, value)?,
                _ => 0,
            };
            let (guard, note) = super::explore::device_step(&action, wanted);
            if d.point((rec.op >> dma::op::TAG_SHIFT) as u32, guard, &stopped) {
                if let Some((obj, write)) = note {
                    d.note(obj, write);
                }
            } else {
                sched = None;
            }
        }
        let result = run_op(s, pasid, gpa, i, action)?;
        gmem::store_u64(mem, at + dma::RESULT_OFFSET, result).map_err(|_| ProgramError::Memory(i))?;
    }
    if let Some(d) = &sched {
        d.finish();
    }
    Ok(())
}

fn operand(s: &Shared, program: u64, index: u64, o: Operand) -> Result<u64, ProgramError> {
    match o {
        Operand::Imm(v) => Ok(v),
        Operand::ResultOf(k) => {
            let at = dma::op_gpa(program, k).ok_or(ProgramError::Memory(index))? + dma::RESULT_OFFSET;
            gmem::load_u64(&s.mem, at).map_err(|_| ProgramError::Memory(index))
        }
    }
}

/// A kernel word's GPA: 8-byte aligned and guest-writable.
fn kernel_word(gpa: u64, index: u64) -> Result<u64, ProgramError> {
    if gpa.is_multiple_of(8) && layout::guest_writable(gpa, 8) {
        Ok(gpa)
    } else {
        Err(ProgramError::Memory(index))
    }
}

/// Parks for at most `d`; false if the engine is stopping.
fn park(s: &Shared, d: Duration) -> bool {
    if s.stop.load(Ordering::Acquire) {
        return false;
    }
    let g = lock(&s.park);
    let _ = s.wake.wait_timeout(g, d);
    !s.stop.load(Ordering::Acquire)
}

/// Wakes parked ops (a device wrote a kernel word).
fn wake(s: &Shared) {
    let _g = lock(&s.park);
    s.wake.notify_all();
}

fn run_op(s: &Shared, pasid: u32, program: u64, index: u64, action: Action) -> Result<u64, ProgramError> {
    let mem = &s.mem;
    let (kind, va, value, retry) = match action {
        Action::Wait { cond, gpa, value } => {
            let gpa = kernel_word(gpa, index)?;
            let want = operand(s, program, index, value)?;
            let start = Instant::now();
            let mut pause = PARK_MIN;
            loop {
                let v = gmem::load_u64(mem, gpa).map_err(|_| ProgramError::Memory(index))?;
                let met = match cond {
                    WaitCond::Eq => v == want,
                    WaitCond::Ne => v != want,
                    WaitCond::Ge => v >= want,
                };
                if met {
                    return Ok(v);
                }
                if start.elapsed() > WAIT_LIMIT || !park(s, pause) {
                    return Ok(dma::FAULT);
                }
                pause = (pause * 2).min(PARK_MAX);
            }
        }
        Action::Kadd { gpa, value } => {
            let gpa = kernel_word(gpa, index)?;
            let v = operand(s, program, index, value)?;
            let old = gmem::fetch_add_u64(mem, gpa, v).map_err(|_| ProgramError::Memory(index))?;
            wake(s);
            if let Some(f) = s.on_store.get() {
                f(gpa);
            }
            return Ok(old);
        }
        Action::Signal { gpa, value } => {
            let gpa = kernel_word(gpa, index)?;
            let v = operand(s, program, index, value)?;
            gmem::store_u64(mem, gpa, v).map_err(|_| ProgramError::Memory(index))?;
            wake(s);
            if let Some(f) = s.on_store.get() {
                f(gpa);
            }
            return Ok(0);
        }
        Action::Delay { us } => {
            let until = Instant::now() + Duration::from_micros(us);
            while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                if !park(s, left) {
                    return Err(ProgramError::Stopped);
                }
            }
            return Ok(0);
        }
        Action::Access { kind, va, operand: o, retry } => (kind, va, operand(s, program, index, o)?, retry),
    };
    let access = match kind {
        AccessKind::Load => DmaAccess::Load,
        AccessKind::Store => DmaAccess::Store(value),
        AccessKind::Xchg => DmaAccess::Xchg(value),
        AccessKind::FetchAdd => DmaAccess::FetchAdd(value),
        AccessKind::Prefetch => DmaAccess::Prefetch,
    };
    let start = Instant::now();
    loop {
        let res = lock(&s.iommu).access(pasid, va, access, mem);
        match res {
            Ok(v) => return Ok(v),
            Err(DmaError::StaleWalk { .. }) => return Ok(dma::STALE_WALK),
            Err(DmaError::Fault(f)) => {
                if let Some(msi) = f.msi {
                    (s.deliver)(msi);
                }
                if !retry || start.elapsed() > RETRY_LIMIT || !park(s, RETRY_PARK) {
                    return Ok(dma::FAULT);
                }
            }
            Err(_) => return Ok(dma::FAULT),
        }
    }
}
