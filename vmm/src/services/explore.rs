//! The search of one (test, policy) under `vmm explore`: the `explore`
//! engine decides, the guest's threads and the DMA engine's device threads
//! follow its plans through the turn protocol of `abi::explore`.
//!
//! One boot runs many schedules: after each iteration the guest asks for
//! the next plan (`EXPLORE_NEXT`); the session reads the finished
//! schedule's log from the explore area, takes the iteration's values from
//! the litmus session (`LITMUS_RESULT`), hands both to the explorer and
//! writes the next plan. A schedule that never ends (a deadlock the test
//! allows) is ended by the litmus session's stall watch; the log it left is
//! read when the boot finishes, and the next boot asks for the next plan.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use abi::explore::{self as ex, object, Shared};
use abi::hypercall::calls::{ExploreNext, ExploreNextReply};
use abi::hypercall::{Flag, Op, EXPLORE_PARK_PORT};
use abi::litmus::VALUE_TIMEOUT;
use explore::{ExploreResult, Explorer, Footprint, Object, Plan, Rule, StepRecord};
use vm_memory::GuestMemoryMmap;

use crate::devices::explore::{GuestShared, ParkPort};
use crate::services::litmus::LitmusSession;
use crate::vstate::{Call, EndReason, GuestFault, HypercallHandler, Reply, Service, SetupError, VcpuCtx, VmSetup};

/// Whether a final state (the observed values) is the one searched for.
pub type Violating = Box<dyn Fn(&[u64]) -> bool + Send + Sync>;

/// A guest footprint object as an engine object.
pub fn engine_object(o: u16) -> Object {
    Object(o as u64)
}

