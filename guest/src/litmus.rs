//! The litmus interpreter: runs the bytecode of `abi::litmus` that the VMM
//! wrote at `layout::LITMUS_BLOB`.
//!
//! Per iteration (as system-litmus-harness does it, seeded and re-runnable):
//! a fresh test mm; placement chosen from the seed and the iteration number
//! (the virtual window, each location's page slot, how many free physical
//! pages are held back so data lands on different frames, and which vCPU
//! runs which thread); the page locations set up through the mm model;
//! device threads compiled to DMA-engine programs and started; each vCPU
//! thread posted to its vCPU; then the observed values are read, the mm torn
//! down, the page and table counts compared with their starting values, and
//! one `LITMUS_RESULT` hypercall reports the iteration.
//!
//! Timeouts are the VMM's business: threads here wait forever (yielding the
//! host CPU), and the positions each thread publishes in the state page
//! (`abi::litmus::state`) tell the VMM where they were stuck when it ends
//! the iteration and reboots the guest at the next one.

use core::sync::atomic::{fence, AtomicU64, Ordering};

use abi::dma::{self as dmaabi, op as dop, OpRecord, ProgramHeader};
use abi::hypercall::calls::{DmaSubmit, DmaSubmitRequest, ExploreNext, LitmusIteration, LitmusResult};
use abi::hypercall::Empty;
use abi::layout::{self, PAGE_SIZE};
use abi::limits;
use abi::litmus::{
    self as lt, state, Advice, Blob, Hook, LocKind, ObsKind, Op, Perm, ThreadDesc, ThreadKind, WaitCmp, LOC_PINNED,
    LOC_SHARED, MAX_REGS, MAX_THREADS, NO_LOC, NO_REG, VALUE_FAULT, VALUE_TIMEOUT,
};
use abi::rng::SplitMix64;

use crate::mm::hooks;
use crate::mm::mm_types::TEST_MM;
use crate::mm::page_alloc;
use crate::mm::pgtable;
use crate::mm::policy;
use crate::mm::tlb;
use crate::sync::SpinLock;
use crate::trace::{self, Kind};
use crate::trap::{probe_cmpxchg_u64, probe_read_u64, probe_write_u64, probe_xadd_u64, probe_xchg_u64, Probe};
use crate::wait::{wait_until, wake, wake_then_wait_until};
use crate::{arch, cpl3, explore, hypercall, report, smp, time};

/// The test's limits (`abi::limits`): `Blob::parse` refuses a blob beyond
/// them, so the tables below are never indexed past their ends.
const MAX_LOCS: usize = limits::MAX_LOCATIONS;
/// PASID the test mm is bound to when the test has device threads.
const TEST_PASID: u32 = 1;
/// Device programs live after the state page: one slot per device.
const DEV_AREA: u64 = layout::LITMUS_STATE + 0x1_0000;
const DEV_STRIDE: u64 = limits::DEVICE_PROGRAM_SLOT;
const MAX_DEVICES: usize = limits::MAX_DEVICE_THREADS;
const DEV_MAX_OPS: u64 = limits::MAX_DEVICE_OPS;
const _: () = assert!(DEV_AREA + DEV_STRIDE * MAX_DEVICES as u64 <= layout::LITMUS_STATE + 0x20_0000);
/// Physical pages held back per iteration at most (physical placement).
const MAX_HELD: usize = 16;

/// The checked blob, published by CPU 0 before any thread runs.
static BLOB: SpinLock<Option<Blob<'static>>> = SpinLock::new(None);
/// Virtual address of each page/unmapped location in this iteration.
static LOC_VA: [AtomicU64; MAX_LOCS] = [const { AtomicU64::new(0) }; MAX_LOCS];
/// The file of each shared page location (id + 1; 0 = none), for `truncate`.
static LOC_FILE: [AtomicU64; MAX_LOCS] = [const { AtomicU64::new(0) }; MAX_LOCS];
/// Registers of every thread.
static REGS: [[AtomicU64; MAX_REGS as usize]; MAX_THREADS] =
    [const { [const { AtomicU64::new(0) }; MAX_REGS as usize] }; MAX_THREADS];
