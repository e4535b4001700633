//! Output: herdtools7-style text, JSON and the verdict table. Pure
//! functions of ([`Test`], [`RunResult`]) — or of a [`RunRecord`] read back
//! from JSON, so merged shards print exactly as one run would — unit-tested
//! to the byte.
//!
//! The text block follows what litmus7's generated harness prints (its
//! `postlude` in `litmus/skelUtil.ml` and `do_dump_outcome`): histogram lines
//! are `"%-6d%c>%s"` with `*` marking states that satisfy the condition's
//! expression; `Ok`/`No` then a blank line and `Witnesses`; `Positive: P,
//! Negative: N` (for `~exists`, Positive counts the states *without* the
//! forbidden outcome, as in litmus7); `Condition ~exists (…) is NOT
//! validated`; `Hash=`; `Observation NAME Never|Sometimes|Always T F`;
//! `Time NAME 0.21`. Memory locations print as `[x]`, as recent litmus7
//! does, registers as `2:r1` (thread number, as herd's log lexer wants).
//!
//! The block must survive herdtools7's own log readers (`mcompare7`,
//! `msum7`: `tools/lexLog_tools.mll`), which [`crate::herdlog`] transcribes
//! and the tests check every block against. Hence where our own lines go:
//! `Policy`, `Threads`, `Fidelity` and `Iterations` before `Histogram`
//! (the lexer skips anything there), `Expect` and `Timeout(s)` after
//! `Time` (its `phash` rule stops at the first line it does not know, and
//! `Time` must come before that).

use crate::ast::{herd_value, Test};
use crate::policy::{Key, Policy};
use crate::results::{ExpectResult, RunResult, Summary};
use crate::results_file::{ResultsFile, RunRecord, ThreadPositionRecord};
use serde_json::Value as Json;

pub use crate::results_file::JSON_SCHEMA;

/// `1000 of 1000 completed` or `998 of 1000 completed, 1 timed out, 1 never ran`.
pub fn evidence_text(s: &Summary, requested: u64) -> String {
    let mut t = format!("{} of {requested} completed", s.completed);
    if s.timed_out > 0 {
        t += &format!(", {} timed out", s.timed_out);
    }
    if s.missing > 0 {
        t += &format!(", {} never ran", s.missing);
    }
    t
}

/// `Policy flush=pending,madv-nested-check=off tlb=lazy iotlb=lazy seed=42`.
pub fn policy_line(policy: &Policy, seed: u64) -> String {
    format!(
        "Policy {} tlb={} iotlb={} seed={seed}",
        policy.canonical_mm(),
        policy.get(Key::Tlb),
        policy.get(Key::Iotlb)
    )
}

