//! One execution: the plan the engine hands out and the log the program
//! hands back.
//!
//! The engine never drives the program step by step. It gives a [`Plan`]: a
//! prefix of thread choices to replay, then a deterministic rule for every
//! later choice (non-preemptive for the systematic search, priorities with
//! change points for PCT). The program follows it — a [`Chooser`] computes
//! each choice from the enabled set — and returns one [`StepRecord`] per
//! step. Because the rule is fixed in advance, a program that runs far from
//! the engine (a guest whose threads pass a turn word in shared memory) can
//! follow it without asking at every point.

use crate::footprint::Footprint;
use serde::{Deserialize, Serialize};

/// A thread of the program under test: an index below [`MAX_THREADS`].
pub type ThreadId = u8;

/// Enabled sets are `u64` bit masks.
pub const MAX_THREADS: usize = 64;

/// Bit mask of one thread.
pub const fn bit(t: ThreadId) -> u64 {
    1u64 << t
}

/// What the program did at one scheduling point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The thread that ran this step.
    pub thread: ThreadId,
    /// Threads that could run at this point (bit t = thread t), before the
    /// choice. Blocked and finished threads are not in it.
    pub enabled: u64,
    /// Everything the step touched (see [`crate::footprint`]).
    pub footprint: Footprint,
    /// What each blocked thread waits for at this point: the objects its
    /// guard reads (the lock it tries to take, the flag it waits on).
    /// Finished threads are not listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<(ThreadId, Footprint)>,
    /// Where the thread was: a program-defined site (a hook and its firing,
    /// an instruction), rendered by the program for witnesses.
    pub site: u64,
}

/// How choices after the replayed prefix are made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// Keep running the thread that ran last while it can; when it cannot,
    /// the first enabled thread of [`Plan::priority`]. Never preempts.
    NonPreemptive,
    /// PCT (Burckhardt et al., ASPLOS 2010): always the enabled thread of
    /// highest priority; after step `change_points[i]` (1-based) the thread
    /// that ran it drops to priority `i + 1`, below every initial priority.
    Pct {
        /// Initial priority of each thread (distinct, all ≥ depth).
        priorities: Vec<u32>,
        /// Sorted step numbers at which the running thread is demoted.
        change_points: Vec<u64>,
    },
}

/// One execution to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Threads to run, one per step, before the rule takes over.
    pub prefix: Vec<ThreadId>,
    /// The fixed order of threads used by the non-preemptive rule (and by
    /// the search's child order); a permutation chosen from the seed.
    pub priority: Vec<ThreadId>,
    pub rule: Rule,
}

/// The program did not follow its plan (or is not deterministic).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("step {step}: the plan replays thread {thread}, which is not enabled (enabled mask {enabled:#x}): the program is not deterministic under this schedule")]
    PrefixDiverged { step: usize, thread: ThreadId, enabled: u64 },
}

impl Plan {
    /// A chooser that follows this plan from the first step.
    pub fn chooser(&self) -> Chooser<'_> {
        let prio = match &self.rule {
            Rule::Pct { priorities, .. } => priorities.clone(),
            Rule::NonPreemptive => Vec::new(),
        };
        Chooser { plan: self, step: 0, current: None, prio, next_change: 0 }
    }
}

/// The non-preemptive rule's choice: `current` if enabled, else the first
/// enabled thread in `priority`.
pub fn default_choice(priority: &[ThreadId], current: Option<ThreadId>, enabled: u64) -> Option<ThreadId> {
    if let Some(c) = current.filter(|&c| enabled & bit(c) != 0) {
        return Some(c);
    }
    priority.iter().copied().find(|&t| enabled & bit(t) != 0)
}

/// Rank of `t` in the order children are explored at a point: the thread
/// that ran last (if still enabled) first, then `priority` order. Witness
/// order keys and the shard partition are built from these ranks.
pub fn child_rank(priority: &[ThreadId], current: Option<ThreadId>, enabled: u64, t: ThreadId) -> u32 {
    let cur = current.filter(|&c| enabled & bit(c) != 0);
    if cur == Some(t) {
        return 0;
    }
    let mut r = u32::from(cur.is_some());
    for &p in priority {
        if Some(p) == cur || enabled & bit(p) == 0 {
            continue;
        }
        if p == t {
            return r;
        }
        r += 1;
    }
    r
}

/// Candidate children of a point, in exploration order.
pub fn candidates(priority: &[ThreadId], current: Option<ThreadId>, enabled: u64) -> Vec<ThreadId> {
    let cur = current.filter(|&c| enabled & bit(c) != 0);
    cur.into_iter().chain(priority.iter().copied().filter(|&p| Some(p) != cur && enabled & bit(p) != 0)).collect()
}

