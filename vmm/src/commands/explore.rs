//! `vmm explore`: searches the schedules of litmus tests instead of
//! replaying the one their hooks script (`docs/explore.md`).
//!
//! Per (test, policy): boots the guest in `GuestMode::Explore` with the
//! litmus session (blob, `LITMUS_RESULT`, stall watch) and the explore
//! session (`EXPLORE_NEXT`, park port); one boot runs schedule after
//! schedule; a schedule that never ends costs a boot. The result is the
//! herd-style block with the search's `Explore` line, the witness of a
//! violation written as a litmus file that forces it and as a timeline, and
//! under `--check` the witness replayed by `vmm litmus`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abi::config::GuestMode;
use abi::litmus::VALUE_TIMEOUT;
use explore::Explorer;
use litmus::explore_results::{self, ExploreRecord};
use litmus::results_file::{ResultsFile, RunRecord, ShardInfo};
use litmus::{compile, herd_block, CheckOptions, CompileOptions, Policy, RunResult, Test};

use super::interrupt::{self, InterruptWatch};
use super::litmus::LitmusArgs;
use super::output::{self, OutputError};
use super::progress::Progress;
use crate::error::{Error, Result};
use crate::services::explore::ExploreSession;
use crate::services::litmus::{LitmusSession, STALLED};
use crate::services::{self, StandardOptions};
use crate::status;
use crate::vstate::{vm, EndReason, Service, VmConfig};

/// Iterations a witness is replayed for under `--check`.
pub const REPLAY_RUNS: u64 = 10;

/// `vmm explore` options, typed.
#[derive(Clone, Debug)]
pub struct ExploreArgs {
    pub paths: Vec<PathBuf>,
    pub policies: Vec<Policy>,
    pub strategy: explore::Strategy,
    pub max_schedules: Option<u64>,
    pub shard: explore::Shard,
    pub seed: u64,
    pub check: bool,
    /// A schedule that runs longer is recorded as `timeout`.
    pub iteration_timeout: Duration,
    /// Where witnesses go (`--witness-dir`).
    pub witness_dir: PathBuf,
    pub json: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub force_progress: bool,
    /// `--kernel PROFILE|all`, as for `vmm litmus`.
    pub kernel: Option<String>,
    /// `--allow-hypothetical`, as for `vmm litmus`.
    pub allow_hypothetical: bool,
}

/// One (test, policy) search.
pub struct Searched {
    pub run: RunResult,
    /// `--check`: how the witness replayed under `vmm litmus`, and whether it
    /// showed the state on every iteration.
    pub replay: Option<(String, bool)>,
    pub error: Option<String>,
}

pub fn run(base: &VmConfig, args: &ExploreArgs) -> Result<i32> {
    if let Some(p) = &args.json {
        output::check_output_path("--json", p)?;
    }
    let opts = CheckOptions { allow_hypothetical: args.allow_hypothetical };
    let tests = super::litmus::load_all(&args.paths, litmus::explore_sources, &opts)?;
    // The TLB models a search relies on: deterministic.
    let mut overrides = Policy::default();
    overrides.set_tlb_model(abi::config::TlbModel::Lazy);
    overrides.set_iotlb_model(abi::config::IotlbModel::Lazy);
    let rows = super::litmus::Rows::new(&args.policies, overrides, args.kernel.as_deref())?;
    if !args.allow_hypothetical {
        rows.refuse_hypothetical(&tests, None)?;
    }
    let mut logs = output::create_log_dir(args.log_dir.as_deref())?;
    if let Err(e) = interrupt::install() {
        log::warn!("cannot install SIGINT/SIGTERM handlers ({e}); an interrupt loses this run's results");
    }
    let mut worst = status::OK;
    let mut done: Vec<(&Test, Searched)> = Vec::new();
    'tests: for test in &tests {
        for policy in rows.of(test) {
            if interrupt::interrupted().is_some() {
                worst = worst.max(status::TESTS_FAILED);
                break 'tests;
            }
            if let Some(why) = litmus::unavailable(test, &policy) {
                println!("Skip {} {}: {why}\n", test.name, policy.canonical());
                continue;
            }
            let s = search(base, args, test, policy)?;
            let mut text = herd_block(test, &s.run);
            if let Some((obs, ok)) = &s.replay {
                text += &format!("Replay {obs}{}\n", if *ok { "" } else { " (expected the state on every iteration)" });
            }
            print!("{text}");
            if let Some(l) = &mut logs {
                l.append(&s.run.policy, &text).map_err(|source| {
                    Error::Output(OutputError::Write {
                        option: "--log-dir",
                        path: args.log_dir.clone().unwrap_or_default(),
                        source,
                    })
                })?;
            }
            if let Some(e) = &s.error {
                println!("Error {} {e}", test.name);
                worst = worst.max(status::GUEST_ERROR);
            }
            println!();
            done.push((test, s));
        }
    }
    let pairs: Vec<(&Test, &RunResult)> = done.iter().map(|(t, s)| (*t, &s.run)).collect();
    print!("{}", litmus::verdict_table(&pairs));
    if let Some(path) = &args.json {
        let runs = pairs.iter().map(|(t, r)| RunRecord::new(t, r)).collect();
        let shard = (args.shard != explore::Shard::ALL)
            .then_some(ShardInfo { index: args.shard.index as u64, count: args.shard.count as u64 });
        let file = ResultsFile::explore(runs, shard, interrupt::interrupted().is_none());
        output::write_json("--json", path, &file.to_json())?;
    }
    let replay_failed = done.iter().any(|(_, s)| s.replay.as_ref().is_some_and(|(_, ok)| !ok));
    if args.check && (litmus::any_mismatch(&pairs) || replay_failed) {
        worst = worst.max(status::TESTS_FAILED);
    }
    Ok(worst)
}