/// The explore area's log (after an iteration) as engine steps.
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
pub fn write_plan(m: &impl Shared, plan: &Plan, nthreads: usize, nvcpu: usize) -> Result<(), String> {
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

/// The search of one (test, policy), across the boots it takes.
pub struct ExploreSession {
    inner: Mutex<Inner>,
    /// Park-port exits of waiting vCPUs, all boots.
    parks: Arc<AtomicU64>,
    nthreads: usize,
    nvcpu: usize,
    arity: usize,
    litmus: Arc<LitmusSession>,
    violating: Violating,
}

struct Inner {
    explorer: Explorer<Vec<u64>>,
    outstanding: Option<Plan>,
    error: Option<String>,
    done: bool,
    /// Scheduling points of every schedule run.
    points: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ExploreSession {
    pub fn new(
        explorer: Explorer<Vec<u64>>,
        nthreads: usize,
        nvcpu: usize,
        arity: usize,
        litmus: Arc<LitmusSession>,
        violating: Violating,
    ) -> Arc<Self> {
        Arc::new(ExploreSession {
            inner: Mutex::new(Inner { explorer, outstanding: None, error: None, done: false, points: 0 }),
            parks: Arc::new(AtomicU64::new(0)),
            nthreads,
            nvcpu,
            arity,
            litmus,
            violating,
        })
    }

    /// The service of one boot.
    pub fn boot(self: &Arc<Self>, mem_slot: Arc<Mutex<Option<GuestMemoryMmap>>>) -> Arc<ExploreBoot> {
        Arc::new(ExploreBoot { session: self.clone(), mem: mem_slot })
    }

    fn fail(g: &mut Inner, e: String) -> String {
        g.error = Some(e.clone());
        e
    }

    /// Hands the finished schedule to the explorer: its log, and the values
    /// it reported (`None`: it never finished — recorded as `timeout`).
    fn close(&self, g: &mut Inner, m: &impl Shared, values: Option<Vec<u64>>) -> Result<(), String> {
        let Some(plan) = g.outstanding.take() else { return Ok(()) };
        let steps = read_log(m);
        g.points += steps.len() as u64;
        let values = match m.load(ex::AREA + ex::ctl::ERROR) {
            ex::error::DIVERGED => {
                return Err(Self::fail(
                    g,
                    "a replayed schedule diverged: the guest is not deterministic under it".into(),
                ))
            }
            ex::error::LOG_FULL => {
                return Err(Self::fail(g, format!("a schedule took more than {} steps", ex::MAX_STEPS)))
            }
            _ => values.filter(|v| v.len() == self.arity).unwrap_or_else(|| vec![VALUE_TIMEOUT; self.arity]),
        };
        let violating = !values.contains(&VALUE_TIMEOUT) && (self.violating)(&values);
        g.explorer.report(&plan, &steps, &values, violating).map_err(|e| Self::fail(g, e.to_string()))
    }

    /// `EXPLORE_NEXT`: close the previous schedule, write the next plan.
    fn next(&self, mem: &GuestMemoryMmap) -> Result<bool, String> {
        let m = GuestShared(mem);
        let mut g = lock(&self.inner);
        if g.outstanding.is_some() {
            let values = self.litmus.take_reports().pop().map(|r| r.values);
            self.close(&mut g, &m, values)?;
        }
        match g.explorer.next_plan() {
            Some(plan) => {
                write_plan(&m, &plan, self.nthreads, self.nvcpu).map_err(|e| Self::fail(&mut g, e))?;
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

    /// The boot ended with a schedule still running (the stall watch
    /// stopped it): record it as `timeout`.
    fn abandon(&self, mem: &GuestMemoryMmap) {
        let mut g = lock(&self.inner);
        let m = GuestShared(mem);
        let _ = self.close(&mut g, &m, None);
    }

    pub fn is_done(&self) -> bool {
        lock(&self.inner).done
    }

    pub fn error(&self) -> Option<String> {
        lock(&self.inner).error.clone()
    }

    pub fn result(&self) -> ExploreResult<Vec<u64>> {
        lock(&self.inner).explorer.result().clone()
    }

    pub fn points(&self) -> u64 {
        lock(&self.inner).points
    }

    /// Exits of waiting vCPUs (park-port writes).
    pub fn parks(&self) -> u64 {
        self.parks.load(Ordering::Relaxed)
    }
}

/// One boot of a search: `EXPLORE_NEXT` and the park port.
pub struct ExploreBoot {
    session: Arc<ExploreSession>,
    /// This boot's guest memory, kept to read an unfinished schedule's log
    /// after the boot.
    mem: Arc<Mutex<Option<GuestMemoryMmap>>>,
}

impl Service for ExploreBoot {
    fn name(&self) -> &'static str {
        "explore"
    }

    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError> {
        *lock(&self.mem) = Some(vm.mem.clone());
        vm.add_pio(EXPLORE_PARK_PORT, 4, Arc::new(ParkPort(self.session.parks.clone())))?;
        vm.add_hypercalls(self)
    }

    fn finished(&self, _: &EndReason) {
        if let Some(mem) = lock(&self.mem).take() {
            if lock(&self.session.inner).outstanding.is_some() && self.session.error().is_none() {
                self.session.abandon(&mem);
            }
        }
    }
}

impl HypercallHandler for ExploreBoot {
    fn name(&self) -> &'static str {
        "explore"
    }
    fn ops(&self) -> &'static [Op] {
        &[Op::ExploreNext]
    }
    fn handle(&self, ctx: &mut VcpuCtx<'_>, call: &Call<'_>) -> Result<Reply, GuestFault> {
        call.request::<ExploreNext>()?;
        // An error ends the search: the guest is told there is no more,
        // and the command reports why.
        let more = self.session.next(ctx.mem).unwrap_or(false);
        Ok(Reply::of::<ExploreNext>(ExploreNextReply { more: Flag::new(more) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::test_memory;
    use abi::explore::{guard, Guard, Next};
    use abi::rng::SplitMix64;
    use explore::{Config, Reduction, Strategy};

    /// A word per thread whose value says whether the thread may run.
    fn flag(t: u64) -> u64 {
        abi::layout::LITMUS_VARS + 8 * t
    }

    fn guard_of(t: u64) -> Guard {
        Guard { kind: guard::EQ, addr: flag(t), value: 1, object: object::VAR + t as u16 }
    }

    /// Runs `plan` through the guest's side of the protocol (the code the
    /// guest and the DMA engine run), with `n` threads of `len` steps that
    /// block and unblock at random; returns the log and the masks it saw.
    fn simulate(plan: &Plan, n: usize, len: u64, seed: u64) -> (Vec<StepRecord>, Vec<u64>) {
        let mem = test_memory();
        let m = GuestShared(&mem);
        write_plan(&m, plan, n, n).unwrap();
        let mut s = seed;
        let mut left = vec![len; n];
        for t in 0..n as u64 {
            m.store(flag(t), 1);
        }
        let mut next_thread = None;
        for t in 0..n as u64 {
            let arrive = || {
                let a = m.load(ex::AREA + ex::ctl::ARRIVED);
                m.store(ex::AREA + ex::ctl::ARRIVED, a + 1);
                a
            };
            if let Some(nx) = ex::at_start(&m, t, ex::site::make(ex::site::INSTR, 0, 0, 0), guard_of(t), arrive) {
                next_thread = Some(nx);
            }
        }
        // The first record was opened with everyone enabled.
        let mut masks = vec![(1u64 << n) - 1];
        let mut cur = match next_thread.unwrap() {
            Next::Run(t) => t,
            Next::Stop => panic!("nothing ran"),
        };
        loop {
            // The world depends on the choices so far only (a replayed
            // prefix sees the same world): the step touches a word, then
            // threads block and unblock.
            s = s.wrapping_mul(0x100_0000_01b3).wrapping_add(cur + 1);
            let mut rng = SplitMix64::new(s);
            ex::note(&m, cur, object::VAR + 8, rng.next_u64().is_multiple_of(2));
            left[cur as usize] -= 1;
            // Random blocking, but someone unfinished stays enabled.
            let live: Vec<u64> = (0..n as u64).filter(|&t| left[t as usize] > 0).collect();
            for &t in &live {
                m.store(flag(t), u64::from(!rng.next_u64().is_multiple_of(3)));
            }
            if let Some(&t) = live.get((rng.next_u64() % live.len().max(1) as u64) as usize) {
                m.store(flag(t), 1);
            }
            let step = m.load(ex::AREA + ex::ctl::STEPS);
            let r = if left[cur as usize] == 0 {
                ex::at_finish(&m, cur)
            } else {
                ex::at_point(
                    &m,
                    cur,
                    ex::site::make(ex::site::INSTR, (len - left[cur as usize]) as u32, 0, 0),
                    guard_of(cur),
                )
            };
            let en = (0..n as u64).filter(|&t| left[t as usize] > 0 && m.load(flag(t)) == 1).fold(0, |a, t| a | 1 << t);
            if m.load(ex::AREA + ex::ctl::STEPS) > step {
                masks.push(en);
            }
            match r {
                Next::Run(t) => cur = t,
                Next::Stop => break,
            }
        }
        assert_eq!(m.load(ex::AREA + ex::ctl::ERROR), ex::error::NONE);
        (read_log(&m), masks)
    }

    /// The protocol's choices are the engine's: every schedule the engine
    /// plans (systematic and PCT), run through `abi::explore`, gives a log
    /// the engine accepts, whose every choice is the one `explore::Chooser`
    /// makes for that enabled set.
    #[test]
    fn the_guest_protocol_makes_the_engines_choices() {
        for (i, strategy) in [
            Strategy::Bounded { preemptions: Some(2), reduction: Reduction::None },
            Strategy::Bounded { preemptions: Some(1), reduction: Reduction::SleepSets },
            Strategy::Pct { depth: 3, runs: 30 },
        ]
        .into_iter()
        .enumerate()
        {
            let n = 3;
            let mut cfg = Config::new(strategy);
            cfg.seed = 11 + i as u64;
            cfg.max_schedules = Some(60);
            let mut ex: Explorer<Vec<u64>> = Explorer::new(&cfg, n).unwrap();
            let mut runs = 0;
            while let Some(plan) = ex.next_plan() {
                let (steps, masks) = simulate(&plan, n, 4, 7 + i as u64);
                let mut ch = plan.chooser();
                for (k, st) in steps.iter().enumerate() {
                    assert_eq!(st.enabled, masks[k], "step {k}: the log's enabled set");
                    assert_eq!(ch.next(st.enabled).unwrap(), Some(st.thread), "step {k} of {plan:?}");
                }
                ex.report(&plan, &steps, &vec![runs], false).unwrap();
                runs += 1;
            }
            assert!(runs > 5, "{runs}");
        }
    }

    /// A log record carries the step's footprint (variables, the mm, or
    /// everything when it touched too many) and what blocked threads wait for.
    #[test]
    fn read_log_turns_records_into_steps() {
        let mem = test_memory();
        let m = GuestShared(&mem);
        let plan = Plan { prefix: vec![], priority: vec![0, 1, 2], rule: Rule::NonPreemptive };
        write_plan(&m, &plan, 3, 2).unwrap();
        m.store(flag(1), 0); // thread 1 waits on its flag
        m.store(flag(0), 1);
        for t in 0..3u64 {
            let arrive = || {
                let a = m.load(ex::AREA + ex::ctl::ARRIVED);
                m.store(ex::AREA + ex::ctl::ARRIVED, a + 1);
                a
            };
            let g = if t == 1 { guard_of(1) } else { Guard::NONE };
            ex::at_start(&m, t, ex::site::make(ex::site::INSTR, 0, 0, 0), g, arrive);
        }
        assert_eq!(m.load(ex::AREA + ex::ctl::TURN), 0);
        ex::note(&m, 0, object::MEM, false);
        ex::note(&m, 0, object::VAR + 3, true);
        ex::note(&m, 0, object::VAR + 3, false);
        assert_eq!(ex::at_point(&m, 0, ex::site::make(ex::site::HOOK, 1, 6, 1), Guard::NONE), Next::Run(0));
        for v in 0..10 {
            ex::note(&m, 0, object::VAR + v, false);
        }
        assert_eq!(ex::at_finish(&m, 0), Next::Run(2));
        assert_eq!(ex::at_finish(&m, 2), Next::Stop);
        assert_eq!(m.load(ex::AREA + ex::ctl::ERROR), ex::error::DEADLOCK, "thread 1 never got its flag");
        let steps = read_log(&m);
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].thread, 0);
        assert_eq!(steps[0].enabled, 0b101);
        assert_eq!(
            steps[0].footprint,
            Footprint::empty().with(engine_object(object::MEM), false).with(engine_object(object::VAR + 3), true)
        );
        assert_eq!(steps[0].blocked, vec![(1, Footprint::read(engine_object(object::VAR + 1)))]);
        assert_eq!(steps[1].site, ex::site::make(ex::site::HOOK, 1, 6, 1));
        assert!(steps[1].footprint.accesses().iter().any(|a| a.object == Object::ALL && a.write), "overflow");
        assert_eq!(steps[2].thread, 2);
    }
}
