//! The VMM side of the hypercall path: read the exiting vCPU's mailbox, act,
//! write the reply. Guest input is validated; a malformed request is a guest
//! error reported with vCPU and RIP, never a VMM panic.

use abi::hypercall::{self as hc, flush, op, status, tlb_model, DATA_LEN};
use abi::layout;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::shadow::{self, ShadowMmu, TlbModel};
use crate::vstate::vm::VmShared;

/// A figure the guest measured (`op::BENCH_RESULT`).
#[derive(Clone, Copy, Debug)]
pub struct BenchFigure {
    pub metric: u64,
    pub median_ps: u64,
    pub samples: u64,
}

/// What the vCPU loop does after a hypercall.
pub enum Flow {
    Resume,
    /// The guest misbehaved: end the VM with this cause (RIP is added by the caller).
    GuestError {
        cause: String,
        rip: Option<u64>,
    },
}

/// A guest error at the hypercall's own RIP.
fn guest_error(cause: impl Into<String>) -> Flow {
    Flow::GuestError { cause: cause.into(), rip: None }
}

/// A native-TLB probe's count (`op::PROBE_RESULT`).
#[derive(Clone, Copy, Debug)]
pub struct ProbeResult {
    pub probe: u64,
    pub stale: u64,
    pub tries: u64,
}

/// A direct store to the page-table region (never applied).
#[derive(Clone, Copy, Debug)]
pub struct StrayStore {
    pub gpa: u64,
    pub value: u64,
    pub rip: u64,
}

/// Per-vCPU hypercall state: its modelled TLB and what `LAST_REPORT` answers.
pub struct Hypercalls {
    cpu: u64,
    mailbox: u64,
    pub shadow: ShadowMmu,
    /// The guest announced the next stray page-table store as deliberate.
    pub stray_expected: bool,
    pub last_stray: Option<StrayStore>,
    /// vector, error code, CR2, RIP of the last EXCEPTION.
    last_exception: [u64; 4],
    /// line and "file\0message" of the last ASSERT_FAIL.
    last_assert: (u64, Vec<u8>),
}

struct Request {
    op: u64,
    args: [u64; 8],
    data: Vec<u8>,
}

fn mem_err(e: vm_memory::GuestMemoryError) -> Flow {
    guest_error(format!("bad hypercall: mailbox not accessible: {e}"))
}

impl Hypercalls {
    pub fn new(cpu: u64, tlb: TlbModel, seed: u64, trace: Option<std::sync::Arc<crate::trace::Tracer>>) -> Self {
        Self {
            cpu,
            mailbox: layout::mailbox(cpu),
            shadow: ShadowMmu::with_trace(cpu, tlb, seed, trace),
            stray_expected: false,
            last_stray: None,
            last_exception: [0; 4],
            last_assert: (0, Vec::new()),
        }
    }

    fn read_request(&self, mem: &GuestMemoryMmap) -> Result<Request, Flow> {
        let at = |off: u64| GuestAddress(self.mailbox + off);
        let op: u64 = mem.read_obj(at(hc::OFF_OP)).map_err(mem_err)?;
        let mut args = [0u64; 8];
        for (i, a) in args.iter_mut().enumerate() {
            *a = mem.read_obj(at(hc::OFF_ARGS + 8 * i as u64)).map_err(mem_err)?;
        }
        let len: u64 = mem.read_obj(at(hc::OFF_LEN)).map_err(mem_err)?;
        if len > DATA_LEN as u64 {
            return Err(guest_error(format!(
                "bad hypercall: op {op} data length {len} exceeds the mailbox ({DATA_LEN} bytes)"
            )));
        }
        let mut data = vec![0u8; len as usize];
        mem.read_slice(&mut data, at(hc::OFF_DATA)).map_err(mem_err)?;
        Ok(Request { op, args, data })
    }

