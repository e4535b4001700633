//! `vmm trace report|export|bench`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use litmus::{policy_matrix, Policy};
use tools::analysis::{self, Options};
use tools::format::{self, Parsed};
use tools::{perfetto, svg};

use crate::error::{Error, Result};
use crate::litmus_run::{self, LitmusArgs};
use crate::status;
use crate::trace::TraceOut;
use crate::vstate::vm::VmConfig;

/// Reads a trace; `None` (after one line on stderr) if the file cannot be read at all.
fn load(file: &Path) -> Option<Parsed> {
    match format::read_file(file) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("vmm: error: trace {}: {e}", file.display());
            None
        }
    }
}

/// One line on stderr for a damaged file; the caller still reports what was readable.
fn damaged(file: &Path, p: &Parsed) -> bool {
    match &p.error {
        Some(e) => {
            eprintln!(
                "vmm: error: trace {}: {e}; what follows covers the {} record(s) of {} run(s) before it",
                file.display(),
                p.trace.record_count(),
                p.trace.runs.len()
            );
            true
        }
        None => false,
    }
}

/// `vmm trace report FILE [--json]`: exit 0, or 2 if the file is damaged
/// (the report of what was readable is printed all the same).
pub fn report(file: &Path, json: bool, all_phases: bool) -> i32 {
    let Some(p) = load(file) else { return status::SETUP_ERROR };
    let bad = damaged(file, &p);
    let r = analysis::analyse(&p, Options { all_phases });
    if json {
        match serde_json::to_string_pretty(&r) {
            Ok(t) => println!("{t}"),
            Err(e) => {
                eprintln!("vmm: error: {e}");
                return status::SETUP_ERROR;
            }
        }
    } else {
        print!("{}", analysis::render_text(&r, &file.display().to_string()));
    }
    if bad {
        status::SETUP_ERROR
    } else {
        status::OK
    }
}

/// `vmm trace dump FILE [--run R] [--iteration N]`.
pub fn dump(file: &Path, run: Option<usize>, it: Option<u64>) -> i32 {
    let Some(p) = load(file) else { return status::SETUP_ERROR };
    let bad = damaged(file, &p);
    print!("{}", analysis::render_dump(&p, run, it));
    if bad {
        status::SETUP_ERROR
    } else {
        status::OK
    }
}

/// `vmm trace timeline FILE [--run R] [--iteration N] [--width W]`.
pub fn timeline(file: &Path, run: usize, it: Option<u64>, width: usize) -> i32 {
    let Some(p) = load(file) else { return status::SETUP_ERROR };
    let bad = damaged(file, &p);
    match tools::text_timeline::render(&p, tools::text_timeline::TimelineOptions { run, iteration: it, width }) {
        Ok(t) => print!("{t}"),
        Err(e) => {
            eprintln!("vmm: error: trace {}: {e}", file.display());
            return status::SETUP_ERROR;
        }
    }
    if bad {
        status::SETUP_ERROR
    } else {
        status::OK
    }
}

/// `vmm trace export FILE --perfetto OUT.json | --svg OUT.svg [--iteration N] [--run R]`.
pub fn export(file: &Path, perfetto_out: Option<&Path>, svg_out: Option<&Path>, run: usize, it: Option<u64>) -> i32 {
    if perfetto_out.is_none() && svg_out.is_none() {
        eprintln!("vmm: error: trace export: give --perfetto OUT.json and/or --svg OUT.svg");
        return status::SETUP_ERROR;
    }
    let Some(p) = load(file) else { return status::SETUP_ERROR };
    let bad = damaged(file, &p);
    let write = |path: &Path, text: &str| match std::fs::write(path, text) {
        Ok(()) => {
            println!("wrote {}", path.display());
            true
        }
        Err(e) => {
            eprintln!("vmm: error: {}: {e}", path.display());
            false
        }
    };
    let mut ok = true;
    if let Some(out) = perfetto_out {
        let v = perfetto::export(&p);
        ok &= match serde_json::to_string(&v) {
            Ok(t) => write(out, &t),
            Err(e) => {
                eprintln!("vmm: error: {e}");
                false
            }
        };
    }
    if let Some(out) = svg_out {
        ok &= match svg::render(&p, svg::SvgOptions { run, iteration: it }) {
            Ok(t) => write(out, &t),
            Err(e) => {
                eprintln!("vmm: error: trace {}: {e}", file.display());
                false
            }
        };
    }
    if bad || !ok {
        status::SETUP_ERROR
    } else {
        status::OK
    }
}

/// `vmm trace bench`: runs/s of S1, S1-device and S5 under their
/// `[expect]` policies with tracing off and on: three rounds each,
/// alternating which goes first, medians.
pub fn bench(base: &VmConfig, runs: u64, force_progress: bool) -> Result<()> {
    let (tests, _) =
        litmus::check_all(&litmus::catalogue_sources()).map_err(|d| Error::Litmus(litmus::render_all(&d)))?;
    let dir = std::env::temp_dir().join(format!("shootdown-trace-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Other(format!("{}: {e}", dir.display())))?;
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
    let progress = crate::progress::Progress::new(runs * 3 * 2 * 8, "iterations", force_progress);
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
