//! What `vmm explore` adds to a run's results: the search behind the
//! histogram (its bound, whether it was complete, the witness schedule),
//! and how shards of one search are merged (`vmm results merge` on files
//! of kind `explore`).
//!
//! The histogram and `Observation` of an explore run count schedules, not
//! iterations. The verdicts follow the same rule as `vmm litmus`'s: a
//! `never` needs every schedule within the bound, so it holds only when the
//! search was `complete` and no schedule deadlocked; `sometimes` needs one
//! violating schedule.

use serde::{Deserialize, Serialize};

use crate::results_file::{ResultsFile, RunRecord, ShardInfo, JSON_SCHEMA};

/// `kind` of `vmm explore` results.
pub const KIND_EXPLORE: &str = "explore";

/// The search of one (test, policy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExploreRecord {
    /// The engine's result: bound, counts, histogram of final states (raw
    /// values in observed order), witness schedule.
    pub search: explore::ExploreResult<Vec<u64>>,
    /// The witness as a litmus file that forces it, and as a timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline_file: Option<String>,
    /// Scheduling points run (all schedules), exits of vCPUs waiting for
    /// their turn, and guest boots.
    pub points: u64,
    #[serde(default)]
    pub parks: u64,
    pub boots: u64,
}

impl ExploreRecord {
    /// The block's `Explore …` line (after `Policy`).
    pub fn line(&self) -> String {
        let s = &self.search;
        let how = match &s.strategy {
            explore::Strategy::Bounded { preemptions: Some(k), .. } => format!("preemptions={k}"),
            explore::Strategy::Bounded { preemptions: None, .. } => "preemptions=unbounded".into(),
            explore::Strategy::Pct { depth, runs } => format!("pct={depth} runs={runs}"),
        };
        let reduction = match &s.strategy {
            explore::Strategy::Bounded { reduction: explore::Reduction::None, .. } => " reduction=none",
            _ => "",
        };
        format!("Explore {how} schedules={} {}{reduction}", s.schedules, if s.complete { "complete" } else { "limit" })
    }

    /// Lines after `Time`: the witness, PCT's bound, the search's figures.
    pub fn trailer(&self) -> String {
        let s = &self.search;
        let mut o = String::new();
        if let Some(w) = &s.witness {
            let at = self.witness_file.as_deref().unwrap_or("(not written)");
            o += &format!("Witness {at} preemptions={} steps={}\n", w.preemptions, w.steps.len());
        }
        let sched = s.schedules + s.discovery;
        o += &format!(
            "Cost schedules={sched} points={} waits={} boots={} ({:.1} points a schedule, {:.2} wait exits a point)\n",
            self.points,
            self.parks,
            self.boots,
            self.points as f64 / sched.max(1) as f64,
            self.parks as f64 / self.points.max(1) as f64
        );
        if let Some(b) = &s.pct {
            o += &format!(
                "Pct depth={} threads={} k={}{} runs={}: a bug of depth <= {} is found with probability >= {:.3e} per run, >= {:.4} over the runs\n",
                b.depth,
                b.threads,
                b.k,
                if b.k_exceeded { " (exceeded: bound not guaranteed)" } else { "" },
                b.runs,
                b.depth,
                b.per_run,
                b.overall
            );
        }
        o
    }

    /// Why a `never`/`always` is inconclusive, if the search is the reason.
    pub fn incomplete_reason(&self) -> Option<String> {
        (!self.search.complete).then(|| match &self.search.strategy {
            explore::Strategy::Pct { .. } => "a PCT sample is never a complete search".to_string(),
            _ => format!("the search stopped after {} schedules (limit)", self.search.schedules),
        })
    }
}

/// Iterations a run's verdict needs: every schedule of a complete search;
/// one more than were run when the search stopped short.
pub fn requested(search: &explore::ExploreResult<Vec<u64>>) -> u64 {
    search.schedules + u64::from(!search.complete)
}

impl ResultsFile {
    /// The results of a (possibly sharded) `vmm explore` job.
    pub fn explore(runs: Vec<RunRecord>, shard: Option<ShardInfo>, complete: bool) -> ResultsFile {
        ResultsFile {
            schema: JSON_SCHEMA.into(),
            kind: KIND_EXPLORE.into(),
            complete,
            shard,
            merged_from: Vec::new(),
            job: Vec::new(),
            runs,
        }
    }
}

/// Merges the runs of shards of one explore job (same test and policy in
/// each): the engine's merge (counts and histograms add up, the best
/// witness wins, complete only if every shard is), then the verdict judged
/// again over the sum.
pub fn merge_runs(parts: &[(&str, &RunRecord)]) -> Result<RunRecord, String> {
    let (first_name, first) = parts[0];
    let label = format!("{} [{}]", first.test, first.policy);
    let mut searches = Vec::new();
    for (name, r) in parts {
        if r.hash != first.hash || r.observed != first.observed || r.condition != first.condition {
            return Err(format!("{label}: the test differs between {first_name} and {name}: not parts of one job"));
        }
        let x = r.explore.as_ref().ok_or_else(|| format!("{label}: {name} holds no search"))?;
        searches.push(x.search.clone());
    }
    let merged = explore::merge(searches).map_err(|e| format!("{label}: {e}"))?;
    let mut rec = first.clone();
    let names = rec.observed.clone();
    let template = first.histogram.first().cloned();
    let all_states: Vec<_> = parts.iter().flat_map(|(_, r)| r.histogram.iter()).collect();
    rec.histogram = merged
        .histogram
        .iter()
        .map(|(state, count)| {
            // Take the state's record (values, `matches`) from any part.
            let found = all_states.iter().find(|s| names.iter().zip(state).all(|(n, v)| raw(s.values.get(n)) == *v));
            let mut s = found.map(|s| (*s).clone()).or_else(|| template.clone()).unwrap_or_else(|| {
                crate::results_file::StateRecord { count: 0, values: Default::default(), matches: false }
            });
            s.count = *count;
            s
        })
        .collect();
    rec.requested = requested(&merged);
    rec.planned = rec.requested;
    rec.first_iteration = 0;
    rec.time_secs = parts.iter().map(|(_, r)| r.time_secs).sum();
    rec.timed_out = rec.histogram.iter().filter(|s| s.timed_out()).map(|s| s.count).sum();
    rec.explore = Some(ExploreRecord {
        points: parts.iter().filter_map(|(_, r)| r.explore.as_ref()).map(|x| x.points).sum(),
        parks: parts.iter().filter_map(|(_, r)| r.explore.as_ref()).map(|x| x.parks).sum(),
        boots: parts.iter().filter_map(|(_, r)| r.explore.as_ref()).map(|x| x.boots).sum(),
        witness_file: parts
            .iter()
            .filter_map(|(_, r)| r.explore.as_ref())
            .find(|p| p.search.witness.is_some() && p.search.witness == merged.witness)
            .and_then(|p| p.witness_file.clone()),
        timeline_file: None,
        search: merged,
    });
    let s = rec.summary();
    rec.set_summary(&s);
    Ok(rec)
}

fn raw(v: Option<&serde_json::Value>) -> u64 {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(serde_json::Value::String(s)) => abi::litmus::special_value_from_name(s).unwrap_or(0),
        _ => 0,
    }
}
