//! shootdown's trace tools, as a library used by `vmm trace …`:
//!
//! * [`format`]: the trace file (a versioned header, then frames: run and
//!   boot metadata as JSON, records as raw 48-byte `abi::trace` records),
//!   its writer and a reader that keeps whatever part of a truncated or
//!   damaged file is readable;
//! * [`model`]: records grouped into iterations, in sequence order, with
//!   TSC timestamps converted to nanoseconds;
//! * [`analysis`]: the staleness windows (PTE change → invalidation, split
//!   at the PTL release; stale accesses) and their distributions;
//! * [`perfetto`]: Chrome/Perfetto trace-event JSON;
//! * [`svg`]: a timeline picture of one iteration.

pub mod analysis;
pub mod format;
pub mod model;
pub mod perfetto;
pub mod svg;
pub mod timeline;
