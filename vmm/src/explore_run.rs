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

use std::path::PathBuf;
use std::sync::Arc;

use litmus::{compile, herd_block, policy_matrix, CompileOptions, Policy, RunResult, Test};

use crate::error::{Error, Result};
use crate::litmus_run::LitmusSession;
use crate::vstate::vm::{self, EndReason, VmConfig};

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
}

/// One (test, policy) search.
pub struct Searched {
    pub result: explore::ExploreResult<Vec<u64>>,
    pub run: RunResult,
    pub secs: f64,
    pub points: u64,
    pub boots: u64,
    pub error: Option<String>,
}

pub fn run(base: &VmConfig, args: &ExploreArgs) -> Result<i32> {
    let tests = crate::litmus_run::load(&args.paths)?;
    let mut cli_policies = Vec::new();
    for p in &args.policies {
        cli_policies.push(Policy::parse(p).map_err(|e| Error::Litmus(format!("--policy {p}: {e}")))?);
    }
    let overrides = Policy::parse("tlb=lazy").map_err(|e| Error::Litmus(e.to_string()))?;
    let mut worst = crate::status::OK;
    let mut pairs = Vec::new();
    for test in &tests {
        for policy in policy_matrix(&cli_policies, &test.expect_policies(), &overrides) {
            let s = search(base, args, test, policy)?;
            print!("{}", block(test, &s));
            if let Some(e) = &s.error {
                println!("Error {} {e}", test.name);
                worst = worst.max(crate::status::GUEST_ERROR);
            }
            println!();
            pairs.push((test, s));
        }
    }
    let refs: Vec<(&Test, &RunResult)> = pairs.iter().map(|(t, s)| (*t, &s.run)).collect();
    print!("{}", litmus::verdict_table(&refs));
    if args.check && litmus::any_mismatch(&refs) {
        worst = worst.max(crate::status::TESTS_FAILED);
    }
    Ok(worst)
}

fn block(test: &Test, s: &Searched) -> String {
    let text = herd_block(test, &s.run);
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        out.push_str(line);
        out.push('\n');
        if i == 1 {
            let (k, how) = match &s.result.strategy {
                explore::Strategy::Bounded { preemptions, .. } => {
                    (preemptions.map_or("unbounded".into(), |k| k.to_string()), "preemptions")
                }
                explore::Strategy::Pct { depth, .. } => (depth.to_string(), "pct"),
            };
            out.push_str(&format!(
                "Explore {how}={k} schedules={} {}\n",
                s.result.schedules,
                if s.result.complete { "complete" } else { "limit" }
            ));
        }
    }
    out.push_str(&format!(
        "Search {} schedules in {:.2} s ({:.1}/s), {} points, {} redundant, {} boots\n",
        s.result.schedules,
        s.secs,
        s.result.schedules as f64 / s.secs.max(1e-9),
        s.points,
        s.result.redundant,
        s.boots
    ));
    if let Some(w) = &s.result.witness {
        out.push_str(&format!("Witness preemptions={} steps={}\n", w.preemptions, w.steps.len()));
        let names: Vec<String> = (0..s.result_threads(test)).map(|t| test.threads[t].name.clone()).collect();
        out.push_str(&explore::timeline::render(&names, &w.steps, |st| site_text(test, st)));
    }
    out
}

impl Searched {
    fn result_threads(&self, test: &Test) -> usize {
        test.threads.len()
    }
}

/// A step's text for timelines (prototype: the site).
fn site_text(test: &Test, st: &StepRecord) -> String {
    let t = &test.threads[st.thread as usize];
    let pc = ex::site::pc(st.site);
    let stmt = crate::explore_run::stmt_at(t, pc).unwrap_or_default();
    match ex::site::kind(st.site) {
        ex::site::INSTR | ex::site::DEVICE => stmt,
        ex::site::HOOK => {
            let h = abi::litmus::Hook::from_u8(ex::site::sub(st.site)).map_or("?", |h| h.name());
            format!("  {h}#{}", ex::site::nth(st.site))
        }
        ex::site::LOCK => format!("  lock kind {} #{}", ex::site::sub(st.site), ex::site::nth(st.site)),
        ex::site::WAIT => "  (wait)".into(),
        _ => "?".into(),
    }
}

/// The statement at thread-relative record `pc` (pre-order over loops and hook groups).
pub fn stmt_at(t: &litmus::Thread, pc: u32) -> Option<String> {
    let mut flat = Vec::new();
    fn walk<'a>(code: &'a [litmus::Stmt], out: &mut Vec<&'a litmus::Stmt>) {
        for s in code {
            out.push(s);
            for h in &s.hooks {
                out.push(s); // the `at` record
                walk(&h.body, out);
            }
            walk(&s.body, out);
        }
    }
    walk(&t.code, &mut flat);
    flat.get(pc as usize).map(|s| s.to_string().split(" at ").next().unwrap_or("").to_string())
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
            vcpus: base.vcpus.max(nvcpu as u64).max(1),
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
                let log = ls.take_explore_log();
                if std::env::var_os("SHOOTDOWN_EXPLORE_DEBUG").is_some() {
                    eprintln!("timeout: stall {:?}", ls.take_stall());
                    for (i, st) in log.iter().enumerate() {
                        eprintln!(
                            "  {i}: t{} en={:#x} {} {}",
                            st.thread,
                            st.enabled,
                            st.footprint,
                            site_text(test, st)
                        );
                    }
                }
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
    let result = session.result();
    let mut run = RunResult::new(test, policy, args.seed, result.schedules + u64::from(!result.complete));
    for (state, n) in &result.histogram {
        run.record_n(state, *n).map_err(|e| Error::Other(e.to_string()))?;
    }
    let secs = started.elapsed().as_secs_f64();
    run.time_secs = secs;
    Ok(Searched { points: session.points(), result, run, secs, boots, error })
}
