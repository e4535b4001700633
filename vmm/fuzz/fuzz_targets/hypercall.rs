//! Arbitrary mailbox contents on arbitrary vCPUs — op numbers known and
//! unknown, argument words biased towards the region boundaries, data
//! lengths up to and past the mailbox — through the real exit routing and
//! every service (`vmm::fuzzing::run_hypercalls`). A panic is a bug: the VMM
//! must answer or report a guest fault.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmm::fuzzing::run_hypercalls(data);
});
