//! The DMA engine: a VMM thread that runs device programs (`abi::dma`)
//! through the emulated IOMMU, concurrently with the vCPUs. It blocks on a
//! channel when idle (no polling); `DMA_SUBMIT` hands it a program's GPA.
//! Each program runs on its own worker thread, so several devices (litmus
//! device threads) can wait on each other's flags.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use abi::dma::{self, op, status, OpRecord};
use iommu::mem as gmem;
use iommu::{DmaError, Iommu, Msi};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// How long a RETRY op waits for the guest to fix a faulting translation.
const RETRY_LIMIT: Duration = Duration::from_secs(5);
/// How long a WAIT_EQ op waits for its word.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

pub struct DmaEngine {
    tx: Option<Sender<u64>>,
    thread: Option<JoinHandle<()>>,
    /// Set when the VM goes away: waiting programs give up at once.
    stop: Arc<AtomicBool>,
}

impl DmaEngine {
    /// Starts the engine thread. `deliver` raises the MSIs the IOMMU asks
    /// for (page requests); `log` reports malformed programs.
    pub fn start(
        mem: GuestMemoryMmap,
        iommu: Arc<Mutex<Iommu>>,
        deliver: Arc<dyn Fn(Msi) + Send + Sync>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dma-engine".into())
            .spawn(move || engine_loop(rx, mem, iommu, deliver, stop2))?;
        Ok(Self { tx: Some(tx), thread: Some(thread), stop })
    }

    pub fn submit(&self, program_gpa: u64) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(program_gpa).is_ok())
    }
}

