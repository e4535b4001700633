//! `vmm litmus`: runs litmus tests (the `litmus` crate parses, checks and
//! compiles them; the guest interprets the bytecode) and prints herd-style
//! results.
//!
//! One guest boot runs many iterations of one (test, policy). An iteration
//! that stops making progress (a hook paused under a lock another thread
//! needs, a device waiting forever) is ended by the session's watch: it
//! reads where each thread was, records the outcome `timeout`, and the run
//! boots again at the next iteration.
//!
//! Nothing gathered is lost: each finished block is printed at once and the
//! JSON (if asked for) rewritten atomically after it; on SIGINT/SIGTERM or a
//! fatal error mid-run the verdict table of what finished is printed,
//! marked INTERRUPTED or ERROR, and the JSON says `"complete": false`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use abi::config::{IotlbModel, TlbModel};
use litmus::{
    any_mismatch, file_summary, herd_block, kernel_matrix, kernel_table, policy_matrix, unavailable, verdict_table,
    CheckOptions, KernelCell, Policy, Profile, ResultsFile, RunResult, Shard, Test,
};

use super::interrupt;
use super::output::{self, OutputError};
use super::progress::Progress;
use crate::error::{chain, Error, Result};
use crate::services::litmus::Measured;
use crate::services::trace::TraceOut;
use crate::status;
use crate::vstate::VmConfig;

mod load;
mod policy_run;
pub use load::{load, load_all, load_with};
pub use policy_run::{iommu_config, run_policy, run_policy_range};

/// `vmm litmus` options, typed.
#[derive(Clone, Debug, Default)]
pub struct LitmusArgs {
    /// Files or directories (searched for `*.toml`); empty = the built-in catalogue.
    pub paths: Vec<PathBuf>,
    pub runs: u64,
    pub policies: Vec<Policy>,
    pub json: Option<PathBuf>,
    pub check: bool,
    /// `--tlb` (None = the policy's or the default).
    pub tlb: Option<TlbModel>,
    pub iotlb: Option<IotlbModel>,
    pub pwc: Option<bool>,
    pub seed: Option<u64>,
    /// `--vcpus`; None = as many as the test has vCPU threads.
    pub vcpus: Option<u64>,
    pub iteration_timeout: Duration,
    /// `--trace FILE`: write the trace of every (test, policy) run.
    pub trace: Option<PathBuf>,
    /// `--trace-runs K`: trace only the first K iterations of each run.
    pub trace_runs: Option<u64>,
    /// `--trace-ring N`: records per vCPU ring.
    pub trace_ring: Option<u64>,
    /// `--log-dir DIR`: one herdtools7 log per policy.
    pub log_dir: Option<PathBuf>,
    /// `--shard I/N`: run only this part of the job.
    pub shard: Option<Shard>,
    /// `--baseline POLICY`: also run every test under POLICY and compare.
    pub baseline: Option<Policy>,
    /// `--progress`: show progress on stderr even when it is not a terminal.
    pub force_progress: bool,
    /// Where iterations are counted (set by [`run`] for the whole job).
    pub progress: Progress,
    /// `--tap`: stdout is TAP (kselftest's `TAP version 13`), the herd
    /// blocks as `#` diagnostic lines.
    pub tap: bool,
    /// `vmm bench`: count what the iterations cost ([`PolicyRun::measured`]).
    pub measure: bool,
    /// `--kernel PROFILE|all`: run on that profile, or one row per profile.
    pub kernel: Option<String>,
    /// `--allow-hypothetical`: run policies no kernel ever had (labelled).
    pub allow_hypothetical: bool,
}

/// The rows (policies) each test runs under, as `vmm litmus` and `vmm
/// explore` choose them: `--policy` (or the test's `[expect]` policies)
/// over the command line's overrides, `--kernel PROFILE` setting the
/// profile, or with `--kernel all` every profile with the given keys.
pub struct Rows {
    policies: Vec<Policy>,
    pub overrides: Policy,
    kernel_all: bool,
}

impl Rows {
    /// `overrides`: the command line's keys (TLB models…); `kernel`: `--kernel`.
    pub fn new(policies: &[Policy], mut overrides: Policy, kernel: Option<&str>) -> Result<Rows> {
        if let Some(k) = kernel.filter(|k| *k != "all") {
            let p = Policy::parse(&format!("kernel={k}")).map_err(|e| Error::Litmus(format!("--kernel {k}: {e}")))?;
            overrides = p.merged(&overrides);
        }
        for p in policies {
            if p.kernel_range().is_some() {
                return Err(Error::Litmus(format!(
                    "--policy {}: a kernel range runs with --kernel all, not --policy",
                    p.canonical()
                )));
            }
        }
        Ok(Rows { policies: policies.to_vec(), overrides, kernel_all: kernel == Some("all") })
    }

