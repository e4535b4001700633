//! Tracing on the VMM side (`vmm litmus --trace FILE`).
//!
//! Per boot a [`Tracer`] (a service: TRACE_DRAIN) sets up the guest's trace area (ring geometry,
//! sequence counter, enabled flag), drains the vCPUs' rings — when a ring
//! is full (`TRACE_DRAIN`), after every iteration, and when the boot ends,
//! whatever the reason — and records the VMM's own events (shadow fills,
//! flushes, evictions) and the device's (IOTLB, invalidation queue,
//! accesses) with sequence numbers from the same guest counter. Records go
//! to the trace file as they are drained; the file is flushed after each
//! iteration, so a crash or a timeout keeps everything before it.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use abi::hypercall::calls::{self, TraceDrainReply};
use abi::hypercall::Op;
use abi::trace::{area, dev_access, dev_op, source, Kind, Record, RECORD_LEN, UNIT_IOMMU};
use iommu::mem as gmem;
use iommu::{CacheKind, DmaOp, Event, EventSink, EvictReason, StaleCause};
use tools::format::{BootEnd, BootMeta, RunEnd, RunMeta, Writer};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::litmus::IterationObserver;
use crate::devices::dma::current_device_unit;
use crate::devices::TraceSink;
use crate::vstate::{
    Call, EndReason, GuestClock, GuestFault, HypercallHandler, Reply, Service, SetupError, VcpuCtx, VmSetup,
};

/// The trace file could not be created or written.
#[derive(Debug, thiserror::Error)]
#[error("--trace {}: {source}", path.display())]
pub struct TraceFileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The trace file, shared by every boot of every run of one `vmm litmus`.
pub struct TraceOut {
    w: Writer<BufWriter<File>>,
    path: PathBuf,
    /// The first write error; later writes are skipped.
    error: Option<String>,
}

impl TraceOut {
    /// Creates the file and writes its header through to the disk, so a
    /// path that cannot take it fails now, before anything runs.
    pub fn create(path: &Path) -> Result<TraceOut, TraceFileError> {
        let err = |source| TraceFileError { path: path.to_path_buf(), source };
        let f = File::create(path).map_err(err)?;
        let mut w = Writer::new(BufWriter::with_capacity(1 << 20, f)).map_err(err)?;
        w.flush().map_err(err)?;
        Ok(TraceOut { w, path: path.to_path_buf(), error: None })
    }

    fn write(&mut self, f: impl FnOnce(&mut Writer<BufWriter<File>>) -> std::io::Result<()>) {
        if self.error.is_none() {
            if let Err(e) = f(&mut self.w) {
                self.error = Some(format!("writing the trace {}: {e}", self.path.display()));
            }
        }
    }

    pub fn run(&mut self, m: &RunMeta) {
        self.write(|w| w.run(m));
    }
    pub fn run_end(&mut self, m: &RunEnd) {
        self.write(|w| w.run_end(m));
        self.flush();
    }
    pub fn flush(&mut self) {
        self.write(|w| w.flush());
    }
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

pub type SharedOut = Arc<Mutex<TraceOut>>;

/// What one boot's tracing needs (`VmConfig::trace`).
#[derive(Clone)]
pub struct TraceConfig {
    pub out: SharedOut,
    /// The first iteration this boot runs.
    pub first_iteration: u64,
    /// Iterations `< limit` are traced.
    pub limit: u64,
    /// Boot number within the run.
    pub boot: u64,
    /// Records per vCPU ring (rounded down to a power of two, at least 16);
    /// `None` = as many as fit in the trace area.
    pub ring: Option<u64>,
}

impl std::fmt::Debug for TraceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceConfig")
            .field("first_iteration", &self.first_iteration)
            .field("limit", &self.limit)
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

/// The guest memory a tracer records from, once its boot set it up.
struct Area {
    mem: GuestMemoryMmap,
    nrings: u64,
    cap: u64,
}

/// One boot's tracing.
pub struct Tracer {
    out: SharedOut,
    area: OnceLock<Area>,
    limit: u64,
    /// Host TSC minus guest TSC.
    tsc_offset: std::sync::atomic::AtomicI64,
    /// Host records waiting for the next drain.
    pending: Mutex<Vec<Record>>,
    /// Serialises consumers of the rings.
    drain_lock: Mutex<()>,
    records: AtomicU64,
    cfg: TraceConfig,
}

fn ctrl(off: u64) -> u64 {
    area::word(off)
}

impl Tracer {
    /// A tracer for one boot; the trace area is laid out when the VM is set
    /// up, recording starts when the vCPUs do.
    pub fn new(cfg: &TraceConfig) -> Arc<Tracer> {
        Arc::new(Tracer {
            out: cfg.out.clone(),
            area: OnceLock::new(),
            limit: cfg.limit,
            tsc_offset: 0.into(),
            pending: Mutex::new(Vec::new()),
            drain_lock: Mutex::new(()),
            records: AtomicU64::new(0),
            cfg: cfg.clone(),
        })
    }

