//! `vmm trace report|export|bench`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use litmus::{policy_matrix, Policy};
use tools::analysis::{self, Options};
use tools::format::{self, Parsed};
use tools::{perfetto, svg};

use super::litmus::{self as litmus_run, LitmusArgs};
use super::output::{self, OutputError};
use crate::error::{Error, Result, TraceReadError};
use crate::services::trace::TraceOut;
use crate::status;
use crate::vstate::VmConfig;

fn load(file: &Path) -> Result<Parsed> {
    let bytes = crate::input::read_input_file(file, crate::input::TRACE_FILE_MAX, "trace")
        .map_err(|source| Error::TraceRead(TraceReadError { path: file.to_path_buf(), source }))?;
    Ok(format::parse(&bytes))
}

/// One line on stderr for a damaged file; the caller still reports what
/// was readable, and exits with status 2.
fn damaged(file: &Path, p: &Parsed) -> bool {
    match &p.error {
        Some(e) => {
            log::error!(
                "trace {}: {e}; what follows covers the {} record(s) of {} run(s) before it",
                file.display(),
                p.trace.record_count(),
                p.trace.runs.len()
            );
            true
        }
        None => false,
    }
}

fn exit_status(bad: bool) -> i32 {
    if bad {
        status::SETUP_ERROR
    } else {
        status::OK
    }
}

/// `vmm trace report FILE [--json]`: exit 0, or 2 if the file is damaged
/// (the report of what was readable is printed all the same).
pub fn report(file: &Path, json: bool, all_phases: bool) -> Result<i32> {
    let p = load(file)?;
    let bad = damaged(file, &p);
    let r = analysis::analyse(&p, Options { all_phases });
    if json {
        let text = serde_json::to_string_pretty(&r)
            .map_err(|source| OutputError::Json { option: "trace report --json", source })?;
        println!("{text}");
    } else {
        print!("{}", analysis::render_text(&r, &file.display().to_string()));
    }
    Ok(exit_status(bad))
}

/// `vmm trace dump FILE [--run R] [--iteration N]`.
pub fn dump(file: &Path, run: Option<usize>, it: Option<u64>) -> Result<i32> {
    let p = load(file)?;
    let bad = damaged(file, &p);
    print!("{}", analysis::render_dump(&p, run, it));
    Ok(exit_status(bad))
}

/// `vmm trace timeline FILE [--run R] [--iteration N] [--width W]`.
pub fn timeline(file: &Path, run: usize, it: Option<u64>, width: usize) -> Result<i32> {
    let p = load(file)?;
    let bad = damaged(file, &p);
    match tools::text_timeline::render(&p, tools::text_timeline::TimelineOptions { run, iteration: it, width }) {
        Ok(t) => print!("{t}"),
        Err(e) => {
            log::error!("trace {}: {e}", file.display());
            return Ok(status::SETUP_ERROR);
        }
    }
    Ok(exit_status(bad))
}

/// `vmm trace export FILE --perfetto OUT.json | --svg OUT.svg [--iteration N] [--run R]`.
/// Output paths are checked before the trace is read; each is written atomically.
pub fn export(
    file: &Path,
    perfetto_out: Option<&Path>,
    svg_out: Option<&Path>,
    run: usize,
    it: Option<u64>,
) -> Result<i32> {
    if perfetto_out.is_none() && svg_out.is_none() {
        return Err(Error::Usage("trace export: give --perfetto OUT.json and/or --svg OUT.svg".into()));
    }
    if let Some(out) = perfetto_out {
        output::check_output_path("--perfetto", out)?;
    }
    if let Some(out) = svg_out {
        output::check_output_path("--svg", out)?;
    }
    let p = load(file)?;
    let mut bad = damaged(file, &p);
    if let Some(out) = perfetto_out {
        let v = perfetto::export(&p);
        let text = serde_json::to_string(&v).map_err(|source| OutputError::Json { option: "--perfetto", source })?;
        output::write_atomic("--perfetto", out, text.as_bytes())?;
        println!("wrote {}", out.display());
    }
    if let Some(out) = svg_out {
        match svg::render(&p, svg::SvgOptions { run, iteration: it }) {
            Ok(t) => {
                output::write_atomic("--svg", out, t.as_bytes())?;
                println!("wrote {}", out.display());
            }
            Err(e) => {
                log::error!("trace {}: {e}", file.display());
                bad = true;
            }
        }
    }
    Ok(exit_status(bad))
}

