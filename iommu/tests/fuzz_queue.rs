//! The `queue` fuzz target's body (`iommu::fuzzing::run_queue`), run as a
//! seeded property test so `cargo test` exercises it without cargo-fuzz.

mod common;

use proptest::prelude::*;

proptest! {
    #![proptest_config(common::proptest_config(256))]

    #[test]
    fn queue_harness_holds_its_invariants(data in prop::collection::vec(any::<u8>(), 0..1200)) {
        iommu::fuzzing::run_queue(&data);
    }

    /// Inputs made mostly of well-formed steps (descriptors, doorbells, DMA,
    /// PTE changes) reach deeper than raw bytes.
    #[test]
    fn queue_harness_with_structured_steps(
        knobs in any::<u8>(),
        steps in prop::collection::vec((0u8..12, prop::collection::vec(any::<u8>(), 17)), 0..120),
    ) {
        let mut data = vec![knobs];
        for (op, args) in steps {
            // Bias towards valid descriptors (1) and doorbells at the tail (2).
            let op = match op { 0 | 3 => op, 4..=6 => 1, 7 | 8 => 2, x => x };
            data.push(op);
            data.extend(args);
        }
        iommu::fuzzing::run_queue(&data);
    }
}

#[test]
fn fixed_inputs() {
    for data in [&[][..], &[0][..], &[0xff; 64][..], &[0x7c, 1, 3, 0x81, 2, 5, 1, 6, 0, 2][..]] {
        iommu::fuzzing::run_queue(data);
    }
}

/// The harness is only useful if inputs reach the interesting states:
/// processed descriptors and waits, cache hits, stale hits, PWC hits, stale
/// walks, faults and queue errors all occur over a few hundred inputs.
#[test]
fn harness_reaches_deep_states() {
    let mut tot = iommu::Stats::default();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        let mut raw = Vec::with_capacity(800);
        for _ in 0..800 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            raw.push((x >> 24) as u8);
        }
        let mut data = vec![raw[0]];
        for c in raw[1..].chunks(18) {
            data.push(match c[0] % 12 {
                4..=6 => 1,
                7 | 8 => 2,
                o => o,
            });
            data.extend(&c[1..]);
        }
        let s = iommu::fuzzing::run_queue_stats(&data);
        tot.iotlb_hits += s.iotlb_hits;
        tot.devtlb_hits += s.devtlb_hits;
        tot.stale_hits += s.stale_hits;
        tot.pwc_hits += s.pwc_hits;
        tot.walks += s.walks;
        tot.faults += s.faults;
        tot.stale_walks += s.stale_walks;
        tot.descriptors += s.descriptors;
        tot.waits += s.waits;
        tot.queue_errors += s.queue_errors;
        tot.page_requests += s.page_requests;
    }
    let t = tot;
    for (name, v) in [
        ("iotlb_hits", t.iotlb_hits),
        ("devtlb_hits", t.devtlb_hits),
        ("stale_hits", t.stale_hits),
        ("pwc_hits", t.pwc_hits),
        ("walks", t.walks),
        ("faults", t.faults),
        ("stale_walks", t.stale_walks),
        ("descriptors", t.descriptors),
        ("waits", t.waits),
        ("queue_errors", t.queue_errors),
        ("page_requests", t.page_requests),
    ] {
        assert!(v > 10, "{name} = {v}: the harness does not reach it");
    }
}
