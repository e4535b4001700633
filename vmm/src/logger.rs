//! Diagnostics go through `log` to stderr (`vmm: warning: …`); stdout is
//! for results. `--verbose` shows info messages (and the guest's LOG lines).

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        if r.target() == "guest" {
            eprintln!("{}", r.args());
            return;
        }
        let level = match r.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        eprintln!("vmm: {level}: {}", r.args());
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

/// Installs the logger (once; later calls only change the level).
pub fn init(verbose: bool) {
    let _ = log::set_logger(&LOGGER);
    let level = match std::env::var("SHOOTDOWN_LOG").ok().as_deref() {
        Some("debug") => LevelFilter::Debug,
        Some("trace") => LevelFilter::Trace,
        _ if verbose => LevelFilter::Info,
        _ => LevelFilter::Warn,
    };
    log::set_max_level(level);
}
