//! Arbitrary bytes as a litmus file through decode → check → compile →
//! `Blob::parse` → disassemble → result formatting;
//! `litmus::fuzzing::run_frontend` panics on a broken invariant (a panic
//! anywhere, a diagnostic outside the file, a test the checker accepts but
//! the blob format refuses). The same body runs seeded in
//! `cargo test -p litmus` (tests/frontend_fuzz.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    litmus::fuzzing::run_frontend(data);
});
