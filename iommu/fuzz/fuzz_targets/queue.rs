//! Arbitrary bytes as invalidation descriptors, register writes (any
//! offset, value, 4 or 8 bytes), doorbells, page-table changes and DMA
//! accesses; `iommu::fuzzing` checks the device's invariants after each
//! step. The same body runs in `cargo test -p iommu` (tests/fuzz_queue.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    iommu::fuzzing::run_queue(data);
});