/// Whether running `next` after `current` is a preemption: a switch away
/// from a thread that could still run (CHESS's definition).
pub fn is_preemption(current: Option<ThreadId>, enabled: u64, next: ThreadId) -> bool {
    matches!(current, Some(c) if c != next && enabled & bit(c) != 0)
}

/// Preemptions of a whole execution.
pub fn preemptions(steps: &[StepRecord]) -> u32 {
    let mut cur = None;
    let mut n = 0;
    for s in steps {
        n += u32::from(is_preemption(cur, s.enabled, s.thread));
        cur = Some(s.thread);
    }
    n
}

/// Follows a [`Plan`], one choice per scheduling point.
pub struct Chooser<'a> {
    plan: &'a Plan,
    step: usize,
    current: Option<ThreadId>,
    prio: Vec<u32>,
    next_change: usize,
}

impl Chooser<'_> {
    /// The thread to run next, given who can run; `None` when nobody can
    /// (the execution ended, or deadlocked if some thread is not finished).
    pub fn next(&mut self, enabled: u64) -> Result<Option<ThreadId>, PlanError> {
        if enabled == 0 {
            return Ok(None);
        }
        let t = if let Some(&t) = self.plan.prefix.get(self.step) {
            if enabled & bit(t) == 0 {
                return Err(PlanError::PrefixDiverged { step: self.step, thread: t, enabled });
            }
            t
        } else {
            match &self.plan.rule {
                Rule::NonPreemptive => default_choice(&self.plan.priority, self.current, enabled)
                    .expect("enabled is non-empty and priority lists every thread"),
                Rule::Pct { .. } => (0..MAX_THREADS as u8)
                    .filter(|&t| enabled & bit(t) != 0)
                    .max_by_key(|&t| self.prio.get(t as usize).copied().unwrap_or(0))
                    .expect("enabled is non-empty"),
            }
        };
        self.step += 1;
        self.current = Some(t);
        if let Rule::Pct { change_points, .. } = &self.plan.rule {
            while let Some(&k) = change_points.get(self.next_change) {
                if k > self.step as u64 {
                    break;
                }
                if k == self.step as u64 {
                    if let Some(p) = self.prio.get_mut(t as usize) {
                        *p = self.next_change as u32 + 1;
                    }
                }
                self.next_change += 1;
            }
        }
        Ok(Some(t))
    }

    /// Steps chosen so far.
    pub fn steps(&self) -> usize {
        self.step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_candidates_agree() {
        let prio = [2, 0, 1];
        let enabled = 0b111;
        assert_eq!(candidates(&prio, Some(1), enabled), vec![1, 2, 0]);
        for (r, &t) in candidates(&prio, Some(1), enabled).iter().enumerate() {
            assert_eq!(child_rank(&prio, Some(1), enabled, t), r as u32);
        }
        // The last thread blocked: priority order, no preemption.
        assert_eq!(candidates(&prio, Some(1), 0b101), vec![2, 0]);
        assert!(!is_preemption(Some(1), 0b101, 2));
        assert!(is_preemption(Some(1), 0b111, 2));
        assert!(!is_preemption(None, 0b111, 2));
    }

    #[test]
    fn chooser_replays_prefix_then_never_preempts() {
        let plan = Plan { prefix: vec![1, 0], priority: vec![2, 0, 1], rule: Rule::NonPreemptive };
        let mut c = plan.chooser();
        assert_eq!(c.next(0b111), Ok(Some(1)));
        assert_eq!(c.next(0b111), Ok(Some(0)));
        assert_eq!(c.next(0b111), Ok(Some(0)));
        assert_eq!(c.next(0b110), Ok(Some(2)));
        assert_eq!(c.next(0), Ok(None));
        let mut c = plan.chooser();
        assert_eq!(c.next(0b101), Err(PlanError::PrefixDiverged { step: 0, thread: 1, enabled: 0b101 }));
    }

    #[test]
    fn pct_demotes_at_change_points() {
        // Thread 0 has the highest priority; after step 2 it drops to 1.
        let plan = Plan {
            prefix: vec![],
            priority: vec![0, 1],
            rule: Rule::Pct { priorities: vec![3, 2], change_points: vec![2] },
        };
        let mut c = plan.chooser();
        let picks: Vec<_> = (0..4).map(|_| c.next(0b11).unwrap().unwrap()).collect();
        assert_eq!(picks, vec![0, 0, 1, 1]);
    }
}