/// The thread → vCPU shuffle's scratch array (CPU 0 only).
static SCRATCH_ORDER: SpinLock<[u64; abi::layout::MAX_VCPUS as usize]> =
    SpinLock::new([0; abi::layout::MAX_VCPUS as usize]);
/// Total participants of `barrier` (vCPU threads + devices).
static PARTICIPANTS: AtomicU64 = AtomicU64::new(0);

fn state_word(off: u64) -> &'static AtomicU64 {
    // SAFETY: the state page is identity-mapped guest RAM reserved for this
    // purpose; AtomicU64 has the alignment of the 8-byte-aligned offsets.
    unsafe { &*((layout::LITMUS_STATE + off) as *const AtomicU64) }
}

/// The kernel word of a `var` location (or an undeclared flag).
fn var_word(loc: u16) -> &'static AtomicU64 {
    // SAFETY: as `state_word`: the vars page is reserved, loc < MAX_LOCS < 512.
    unsafe { &*((layout::LITMUS_VARS + 8 * loc as u64) as *const AtomicU64) }
}

fn position(t: usize) -> &'static AtomicU64 {
    state_word(state::POSITIONS + 8 * t as u64)
}

fn blob() -> Blob<'static> {
    BLOB.lock().expect("litmus blob published before threads run")
}

/// `GuestMode::Litmus`: run iterations `first` … `iterations - 1`;
/// `GuestMode::Explore` (`explore`): run the VMM's schedules, each at the
/// placement of iteration `first`, until it has no more.
pub fn run(first: u64, explore: bool) -> u32 {
    // SAFETY: the VMM wrote the blob into this reserved, identity-mapped
    // region before boot; nothing writes it afterwards.
    let bytes =
        unsafe { core::slice::from_raw_parts(layout::LITMUS_BLOB as *const u8, layout::LITMUS_BLOB_MAX as usize) };
    let b = match Blob::parse(bytes) {
        Ok(b) => b,
        Err(e) => report::fatal(file!(), line!(), format_args!("litmus blob rejected: {e:?}")),
    };
    // `Blob::parse` enforced `abi::limits` (locations, devices, device ops,
    // observed values, pinned VAs); the host checker refuses the same.
    let h = *b.header();
    if h.n_vcpu_threads as u64 > smp::num_cpus() {
        report::fatal(
            file!(),
            line!(),
            format_args!("the test has {} vCPU threads but the VM {} vCPUs", h.n_vcpu_threads, smp::num_cpus()),
        );
    }
    *BLOB.lock() = Some(b);
    policy::set(b.policy());
    // The walk-cache model is the VMM's (each vCPU's shadow MMU).
    let walk_cache = b.policy().byte(abi::policy::Key::WalkCache) as u64;
    smp::run_on_all(tlb::set_walk_cache, walk_cache, 20_000);
    if h.n_device_threads > 0 {
        crate::iommu::init();
    }
    PARTICIPANTS.store(h.n_threads as u64, Ordering::Relaxed);
    // Under the modelled TLBs the iterations run at CPL3 (natively on
    // hosts that emulate kernel code), the other vCPUs' threads on CPL3
    // workers; under `native` the host's own TLB is the one under test and
    // everything stays at CPL0 (where `invlpg` and CR3 reloads are real).
    // `vmm explore` runs at CPL0 too: its turn protocol (`explore`) parks
    // with a 32-bit write to `EXPLORE_PARK_PORT`, which CPL3 may not make
    // (the TSS I/O bitmap does not open that port, and `kvm_pvm` refuses
    // 32-bit port I/O from CPL3), and its scheduling points were built and
    // checked at CPL0. Exploring costs schedules, not iterations per second.
    if explore {
        schedules(first);
    } else if tlb::modelled() {
        smp::start_cpl3_workers();
        cpl3::run_at_cpl3(iterations, first);
    } else {
        iterations(first);
    }
    state_word(state::PHASE).store(state::PHASE_IDLE, Ordering::Release);
    abi::exit::SUCCESS
}

/// Iterations `first..` of the blob (CPU 0).
extern "C" fn iterations(first: u64) -> u64 {
    let b = blob();
    for it in first..b.header().iterations as u64 {
        state_word(state::ITERATION).store(it, Ordering::Release);
        run_iteration(&b, it);
        state_word(state::DONE).fetch_add(1, Ordering::AcqRel);
    }
    0
}

