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

use core::sync::atomic::{AtomicU64, Ordering};

use abi::dma as dmaabi;
use abi::hypercall::calls::{DmaSubmit, DmaSubmitRequest, ExploreNext, LitmusIteration, LitmusResult};
use abi::hypercall::Empty;
use abi::layout::{self, PAGE_SIZE};
use abi::limits;
use abi::litmus::{
    state, Blob, LocKind, ObsKind, Perm, ThreadKind, LOC_PINNED, LOC_SHARED, MAX_REGS, MAX_THREADS, VALUE_FAULT,
    VALUE_TIMEOUT,
};
use abi::rng::SplitMix64;

use crate::mm::mm_types::TEST_MM;
use crate::mm::page_alloc;
use crate::mm::pgtable;
use crate::mm::policy;
use crate::mm::tlb;
use crate::sync::SpinLock;
use crate::trace::{self, Kind};
use crate::wait::wait_until;
use crate::{arch, cpl3, hypercall, report, smp, time};

mod device;
mod vcpu;
use device::{build_device_program, device_register};
use vcpu::{thread_main, BARRIERS_PASSED};

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
    let threads = cpus.iter().take(h.n_vcpu_threads as usize).copied().enumerate();
    let mine = threads.clone().find(|&(_, cpu)| cpu == me).map(|(t, _)| t);
    // The other threads start together, with one exit (which carries the
    // set-up's page-table updates, done before any thread can start).
    smp::run_on_many(threads.filter(|&(_, cpu)| cpu != me).map(|(t, cpu)| (cpu, t as u64)), thread_main);
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
    // Our thread's last signal, if its wake was left to a park (none came).
    crate::wait::flush_deferred();
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

/// Unused-thread-kind guard: the blob puts vCPU threads first.
const _: () = assert!(ThreadKind::Vcpu as u8 == 0);