/// One state as herd prints it: `2:r0=1; 2:r1=FAULT; [x]=0;`.
pub fn state_text(test: &Test, values: &[u64]) -> String {
    test.observed
        .iter()
        .zip(values)
        .map(|(o, v)| format!("{}={};", o.herd_name(test), herd_value(*v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Threads 0=P0 1=P1 2=D0 (device)`: the herd thread numbers used in
/// states and conditions, and the names the test gave them.
pub fn threads_line(rec: &RunRecord) -> String {
    let mut o = String::from("Threads");
    for t in &rec.threads {
        o += &format!(" {}={}{}", t.id, t.name, if t.kind == "device" { " (device)" } else { "" });
    }
    o
}

fn position_text(p: &ThreadPositionRecord) -> String {
    let mut o = match (p.pc, p.line, p.column) {
        (None, _, _) => format!("{} finished", p.thread),
        (Some(_), Some(l), Some(c)) => format!("{} at line {l}:{c}", p.thread),
        (Some(pc), _, _) => format!("{} at pc {pc}", p.thread),
    };
    if let Some(h) = &p.hook {
        o += &format!(" in hook {h}");
    }
    o
}

/// The herdtools7-style block of one (test, policy) run, newline-terminated.
pub fn herd_block(test: &Test, run: &RunResult) -> String {
    herd_block_of(&RunRecord::new(test, run))
}

/// The block of a run record (from this process or read back from JSON).
pub fn herd_block_of(rec: &RunRecord) -> String {
    let s = rec.summary();
    let mut o = String::new();
    let kind = if rec.kind == "exists" { "Allowed" } else { "Forbidden" };
    o.push_str(&format!("Test {} {kind}\n", rec.test));
    let key = |k: &str| rec.policy_keys.get(k).map_or("?", |v| v.as_str());
    o.push_str(&format!("Policy {} tlb={} iotlb={} seed={}\n", rec.policy_mm, key("tlb"), key("iotlb"), rec.seed));
    if let Some(x) = &rec.explore {
        o.push_str(&x.line());
        o.push('\n');
    }
    o.push_str(&threads_line(rec));
    o.push('\n');
    if let Some(f) = &rec.fidelity {
        o.push_str(&format!("Fidelity {f}\n"));
    }
    if rec.requested != rec.planned {
        o.push_str(&format!(
            "Iterations {}..{} of {}\n",
            rec.first_iteration,
            rec.first_iteration + rec.requested,
            rec.planned
        ));
    }
    o.push_str(&format!("Histogram ({} states)\n", s.states));
    for st in &rec.histogram {
        let mark = if st.matches { '*' } else { ':' };
        o.push_str(&format!("{:<6}{mark}>{}\n", st.count, rec.herd_state(st)));
    }
    o.push_str(if s.validated { "Ok\n" } else { "No\n" });
    o.push_str("\nWitnesses\n");
    o.push_str(&format!("Positive: {}, Negative: {}\n", s.positive, s.negative));
    o.push_str(&format!("Condition {} is {}validated\n", rec.herd_condition, if s.validated { "" } else { "NOT " }));
    o.push_str(&format!("Hash={}\n", rec.hash));
    o.push_str(&format!(
        "Observation {} {} {} {}\n",
        rec.test,
        s.observation.herd_name(),
        s.matching,
        s.completed - s.matching
    ));
    o.push_str(&format!("Time {} {:.2}\n", rec.test, rec.time_secs));
    if let (Some(e), Some(res)) = (s.expected, s.expect) {
        match res {
            ExpectResult::Inconclusive => {
                let why = match rec.explore.as_ref().and_then(|x| x.incomplete_reason()) {
                    Some(r) if s.timed_out == 0 => r,
                    _ => evidence_text(&s, rec.requested),
                };
                o.push_str(&format!("Expect {}: inconclusive ({why})\n", e.name()))
            }
            _ => o.push_str(&format!("Expect {}: {}\n", e.name(), res.name())),
        }
    }
    if let Some(x) = &rec.explore {
        o.push_str(&x.trailer());
    }
    if rec.timed_out > 0 {
        o.push_str(&format!("Timeouts {}\n", rec.timed_out));
        for t in &rec.timeout_samples {
            let pos: Vec<String> = t.threads.iter().map(position_text).collect();
            o.push_str(&format!("Timeout iteration {}: {}\n", t.iteration, pos.join(", ")));
        }
    }
    o
}

/// One line per file after its blocks:
/// `Summary NAME (FILE): 3 runs, 2 ok, 1 MISMATCH, 0 inconclusive, 0 without expectation`.
pub fn file_summary(test: &Test, runs: &[&RunResult]) -> String {
    let (mut ok, mut bad, mut inconclusive, mut none) = (0, 0, 0, 0);
    for r in runs {
        match r.summary(test).expect {
            Some(ExpectResult::Ok) => ok += 1,
            Some(ExpectResult::Mismatch) => bad += 1,
            Some(ExpectResult::Inconclusive) => inconclusive += 1,
            None => none += 1,
        }
    }
    format!(
        "Summary {} ({}): {} runs, {ok} ok, {bad} MISMATCH, {inconclusive} inconclusive, {none} without expectation\n",
        test.name,
        test.file,
        runs.len()
    )
}

/// The final verdict table: one row per (test, policy), observed against
/// expected. Columns are padded to the widest cell.
///
/// `runs` is completed/requested iterations and `timeouts` the timed-out
/// ones, so an `inconclusive` row says why at a glance.
pub fn verdict_table(runs: &[(&Test, &RunResult)]) -> String {
    let recs: Vec<RunRecord> = runs.iter().map(|(t, r)| RunRecord::new(t, r)).collect();
    verdict_table_of(&recs)
}

/// [`verdict_table`] of run records (e.g. merged shards).
pub fn verdict_table_of(runs: &[RunRecord]) -> String {
    const COLS: usize = 7;
    let mut rows: Vec<[String; COLS]> = vec![[
        "test".into(),
        "policy".into(),
        "runs".into(),
        "timeouts".into(),
        "observed".into(),
        "expected".into(),
        "result".into(),
    ]];
    for r in runs {
        let s = r.summary();
        rows.push([
            r.test.clone(),
            // Proposals and hypothetical policies say so on their row.
            match crate::policy::Policy::parse(&r.policy).ok().and_then(|p| p.label()) {
                Some(l) => format!("{} [{l}]", r.policy),
                None => r.policy.clone(),
            },
            format!("{}/{}", s.completed, r.requested),
            s.timed_out.to_string(),
            s.observation.name().into(),
            s.expected.map(|e| e.name()).unwrap_or("-").into(),
            s.expect.map(|e| e.name()).unwrap_or("-").into(),
        ]);
    }
    let mut w = [0usize; COLS];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut o = String::from("Verdicts\n");
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| if i == COLS - 1 { c.clone() } else { format!("{c:<width$}", width = w[i]) })
            .collect();
        o.push_str(line.join("  ").trim_end());
        o.push('\n');
    }
    o
}

/// The same facts as the text output, as JSON (schema [`JSON_SCHEMA`],
/// [`ResultsFile`]). Values are numbers, or the strings `"fault"`,
/// `"stale-walk"`, `"timeout"`.
pub fn to_json(runs: &[(&Test, &RunResult)]) -> Json {
    ResultsFile::litmus(runs, None, true).to_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::check_source;
    use crate::results::ThreadPosition;
    use abi::litmus::{Hook, VALUE_FAULT, VALUE_TIMEOUT};

    const SRC: &str = r#"name = "madv-dontneed-concurrent"
[locations]
x = { page = "rw", value = 1 }
[thread.P0]
code = "madvise x dontneed at after_ptl_release { signal s1; wait s2 }"
[thread.P1]
code = "wait s1\nmadvise x dontneed\nsignal s2"
[thread.P2]
code = "load x -> r0\nload x -> r1"
[final]
observe   = ["P2:r0", "P2:r1"]
forbidden = "P2:r1 == 1"
[expect]
"flush=pending"                         = "never"
"flush=pending,madv-nested-check=off"   = "sometimes"
"#;

    fn test() -> Test {
        check_source("s1.toml", SRC).test.expect("valid")
    }

    #[test]
    fn forbidden_seen_golden() {
        let t = test();
        let mut r = RunResult::new(&t, Policy::parse("flush=pending,madv-nested-check=off").unwrap(), 42, 1000);
        r.record_n(&[1, 1], 600).unwrap();
        r.record_n(&[1, 0], 400).unwrap();
        r.time_secs = 0.214;
        let out = herd_block(&t, &r);
        let want = format!(
            "Test madv-dontneed-concurrent Forbidden
Policy flush=pending,madv-nested-check=off tlb=lazy iotlb=lazy seed=42
Threads 0=P0 1=P1 2=P2
Histogram (2 states)
400   :>2:r0=1; 2:r1=0;
600   *>2:r0=1; 2:r1=1;
No

Witnesses
Positive: 400, Negative: 600
Condition ~exists (2:r1=1) is NOT validated
Hash={}
Observation madv-dontneed-concurrent Sometimes 600 400
Time madv-dontneed-concurrent 0.21
Expect sometimes: ok
",
            t.hash
        );
        assert_eq!(out, want);
    }

    #[test]
    fn forbidden_never_golden_with_specials_and_timeouts() {
        let t = test();
        let mut r = RunResult::new(&t, Policy::default(), 7, 1000);
        r.record_n(&[1, 0], 998).unwrap();
        r.record(&[1, VALUE_FAULT]).unwrap();
        r.record_timeout(
            5,
            &[1, VALUE_TIMEOUT],
            vec![
                ThreadPosition {
                    thread: "P0".into(),
                    pc: Some(1),
                    source: Some((5, 8)),
                    hook: Some(Hook::AfterPtlRelease),
                },
                ThreadPosition { thread: "P1".into(), pc: None, source: None, hook: None },
            ],
        )
        .unwrap();
        r.fidelity = Some("tlb=lazy (deterministic)".into());
        let out = herd_block(&t, &r);
        let want = format!(
            "Test madv-dontneed-concurrent Forbidden
Policy default tlb=lazy iotlb=lazy seed=7
Threads 0=P0 1=P1 2=P2
Fidelity tlb=lazy (deterministic)
Histogram (3 states)
998   :>2:r0=1; 2:r1=0;
1     :>2:r0=1; 2:r1=TIMEOUT;
1     :>2:r0=1; 2:r1=FAULT;
Ok

Witnesses
Positive: 999, Negative: 0
Condition ~exists (2:r1=1) is validated
Hash={}
Observation madv-dontneed-concurrent Never 0 999
Time madv-dontneed-concurrent 0.00
Expect never: inconclusive (999 of 1000 completed, 1 timed out)
Timeouts 1
Timeout iteration 5: P0 at line 5:8 in hook after_ptl_release, P1 finished
",
            t.hash
        );
        assert_eq!(out, want);
    }

    #[test]
    fn exists_sometimes_and_mismatch() {
        let src = SRC.replace("forbidden = \"P2:r1 == 1\"", "exists = \"P2:r1 == 1 || x != 1\"");
        let t = check_source("e.toml", &src).test.unwrap();
        let mut r = RunResult::new(&t, Policy::parse("flush=pending").unwrap(), 1, 1234570);
        r.record_n(&[1, 1, 1], 3).unwrap();
        r.record_n(&[1, 0, 1], 1234567).unwrap();
        let out = herd_block(&t, &r);
        assert!(out.starts_with("Test madv-dontneed-concurrent Allowed\n"), "{out}");
        assert!(out.contains("1234567:>2:r0=1; 2:r1=0; [x]=1;\n"), "{out}");
        assert!(out.contains("3     *>2:r0=1; 2:r1=1; [x]=1;\n"), "{out}");
        assert!(out.contains("Ok\n\nWitnesses\nPositive: 3, Negative: 1234567\n"), "{out}");
        assert!(out.contains("Condition exists (2:r1=1 \\/ ~([x]=1)) is validated\n"), "{out}");
        assert!(out.contains("Observation madv-dontneed-concurrent Sometimes 3 1234567\n"), "{out}");
        assert!(out.contains("Expect never: MISMATCH\n"), "{out}");
        assert!(crate::results::any_mismatch(&[(&t, &r)]));
        let table = verdict_table(&[(&t, &r)]);
        assert_eq!(
            table,
            "Verdicts\n\
             test                      policy         runs             timeouts  observed   expected  result\n\
             madv-dontneed-concurrent  flush=pending  1234570/1234570  0         sometimes  never     MISMATCH\n"
        );
        assert_eq!(
            file_summary(&t, &[&r]),
            "Summary madv-dontneed-concurrent (e.toml): 1 runs, 0 ok, 1 MISMATCH, 0 inconclusive, 0 without expectation\n"
        );
    }

    fn run_requested(j: &Json) -> u64 {
        j["runs"][0]["requested"].as_u64().unwrap()
    }

    /// SCENARIOS.md "Verdicts need evidence": a run whose iterations all
    /// timed out, or that ran fewer than requested, proves no `never`.
    #[test]
    fn never_needs_every_iteration() {
        let t = test();
        let pos = || vec![ThreadPosition { thread: "P0".into(), pc: Some(0), source: None, hook: None }];
        // Every iteration timed out.
        let mut all_timed_out = RunResult::new(&t, Policy::parse("flush=pending").unwrap(), 1, 3);
        for i in 0..3 {
            all_timed_out.record_timeout(i, &[VALUE_TIMEOUT, VALUE_TIMEOUT], pos()).unwrap();
        }
        let s = all_timed_out.summary(&t);
        assert_eq!((s.completed, s.timed_out, s.matching), (0, 3, 0));
        assert_eq!(s.expect, Some(ExpectResult::Inconclusive));
        assert!(crate::results::any_mismatch(&[(&t, &all_timed_out)]));
        let out = herd_block(&t, &all_timed_out);
        assert!(out.contains("Expect never: inconclusive (0 of 3 completed, 3 timed out)\n"), "{out}");
        let table = verdict_table(&[(&t, &all_timed_out)]);
        assert!(table.contains(" 0/3 ") && table.trim_end().ends_with("inconclusive"), "{table}");
        let j = to_json(&[(&t, &all_timed_out)]);
        assert_eq!(j["runs"][0]["expect_result"], "inconclusive");
        assert_eq!(j["runs"][0]["expect_ok"], false);
        assert_eq!(j["runs"][0]["completed"], 0);
        assert_eq!(j["runs"][0]["timed_out"], 3);

        // The guest stopped after 2 of 100 iterations: never is unproven.
        let mut short = RunResult::new(&t, Policy::parse("flush=pending").unwrap(), 1, 100);
        short.record_n(&[1, 0], 2).unwrap();
        let s = short.summary(&t);
        assert_eq!((s.missing, s.expect), (98, Some(ExpectResult::Inconclusive)));
        assert!(herd_block(&t, &short).contains("inconclusive (2 of 100 completed, 98 never ran)"));

        // Nothing ran at all.
        let none = RunResult::new(&t, Policy::parse("flush=pending").unwrap(), 1, 100);
        assert_eq!(none.summary(&t).expect, Some(ExpectResult::Inconclusive));

        // `sometimes` may rest on completed iterations: one witness suffices.
        let mut witness = RunResult::new(&t, Policy::parse("flush=pending,madv-nested-check=off").unwrap(), 1, 10);
        witness.record(&[1, 1]).unwrap();
        witness.record_timeout(1, &[VALUE_TIMEOUT, VALUE_TIMEOUT], pos()).unwrap();
        assert_eq!(witness.summary(&t).expect, Some(ExpectResult::Ok));
        // …but without a witness an incomplete run cannot refute it.
        let mut no_witness = RunResult::new(&t, Policy::parse("flush=pending,madv-nested-check=off").unwrap(), 1, 10);
        no_witness.record_n(&[1, 0], 9).unwrap();
        assert_eq!(no_witness.summary(&t).expect, Some(ExpectResult::Inconclusive));
        no_witness.record(&[1, 0]).unwrap();
        assert_eq!(no_witness.summary(&t).expect, Some(ExpectResult::Mismatch));

        // A counterexample refutes `never` even in an incomplete run.
        let mut refuted = RunResult::new(&t, Policy::parse("flush=pending").unwrap(), 1, 10);
        refuted.record(&[1, 1]).unwrap();
        assert_eq!(refuted.summary(&t).expect, Some(ExpectResult::Mismatch));
    }

    #[test]
    fn json_schema() {
        let t = test();
        let mut r = RunResult::new(&t, Policy::parse("flush=ptl").unwrap(), 3, 1);
        r.record(&[1, VALUE_FAULT]).unwrap();
        let j = to_json(&[(&t, &r)]);
        assert_eq!(j["schema"], "shootdown-results/3");
        assert_eq!(j["kind"], "litmus");
        assert_eq!(j["runs"][0]["herd_observed"][1], "2:r1");
        assert_eq!(j["runs"][0]["threads"][2]["name"], "P2");
        assert_eq!(j["runs"][0]["herd_condition"], "~exists (2:r1=1)");
        // The file reads back, and prints the same block.
        let back = ResultsFile::parse(&j.to_string()).unwrap();
        assert_eq!(herd_block_of(&back.runs[0]), herd_block(&t, &r));
        assert_eq!(run_requested(&j), 1);
        let run = &j["runs"][0];
        assert_eq!(run["policy"], "flush=ptl");
        assert_eq!(run["policy_keys"]["flush"], "ptl");
        assert_eq!(run["policy_keys"]["notifier"], "tlb-flush");
        assert_eq!(run["histogram"][0]["values"]["P2:r1"], "fault");
        assert_eq!(run["histogram"][0]["values"]["P2:r0"], 1);
        assert_eq!(run["observation"], "never");
        assert_eq!(run["expected"], Json::Null);
        assert_eq!(run["kind"], "forbidden");
        assert!(r.record(&[1]).is_err());
    }
}
