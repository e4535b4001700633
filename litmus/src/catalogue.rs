//! The scenario catalogue (`tests/litmus/`), embedded so the `vmm` binary can
//! run it without the source tree (`vmm litmus --catalogue`).
//!
//! The S1–S8 files replay the mailing-list traces of SCENARIOS.md with hooks
//! and flags; `examples/` holds small tests of basic mm behaviour. A unit
//! test checks that this list names every file in the directory and that
//! every file parses and checks cleanly.

macro_rules! entries {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../tests/litmus/", $path)))),*]
    };
}

static CATALOGUE: &[(&str, &str)] = entries![
    "s1-concurrent-zap.toml",
    "s1-device-concurrent-zap.toml",
    "s2-deferred-wrprotect-cow.toml",
    "s3-migrc-mprotect-upgrade.toml",
    "s4-freed-table-walk-cache.toml",
    "s5-cow-two-pages-device.toml",
    "s6-dirty-shared-zap-writeback.toml",
    "s6-dirty-shared-rmap-before-flush.toml",
    "s7-ksm-device-store.toml",
    "s8-device-freed-page-reuse.toml",
    "examples/cow-private-copy.toml",
    "examples/device-loop-prefetch.toml",
    "examples/evict-dirty-mismatch.toml",
    "examples/fault-waits-for-mremap.toml",
    "examples/ksm-merge-then-cow.toml",
    "examples/madv-free-nested.toml",
    "examples/migrate-batched-device.toml",
    "examples/migrate-moves-page.toml",
    "examples/migrate-prot-none.toml",
    "examples/mkclean-writeback.toml",
    "examples/mprotect-ro-store-faults.toml",
    "examples/mprotect-upgrade-flushes.toml",
    "examples/mremap-dirty-flushed-under-ptl.toml",
    "examples/mremap-moves-page.toml",
    "examples/mremap-stale-after-unlock.toml",
    "examples/munmap-device-freed-table.toml",
    "examples/munmap-load-faults.toml",
    "examples/pte-accessible-prot-none.toml",
    "examples/reclaim-batched-flag-lost.toml",
    "examples/reclaim-batched-vs-mprotect.toml",
    "examples/reclaim-swap-in.toml",
    "examples/zap-device-range-end.toml",
];

/// The hook-free versions of the catalogue's races (`[explore]` tests):
/// `vmm explore` searches their schedules, `vmm litmus` does not run them.
static EXPLORE: &[(&str, &str)] = entries![
    "explore/s1-concurrent-zap.toml",
    "explore/s1-device-concurrent-zap.toml",
    "explore/s5-cow-two-pages-device.toml",
    "explore/s6-dirty-shared-zap-writeback.toml",
    "explore/s7-ksm-device-store.toml",
    "explore/s8-device-freed-page-reuse.toml",
    "explore/mremap-stale-after-unlock.toml",
    "explore/reclaim-batched-vs-mprotect.toml",
];

/// `(file name relative to tests/litmus/, source)` for every catalogue file.
pub fn catalogue() -> &'static [(&'static str, &'static str)] {
    CATALOGUE
}

/// `(file name relative to tests/litmus/, source)` for every `[explore]` test.
pub fn explore_catalogue() -> &'static [(&'static str, &'static str)] {
    EXPLORE
}

/// The `[explore]` tests as `check_all` input (`vmm explore` with no paths).
pub fn explore_sources() -> Vec<(String, String)> {
    EXPLORE.iter().map(|(n, s)| (format!("tests/litmus/{n}"), s.to_string())).collect()
}