    /// The rows of `test`, in order.
    pub fn of(&self, test: &Test) -> Vec<Policy> {
        if self.kernel_all {
            let base: Vec<Policy> = if self.policies.is_empty() { vec![self.overrides] } else { self.policies.clone() };
            base.iter().flat_map(|p| kernel_matrix(&p.merged(&self.overrides))).collect()
        } else {
            policy_matrix(&self.policies, &test.expect_policies(), &self.overrides)
        }
    }

    /// Every row must be a kernel that existed, unless asked otherwise
    /// (`--allow-hypothetical`): refused before anything runs.
    pub fn refuse_hypothetical(&self, tests: &[Test], extra: Option<Policy>) -> Result<()> {
        for test in tests {
            for p in self.of(test).into_iter().chain(extra) {
                let r = p.reality();
                if r.is_hypothetical() {
                    return Err(Error::Litmus(format!(
                        "{}: policy `{}` is no kernel that existed: {}\n(run with --allow-hypothetical to run it anyway, labelled hypothetical)",
                        test.name,
                        p.canonical(),
                        r.to_string().trim_start_matches("hypothetical: ")
                    )));
                }
            }
        }
        Ok(())
    }
}

/// What happened to one (test, policy).
pub struct PolicyRun {
    pub result: RunResult,
    /// Iterations that did not return every page.
    pub leaks: u64,
    pub guest_error: Option<String>,
    /// From the start of the run to the first iteration whose final state
    /// satisfied the condition (the forbidden or `exists` state).
    pub first_match: Option<Duration>,
    /// The run was interrupted (SIGINT/SIGTERM) before its last iteration.
    pub interrupted: bool,
    /// With [`LitmusArgs::measure`]: what the iterations cost.
    pub measured: Measured,
}

/// How the whole invocation ended.
enum Ending {
    Complete,
    Interrupted(i32),
    Failed(Error),
}

