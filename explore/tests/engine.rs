//! The engine against brute force on toy programs: without reduction it
//! runs exactly the schedules within the bound; with sleep sets it keeps
//! every reachable final state, each state's fewest preemptions and the
//! witness; shards merge into the single-machine result; PCT keeps its
//! probability bound.

use std::collections::BTreeMap;

use explore::toy::{self, brute_force, Expr, Instr, Machine, Outcome, Program};
use explore::{
    execute, merge, preemptions, priority_order, Config, ExploreError, ExploreResult, Explorer, Footprint, Object,
    Reduction, Shard, Strategy, ThreadId,
};
use proptest::prelude::*;
use proptest::strategy::Strategy as PropStrategy;

/// Runs a search by hand, also collecting every counted schedule's
/// (outcome, preemptions) and thread sequence.
struct Run {
    result: ExploreResult<Outcome>,
    min_pre: BTreeMap<Outcome, u32>,
    schedules: Vec<Vec<ThreadId>>,
}

fn run(prog: &Program, cfg: &Config, violating: &dyn Fn(&Outcome) -> bool) -> Run {
    let mut m = Machine::new(prog);
    let mut ex: Explorer<Outcome> = Explorer::new(cfg, prog.threads.len()).unwrap();
    let mut min_pre = BTreeMap::new();
    let mut schedules = Vec::new();
    while let Some(plan) = ex.next_plan() {
        let (steps, o) = execute(&mut m, &plan, cfg.max_steps).unwrap();
        let before = ex.result().schedules;
        ex.report(&plan, &steps, &o, violating(&o)).unwrap();
        if ex.result().schedules > before {
            let p = preemptions(&steps);
            let e = min_pre.entry(o).or_insert(p);
            *e = (*e).min(p);
            schedules.push(steps.iter().map(|s| s.thread).collect());
        }
    }
    Run { result: ex.into_result(), min_pre, schedules }
}

fn bounded(k: Option<u32>, reduction: Reduction, seed: u64) -> Config {
    let mut c = Config::new(Strategy::Bounded { preemptions: k, reduction });
    c.seed = seed;
    c
}

fn witness_path(r: &ExploreResult<Outcome>) -> Option<(u32, Vec<ThreadId>)> {
    r.witness.as_ref().map(|w| (w.preemptions, w.steps.iter().map(|s| s.thread).collect()))
}

/// The checks every program gets.
fn check_against_brute_force(prog: &Program, k: Option<u32>, seed: u64, violating: &dyn Fn(&Outcome) -> bool) {
    let prio = priority_order(prog.threads.len(), seed);
    let bf = brute_force(prog, k, &prio, violating);
    let bf_min: BTreeMap<Outcome, u32> = bf.states.iter().map(|(o, &(_, p))| (o.clone(), p)).collect();

    // No reduction: exactly the brute-force schedules, each once.
    let plain = run(prog, &bounded(k, Reduction::None, seed), violating);
    assert!(plain.result.complete);
    assert_eq!(plain.result.schedules, bf.schedules, "{prog:?}");
    let mut distinct = plain.schedules.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), plain.schedules.len(), "a schedule ran twice");
    let counts: BTreeMap<Outcome, u64> = bf.states.iter().map(|(o, &(n, _))| (o.clone(), n)).collect();
    assert_eq!(plain.result.histogram, counts);
    assert_eq!(plain.min_pre, bf_min);
    assert_eq!(witness_path(&plain.result), bf.witness);

    // Sleep sets: fewer schedules, same states, same fewest preemptions per
    // state, same witness.
    let reduced = run(prog, &bounded(k, Reduction::SleepSets, seed), violating);
    assert!(reduced.result.complete);
    assert!(reduced.result.schedules <= bf.schedules);
    assert_eq!(reduced.min_pre, bf_min, "{prog:?} k={k:?} seed={seed}");
    assert_eq!(witness_path(&reduced.result), bf.witness, "{prog:?} k={k:?}");

    // Shards of either search merge into the single-machine result.
    for reduction in [Reduction::None, Reduction::SleepSets] {
        let single = if reduction == Reduction::None { &plain.result } else { &reduced.result };
        for n in [2, 3] {
            for split in [0, 1, 3] {
                let parts: Vec<_> = (1..=n)
                    .map(|i| {
                        let mut c = bounded(k, reduction, seed);
                        c.shard = Shard::new(i, n).unwrap();
                        c.split_depth = split;
                        run(prog, &c, violating).result
                    })
                    .collect();
                let mut whole = bounded(k, reduction, seed);
                whole.split_depth = split;
                let one = run(prog, &whole, violating).result;
                assert_eq!((one.schedules, &one.histogram), (single.schedules, &single.histogram));
                let m = merge(parts).unwrap();
                assert_eq!(m.schedules, one.schedules, "shards {n} split {split}");
                assert_eq!(m.histogram, one.histogram);
                assert_eq!(m.by_preemptions, one.by_preemptions);
                assert_eq!(m.redundant, one.redundant);
                assert_eq!(witness_path(&m), witness_path(&one));
                assert!(m.complete);
            }
        }
    }
}