/// `vmm explore`: the VMM's schedules, each at the placement of iteration
/// `first`, until it has no more (CPU 0, CPL0).
fn schedules(first: u64) {
    let b = blob();
    while hypercall::call::<ExploreNext>(Empty).more.get() {
        state_word(state::ITERATION).store(first, Ordering::Release);
        run_iteration(&b, first);
        state_word(state::DONE).fetch_add(1, Ordering::AcqRel);
    }
}

/// Picks every location's virtual address: pinned ones as given, the rest
/// in distinct random page slots of one random 2 MiB window (one PTE table,
/// so the locations share page-table locks as neighbouring data would).
fn place(b: &Blob<'_>, rng: &mut SplitMix64) {
    let n = b.header().n_locs;
    let window = loop {
        let w = layout::USER_BASE + (rng.below_mod(1 << 17) << 21);
        let clash = (0..n).filter_map(|i| b.location(i)).any(|l| l.flags & LOC_PINNED != 0 && l.va >> 21 == w >> 21);
        if !clash {
            break w;
        }
    };
    let mut used = [false; 512];
    for i in 0..n {
        let Some(l) = b.location(i) else { continue };
        let va = if l.kind == LocKind::Var as u8 {
            0
        } else if l.flags & LOC_PINNED != 0 {
            l.va
        } else {
            let mut slot = rng.below_mod(512) as usize;
            while used[slot] {
                slot = (slot + 1) % 512;
            }
            used[slot] = true;
            window + slot as u64 * PAGE_SIZE
        };
        LOC_VA[i as usize].store(va, Ordering::Relaxed);
    }
}

