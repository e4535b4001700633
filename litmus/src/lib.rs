//! Host-side litmus front end of shootdown (no KVM).
//!
//! Tests are data: a TOML file (see `docs/litmus-guide.md` and the design's
//! LITMUS.md) with locations, vCPU and device threads written in a small
//! line-oriented language, a final condition and expected verdicts per
//! policy. This crate parses and checks such files (every diagnostic names
//! `file:line:col`), resolves policies, compiles a (test, policy, seed) to the
//! bytecode of [`abi::litmus`] that the guest interprets, aggregates what the
//! guest reports, and prints herdtools7-style results, JSON and a verdict
//! table. Nothing here touches KVM, so all of it is unit-tested on the host.
//!
//! # How a runner uses it
//!
//! ```
//! use litmus::*;
//!
//! // 1. Parse and check every file; nothing runs if any file has an error.
//! let (tests, warnings) = check_all(&catalogue_sources()).map_err(|d| render_all(&d)).unwrap();
//! assert!(warnings.is_empty());
//! let test = tests.iter().find(|t| t.name == "s1-concurrent-zap").unwrap();
//!
//! // 2. The policy matrix: `--policy` values if given, else the test's [expect] keys.
//! let cli: Vec<Policy> = vec![];
//! let overrides = Policy::parse("tlb=lazy").unwrap(); // e.g. from --tlb
//! let mut runs = Vec::new();
//! for policy in policy_matrix(&cli, &test.expect_policies(), &overrides) {
//!     // 3. Compile and hand the blob to the guest.
//!     let opts = CompileOptions { seed: 42, iterations: 100, iteration_timeout_ms: 0 };
//!     let compiled = compile(test, &policy, &opts).unwrap();
//!     assert!(abi::litmus::Blob::parse(&compiled.blob).is_ok());
//!     // 4. Record what the guest reports: one u64 per observed value.
//!     let mut run = RunResult::new(test, policy, opts.seed, 100);
//!     let stale = policy.get(Key::MadvNestedCheck) == "off";
//!     run.record_n(&[1, if stale { 1 } else { 0 }], 100).unwrap();
//!     runs.push(run);
//! }
//! // 5. Print.
//! let pairs: Vec<(&Test, &RunResult)> = runs.iter().map(|r| (test, r)).collect();
//! for (t, r) in &pairs {
//!     print!("{}", herd_block(t, r));
//! }
//! print!("{}", verdict_table(&pairs));
//! let json = to_json(&pairs);
//! assert_eq!(json["schema"], JSON_SCHEMA);
//! assert!(!any_mismatch(&pairs));
//! ```

pub mod ast;
pub mod catalogue;
pub mod code;
pub mod compare;
pub mod compile;
pub mod cond;
pub mod diag;
pub mod explore_results;
pub mod file;
pub mod format;
pub mod fuzzing;
pub mod herdlog;
pub mod linux_sites;
pub mod logdir;
pub mod merge;
pub mod policy;
pub mod results;
pub mod results_file;
pub mod shard;
pub mod tap;
pub mod witness;

pub use ast::{herd_value, CondKind, Condition, Expectation, Expr, Location, Observable, Stmt, Test, Thread, Verdict};
pub use catalogue::{catalogue, catalogue_sources, explore_catalogue, explore_sources};
pub use compile::{compile, disassemble, CompileError, CompileOptions, Compiled};
pub use diag::{decode_source, render_all, Diagnostic, Severity, SourceFile};
pub use file::{check_all, check_bytes, check_source, load_files, CheckedFile};
pub use format::{
    evidence_text, file_summary, herd_block, herd_block_of, policy_line, state_text, threads_line, to_json,
    verdict_table, verdict_table_of, JSON_SCHEMA,
};
pub use policy::{policy_matrix, Key, KeyInfo, Policy, PolicyError, KEYS};
pub use results::{
    any_mismatch, judge, summarize, ArityError, Evidence, ExpectResult, RunResult, StateCount, Summary, ThreadPosition,
    TimeoutRecord, Value,
};
pub use results_file::{PlannedRun, ResultsFile, RunRecord, ShardInfo, StateRecord, KIND_LITMUS};
pub use shard::{Piece, Shard};

/// `vmm litmus --list-hooks`: one line per hook, `name  description`.
pub fn list_hooks() -> String {
    use abi::litmus::Hook;
    let w = Hook::ALL.iter().map(|h| h.name().len()).max().unwrap_or(0);
    Hook::ALL.iter().map(|h| format!("{:<w$}  {}\n", h.name(), h.description())).collect()
}

/// `vmm litmus --list-policies`: every key, its values, default and meaning.
pub fn list_policies() -> String {
    KEYS.iter()
        .map(|k| format!("{}={}  (default {})\n    {}\n", k.name, k.values.join("|"), k.default, k.meaning))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn listings() {
        let h = super::list_hooks();
        assert!(h.lines().any(|l| l.starts_with("after_ptl_release ")));
        assert_eq!(h.lines().count(), abi::litmus::Hook::ALL.len());
        let p = super::list_policies();
        assert!(p.contains("flush=ptl|gather|pending|per-ptl|generation  (default pending)"));
        // The documented defaults are the ones the parser produces.
        for k in super::KEYS {
            assert_eq!(super::Policy::default().get(k.key), k.default, "{}", k.name);
        }
    }
}
