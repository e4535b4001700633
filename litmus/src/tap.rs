//! Results as TAP for kernel CI, in kselftest's dialect
//! (`tools/testing/selftests/kselftest.h`, `kselftest/ksft.py`):
//! `TAP version 13`, a plan `1..N`, one `ok N name` / `not ok N name` per
//! test, directives `# SKIP reason` and `# XFAIL reason` (kselftest prints
//! an expected failure as `ok`), diagnostics as `# …` lines, and a closing
//! `# totals: pass:P fail:F xfail:X xpass:0 skip:S error:0`.

use crate::results_file::RunRecord;

/// One test point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapPoint {
    pub name: String,
    pub outcome: Outcome,
    /// The reason after a directive, or why it failed.
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
    Xfail,
}

pub const HEADER: &str = "TAP version 13";

/// `1..N`.
pub fn plan(n: usize) -> String {
    format!("1..{n}")
}

/// Text as TAP diagnostics: every line prefixed `# ` (empty lines `#`).
pub fn diagnostics(text: &str) -> String {
    text.lines().map(|l| if l.is_empty() { "#\n".to_string() } else { format!("# {l}\n") }).collect()
}

/// TAP names may not hold `#` (it starts a directive).
fn clean(name: &str) -> String {
    name.replace('#', "_")
}

/// The result line of point `n` (1-based), with a diagnostic line before
/// it for a failure's reason.
pub fn line(n: usize, p: &TapPoint) -> String {
    let name = clean(&p.name);
    match p.outcome {
        Outcome::Pass if p.reason.is_empty() => format!("ok {n} {name}\n"),
        // Only SKIP and TODO may follow `#` on a result line.
        Outcome::Pass => format!("# {}\nok {n} {name}\n", p.reason),
        Outcome::Fail if p.reason.is_empty() => format!("not ok {n} {name}\n"),
        Outcome::Fail => format!("# {}\nnot ok {n} {name}\n", p.reason),
        Outcome::Skip => format!("ok {n} {name} # SKIP {}\n", p.reason),
        Outcome::Xfail => format!("ok {n} {name} # XFAIL {}\n", p.reason),
    }
}

/// `# totals: pass:P fail:F xfail:X xpass:0 skip:S error:0`.
pub fn totals(points: &[TapPoint]) -> String {
    let n = |o: Outcome| points.iter().filter(|p| p.outcome == o).count();
    format!(
        "# totals: pass:{} fail:{} xfail:{} xpass:0 skip:{} error:0\n",
        n(Outcome::Pass),
        n(Outcome::Fail),
        n(Outcome::Xfail),
        n(Outcome::Skip)
    )
}

/// A whole TAP document (plan first).
pub fn document(points: &[TapPoint]) -> String {
    let mut o = format!("{HEADER}\n{}\n", plan(points.len()));
    for (i, p) in points.iter().enumerate() {
        o += &line(i + 1, p);
    }
    o + &totals(points)
}

/// The self-tests' `PASS name`, `FAIL name: reason`, `SKIP name: reason`,
/// `XFAIL name: reason` lines as TAP points.
pub fn selftest_points(lines: &[String]) -> Vec<TapPoint> {
    lines
        .iter()
        .filter_map(|l| {
            let (word, rest) = l.split_once(' ')?;
            let outcome = match word {
                "PASS" => Outcome::Pass,
                "FAIL" => Outcome::Fail,
                "SKIP" => Outcome::Skip,
                "XFAIL" => Outcome::Xfail,
                _ => return None,
            };
            let (name, reason) = match rest.split_once(": ") {
                Some((n, r)) => (n.to_string(), r.to_string()),
                None => (rest.to_string(), String::new()),
            };
            Some(TapPoint { name, outcome, reason })
        })
        .collect()
}

/// A (test, policy) run against its `[expect]` entry: `ok` if it holds,
/// `not ok` if contradicted or inconclusive, `SKIP` without an entry.
pub fn litmus_point(r: &RunRecord) -> TapPoint {
    let name = format!("{} [{}]", r.test, r.policy);
    let s = r.summary();
    let observed = format!("observed {} in {} of {} iterations", s.observation.name(), s.completed, r.requested);
    match (s.expected, s.expect) {
        (Some(e), Some(res)) if res.passed() => {
            TapPoint { name, outcome: Outcome::Pass, reason: format!("expected {}, {observed}", e.name()) }
        }
        (Some(e), Some(res)) => TapPoint {
            name,
            outcome: Outcome::Fail,
            reason: format!("expected {}: {} ({observed}, {} timed out)", e.name(), res.name(), s.timed_out),
        },
        _ => {
            TapPoint { name, outcome: Outcome::Skip, reason: format!("no [expect] entry for this policy; {observed}") }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check_source, Policy, ResultsFile, RunResult};

    #[test]
    fn selftest_lines_as_kselftest_tap() {
        let lines: Vec<String> = [
            "PASS boot.all-vcpus",
            "FAIL tlb.ad-bits: guest/src/x.rs:12: D not set",
            "SKIP iommu.x: no device",
            "XFAIL mm.y: known",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let doc = document(&selftest_points(&lines));
        assert_eq!(
            doc,
            "TAP version 13\n1..4\nok 1 boot.all-vcpus\n# guest/src/x.rs:12: D not set\nnot ok 2 tlb.ad-bits\n\
             ok 3 iommu.x # SKIP no device\nok 4 mm.y # XFAIL known\n\
             # totals: pass:1 fail:1 xfail:1 xpass:0 skip:1 error:0\n"
        );
    }

    #[test]
    fn litmus_runs_against_their_expectations() {
        let src = "name = \"t\"\n[locations]\nx = { page = \"rw\", value = 1 }\n[thread.P0]\ncode = \"load x -> r0\"\n\
                   [final]\nobserve = [\"P0:r0\"]\nforbidden = \"P0:r0 == 1\"\n[expect]\n\"flush=pending\" = \"never\"\n";
        let t = check_source("t.toml", src).test.unwrap();
        let mut ok = RunResult::new(&t, Policy::parse("flush=pending").unwrap(), 1, 3);
        ok.record_n(&[0], 3).unwrap();
        let mut bad = RunResult::new(&t, Policy::parse("flush=pending").unwrap(), 1, 3);
        bad.record_n(&[1], 3).unwrap();
        let mut none = RunResult::new(&t, Policy::parse("flush=ptl").unwrap(), 1, 3);
        none.record_n(&[0], 3).unwrap();
        let f = ResultsFile::litmus(&[(&t, &ok), (&t, &bad), (&t, &none)], None, true);
        let p: Vec<TapPoint> = f.runs.iter().map(litmus_point).collect();
        assert_eq!(line(1, &p[0]), "# expected never, observed never in 3 of 3 iterations\nok 1 t [flush=pending]\n");
        assert_eq!(
            line(2, &p[1]),
            "# expected never: MISMATCH (observed always in 3 of 3 iterations, 0 timed out)\nnot ok 2 t [flush=pending]\n"
        );
        assert!(line(3, &p[2]).starts_with("ok 3 t [flush=ptl] # SKIP no [expect] entry"));
        assert_eq!(diagnostics("a\n\nb"), "# a\n#\n# b\n");
    }
}
