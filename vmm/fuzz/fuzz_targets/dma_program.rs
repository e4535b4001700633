//! Arbitrary device programs (header, op kinds and flags, operands, kernel
//! words in and out of the page-table and shadow regions) decoded and run
//! by the DMA engine (`vmm::fuzzing::run_dma_program`): never a panic, and
//! never running past the engine's stop.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmm::fuzzing::run_dma_program(data);
});
