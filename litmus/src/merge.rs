//! `vmm results merge A.json B.json … --json OUT`: shards of one job back
//! into one results file.
//!
//! The parts of each (test, policy) are put end to end — their iteration
//! ranges must not overlap — histograms and timeouts are added, and the
//! verdicts are judged again over the sum with the job's planned iteration
//! count, so a merge of every shard gives exactly the histograms and
//! verdicts of the unsharded run with the same seed, and a merge with a
//! shard missing gives `inconclusive` wherever its iterations were needed
//! (SCENARIOS.md "Verdicts need evidence"), never a `never` resting on part
//! of the iterations.
//!
//! Files carry a `kind`; only `litmus` results have a merge rule today.
//! Exploration results (issue 15) sum schedules instead of iterations and
//! are complete only when the explored schedule trees of every shard
//! together cover the bound: they get their own rule here, selected by
//! `kind`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use crate::explore_results::KIND_EXPLORE;
use crate::results::MAX_TIMEOUT_RECORDS;
use crate::results_file::{PlannedRun, ResultsFile, RunRecord, ShardInfo, StateRecord, JSON_SCHEMA, KIND_LITMUS};

/// A merge's result and what it noticed.
#[derive(Clone, Debug)]
pub struct Merged {
    pub file: ResultsFile,
    /// Gaps (iterations no input covers, shards not given): each makes the
    /// merged file incomplete.
    pub gaps: Vec<String>,
}

/// The raw value of a JSON value (numbers, or the outcome names).
fn raw(v: &Json) -> u64 {
    match v {
        Json::Number(n) => n.as_u64().unwrap_or(0),
        Json::String(s) => abi::litmus::special_value_from_name(s).unwrap_or(0),
        _ => 0,
    }
}

/// Merges the files named by `inputs` (name, contents). Errors are
/// contradictions — inputs that cannot be parts of one job (other kinds,
/// seeds, test versions, overlapping iterations, one shard twice).
pub fn merge(inputs: &[(String, ResultsFile)]) -> Result<Merged, String> {
    if inputs.is_empty() {
        return Err("no results to merge".into());
    }
    let kind = inputs[0].1.kind.clone();
    for (name, f) in inputs {
        if f.kind != KIND_LITMUS && f.kind != KIND_EXPLORE {
            return Err(format!("{name}: results of kind `{}` have no merge rule here", f.kind));
        }
        if f.kind != kind {
            return Err(format!("{name}: results of kind `{}` cannot be merged with `{kind}` results", f.kind));
        }
    }
    // Shards: one count, no index twice; merged files contribute theirs.
    let mut shards: BTreeMap<ShardInfo, &str> = BTreeMap::new();
    let mut count = None;
    for (name, f) in inputs {
        let given: Vec<ShardInfo> = f.shard.into_iter().chain(f.merged_from.iter().copied()).collect();
        for s in given {
            if count.is_some_and(|c| c != s.count) {
                return Err(format!(
                    "{name}: shard {}/{} of a job cut into {} shards",
                    s.index,
                    s.count,
                    count.unwrap()
                ));
            }
            count = Some(s.count);
            if let Some(other) = shards.insert(s, name) {
                return Err(format!("shard {}/{} given twice ({other} and {name})", s.index, s.count));
            }
        }
    }
    let mut gaps = Vec::new();
    if let Some(n) = count {
        let missing: Vec<String> =
            (1..=n).filter(|i| !shards.keys().any(|s| s.index == *i)).map(|i| format!("{i}/{n}")).collect();
        if !missing.is_empty() {
            gaps.push(format!("shard(s) {} not given", missing.join(", ")));
        }
    }
    // Inputs in shard order, so that runs come out in job order.
    let mut order: Vec<&(String, ResultsFile)> = inputs.iter().collect();
    order.sort_by_key(|(_, f)| f.shard.map_or(0, |s| s.index));
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut parts: BTreeMap<(String, String), Vec<(&str, &RunRecord)>> = BTreeMap::new();
    let mut job: BTreeSet<PlannedRun> = BTreeSet::new();
    for (name, f) in &order {
        job.extend(f.job.iter().cloned());
        for r in &f.runs {
            let k = r.key();
            if !parts.contains_key(&k) {
                keys.push(k.clone());
            }
            parts.entry(k).or_default().push((name, r));
        }
    }
    let mut runs = Vec::new();
    for k in &keys {
        runs.push(if kind == KIND_EXPLORE {
            crate::explore_results::merge_runs(&parts[k])?
        } else {
            merge_run(&parts[k], &mut gaps)?
        });
    }
    for p in &job {
        if !parts.contains_key(&(p.test.clone(), p.policy.clone())) {
            gaps.push(format!(
                "{} [{}]: none of its {} planned iterations is in the inputs",
                p.test, p.policy, p.planned
            ));
        }
    }
    let complete = gaps.is_empty() && inputs.iter().all(|(_, f)| f.complete);
    let file = ResultsFile {
        schema: JSON_SCHEMA.into(),
        kind,
        complete,
        shard: None,
        merged_from: shards.keys().copied().collect(),
        job: Vec::new(),
        runs,
    };
    Ok(Merged { file, gaps })
}

