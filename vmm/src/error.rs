//! The errors that end a `vmm` command before or instead of its results.
//! Each area has its own typed error (`VmError`, `ImageError`,
//! `TraceFileError`, `OutputError`, …); this enum gathers them with their
//! sources, and `main` prints the chain on one line with exit status 2.

use crate::boot::ImageError;
use crate::commands::output::OutputError;
use crate::config::ConfigError;
use crate::services::trace::TraceFileError;
use crate::vstate::{EndReason, VmError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Litmus files or policies that did not check (already rendered with file:line:col).
    #[error("{0}")]
    Litmus(String),
    #[error(transparent)]
    Trace(#[from] TraceFileError),
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A guest run that had to end cleanly did not (benchmarks, probes).
    #[error("{what} did not finish cleanly: {end}")]
    GuestRun { what: &'static str, end: Box<EndReason> },
    /// The guest reported something the run cannot use.
    #[error("{0}")]
    GuestReport(String),
    #[error(transparent)]
    TraceRead(#[from] TraceReadError),
    /// A schedule search could not go on (a non-deterministic replay, a
    /// program that ignored its plan).
    #[error("explore: {0}")]
    Explore(String),
    /// A command used the wrong way (what clap cannot express).
    #[error("{0}")]
    Usage(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A trace file (`vmm trace …`) that cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[error("trace {}: {source}", path.display())]
pub struct TraceReadError {
    pub path: std::path::PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The error and its sources, `a: b: c`, skipping sources whose text the
/// outer message already contains.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s += ": ";
            s += &t;
        }
        cur = c.source();
    }
    s
}
