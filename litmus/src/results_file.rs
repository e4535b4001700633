//! The results file (`vmm litmus --json FILE`): the same facts as the text
//! output, typed, so that tools read it back — `vmm results merge` folds
//! shards of one job together, `vmm compare` sets a candidate against a
//! baseline. Everything a verdict needs is in the file (which states
//! matched the condition, which were timeouts, what was expected), so
//! neither needs the litmus source.
//!
//! A file carries a `kind`: `litmus` for `vmm litmus` runs. Other kinds
//! (`explore`, whose counts are schedules, not iterations) add their own
//! run shape and merge rule; readers refuse kinds they do not know rather
//! than misread them.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;

use crate::ast::{herd_value, CondKind, Test, Verdict};
use crate::policy::KEYS;
use crate::results::{summarize, ExpectResult, RunResult, StateCount, Summary, Value};

/// Schema id. Bump the number on incompatible changes.
pub const JSON_SCHEMA: &str = "shootdown-results/3";

/// `kind` of `vmm litmus` results.
pub const KIND_LITMUS: &str = "litmus";

/// A whole results file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultsFile {
    pub schema: String,
    /// What produced the runs: [`KIND_LITMUS`] (see the module doc).
    pub kind: String,
    /// False while a job is still writing the file (or was stopped): the
    /// runs in it are what finished.
    #[serde(default = "yes")]
    pub complete: bool,
    /// Set when the file holds one shard of a job (`--shard I/N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// Set by `vmm results merge`: the shards folded into this file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<ShardInfo>,
    /// In a shard's file: every (test, policy) of the whole job with its
    /// planned iterations, so that a merge notices runs that fell entirely
    /// into a shard it was not given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job: Vec<PlannedRun>,
    pub runs: Vec<RunRecord>,
}

/// One (test, policy) of a job.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlannedRun {
    pub test: String,
    pub policy: String,
    pub planned: u64,
}

fn yes() -> bool {
    true
}

/// Shard `index` (1-based) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardInfo {
    pub index: u64,
    pub count: u64,
}

/// A thread of the test: its herd number is its index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadRecord {
    pub id: u64,
    pub name: String,
    /// `vcpu` or `device`.
    pub kind: String,
}

/// One histogram entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    pub count: u64,
    /// Observed name (`P2:r1`, `x`) → value: a number, or `"fault"`,
    /// `"stale-walk"`, `"timeout"`.
    pub values: BTreeMap<String, Json>,
    /// The state satisfies the condition's expression.
    pub matches: bool,
}

impl StateRecord {
    /// A timed-out iteration's state (its values are `timeout`).
    pub fn timed_out(&self) -> bool {
        self.values.values().any(|v| v.as_str() == Some("timeout"))
    }
}

/// Where one thread was when an iteration timed out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadPositionRecord {
    pub thread: String,
    pub pc: Option<u32>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub hook: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutSample {
    pub iteration: u64,
    pub threads: Vec<ThreadPositionRecord>,
}

/// One (test, policy) run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub test: String,
    pub file: String,
    pub hash: String,
    /// `forbidden` or `exists`.
    pub kind: String,
    pub condition: String,
    pub herd_condition: String,
    pub policy: String,
    /// `policy` without `tlb`/`iotlb` (the text's `Policy` line prints them apart).
    pub policy_mm: String,
    pub policy_keys: BTreeMap<String, String>,
    pub seed: u64,
    /// herd thread numbers: vCPU threads in file order, then devices.
    pub threads: Vec<ThreadRecord>,
    /// Observed names as in the test (`P2:r1`, `x`) and as herd prints them (`2:r1`, `[x]`).
    pub observed: Vec<String>,
    pub herd_observed: Vec<String>,
    /// Iterations the job planned for this (test, policy) …
    pub planned: u64,
    /// … the first one this run covers, and how many it was asked for
    /// (all of them unless the job was sharded).
    pub first_iteration: u64,
    pub requested: u64,
    /// After a merge of some of a job's shards: the iteration ranges
    /// `[a, b)` the run holds (its `requested` is then the plan, the rest
    /// counting as never run). Empty when it holds
    /// `[first_iteration, first_iteration + requested)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covered: Vec<[u64; 2]>,
    /// Iterations recorded, completed, timed out, never run.
    pub iterations: u64,
    pub completed: u64,
    pub timed_out: u64,
    pub missing: u64,
    pub histogram: Vec<StateRecord>,
    pub positive: u64,
    pub negative: u64,
    pub validated: bool,
    /// `never`, `sometimes`, `always` over the completed iterations.
    pub observation: String,
    pub matching: u64,
    pub expected: Option<String>,
    pub expect_ok: Option<bool>,
    /// `ok`, `mismatch`, `inconclusive`.
    pub expect_result: Option<String>,
    pub timeout_samples: Vec<TimeoutSample>,
    pub time_secs: f64,
    pub fidelity: Option<String>,
    /// `vmm explore` runs: the search (the histogram counts schedules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explore: Option<crate::explore_results::ExploreRecord>,
}