/// Runs every (test, policy) — or this shard's part of them — and prints
/// the results; returns the exit status.
pub fn run(base: &VmConfig, args: &LitmusArgs) -> Result<i32> {
    // Output paths are checked before anything runs.
    if let Some(p) = &args.json {
        output::check_output_path("--json", p)?;
    }
    if let Some(p) = &args.trace {
        output::check_output_path("--trace", p)?;
    }
    let tests = load_with(&args.paths, &CheckOptions { allow_hypothetical: args.allow_hypothetical })?;
    let kernel_all = args.kernel.as_deref() == Some("all");
    // With --tap, stdout is TAP: everything else goes out as `#` lines.
    let tap = args.tap;
    let say = |text: &str| {
        if tap {
            print!("{}", litmus::tap::diagnostics(text));
        } else {
            print!("{text}");
        }
    };
    let trace = match &args.trace {
        Some(p) => Some(Arc::new(Mutex::new(TraceOut::create(p)?))),
        None => None,
    };
    let seed = args.seed.unwrap_or_else(|| {
        let s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        let s = s % 1_000_000_000;
        if tap {
            println!("{}", litmus::tap::HEADER);
        }
        say(&format!("Seed {s} (re-run with --seed {s})\n"));
        s
    });
    let mut overrides = Policy::default();
    if let Some(m) = args.tlb {
        overrides.set_tlb_model(m);
    }
    if let Some(m) = args.iotlb {
        overrides.set_iotlb_model(m);
    }
    if let Some(on) = args.pwc {
        overrides.set_pwc(on);
    }
    let rows = Rows::new(&args.policies, overrides, args.kernel.as_deref())?;
    let baseline = args.baseline.map(|b| b.merged(&rows.overrides));
    let rows_of = |test: &Test| rows.of(test);
    if !args.allow_hypothetical {
        rows.refuse_hypothetical(&tests, baseline)?;
    }
    let mut log_dir = output::create_log_dir(args.log_dir.as_deref())?;
    if let Err(e) = interrupt::install() {
        log::warn!("cannot install SIGINT/SIGTERM handlers ({e}); an interrupt loses this run's results");
    }

    // The job: every (test, policy) in order, the baseline first.
    let mut units: Vec<(usize, Policy)> = Vec::new();
    // (test, policy) rows a release cannot run (an operation it lacks).
    let mut skipped: Vec<(usize, Policy, String)> = Vec::new();
    for (ti, test) in tests.iter().enumerate() {
        let mut matrix = rows_of(test);
        if let Some(b) = baseline {
            matrix.retain(|p| p.abi != b.abi);
            matrix.insert(0, b);
        }
        for p in matrix {
            match unavailable(test, &p) {
                Some(why) => {
                    say(&format!("Skip {} {}: {why}\n\n", test.name, p.canonical()));
                    skipped.push((ti, p, why));
                }
                None => units.push((ti, p)),
            }
        }
    }
    let shard = args.shard.unwrap_or(Shard::ALL);
    let pieces = litmus::shard::plan(&vec![args.runs; units.len()], shard);
    if args.shard.is_some() {
        let n: u64 = pieces.iter().map(|p| p.end - p.first).sum();
        say(&format!(
            "Shard {shard}: {n} of {} iterations, {} (test, policy) part(s)\n\n",
            args.runs * units.len() as u64,
            pieces.len()
        ));
    }
    if tap {
        if args.seed.is_some() {
            println!("{}", litmus::tap::HEADER);
        }
        println!("{}", litmus::tap::plan(pieces.len()));
    }
    let mut tap_points = Vec::new();
    let total: u64 = pieces.iter().map(|p| p.end - p.first).sum();
    let mut args = args.clone();
    args.progress = Progress::new(total, "iterations", args.force_progress);
    let args = &args;

    let mut runs: Vec<(usize, PolicyRun)> = Vec::new();
    let mut worst = status::OK;
    let mut ending = Ending::Complete;
    let mut summarised = 0; // runs[..summarised] have had their file summary
    let summary = |runs: &[(usize, PolicyRun)], from: usize| {
        if let Some(&(ti, _)) = runs.get(from) {
            let refs: Vec<&RunResult> = runs[from..].iter().map(|(_, r)| &r.result).collect();
            say(&format!("{}\n", file_summary(&tests[ti], &refs)));
        }
    };
    for (k, piece) in pieces.iter().enumerate() {
        if let Some(sig) = interrupt::interrupted() {
            ending = Ending::Interrupted(sig);
            break;
        }
        let (ti, policy) = units[piece.unit];
        let test = &tests[ti];
        args.progress.set_message(format!("{} [{}]", test.name, policy.canonical()));
        let range = piece.first..piece.end;
        let pr = match run_policy_range(base, args, test, policy, seed, trace.as_ref(), range, args.runs) {
            Ok(pr) => pr,
            Err(e) => {
                ending = Ending::Failed(e);
                break;
            }
        };
        let block = herd_block(test, &pr.result);
        say(&block);
        say(&format!("Kernel {}\n", policy.reality()));
        if let Some(l) = &mut log_dir {
            if let Err(source) = l.append(&pr.result.policy, &block) {
                let path = l.dir().to_path_buf();
                ending = Ending::Failed(Error::Output(OutputError::Write { option: "--log-dir", path, source }));
                break;
            }
        }
        if pr.leaks > 0 {
            say(&format!("Leak {} {} iterations did not return every page\n", test.name, pr.leaks));
        }
        if let Some(e) = &pr.guest_error {
            say(&format!("Error {} {e}\n", test.name));
            worst = worst.max(status::GUEST_ERROR);
        }
        say("\n");
        if tap {
            let mut point = litmus::tap::litmus_point(&litmus::RunRecord::new(test, &pr.result));
            if pr.leaks > 0 || pr.guest_error.is_some() {
                point.outcome = litmus::tap::Outcome::Fail;
                point.reason =
                    pr.guest_error.clone().unwrap_or_else(|| format!("{} iterations leaked pages", pr.leaks));
            }
            tap_points.push(point);
            print!("{}", litmus::tap::line(tap_points.len(), &tap_points[tap_points.len() - 1]));
        }
        let interrupted = pr.interrupted;
        runs.push((ti, pr));
        // The test's last part: its file summary.
        if pieces.get(k + 1).is_none_or(|n| units[n.unit].0 != ti) {
            summary(&runs, summarised);
            summarised = runs.len();
        }
        if let Some(p) = &args.json {
            let file = results_file(&tests, &runs, &units, args, false);
            write_json(p, &file, pieces.len(), "running")?;
        }
        if interrupted {
            ending = Ending::Interrupted(interrupt::interrupted().unwrap_or(libc::SIGINT));
            break;
        }
    }
    // A test cut short still gets its summary of what ran.
    summary(&runs, summarised);
    args.progress.finish();

    let pairs: Vec<(&Test, &RunResult)> = runs.iter().map(|(ti, r)| (&tests[*ti], &r.result)).collect();
    let table = verdict_table(&pairs);
    let end_note = match &ending {
        Ending::Complete => None,
        Ending::Interrupted(sig) => Some(format!(
            "INTERRUPTED by {} after {} of {} (test, policy) runs",
            interrupt::name(*sig),
            runs.len(),
            pieces.len()
        )),
        Ending::Failed(e) => {
            Some(format!("ERROR after {} of {} (test, policy) runs: {}", runs.len(), pieces.len(), chain(e)))
        }
    };
    match &end_note {
        Some(note) => say(&table.replacen("Verdicts", &format!("Verdicts ({note})"), 1)),
        None => say(&table),
    }
    if kernel_all {
        say(&format!("\n{}", kernel_cells(&tests, &runs, &skipped)));
    }
    let results = results_file(&tests, &runs, &units, args, matches!(ending, Ending::Complete));
    if let Some(b) = baseline {
        let cmp =
            litmus::compare::against_baseline(&results, |r| Policy::parse(&r.policy).is_ok_and(|p| p.abi == b.abi));
        say(&format!("\nCompared with the baseline {}\n", b.canonical()));
        say(&cmp.render());
        if cmp.new_violations() > 0 {
            worst = worst.max(status::TESTS_FAILED);
        }
    }
    if let Some(p) = &args.json {
        let end = match &ending {
            Ending::Complete => "complete".to_string(),
            Ending::Interrupted(sig) => format!("interrupted ({})", interrupt::name(*sig)),
            Ending::Failed(e) => format!("error: {}", chain(e)),
        };
        write_json(p, &results, pieces.len(), &end)?;
    }
    if let (Some(t), Some(p)) = (&trace, &args.trace) {
        let t = t.lock().unwrap_or_else(|e| e.into_inner());
        match t.error() {
            Some(e) => {
                log::error!("{e}");
                worst = worst.max(status::SETUP_ERROR);
            }
            None => say(&format!("Trace written to {} (vmm trace report {})\n", p.display(), p.display())),
        }
    }
    if tap {
        print!("{}", litmus::tap::totals(&tap_points));
    }
    let leaks = runs.iter().any(|(_, r)| r.leaks > 0);
    if args.check && (any_mismatch(&pairs) || leaks) {
        worst = worst.max(status::TESTS_FAILED);
    }
    match ending {
        Ending::Complete => Ok(worst),
        Ending::Interrupted(sig) => Ok(128 + sig),
        Ending::Failed(e) => Err(e),
    }
}