/// `vmm trace bench`: runs/s of S1, S1-device and S5 under their
/// `[expect]` policies with tracing off and on: three rounds each,
/// alternating which goes first, medians.
pub fn bench(base: &VmConfig, runs: u64, force_progress: bool) -> Result<()> {
    let (tests, _) =
        litmus::check_all(&litmus::catalogue_sources()).map_err(|d| Error::Litmus(litmus::render_all(&d)))?;
    let dir = std::env::temp_dir().join(format!("shootdown-trace-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| {
        Error::Output(super::output::OutputError::Write { option: "trace bench", path: dir.clone(), source })
    })?;
    println!(
        "shootdown trace bench: {runs} iterations per (test, policy) and round, 3 rounds, medians; \
         tracing off vs on (every iteration traced); host: {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!(
        "{:<26} {:<36} {:>10} {:>10} {:>8} {:>12}",
        "test", "policy", "off run/s", "on run/s", "on/off", "records/run"
    );
    let seed = base.seed;
    // 3 rounds × off/on × (2 + 2 + 4 policies).
    let progress = super::progress::Progress::new(runs * 3 * 2 * 8, "iterations", force_progress);
    let args = LitmusArgs {
        runs,
        iteration_timeout: Duration::from_millis(500),
        progress: progress.clone(),
        ..Default::default()
    };
    for name in ["s1-concurrent-zap", "s1-device-concurrent-zap", "s5-cow-two-pages-device"] {
        let Some(test) = tests.iter().find(|t| t.name == name) else { continue };
        for policy in policy_matrix(&[], &test.expect_policies(), &Policy::default()) {
            let path = dir.join(format!("{name}.trace"));
            let once = |traced: bool| -> Result<(f64, u64, u64)> {
                let out = if traced { Some(Arc::new(Mutex::new(TraceOut::create(&path)?))) } else { None };
                let t = Instant::now();
                let r = litmus_run::run_policy(base, &args, test, policy, seed, out.as_ref())?;
                let secs = t.elapsed().as_secs_f64();
                drop(out);
                let recs =
                    if traced { format::read_file(&path).map_or(0, |p| p.trace.record_count() as u64) } else { 0 };
                Ok((r.result.total() as f64 / secs.max(1e-9), r.result.n_timeouts, recs))
            };
            let first = once(false)?;
            if first.1 * 2 > runs {
                println!(
                    "{:<26} {:<36} skipped: {} of {runs} iterations stalled (a runs/s figure would measure the iteration timeout)",
                    name,
                    policy.canonical_mm(),
                    first.1
                );
                continue;
            }
            let (mut off, mut on, mut recs) = (vec![first.0], Vec::new(), 0);
            for round in 0..3 {
                if round % 2 == 1 {
                    let r = once(true)?;
                    on.push(r.0);
                    recs = r.2;
                    off.push(once(false)?.0);
                } else {
                    let r = once(true)?;
                    on.push(r.0);
                    recs = r.2;
                    if round == 2 {
                        off.push(once(false)?.0);
                    }
                }
            }
            let median = |mut v: Vec<f64>| {
                v.sort_by(|a, b| a.total_cmp(b));
                v[v.len() / 2]
            };
            let (a, b) = (median(off), median(on));
            println!(
                "{:<26} {:<36} {:>10.1} {:>10.1} {:>8.2} {:>12}",
                name,
                policy.canonical_mm(),
                a,
                b,
                b / a.max(1e-9),
                recs / runs.max(1)
            );
            let _ = std::fs::remove_file(&path);
        }
    }
    let _ = std::fs::remove_dir(&dir);
    progress.finish();
    Ok(())
}
