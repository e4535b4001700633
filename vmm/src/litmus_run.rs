//! `vmm litmus`: runs litmus tests (the `litmus` crate parses, checks and
//! compiles them; the guest interprets the bytecode) and prints herd-style
//! results.
//!
//! One guest boot runs many iterations of one (test, policy). An iteration
//! that stops making progress (a hook paused under a lock another thread
//! needs, a device waiting forever) is ended by the VMM: it reads where each
//! thread was from the guest's state page, records the outcome `timeout`,
//! and boots again at the next iteration. Results gathered so far are kept
//! whatever happens to a boot.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use abi::litmus::{state, Hook, VALUE_TIMEOUT};
use abi::{dma, layout};
use iommu::mem as gmem;
use litmus::{
    any_mismatch, compile, file_summary, herd_block, policy_matrix, render_all, verdict_table, CompileOptions, Key,
    Policy, ResultsFile, RunResult, Shard, Test, ThreadPosition,
};
use vm_memory::GuestMemoryMmap;

use crate::error::{Error, Result};
use crate::shadow::TlbModel;
use crate::status;
use crate::trace::{SharedOut, TraceConfig, TraceOut};
use crate::vstate::vm::{self, EndReason, VmConfig};
use tools::format::{RunEnd, RunMeta, ThreadMeta};

/// What one iteration reported (`LITMUS_RESULT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IterReport {
    pub iteration: u64,
    pub values: Vec<u64>,
    /// Data / page-table pages not returned after teardown.
    pub leaked_pages: i64,
    pub leaked_tables: i64,
    pub guest_ns: u64,
    /// When the VMM received it (set by [`LitmusSession::report`]).
    pub received: Option<Instant>,
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

/// Shared between the runner, the VM's hypercall handler and its supervisor.
#[derive(Debug)]
pub struct LitmusSession {
    pub blob: Vec<u8>,
    n_vcpu_threads: usize,
    n_device_threads: usize,
    iteration_timeout: Duration,
    reports: Mutex<Vec<IterReport>>,
    /// Bumped by every report: the supervisor's progress mark.
    progress: AtomicU64,
    last_progress: Mutex<(u64, Instant)>,
    stall: Mutex<Option<Stall>>,
    /// Set under `vmm explore`: the search the guest's iterations follow.
    pub explore: Option<std::sync::Arc<crate::explore_run::ExploreSession>>,
    explore_log: Mutex<Vec<explore::StepRecord>>,
    /// Ticked by every report (`--progress`).
    progress_bar: Mutex<crate::progress::Progress>,
}

impl LitmusSession {
    pub fn new(blob: Vec<u8>, n_vcpu_threads: usize, n_device_threads: usize, iteration_timeout: Duration) -> Self {
        LitmusSession {
            blob,
            n_vcpu_threads,
            n_device_threads,
            iteration_timeout,
            reports: Mutex::new(Vec::new()),
            progress: AtomicU64::new(0),
            last_progress: Mutex::new((0, Instant::now())),
            stall: Mutex::new(None),
            explore: None,
            explore_log: Mutex::new(Vec::new()),
            progress_bar: Mutex::new(crate::progress::Progress::hidden()),
        }
    }

    /// The stall snapshot of the last iteration timeout, if any.
    pub fn take_stall(&self) -> Option<Stall> {
        self.stall.lock().unwrap().take()
    }

    /// The reports received so far (emptied).
    pub fn drain_reports(&self) -> Vec<IterReport> {
        self.take_reports()
    }

    /// Restarts the stall clock (before a boot).
    pub fn restart_clock(&self) {
        self.reset_clock()
    }

    /// The hypercall handler's entry.
    pub fn report(&self, mut r: IterReport) {
        r.received = Some(Instant::now());
        self.reports.lock().unwrap().push(r);
        self.progress.fetch_add(1, Ordering::AcqRel);
        self.shown_progress().inc(1);
    }

