//! The systematic search: every schedule with at most K preemptions,
//! depth first, by replaying prefixes (CHESS: Musuvathi and Qadeer, PLDI
//! 2007 "Iterative context bounding"; Musuvathi et al., OSDI 2008), with
//! sleep sets (Godefroid, LNCS 1032, 1996) in a form that stays sound under
//! the preemption bound.
//!
//! # The tree
//! A node is a scheduling point reached by a prefix of choices: the enabled
//! threads there, the thread that ran last (`current`) and the preemptions
//! spent so far. Its children are the enabled threads, explored in a fixed
//! order — `current` first (no preemption), then the seeded priority order
//! — except those whose preemption would exceed K. A run replays the
//! prefix to the node being branched and continues non-preemptively; the
//! program's log of that run creates the nodes below the branch.
//!
//! # The reduction and why it is sound with the bound
//! Two steps are independent when their footprints do not conflict
//! ([`crate::footprint`]); independent steps commute (same state either
//! order, neither enables nor disables the other) when footprints are
//! complete. The sleep set of a node holds threads whose pending step need
//! not be tried there, each with that step's footprint; a child keeps the
//! entries independent of the step it took **and of what every thread
//! blocked at the child waits for** (its guard, [`crate::StepRecord::blocked`]).
//! Choosing a sleeping thread is never a new alternative; a run that
//! reaches a point where its default choice is asleep is counted as
//! `redundant` and not branched below.
//!
//! Godefroid's rule puts every child explored before a sibling to sleep in
//! that sibling: a pruned schedule `b·w·a·r` (a independent of b·w) is
//! equivalent to `a·b·w·r`, which the earlier sibling explored.
//!
//! With a bound that argument breaks (Coons, Musuvathi, McKinley,
//! "Bounded partial-order reduction", OOPSLA 2013, show the same for DPOR):
//! `a·b·w·r` may need more preemptions than `b·w·a·r`, be cut by the bound,
//! and the state it reaches be lost. Here only **the current thread's step**
//! goes to sleep in its preempting siblings. Then the pruned schedule is
//! σ = b·w·a·r where `a` is the step of `t = current`, so σ starts with a
//! preemption of t, and the equivalent ρ = a·b·w·r starts with t continuing.
//! Counting switches (a switch x→y costs 1 iff x is still enabled):
//! σ pays 1 for t→u at the node, `[v→t]` where the last thread v of b·w
//! hands over to t, and `[t→r]` after a; ρ pays 0 for t→t, at most 1 for
//! t→u after a, and `[v→r]` after w, which is ≤ `[v→t]` (if r = v it is 0;
//! otherwise both are "v still enabled"). A switch away from x inside b·w
//! costs the same or less in ρ. The one way `a` could make ρ dearer is by
//! *enabling* a thread that σ found blocked (t's unlock wakes v, so the
//! free switch away from blocked v becomes a preemption): a brute-force
//! comparison found exactly that case, and it is why an entry is dropped
//! at any point where it conflicts with a blocked thread's guard. With
//! that, every thread blocked along b·w in σ is blocked in ρ too, and
//! disabling a thread only makes switches cheaper. Switches in r cost the
//! same (same state). So preemptions(ρ) ≤ preemptions(σ): ρ lies within
//! the bound of the explored sibling, reaches the same final state, and
//! comes earlier in depth-first order. Induction on the child index (an
//! inherited entry of an earlier sibling sends the schedule to a still
//! earlier child) and on the schedule length gives: every final state
//! reachable within K preemptions is reached by an explored schedule with
//! no more preemptions, earlier in depth-first order. Hence the reduction
//! keeps every final state, each state's fewest preemptions, and the
//! witness (the fewest-preemption violating schedule that comes first in
//! depth-first order) exactly.
//!
//! Entries are decided on the node's own path only, so shards
//! ([`crate::shard`]) each reproduce their part of the single-machine
//! search exactly.

use std::collections::VecDeque;

use crate::footprint::Footprint;
use crate::plan::{
    bit, candidates, child_rank, default_choice, is_preemption, preemptions, Plan, Rule, StepRecord, ThreadId,
};
use crate::result::{ExploreResult, Reduction, Strategy, Witness};
use crate::shard::Shard;
use crate::ExploreError;

