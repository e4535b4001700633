//! "What does my patch change?": a candidate's verdicts against a
//! baseline's, per test (`vmm compare BASE.json CAND.json`, and
//! `vmm litmus --baseline POLICY`, which compares every other policy of a
//! test with the baseline policy's run of it).
//!
//! Each run's verdict is what its iterations support: `never`,
//! `sometimes`, `always` when every planned iteration completed (or the
//! outcome was seen), else `inconclusive` (SCENARIOS.md "Verdicts need
//! evidence"). A change is flagged when it matters to a flush-scheme
//! patch: a forbidden outcome the baseline never showed and the candidate
//! does is a NEW VIOLATION (the exit status says so); one the candidate no
//! longer shows over a complete run is FIXED; a conclusive baseline whose
//! candidate did not complete is NOW INCONCLUSIVE.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::results_file::{ResultsFile, RunRecord};

/// How the candidate differs from the baseline for one test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// A forbidden outcome appeared.
    NewViolation,
    /// The forbidden outcome is gone, over a complete run.
    Fixed,
    /// The baseline's verdict was conclusive, the candidate's is not.
    NowInconclusive,
    /// The baseline's verdict was inconclusive, the candidate's is not.
    NowConclusive,
    /// An `exists` outcome appeared or disappeared, or `sometimes` ↔ `always`.
    Changed,
    /// The test ran in only one of the two.
    OnlyBaseline,
    OnlyCandidate,
    Same,
}

impl Change {
    pub fn label(self) -> &'static str {
        match self {
            Change::NewViolation => "NEW VIOLATION",
            Change::Fixed => "fixed",
            Change::NowInconclusive => "now inconclusive",
            Change::NowConclusive => "now conclusive",
            Change::Changed => "changed",
            Change::OnlyBaseline => "only in baseline",
            Change::OnlyCandidate => "only in candidate",
            Change::Same => "",
        }
    }
}

/// One run's verdict as a comparison sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunVerdict {
    /// `never`, `sometimes`, `always`, or `inconclusive`.
    pub verdict: String,
    /// Completed iterations whose state satisfied the condition.
    pub matching: u64,
    pub completed: u64,
    pub planned: u64,
    /// Every planned iteration completed.
    pub complete: bool,
}

impl RunVerdict {
    pub fn of(r: &RunRecord) -> RunVerdict {
        let s = r.summary();
        let complete = s.completed >= r.requested && r.requested > 0;
        let verdict =
            if s.matching == 0 && !complete { "inconclusive".into() } else { s.observation.name().to_string() };
        RunVerdict { verdict, matching: s.matching, completed: s.completed, planned: r.requested, complete }
    }

    /// `never (1000/1000)`, `sometimes (600 of 1000)`, `inconclusive (0 of 998/1000)`.
    pub fn text(&self) -> String {
        match self.verdict.as_str() {
            "never" => format!("never ({}/{})", self.completed, self.planned),
            "inconclusive" => format!("inconclusive (0 in {}/{})", self.completed, self.planned),
            v => format!("{v} ({} of {})", self.matching, self.completed),
        }
    }
}

/// One row: a test under the baseline and the candidate.
#[derive(Clone, Debug)]
pub struct Row {
    pub test: String,
    /// The policy of each side (the same when both ran one policy).
    pub base_policy: Option<String>,
    pub cand_policy: Option<String>,
    pub base: Option<RunVerdict>,
    pub cand: Option<RunVerdict>,
    pub change: Change,
    /// The two sides ran different versions of the test (hash differs).
    pub test_changed: bool,
}

/// The whole comparison.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    pub rows: Vec<Row>,
}

fn classify(kind: &str, b: &RunVerdict, c: &RunVerdict) -> Change {
    let forbidden = kind == "forbidden";
    match (b.matching > 0, c.matching > 0) {
        (false, true) if forbidden => Change::NewViolation,
        (false, true) => Change::Changed,
        (true, false) if !c.complete => Change::NowInconclusive,
        (true, false) if forbidden => Change::Fixed,
        (true, false) => Change::Changed,
        (false, false) if b.complete && !c.complete => Change::NowInconclusive,
        (false, false) if !b.complete && c.complete => Change::NowConclusive,
        (true, true) if b.verdict != c.verdict => Change::Changed,
        _ => Change::Same,
    }
}

fn row(b: Option<&RunRecord>, c: Option<&RunRecord>) -> Row {
    let any = b.or(c).expect("a side");
    let (bv, cv) = (b.map(RunVerdict::of), c.map(RunVerdict::of));
    let change = match (&bv, &cv) {
        (Some(x), Some(y)) => classify(&any.kind, x, y),
        (Some(_), None) => Change::OnlyBaseline,
        _ => Change::OnlyCandidate,
    };
    Row {
        test: any.test.clone(),
        base_policy: b.map(|r| r.policy.clone()),
        cand_policy: c.map(|r| r.policy.clone()),
        base: bv,
        cand: cv,
        change,
        test_changed: matches!((b, c), (Some(x), Some(y)) if x.hash != y.hash),
    }
}