const LOST_UPDATE: &str = "x=0\nT0: r0=x; x=r0+1\nT1: r0=x; x=r0+1\n";

#[test]
fn lost_update_needs_one_preemption() {
    let p = Program::parse(LOST_UPDATE).unwrap();
    let bad = |o: &Outcome| o.var(&p, "x") == Some(1);
    let r = toy::search(&p, &bounded(Some(0), Reduction::SleepSets, 0), bad).unwrap();
    assert!(r.complete && r.witness.is_none());
    let r = toy::search(&p, &bounded(Some(1), Reduction::SleepSets, 0), bad).unwrap();
    assert_eq!(r.witness.as_ref().map(|w| w.preemptions), Some(1));
    for k in [Some(0), Some(1), Some(2), None] {
        for seed in 0..3 {
            check_against_brute_force(&p, k, seed, &bad);
        }
    }
}

#[test]
fn classic_programs() {
    let progs = [
        // Message passing with a flag, and a reader that may see stale data.
        "d=0 f=0\nT0: d=1; f=1\nT1: wait f==1; r0=d\nT2: d=2; nop; r1=d\n",
        // Two locks taken in opposite orders: a deadlock within one preemption.
        "x=0\nT0: lock a; lock b; x+=1; unlock b; unlock a\nT1: lock b; lock a; x+=2; unlock a; unlock b\n",
        // Independent threads: the reduction should leave one schedule per
        // equivalence class.
        "x=0 y=0 z=0\nT0: x=1; r0=x; x=2\nT1: y=1; r0=y; y=2\nT2: z=1; r0=z; z=2\n",
        // A lock-protected counter and an unprotected reader.
        "c=0\nT0: lock l; r0=c; c=r0+1; unlock l\nT1: lock l; r0=c; c=r0+1; unlock l\nT2: r0=c; r1=c\n",
    ];
    for src in progs {
        let p = Program::parse(src).unwrap();
        let bad = |o: &Outcome| o.deadlock || o.regs.iter().any(|r| r[0] == 1 && r[1] == 0);
        for k in [Some(0), Some(1), Some(2)] {
            check_against_brute_force(&p, k, 7, &bad);
        }
    }
}

/// Found by comparing with brute force: T1's pending `unlock a` commutes
/// with T2's two steps, but running it first enables T2's `lock a`, so the
/// free switch back to T1 in the pruned schedule would be a preemption in
/// the reordered one. The entry must wake when a blocked thread's guard
/// conflicts with it.
#[test]
fn a_sleeping_step_that_would_wake_a_blocked_thread_stays_awake() {
    let p = Program::parse(
        "v=0\n\
         T0: lock a; r0=v; v=r0+1; unlock a\n\
         T1: lock a; r0=v; v=r0+1; unlock a; r0=v\n\
         T2: r0=v; v=0; lock a; r0=v; v=r0+1; unlock a\n",
    )
    .unwrap();
    let target = |o: &Outcome| o.vars[0] == 2 && o.regs[0][0] == 0 && o.regs[1][0] == 0 && o.regs[2][0] == 1;
    let r = toy::search(&p, &bounded(Some(1), Reduction::SleepSets, 0), target).unwrap();
    assert_eq!(r.witness.map(|w| w.preemptions), Some(1));
    check_against_brute_force(&p, Some(1), 0, &target);
}

