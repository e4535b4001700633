//! The run-state page at `layout::LITMUS_STATE` that the guest interpreter
//! keeps current and the VMM reads when an iteration runs out of time (the
//! guest itself may be stuck under a lock by then). Offsets in bytes.

/// Iteration being run (absolute number), u64.
pub const ITERATION: u64 = 0;
/// [`PHASE_SETUP`] … [`PHASE_TEARDOWN`], u64.
pub const PHASE: u64 = 8;
/// `barrier` arrival counter, u64.
pub const BARRIER: u64 = 16;
/// Iterations completed since boot (the watchdog's progress mark), u64.
pub const DONE: u64 = 24;
/// Thread `t`'s position word at `POSITIONS + 8 * t`: see [`pos`].
pub const POSITIONS: u64 = 64;
/// Device thread `d`'s program GPA at `DEVICE_PROGRAMS + 8 * d` (the
/// VMM finds the first op whose result is still `VALUE_TIMEOUT`; the
/// op's bits 32..64 hold its thread-relative pc).
pub const DEVICE_PROGRAMS: u64 = POSITIONS + 8 * super::MAX_THREADS as u64;

pub const PHASE_IDLE: u64 = 0;
pub const PHASE_SETUP: u64 = 1;
pub const PHASE_RUNNING: u64 = 2;
pub const PHASE_COLLECT: u64 = 3;
pub const PHASE_TEARDOWN: u64 = 4;

/// Position words: `pc | hook << 32 | flags`.
pub mod pos {
    pub const PC_MASK: u64 = 0xffff_ffff;
    pub const HOOK_SHIFT: u32 = 32;
    pub const HOOK_MASK: u64 = 0xff << HOOK_SHIFT;
    /// The thread started this iteration.
    pub const STARTED: u64 = 1 << 48;
    /// The thread ran to its end.
    pub const FINISHED: u64 = 1 << 49;
}