    fn reply(&self, mem: &GuestMemoryMmap, st: u64, ret: [u64; 4], data: &[u8]) -> Result<(), Flow> {
        let at = |off: u64| GuestAddress(self.mailbox + off);
        mem.write_obj(st, at(hc::OFF_STATUS)).map_err(mem_err)?;
        for (i, r) in ret.iter().enumerate() {
            mem.write_obj(*r, at(hc::OFF_RET + 8 * i as u64)).map_err(mem_err)?;
        }
        let n = data.len().min(DATA_LEN);
        mem.write_obj(n as u64, at(hc::OFF_LEN)).map_err(mem_err)?;
        mem.write_slice(&data[..n], at(hc::OFF_DATA)).map_err(mem_err)?;
        Ok(())
    }

    /// Serves the hypercall the vCPU just made.
    pub fn handle(&mut self, mem: &GuestMemoryMmap, shared: &VmShared) -> Flow {
        match self.dispatch(mem, shared) {
            Ok(flow) | Err(flow) => flow,
        }
    }

    fn dispatch(&mut self, mem: &GuestMemoryMmap, shared: &VmShared) -> Result<Flow, Flow> {
        let req = self.read_request(mem)?;
        let a = req.args;
        match req.op {
            op::ECHO => {
                let mut back = req.data.clone();
                back.reverse();
                self.reply(mem, status::OK, [!a[0], !a[1], !a[2], !a[3]], &back)?;
            }
            op::LITMUS_RESULT => {
                let Some(session) = &shared.litmus else {
                    return Err(guest_error("bad hypercall: LITMUS_RESULT outside a litmus run"));
                };
                let n = a[1] as usize;
                if n * 8 > req.data.len() {
                    return Err(guest_error(format!(
                        "bad hypercall: LITMUS_RESULT with {n} values but {} bytes of data",
                        req.data.len()
                    )));
                }
                let values: Vec<u64> =
                    req.data[..n * 8].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
                if let Some(x) = &session.explore {
                    x.values(values.clone());
                }
                session.report(crate::litmus_run::IterReport {
                    iteration: a[0],
                    values,
                    leaked_pages: a[2] as i64,
                    leaked_tables: a[3] as i64,
                    guest_ns: a[4],
                    received: None,
                });
                if let Some(t) = &shared.trace {
                    t.iteration_done(a[0]);
                }
                self.reply(mem, status::OK, [0; 4], &[])?;
            }
            op::EXPLORE_NEXT => {
                let Some(x) = shared.litmus.as_ref().and_then(|l| l.explore.clone()) else {
                    return Err(guest_error("bad hypercall: EXPLORE_NEXT outside vmm explore"));
                };
                match x.next(mem) {
                    Ok(more) => self.reply(mem, status::OK, [more as u64, 0, 0, 0], &[])?,
                    // The search cannot go on: end the boot; the runner reports why.
                    Err(_) => self.reply(mem, status::OK, [0; 4], &[])?,
                }
            }
            op::TEST_BEGIN => {
                shared.results.lock().unwrap().begin(&text(&req.data));
                self.reply(mem, status::OK, [0; 4], &[])?;
            }
            op::TEST_END => {
                let (name, reason) = split_nul(&req.data);
                shared.results.lock().unwrap().end(a[0], &name, &reason);
                self.reply(mem, status::OK, [0; 4], &[])?;
            }
            op::ASSERT_FAIL => {
                let (file, msg) = split_nul(&req.data);
                self.last_assert = (a[0], req.data.clone());
                let (fatal, expected) = (a[1] & 1 != 0, a[1] & 2 != 0);
                if fatal {
                    return Err(guest_error(format!("guest assertion failed at {file}:{}: {msg}", a[0])));
                }
                if !expected {
                    shared.results.lock().unwrap().note_failure(format!("{file}:{}: {msg}", a[0]));
                }
                self.reply(mem, status::OK, [0; 4], &[])?;
            }
            op::EXCEPTION => {
                let (vector, error, rip, cr2, rsp, expected) = (a[0], a[1], a[2], a[3], a[4], a[6]);
                self.last_exception = [vector, error, cr2, rip];
                if expected == 0 {
                    let name = hc::vector_name(vector);
                    let mut cause = format!("unhandled exception {name} (vector {vector}), error code {error:#x}");
                    if vector == 14 {
                        cause += &format!(", CR2 {cr2:#x}");
                    }
                    cause += &format!(", RSP {rsp:#x}");
                    return Err(Flow::GuestError { cause, rip: Some(rip) });
                }
                self.reply(mem, status::OK, [0; 4], &[])?;
            }
            op::LAST_REPORT => {
                if a[0] == 2 {
                    let r = self.last_stray.map(|s| [s.gpa, s.value, s.rip, 1]).unwrap_or([0; 4]);
                    self.reply(mem, status::OK, r, &[])?;
                } else if a[0] == 1 {
                    let data = self.last_assert.1.clone();
                    self.reply(mem, status::OK, [self.last_assert.0, 0, 0, 0], &data)?;
                } else {
                    self.reply(mem, status::OK, self.last_exception, &[])?;
                }
            }
            op::LOG => {
                shared.log(self.cpu, &text(&req.data));
                self.reply(mem, status::OK, [0; 4], &[])?;
            }
            op::PT_OP => {
                let (old, changed) = shadow::pt_op(mem, a[0], a[1], a[2], a[3])
                    .map_err(|e| guest_error(format!("bad hypercall: {}", e.0)))?;
                self.reply(mem, status::OK, [old, changed as u64, 0, 0], &[])?;
            }
            op::FILL => {
                let (result, entry) = self
                    .shadow
                    .fill(mem, &shared.shadow_pool, a[0], a[1])
                    .map_err(|e| guest_error(format!("TLB fill at {:#x}: {e}", a[0])))?;
                self.reply(mem, status::OK, [result, entry, 0, 0], &[])?;
            }
            op::FLUSH => {
                match a[0] {
                    flush::PAGE => self.shadow.flush_page(mem, a[1]),
                    flush::RANGE => self.shadow.flush_range(mem, &shared.shadow_pool, a[1], a[2]),
                    flush::ALL => self.shadow.flush_all(mem, &shared.shadow_pool),
                    k => return Err(guest_error(format!("bad hypercall: unknown flush kind {k}"))),
                }
                self.reply(mem, status::OK, [0; 4], &[])?;
            }
            op::SWITCH_MM => {
                let cr3 = self
                    .shadow
                    .switch_mm(mem, &shared.shadow_pool, a[0])
                    .map_err(|e| guest_error(format!("bad hypercall: {e}")))?;
                self.reply(mem, status::OK, [cr3, 0, 0, 0], &[])?;
            }
            op::TLB_CONFIG => {
                if a[0] == 1 {
                    self.shadow
                        .set_evict_ppm(a[1])
                        .map_err(|e| guest_error(format!("bad hypercall: TLB_CONFIG: {e}")))?;
                }
                let model = match self.shadow.model() {
                    TlbModel::Lazy => tlb_model::LAZY,
                    TlbModel::Evict(_) => tlb_model::EVICT,
                    TlbModel::Native => tlb_model::NATIVE,
                };
                let r = [model, self.shadow.evict_ppm(), self.shadow.fills, self.shadow.evictions];
                self.reply(mem, status::OK, r, &[])?;
            }
            op::PT_TABLE => {
                if !layout::in_pt_region(a[1]) || !a[1].is_multiple_of(layout::PAGE_SIZE) {
                    return Err(guest_error(format!(
                        "bad hypercall: PT_TABLE {:#x} is not a page of the page-table region",
                        a[1]
                    )));
                }
                let mut io = shared.iommu.lock().unwrap();
                if a[0] == 1 {
                    io.table_allocated(a[1]);
                } else {
                    io.table_freed(a[1]);
                }
                drop(io);
                let mut live = shared.live_tables.lock().unwrap();
                if a[0] == 1 {
                    // A new table starts empty; the guest cannot write the region itself.
                    for i in 0..512 {
                        let _ = iommu::mem::store_u64(mem, a[1] + 8 * i, 0);
                    }
                    live.insert(a[1]);
                } else {
                    live.remove(&a[1]);
                }
                drop(live);
                self.reply(mem, status::OK, [0; 4], &[])?;
            }
            op::EXPECT_STRAY_STORE => {
                self.stray_expected = true;
                self.last_stray = None;
                self.reply(mem, status::OK, [0; 4], &[])?;
            }
            op::PROBE_RESULT => {
                shared.probes.lock().unwrap().push(ProbeResult { probe: a[0], stale: a[1], tries: a[2] });
                self.reply(mem, status::OK, [0; 4], &[])?;
            }
            op::DMA_SUBMIT => {
                if !shared.dma.submit(a[0]) {
                    return Err(guest_error("DMA engine is not running"));
                }
                self.reply(mem, status::OK, [0; 4], &[])?;
            }
            op::IOMMU_STATS => {
                let io = shared.iommu.lock().unwrap();
                let st = io.stats();
                let r = [io.iotlb_len() as u64, io.pwc_len() as u64, st.stale_hits, st.stale_walks];
                drop(io);
                self.reply(mem, status::OK, r, &[])?;
            }
            op::PAGE_OP => {
                let r = page_op(mem, a[0], a[1], a[2]).map_err(|e| guest_error(format!("bad hypercall: {e}")))?;
                self.reply(mem, status::OK, [r as u64, 0, 0, 0], &[])?;
            }
            op::TRACE_DRAIN => {
                let n = match &shared.trace {
                    Some(t) => {
                        let n = t.drain();
                        t.emit(abi::trace::source::VMM, self.cpu as u8, abi::trace::Kind::TraceDrain, 0, n, 0);
                        n
                    }
                    None => 0,
                };
                self.reply(mem, status::OK, [n, 0, 0, 0], &[])?;
            }
            op::BENCH_RESULT => {
                shared.bench.lock().unwrap().push(BenchFigure { metric: a[0], median_ps: a[1], samples: a[2] });
                self.reply(mem, status::OK, [0; 4], &[])?;
            }
            other => return Err(guest_error(format!("bad hypercall: unknown op {other:#x}"))),
        }
        Ok(Flow::Resume)
    }
}