#[test]
fn the_reduction_prunes_independent_interleavings() {
    let p = Program::parse("x=0 y=0 z=0\nT0: x=1; r0=x; x=2\nT1: y=1; r0=y; y=2\nT2: z=1; r0=z; z=2\n").unwrap();
    let all = run(&p, &bounded(Some(2), Reduction::None, 0), &|_| false).result;
    let reduced = run(&p, &bounded(Some(2), Reduction::SleepSets, 0), &|_| false).result;
    assert_eq!(all.histogram.len(), 1);
    assert_eq!(reduced.histogram.len(), 1);
    // Every preemption here is pointless; only the free choices between
    // finished threads remain (3! orders of whole threads).
    assert_eq!(reduced.schedules - reduced.redundant, 6, "{reduced:?}");
    assert!(all.schedules >= 3 * reduced.schedules, "{} vs {}", all.schedules, reduced.schedules);
    // Without a bound the same rule applies: still the 3! orders.
    let unb = run(&p, &bounded(None, Reduction::SleepSets, 0), &|_| false).result;
    assert_eq!(unb.schedules - unb.redundant, 6);
}

#[test]
fn same_seed_same_search() {
    let p = Program::parse("x=0 y=0\nT0: x=1; r0=y\nT1: y=1; r0=x\nT2: x+=1; y+=1\n").unwrap();
    let bad = |o: &Outcome| o.regs[0][0] == 0 && o.regs[1][0] == 0;
    let a = toy::search(&p, &bounded(Some(2), Reduction::SleepSets, 42), bad).unwrap();
    let b = toy::search(&p, &bounded(Some(2), Reduction::SleepSets, 42), bad).unwrap();
    assert_eq!(a, b);
    // Another seed explores in another order but finds the same states.
    let c = toy::search(&p, &bounded(Some(2), Reduction::SleepSets, 43), bad).unwrap();
    assert_eq!(a.histogram.keys().collect::<Vec<_>>(), c.histogram.keys().collect::<Vec<_>>());
}

#[test]
fn max_schedules_stops_with_limit() {
    let p = Program::parse(LOST_UPDATE).unwrap();
    let mut cfg = bounded(Some(2), Reduction::None, 0);
    cfg.max_schedules = Some(3);
    let r = toy::search(&p, &cfg, |_| false).unwrap();
    assert_eq!((r.schedules, r.complete), (3, false));
    // A cap the search never reaches leaves it complete.
    cfg.max_schedules = Some(1000);
    let r = toy::search(&p, &cfg, |_| false).unwrap();
    assert!(r.complete);
    let all = r.schedules;
    cfg.max_schedules = Some(all);
    let r = toy::search(&p, &cfg, |_| false).unwrap();
    assert!(r.complete, "exactly as many as the tree holds is complete");
}

/// A program whose second run differs from its first.
struct Flaky {
    runs: u32,
    pc: [u32; 2],
}

impl explore::Program for Flaky {
    type Outcome = u32;
    fn threads(&self) -> usize {
        2
    }
    fn reset(&mut self) {
        self.runs += 1;
        self.pc = [0; 2];
    }
    fn enabled(&self) -> u64 {
        (self.pc[0] < 2) as u64 | ((self.pc[1] < 2) as u64) << 1
    }
    fn guard(&self, _: ThreadId) -> Option<Footprint> {
        None
    }
    fn site(&self, t: ThreadId) -> u64 {
        self.pc[t as usize] as u64
    }
    fn step(&mut self, t: ThreadId) -> Footprint {
        self.pc[t as usize] += 1;
        if self.runs > 1 {
            Footprint::write(Object(7))
        } else {
            Footprint::read(Object(7))
        }
    }
    fn outcome(&self) -> u32 {
        0
    }
}

#[test]
fn nondeterminism_is_reported() {
    let mut f = Flaky { runs: 0, pc: [0; 2] };
    let err = explore::search(&mut f, &bounded(Some(2), Reduction::None, 0), |_| false).unwrap_err();
    assert!(matches!(err, ExploreError::Nondeterministic { .. }), "{err}");
}

