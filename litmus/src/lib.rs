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
pub mod kernels;
mod lex;
pub mod linux_sites;
pub mod logdir;
pub mod merge;
pub mod policy;
pub mod results;
pub mod results_file;
pub mod shard;
pub mod tap;
pub mod text_map;
pub mod witness;

pub use ast::{herd_value, CondKind, Condition, Expectation, Expr, Location, Observable, Stmt, Test, Thread, Verdict};
pub use catalogue::{catalogue, catalogue_sources, explore_catalogue, explore_sources};
pub use compile::{compile, disassemble, CompileError, CompileOptions, Compiled};
pub use diag::{decode_source, render_all, Diagnostic, Severity, SourceFile};
pub use file::{
    check_all, check_all_with, check_bytes, check_source, check_source_with, load_files, load_files_with, CheckOptions,
    CheckedFile,
};
pub use format::{
    evidence_text, file_summary, herd_block, herd_block_of, policy_line, state_text, threads_line, to_json,
    verdict_table, verdict_table_of, JSON_SCHEMA,
};
pub use kernels::{kernel_table, unavailable, KernelCell};
pub use policy::{kernel_matrix, policy_matrix, profiles, Key, KeyInfo, Policy, PolicyError, Profile, Reality, KEYS};
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

/// `vmm litmus --list-policies`: every key, its values (with the commits
/// and releases each stands for), default and meaning — the table of
/// [`abi::policy`].
pub fn list_policies() -> String {
    use abi::policy::{KeyKind, Status};
    let mut o = String::new();
    for k in KEYS {
        let default = k.value(k.default).map_or("?", |v| v.name);
        let kind = match k.kind {
            KeyKind::Profile => "profile",
            KeyKind::Hardware => "hardware",
            KeyKind::Kernel => "kernel, set by the profile",
        };
        o += &format!("{}={}  (default {default}; {kind})\n    {}\n", k.name, policy::value_names(k).join("|"), k.doc);
        for v in k.values {
            let what = match v.status {
                Status::Kernel(eras) => eras
                    .iter()
                    .map(|e| match (e.since == abi::policy::Release::EPOCH, e.until == abi::policy::Release::OPEN) {
                        (true, true) => "every release".to_string(),
                        (true, false) => format!("before {}", e.until),
                        (false, true) => format!("{}+", e.since),
                        (false, false) => format!("{}..{}", e.since, e.until),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                Status::Proposal => "proposal".into(),
                Status::Model => "model (no kernel)".into(),
                Status::Hardware => "hardware".into(),
                Status::Profile(r) => r.to_string(),
            };
            o += &format!("      {:<20} [{what}] {}\n", v.name, v.doc);
        }
    }
    o
}

/// `vmm litmus --list-kernels`: every profile and the value of each kernel
/// key in it (the mark `*` flags a value that differs from the previous
/// profile).
pub fn list_kernels() -> String {
    use abi::policy::KeyKind;
    let profs = profiles();
    let keys: Vec<&KeyInfo> = KEYS.iter().filter(|k| k.kind == KeyKind::Kernel).collect();
    let w = keys.iter().map(|k| k.name.len()).max().unwrap_or(0);
    let cell = |p: &Policy, k: &KeyInfo| p.get(k.key);
    let pols: Vec<Policy> = profs.iter().map(|p| Policy::profile(*p)).collect();
    let cw: Vec<usize> = pols
        .iter()
        .zip(profs)
        .map(|(p, prof)| keys.iter().map(|k| cell(p, k).len() + 1).max().unwrap_or(0).max(prof.name().len()))
        .collect();
    let mut o = String::new();
    let pw = profs.iter().map(|p| p.name().len()).max().unwrap_or(0);
    for p in profs {
        o += &format!("{:<pw$}  {}\n", p.name(), KEYS[Key::Kernel as usize].value(*p as u8).map_or("", |v| v.doc));
    }
    o += "\n";
    o += &format!("{:<w$}", "key");
    for (p, c) in profs.iter().zip(&cw) {
        o += &format!("  {:<c$}", p.name());
    }
    o += "\n";
    for k in keys {
        o += &format!("{:<w$}", k.name);
        for (i, (p, c)) in pols.iter().zip(&cw).enumerate() {
            let v = cell(p, k);
            let changed = i > 0 && cell(&pols[i - 1], k) != v;
            o += &format!("  {:<c$}", format!("{v}{}", if changed { "*" } else { "" }));
        }
        o += "\n";
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn listings() {
        let h = super::list_hooks();
        assert!(h.lines().any(|l| l.starts_with("after_ptl_release ")));
        assert_eq!(h.lines().count(), abi::litmus::Hook::ALL.len());
        let p = super::list_policies();
        assert!(
            p.contains("flush=pending|per-ptl|generation|ptl  (default pending; kernel, set by the profile)"),
            "{p}"
        );
        // The documented defaults are the ones the parser produces.
        for k in super::KEYS {
            let def = super::Policy::default().get(k.key);
            assert!(def.starts_with(k.value(k.default).unwrap().name), "{}", k.name);
        }
        let l = super::list_kernels();
        assert!(l.lines().any(|l| l.starts_with("v4.14 ")), "{l}");
        assert!(l.lines().any(|l| l.starts_with("notifier ") && l.contains("tlb-flush*")), "{l}");
    }
}

/// The guide's policy table (docs/litmus-guide.md, between the
/// `policy-table` markers), generated from [`abi::policy::KEYS`]: one row
/// per key, then one per value with its status (the releases it was
/// upstream, *proposal*, *model*). A unit test keeps the guide in step.
pub fn policy_table_markdown() -> String {
    use abi::policy::{KeyKind, Release, Status};
    let mut o = String::from("| key | value | kernels | what it stands for |\n|---|---|---|---|\n");
    for k in KEYS {
        let kind = match k.kind {
            KeyKind::Profile => "profile",
            KeyKind::Hardware => "hardware",
            KeyKind::Kernel => "kernel",
        };
        o += &format!("| **`{}`** ({kind}) | | | {} |\n", k.name, k.doc.replace('|', "\\|"));
        for v in k.values {
            let status = match v.status {
                Status::Kernel(eras) => eras
                    .iter()
                    .map(|e| match (e.since == Release::EPOCH, e.until == Release::OPEN) {
                        (true, true) => "all".to_string(),
                        (true, false) => format!("< {}", e.until),
                        (false, true) => format!("{}+", e.since),
                        (false, false) => format!("{} – {}", e.since, e.until),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                Status::Proposal => "*proposal*".into(),
                Status::Model => "*model (no kernel)*".into(),
                Status::Hardware => "".into(),
                Status::Profile(r) => r.to_string(),
            };
            let name = match k.param {
                Some(p) if p.value == v.num => format!("{}:P", v.name),
                _ => v.name.to_string(),
            };
            let def = if v.num == k.default { " (default)" } else { "" };
            o += &format!("| | `{name}`{def} | {status} | {} |\n", v.doc.replace('|', "\\|"));
        }
    }
    o
}

/// The guide's profile table (between the `kernel-table` markers): each
/// kernel key's value in each profile, `*` where it changed.
pub fn kernel_table_markdown() -> String {
    use abi::policy::KeyKind;
    let profs = profiles();
    let pols: Vec<Policy> = profs.iter().map(|p| Policy::profile(*p)).collect();
    let mut o = String::from("| key |");
    for p in profs {
        o += &format!(" {} |", p.name());
    }
    o += "\n|---|";
    for _ in profs {
        o += "---|";
    }
    o += "\n";
    for k in KEYS.iter().filter(|k| k.kind == KeyKind::Kernel) {
        o += &format!("| `{}` |", k.name);
        for (i, p) in pols.iter().enumerate() {
            let v = p.get(k.key);
            let changed = i > 0 && pols[i - 1].get(k.key) != v;
            o += &format!(" {v}{} |", if changed { " *" } else { "" });
        }
        o += "\n";
    }
    o
}

#[cfg(test)]
mod guide_tests {
    use std::path::Path;

    /// The tables in docs/litmus-guide.md are the generated ones. Run with
    /// `UPDATE_GUIDE=1` to rewrite them.
    #[test]
    fn the_guide_has_the_tables_of_the_policy_table() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/litmus-guide.md");
        let text = std::fs::read_to_string(&path).expect("docs/litmus-guide.md");
        let mut out = text.clone();
        for (name, table) in
            [("policy-table", super::policy_table_markdown()), ("kernel-table", super::kernel_table_markdown())]
        {
            let begin = format!("<!-- {name}:begin (generated: UPDATE_GUIDE=1 cargo test -p litmus) -->\n");
            let end = format!("<!-- {name}:end -->");
            let (Some(b), Some(e)) = (out.find(&begin), out.find(&end)) else {
                panic!("docs/litmus-guide.md lacks the {name} markers");
            };
            out.replace_range(b + begin.len()..e, &table);
        }
        if out != text {
            if std::env::var_os("UPDATE_GUIDE").is_some() {
                std::fs::write(&path, out).unwrap();
            } else {
                panic!(
                    "docs/litmus-guide.md's generated tables are out of date: run UPDATE_GUIDE=1 cargo test -p litmus"
                );
            }
        }
    }
}