    /// Lays out the trace area for `vcpus` rings.
    fn attach(&self, mem: &GuestMemoryMmap, vcpus: u64) -> Result<(), gmem::MemError> {
        let cfg = &self.cfg;
        let fit = area::capacity(vcpus);
        let cap = match cfg.ring {
            Some(n) => (1u64 << (63 - n.max(16).leading_zeros())).min(fit),
            None => fit,
        };
        let me = |e: gmem::MemError| e;
        gmem::store_u64(mem, ctrl(area::ENABLED), 0).map_err(me)?;
        gmem::store_u64(mem, ctrl(area::NRINGS), vcpus).map_err(me)?;
        gmem::store_u64(mem, ctrl(area::CAPACITY), cap).map_err(me)?;
        gmem::store_u64(mem, ctrl(area::SEQ), 1).map_err(me)?;
        for k in 0..vcpus {
            for off in [area::HEAD, area::TAIL, area::DROPPED, area::BLOCKED] {
                gmem::store_u64(mem, area::ring_header(k) + off, 0).map_err(me)?;
            }
        }
        gmem::store_u64(mem, ctrl(area::MAGIC), area::MAGIC_VALUE).map_err(me)?;
        let _ = self.area.set(Area { mem: mem.clone(), nrings: vcpus, cap });
        Ok(())
    }

    /// Writes the boot's header and turns recording on (if this boot runs
    /// traced iterations). `tsc_offset` = host TSC − guest TSC.
    pub fn begin(&self, tsc_khz: u64, tsc_offset: i64) {
        let Some(ar) = self.area.get() else { return };
        self.tsc_offset.store(tsc_offset, Ordering::Relaxed);
        let meta = BootMeta {
            boot: self.cfg.boot,
            first_iteration: self.cfg.first_iteration,
            tsc_khz,
            vcpus: ar.nrings,
            capacity: ar.cap,
            tsc_offset,
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write(|w| w.boot(&meta));
        drop(out);
        if self.cfg.first_iteration < self.limit {
            let _ = gmem::store_u64(&ar.mem, ctrl(area::ENABLED), 1);
        }
    }

    /// The litmus iteration in progress (the interpreter sets it before it
    /// starts one; a boot starts at `first_iteration`).
    fn iteration(&self, mem: &GuestMemoryMmap) -> u32 {
        let w = gmem::load_u64(mem, abi::layout::LITMUS_STATE + abi::litmus::state::ITERATION).unwrap_or(0);
        w.max(self.cfg.first_iteration) as u32
    }

    pub fn enabled(&self) -> bool {
        self.area.get().is_some_and(|ar| gmem::load_u64(&ar.mem, ctrl(area::ENABLED)).is_ok_and(|v| v != 0))
    }

    /// Records a VMM or device event (no-op while recording is off).
    pub fn record(&self, src: u8, unit: u8, kind: Kind, va: u64, a: u64, b: u64) {
        if !self.enabled() {
            return;
        }
        let Some(ar) = self.area.get() else { return };
        let Ok(seq) = gmem::fetch_add_u64(&ar.mem, ctrl(area::SEQ), 1) else { return };
        let tsc = (crate::vstate::vcpu::host_tsc() as i64).wrapping_sub(self.tsc_offset.load(Ordering::Relaxed)) as u64;
        let iteration = self.iteration(&ar.mem);
        let r = Record { seq, tsc, kind: kind as u16, source: src, unit, iteration, va, a, b };
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.push(r);
        if p.len() >= 1 << 14 {
            let recs = std::mem::take(&mut *p);
            drop(p);
            self.write_records(&recs);
        }
    }

    fn write_records(&self, recs: &[Record]) {
        if recs.is_empty() {
            return;
        }
        self.records.fetch_add(recs.len() as u64, Ordering::Relaxed);
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write(|w| w.records(recs));
    }

    /// Consumes every ring (and the pending host records); returns how many
    /// guest records were consumed.
    pub fn drain(&self) -> u64 {
        let Some(ar) = self.area.get() else { return 0 };
        let _g = self.drain_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut recs = Vec::new();
        let iteration = self.iteration(&ar.mem);
        for k in 0..ar.nrings {
            let hdr = area::ring_header(k);
            let (Ok(head), Ok(tail)) =
                (gmem::load_u64(&ar.mem, hdr + area::HEAD), gmem::load_u64(&ar.mem, hdr + area::TAIL))
            else {
                continue;
            };
            // A guest that corrupted its ring header loses its ring's
            // records, not the VMM: take at most one ring's worth.
            let n = head.wrapping_sub(tail).min(ar.cap);
            let base = area::ring_data(k, ar.cap);
            let mut buf = vec![0u8; RECORD_LEN];
            for i in 0..n {
                let slot = (tail.wrapping_add(i)) & (ar.cap - 1);
                if ar.mem.read_slice(&mut buf, GuestAddress(base + slot * RECORD_LEN as u64)).is_err() {
                    break;
                }
                let mut a = [0u8; RECORD_LEN];
                a.copy_from_slice(&buf);
                recs.push(Record { iteration, ..Record::from_bytes(&a) });
            }
            let _ = gmem::store_u64(&ar.mem, hdr + area::TAIL, head);
        }
        let guest = recs.len() as u64;
        recs.append(&mut std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner())));
        self.write_records(&recs);
        guest
    }