/// `vmm compare BASE CAND`: runs are paired by (test, policy); a test left
/// with exactly one unpaired run on each side is paired across policies
/// (the same catalogue run with one `--policy` each).
pub fn compare(base: &ResultsFile, cand: &ResultsFile) -> Comparison {
    let index = |f: &ResultsFile| -> BTreeMap<(String, String), usize> {
        f.runs.iter().enumerate().map(|(i, r)| (r.key(), i)).collect()
    };
    let (bi, ci) = (index(base), index(cand));
    let mut rows = Vec::new();
    let mut left_b: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
    let mut left_c: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for r in &base.runs {
        if !order.contains(&r.test) {
            order.push(r.test.clone());
        }
    }
    for r in &cand.runs {
        if !order.contains(&r.test) {
            order.push(r.test.clone());
        }
    }
    for r in &base.runs {
        match ci.get(&r.key()) {
            Some(&j) => rows.push(row(Some(r), Some(&cand.runs[j]))),
            None => left_b.entry(r.test.clone()).or_default().push(r),
        }
    }
    for r in &cand.runs {
        if !bi.contains_key(&r.key()) {
            left_c.entry(r.test.clone()).or_default().push(r);
        }
    }
    for t in &order {
        let (b, c) = (left_b.remove(t).unwrap_or_default(), left_c.remove(t).unwrap_or_default());
        if b.len() == 1 && c.len() == 1 {
            rows.push(row(Some(b[0]), Some(c[0])));
        } else {
            rows.extend(b.into_iter().map(|r| row(Some(r), None)));
            rows.extend(c.into_iter().map(|r| row(None, Some(r))));
        }
    }
    let pos = |t: &str| order.iter().position(|x| x == t).unwrap_or(usize::MAX);
    rows.sort_by_key(|r| pos(&r.test));
    Comparison { rows }
}

/// `vmm litmus --baseline POLICY`: within one results file, every run of
/// a test against that test's baseline run (the one `is_baseline` picks).
pub fn against_baseline(file: &ResultsFile, is_baseline: impl Fn(&RunRecord) -> bool) -> Comparison {
    let mut rows = Vec::new();
    let mut tests: Vec<&str> = Vec::new();
    for r in &file.runs {
        if !tests.contains(&r.test.as_str()) {
            tests.push(&r.test);
        }
    }
    for t in tests {
        let runs: Vec<&RunRecord> = file.runs.iter().filter(|r| r.test == t).collect();
        let base = runs.iter().find(|r| is_baseline(r)).copied();
        for c in runs.iter().filter(|r| !is_baseline(r)) {
            // The baseline's policy is the same on every row: not repeated.
            rows.push(Row { base_policy: None, ..row(base, Some(c)) });
        }
        if runs.iter().all(|r| is_baseline(r)) {
            rows.extend(base.map(|b| row(Some(b), None)));
        }
    }
    Comparison { rows }
}

impl Comparison {
    pub fn new_violations(&self) -> usize {
        self.rows.iter().filter(|r| r.change == Change::NewViolation).count()
    }

    /// Rows whose verdict moved.
    pub fn changes(&self) -> usize {
        self.rows.iter().filter(|r| r.change != Change::Same).count()
    }

    /// A table, then one summary line.
    pub fn render(&self) -> String {
        let mut cells: Vec<[String; 5]> =
            vec![["test".into(), "policy".into(), "baseline".into(), "candidate".into(), "change".into()]];
        for r in &self.rows {
            let policy = match (&r.base_policy, &r.cand_policy) {
                (Some(a), Some(b)) if a != b => format!("{a} → {b}"),
                (Some(a), _) | (None, Some(a)) => a.clone(),
                _ => "-".into(),
            };
            let v = |x: &Option<RunVerdict>| x.as_ref().map_or("-".to_string(), |v| v.text());
            let mut change = r.change.label().to_string();
            if r.test_changed {
                change += if change.is_empty() { "(test changed)" } else { " (test changed)" };
            }
            cells.push([r.test.clone(), policy, v(&r.base), v(&r.cand), change]);
        }
        let mut w = [0usize; 5];
        for c in &cells {
            for (i, s) in c.iter().enumerate() {
                w[i] = w[i].max(s.chars().count());
            }
        }
        let mut o = String::new();
        for c in &cells {
            let line: Vec<String> = c
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let pad = w[i].saturating_sub(s.chars().count());
                    if i == 4 {
                        s.clone()
                    } else {
                        format!("{s}{}", " ".repeat(pad))
                    }
                })
                .collect();
            let _ = writeln!(o, "{}", line.join("  ").trim_end());
        }
        let count = |c: Change| self.rows.iter().filter(|r| r.change == c).count();
        let _ = writeln!(
            o,
            "Compare: {} test runs, {} new violation(s), {} fixed, {} now inconclusive, {} now conclusive, {} changed, {} unpaired",
            self.rows.len(),
            count(Change::NewViolation),
            count(Change::Fixed),
            count(Change::NowInconclusive),
            count(Change::NowConclusive),
            count(Change::Changed),
            count(Change::OnlyBaseline) + count(Change::OnlyCandidate),
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check_source, Policy, RunResult, Test};
    use abi::litmus::VALUE_TIMEOUT;

    const SRC: &str = r#"name = "t"
