//! `vmm litmus --kernel all`: one run per kernel profile, and the kernel ×
//! verdict table that answers "which releases are affected".

use crate::ast::Test;
use crate::policy::{profiles, Policy, Profile};
use crate::results::{ExpectResult, RunResult};

/// One cell of the table: what a (test, profile) row gave.
pub enum KernelCell<'a> {
    /// Ran: the observation, checked against `[expect]` if one applies.
    Ran(&'a RunResult),
    /// Not run, with the reason (an operation the release does not have).
    Skipped(String),
}

/// The first release with a statement's operation, if younger than every
/// profile: `uffd_wp` (v5.7), `madvise L free` (MADV_FREE, 854e9ed09ded, v4.5).
pub fn since(s: &crate::ast::Stmt) -> Option<abi::policy::Release> {
    use abi::litmus::{Advice, Op};
    match s.op {
        Op::Madvise if s.arg == Advice::Free as u8 => Some(abi::policy::r(4, 5)),
        op => op.since(),
    }
}

/// Why `test` cannot run on `policy`'s kernel: an operation younger than it
/// (`uffd_wp` before v5.7, MADV_FREE before v4.5).
pub fn unavailable(test: &Test, policy: &Policy) -> Option<String> {
    let rel = policy.kernel().release();
    let mut why = None;
    for t in &test.threads {
        for s in &t.code {
            s.walk(&mut |s| {
                if let Some(since) = since(s) {
                    if rel < since && why.is_none() {
                        let what = if s.op == abi::litmus::Op::Madvise {
                            "madvise free".to_string()
                        } else {
                            s.op.name().to_string()
                        };
                        why = Some(format!("{} has no `{what}` (since {since})", policy.kernel().name()));
                    }
                }
            });
        }
    }
    why
}

/// The kernel × verdict table: one line per test, one column per profile.
/// A cell is the observation (`never`, `sometimes`, `always`), with `!` if
/// it disagrees with the test's `[expect]` for that kernel, `~` if the run
/// is inconclusive (with completed/requested iterations), `?` if no
/// expectation covers it; `n/a` if the kernel cannot run the test.
pub fn kernel_table(rows: &[(&Test, Vec<(Profile, KernelCell<'_>)>)]) -> String {
    let profs = profiles();
    let mut lines: Vec<Vec<String>> =
        vec![std::iter::once("test".to_string()).chain(profs.iter().map(|p| p.name().to_string())).collect()];
    for (test, cells) in rows {
        let mut line = vec![test.name.clone()];
        for p in profs {
            let cell = match cells.iter().find(|(q, _)| q == p).map(|(_, c)| c) {
                None => "-".to_string(),
                Some(KernelCell::Skipped(_)) => "n/a".to_string(),
                Some(KernelCell::Ran(r)) => {
                    let s = r.summary(test);
                    let mark = match s.expect {
                        Some(ExpectResult::Ok) => "",
                        Some(ExpectResult::Mismatch) => "!",
                        Some(ExpectResult::Inconclusive) => "~",
                        None => "?",
                    };
                    let seen = if s.completed < r.requested {
                        format!("{}({}/{})", s.observation.name(), s.completed, r.requested)
                    } else {
                        s.observation.name().to_string()
                    };
                    format!("{seen}{mark}")
                }
            };
            line.push(cell);
        }
        lines.push(line);
    }
    let n = lines[0].len();
    let w: Vec<usize> = (0..n).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
    let mut o = String::from(
        "Kernels (observed per profile; `!` disagrees with [expect], `~` inconclusive, `?` no expectation)\n",
    );
    for l in &lines {
        let cells: Vec<String> = l.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = w[i])).collect();
        o.push_str(cells.join("  ").trim_end());
        o.push('\n');
    }
    o
}
