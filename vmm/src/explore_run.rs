//! `vmm explore`: searches the schedules of litmus tests (the `explore`
//! crate decides, the guest and the DMA engine follow its plans through the
//! turn protocol of `abi::explore`).
//!
//! One boot runs many schedules: after each iteration the guest asks for
//! the next plan (`EXPLORE_NEXT`); the VMM reads the finished schedule's
//! log from the explore area, hands it with the iteration's values to the
//! explorer, and writes the next plan. A schedule that never finishes (a
//! deadlock the test allows) is ended by the iteration watchdog, recorded
//! as `timeout`, and the search goes on in a new boot.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use abi::explore::{self as ex, object, Shared};
use abi::litmus::VALUE_TIMEOUT;
use explore::{Explorer, Footprint, Object, Plan, Rule, StepRecord};
use iommu::mem as gmem;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The explore area through guest memory (the VMM's side of the protocol).
pub struct GuestShared<'a>(pub &'a GuestMemoryMmap);

impl Shared for GuestShared<'_> {
    fn load(&self, gpa: u64) -> u64 {
        gmem::load_u64(self.0, gpa).unwrap_or(0)
    }
    fn load_u32(&self, gpa: u64) -> u32 {
        self.0.read_obj::<u32>(GuestAddress(gpa)).unwrap_or(0)
    }
    fn load_u8(&self, gpa: u64) -> u8 {
        self.0.read_obj::<u8>(GuestAddress(gpa)).unwrap_or(0)
    }
    fn store(&self, gpa: u64, v: u64) {
        let _ = gmem::store_u64(self.0, gpa, v);
    }
}

/// A footprint object of the guest's log as an engine object.
pub fn engine_object(o: u16) -> Object {
    Object(o as u64)
}

/// Converts the explore area's log (after an iteration) into engine steps.
pub fn read_log(m: &impl Shared) -> Vec<StepRecord> {
    let n = m.load(ex::AREA + ex::ctl::STEPS).min(ex::MAX_STEPS);
    let nthreads = m.load(ex::AREA + ex::ctl::NTHREADS).min(ex::MAX_THREADS as u64) as usize;
    (0..n)
        .map(|i| {
            let r = ex::record(m, i);
            let mut fp = Footprint::empty();
            match r.mem {
                1 => fp.add(engine_object(object::MEM), false),
                2 => fp.add(engine_object(object::MEM), true),
                _ => {}
            }
            if r.nvars as usize > ex::MAX_STEP_VARS {
                fp.add(Object::ALL, true);
            }
            for &v in r.vars.iter().take((r.nvars as usize).min(ex::MAX_STEP_VARS)) {
                fp.add(engine_object(v & !object::WRITE), v & object::WRITE != 0);
            }
            let blocked = (0..nthreads)
                .filter(|&t| r.blocked[t] != object::NONE)
                .map(|t| (t as u8, Footprint::read(engine_object(r.blocked[t]))))
                .collect();
            StepRecord { thread: r.thread, enabled: r.enabled, footprint: fp, blocked, site: r.site }
        })
        .collect()
}

/// Writes `plan` into the explore area.
pub fn write_plan(m: &impl Shared, plan: &Plan, nthreads: usize, nvcpu: usize) -> std::result::Result<(), String> {
    let (rule, prio, points) = match &plan.rule {
        Rule::NonPreemptive => (ex::rule::NON_PREEMPTIVE, Vec::new(), Vec::new()),
        Rule::Pct { priorities, change_points } => (ex::rule::PCT, priorities.clone(), change_points.clone()),
    };
    let words = ex::PlanWords {
        nthreads: nthreads as u64,
        nvcpu: nvcpu as u64,
        prefix: &plan.prefix,
        priority: &plan.priority,
        rule,
        pct_prio: &prio,
        change_points: &points,
    };
    ex::write_plan(m, &words).map_err(|e| format!("the schedule does not fit the explore area: {e:?}"))
}