#[test]
fn a_program_that_ignores_its_plan_is_reported() {
    let p = Program::parse(LOST_UPDATE).unwrap();
    let mut ex: Explorer<Outcome> = Explorer::new(&bounded(Some(1), Reduction::None, 0), 2).unwrap();
    let plan = ex.next_plan().unwrap();
    let mut m = Machine::new(&p);
    let (mut steps, o) = execute(&mut m, &plan, 100).unwrap();
    // Claim the other thread ran first.
    steps[0].thread ^= 1;
    let err = ex.report(&plan, &steps, &o, false).unwrap_err();
    assert!(matches!(err, ExploreError::IgnoredPlan { step: 0, .. }), "{err}");
}

#[test]
fn too_long_is_reported() {
    let p = Program::parse("x=0\nT0: nop; nop; nop; nop\n").unwrap();
    let mut cfg = bounded(Some(1), Reduction::None, 0);
    cfg.max_steps = 3;
    let err = toy::search(&p, &cfg, |_| false).unwrap_err();
    assert_eq!(err, ExploreError::TooLong { steps: 4, max: 3 });
}

#[test]
fn deadlocks_are_final_states() {
    let p = Program::parse(
        "x=0\nT0: lock a; lock b; x+=1; unlock b; unlock a\nT1: lock b; lock a; x+=2; unlock a; unlock b\n",
    )
    .unwrap();
    let r = toy::search(&p, &bounded(Some(1), Reduction::SleepSets, 0), |o| o.deadlock).unwrap();
    let w = r.witness.expect("the lock-order deadlock needs one preemption");
    assert_eq!(w.preemptions, 1);
    assert!(w.outcome.deadlock);
    let r = toy::search(&p, &bounded(Some(0), Reduction::SleepSets, 0), |o| o.deadlock).unwrap();
    assert!(r.witness.is_none());
}

/// PCT on a bug of depth 2 (one ordering constraint beyond the initial
/// priorities): the observed hit rate is at least the theorem's bound.
#[test]
fn pct_meets_its_bound() {
    // T1 must run `r0=x` after T0's `x=1` but before `x=2`: depth 2 (or 3).
    let p = Program::parse("x=0\nT0: nop; nop; x=1; nop; nop; x=2\nT1: nop; r0=x; nop\n").unwrap();
    let bad = |o: &Outcome| o.regs[1][0] == 1;
    let mut cfg = Config::new(Strategy::Pct { depth: 3, runs: 2000 });
    cfg.seed = 5;
    let r = toy::search(&p, &cfg, bad).unwrap();
    let b = r.pct.clone().unwrap();
    assert_eq!(b.runs, 2000);
    assert!(!r.complete);
    assert_eq!(r.schedules, 2001, "2000 runs and the calibration run");
    assert!(!b.k_exceeded);
    let hits: u64 = r.histogram.iter().filter(|(o, _)| bad(o)).map(|(_, n)| n).sum();
    let rate = hits as f64 / 2000.0;
    assert!(rate >= b.per_run, "hit rate {rate} below PCT's bound {}", b.per_run);
    assert!(r.witness.is_some());
    // Deterministic, and shards merge into the same result.
    assert_eq!(toy::search(&p, &cfg, bad).unwrap(), r);
    let parts = (1..=3)
        .map(|i| {
            let mut c = cfg.clone();
            c.shard = Shard::new(i, 3).unwrap();
            toy::search(&p, &c, bad).unwrap()
        })
        .collect();
    let m = merge(parts).unwrap();
    assert_eq!((m.schedules, &m.histogram, &m.witness), (r.schedules, &r.histogram, &r.witness));
    assert_eq!(m.pct.as_ref().map(|b| b.runs), Some(2000));
}

