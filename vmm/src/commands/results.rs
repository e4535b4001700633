//! `vmm compare` and `vmm results merge`: thin wrappers over the `litmus`
//! crate's `compare` and `merge` (all their logic and tests live there).

use std::path::Path;

use litmus::{herd_block_of, ResultsFile};

use crate::status;

fn read(path: &Path) -> Result<ResultsFile, String> {
    let bytes = crate::input::read_input_file(path, crate::input::RESULTS_FILE_MAX, "results file")
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| format!("{}: not UTF-8: {e}", path.display()))?;
    ResultsFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `vmm compare BASE CAND`: 0 no new violation, 1 a new violation, 2 bad input.
pub fn compare(base: &Path, cand: &Path) -> i32 {
    let (b, c) = match (read(base), read(cand)) {
        (Ok(b), Ok(c)) => (b, c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("vmm: error: {e}");
            return status::SETUP_ERROR;
        }
    };
    for (f, p) in [(&b, base), (&c, cand)] {
        if !f.complete {
            eprintln!(
                "vmm: warning: {}: the job that wrote it did not finish; it holds the runs that did",
                p.display()
            );
        }
    }
    let cmp = litmus::compare::compare(&b, &c);
    println!("Baseline {}\nCandidate {}", base.display(), cand.display());
    print!("{}", cmp.render());
    if cmp.new_violations() > 0 {
        status::TESTS_FAILED
    } else {
        status::OK
    }
}

/// `vmm results merge FILES… [--json OUT] [--log-dir DIR] [--check]`:
/// prints the merged blocks and verdict table; 0 if the inputs cover the
/// whole job (and, with `check`, every expectation holds), 1 if iterations
/// are missing (or an expectation failed), 2 on bad or contradictory input.
pub fn merge(files: &[std::path::PathBuf], json: Option<&Path>, log_dir: Option<&Path>, check: bool) -> i32 {
    let mut inputs = Vec::new();
    for f in files {
        match read(f) {
            Ok(r) => inputs.push((f.display().to_string(), r)),
            Err(e) => {
                eprintln!("vmm: error: {e}");
                return status::SETUP_ERROR;
            }
        }
    }
    let merged = match litmus::merge::merge(&inputs) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vmm: error: results merge: {e}");
            return status::SETUP_ERROR;
        }
    };
    let mut logs = match log_dir.map(litmus::logdir::LogDir::create).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vmm: error: --log-dir: {e}");
            return status::SETUP_ERROR;
        }
    };
    for r in &merged.file.runs {
        let block = herd_block_of(r);
        print!("{block}");
        println!();
        if let Some(l) = &mut logs {
            let policy = litmus::Policy::parse(&r.policy).unwrap_or_default();
            if let Err(e) = l.append(&policy, &block) {
                eprintln!("vmm: error: --log-dir: {e}");
                return status::SETUP_ERROR;
            }
        }
    }
    print!("{}", litmus::format::verdict_table_of(&merged.file.runs));
    let shards: Vec<String> = merged.file.merged_from.iter().map(|s| format!("{}/{}", s.index, s.count)).collect();
    println!(
        "Merged {} file(s){}: {} runs, {}",
        inputs.len(),
        if shards.is_empty() { String::new() } else { format!(" (shards {})", shards.join(", ")) },
        merged.file.runs.len(),
        if merged.file.complete {
            "complete".to_string()
        } else {
            format!("INCOMPLETE ({} gap(s))", merged.gaps.len())
        }
    );
    for g in &merged.gaps {
        println!("Gap {g}");
    }
    if let Some(out) = json {
        let text = match serde_json::to_string_pretty(&merged.file.to_json()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("vmm: error: {e}");
                return status::SETUP_ERROR;
            }
        };
        if let Err(e) = std::fs::write(out, text + "\n") {
            eprintln!("vmm: error: {}: {e}", out.display());
            return status::SETUP_ERROR;
        }
    }
    let failed_expectation = merged.file.runs.iter().any(|r| r.expect_ok == Some(false));
    if merged.gaps.is_empty() && !(check && failed_expectation) {
        status::OK
    } else {
        status::TESTS_FAILED
    }
}
