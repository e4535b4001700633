//! `cargo bench -p explore`: the engine's own cost (schedules and steps per
//! second on toy programs, no guest) and how much the sleep-set reduction
//! prunes, on toy programs shaped like the hook-free catalogue tests: every
//! mm step conflicts with every other (one object stands for the whole mm,
//! as in the guest), flags are separate objects.

use std::time::Instant;

use explore::toy::{self, Program};
use explore::{Config, Reduction, Strategy};

/// A hook-free S1 shape: P2 warms its TLB, two zaps of `mm_steps` points
/// each, P2 reads after P1's zap returned.
fn s1_like(mm_steps: usize) -> Program {
    let zap = vec!["m+=1"; mm_steps].join("; ");
    let src = format!(
        "m=0 warm=0 done=0\n\
         T0: wait warm==1; {zap}\n\
         T1: wait warm==1; {zap}; done=1\n\
         T2: r0=m; warm=1; wait done==1; r1=m\n"
    );
    Program::parse(&src).unwrap()
}

fn main() {
    println!(
        "{:<34} {:>4} {:>10} {:>10} {:>9} {:>12} {:>12}",
        "program", "K", "schedules", "reduced", "redundant", "sched/s", "steps/s"
    );
    for (name, prog) in [
        ("s1-like, 6 mm points per zap", s1_like(6)),
        ("s1-like, 12 mm points per zap", s1_like(12)),
        ("s1-like, 20 mm points per zap", s1_like(20)),
        (
            "3 independent threads x 6 steps",
            Program::parse(
                "x=0 y=0 z=0\nT0: x=1; x=2; x=3; x=4; x=5; x=6\nT1: y=1; y=2; y=3; y=4; y=5; y=6\nT2: z=1; z=2; z=3; z=4; z=5; z=6\n",
            )
            .unwrap(),
        ),
    ] {
        for k in [1, 2, 3] {
            let cfg = |r| Config::new(Strategy::Bounded { preemptions: Some(k), reduction: r });
            let t = Instant::now();
            let all = toy::search(&prog, &cfg(Reduction::None), |_| false).unwrap();
            let secs = t.elapsed().as_secs_f64();
            let steps: u64 = all.schedules * all.longest;
            let red = toy::search(&prog, &cfg(Reduction::SleepSets), |_| false).unwrap();
            println!(
                "{name:<34} {k:>4} {:>10} {:>10} {:>9} {:>12.0} {:>12.0}",
                all.schedules,
                red.schedules,
                red.redundant,
                all.schedules as f64 / secs,
                steps as f64 / secs
            );
        }
    }
}