fn json_value(v: u64) -> Json {
    match Value::from_raw(v) {
        Value::Num(n) => Json::from(n),
        other => Json::from(other.to_string()),
    }
}

fn expect_result_name(e: ExpectResult) -> &'static str {
    match e {
        ExpectResult::Ok => "ok",
        ExpectResult::Mismatch => "mismatch",
        ExpectResult::Inconclusive => "inconclusive",
    }
}

/// `~exists (2:r1=1)`.
pub fn herd_condition(test: &Test) -> String {
    let kw = match test.condition.kind {
        CondKind::Forbidden => "~exists",
        CondKind::Exists => "exists",
    };
    format!("{kw} ({})", test.condition.expr.herd(test))
}

impl RunRecord {
    pub fn new(t: &Test, r: &RunResult) -> RunRecord {
        let s = r.summary(t);
        let names: Vec<String> = t.observed.iter().map(|o| o.name(t)).collect();
        let histogram = r
            .histogram
            .iter()
            .map(|(state, count)| StateRecord {
                count: *count,
                values: names.iter().cloned().zip(state.iter().map(|v| json_value(*v))).collect(),
                matches: t.condition.expr.eval(state),
            })
            .collect();
        let timeout_samples = r
            .timeouts
            .iter()
            .map(|to| TimeoutSample {
                iteration: to.iteration,
                threads: to
                    .positions
                    .iter()
                    .map(|p| ThreadPositionRecord {
                        thread: p.thread.clone(),
                        pc: p.pc,
                        line: p.source.map(|s| s.0),
                        column: p.source.map(|s| s.1),
                        hook: p.hook.map(|h| h.name().to_string()),
                    })
                    .collect(),
            })
            .collect();
        let mut rec = RunRecord {
            test: t.name.clone(),
            file: t.file.clone(),
            hash: t.hash.clone(),
            kind: match t.condition.kind {
                CondKind::Forbidden => "forbidden",
                CondKind::Exists => "exists",
            }
            .into(),
            condition: t.condition.expr.source(t),
            herd_condition: herd_condition(t),
            policy: r.policy.canonical(),
            policy_mm: r.policy.canonical_mm(),
            policy_keys: KEYS.iter().map(|k| (k.name.to_string(), r.policy.get(k.key))).collect(),
            seed: r.seed,
            threads: t
                .threads
                .iter()
                .enumerate()
                .map(|(i, th)| ThreadRecord { id: i as u64, name: th.name.clone(), kind: th.kind.name().into() })
                .collect(),
            observed: names,
            herd_observed: t.observed.iter().map(|o| o.herd_name(t)).collect(),
            planned: r.planned,
            first_iteration: r.first_iteration,
            requested: r.requested,
            covered: Vec::new(),
            iterations: 0,
            completed: 0,
            timed_out: 0,
            missing: 0,
            histogram,
            positive: 0,
            negative: 0,
            validated: false,
            observation: String::new(),
            matching: 0,
            expected: s.expected.map(|e| e.name().to_string()),
            expect_ok: None,
            expect_result: None,
            timeout_samples,
            time_secs: r.time_secs,
            fidelity: r.fidelity.clone(),
            explore: r.explore.clone(),
        };
        rec.set_summary(&s);
        rec
    }

    /// The condition kind.
    pub fn cond_kind(&self) -> Option<CondKind> {
        match self.kind.as_str() {
            "forbidden" => Some(CondKind::Forbidden),
            "exists" => Some(CondKind::Exists),
            _ => None,
        }
    }

    /// litmus7's reading of the histogram, recomputed from the record's own
    /// facts (states, their `matches` flags, timeouts, `requested`,
    /// `expected`) — what `results merge` does after adding histograms.
    pub fn summary(&self) -> Summary {
        let states =
            self.histogram.iter().map(|s| StateCount { count: s.count, timed_out: s.timed_out(), matches: s.matches });
        let expected = self.expected.as_deref().and_then(Verdict::from_name);
        summarize(self.cond_kind().unwrap_or(CondKind::Forbidden), expected, self.requested, self.timed_out, states)
    }