    /// Iteration `it` reported its result: drain, stop recording after the
    /// last traced iteration, and flush the file.
    pub fn iteration_done(&self, it: u64) {
        self.drain();
        if it.saturating_add(1) >= self.limit {
            if let Some(ar) = self.area.get() {
                let _ = gmem::store_u64(&ar.mem, ctrl(area::ENABLED), 0);
            }
        }
        self.out.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }

    /// The boot ended (`end` says how): stop recording, drain, write the
    /// boot's footer, flush.
    pub fn finish(&self, end: &str) {
        let Some(ar) = self.area.get() else { return };
        let _ = gmem::store_u64(&ar.mem, ctrl(area::ENABLED), 0);
        self.drain();
        let word = |k: u64, off: u64| gmem::load_u64(&ar.mem, area::ring_header(k) + off).unwrap_or(0);
        let meta = BootEnd {
            end: end.to_string(),
            dropped: (0..ar.nrings).map(|k| word(k, area::DROPPED)).collect(),
            blocked: (0..ar.nrings).map(|k| word(k, area::BLOCKED)).collect(),
            records: self.records.load(Ordering::Relaxed),
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write(|w| w.boot_end(&meta));
        out.flush();
    }
}

/// The IOMMU's events as device trace records.
pub struct DeviceSink {
    pub tracer: Arc<Tracer>,
}

fn inv_range(d: &abi::iommu::InvDesc) -> Option<(u64, u64, bool)> {
    use abi::iommu::{DevTlbScope, InvDesc};
    match *d {
        InvDesc::PasidPages { addr, am, leaf_only, .. } => {
            Some((addr, addr.saturating_add(4096u64 << am.min(52)), leaf_only))
        }
        InvDesc::PasidAll { .. } | InvDesc::Global => Some((0, u64::MAX, false)),
        InvDesc::DevTlb(DevTlbScope::Pages { addr, am, .. }) => {
            Some((addr, addr.saturating_add(4096u64 << am.min(52)), false))
        }
        InvDesc::DevTlb(_) => Some((0, u64::MAX, false)),
        InvDesc::Wait { .. } => None,
    }
}

impl EventSink for DeviceSink {
    fn record(&self, e: &Event) {
        let t = &self.tracer;
        if !t.enabled() {
            return;
        }
        let unit = current_device_unit();
        let emit = |kind, va, a, b| t.record(source::DEVICE, unit, kind, va, a, b);
        match e {
            Event::Hit { cache: CacheKind::Iotlb, va, pa, stale: false, .. } => emit(Kind::IotlbHit, *va, 0, *pa),
            Event::StaleHit { cache: CacheKind::Iotlb, va, cached_pa, cause, .. } => {
                let now = match cause {
                    StaleCause::Remapped { pte, .. } | StaleCause::PermissionRevoked { pte, .. } => *pte,
                    _ => 0,
                };
                emit(Kind::IotlbStaleHit, *va, now, *cached_pa)
            }
            Event::PwcHit { va, level, table, .. } => emit(Kind::PwcHit, *va, *level as u64, *table),
            Event::Fill { cache: CacheKind::Iotlb, va, pa, pte, .. } => emit(Kind::IotlbFill, *va, *pte, *pa),
            Event::Evict { cache: CacheKind::Iotlb, va, reason, .. } => {
                let r = match reason {
                    EvictReason::Capacity => 0,
                    EvictReason::Random => 1,
                    EvictReason::Invalidation => 2,
                    EvictReason::Refill => 3,
                };
                emit(Kind::IotlbEvict, *va, r, 0)
            }
            Event::Fault { request, .. } => emit(
                Kind::DevFault,
                request.va,
                request.reason as u64,
                (request.op != abi::iommu::AccessOp::Read) as u64,
            ),
            Event::StaleWalk { va, level, table, via_pwc, .. } => {
                emit(Kind::DevStaleWalk, *va, *table, *level as u64 | (*via_pwc as u64) << 8)
            }
            Event::Access { va, pa, op, old, new, stale, .. } => {
                let (code, value) = match op {
                    DmaOp::Load => (dev_op::LOAD, *old),
                    DmaOp::Store => (dev_op::STORE, *new),
                    DmaOp::Xchg => (dev_op::XCHG, *old),
                    DmaOp::FetchAdd => (dev_op::FETCH_ADD, *old),
                    DmaOp::CmpXchg => (dev_op::CMPXCHG, *old),
                    DmaOp::Prefetch => (dev_op::PREFETCH, 0),
                };
                let b = (pa & dev_access::GPA_MASK)
                    | code << dev_access::OP_SHIFT
                    | if *stale { dev_access::STALE } else { 0 };
                emit(Kind::DevAccess, *va, value, b)
            }
            Event::InvalidationReceived { desc, .. } => {
                if let Some((s, end, leaf)) = inv_range(desc) {
                    t.record(source::DEVICE, UNIT_IOMMU, Kind::InvReceived, s, end, leaf as u64)
                }
            }
            Event::InvalidationCompleted { desc, iotlb, .. } => {
                if let Some((s, end, _)) = inv_range(desc) {
                    t.record(source::DEVICE, UNIT_IOMMU, Kind::InvCompleted, s, end, *iotlb as u64)
                }
            }
            Event::WaitCompleted { data, .. } => {
                t.record(source::DEVICE, UNIT_IOMMU, Kind::WaitCompleted, 0, *data as u64, 0)
            }
            _ => {}
        }
    }
}

impl TraceSink for Tracer {
    fn emit(&self, src: u8, unit: u8, kind: Kind, va: u64, a: u64, b: u64) {
        self.record(src, unit, kind, va, a, b);
    }
}

impl IterationObserver for Tracer {
    fn iteration_done(&self, iteration: u64) {
        Tracer::iteration_done(self, iteration);
    }
}

impl Service for Tracer {
    fn name(&self) -> &'static str {
        "trace"
    }

    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError> {
        self.attach(vm.mem, vm.vcpus).map_err(|e| SetupError::service("trace area", e))?;
        vm.add_hypercalls(self)
    }

    fn started(&self, clock: GuestClock) {
        self.begin(clock.tsc_khz, clock.tsc_offset);
    }

    fn finished(&self, end: &EndReason) {
        self.finish(&match end {
            EndReason::Stopped { by } => by.to_string(),
            other => other.to_string().replacen("guest error on ", "guest-error: ", 1),
        });
    }
}

impl HypercallHandler for Tracer {
    fn name(&self) -> &'static str {
        "trace"
    }
    fn ops(&self) -> &'static [Op] {
        &[Op::TraceDrain]
    }
    fn handle(&self, ctx: &mut VcpuCtx<'_>, call: &Call<'_>) -> Result<Reply, GuestFault> {
        let _ = call;
        let n = self.drain();
        self.record(source::VMM, ctx.cpu as u8, Kind::TraceDrain, 0, n, 0);
        Ok(Reply::of::<calls::TraceDrain>(TraceDrainReply { consumed: n }))
    }
}