/// Whether a final state (the observed values) is the one searched for.
pub type Violating = Box<dyn Fn(&[u64]) -> bool + Send + Sync>;

/// What the hypercall handler and the runner share during one (test, policy) search.
pub struct ExploreSession {
    inner: Mutex<Inner>,
    nthreads: usize,
    nvcpu: usize,
    /// The condition: does a state (the observed values) violate the property?
    violating: Violating,
}

struct Inner {
    explorer: Explorer<Vec<u64>>,
    outstanding: Option<Plan>,
    values: Option<Vec<u64>>,
    error: Option<String>,
    done: bool,
    /// Schedules reported (counted or not), for the progress mark.
    reported: u64,
    points: u64,
    started: Instant,
}

impl std::fmt::Debug for ExploreSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExploreSession").field("nthreads", &self.nthreads).finish_non_exhaustive()
    }
}

impl ExploreSession {
    pub fn new(explorer: Explorer<Vec<u64>>, nthreads: usize, nvcpu: usize, violating: Violating) -> Self {
        ExploreSession {
            inner: Mutex::new(Inner {
                explorer,
                outstanding: None,
                values: None,
                error: None,
                done: false,
                reported: 0,
                points: 0,
                started: Instant::now(),
            }),
            nthreads,
            nvcpu,
            violating,
        }
    }

    /// LITMUS_RESULT of the schedule that just ran.
    pub fn values(&self, v: Vec<u64>) {
        self.inner.lock().unwrap().values = Some(v);
    }

    /// EXPLORE_NEXT: close the previous schedule, write the next plan.
    /// Returns whether there is one; an error ends the search.
    pub fn next(&self, mem: &GuestMemoryMmap) -> std::result::Result<bool, String> {
        let m = GuestShared(mem);
        let mut g = self.inner.lock().unwrap();
        if let Some(plan) = g.outstanding.take() {
            let steps = read_log(&m);
            g.points += steps.len() as u64;
            let err = m.load(ex::AREA + ex::ctl::ERROR);
            let values = match (err, g.values.take()) {
                (ex::error::NONE, Some(v)) => v,
                (ex::error::DIVERGED, _) => {
                    let e = "a replayed schedule diverged: the guest is not deterministic under it".to_string();
                    g.error = Some(e.clone());
                    return Err(e);
                }
                (ex::error::LOG_FULL, _) => {
                    let e = format!("a schedule took more than {} steps", ex::MAX_STEPS);
                    g.error = Some(e.clone());
                    return Err(e);
                }
                // Deadlock (or no values): the schedule did not finish.
                (_, v) => v.map(|v| vec![VALUE_TIMEOUT; v.len()]).unwrap_or_default(),
            };
            let v = !values.is_empty() && values[0] != VALUE_TIMEOUT && (self.violating)(&values);
            g.reported += 1;
            if let Err(e) = g.explorer.report(&plan, &steps, &values, v) {
                g.error = Some(e.to_string());
                return Err(e.to_string());
            }
        }
        match g.explorer.next_plan() {
            Some(plan) => {
                write_plan(&m, &plan, self.nthreads, self.nvcpu)?;
                g.outstanding = Some(plan);
                Ok(true)
            }
            None => {
                m.store(ex::AREA + ex::ctl::ACTIVE, 0);
                g.done = true;
                Ok(false)
            }
        }
    }

