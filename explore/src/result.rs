//! What a search found, and how shards of one search are merged.

use crate::plan::StepRecord;
use crate::shard::Shard;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which search ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Strategy {
    /// Every schedule with at most `preemptions` preemptions (`None`: no
    /// bound), depth first, with or without the sleep-set reduction.
    Bounded { preemptions: Option<u32>, reduction: Reduction },
    /// `runs` PCT schedules of bug depth `depth`.
    Pct { depth: u32, runs: u64 },
}

/// Partial-order reduction of the systematic search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reduction {
    /// Every schedule within the bound (the baseline the reduction is measured against).
    None,
    /// Sleep sets, in the form that is sound under a preemption bound (see `crate::dfs`).
    SleepSets,
}

/// The schedule chosen as the witness of a violation: the violating
/// schedule with the fewest preemptions, and among those the first in
/// depth-first order (for PCT: the lowest run number). Shards and the
/// reduction do not change which one it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness<O> {
    pub preemptions: u32,
    /// Position in search order: the rank of each choice among the
    /// children of its point (systematic search), or `[run]` (PCT).
    pub order: Vec<u64>,
    /// Every step, in order.
    pub steps: Vec<StepRecord>,
    /// The final state it reached.
    pub outcome: O,
}

impl<O> Witness<O> {
    fn key(&self) -> (u32, &[u64]) {
        (self.preemptions, &self.order)
    }

    /// Whether `self` should replace `best`.
    pub fn better_than(&self, best: &Option<Witness<O>>) -> bool {
        best.as_ref().is_none_or(|b| self.key() < b.key())
    }
}

/// PCT's guarantee (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS
/// 2010, Theorem 1): one run with `n` threads, at most `k` steps and depth
/// `d` finds a given bug of depth ≤ `d` with probability ≥ 1/(n·k^(d−1)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PctBound {
    pub depth: u32,
    pub threads: u32,
    /// The step count the change points were drawn over (≥ every run seen
    /// unless `k_exceeded`).
    pub k: u64,
    /// Some run was longer than `k`: the bound is then not guaranteed.
    pub k_exceeded: bool,
    pub runs: u64,
    /// Lower bound for one run.
    pub per_run: f64,
    /// Lower bound over all runs: 1 − (1 − per_run)^runs.
    pub overall: f64,
}

impl PctBound {
    pub fn new(depth: u32, threads: u32, k: u64, runs: u64, k_exceeded: bool) -> PctBound {
        let per_run = 1.0 / (f64::from(threads.max(1)) * (k.max(1) as f64).powi(depth.saturating_sub(1) as i32));
        let overall = 1.0 - (1.0 - per_run).powf(runs as f64);
        PctBound { depth, threads, k, k_exceeded, runs, per_run, overall }
    }
}

/// The result of one search (or one shard of it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExploreResult<O: Ord> {
    pub strategy: Strategy,
    pub seed: u64,
    pub shard: Shard,
    pub split_depth: u32,
    /// Schedules run and counted (the histogram's total).
    pub schedules: u64,
    /// Every schedule within the bound is represented: the search ran to
    /// the end (never true for PCT, false when `--max-schedules` stopped it).
    pub complete: bool,
    /// Counted schedules whose tail the reduction knew to be equivalent to
    /// one already run (the sleep set blocked every thread): the price of
    /// a stateless search. Included in `schedules`.
    pub redundant: u64,
    /// Executions a shard ran only to find the subtrees of the split; other
    /// shards count them. Not in `schedules`.
    pub discovery: u64,
    /// Steps of the longest schedule.
    pub longest: u64,
    /// Counted schedules by preemption count.
    pub by_preemptions: BTreeMap<u32, u64>,
    /// Final states and how many schedules reached each (a list of
    /// `[state, count]` pairs in JSON: states need not be strings).
    #[serde(with = "pairs")]
    pub histogram: BTreeMap<O, u64>,
    pub witness: Option<Witness<O>>,
    pub pct: Option<PctBound>,
}

impl<O: Ord + Clone> ExploreResult<O> {
    pub(crate) fn new(strategy: Strategy, seed: u64, shard: Shard, split_depth: u32) -> Self {
        ExploreResult {
            strategy,
            seed,
            shard,
            split_depth,
            schedules: 0,
            complete: false,
            redundant: 0,
            discovery: 0,
            longest: 0,
            by_preemptions: BTreeMap::new(),
            histogram: BTreeMap::new(),
            witness: None,
            pct: None,
        }
    }

    /// Counts one schedule.
    pub(crate) fn count(&mut self, steps: &[StepRecord], outcome: &O, preemptions: u32) {
        self.schedules += 1;
        self.longest = self.longest.max(steps.len() as u64);
        *self.by_preemptions.entry(preemptions).or_default() += 1;
        *self.histogram.entry(outcome.clone()).or_default() += 1;
    }

    pub(crate) fn offer_witness(&mut self, w: Witness<O>) {
        if w.better_than(&self.witness) {
            self.witness = Some(w);
        }
    }
}