struct Node {
    enabled: u64,
    current: Option<ThreadId>,
    /// Preemptions of the prefix that reaches this node.
    preemptions: u32,
    sleep: Vec<(ThreadId, Footprint)>,
    /// The child being explored and its step's footprint.
    chosen: ThreadId,
    chosen_fp: Footprint,
    /// Children whose subtrees are done, with their steps' footprints.
    explored: Vec<(ThreadId, Footprint)>,
    todo: VecDeque<ThreadId>,
}

pub(crate) struct Dfs<O: Ord> {
    bound: Option<u32>,
    reduction: Reduction,
    priority: Vec<ThreadId>,
    split_depth: usize,
    shard: Shard,
    max_schedules: Option<u64>,
    max_steps: u64,
    stack: Vec<Node>,
    next_prefix: Option<Vec<ThreadId>>,
    subtrees: u64,
    outstanding: bool,
    result: ExploreResult<O>,
}

impl<O: Ord + Clone> Dfs<O> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        bound: Option<u32>,
        reduction: Reduction,
        priority: Vec<ThreadId>,
        seed: u64,
        shard: Shard,
        split_depth: u32,
        max_schedules: Option<u64>,
        max_steps: u64,
    ) -> Self {
        Dfs {
            bound,
            reduction,
            priority,
            split_depth: split_depth as usize,
            shard,
            max_schedules,
            max_steps,
            stack: Vec::new(),
            next_prefix: Some(Vec::new()),
            subtrees: 0,
            outstanding: false,
            result: ExploreResult::new(Strategy::Bounded { preemptions: bound, reduction }, seed, shard, split_depth),
        }
    }

    pub(crate) fn result(&self) -> &ExploreResult<O> {
        &self.result
    }

    pub(crate) fn into_result(self) -> ExploreResult<O> {
        self.result
    }

    pub(crate) fn next_plan(&mut self) -> Option<Plan> {
        assert!(!self.outstanding, "next_plan called before the previous plan was reported");
        let prefix = match &self.next_prefix {
            None => {
                self.result.complete = true;
                return None;
            }
            Some(p) => p.clone(),
        };
        if self.max_schedules.is_some_and(|m| self.result.schedules >= m) {
            self.result.complete = false;
            return None;
        }
        self.outstanding = true;
        Some(Plan { prefix, priority: self.priority.clone(), rule: Rule::NonPreemptive })
    }

    fn within_bound(&self, preemptions: u32) -> bool {
        self.bound.is_none_or(|k| preemptions <= k)
    }

    /// The sleep set of the child `p.chosen` of `p`, whose blocked threads
    /// wait for `blocked`.
    fn child_sleep(&self, p: &Node, blocked: &[(ThreadId, Footprint)]) -> Vec<(ThreadId, Footprint)> {
        if self.reduction == Reduction::None {
            return Vec::new();
        }
        // Only the step of the thread that ran last (see the module doc),
        // with or without a bound: Godefroid's unrestricted rule would
        // also keep every state without a bound, but not each state's
        // fewest preemptions, and so not the witness.
        let eligible = p.explored.iter().filter(|(t, _)| Some(*t) == p.current);
        let mut z: Vec<(ThreadId, Footprint)> = Vec::new();
        for (t, f) in p.sleep.iter().chain(eligible) {
            // A sleeping step that could wake a blocked thread is woken
            // itself: running it first would turn that thread's free
            // switch into a preemption (see the module doc).
            if *t != p.chosen
                && !f.conflicts(&p.chosen_fp)
                && !blocked.iter().any(|(_, g)| f.conflicts(g))
                && !z.iter().any(|(u, _)| u == t)
            {
                z.push((*t, f.clone()));
            }
        }
        z
    }

    pub(crate) fn report(
        &mut self,
        plan: &Plan,
        steps: &[StepRecord],
        outcome: &O,
        violating: bool,
    ) -> Result<(), ExploreError> {
        assert!(self.outstanding, "report without a plan");
        self.outstanding = false;
        if steps.len() as u64 > self.max_steps {
            return Err(ExploreError::TooLong { steps: steps.len() as u64, max: self.max_steps });
        }
        let k = plan.prefix.len();
        if steps.len() < k {
            return Err(ExploreError::Nondeterministic {
                step: steps.len(),
                what: format!("the run ended after {} steps, before its replayed prefix of {k}", steps.len()),
            });
        }
        debug_assert_eq!(self.stack.len(), k);
        for (i, s) in steps.iter().enumerate().take(k) {
            let n = &self.stack[i];
            if s.thread != plan.prefix[i] {
                return Err(ExploreError::IgnoredPlan { step: i, expected: plan.prefix[i], got: s.thread });
            }
            if s.enabled != n.enabled {
                return Err(ExploreError::Nondeterministic {
                    step: i,
                    what: format!("enabled threads {:#x}, {:#x} when this prefix last ran", s.enabled, n.enabled),
                });
            }
            if i + 1 < k && s.footprint != n.chosen_fp {
                return Err(ExploreError::Nondeterministic {
                    step: i,
                    what: format!("footprint {}, {} when this prefix last ran", s.footprint, n.chosen_fp),
                });
            }
        }
        if k > 0 {
            self.stack[k - 1].chosen_fp = steps[k - 1].footprint.clone();
        }

        // Which subtree of the split this run is in, and whose it is.
        let owned = match k.checked_sub(1) {
            Some(branch) if branch >= self.split_depth => true,
            _ => {
                let j = self.subtrees;
                self.subtrees += 1;
                self.shard.owns(j)
            }
        };

        // New nodes below the branch.
        let end = if owned { steps.len() } else { steps.len().min(self.split_depth) };
        let mut redundant = false;
        for (i, s) in steps.iter().enumerate().take(end).skip(k) {
            let (current, pre, sleep) = match self.stack.last() {
                None => (None, 0, Vec::new()),
                Some(p) => (
                    Some(p.chosen),
                    p.preemptions + u32::from(is_preemption(p.current, p.enabled, p.chosen)),
                    self.child_sleep(p, &s.blocked),
                ),
            };
            if s.enabled & bit(s.thread) == 0 {
                return Err(ExploreError::NotEnabled { step: i, thread: s.thread, enabled: s.enabled });
            }
            let expected = default_choice(&self.priority, current, s.enabled).unwrap_or(s.thread);
            if s.thread != expected {
                return Err(ExploreError::IgnoredPlan { step: i, expected, got: s.thread });
            }
            let asleep = |t: ThreadId| sleep.iter().any(|(u, _)| *u == t);
            let todo = candidates(&self.priority, current, s.enabled)
                .into_iter()
                .filter(|&t| {
                    t != s.thread
                        && !asleep(t)
                        && self.within_bound(pre + u32::from(is_preemption(current, s.enabled, t)))
                })
                .collect();
            let cut = asleep(s.thread);
            self.stack.push(Node {
                enabled: s.enabled,
                current,
                preemptions: pre,
                sleep,
                chosen: s.thread,
                chosen_fp: s.footprint.clone(),
                explored: Vec::new(),
                todo,
            });
            if cut {
                redundant = true;
                break;
            }
        }

        if owned {
            let p = preemptions(steps);
            self.result.count(steps, outcome, p);
            self.result.redundant += u64::from(redundant);
            if violating {
                let mut cur = None;
                let order = steps
                    .iter()
                    .map(|s| {
                        let r = child_rank(&self.priority, cur, s.enabled, s.thread);
                        cur = Some(s.thread);
                        u64::from(r)
                    })
                    .collect();
                self.result.offer_witness(Witness {
                    preemptions: p,
                    order,
                    steps: steps.to_vec(),
                    outcome: outcome.clone(),
                });
            }
        } else {
            self.result.discovery += 1;
        }

        self.next_prefix = self.backtrack();
        Ok(())
    }

    /// Moves to the next unexplored child of the deepest node that has one.
    fn backtrack(&mut self) -> Option<Vec<ThreadId>> {
        while let Some(top) = self.stack.last_mut() {
            if let Some(next) = top.todo.pop_front() {
                let fp = std::mem::take(&mut top.chosen_fp);
                top.explored.push((top.chosen, fp));
                top.chosen = next;
                return Some(self.stack.iter().map(|n| n.chosen).collect());
            }
            self.stack.pop();
        }
        None
    }
}