    fn shown_progress(&self) -> crate::progress::Progress {
        self.progress_bar.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Where reports tick (`--progress`).
    pub fn set_progress(&self, p: crate::progress::Progress) {
        *self.progress_bar.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    fn take_reports(&self) -> Vec<IterReport> {
        std::mem::take(&mut *self.reports.lock().unwrap())
    }

    fn reset_clock(&self) {
        *self.last_progress.lock().unwrap() = (self.progress.load(Ordering::Acquire), Instant::now());
    }

    /// Called by the supervisor every tick: true (after snapshotting the
    /// threads' positions) when no iteration finished within the limit.
    pub fn stalled(&self, mem: &GuestMemoryMmap) -> bool {
        let now = self.progress.load(Ordering::Acquire);
        let mut last = self.last_progress.lock().unwrap();
        if now != last.0 {
            *last = (now, Instant::now());
            return false;
        }
        if last.1.elapsed() < self.iteration_timeout {
            return false;
        }
        *self.stall.lock().unwrap() = Some(self.snapshot(mem));
        if self.explore.is_some() {
            *self.explore_log.lock().unwrap() = crate::explore_run::read_log(&crate::explore_run::GuestShared(mem));
        }
        true
    }

    /// The explore log captured when the iteration stalled.
    pub fn take_explore_log(&self) -> Vec<explore::StepRecord> {
        std::mem::take(&mut *self.explore_log.lock().unwrap())
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
            let nops = gmem::load_u64(mem, prog + 8).unwrap_or(0).min(dma::MAX_OPS);
            let stuck = (0..nops).find_map(|i| {
                let at = prog + dma::HEADER_SIZE + i * dma::OP_SIZE;
                let result = gmem::load_u64(mem, at + 24).ok()?;
                (result == VALUE_TIMEOUT).then(|| gmem::load_u64(mem, at).ok()).flatten()
            });
            positions.push(stuck.map(|op| ((op >> dma::op::TAG_SHIFT) as u32, None)));
        }
        Stall { iteration: word(state::ITERATION), phase: word(state::PHASE), positions }
    }
}

/// `vmm litmus` options.
#[derive(Clone, Debug, Default)]
pub struct LitmusArgs {
    /// Files or directories (searched for `*.toml`); empty = the built-in catalogue.
    pub paths: Vec<PathBuf>,
    pub runs: u64,
    pub policies: Vec<String>,
    pub json: Option<PathBuf>,
    /// `--log-dir DIR`: one herdtools7 log per policy.
    pub log_dir: Option<PathBuf>,
    pub check: bool,
    /// `--tlb` (None = the policy's or the default).
    pub tlb: Option<String>,
    pub iotlb: Option<String>,
    pub pwc: Option<String>,
    pub seed: Option<u64>,
    /// `--vcpus`; None = as many as the test has vCPU threads.
    pub vcpus: Option<u64>,
    pub iteration_timeout: Duration,
    /// `--trace FILE`: write the trace of every (test, policy) run.
    pub trace: Option<PathBuf>,
    /// `--trace-runs K`: trace only the first K iterations of each run.
    pub trace_runs: Option<u64>,
    /// `--trace-ring N`: records per vCPU ring.
    pub trace_ring: Option<u64>,
    /// `--shard I/N`: run only this part of the job.
    pub shard: Option<Shard>,
    /// `--baseline POLICY`: also run every test under POLICY and compare.
    pub baseline: Option<String>,
    /// `--progress`: show progress on stderr even when it is not a terminal.
    pub force_progress: bool,
    /// Where iterations are counted (set by [`run`] for the whole job).
    pub progress: crate::progress::Progress,
    /// `--tap`: stdout is TAP (kselftest's `TAP version 13`), the herd
    /// blocks as `#` diagnostic lines.
    pub tap: bool,
}

fn collect_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found).map_err(|e| Error::Other(format!("{}: {e}", p.display())))?;
            found.sort();
            if found.is_empty() {
                return Err(Error::Other(format!("{}: no *.toml litmus files in this directory", p.display())));
            }
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
    Ok(())
}

