//! Host-side litmus front end of shootdown (no KVM).
//!
//! Tests are data: a TOML file (see `docs/litmus-guide.md` and the design's
//! LITMUS.md) with locations, vCPU and device threads written in a small
//! line-oriented language, a final condition and expected verdicts per
//! policy. This crate parses and checks such files (every diagnostic names
//! `file:line:col`), resolves policies, compiles a (test, policy, seed) to the
//! bytecode of [`abi::litmus`] that the guest interprets, aggregates what the
//! guest reports, and prints herdtools7-style results, JSON and a verdict table.

pub mod ast;
pub mod catalogue;
pub mod code;
pub mod compile;
pub mod cond;
pub mod diag;
pub mod file;
pub mod format;
pub mod policy;
pub mod results;