fn run_iteration(b: &Blob<'static>, it: u64) {
    let h = *b.header();
    let t0 = arch::rdtsc();
    state_word(state::PHASE).store(state::PHASE_SETUP, Ordering::Release);
    trace::emit(Kind::IterBegin, 0, h.test_hash, it);
    // The per-iteration placement generator (modulo draws: `below_mod`).
    let mut rng = SplitMix64::new(h.seed ^ it.wrapping_mul(0xd6e8_feb8_6659_fd93));
    // Swap slots count as data: a swapped-out page is still a page.
    let data_in_use = || page_alloc::data_pages_in_use() + crate::mm::swap::slots_in_use();
    let (data0, tables0) = (data_in_use(), page_alloc::table_pages_in_use());

    // Physical placement: hold back a random number of free pages.
    let mut held = [0u64; MAX_HELD];
    let want = rng.below_mod(MAX_HELD as u64 + 1) as usize;
    let nheld = page_alloc::hold_pages(&mut held[..want]);
    // Building the fresh mm: no thread, TLB or device walks it yet, so its
    // page-table updates go to the VMM in one batch (lazy MMU mode).
    pgtable::lazy_mmu_enter();
    TEST_MM.init();
    place(b, &mut rng);
    for i in 0..h.n_locs {
        let Some(l) = b.location(i) else { continue };
        match LocKind::from_u8(l.kind) {
            Some(LocKind::Var) => var_word(i).store(l.init, Ordering::Relaxed),
            Some(LocKind::Page) => {
                let va = LOC_VA[i as usize].load(Ordering::Relaxed);
                let perm = Perm::from_u8(l.perm).unwrap_or(Perm::Rw);
                match TEST_MM.setup_page(va, perm, l.flags & LOC_SHARED != 0, l.init) {
                    Ok(file) => LOC_FILE[i as usize].store(file.map_or(0, |f| f as u64 + 1), Ordering::Relaxed),
                    Err(_) => report::fatal(
                        file!(),
                        line!(),
                        format_args!("cannot set up location {} at {va:#x}", b.location_name(i).unwrap_or("?")),
                    ),
                }
            }
            _ => {}
        }
    }
    pgtable::lazy_mmu_leave();
    if h.n_device_threads > 0 {
        TEST_MM.bind_pasid(TEST_PASID);
    }
    for regs in REGS.iter().take(h.n_threads as usize) {
        for r in regs {
            r.store(0, Ordering::Relaxed);
        }
    }
    for (t, passed) in BARRIERS_PASSED.iter().enumerate().take(h.n_threads as usize) {
        position(t).store(0, Ordering::Relaxed);
        passed.store(0, Ordering::Relaxed);
    }
    state_word(state::BARRIER).store(0, Ordering::Relaxed);

    // Thread → vCPU assignment: a random permutation of the vCPUs (in a
    // scratch array: zeroing 256 entries on the stack would cost more than
    // the shuffle on hosts that emulate every instruction).
    let ncpu = smp::num_cpus() as usize;
    let mut cpus = [0u64; MAX_THREADS];
    {
        let mut order = SCRATCH_ORDER.lock();
        for (i, o) in order.iter_mut().enumerate().take(ncpu) {
            *o = i as u64;
        }
        for i in (1..ncpu).rev() {
            let j = rng.below_mod(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        cpus[..h.n_vcpu_threads as usize].copy_from_slice(&order[..h.n_vcpu_threads as usize]);
    }

    // Devices first: they wait on flags the vCPU threads raise.
    for d in 0..h.n_device_threads as usize {
        let gpa = DEV_AREA + d as u64 * DEV_STRIDE;
        build_device_program(b, h.n_vcpu_threads as usize + d, gpa);
        state_word(state::DEVICE_PROGRAMS + 8 * d as u64).store(gpa, Ordering::Release);
    }
    state_word(state::PHASE).store(state::PHASE_RUNNING, Ordering::Release);
    for d in 0..h.n_device_threads as u64 {
        hypercall::call::<DmaSubmit>(DmaSubmitRequest { program: DEV_AREA + d * DEV_STRIDE, slot: d });
    }
    let me = crate::percpu::cpu();
    let mut mine = None;
    for (t, &cpu) in cpus.iter().enumerate().take(h.n_vcpu_threads as usize) {
        if cpu == me {
            mine = Some(t);
        } else {
            while !smp::run_on(cpu, thread_main, t as u64) {
                arch::pause();
            }
        }
    }
    if let Some(t) = mine {
        thread_main(t as u64);
    }
    // A thread on another vCPU is over when its work item is (it published
    // FINISHED before): at CPL3 that is one wait, parked without a
    // timeout; at CPL0 (whose `wait_done` gives up after a while) the
    // thread's FINISHED first. Ours ran above.
    for (t, &cpu) in cpus.iter().enumerate().take(h.n_vcpu_threads as usize) {
        if cpu != me {
            if crate::percpu::cpl() == 0 {
                wait_until(position(t), |p| p & state::pos::FINISHED != 0);
            }
            smp::wait_done(cpu, 10_000);
        }
    }
    for d in 0..h.n_device_threads as u64 {
        let status = (DEV_AREA + d * DEV_STRIDE + 16) as *const AtomicU64;
        // SAFETY: the program header we wrote; the engine stores the status
        // word at the program's end (and wakes its waiters).
        wait_until(unsafe { &*status }, |s| s != dmaabi::status::PENDING);
    }

    state_word(state::PHASE).store(state::PHASE_COLLECT, Ordering::Release);
    let mut values = [0u64; limits::MAX_OBSERVED];
    let nobs = (h.n_obs as usize).min(values.len());
    for (i, v) in values.iter_mut().enumerate().take(nobs) {
        *v = observe(b, i as u16);
    }

    state_word(state::PHASE).store(state::PHASE_TEARDOWN, Ordering::Release);
    // exit_mmap: the threads and devices are done, so the teardown's
    // page-table updates are batched too (its flushes and the IOMMU unbind
    // send the queue before them).
    pgtable::lazy_mmu_enter();
    TEST_MM.teardown();
    pgtable::lazy_mmu_leave();
    page_alloc::unhold_pages(&held[..nheld]);
    let leaked_data = data_in_use().wrapping_sub(data0);
    let leaked_tables = page_alloc::table_pages_in_use().wrapping_sub(tables0);
    let ns = arch::rdtsc().wrapping_sub(t0) * 1_000_000 / time::tsc_khz().max(1);
    trace::emit(Kind::IterEnd, 0, 0, it);
    // SAFETY: any u64 is 8 valid bytes, and this little-endian target's
    // in-memory order is the wire format's (u64 LE).
    let data = unsafe { core::slice::from_raw_parts(values.as_ptr().cast::<u8>(), 8 * nobs) };
    let report = LitmusIteration {
        iteration: it,
        values: nobs as u64,
        leaked_pages: leaked_data as i64,
        leaked_tables: leaked_tables as i64,
        guest_ns: ns,
    };
    hypercall::call_data::<LitmusResult>(report, data);
}

/// One observed value: a register, a location's first word through the
/// kernel's view of its current mapping, or a kernel word.
fn observe(b: &Blob<'_>, i: u16) -> u64 {
    let Some(o) = b.observation(i) else { return VALUE_TIMEOUT };
    match ObsKind::from_u8(o.kind) {
        Some(ObsKind::Reg) => {
            let t = o.thread as usize;
            let is_device = t >= b.header().n_vcpu_threads as usize;
            if is_device {
                device_register(b, t, o.reg)
            } else {
                REGS[t][o.reg as usize].load(Ordering::Acquire)
            }
        }
        Some(ObsKind::Loc) => match b.location(o.loc).and_then(|l| LocKind::from_u8(l.kind)) {
            Some(LocKind::Var) => var_word(o.loc).load(Ordering::Acquire),
            _ => TEST_MM.read_kernel_view(LOC_VA[o.loc as usize].load(Ordering::Relaxed)).unwrap_or(VALUE_FAULT),
        },
        None => VALUE_TIMEOUT,
    }
}

// ---- vCPU threads ------------------------------------------------------------

/// Runs vCPU thread `t` on this CPU, in the test mm.
fn thread_main(t: u64) {
    let t = t as usize;
    let b = blob();
    let Some(td) = b.thread(t as u16) else { return };
    position(t).store(state::pos::STARTED, Ordering::Release);
    // Which vCPU runs which thread this iteration, for trace readers.
    trace::emit(Kind::ThreadStart, 0, t as u64, 0);
    tlb::switch_mm(&TEST_MM.pt());
    let scheduled = explore::iteration_active();
    if scheduled {
        explore::enter(t);
    }
    let mut ctx = ThreadCtx { t };
    ctx.block(&b, &td, 0, td.n_instrs);
    hooks::disarm();
    // Leaving the mm is part of the thread's last step (shootdowns read
    // which CPUs run the mm), so it happens before the turn passes on.
    tlb::switch_to_kernel_mm();
    if scheduled {
        explore::note_mem(true);
        explore::finish();
        explore::leave();
    }
    let p = position(t);
    p.store(state::pos::STARTED | state::pos::FINISHED | state::pos::PC_MASK, Ordering::SeqCst);
    wake(p);
}

struct ThreadCtx {
    t: usize,
}

/// `barrier`s each thread passed this iteration: its next one waits until
/// the arrival counter reaches participants × (passed + 1).
static BARRIERS_PASSED: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];

impl ThreadCtx {
    fn reg(&self, r: u8) -> u64 {
        if r == NO_REG {
            0
        } else {
            REGS[self.t][r as usize].load(Ordering::Relaxed)
        }
    }

    fn set(&self, r: u8, v: u64) {
        if r != NO_REG {
            REGS[self.t][r as usize].store(v, Ordering::Release);
        }
    }

    fn publish(&self, pc: u32, hook: Option<Hook>) {
        let h = hook.map_or(0, |h| (h as u64) << state::pos::HOOK_SHIFT);
        position(self.t).store(state::pos::STARTED | pc as u64 | h, Ordering::Release);
    }

    /// Runs the records `[start, end)` of thread `td` (a block of items).
    fn block(&mut self, b: &Blob<'_>, td: &ThreadDesc, start: u32, end: u32) {
        let mut pc = start;
        while pc < end {
            let Some(ins) = b.thread_instr(td, pc) else { return };
            let len = b.item_len(td, pc).unwrap_or(1);
            self.publish(pc, None);
            explore::instr_point(pc, guard_of(&ins));
            // `signal` then `wait`: one exit for both (see `signal_then_wait`).
            let next = (pc + len < end).then(|| b.thread_instr(td, pc + len)).flatten();
            if let Some(next) = next.filter(|n| pairs_with_wait(&ins, n)) {
                self.signal_then_wait(&ins, &next, pc + len, None);
                pc += len + b.item_len(td, pc + len).unwrap_or(1);
                continue;
            }
            if ins.op() == Op::Loop {
                for _ in 0..ins.imm {
                    self.block(b, td, pc + 1, pc + 1 + ins.len);
                }
            } else {
                let mut mask = 0u32;
                let mut at = pc + 1;
                for _ in 0..ins.nhooks {
                    if let Some(g) = b.thread_instr(td, at) {
                        mask |= 1 << g.arg;
                        at += 1 + g.len;
                    }
                }
                if mask != 0 {
                    hooks::arm(mask, run_hook, self.t as u64 | (pc as u64) << 16);
                }
                self.exec(b, &ins);
                if mask != 0 {
                    hooks::disarm();
                }
            }
            pc += len;
        }
    }

    fn exec(&mut self, b: &Blob<'_>, ins: &lt::Instr) {
        let op = ins.op();
        let va = if ins.loc != NO_LOC { LOC_VA[ins.loc as usize].load(Ordering::Relaxed) } else { 0 };
        let is_var = ins.loc != NO_LOC && b.location(ins.loc).is_some_and(|l| l.kind == LocKind::Var as u8);
        let v1 = if ins.src != NO_REG { self.reg(ins.src) } else { ins.imm };
        let v2 = if ins.src2 != NO_REG { self.reg(ins.src2) } else { ins.imm2 };
        let value = |p: Probe| if p.faulted != 0 { VALUE_FAULT } else { p.value };
        match op {
            Op::Load | Op::Store | Op::Xchg | Op::Cmpxchg | Op::FetchAdd if is_var => {
                explore::note_var(ins.loc, op != Op::Load);
                let w = var_word(ins.loc);
                let old = match op {
                    Op::Load => w.load(Ordering::SeqCst),
                    Op::Store => {
                        w.store(v1, Ordering::SeqCst);
                        0
                    }
                    Op::Xchg => w.swap(v1, Ordering::SeqCst),
                    Op::Cmpxchg => w.compare_exchange(v1, v2, Ordering::SeqCst, Ordering::SeqCst).unwrap_or_else(|x| x),
                    _ => w.fetch_add(v1, Ordering::SeqCst),
                };
                self.set(ins.dst, old);
            }
            Op::Load => {
                Self::note_access(op);
                // SAFETY: a probe access: a fault the mm cannot resolve resumes at its fixup.
                let v = value(unsafe { probe_read_u64(va) });
                trace::emit(Kind::Access, va, v, 0);
                self.set(ins.dst, v);
            }
            Op::Store => {
                Self::note_access(op);
                // SAFETY: as above.
                let p = unsafe { probe_write_u64(va, v1) };
                trace::emit(Kind::Access, va, if p.faulted != 0 { VALUE_FAULT } else { v1 }, 1);
            }
            Op::Xchg => {
                Self::note_access(op);
                // SAFETY: as above.
                let v = value(unsafe { probe_xchg_u64(va, v1) });
                trace::emit(Kind::Access, va, v, 2);
                self.set(ins.dst, v);
            }
            Op::Cmpxchg => {
                Self::note_access(op);
                // SAFETY: as above.
                let v = value(unsafe { probe_cmpxchg_u64(va, v1, v2) });
                trace::emit(Kind::Access, va, v, 2);
                self.set(ins.dst, v);
            }
            Op::FetchAdd => {
                Self::note_access(op);
                // SAFETY: as above.
                let v = value(unsafe { probe_xadd_u64(va, v1) });
                trace::emit(Kind::Access, va, v, 2);
                self.set(ins.dst, v);
            }
            Op::Mfence => fence(Ordering::SeqCst),
            Op::Wait | Op::Signal | Op::Barrier | Op::Delay => self.sync(ins),
            _ => self.mm_op(ins, op, va, v1),
        }
    }

    /// A `signal`'s store; returns the word.
    fn signal_store(&self, ins: &lt::Instr) -> &'static AtomicU64 {
        let v = if ins.src != NO_REG { self.reg(ins.src) } else { ins.imm };
        explore::note_var(ins.loc, true);
        let w = var_word(ins.loc);
        w.store(v, Ordering::SeqCst);
        w
    }

    /// A `wait`'s condition on its word.
    fn wait_cond(ins: &lt::Instr) -> impl Fn(u64) -> bool {
        let eq = WaitCmp::from_u8(ins.arg) == Some(WaitCmp::Eq);
        let imm = ins.imm;
        move |v| if eq { v == imm } else { v != 0 }
    }

    /// `signal` then `wait` (at `wait_pc`, in hook group `hook`): the
    /// wait's park wakes the signalled word's waiters first, so the pair
    /// costs one exit, not two. Nothing but publishing the wait's position
    /// happens between the store and the wake-up, as with the two apart.
    fn signal_then_wait(&mut self, signal: &lt::Instr, wait: &lt::Instr, wait_pc: u32, hook: Option<Hook>) {
        let signalled = self.signal_store(signal);
        self.publish(wait_pc, hook);
        wake_then_wait_until(signalled, var_word(wait.loc), Self::wait_cond(wait));
    }

    /// Notes, for `vmm explore`, what a memory access to the test mm did:
    /// a load reads the mm (a TLB hit, or a fill that sets the A bit, which
    /// commutes with other fills); anything else may change it.
    fn note_access(op: Op) {
        explore::note_mem(op != Op::Load);
    }

    /// The sync ops (also the only ops of hook groups).
    fn sync(&mut self, ins: &lt::Instr) {
        match ins.op() {
            Op::Wait => {
                explore::note_var(ins.loc, false);
                wait_until(var_word(ins.loc), Self::wait_cond(ins));
            }
            Op::Signal => {
                let w = self.signal_store(ins);
                wake(w);
            }
            Op::Barrier => {
                let passed = BARRIERS_PASSED[self.t].fetch_add(1, Ordering::Relaxed) + 1;
                let target = passed * PARTICIPANTS.load(Ordering::Relaxed);
                let w = state_word(state::BARRIER);
                explore::note_barrier();
                w.fetch_add(1, Ordering::SeqCst);
                wake(w);
                explore::barrier_point(w as *const AtomicU64 as u64, target);
                wait_until(w, |v| v >= target);
            }
            Op::Delay => {
                for _ in 0..ins.imm {
                    arch::pause();
                }
            }
            _ => {}
        }
    }

    fn mm_op(&mut self, ins: &lt::Instr, op: Op, va: u64, _v1: u64) {
        explore::note_mem(true);
        let va2 = if ins.loc2 != NO_LOC { LOC_VA[ins.loc2 as usize].load(Ordering::Relaxed) } else { 0 };
        trace::emit(Kind::OpBegin, va, op as u64, 0);
        match op {
            Op::Touch => {
                // A write touch is an atomic add of 0: a write access that
                // keeps the contents (it CoW-breaks, dirties, faults in).
                // SAFETY: probe accesses, as in `exec`.
                let _ = unsafe {
                    if ins.arg == 1 {
                        probe_xadd_u64(va, 0)
                    } else {
                        probe_read_u64(va)
                    }
                };
            }
            Op::Mmap => {
                TEST_MM.map_vma(va, Perm::from_u8(ins.arg).unwrap_or(Perm::Rw));
            }
            Op::Munmap => {
                TEST_MM.munmap(va, PAGE_SIZE);
            }
            Op::Mprotect => {
                TEST_MM.mprotect(
                    va,
                    PAGE_SIZE,
                    crate::mm::litmus_ops::perm_flags(Perm::from_u8(ins.arg).unwrap_or(Perm::Rw)),
                );
            }
            Op::Madvise => match Advice::from_u8(ins.arg) {
                // Unavailable before v4.5: the checker refuses such a run.
                Some(Advice::Free) => {
                    TEST_MM.madvise_free(va, PAGE_SIZE);
                }
                _ => TEST_MM.madvise_dontneed(va, PAGE_SIZE),
            },
            Op::Cow => {
                let _ = TEST_MM.cow(va);
            }
            Op::Ksm => {
                TEST_MM.ksm(va, va2);
            }
            Op::Migrate => {
                let _ = TEST_MM.migrate(va);
            }
            Op::Mkclean => {
                let v = TEST_MM.mkclean(va);
                self.set(ins.dst, v);
            }
            Op::Reclaim => TEST_MM.reclaim(va),
            Op::Mremap => {
                let _ = TEST_MM.mremap(va, va2);
            }
            Op::Alloc => {
                let _ = TEST_MM.alloc(va);
            }
            Op::Truncate => {
                // The location's file, wherever it is mapped now (mremap
                // may have moved it).
                if let Some(f) = LOC_FILE[ins.loc as usize].load(Ordering::Relaxed).checked_sub(1) {
                    TEST_MM.truncate_file(f as usize);
                }
            }
            Op::UffdWp => {
                TEST_MM.uffd_wp(va, ins.arg == 1);
            }
            _ => {}
        }
        trace::emit(Kind::OpEnd, va, op as u64, 0);
    }
}