impl Drop for DmaEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        drop(self.tx.take()); // closes the channel: the thread ends
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn engine_loop(
    rx: Receiver<u64>,
    mem: GuestMemoryMmap,
    iommu: Arc<Mutex<Iommu>>,
    deliver: Arc<dyn Fn(Msi) + Send + Sync>,
    stop: Arc<AtomicBool>,
) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    while let Ok(gpa) = rx.recv() {
        workers.retain(|w| !w.is_finished());
        let (mem, iommu, deliver, stop) = (mem.clone(), iommu.clone(), deliver.clone(), stop.clone());
        let work = move || {
            let st = match run_program(gpa, &mem, &iommu, &*deliver, &stop) {
                Ok(()) => status::DONE,
                Err(()) => status::BAD_PROGRAM,
            };
            let _ = gmem::store_u64(&mem, gpa + 16, st);
        };
        match std::thread::Builder::new().name("dma-worker".into()).spawn(work) {
            Ok(h) => workers.push(h),
            // No thread: the program stays PENDING and the guest's wait times out.
            Err(_) => continue,
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

fn run_program(
    gpa: u64,
    mem: &GuestMemoryMmap,
    iommu: &Mutex<Iommu>,
    deliver: &dyn Fn(Msi),
    stop: &AtomicBool,
) -> Result<(), ()> {
    if !gpa.is_multiple_of(8) {
        return Err(());
    }
    let pasid: u64 = mem.read_obj(GuestAddress(gpa)).map_err(|_| ())?;
    let nops: u64 = mem.read_obj(GuestAddress(gpa + 8)).map_err(|_| ())?;
    if nops > dma::MAX_OPS || pasid > u32::MAX as u64 {
        return Err(());
    }
    let pasid = pasid as u32;
    let device = device_index(gpa, mem);
    crate::trace::set_device_unit(device);
    // Under `vmm explore` each op is a scheduling point of this device thread.
    let mut sched = crate::explore_run::DeviceThread::join(mem, device as u64);
    let stopped = || stop.load(Ordering::Acquire);
    for i in 0..nops {
        let at = gpa + dma::HEADER_SIZE + i * dma::OP_SIZE;
        let mut rec = OpRecord {
            op: mem.read_obj(GuestAddress(at)).map_err(|_| ())?,
            va: mem.read_obj(GuestAddress(at + 8)).map_err(|_| ())?,
            value: mem.read_obj(GuestAddress(at + 16)).map_err(|_| ())?,
            result: 0,
        };
        if rec.op & op::VALUE_FROM != 0 {
            if rec.value >= i {
                return Err(());
            }
            let from = gpa + dma::HEADER_SIZE + rec.value * dma::OP_SIZE + 24;
            rec.value = mem.read_obj(GuestAddress(from)).map_err(|_| ())?;
        }
        if let Some(d) = &mut sched {
            let (guard, note) = explore_step(&rec);
            if d.point((rec.op >> op::TAG_SHIFT) as u32, guard, &stopped) {
                if let Some((obj, write)) = note {
                    d.note(obj, write);
                }
            } else {
                sched = None;
            }
        }
        let result = run_op(pasid, &rec, mem, iommu, deliver, stop)?;
        gmem::store_u64(mem, at + 24, result).map_err(|_| ())?;
    }
    if let Some(d) = &sched {
        d.finish();
    }
    Ok(())
}

/// A device op's guard and footprint under `vmm explore`: waits wait on
/// their kernel word; loads read the mm model (IOTLB, page tables, data),
/// stores and atomics write it.
fn explore_step(r: &OpRecord) -> (abi::explore::Guard, Option<(u16, bool)>) {
    use abi::explore::{guard, object, Guard};
    use abi::layout::{LITMUS_STATE, LITMUS_VARS, PAGE_SIZE};
    let word_object = |va: u64| {
        if (LITMUS_VARS..LITMUS_VARS + PAGE_SIZE).contains(&va) {
            object::VAR + ((va - LITMUS_VARS) / 8) as u16
        } else if va == LITMUS_STATE + abi::litmus::state::BARRIER {
            object::BARRIER
        } else {
            object::MEM
        }
    };
    let kind = r.op & op::KIND_MASK;
    let wait = |k| Guard { kind: k, addr: r.va, value: r.value, object: word_object(r.va) };
    match kind {
        op::WAIT_EQ => (wait(guard::EQ), Some((word_object(r.va), false))),
        op::WAIT_NE => (wait(guard::NE), Some((word_object(r.va), false))),
        op::WAIT_GE => (wait(guard::GE), Some((word_object(r.va), false))),
        op::SIGNAL | op::KADD => (Guard::NONE, Some((word_object(r.va), true))),
        op::LOAD | op::PREFETCH => (Guard::NONE, Some((object::MEM, false))),
        op::STORE | op::XCHG | op::FETCH_ADD => (Guard::NONE, Some((object::MEM, true))),
        _ => (Guard::NONE, None),
    }
}

/// Which litmus device thread a program is (its slot in the litmus state
/// page's program table), for trace records; 0 outside litmus runs.
fn device_index(gpa: u64, mem: &GuestMemoryMmap) -> u8 {
    use abi::litmus::state;
    (0..16u64)
        .find(|d| {
            gmem::load_u64(mem, abi::layout::LITMUS_STATE + state::DEVICE_PROGRAMS + 8 * d).is_ok_and(|p| p == gpa)
        })
        .unwrap_or(0) as u8
}

fn run_op(
    pasid: u32,
    r: &OpRecord,
    mem: &GuestMemoryMmap,
    iommu: &Mutex<Iommu>,
    deliver: &dyn Fn(Msi),
    stop: &AtomicBool,
) -> Result<u64, ()> {
    let kind = r.op & op::KIND_MASK;
    match kind {
        op::WAIT_EQ | op::WAIT_NE | op::WAIT_GE => {
            let start = Instant::now();
            loop {
                let v = gmem::load_u64(mem, r.va).map_err(|_| ())?;
                let met = match kind {
                    op::WAIT_EQ => v == r.value,
                    op::WAIT_NE => v != r.value,
                    _ => v >= r.value,
                };
                if met {
                    return Ok(v);
                }
                if start.elapsed() > WAIT_LIMIT || stop.load(Ordering::Acquire) {
                    return Ok(dma::FAULT);
                }
                std::thread::sleep(Duration::from_micros(20));
            }
        }
        op::KADD => {
            let old = gmem::fetch_add_u64(mem, r.va, r.value).map_err(|_| ())?;
            return Ok(old);
        }
        op::SIGNAL => {
            gmem::store_u64(mem, r.va, r.value).map_err(|_| ())?;
            return Ok(0);
        }
        op::DELAY_US => {
            std::thread::sleep(Duration::from_micros(r.value.min(1_000_000)));
            return Ok(0);
        }
        op::LOAD | op::STORE | op::XCHG | op::FETCH_ADD | op::PREFETCH => {}
        _ => return Err(()),
    }
    let start = Instant::now();
    loop {
        let res = {
            let mut io = iommu.lock().unwrap();
            match kind {
                op::LOAD => io.dma_load_u64(pasid, r.va, mem),
                op::STORE => io.dma_store_u64(pasid, r.va, r.value, mem).map(|()| 0),
                op::XCHG => io.dma_xchg_u64(pasid, r.va, r.value, mem),
                op::FETCH_ADD => io.dma_fetch_add_u64(pasid, r.va, r.value, mem),
                _ => io.prefetch(pasid, r.va, mem).map(|()| 0),
            }
        };
        match res {
            Ok(v) => return Ok(v),
            Err(DmaError::StaleWalk { .. }) => return Ok(dma::STALE_WALK),
            Err(DmaError::Fault(f)) => {
                if let Some(msi) = f.msi {
                    deliver(msi);
                }
                if r.op & op::RETRY == 0 || start.elapsed() > RETRY_LIMIT {
                    return Ok(dma::FAULT);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(_) => return Ok(dma::FAULT),
        }
    }
}
