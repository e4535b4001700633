//! PCT: probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi,
//! Nagarakatte, "A randomized scheduler with probabilistic guarantees of
//! finding bugs", ASPLOS 2010).
//!
//! Each run gives the n threads distinct random priorities d … d+n−1 and
//! draws d−1 change points among the steps 1 … k; it always runs the
//! highest-priority enabled thread, and after step `k_i` demotes the thread
//! that ran it to priority i (below every initial priority). A bug of depth
//! d — one that needs d ordering constraints between steps — is then found
//! by one run with probability at least 1/(n·k^(d−1)) (their Theorem 1).
//!
//! k must bound the length of every run. It is measured by a calibration run
//! (the non-preemptive schedule, counted once like any schedule) and given a
//! quarter's margin; a run longer than k is recorded (`k_exceeded`) because
//! the theorem no longer applies to it.

use crate::plan::{preemptions, Plan, Rule, StepRecord, ThreadId};
use crate::result::{ExploreResult, PctBound, Strategy, Witness};
use crate::shard::Shard;
use crate::ExploreError;
use abi::rng::{SplitMix64, GAMMA};

pub(crate) struct Pct<O: Ord> {
    depth: u32,
    runs: u64,
    threads: usize,
    seed: u64,
    shard: Shard,
    max_schedules: Option<u64>,
    max_steps: u64,
    priority: Vec<ThreadId>,
    /// `None` until the calibration run reported.
    k: Option<u64>,
    k_exceeded: bool,
    next_run: u64,
    outstanding: Option<Option<u64>>,
    result: ExploreResult<O>,
}

impl<O: Ord + Clone> Pct<O> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        depth: u32,
        runs: u64,
        threads: usize,
        priority: Vec<ThreadId>,
        seed: u64,
        shard: Shard,
        split_depth: u32,
        max_schedules: Option<u64>,
        max_steps: u64,
    ) -> Self {
        Pct {
            depth: depth.max(1),
            runs,
            threads,
            seed,
            shard,
            max_schedules,
            max_steps,
            priority,
            k: None,
            k_exceeded: false,
            next_run: 0,
            outstanding: None,
            result: ExploreResult::new(Strategy::Pct { depth, runs }, seed, shard, split_depth),
        }
    }

    pub(crate) fn result(&self) -> &ExploreResult<O> {
        &self.result
    }

    pub(crate) fn into_result(self) -> ExploreResult<O> {
        self.result
    }

    fn bound(&self) -> Option<PctBound> {
        let k = self.k?;
        let runs = (0..self.next_run).filter(|&r| self.shard.owns(r)).count() as u64;
        Some(PctBound::new(self.depth, self.threads as u32, k, runs, self.k_exceeded))
    }

    /// The plan of PCT run `r`: priorities and change points from the seed.
    fn plan_of(&self, r: u64, k: u64) -> Plan {
        // One stream per run: seeded from the search's seed and the run's
        // number (the stream starts one step past its seed, as the recorded
        // plans were drawn).
        let s = self.seed ^ SplitMix64::new(r.wrapping_add(0x5043_5452_554e)).next_u64();
        let mut rng = SplitMix64::new(s.wrapping_add(GAMMA));
        let n = self.threads;
        let mut prio: Vec<u32> = (0..n as u32).map(|i| self.depth + i).collect();
        for i in (1..n).rev() {
            let j = rng.below_mod(i as u64 + 1) as usize;
            prio.swap(i, j);
        }
        let want = (self.depth - 1) as u64;
        let mut points: Vec<u64> = Vec::new();
        while (points.len() as u64) < want.min(k) {
            let p = 1 + rng.below_mod(k);
            if !points.contains(&p) {
                points.push(p);
            }
        }
        points.sort_unstable();
        Plan {
            prefix: Vec::new(),
            priority: self.priority.clone(),
            rule: Rule::Pct { priorities: prio, change_points: points },
        }
    }

    pub(crate) fn next_plan(&mut self) -> Option<Plan> {
        assert!(self.outstanding.is_none(), "next_plan called before the previous plan was reported");
        let Some(k) = self.k else {
            // Calibration: the non-preemptive schedule.
            self.outstanding = Some(None);
            return Some(Plan { prefix: Vec::new(), priority: self.priority.clone(), rule: Rule::NonPreemptive });
        };
        while self.next_run < self.runs && !self.shard.owns(self.next_run) {
            self.next_run += 1;
        }
        if self.next_run >= self.runs || self.max_schedules.is_some_and(|m| self.result.schedules >= m) {
            self.result.pct = self.bound();
            return None;
        }
        let r = self.next_run;
        self.next_run += 1;
        self.outstanding = Some(Some(r));
        Some(self.plan_of(r, k))
    }

    pub(crate) fn report(
        &mut self,
        _plan: &Plan,
        steps: &[StepRecord],
        outcome: &O,
        violating: bool,
    ) -> Result<(), ExploreError> {
        let run = self.outstanding.take().expect("report without a plan");
        if steps.len() as u64 > self.max_steps {
            return Err(ExploreError::TooLong { steps: steps.len() as u64, max: self.max_steps });
        }
        let n = steps.len() as u64;
        match run {
            None => {
                self.k = Some((n + n / 4).max(1));
                // The calibration schedule is counted once, by shard 1.
                if !self.shard.owns(0) {
                    self.result.discovery += 1;
                    return Ok(());
                }
            }
            Some(_) => self.k_exceeded |= self.k.is_some_and(|k| n > k),
        }
        let p = preemptions(steps);
        self.result.count(steps, outcome, p);
        if violating {
            // The calibration run orders before run 0.
            let order = vec![run.map_or(0, |r| r + 1)];
            self.result.offer_witness(Witness {
                preemptions: p,
                order,
                steps: steps.to_vec(),
                outcome: outcome.clone(),
            });
        }
        self.result.pct = self.bound();
        Ok(())
    }
}