    /// A schedule was cut short by the iteration watchdog: report it with
    /// `timeout` values (the next boot asks for the next plan).
    pub fn timed_out(&self, arity: usize, mem_log: Vec<StepRecord>) -> std::result::Result<(), String> {
        let mut g = self.inner.lock().unwrap();
        if let Some(plan) = g.outstanding.take() {
            let values = vec![VALUE_TIMEOUT; arity];
            g.reported += 1;
            g.explorer.report(&plan, &mem_log, &values, false).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub fn is_done(&self) -> bool {
        self.inner.lock().unwrap().done
    }

    pub fn error(&self) -> Option<String> {
        self.inner.lock().unwrap().error.clone()
    }

    pub fn result(&self) -> explore::ExploreResult<Vec<u64>> {
        self.inner.lock().unwrap().explorer.result().clone()
    }

    pub fn points(&self) -> u64 {
        self.inner.lock().unwrap().points
    }

    pub fn elapsed(&self) -> Duration {
        self.inner.lock().unwrap().started.elapsed()
    }
}

/// How long a waiting thread sleeps between two looks at the turn word.
const POLL: Duration = Duration::from_micros(20);

/// Blocks (polling, without burning a host CPU) until the turn is `t`'s,
/// the schedule broke, or `limit` passed.
pub fn park(mem: &GuestMemoryMmap, t: u64, limit: Duration) {
    let m = GuestShared(mem);
    let start = Instant::now();
    loop {
        let turn = m.load(ex::AREA + ex::ctl::TURN);
        if turn == t || turn == ex::NOBODY || start.elapsed() >= limit {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// The device side of the turn protocol: a DMA worker running litmus
/// device thread `t` under the scheduler.
pub struct DeviceThread<'a> {
    m: GuestShared<'a>,
    t: u64,
    started: bool,
}

impl<'a> DeviceThread<'a> {
    /// `Some` if an explore schedule runs and `device` is one of its threads.
    pub fn join(mem: &'a GuestMemoryMmap, device: u64) -> Option<DeviceThread<'a>> {
        let m = GuestShared(mem);
        if m.load(ex::AREA + ex::ctl::MAGIC) != ex::MAGIC || m.load(ex::AREA + ex::ctl::ACTIVE) != 1 {
            return None;
        }
        let t = m.load(ex::AREA + ex::ctl::NVCPU) + device;
        (t < m.load(ex::AREA + ex::ctl::NTHREADS)).then_some(DeviceThread { m, t, started: false })
    }

    fn wait_turn(&self, stop: &dyn Fn() -> bool) -> bool {
        loop {
            let turn = self.m.load(ex::AREA + ex::ctl::TURN);
            if turn == self.t {
                return true;
            }
            if (turn == ex::NOBODY && self.m.load(ex::AREA + ex::ctl::ERROR) != ex::error::NONE) || stop() {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    fn follow(&self, next: ex::Next, stop: &dyn Fn() -> bool) -> bool {
        match next {
            ex::Next::Run(u) if u == self.t => true,
            ex::Next::Run(_) => self.wait_turn(stop),
            ex::Next::Stop => false,
        }
    }

    /// Before device op at `pc` whose step can run when `g` holds. False if
    /// the schedule broke (the device then runs free).
    pub fn point(&mut self, pc: u32, g: ex::Guard, stop: &dyn Fn() -> bool) -> bool {
        let site = ex::site::make(ex::site::DEVICE, pc, 0, 0);
        if !self.started {
            self.started = true;
            let arrive = || gmem::fetch_add_u64(self.m.0, ex::AREA + ex::ctl::ARRIVED, 1).unwrap_or(0);
            return match ex::at_start(&self.m, self.t, site, g, arrive) {
                Some(next) => self.follow(next, stop),
                None => self.wait_turn(stop),
            };
        }
        let next = ex::at_point(&self.m, self.t, site, g);
        self.follow(next, stop)
    }

    pub fn note(&self, obj: u16, write: bool) {
        ex::note(&self.m, self.t, obj, write);
    }

    pub fn finish(&self) {
        let _ = ex::at_finish(&self.m, self.t);
    }
}

// ---- the runner (`vmm explore`) ----------------------------------------------

use std::path::{Path, PathBuf};
use std::sync::Arc;

use litmus::explore_results::{self, ExploreRecord};
use litmus::{compile, herd_block, policy_matrix, CompileOptions, Policy, RunResult, Test};

use crate::error::{Error, Result};
use crate::litmus_run::{LitmusArgs, LitmusSession};
use crate::progress::Progress;
use crate::vstate::vm::{self, EndReason, VmConfig};

/// Iterations a witness is replayed for under `--check`.
pub const REPLAY_RUNS: u64 = 10;

/// `vmm explore` options.
#[derive(Clone, Debug)]
pub struct ExploreArgs {
    pub paths: Vec<PathBuf>,
    pub policies: Vec<String>,
    pub strategy: explore::Strategy,
    pub max_schedules: Option<u64>,
    pub shard: explore::Shard,
    pub seed: u64,
    pub check: bool,
    pub iteration_timeout: Duration,
    /// Where witnesses go (`--witness-dir`, default `witnesses`).
    pub witness_dir: PathBuf,
    pub json: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub force_progress: bool,
}

/// One (test, policy) search.
pub struct Searched {
    pub run: RunResult,
    /// `--check`: the witness's replay under `vmm litmus` (observation, e.g.
    /// `always 10/10`), and whether it showed the state on every iteration.
    pub replay: Option<(String, bool)>,
    pub error: Option<String>,
}

pub fn run(base: &VmConfig, args: &ExploreArgs) -> Result<i32> {
    let tests = crate::litmus_run::load(&args.paths)?;
    let mut cli_policies = Vec::new();
    for p in &args.policies {
        cli_policies.push(Policy::parse(p).map_err(|e| Error::Litmus(format!("--policy {p}: {e}")))?);
    }
    // The TLB models exploration relies on: deterministic.
    let overrides = Policy::parse("tlb=lazy,iotlb=lazy").map_err(|e| Error::Litmus(e.to_string()))?;
    let mut logs = args
        .log_dir
        .as_deref()
        .map(litmus::logdir::LogDir::create)
        .transpose()
        .map_err(|e| Error::Other(format!("--log-dir: {e}")))?;
    let mut worst = crate::status::OK;
    let mut done: Vec<(&Test, Searched)> = Vec::new();
    for test in &tests {
        for policy in policy_matrix(&cli_policies, &test.expect_policies(), &overrides) {
            let s = search(base, args, test, policy)?;
            let mut text = herd_block(test, &s.run);
            if let Some((obs, ok)) = &s.replay {
                text += &format!("Replay {obs}{}\n", if *ok { "" } else { " (expected the state on every iteration)" });
            }
            print!("{text}");
            if let Some(l) = &mut logs {
                l.append(&s.run.policy, &text).map_err(|e| Error::Other(format!("--log-dir: {e}")))?;
            }
            if let Some(e) = &s.error {
                println!("Error {} {e}", test.name);
                worst = worst.max(crate::status::GUEST_ERROR);
            }
            println!();
            done.push((test, s));
        }
    }
    let pairs: Vec<(&Test, &RunResult)> = done.iter().map(|(t, s)| (*t, &s.run)).collect();
    print!("{}", litmus::verdict_table(&pairs));
    if let Some(path) = &args.json {
        let runs = pairs.iter().map(|(t, r)| litmus::results_file::RunRecord::new(t, r)).collect();
        let shard = (args.shard != explore::Shard::ALL).then_some(litmus::results_file::ShardInfo {
            index: args.shard.index as u64,
            count: args.shard.count as u64,
        });
        let file = litmus::results_file::ResultsFile::explore(runs, shard, true);
        let text = serde_json::to_string_pretty(&file.to_json()).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(path, text + "\n").map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    }
    let replay_failed = done.iter().any(|(_, s)| s.replay.as_ref().is_some_and(|(_, ok)| !ok));
    if args.check && (litmus::any_mismatch(&pairs) || replay_failed) {
        worst = worst.max(crate::status::TESTS_FAILED);
    }
    Ok(worst)
}

/// A file-name-safe form of a policy: `kernel=v6.6,nested-range=full` →
/// `kernel-v6.6+nested-range-full`.
fn slug(policy: &str) -> String {
    let s: String = policy
        .chars()
        .map(|c| match c {
            '=' => '-',
            ',' => '+',
            c if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' => c,
            _ => '_',
        })
        .collect();
    if s.is_empty() {
        "default".into()
    } else {
        s
    }
}

/// Writes the witness of `test` under `policy` (litmus file and timeline);
/// returns their paths.
fn write_witness(
    dir: &Path,
    test: &Test,
    policy: &Policy,
    w: &explore::Witness<Vec<u64>>,
    seed: u64,
) -> std::result::Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let base = format!("{}--{}", test.name, slug(&policy.canonical_mm()));
    let name = format!("{}-witness", test.name);
    let doc = format!(
        "The schedule vmm explore found (seed {seed}, {} preemption(s), {} steps) forced with flags and hooks.",
        w.preemptions,
        w.steps.len()
    );
    let steps: Vec<litmus::witness::Step> =
        w.steps.iter().map(|s| litmus::witness::Step { thread: s.thread as usize, site: s.site }).collect();
    let names: Vec<String> = test.threads.iter().map(|t| t.name.clone()).collect();
    let timeline = explore::timeline::render(&names, &w.steps, |st| {
        litmus::linux_sites::describe(test, st.thread as usize, st.site)
    });
    let tl_path = dir.join(format!("{base}.timeline.txt"));
    let header = format!(
        "# {} under {} — a schedule with {} preemption(s) reaching the {} state (vmm explore, seed {seed})\n\n",
        test.name,
        policy.canonical_mm(),
        w.preemptions,
        match test.condition.kind {
            litmus::CondKind::Forbidden => "forbidden",
            litmus::CondKind::Exists => "`exists`",
        }
    );
    std::fs::write(&tl_path, header + &timeline).map_err(|e| format!("{}: {e}", tl_path.display()))?;
    let text = litmus::witness::forced_test(test, &steps, policy, &name, &doc).map_err(|e| e.to_string())?;
    let path = dir.join(format!("{base}.toml"));
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, tl_path))
}

/// Runs the witness file under `vmm litmus` for [`REPLAY_RUNS`] iterations.
fn replay(base: &VmConfig, args: &ExploreArgs, path: &Path, policy: Policy) -> Result<(String, bool)> {
    let tests = crate::litmus_run::load(&[path.to_path_buf()])?;
    let test = &tests[0];
    let largs = LitmusArgs {
        paths: vec![path.to_path_buf()],
        runs: REPLAY_RUNS,
        policies: vec![],
        json: None,
        log_dir: None,
        check: true,
        tlb: None,
        iotlb: None,
        pwc: None,
        seed: Some(args.seed),
        vcpus: None,
        iteration_timeout: args.iteration_timeout,
        trace: None,
        trace_runs: None,
        trace_ring: None,
        shard: None,
        baseline: None,
        force_progress: false,
        progress: Progress::hidden(),
        tap: false,
    };
    let pr = crate::litmus_run::run_policy(base, &largs, test, policy, args.seed, None)?;
    let s = pr.result.summary(test);
    let ok = s.matching == REPLAY_RUNS && pr.guest_error.is_none();
    Ok((
        format!("{} {}: {} {}/{}", path.display(), policy.canonical(), s.observation.name(), s.matching, REPLAY_RUNS),
        ok,
    ))
}

fn search(base: &VmConfig, args: &ExploreArgs, test: &Test, policy: Policy) -> Result<Searched> {
    let started = Instant::now();
    let opts = CompileOptions { seed: args.seed, iterations: 1, iteration_timeout_ms: 0 };
    let compiled = compile(test, &policy, &opts);
    let nthreads = test.threads.len();
    let nvcpu = test.vcpu_threads();
    if nthreads > ex::MAX_THREADS {
        return Err(Error::Litmus(format!("{}: explore handles at most {} threads", test.name, ex::MAX_THREADS)));
    }
    let cfg = explore::Config {
        strategy: args.strategy.clone(),
        seed: args.seed,
        max_schedules: args.max_schedules,
        shard: args.shard,
        split_depth: explore::DEFAULT_SPLIT_DEPTH,
        max_steps: ex::MAX_STEPS,
    };
    let explorer = Explorer::new(&cfg, nthreads).map_err(|e| Error::Other(e.to_string()))?;
    let cond = test.condition.expr.clone();
    let session = Arc::new(ExploreSession::new(explorer, nthreads, nvcpu, Box::new(move |v| cond.eval(v))));
    let mut ls = LitmusSession::new(compiled.blob.clone(), nvcpu, test.device_threads(), args.iteration_timeout);
    ls.explore = Some(session.clone());
    let progress = Progress::new(args.max_schedules.unwrap_or(0), "schedules", args.force_progress);
    progress.set_message(format!("{} [{}]", test.name, policy.canonical_mm()));
    ls.set_progress(progress.clone());
    let ls = Arc::new(ls);
    let mut iommu = iommu::IommuConfig { seed: args.seed, ..base.iommu };
    for key in [litmus::Key::Iotlb, litmus::Key::Pwc] {
        let v = policy.get(key);
        iommu.set_policy(key.name(), &v).map_err(|e| Error::Litmus(format!("{}={v}: {e}", key.name())))?;
    }
    let mut boots = 0;
    let mut error = None;
    loop {
        boots += 1;
        let cfg = VmConfig {
            vcpus: (nvcpu as u64).max(1),
            cmdline: "mode=litmus litmus.first=0 litmus.explore=1".into(),
            quiet: true,
            tlb: crate::shadow::TlbModel::parse(&policy.get(litmus::Key::Tlb)).map_err(Error::Other)?,
            seed: args.seed,
            iommu,
            litmus: Some(ls.clone()),
            trace: None,
            ..base.clone()
        };
        ls.restart_clock();
        let out = vm::run(&cfg)?;
        let _ = ls.drain_reports();
        if let Some(e) = session.error() {
            error = Some(e);
            break;
        }
        match out.end {
            EndReason::GuestExit(abi::exit::SUCCESS) if session.is_done() => break,
            EndReason::IterationTimeout => {
                // A schedule that never ends (a deadlock the test allows):
                // recorded as `timeout`; the search goes on in a new boot.
                let log = ls.take_explore_log();
                if let Err(e) = session.timed_out(test.observed.len(), log) {
                    error = Some(e);
                    break;
                }
            }
            EndReason::GuestExit(s) => {
                error = Some(format!("guest exited with status {s} during the search"));
                break;
            }
            EndReason::GuestError { vcpu, rip, cause } => {
                error = Some(format!("guest error on vCPU {vcpu} at RIP {rip:#x}: {cause}"));
                break;
            }
            EndReason::Timeout { .. } => {
                error = Some("watchdog: the guest did not finish".into());
                break;
            }
        }
    }
    progress.finish();
    let result = session.result();
    let mut run = RunResult::new(test, policy, args.seed, explore_results::requested(&result));
    for (state, n) in &result.histogram {
        run.record_n(state, *n).map_err(|e| Error::Other(e.to_string()))?;
    }
    run.n_timeouts =
        result.histogram.iter().filter(|(s, _)| s.contains(&abi::litmus::VALUE_TIMEOUT)).map(|(_, n)| n).sum();
    let mut record =
        ExploreRecord { search: result, witness_file: None, timeline_file: None, points: session.points(), boots };
    let mut replayed = None;
    if let Some(w) = record.search.witness.clone() {
        match write_witness(&args.witness_dir, test, &policy, &w, args.seed) {
            Ok((file, tl)) => {
                record.witness_file = Some(file.display().to_string());
                record.timeline_file = Some(tl.display().to_string());
                if args.check {
                    replayed = Some(replay(base, args, &file, policy)?);
                }
            }
            Err(e) => {
                let e = format!("the witness could not be written as a litmus file: {e}");
                error = Some(error.map_or(e.clone(), |x| format!("{x}; {e}")));
                if args.check {
                    replayed = Some(("(none)".into(), false));
                }
            }
        }
    }
    run.time_secs = started.elapsed().as_secs_f64();
    run.explore = Some(record);
    Ok(Searched { run, replay: replayed, error })
}