fn merge_run(parts: &[(&str, &RunRecord)], gaps: &mut Vec<String>) -> Result<RunRecord, String> {
    let (first_name, first) = parts[0];
    let label = format!("{} [{}]", first.test, first.policy);
    let mut sorted: Vec<&(&str, &RunRecord)> = parts.iter().collect();
    sorted.sort_by_key(|(_, r)| r.first_iteration);
    for (name, r) in parts {
        let differs = |what: &str, a: &dyn std::fmt::Display, b: &dyn std::fmt::Display| {
            format!("{label}: {what} {a} in {first_name} but {b} in {name}: not parts of one job")
        };
        if r.hash != first.hash {
            return Err(differs("test hash", &first.hash, &r.hash));
        }
        if r.seed != first.seed {
            return Err(differs("seed", &first.seed, &r.seed));
        }
        if r.planned != first.planned {
            return Err(differs("planned iterations", &first.planned, &r.planned));
        }
        if r.observed != first.observed || r.kind != first.kind || r.condition != first.condition {
            return Err(differs("condition", &first.condition, &r.condition));
        }
    }
    // The parts' ranges, end to end.
    let mut ranges: Vec<([u64; 2], &str)> =
        parts.iter().flat_map(|(name, r)| r.ranges().into_iter().map(move |g| (g, *name))).collect();
    ranges.sort();
    let mut covered: Vec<[u64; 2]> = Vec::new();
    let mut next = 0u64;
    for ([a, b], name) in ranges {
        if a < next {
            return Err(format!("{label}: iterations {a}..{b} of {name} overlap another input's"));
        }
        if a > next {
            gaps.push(format!("{label}: iterations {next}..{a} of {} are in no input", first.planned));
        }
        match covered.last_mut() {
            Some(last) if last[1] == a => last[1] = b,
            _ => covered.push([a, b]),
        }
        next = b;
    }
    if next < first.planned {
        gaps.push(format!("{label}: iterations {next}..{} of {} are in no input", first.planned, first.planned));
    }
    if covered == [[0, first.planned]] {
        covered.clear();
    }
    // Histograms: states keyed by their values in observed order.
    let mut states: BTreeMap<Vec<u64>, StateRecord> = BTreeMap::new();
    let mut samples = Vec::new();
    let (mut timed_out, mut time) = (0, 0.0);
    for (_, r) in &sorted {
        for s in &r.histogram {
            let key: Vec<u64> = r.observed.iter().map(|o| s.values.get(o).map_or(0, raw)).collect();
            match states.get_mut(&key) {
                Some(m) => m.count += s.count,
                None => {
                    states.insert(key, s.clone());
                }
            }
        }
        timed_out += r.timed_out;
        time += r.time_secs;
        samples.extend(r.timeout_samples.iter().cloned());
    }
    samples.sort_by_key(|t| t.iteration);
    samples.truncate(MAX_TIMEOUT_RECORDS);
    let mut m = RunRecord {
        first_iteration: 0,
        requested: first.planned,
        covered,
        histogram: states.into_values().collect(),
        timed_out,
        timeout_samples: samples,
        time_secs: time,
        ..first.clone()
    };
    let s = m.summary();
    m.set_summary(&s);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::ThreadPosition;
    use crate::shard::{plan, Shard};
    use crate::{check_all, herd_block_of, RunResult, Test};
    use abi::litmus::{Hook, VALUE_FAULT, VALUE_TIMEOUT};

    /// A stand-in for the guest: iteration `i`'s outcome is a function of
    /// the seed and `i` alone (as the guest's placement is), with a
    /// timeout now and then.
    fn outcome(t: &Test, seed: u64, i: u64) -> Option<Vec<u64>> {
        let h = (seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 40;
        if h.is_multiple_of(97) {
            return None;
        }
        Some(
            (0..t.observed.len() as u64)
                .map(|k| if (h >> k) % 5 == 4 { VALUE_FAULT } else { (h >> (2 * k)) % 3 })
                .collect(),
        )
    }

    fn run(t: &Test, policy: crate::Policy, seed: u64, first: u64, end: u64, planned: u64) -> RunResult {
        let mut r = RunResult::new(t, policy, seed, end - first).with_range(first, planned);
        for i in first..end {
            match outcome(t, seed, i) {
                Some(v) => r.record(&v).unwrap(),
                None => {
                    let pos = vec![ThreadPosition {
                        thread: t.threads[0].name.clone(),
                        pc: Some(1),
                        source: None,
                        hook: Some(Hook::AfterPtlRelease),
                    }];
                    r.record_timeout(i, &vec![VALUE_TIMEOUT; t.observed.len()], pos).unwrap()
                }
            }
        }
        r
    }

    /// The catalogue as a job, run whole and as `n` shards.
    fn job(n: u64, runs: u64) -> (ResultsFile, Vec<ResultsFile>) {
        let (tests, _) = check_all(&crate::catalogue_sources()).unwrap();
        let units: Vec<(&Test, crate::Policy)> =
            tests.iter().flat_map(|t| t.expect_policies().into_iter().map(move |p| (t, p))).collect();
        let seed = 42;
        let whole: Vec<RunResult> = units.iter().map(|(t, p)| run(t, *p, seed, 0, runs, runs)).collect();
        let pairs: Vec<(&Test, &RunResult)> = units.iter().zip(&whole).map(|((t, _), r)| (*t, r)).collect();
        let unsharded = ResultsFile::litmus(&pairs, None, true);
        let sizes: Vec<u64> = units.iter().map(|_| runs).collect();
        let planned: Vec<PlannedRun> = unsharded
            .runs
            .iter()
            .map(|r| PlannedRun { test: r.test.clone(), policy: r.policy.clone(), planned: runs })
            .collect();
        let mut shards = Vec::new();
        for i in 1..=n {
            let shard = Shard { index: i, count: n };
            let rs: Vec<(usize, RunResult)> = plan(&sizes, shard)
                .into_iter()
                .map(|p| (p.unit, run(units[p.unit].0, units[p.unit].1, seed, p.first, p.end, runs)))
                .collect();
            let pairs: Vec<(&Test, &RunResult)> = rs.iter().map(|(u, r)| (units[*u].0, r)).collect();
            let mut f = ResultsFile::litmus(&pairs, Some(shard.info()), true);
            f.job = planned.clone();
            shards.push(f);
        }
        (unsharded, shards)
    }

    fn named(fs: &[ResultsFile]) -> Vec<(String, ResultsFile)> {
        fs.iter().map(|f| (format!("shard{}.json", f.shard.unwrap().index), f.clone())).collect()
    }

    /// Four shards merged give the unsharded run's histograms, timeouts and
    /// verdicts, and print the same herd blocks (times aside).
    #[test]
    fn four_merged_shards_equal_the_unsharded_run() {
        let (whole, shards) = job(4, 250);
        // Through JSON, as the files travel.
        let back: Vec<ResultsFile> =
            shards.iter().map(|f| ResultsFile::parse(&f.to_json().to_string()).unwrap()).collect();
        // In any order.
        let mut inputs = named(&back);
        inputs.reverse();
        let m = merge(&inputs).unwrap();
        assert!(m.gaps.is_empty(), "{:?}", m.gaps);
        assert!(m.file.complete);
        assert_eq!(m.file.merged_from.len(), 4);
        m.file.same_results(&whole).unwrap();
        let strip = |s: String| s.lines().filter(|l| !l.starts_with("Time ")).collect::<Vec<_>>().join("\n");
        for (a, b) in m.file.runs.iter().zip(&whole.runs) {
            assert_eq!(strip(herd_block_of(a)), strip(herd_block_of(b)));
        }
        // A merge of merges is the same.
        let halves = [merge(&named(&back[..2])).unwrap().file, merge(&named(&back[2..])).unwrap().file];
        let m2 = merge(&[("a".into(), halves[0].clone()), ("b".into(), halves[1].clone())]).unwrap();
        m2.file.same_results(&whole).unwrap();
    }

    /// A missing shard leaves its iterations unrun: `never` becomes
    /// inconclusive, the file incomplete, and the gap is named.
    #[test]
    fn a_missing_shard_is_a_gap_not_evidence() {
        let (_, shards) = job(4, 100);
        let m = merge(&named(&[shards[0].clone(), shards[1].clone(), shards[3].clone()])).unwrap();
        assert!(!m.file.complete);
        assert!(m.gaps.iter().any(|g| g == "shard(s) 3/4 not given"), "{:?}", m.gaps);
        assert!(m.gaps.iter().any(|g| g.contains("are in no input")), "{:?}", m.gaps);
        let cut: Vec<&RunRecord> = m.file.runs.iter().filter(|r| r.missing > 0).collect();
        assert!(!cut.is_empty());
        for r in cut {
            assert_eq!(r.requested, 100);
            if r.expected.as_deref() == Some("never") && r.matching == 0 {
                assert_eq!(r.expect_result.as_deref(), Some("inconclusive"), "{}", r.test);
            }
        }
        // A run wholly inside the missing shard is named from the job list.
        let (_, shards) = job(4, 10);
        let some: Vec<ResultsFile> = shards.into_iter().filter(|f| f.shard.unwrap().index != 2).collect();
        let m = merge(&named(&some)).unwrap();
        assert!(m.gaps.iter().any(|g| g.contains("none of its 10 planned iterations")), "{:?}", m.gaps);
    }

    #[test]
    fn contradictions_are_errors() {
        let (_, shards) = job(2, 10);
        let e = merge(&named(&[shards[0].clone(), shards[0].clone()])).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        // A run both inputs hold a part of, with another seed (whether the
        // cut between shards 1 and 2 splits a run depends on the catalogue's
        // size, so the other input is shard 1's runs under shard 2's name).
        let mut other_seed = shards[0].clone();
        other_seed.shard = shards[1].shard;
        other_seed.runs[0].seed = 7;
        let e = merge(&named(&[shards[0].clone(), other_seed])).unwrap_err();
        assert!(e.contains("seed"), "{e}");
        let mut other_kind = shards[1].clone();
        other_kind.kind = "explore".into();
        let e = merge(&named(&[shards[0].clone(), other_kind])).unwrap_err();
        assert!(e.contains("kind `explore`"), "{e}");
        let mut unknown = shards[1].clone();
        unknown.kind = "bench".into();
        let e = merge(&named(&[unknown])).unwrap_err();
        assert!(e.contains("no merge rule"), "{e}");
        // Shard 1's iterations again, as an unsharded file.
        let mut overlap = shards[0].clone();
        overlap.shard = None;
        let e = merge(&named(&shards[..1]).into_iter().chain([("x".to_string(), overlap)]).collect::<Vec<_>>())
            .unwrap_err();
        assert!(e.contains("overlap"), "{e}");
    }
}
