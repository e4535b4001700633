//! Progress of a long job on stderr: iterations done of all, rate, ETA and
//! the (test, policy) running — an indicatif bar when stderr is a
//! terminal; with `--progress` and no terminal (a CI log), a plain line
//! every few seconds; else nothing. Results on stdout are never touched.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A handle the runner and the hypercall handler share; cheap to clone.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<Inner>>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Progress(shown)" } else { "Progress(hidden)" })
    }
}

enum Inner {
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
}

struct Lines {
    total: u64,
    done: u64,
    what: &'static str,
    message: String,
    started: Instant,
    last: Instant,
}

/// How often a plain progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(10);

/// `1h02m`, `3m05s`, `42s`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// `1234/4100 iterations (30%), 45.2/s, ETA 1m04s`.
pub fn line(done: u64, total: u64, what: &str, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    if total == 0 {
        return format!("{done} {what}, {rate:.1}/s");
    }
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    let eta = if done == 0 || rate <= 0.0 {
        "ETA ?".to_string()
    } else {
        format!("ETA {}", fmt_duration(Duration::from_secs_f64(total.saturating_sub(done) as f64 / rate)))
    };
    format!("{done}/{total} {what} ({pct}%), {rate:.1}/s, {eta}")
}

impl Progress {
    /// Nothing shown.
    pub fn hidden() -> Progress {
        Progress(None)
    }

    /// A progress of `total` `what` (e.g. "iterations"): a bar on a
    /// terminal, plain lines if `force` and stderr is not one, else hidden.
    pub fn new(total: u64, what: &'static str, force: bool) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(4));
            let style = ProgressStyle::with_template(&format!(
                "{{elapsed_precise}} {{bar:25}} {{pos}}/{{len}} {what}  {{rate}}  ETA {{eta}}  {{wide_msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}/s", s.per_sec());
            });
            bar.set_style(style);
            Progress(Some(Arc::new(Inner::Bar(bar))))
        } else if force {
            let now = Instant::now();
            Progress(Some(Arc::new(Inner::Lines(Mutex::new(Lines {
                total,
                done: 0,
                what,
                message: String::new(),
                started: now,
                last: now,
            })))))
        } else {
            Progress::hidden()
        }
    }

    /// A count with no known total (a search's schedules): a spinner on a
    /// terminal, plain lines (`N what, R/s`) if `force`, else hidden.
    pub fn open_ended(what: &'static str, force: bool) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
            let style = ProgressStyle::with_template(&format!(
                "{{elapsed_precise}} {{spinner}} {{pos}} {what}  {{rate}}  {{wide_msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}/s", s.per_sec());
            });
            bar.set_style(style);
            Progress(Some(Arc::new(Inner::Bar(bar))))
        } else {
            // `total` 0: the plain line has no percentage or ETA to give.
            Self::new(0, what, force)
        }
    }

    /// What runs now (`s1-concurrent-zap [flush=pending]`).
    pub fn set_message(&self, msg: String) {
        match self.0.as_deref() {
            Some(Inner::Bar(b)) => b.set_message(msg),
            Some(Inner::Lines(l)) => {
                let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
                l.message = msg;
            }
            None => {}
        }
    }

    /// `n` more done.
    pub fn inc(&self, n: u64) {
        match self.0.as_deref() {
            Some(Inner::Bar(b)) => b.inc(n),
            Some(Inner::Lines(l)) => {
                let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
                l.done += n;
                if l.last.elapsed() >= LINE_EVERY {
                    l.last = Instant::now();
                    let text = line(l.done, l.total, l.what, l.started.elapsed());
                    let _ = writeln!(std::io::stderr(), "progress: {text} — {}", l.message);
                }
            }
            None => {}
        }
    }

    /// Done: the bar disappears; the plain mode says how long it took.
    pub fn finish(&self) {
        match self.0.as_deref() {
            Some(Inner::Bar(b)) => b.finish_and_clear(),
            Some(Inner::Lines(l)) => {
                let l = l.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(
                    std::io::stderr(),
                    "progress: {} {} in {}",
                    l.done,
                    l.what,
                    fmt_duration(l.started.elapsed())
                );
            }
            None => {}
        }
    }
}

impl crate::services::litmus::IterationObserver for Progress {
    fn iteration_done(&self, _iteration: u64) {
        self.inc(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            line(1234, 4100, "iterations", Duration::from_secs(20)),
            "1234/4100 iterations (30%), 61.7/s, ETA 46s"
        );
        assert_eq!(line(0, 10, "iterations", Duration::from_secs(1)), "0/10 iterations (0%), 0.0/s, ETA ?");
        assert_eq!(fmt_duration(Duration::from_secs(3725)), "1h02m");
        assert_eq!(fmt_duration(Duration::from_secs(185)), "3m05s");
        let p = Progress::hidden();
        p.inc(3);
        p.finish();
    }
}