/// `op::PAGE_OP`: zero, copy or compare whole data pages on host memory.
fn page_op(mem: &GuestMemoryMmap, kind: u64, a: u64, b: u64) -> Result<bool, String> {
    use vm_memory::GuestMemoryBackend;
    const PAGE: usize = layout::PAGE_SIZE as usize;
    let end = mem.last_addr().0 + 1;
    let check = |gpa: u64| {
        if gpa.is_multiple_of(layout::PAGE_SIZE) && gpa >= layout::FREE_START && gpa + layout::PAGE_SIZE <= end {
            Ok(GuestAddress(gpa))
        } else {
            Err(format!("PAGE_OP on GPA {gpa:#x}: not a 4 KiB-aligned data page ({:#x}..{end:#x})", layout::FREE_START))
        }
    };
    let mut buf = [0u8; PAGE];
    match kind {
        hc::pageop::ZERO => {
            mem.write_slice(&buf, check(a)?).map_err(|e| e.to_string())?;
            Ok(true)
        }
        hc::pageop::COPY => {
            mem.read_slice(&mut buf, check(b)?).map_err(|e| e.to_string())?;
            mem.write_slice(&buf, check(a)?).map_err(|e| e.to_string())?;
            Ok(true)
        }
        hc::pageop::COMPARE => {
            let mut other = [0u8; PAGE];
            mem.read_slice(&mut buf, check(a)?).map_err(|e| e.to_string())?;
            mem.read_slice(&mut other, check(b)?).map_err(|e| e.to_string())?;
            Ok(buf == other)
        }
        k => Err(format!("unknown PAGE_OP kind {k}")),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn split_nul(b: &[u8]) -> (String, String) {
    match b.iter().position(|&c| c == 0) {
        Some(i) => (text(&b[..i]), text(&b[i + 1..])),
        None => (text(b), String::new()),
    }
}
