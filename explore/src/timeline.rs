//! A schedule as text, one column per thread, one row per step — the form
//! of the multi-CPU traces in the mailing-list threads:
//!
//! ```text
//! P0                          P1
//! --                          --
//! madvise x dontneed
//!   zap_pte_range: pte clear
//! (preempted)
//!                             madvise x dontneed
//! ```

use crate::plan::{is_preemption, StepRecord};

/// Renders `steps`. `names[t]` heads thread t's column; `describe` gives a
/// step's text (it may hold several lines, printed in that column).
/// A preemption is marked `(preempted)` in the column of the thread that
/// lost the CPU while it could still run.
pub fn render(names: &[String], steps: &[StepRecord], describe: impl Fn(&StepRecord) -> String) -> String {
    let n = names.len();
    // Cells: (column, text) rows.
    let mut rows: Vec<(usize, String)> = Vec::new();
    let mut cur = None;
    for s in steps {
        if let Some(c) = cur.filter(|_| is_preemption(cur, s.enabled, s.thread)) {
            rows.push((c as usize, "(preempted)".into()));
        }
        for line in describe(s).lines() {
            rows.push((s.thread as usize, line.to_string()));
        }
        cur = Some(s.thread);
    }
    let mut width = vec![0usize; n];
    for (t, name) in names.iter().enumerate() {
        width[t] = name.chars().count();
    }
    for (c, text) in &rows {
        if *c < n {
            width[*c] = width[*c].max(text.chars().count());
        }
    }
    let gap = 4;
    let line = |cells: &dyn Fn(usize) -> String| {
        let mut s = String::new();
        for (t, w) in width.iter().enumerate() {
            let cell = cells(t);
            s.push_str(&cell);
            if t + 1 < n {
                s.push_str(&" ".repeat(w - cell.chars().count() + gap));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&|t| names[t].clone());
    out += &line(&|t| "-".repeat(names[t].chars().count()));
    for (c, text) in &rows {
        out += &line(&|t| if t == *c { text.clone() } else { String::new() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::footprint::Footprint;

    #[test]
    fn columns_and_preemptions() {
        let s = |thread, enabled, site| StepRecord {
            thread,
            enabled,
            footprint: Footprint::empty(),
            blocked: vec![],
            site,
        };
        let steps = [s(0, 0b11, 0), s(1, 0b11, 0), s(1, 0b11, 1), s(0, 0b01, 1)];
        let names = ["P0".to_string(), "CPU1".to_string()];
        let text = render(&names, &steps, |s| format!("op{}", s.site));
        assert_eq!(
            text,
            "P0             CPU1\n\
             --             ----\n\
             op0\n\
             (preempted)\n\
             \x20              op0\n\
             \x20              op1\n\
             op1\n"
        );
    }
}