/// A map with arbitrary keys as a JSON list of pairs.
mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(m: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("nothing to merge")]
    Empty,
    #[error("the parts come from different searches ({0} differs)")]
    Mismatch(&'static str),
    #[error("shard {0} appears twice")]
    Duplicate(Shard),
    #[error("shards {missing} of {count} are missing")]
    Missing { missing: String, count: u32 },
}

/// Merges the shards of one search into the result one machine would have
/// given: counts and histograms add up, the witness is the best of the
/// shards' witnesses, and the search is complete only if every shard is.
pub fn merge<O: Ord + Clone>(parts: Vec<ExploreResult<O>>) -> Result<ExploreResult<O>, MergeError> {
    let first = parts.first().ok_or(MergeError::Empty)?;
    let count = first.shard.count;
    let mut seen = vec![false; count as usize];
    for p in &parts {
        if p.strategy != first.strategy {
            return Err(MergeError::Mismatch("strategy"));
        }
        if p.seed != first.seed {
            return Err(MergeError::Mismatch("seed"));
        }
        if p.split_depth != first.split_depth {
            return Err(MergeError::Mismatch("split depth"));
        }
        if p.shard.count != count {
            return Err(MergeError::Mismatch("shard count"));
        }
        let i = p.shard.index as usize - 1;
        if std::mem::replace(&mut seen[i], true) {
            return Err(MergeError::Duplicate(p.shard));
        }
    }
    let missing: Vec<String> = (1..=count).filter(|i| !seen[*i as usize - 1]).map(|i| i.to_string()).collect();
    if !missing.is_empty() {
        return Err(MergeError::Missing { missing: missing.join(","), count });
    }
    let mut out = ExploreResult::new(first.strategy.clone(), first.seed, Shard::ALL, first.split_depth);
    out.complete = true;
    let mut pct: Option<PctBound> = None;
    for p in parts {
        out.schedules += p.schedules;
        out.complete &= p.complete;
        out.redundant += p.redundant;
        out.discovery += p.discovery;
        out.longest = out.longest.max(p.longest);
        for (k, v) in p.by_preemptions {
            *out.by_preemptions.entry(k).or_default() += v;
        }
        for (k, v) in p.histogram {
            *out.histogram.entry(k).or_default() += v;
        }
        if let Some(w) = p.witness {
            out.offer_witness(w);
        }
        if let Some(b) = p.pct {
            pct = Some(match pct {
                None => b,
                Some(a) => PctBound::new(
                    a.depth,
                    a.threads,
                    a.k.max(b.k),
                    a.runs + b.runs,
                    a.k_exceeded || b.k_exceeded || a.k != b.k,
                ),
            });
        }
    }
    out.pct = pct;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_bound_matches_the_formula() {
        let b = PctBound::new(3, 2, 10, 1, false);
        assert!((b.per_run - 1.0 / 200.0).abs() < 1e-12);
        assert!((b.overall - b.per_run).abs() < 1e-12);
        let b = PctBound::new(1, 4, 1000, 2, false);
        assert!((b.per_run - 0.25).abs() < 1e-12);
        assert!((b.overall - (1.0 - 0.75 * 0.75)).abs() < 1e-12);
    }

    #[test]
    fn witness_order() {
        let w = |p, o: Vec<u64>| Some(Witness { preemptions: p, order: o, steps: vec![], outcome: 0u8 });
        assert!(w(1, vec![5]).unwrap().better_than(&w(2, vec![0])));
        assert!(w(1, vec![0, 3]).unwrap().better_than(&w(1, vec![1])));
        assert!(!w(1, vec![1]).unwrap().better_than(&w(1, vec![1])));
        assert!(w(9, vec![]).unwrap().better_than(&None));
    }

    #[test]
    fn merge_checks_the_parts() {
        let part = |i, n| {
            let mut r: ExploreResult<u8> = ExploreResult::new(
                Strategy::Bounded { preemptions: Some(2), reduction: Reduction::SleepSets },
                1,
                Shard::new(i, n).unwrap(),
                4,
            );
            r.complete = true;
            r.count(&[], &(i as u8), 0);
            r
        };
        assert_eq!(merge::<u8>(vec![]), Err(MergeError::Empty));
        assert_eq!(merge(vec![part(1, 2), part(1, 2)]), Err(MergeError::Duplicate(Shard { index: 1, count: 2 })));
        assert_eq!(merge(vec![part(1, 3), part(3, 3)]), Err(MergeError::Missing { missing: "2".into(), count: 3 }));
        let mut other = part(2, 2);
        other.seed = 9;
        assert_eq!(merge(vec![part(1, 2), other]), Err(MergeError::Mismatch("seed")));
        let m = merge(vec![part(2, 2), part(1, 2)]).unwrap();
        assert_eq!((m.schedules, m.complete, m.shard), (2, true, Shard::ALL));
        assert_eq!(m.histogram.len(), 2);
    }
}