/// The catalogue as `check_all` input, file names prefixed with
/// `tests/litmus/` so diagnostics name the path in the repository.
pub fn catalogue_sources() -> Vec<(String, String)> {
    CATALOGUE.iter().map(|(n, s)| (format!("tests/litmus/{n}"), s.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::{check_all, check_source};
    use std::path::Path;

    fn files_in(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("tests/litmus exists") {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().to_string();
            if e.file_type().unwrap().is_dir() {
                files_in(&e.path(), &format!("{prefix}{name}/"), out);
            } else if name.ends_with(".toml") {
                out.push(format!("{prefix}{name}"));
            }
        }
    }

    #[test]
    fn catalogue_lists_every_file_and_all_check_clean() {
        // (Checked below with the default options: no row is hypothetical.)
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/litmus");
        let mut on_disk = Vec::new();
        files_in(&dir, "", &mut on_disk);
        on_disk.sort();
        let mut listed: Vec<String> =
            catalogue().iter().chain(explore_catalogue()).map(|(n, _)| n.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "catalogue() and explore_catalogue() must list every file in tests/litmus/");
        for (name, src) in catalogue().iter().chain(explore_catalogue()) {
            // The embedded copy is the file on disk.
            assert_eq!(std::fs::read_to_string(dir.join(name)).unwrap(), *src, "{name}");
            let r = check_source(name, src);
            assert!(r.diagnostics.is_empty(), "{name}:\n{}", crate::diag::render_all(&r.diagnostics));
            let t = r.test.unwrap();
            assert!(!t.expect.is_empty(), "{name} has no [expect]");
            // `[explore]` tests and only they live under explore/, and they
            // pause no kernel path (no hooks).
            assert_eq!(t.explore.is_some(), name.starts_with("explore/"), "{name}");
            if t.explore.is_some() {
                assert!(t.threads.iter().all(|th| th.code.iter().all(|s| s.hooks.is_empty())), "{name} has hooks");
            }
        }
        let (explore, _) = check_all(&explore_sources()).expect("explore tests check");
        assert_eq!(explore.len(), explore_catalogue().len());
        let (tests, warnings) = check_all(&catalogue_sources()).expect("catalogue checks");
        assert!(warnings.is_empty());
        // Test names are unique.
        let mut names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), tests.len());
    }

    /// `vmm litmus --kernel all --check` checks every row: each catalogue
    /// test has an `[expect]` entry for every profile (under the default
    /// hardware) whose release has the test's operations.
    #[test]
    fn every_profile_is_expected() {
        use crate::policy::{profiles, Policy};
        let (tests, _) = check_all(&catalogue_sources()).unwrap();
        for t in &tests {
            for p in profiles() {
                let run = Policy::profile(*p);
                if crate::kernels::unavailable(t, &run).is_some() {
                    continue;
                }
                assert!(t.expected_for(&run).is_some(), "{}: no [expect] covers {}", t.name, p.name());
            }
        }
    }

    /// SCENARIOS.md's rows, as profile ± one commit (docs/kernel-profiles.md §4).
    #[test]
    fn scenarios_have_the_expectations_scenarios_md_names() {
        let want: &[(&str, &[(&str, &str)])] = &[
            (
                "s1-concurrent-zap",
                &[
                    ("kernel=v3.19..v4.9", "sometimes"),
                    ("kernel=v4.14..mainline", "never"),
                    ("kernel=v4.19,madv-nested-check=off", "sometimes"),
                ],
            ),
            (
                "s1-device-concurrent-zap",
                &[
                    ("kernel=v3.19..v6.1", "never"),
                    ("kernel=v6.6", "sometimes"),
                    ("kernel=v6.6,nested-range=full", "never"),
                ],
            ),
            (
                "s2-deferred-wrprotect-cow",
                &[
                    ("kernel=v5.10", "sometimes"),
                    ("kernel=v5.10,wp-fault-flush=uffd-wp", "never"),
                    ("kernel=v6.1..mainline", "never"),
                    ("kernel=v6.1,flush=per-ptl", "never"),
                    ("kernel=v6.1,flush=generation", "never"),
                ],
            ),
            (
                "s3-migrc-mprotect-upgrade",
                &[
                    ("kernel=v3.19..mainline", "never"),
                    ("kernel=v6.6,migrc=on,migrc-upgrade=wp-only", "sometimes"),
                    ("kernel=v6.6,migrc=on,migrc-upgrade=all", "never"),
                ],
            ),
            (
                "s4-freed-table-walk-cache",
                &[
                    ("kernel=v3.19..mainline,walk-cache=arm64", "never"),
                    ("kernel=v5.4,walk-cache=arm64,reset-range=clear-freed-tables", "sometimes"),
                ],
            ),
            (
                "s5-cow-two-pages-device",
                &[("kernel=v3.19..mainline", "never"), ("kernel=v3.19,notifier=end", "sometimes")],
            ),
            (
                "s6-dirty-shared-zap-writeback",
                &[("kernel=v3.19..mainline", "never"), ("kernel=v3.19,dirty-shared-flush=deferred", "sometimes")],
            ),
            ("s7-ksm-device-store", &[("kernel=v3.19..mainline", "never")]),
            (
                "s8-device-freed-page-reuse",
                &[
                    ("kernel=v3.19..v6.1", "never"),
                    ("kernel=v6.6", "sometimes"),
                    ("kernel=v6.6,nested-range=full", "never"),
                ],
            ),
        ];
        let (tests, _) = check_all(&catalogue_sources()).unwrap();
        for (name, exp) in want {
            let t = tests.iter().find(|t| t.name == *name).unwrap_or_else(|| panic!("{name} missing"));
            for (pol, verdict) in *exp {
                let p = crate::policy::Policy::parse(pol).unwrap();
                let e =
                    t.expect.iter().find(|e| e.policy == p).unwrap_or_else(|| panic!("{name}: no [expect] for {pol}"));
                assert_eq!(e.verdict.name(), *verdict, "{name} {pol}");
            }
        }
    }
}
