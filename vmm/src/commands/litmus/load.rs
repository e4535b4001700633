//! Litmus files from the command line's paths (directories walked for
//! `*.toml`), checked together: nothing runs unless every file is clean.

use crate::error::{Error, Result};
use litmus::{render_all, CheckOptions, Test};
use std::path::{Path, PathBuf};

pub(super) fn collect_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found).map_err(|e| Error::Litmus(format!("{}: {e}", p.display())))?;
            found.sort();
            if found.is_empty() {
                return Err(Error::Litmus(format!("{}: no *.toml litmus files in this directory", p.display())));
            }
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

pub(super) fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
    Ok(())
}

/// Loads and checks every test; nothing runs if any file is invalid.
/// `[explore]` tests (written for `vmm explore`: their verdicts hold for a
/// schedule search) are left out, with a note on stderr.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Test>> {
    load_with(paths, &CheckOptions::default())
}

/// [`load`] with check options (`--allow-hypothetical`).
pub fn load_with(paths: &[PathBuf], opts: &CheckOptions) -> Result<Vec<Test>> {
    let (tests, skipped) =
        load_all(paths, litmus::catalogue_sources, opts)?.into_iter().partition::<Vec<_>, _>(|t| t.explore.is_none());
    for t in &skipped {
        log::info!("{}: an [explore] test, left to `vmm explore` ({})", t.name, t.file);
    }
    if tests.is_empty() && !skipped.is_empty() {
        return Err(Error::Usage(format!(
            "every test given is an [explore] test; run them with `vmm explore` ({})",
            skipped.iter().map(|t| t.file.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(tests)
}

/// Loads and checks every test of `paths` (none: `default()`'s); nothing
/// runs if any file is invalid.
pub fn load_all(paths: &[PathBuf], default: fn() -> Vec<(String, String)>, opts: &CheckOptions) -> Result<Vec<Test>> {
    let (tests, warnings) = if paths.is_empty() {
        litmus::check_all_with(&default(), opts)
    } else {
        litmus::load_files_with(
            &collect_paths(paths)?,
            |p| crate::input::read_input_file(p, crate::input::LITMUS_FILE_MAX, "litmus file"),
            opts,
        )
    }
    .map_err(|d| Error::Litmus(render_all(&d)))?;
    if !warnings.is_empty() {
        eprint!("{}", render_all(&warnings));
    }
    Ok(tests)
}
