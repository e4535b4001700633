//! Device threads: a thread's instructions compiled to a DMA-engine
//! program in its slot, and its registers read back after the run.

use super::{DEV_AREA, DEV_MAX_OPS, DEV_STRIDE, LOC_VA, MAX_DEVICES, PARTICIPANTS, TEST_PASID};
use crate::report;
use abi::dma::{self as dmaabi, op as dop, OpRecord, ProgramHeader};
use abi::layout;
use abi::litmus::{state, Blob, Op, ThreadDesc, WaitCmp, MAX_REGS, NO_LOC, NO_REG, VALUE_TIMEOUT};
use core::sync::atomic::{AtomicU64, Ordering};

/// Which op of a device program last wrote each register (`u64::MAX` = none).
pub(super) static DEV_REG_OP: [[AtomicU64; MAX_REGS as usize]; MAX_DEVICES] =
    [const { [const { AtomicU64::new(u64::MAX) }; MAX_REGS as usize] }; MAX_DEVICES];

pub(super) struct DevBuilder {
    gpa: u64,
    d: usize,
    nops: u64,
    barriers: u64,
    overflow: bool,
}

impl DevBuilder {
    fn push(&mut self, pc: u32, kind: u64, va: u64, value: u64, dst: u8) {
        if self.nops >= DEV_MAX_OPS {
            self.overflow = true;
            return;
        }
        let rec = OpRecord { op: kind | (pc as u64) << dop::TAG_SHIFT, va, value, result: VALUE_TIMEOUT };
        let at = self.gpa + dmaabi::HEADER_SIZE + self.nops * dmaabi::OP_SIZE;
        // SAFETY: our device-program slot, identity-mapped; the engine has
        // not been handed this program yet.
        unsafe { core::ptr::write_volatile(at as *mut OpRecord, rec) };
        if dst != NO_REG {
            DEV_REG_OP[self.d][dst as usize].store(self.nops, Ordering::Relaxed);
        }
        self.nops += 1;
    }

    /// The operand of a data op: an immediate, or the result of the op that
    /// last wrote the register (`VALUE_FROM`); a register never written is 0.
    fn operand(&self, src: u8, imm: u64) -> (u64, u64) {
        if src == NO_REG {
            return (0, imm);
        }
        match DEV_REG_OP[self.d][src as usize].load(Ordering::Relaxed) {
            u64::MAX => (0, 0),
            k => (dop::VALUE_FROM, k),
        }
    }

    fn block(&mut self, b: &Blob<'_>, td: &ThreadDesc, start: u32, end: u32) {
        let mut pc = start;
        while pc < end {
            let Some(ins) = b.thread_instr(td, pc) else { return };
            let len = b.item_len(td, pc).unwrap_or(1);
            let va = if ins.loc != NO_LOC { LOC_VA[ins.loc as usize].load(Ordering::Relaxed) } else { 0 };
            let kword = layout::LITMUS_VARS + 8 * ins.loc as u64;
            let (flag, value) = self.operand(ins.src, ins.imm);
            match ins.op() {
                Op::DmaLoad => self.push(pc, dop::LOAD, va, 0, ins.dst),
                Op::DmaStore => self.push(pc, dop::STORE | flag, va, value, NO_REG),
                Op::DmaXchg => self.push(pc, dop::XCHG | flag, va, value, ins.dst),
                Op::DmaFetchAdd => self.push(pc, dop::FETCH_ADD | flag, va, value, ins.dst),
                Op::Prefetch => self.push(pc, dop::PREFETCH, va, 0, NO_REG),
                Op::Loop => {
                    for _ in 0..ins.imm {
                        self.block(b, td, pc + 1, pc + 1 + ins.len);
                        if self.overflow {
                            return;
                        }
                    }
                }
                Op::Wait => match WaitCmp::from_u8(ins.arg) {
                    Some(WaitCmp::Eq) => self.push(pc, dop::WAIT_EQ, kword, ins.imm, NO_REG),
                    _ => self.push(pc, dop::WAIT_NE, kword, 0, NO_REG),
                },
                Op::Signal => self.push(pc, dop::SIGNAL | flag, kword, value, NO_REG),
                Op::Delay => self.push(pc, dop::DELAY_US, 0, ins.imm, NO_REG),
                Op::Barrier => {
                    self.barriers += 1;
                    let w = layout::LITMUS_STATE + state::BARRIER;
                    self.push(pc, dop::KADD, w, 1, NO_REG);
                    self.push(pc, dop::WAIT_GE, w, self.barriers * PARTICIPANTS.load(Ordering::Relaxed), NO_REG);
                }
                _ => {}
            }
            pc += len;
        }
    }
}

/// Compiles device thread `t` into a DMA-engine program at `gpa` (ops
/// carry their source pc in the tag bits, results preset to `timeout`).
pub(super) fn build_device_program(b: &Blob<'_>, t: usize, gpa: u64) {
    let d = t - b.header().n_vcpu_threads as usize;
    for r in &DEV_REG_OP[d] {
        r.store(u64::MAX, Ordering::Relaxed);
    }
    let Some(td) = b.thread(t as u16) else { return };
    let mut builder = DevBuilder { gpa, d, nops: 0, barriers: 0, overflow: false };
    builder.block(b, &td, 0, td.n_instrs);
    if builder.overflow {
        report::fatal(
            file!(),
            line!(),
            format_args!(
                "device thread {} unrolls to more than {DEV_MAX_OPS} ops",
                b.thread_name(t as u16).unwrap_or("?")
            ),
        );
    }
    let hdr =
        ProgramHeader { pasid: TEST_PASID as u64, nops: builder.nops, status: dmaabi::status::PENDING, reserved: 0 };
    // SAFETY: as in `DevBuilder::push`.
    unsafe { core::ptr::write_volatile(gpa as *mut ProgramHeader, hdr) };
}

/// A device thread's register after its program ran.
pub(super) fn device_register(b: &Blob<'_>, t: usize, r: u8) -> u64 {
    let d = t - b.header().n_vcpu_threads as usize;
    match DEV_REG_OP[d].get(r as usize).map(|k| k.load(Ordering::Relaxed)) {
        Some(u64::MAX) | None => 0,
        Some(k) => {
            let at = DEV_AREA + d as u64 * DEV_STRIDE + dmaabi::HEADER_SIZE + k * dmaabi::OP_SIZE + 24;
            // SAFETY: the result word of an op record in our program slot.
            unsafe { core::ptr::read_volatile(at as *const u64) }
        }
    }
}