/// Loads and checks every test; nothing runs if any file is invalid.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Test>> {
    let (tests, warnings) = if paths.is_empty() {
        litmus::check_all(&litmus::catalogue_sources())
    } else {
        litmus::load_files(&collect_paths(paths)?)
    }
    .map_err(|d| Error::Litmus(render_all(&d)))?;
    if !warnings.is_empty() {
        eprint!("{}", render_all(&warnings));
    }
    Ok(tests)
}

/// What happened to one (test, policy).
pub struct PolicyRun {
    pub result: RunResult,
    /// Iterations that did not return every page.
    pub leaks: u64,
    pub guest_error: Option<String>,
    /// From the start of the run to the first iteration whose final state
    /// satisfied the condition (the forbidden or `exists` state).
    pub first_match: Option<Duration>,
}

/// Runs every (test, policy) — or this shard's part of them — and prints
/// the results; returns the exit status.
pub fn run(base: &VmConfig, args: &LitmusArgs) -> Result<i32> {
    let tests = load(&args.paths)?;
    // With --tap, stdout is TAP: everything else goes out as `#` lines.
    let tap = args.tap;
    let say = |text: &str| {
        if tap {
            print!("{}", litmus::tap::diagnostics(text));
        } else {
            print!("{text}");
        }
    };
    let trace = match &args.trace {
        Some(p) => Some(std::sync::Arc::new(Mutex::new(TraceOut::create(p)?))),
        None => None,
    };
    let seed = args.seed.unwrap_or_else(|| {
        let s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        let s = s % 1_000_000_000;
        if tap {
            println!("{}", litmus::tap::HEADER);
        }
        say(&format!("Seed {s} (re-run with --seed {s})\n"));
        s
    });
    let mut overrides = String::new();
    for (k, v) in [("tlb", &args.tlb), ("iotlb", &args.iotlb), ("pwc", &args.pwc)] {
        if let Some(v) = v {
            overrides += &format!("{}{k}={v}", if overrides.is_empty() { "" } else { "," });
        }
    }
    let overrides = Policy::parse(&overrides).map_err(|e| Error::Litmus(format!("--tlb/--iotlb/--pwc: {e}")))?;
    let mut cli_policies = Vec::new();
    for p in &args.policies {
        cli_policies.push(Policy::parse(p).map_err(|e| Error::Litmus(format!("--policy {p}: {e}")))?);
    }
    let baseline = match &args.baseline {
        Some(b) => {
            Some(Policy::parse(b).map_err(|e| Error::Litmus(format!("--baseline {b}: {e}")))?.merged(&overrides))
        }
        None => None,
    };
    let mut log_dir = match &args.log_dir {
        Some(d) => Some(
            litmus::logdir::LogDir::create(d).map_err(|e| Error::Other(format!("--log-dir {}: {e}", d.display())))?,
        ),
        None => None,
    };

    // The job: every (test, policy) in order, the baseline first.
    let mut units: Vec<(usize, Policy)> = Vec::new();
    for (ti, test) in tests.iter().enumerate() {
        let mut matrix = policy_matrix(&cli_policies, &test.expect_policies(), &overrides);
        if let Some(b) = baseline {
            matrix.retain(|p| p.abi != b.abi);
            matrix.insert(0, b);
        }
        units.extend(matrix.into_iter().map(|p| (ti, p)));
    }
    let shard = args.shard.unwrap_or(Shard::ALL);
    let pieces = litmus::shard::plan(&vec![args.runs; units.len()], shard);
    if args.shard.is_some() {
        let n: u64 = pieces.iter().map(|p| p.end - p.first).sum();
        say(&format!(
            "Shard {shard}: {n} of {} iterations, {} (test, policy) part(s)\n\n",
            args.runs * units.len() as u64,
            pieces.len()
        ));
    }

    if tap {
        if args.seed.is_some() {
            println!("{}", litmus::tap::HEADER);
        }
        println!("{}", litmus::tap::plan(pieces.len()));
    }
    let mut tap_points = Vec::new();
    let total: u64 = pieces.iter().map(|p| p.end - p.first).sum();
    let mut args = args.clone();
    args.progress = crate::progress::Progress::new(total, "iterations", args.force_progress);
    let args = &args;

    let mut runs: Vec<(usize, PolicyRun)> = Vec::new();
    let mut worst = status::OK;
    let mut file_runs: Vec<PolicyRun> = Vec::new();
    let flush_file = |ti: usize, file_runs: &mut Vec<PolicyRun>, runs: &mut Vec<(usize, PolicyRun)>| {
        if file_runs.is_empty() {
            return;
        }
        let refs: Vec<&RunResult> = file_runs.iter().map(|r| &r.result).collect();
        say(&format!("{}\n", file_summary(&tests[ti], &refs)));
        runs.extend(file_runs.drain(..).map(|r| (ti, r)));
    };
    let mut current = None;
    for piece in &pieces {
        let (ti, policy) = units[piece.unit];
        if current.is_some_and(|c| c != ti) {
            flush_file(current.unwrap(), &mut file_runs, &mut runs);
        }
        current = Some(ti);
        let test = &tests[ti];
        args.progress.set_message(format!("{} [{}]", test.name, policy.canonical()));
        let pr = run_policy_range(base, args, test, policy, seed, trace.as_ref(), piece.first..piece.end, args.runs)?;
        let block = herd_block(test, &pr.result);
        say(&block);
        if let Some(l) = &mut log_dir {
            l.append(&pr.result.policy, &block)
                .map_err(|e| Error::Other(format!("--log-dir {}: {e}", l.dir().display())))?;
        }
        if pr.leaks > 0 {
            say(&format!("Leak {} {} iterations did not return every page\n", test.name, pr.leaks));
        }
        if let Some(e) = &pr.guest_error {
            say(&format!("Error {} {e}\n", test.name));
            worst = worst.max(status::GUEST_ERROR);
        }
        say("\n");
        if tap {
            let mut point = litmus::tap::litmus_point(&litmus::RunRecord::new(test, &pr.result));
            if pr.leaks > 0 || pr.guest_error.is_some() {
                point.outcome = litmus::tap::Outcome::Fail;
                point.reason =
                    pr.guest_error.clone().unwrap_or_else(|| format!("{} iterations leaked pages", pr.leaks));
            }
            tap_points.push(point);
            print!("{}", litmus::tap::line(tap_points.len(), tap_points.last().unwrap()));
        }
        file_runs.push(pr);
    }
    if let Some(ti) = current {
        flush_file(ti, &mut file_runs, &mut runs);
    }
    args.progress.finish();
    let pairs: Vec<(&Test, &RunResult)> = runs.iter().map(|(ti, r)| (&tests[*ti], &r.result)).collect();
    say(&verdict_table(&pairs));
    let mut results = ResultsFile::litmus(&pairs, args.shard.map(|s| s.info()), true);
    if args.shard.is_some() {
        results.job = units
            .iter()
            .map(|(ti, p)| litmus::PlannedRun {
                test: tests[*ti].name.clone(),
                policy: p.canonical(),
                planned: args.runs,
            })
            .collect();
    }
    if let Some(b) = baseline {
        let cmp =
            litmus::compare::against_baseline(&results, |r| Policy::parse(&r.policy).is_ok_and(|p| p.abi == b.abi));
        say(&format!("\nCompared with the baseline {}\n", b.canonical()));
        say(&cmp.render());
        if cmp.new_violations() > 0 {
            worst = worst.max(status::TESTS_FAILED);
        }
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results.to_json()).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(path, text + "\n").map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    }
    if let (Some(t), Some(p)) = (&trace, &args.trace) {
        let t = t.lock().unwrap_or_else(|e| e.into_inner());
        match t.error() {
            Some(e) => {
                eprintln!("vmm: error: {e}");
                worst = worst.max(status::SETUP_ERROR);
            }
            None => say(&format!("Trace written to {} (vmm trace report {})\n", p.display(), p.display())),
        }
    }
    if tap {
        print!("{}", litmus::tap::totals(&tap_points));
    }
    let leaks = runs.iter().any(|(_, r)| r.leaks > 0);
    if args.check && (any_mismatch(&pairs) || leaks) {
        worst = worst.max(status::TESTS_FAILED);
    }
    Ok(worst)
}

