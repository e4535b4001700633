//! The `vmm` commands. Each builds the services its mode needs (the
//! standard set plus its own), boots the VM through `vstate::vm::run`, and
//! reads its results from its own services.

pub mod bench;
pub mod explore;
pub mod interrupt;
pub mod litmus;
pub mod litmus_bench;
pub mod output;
pub mod probe;
pub mod progress;
pub mod results;
pub mod selftest;
pub mod trace;