/// The kernel x verdict table of `--kernel all`: per test, per profile,
/// what ran (all its parts, if the job was sharded) or why it did not.
fn kernel_cells(tests: &[Test], runs: &[(usize, PolicyRun)], skipped: &[(usize, Policy, String)]) -> String {
    let rows: Vec<(&Test, Vec<(Profile, KernelCell<'_>)>)> = tests
        .iter()
        .enumerate()
        .map(|(ti, test)| {
            let mut cells: Vec<(Profile, KernelCell<'_>)> = runs
                .iter()
                .filter(|(t, _)| *t == ti)
                .map(|(_, r)| (r.result.policy.kernel(), KernelCell::Ran(&r.result)))
                .collect();
            cells.extend(
                skipped
                    .iter()
                    .filter(|(t, _, _)| *t == ti)
                    .map(|(_, p, why)| (p.kernel(), KernelCell::Skipped(why.clone()))),
            );
            (test, cells)
        })
        .collect();
    kernel_table(&rows)
}

/// The results so far as a results file (schema `shootdown-results/3`).
fn results_file(
    tests: &[Test],
    runs: &[(usize, PolicyRun)],
    units: &[(usize, Policy)],
    args: &LitmusArgs,
    complete: bool,
) -> ResultsFile {
    let pairs: Vec<(&Test, &RunResult)> = runs.iter().map(|(ti, r)| (&tests[*ti], &r.result)).collect();
    let mut results = ResultsFile::litmus(&pairs, args.shard.map(|s| s.info()), complete);
    if args.shard.is_some() {
        results.job = units
            .iter()
            .map(|(ti, p)| litmus::PlannedRun {
                test: tests[*ti].name.clone(),
                policy: p.canonical(),
                planned: args.runs,
            })
            .collect();
    }
    results
}

/// Writes `results` atomically, with how the invocation ended (`end`) and
/// how many (test, policy) parts it planned.
fn write_json(path: &Path, results: &ResultsFile, planned: usize, end: &str) -> std::result::Result<(), OutputError> {
    let mut v = results.to_json();
    if let Some(o) = v.as_object_mut() {
        o.insert("end".into(), end.into());
        o.insert("planned_runs".into(), planned.into());
    }
    output::write_json("--json", path, &v)
}