/// A file-name-safe form of a policy: `kernel=v6.6,nested-range=full` →
/// `kernel-v6.6+nested-range-full`.
pub fn slug(policy: &str) -> String {
    let s: String = policy
        .chars()
        .map(|c| match c {
            '=' => '-',
            ',' => '+',
            c if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' => c,
            _ => '_',
        })
        .collect();
    if s.is_empty() {
        "default".into()
    } else {
        s
    }
}

/// Writes the witness of `test` under `policy` (a litmus file that forces
/// it and a timeline); returns their paths.
fn write_witness(
    dir: &Path,
    test: &Test,
    policy: &Policy,
    w: &explore::Witness<Vec<u64>>,
    seed: u64,
) -> std::result::Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let base = format!("{}--{}", test.name, slug(&policy.canonical_mm()));
    let names: Vec<String> = test.threads.iter().map(|t| t.name.clone()).collect();
    let timeline = explore::timeline::render(&names, &w.steps, |st| {
        litmus::linux_sites::describe(test, st.thread as usize, st.site)
    });
    let header = format!(
        "# {} under {}: a schedule with {} preemption(s) that reaches the {} state (vmm explore, seed {seed})\n\n",
        test.name,
        policy.canonical_mm(),
        w.preemptions,
        match test.condition.kind {
            litmus::CondKind::Forbidden => "forbidden",
            litmus::CondKind::Exists => "`exists`",
        }
    );
    let tl_path = dir.join(format!("{base}.timeline.txt"));
    std::fs::write(&tl_path, header + &timeline).map_err(|e| format!("{}: {e}", tl_path.display()))?;
    let steps: Vec<litmus::witness::Step> =
        w.steps.iter().map(|s| litmus::witness::Step { thread: s.thread as usize, site: s.site }).collect();
    let doc = format!(
        "The schedule vmm explore found (seed {seed}, {} preemption(s), {} steps), forced with flags and hooks.",
        w.preemptions,
        w.steps.len()
    );
    let text = litmus::witness::forced_test(test, &steps, policy, &format!("{}-witness", test.name), &doc)
        .map_err(|e| e.to_string())?;
    let path = dir.join(format!("{base}.toml"));
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, tl_path))
}

/// Runs the witness file under `vmm litmus` for [`REPLAY_RUNS`] iterations.
fn replay(base: &VmConfig, args: &ExploreArgs, path: &Path, policy: Policy) -> Result<(String, bool)> {
    let opts = CheckOptions { allow_hypothetical: args.allow_hypothetical };
    let tests = super::litmus::load_all(&[path.to_path_buf()], Vec::new, &opts)?;
    let test = &tests[0];
    let largs = LitmusArgs {
        paths: vec![path.to_path_buf()],
        runs: REPLAY_RUNS,
        check: true,
        seed: Some(args.seed),
        iteration_timeout: args.iteration_timeout,
        ..LitmusArgs::default()
    };
    let pr = super::litmus::run_policy(base, &largs, test, policy, args.seed, None)?;
    let s = pr.result.summary(test);
    let ok = s.matching == REPLAY_RUNS && pr.guest_error.is_none();
    let text =
        format!("{} [{}]: {} {}/{REPLAY_RUNS}", path.display(), policy.canonical(), s.observation.name(), s.matching);
    Ok((text, ok))
}