/// When instruction `ins` can take its step under `vmm explore`: a `wait`
/// when its word satisfies it; everything else at once (a `barrier` waits
/// at its own point after arriving).
fn guard_of(ins: &lt::Instr) -> abi::explore::Guard {
    use abi::explore::{guard, object, Guard};
    if ins.op() != Op::Wait {
        return Guard::NONE;
    }
    let addr = var_word(ins.loc) as *const AtomicU64 as u64;
    let obj = object::VAR + ins.loc;
    match WaitCmp::from_u8(ins.arg) {
        Some(WaitCmp::Eq) => Guard { kind: guard::EQ, addr, value: ins.imm, object: obj },
        _ => Guard { kind: guard::NONZERO, addr, value: 0, object: obj },
    }
}

/// An armed hook fired for the `n`-th time in this op: run the op's group
/// for it (`at HOOK#n`, else `at HOOK`). `arg` = thread | pc << 16.
fn run_hook(h: Hook, n: u32, arg: u64) {
    let t = (arg & 0xffff) as usize;
    let pc = ((arg >> 16) & 0xffff_ffff) as u32;
    let b = blob();
    let Some(td) = b.thread(t as u16) else { return };
    let Some((start, end)) = b.hook_group(&td, pc, h, n) else { return };
    let mut ctx = ThreadCtx { t };
    let mut at = start;
    while at < end {
        if let Some(ins) = b.thread_instr(&td, at) {
            ctx.publish(at, Some(h));
            explore::point(abi::explore::site::make(abi::explore::site::INSTR, at, 0, 0), guard_of(&ins));
            let next = (at + 1 < end).then(|| b.thread_instr(&td, at + 1)).flatten();
            if let Some(next) = next.filter(|n| pairs_with_wait(&ins, n)) {
                ctx.signal_then_wait(&ins, &next, at + 1, Some(h));
                at += 2;
                continue;
            }
            ctx.sync(&ins);
        }
        at += 1;
    }
    ctx.publish(pc, None);
}

/// A `signal` directly followed by a `wait`, neither with hooks, in a
/// thread that `vmm explore` does not schedule (its scheduler has a point
/// before the `wait`).
fn pairs_with_wait(ins: &lt::Instr, next: &lt::Instr) -> bool {
    ins.op() == Op::Signal && ins.nhooks == 0 && next.op() == Op::Wait && next.nhooks == 0 && !explore::scheduled()
}

// ---- device threads -----------------------------------------------------------

/// Which op of a device program last wrote each register (`u64::MAX` = none).
static DEV_REG_OP: [[AtomicU64; MAX_REGS as usize]; MAX_DEVICES] =
    [const { [const { AtomicU64::new(u64::MAX) }; MAX_REGS as usize] }; MAX_DEVICES];

struct DevBuilder {
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
fn build_device_program(b: &Blob<'_>, t: usize, gpa: u64) {
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
fn device_register(b: &Blob<'_>, t: usize, r: u8) -> u64 {
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

/// Unused-thread-kind guard: the blob puts vCPU threads first.
const _: () = assert!(ThreadKind::Vcpu as u8 == 0);