    /// Writes a summary's figures into the record.
    pub fn set_summary(&mut self, s: &Summary) {
        self.iterations = s.total;
        self.completed = s.completed;
        self.timed_out = s.timed_out;
        self.missing = s.missing;
        self.positive = s.positive;
        self.negative = s.negative;
        self.validated = s.validated;
        self.observation = s.observation.name().into();
        self.matching = s.matching;
        self.expected = s.expected.map(|e| e.name().to_string());
        self.expect_ok = s.expect.map(|e| e.passed());
        self.expect_result = s.expect.map(|e| expect_result_name(e).to_string());
    }

    /// One state as the herd block prints it (`2:r0=1; 2:r1=FAULT;`).
    pub fn herd_state(&self, s: &StateRecord) -> String {
        self.observed
            .iter()
            .zip(&self.herd_observed)
            .map(|(name, herd)| {
                let v = s.values.get(name).map_or_else(
                    || "?".to_string(),
                    |v| match v {
                        Json::Number(n) => n.to_string(),
                        Json::String(t) => herd_value(abi::litmus::special_value_from_name(t).unwrap_or(0)),
                        other => other.to_string(),
                    },
                );
                format!("{herd}={v};")
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The iteration ranges `[a, b)` the run holds.
    pub fn ranges(&self) -> Vec<[u64; 2]> {
        if self.covered.is_empty() {
            vec![[self.first_iteration, self.first_iteration + self.requested]]
        } else {
            self.covered.clone()
        }
    }

    /// `(test, policy)`: a run's identity within one job.
    pub fn key(&self) -> (String, String) {
        (self.test.clone(), self.policy.clone())
    }
}

impl ResultsFile {
    /// The results of a (possibly sharded) `vmm litmus` job.
    pub fn litmus(runs: &[(&Test, &RunResult)], shard: Option<ShardInfo>, complete: bool) -> ResultsFile {
        ResultsFile {
            schema: JSON_SCHEMA.into(),
            kind: KIND_LITMUS.into(),
            complete,
            shard,
            merged_from: Vec::new(),
            job: Vec::new(),
            runs: runs.iter().map(|(t, r)| RunRecord::new(t, r)).collect(),
        }
    }

    /// Reads a results file, refusing other schemas and kinds with a
    /// message that says which.
    pub fn parse(text: &str) -> Result<ResultsFile, String> {
        let v: Json = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let schema = v.get("schema").and_then(|s| s.as_str()).unwrap_or("");
        if schema != JSON_SCHEMA {
            return Err(format!(
                "schema `{schema}`, expected `{JSON_SCHEMA}` (written by another version of vmm; re-run it)"
            ));
        }
        let kind = v.get("kind").and_then(|s| s.as_str()).unwrap_or("");
        if kind != KIND_LITMUS && kind != crate::explore_results::KIND_EXPLORE {
            return Err(format!(
                "results of kind `{kind}`; this version reads `{KIND_LITMUS}` and `{}` results",
                crate::explore_results::KIND_EXPLORE
            ));
        }
        serde_json::from_value(v).map_err(|e| format!("malformed results: {e}"))
    }

    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).expect("results serialise")
    }

    /// Same tests, policies, seeds, histograms, timeouts and verdicts as
    /// `other`, run for run, in the same order (times, shard bookkeeping
    /// and completeness aside): what a merge of shards must give back.
    pub fn same_results(&self, other: &ResultsFile) -> Result<(), String> {
        if self.runs.len() != other.runs.len() {
            return Err(format!("{} runs vs {}", self.runs.len(), other.runs.len()));
        }
        for (a, b) in self.runs.iter().zip(&other.runs) {
            let norm = |r: &RunRecord| RunRecord { time_secs: 0.0, ..r.clone() };
            if norm(a) != norm(b) {
                let (ja, jb) = (serde_json::to_value(norm(a)).unwrap(), serde_json::to_value(norm(b)).unwrap());
                let diff: Vec<String> = ja
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, v)| jb.get(k.as_str()) != Some(v))
                    .map(|(k, v)| format!("{k}: {v} vs {}", jb.get(k.as_str()).unwrap_or(&Json::Null)))
                    .collect();
                return Err(format!("{} [{}]: {}", a.test, a.policy, diff.join("; ")));
            }
        }
        Ok(())
    }
}
