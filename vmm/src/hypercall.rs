//! The VMM side of the hypercall path: read the exiting vCPU's mailbox, act,
//! write the reply. Guest input is validated; a malformed request is a guest
//! error reported with vCPU and RIP, never a VMM panic.

use abi::hypercall::{self as hc, op, status, DATA_LEN};
use abi::layout;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

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

/// Per-vCPU hypercall state (what `LAST_REPORT` answers).
pub struct Hypercalls {
    cpu: u64,
    mailbox: u64,
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
    Flow::GuestError { cause: format!("bad hypercall: mailbox not accessible: {e}"), rip: None }
}

impl Hypercalls {
    pub fn new(cpu: u64) -> Self {
        Self { cpu, mailbox: layout::mailbox(cpu), last_exception: [0; 4], last_assert: (0, Vec::new()) }
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
            return Err(Flow::GuestError {
                cause: format!("bad hypercall: op {op} data length {len} exceeds the mailbox ({DATA_LEN} bytes)"),
                rip: None,
            });
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
                    return Err(Flow::GuestError {
                        cause: format!("guest assertion failed at {file}:{}: {msg}", a[0]),
                        rip: None,
                    });
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
                if a[0] == 1 {
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
            op::BENCH_RESULT => {
                shared.bench.lock().unwrap().push(BenchFigure { metric: a[0], median_ps: a[1], samples: a[2] });
                self.reply(mem, status::OK, [0; 4], &[])?;
            }
            other => {
                return Err(Flow::GuestError { cause: format!("bad hypercall: unknown op {other:#x}"), rip: None })
            }
        }
        Ok(Flow::Resume)
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