fn search(base: &VmConfig, args: &ExploreArgs, test: &Test, policy: Policy) -> Result<Searched> {
    let started = Instant::now();
    let opts = CompileOptions { seed: args.seed, iterations: 1, iteration_timeout_ms: 0 };
    let compiled = compile(test, &policy, &opts).map_err(|e| Error::Litmus(format!("{}: internal: {e}", test.file)))?;
    let nthreads = test.threads.len();
    let nvcpu = test.vcpu_threads();
    if nthreads > abi::explore::MAX_THREADS {
        return Err(Error::Litmus(format!(
            "{}: vmm explore handles at most {} threads",
            test.name,
            abi::explore::MAX_THREADS
        )));
    }
    // The bound: `--preemptions`, else the test's `[explore]` table, else 2.
    let strategy = match &args.strategy {
        explore::Strategy::Bounded { preemptions: None, reduction } => explore::Strategy::Bounded {
            preemptions: Some(test.explore.map_or(explore::DEFAULT_PREEMPTIONS, |e| e.preemptions)),
            reduction: *reduction,
        },
        s => s.clone(),
    };
    let cfg = explore::Config {
        strategy,
        seed: args.seed,
        max_schedules: args.max_schedules,
        shard: args.shard,
        split_depth: explore::DEFAULT_SPLIT_DEPTH,
        max_steps: abi::explore::MAX_STEPS,
    };
    let explorer = Explorer::new(&cfg, nthreads).map_err(|e| Error::Explore(e.to_string()))?;
    // Schedules are reported as iterations of one placement: no cap on
    // their number beyond the search's own.
    let litmus =
        LitmusSession::new(compiled.blob.clone(), nvcpu, test.device_threads(), u64::MAX, args.iteration_timeout);
    let progress = match args.max_schedules {
        Some(m) => Progress::new(m, "schedules", args.force_progress),
        None => Progress::open_ended("schedules", args.force_progress),
    };
    progress.set_message(format!("{} [{}]", test.name, policy.canonical_mm()));
    litmus.set_progress(Arc::new(progress.clone()));
    let cond = test.condition.expr.clone();
    let session = ExploreSession::new(
        explorer,
        nthreads,
        nvcpu,
        test.observed.len(),
        litmus.clone(),
        Box::new(move |v| cond.eval(v)),
    );
    let tlb = policy.tlb_model();
    let iommu = super::litmus::iommu_config(&policy, args.seed);
    let mut boots = 0u64;
    let mut error = None;
    loop {
        if interrupt::interrupted().is_some() {
            error = Some("interrupted".into());
            break;
        }
        boots += 1;
        let cfg = VmConfig {
            vcpus: (nvcpu as u64).max(1),
            tlb,
            seed: args.seed,
            mode: GuestMode::Explore,
            mode_arg: 0,
            ..base.clone()
        };
        let mut svcs =
            services::standard(tlb, cfg.seed, StandardOptions { console: false, checks: None, iommu, trace: None });
        svcs.push(litmus.boot(None));
        svcs.push(session.boot(Arc::new(Mutex::new(None))));
        svcs.push(Arc::new(InterruptWatch) as Arc<dyn Service>);
        let out = vm::run(&cfg, &svcs)?;
        if let Some(e) = session.error() {
            error = Some(e);
            break;
        }
        match out.end {
            EndReason::GuestExit(abi::exit::SUCCESS) if session.is_done() => break,
            // A schedule that never ends (a deadlock the test allows): it
            // was recorded as `timeout`; the search goes on in a new boot.
            EndReason::Stopped { by: STALLED } => {
                let _ = litmus.take_stall();
            }
            EndReason::Interrupted => {
                error = Some("interrupted".into());
                break;
            }
            EndReason::GuestExit(s) => {
                error = Some(format!("guest exited with status {s} during the search"));
                break;
            }
            EndReason::GuestError { vcpu, rip, fault } => {
                error = Some(format!("guest error on vCPU {vcpu} at RIP {rip:#x}: {fault}"));
                break;
            }
            EndReason::Timeout { .. } => {
                error = Some(format!("watchdog: the guest did not finish within {:?}", base.timeout));
                break;
            }
            EndReason::Stopped { by } => {
                error = Some(format!("stopped by {by}"));
                break;
            }
        }
    }
    progress.finish();
    let result = session.result();
    let mut run = RunResult::new(test, policy, args.seed, explore_results::requested(&result));
    for (state, n) in &result.histogram {
        run.record_n(state, *n).map_err(|e| Error::GuestReport(e.to_string()))?;
    }
    run.n_timeouts = result.histogram.iter().filter(|(s, _)| s.contains(&VALUE_TIMEOUT)).map(|(_, n)| n).sum();
    let mut record = ExploreRecord {
        search: result,
        witness_file: None,
        timeline_file: None,
        points: session.points(),
        parks: session.parks(),
        boots,
    };
    let mut replayed = None;
    if let Some(w) = record.search.witness.clone() {
        match write_witness(&args.witness_dir, test, &policy, &w, args.seed) {
            Ok((file, tl)) => {
                record.witness_file = Some(file.display().to_string());
                record.timeline_file = Some(tl.display().to_string());
                if args.check {
                    replayed = Some(replay(base, args, &file, policy)?);
                }
            }
            Err(e) => {
                let e = format!("the witness could not be written as a litmus file: {e}");
                error = Some(error.map_or(e.clone(), |x| format!("{x}; {e}")));
                if args.check {
                    replayed = Some(("(no witness file)".into(), false));
                }
            }
        }
    }
    run.time_secs = started.elapsed().as_secs_f64();
    run.explore = Some(record);
    Ok(Searched { run, replay: replayed, error })
}