fn tlb_of(policy: &Policy) -> Result<TlbModel> {
    TlbModel::parse(&policy.get(Key::Tlb)).map_err(|e| Error::Litmus(format!("tlb={}: {e}", policy.get(Key::Tlb))))
}

/// Runs `args.runs` iterations of `test` under `policy`: as many boots as
/// it takes to get through every iteration (a stalled iteration ends its
/// boot). `trace`: the trace file.
pub fn run_policy(
    base: &VmConfig,
    args: &LitmusArgs,
    test: &Test,
    policy: Policy,
    seed: u64,
    trace: Option<&SharedOut>,
) -> Result<PolicyRun> {
    run_policy_range(base, args, test, policy, seed, trace, 0..args.runs, args.runs)
}

/// Runs iterations `range` of a job that planned `planned` for this (test,
/// policy) (all of them unless `--shard` cut the job): the guest runs
/// iterations `first..end` of a blob compiled for `end`, and iteration i's
/// placement depends on the seed and i alone, so a part behaves as inside
/// the whole run.
#[allow(clippy::too_many_arguments)]
pub fn run_policy_range(
    base: &VmConfig,
    args: &LitmusArgs,
    test: &Test,
    policy: Policy,
    seed: u64,
    trace: Option<&SharedOut>,
    range: std::ops::Range<u64>,
    planned: u64,
) -> Result<PolicyRun> {
    let started = Instant::now();
    // `--runs` is checked at the CLI edge (1..=u32::MAX).
    let runs = range.end;
    let opts = CompileOptions {
        seed,
        iterations: runs as u32,
        iteration_timeout_ms: args.iteration_timeout.as_millis().min(u32::MAX as u128) as u32,
    };
    let compiled = compile(test, &policy, &opts);
    let blob = abi::litmus::Blob::parse(&compiled.blob)
        .map_err(|e| Error::Other(format!("internal: compiled blob rejected: {e:?}")))?;
    let hdr = *blob.header();
    let thread_names: Vec<String> =
        (0..hdr.n_threads).map(|t| blob.thread_name(t).unwrap_or("?").to_string()).collect();
    let (nv, nd) = (hdr.n_vcpu_threads as usize, hdr.n_device_threads as usize);
    let vcpus = args.vcpus.unwrap_or(nv.max(1) as u64);
    if vcpus < nv as u64 {
        return Err(Error::Litmus(format!("{}: needs {nv} vCPUs for its threads, --vcpus {vcpus} given", test.name)));
    }
    let mut iommu = iommu::IommuConfig { seed, ..base.iommu };
    for key in [Key::Iotlb, Key::Pwc] {
        let v = policy.get(key);
        iommu.set_policy(key.name(), &v).map_err(|e| Error::Litmus(format!("{}={v}: {e}", key.name())))?;
    }
    let session = std::sync::Arc::new(LitmusSession::new(compiled.blob.clone(), nv, nd, args.iteration_timeout));
    session.set_progress(args.progress.clone());
    let mut result = RunResult::new(test, policy, seed, range.end - range.start).with_range(range.start, planned);
    result.fidelity = Some(fidelity(&policy));
    let trace_limit = args.trace_runs.unwrap_or(u64::MAX).min(runs);
    if let Some(t) = trace {
        let meta = RunMeta {
            test: test.name.clone(),
            hash: test.hash.clone(),
            policy: policy.canonical_mm(),
            tlb: policy.get(Key::Tlb),
            iotlb: policy.get(Key::Iotlb),
            seed,
            file: Some(test.file.clone()),
            iterations: runs,
            traced_iterations: trace_limit,
            vcpus,
            threads: thread_names
                .iter()
                .enumerate()
                .map(|(i, n)| ThreadMeta { name: n.clone(), kind: if i < nv { "vcpu" } else { "device" }.into() })
                .collect(),
            record_version: abi::trace::VERSION,
        };
        t.lock().unwrap_or_else(|e| e.into_inner()).run(&meta);
    }
    let mut leaks = 0;
    let mut guest_error = None;
    let mut first_match = None;
    let mut first = range.start;
    let mut boot = 0u64;
    while first < runs {
        let traced = trace.filter(|_| first < trace_limit).map(|out| TraceConfig {
            out: out.clone(),
            first_iteration: first,
            limit: trace_limit,
            boot,
            ring: args.trace_ring,
        });
        boot += 1;
        let cfg = VmConfig {
            vcpus,
            cmdline: format!("mode=litmus litmus.first={first}"),
            quiet: true,
            tlb: tlb_of(&policy)?,
            seed: seed ^ first,
            iommu,
            litmus: Some(session.clone()),
            trace: traced,
            ..base.clone()
        };
        session.reset_clock();
        let out = vm::run(&cfg)?;
        for r in session.take_reports() {
            if r.values.len() != result.arity {
                return Err(Error::Other(format!(
                    "guest reported {} values for {}, expected {}",
                    r.values.len(),
                    test.name,
                    result.arity
                )));
            }
            if r.leaked_pages != 0 || r.leaked_tables != 0 {
                leaks += 1;
            }
            result.record(&r.values).map_err(|e| Error::Other(e.to_string()))?;
            if first_match.is_none() && test.condition.expr.eval(&r.values) {
                first_match = r.received.map(|t| t.saturating_duration_since(started));
            }
            first = first.max(r.iteration + 1);
        }
        match out.end {
            // The guest says it is done: it must have run every iteration,
            // or the run's verdict would rest on iterations that never ran.
            EndReason::GuestExit(abi::exit::SUCCESS) if first >= runs => break,
            EndReason::GuestExit(abi::exit::SUCCESS) => {
                let part = if range.start > 0 { format!(" {}..{}", range.start, range.end) } else { String::new() };
                guest_error = Some(format!(
                    "the guest ended the run after {} of {} iterations{part} (it must report every one)",
                    first - range.start,
                    range.end - range.start
                ));
                break;
            }
            EndReason::IterationTimeout => {
                let stall = session.stall.lock().unwrap().take().unwrap_or_default();
                let positions = stall
                    .positions
                    .iter()
                    .enumerate()
                    .map(|(t, p)| ThreadPosition {
                        thread: thread_names.get(t).cloned().unwrap_or_else(|| format!("thread{t}")),
                        pc: p.map(|(pc, _)| pc),
                        source: p.and_then(|(pc, _)| compiled.position(t, pc)),
                        hook: p.and_then(|(_, h)| h),
                    })
                    .collect();
                let it = stall.iteration.max(first);
                args.progress.inc(1);
                let values = vec![VALUE_TIMEOUT; result.arity];
                result.record_timeout(it, &values, positions).map_err(|e| Error::Other(e.to_string()))?;
                first = it + 1;
            }
            EndReason::GuestExit(s) => {
                guest_error = Some(format!("guest exited with status {s} at iteration {first}"));
                break;
            }
            EndReason::GuestError { vcpu, rip, cause } => {
                guest_error = Some(format!("guest error on vCPU {vcpu} at RIP {rip:#x}: {cause} (iteration {first})"));
                break;
            }
            EndReason::Timeout { .. } => {
                guest_error = Some(format!("watchdog: the guest did not finish within {:?}", base.timeout));
                break;
            }
        }
    }
    result.time_secs = started.elapsed().as_secs_f64();
    if let Some(t) = trace {
        let timeouts = result.n_timeouts;
        t.lock().unwrap_or_else(|e| e.into_inner()).run_end(&RunEnd { iterations: result.total(), timeouts });
    }
    Ok(PolicyRun { result, leaks, guest_error, first_match })
}

/// The `Fidelity` line: how far the run's TLB model reflects hardware.
fn fidelity(policy: &Policy) -> String {
    let tlb = policy.get(Key::Tlb);
    match tlb.as_str() {
        "lazy" => "tlb=lazy (modelled: entries live until flushed; deterministic)".into(),
        "native" => "tlb=native (the host's real TLB; see `vmm probe` for what this host can show)".into(),
        _ => format!("tlb={tlb} (modelled, seeded random eviction)"),
    }
}