#[test]
fn results_round_trip_through_json() {
    let p = Program::parse(LOST_UPDATE).unwrap();
    let r = toy::search(&p, &bounded(Some(2), Reduction::SleepSets, 0), |o| o.vars[0] == 1).unwrap();
    // Outcomes as plain vectors for JSON.
    let mut hist = BTreeMap::new();
    for (o, n) in &r.histogram {
        hist.insert(o.vars.clone(), *n);
    }
    let plain = ExploreResult {
        strategy: r.strategy.clone(),
        seed: r.seed,
        shard: r.shard,
        split_depth: r.split_depth,
        schedules: r.schedules,
        complete: r.complete,
        redundant: r.redundant,
        discovery: r.discovery,
        longest: r.longest,
        by_preemptions: r.by_preemptions.clone(),
        histogram: hist,
        witness: None,
        pct: None,
    };
    let json = serde_json::to_string(&plain).unwrap();
    let back: ExploreResult<Vec<i64>> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plain);
}

// ---- random programs ---------------------------------------------------------

/// `PROPTEST_CASES` if set (for long runs in release mode), else `n`.
fn cases(n: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n)
}

fn instr(nvars: usize) -> impl PropStrategy<Value = Vec<Instr>> {
    let v = 0..nvars;
    prop_oneof![
        (v.clone(), 0..2usize).prop_map(|(var, reg)| vec![Instr::Read { var, reg }]),
        (v.clone(), 0..3i64).prop_map(|(var, k)| vec![Instr::Write { var, val: Expr::Const(k) }]),
        (v.clone(), 0..2usize).prop_map(|(var, r)| vec![Instr::Write { var, val: Expr::Reg(r, 1) }]),
        (v.clone(), 1..3i64).prop_map(|(var, n)| vec![Instr::Add { var, n }]),
        (v.clone(), 0..2i64).prop_map(|(var, val)| vec![Instr::Wait { var, val }]),
        Just(vec![Instr::Nop]),
        // A critical section.
        (0..2usize, v.clone(), 0..2usize).prop_map(|(l, var, reg)| vec![
            Instr::Lock(l),
            Instr::Read { var, reg },
            Instr::Write { var, val: Expr::Reg(reg, 1) },
            Instr::Unlock(l)
        ]),
        // Nested locks, in either order (lock-order deadlocks).
        (0..2usize, v.clone()).prop_map(|(l, var)| vec![
            Instr::Lock(l),
            Instr::Lock(1 - l),
            Instr::Add { var, n: 1 },
            Instr::Unlock(1 - l),
            Instr::Unlock(l)
        ]),
    ]
}

fn program(threads: std::ops::RangeInclusive<usize>, max_items: usize) -> impl PropStrategy<Value = Program> {
    (threads, 1..=2usize).prop_flat_map(move |(nt, nv)| {
        prop::collection::vec(prop::collection::vec(instr(nv), 1..=max_items), nt).prop_map(move |threads| Program {
            vars: (0..nv).map(|i| (format!("v{i}"), 0)).collect(),
            locks: vec!["a".into(), "b".into()],
            threads: threads.into_iter().map(|items| items.into_iter().flatten().collect()).collect(),
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(96), ..ProptestConfig::default() })]

    /// Bounded search, with and without sleep sets, against brute force.
    #[test]
    fn random_programs_bounded(p in program(2..=3, 3), k in 0..3u32, seed in 0..4u64) {
        let bad = |o: &Outcome| o.deadlock || o.vars[0] == 1;
        check_against_brute_force(&p, Some(k), seed, &bad);
    }

    /// Unbounded search (small programs).
    #[test]
    fn random_programs_unbounded(p in program(2..=3, 2), seed in 0..4u64) {
        let steps: usize = p.threads.iter().map(Vec::len).sum();
        prop_assume!(steps <= 9);
        let bad = |o: &Outcome| o.vars[0] == 2;
        check_against_brute_force(&p, None, seed, &bad);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(12), ..ProptestConfig::default() })]

    /// Four threads (fewer cases: each brute force is large). Long run:
    /// `PROPTEST_CASES=6000 cargo test --release -p explore --test engine random`.
    #[test]
    fn random_programs_four_threads(p in program(4..=4, 2), k in 1..3u32, seed in 0..4u64) {
        let bad = |o: &Outcome| o.deadlock || o.vars[0] == 2;
        check_against_brute_force(&p, Some(k), seed, &bad);
    }
}