[locations]
x = { page = "rw", value = 1 }
[thread.P0]
code = "load x -> r0"
[final]
observe = ["P0:r0"]
forbidden = "P0:r0 == 1"
[expect]
"flush=pending" = "never"
"#;

    fn test() -> Test {
        check_source("t.toml", SRC).test.unwrap()
    }

    /// `n` iterations of which `bad` show the forbidden value and `stuck` timed out.
    fn file(t: &Test, policy: &str, n: u64, bad: u64, stuck: u64) -> ResultsFile {
        let mut r = RunResult::new(t, Policy::parse(policy).unwrap(), 1, n);
        r.record_n(&[0], n - bad - stuck).unwrap();
        if bad > 0 {
            r.record_n(&[1], bad).unwrap();
        }
        for i in 0..stuck {
            r.record_timeout(i, &[VALUE_TIMEOUT], vec![]).unwrap();
        }
        ResultsFile::litmus(&[(t, &r)], None, true)
    }

    #[test]
    fn flags_what_a_patch_changed() {
        let t = test();
        let p = "flush=pending";
        let c = |a: &ResultsFile, b: &ResultsFile| compare(a, b).rows[0].change;
        assert_eq!(c(&file(&t, p, 100, 0, 0), &file(&t, p, 100, 3, 0)), Change::NewViolation);
        assert_eq!(c(&file(&t, p, 100, 3, 0), &file(&t, p, 100, 0, 0)), Change::Fixed);
        assert_eq!(c(&file(&t, p, 100, 3, 0), &file(&t, p, 100, 0, 2)), Change::NowInconclusive);
        assert_eq!(c(&file(&t, p, 100, 0, 0), &file(&t, p, 100, 0, 2)), Change::NowInconclusive);
        assert_eq!(c(&file(&t, p, 100, 0, 2), &file(&t, p, 100, 0, 0)), Change::NowConclusive);
        assert_eq!(c(&file(&t, p, 100, 3, 0), &file(&t, p, 100, 100, 0)), Change::Changed);
        assert_eq!(c(&file(&t, p, 100, 0, 0), &file(&t, p, 100, 0, 0)), Change::Same);
        // A timeout does not hide a violation.
        assert_eq!(c(&file(&t, p, 100, 0, 0), &file(&t, p, 100, 1, 5)), Change::NewViolation);
        let cmp = compare(&file(&t, p, 100, 0, 0), &file(&t, p, 100, 3, 0));
        assert_eq!(cmp.new_violations(), 1);
        let text = cmp.render();
        assert!(text.contains("t     flush=pending  never (100/100)  sometimes (3 of 100)  NEW VIOLATION"), "{text}");
        assert!(text
            .ends_with("1 new violation(s), 0 fixed, 0 now inconclusive, 0 now conclusive, 0 changed, 0 unpaired\n"));
    }

    #[test]
    fn pairs_across_policies_and_reports_the_unpaired() {
        let t = test();
        let cmp = compare(&file(&t, "flush=pending", 10, 0, 0), &file(&t, "flush=per-ptl", 10, 0, 0));
        assert_eq!(cmp.rows.len(), 1);
        assert!(cmp.render().contains("flush=pending → flush=per-ptl"), "{}", cmp.render());
        let mut two = file(&t, "flush=ptl", 10, 0, 0);
        two.runs.extend(file(&t, "madv-nested-check=off", 10, 10, 0).runs);
        let cmp = compare(&file(&t, "flush=pending", 10, 0, 0), &two);
        assert_eq!(cmp.rows.iter().filter(|r| r.change == Change::OnlyCandidate).count(), 2);
        assert_eq!(cmp.new_violations(), 0);
    }

    #[test]
    fn baseline_within_one_file() {
        let t = test();
        let mut f = file(&t, "flush=pending", 10, 0, 0);
        f.runs.extend(file(&t, "madv-nested-check=off", 10, 10, 0).runs);
        f.runs.extend(file(&t, "flush=ptl", 10, 0, 0).runs);
        let cmp = against_baseline(&f, |r| r.policy == "flush=pending");
        let changes: Vec<(Option<String>, Change)> =
            cmp.rows.iter().map(|r| (r.cand_policy.clone(), r.change)).collect();
        assert_eq!(
            changes,
            [(Some("madv-nested-check=off".into()), Change::NewViolation), (Some("flush=ptl".into()), Change::Same)]
        );
    }
}
