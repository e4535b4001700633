//! The guest decodes blobs in place and must never panic on a bad one: random
//! bytes, and valid blobs with random corruption, go through `Blob::parse`
//! and, when accepted, through every accessor the interpreter uses.

use abi::litmus::{Blob, Hook, HEADER_LEN};
use litmus::{catalogue_sources, check_all, compile, disassemble, CompileOptions, Policy};
use proptest::prelude::*;

fn exercise(b: &Blob<'_>) {
    let h = *b.header();
    let _ = disassemble(b);
    for t in 0..h.n_threads {
        let th = b.thread(t).unwrap();
        let mut pc = 0;
        while pc < th.n_instrs {
            let n = b.item_len(&th, pc).expect("parsed blobs have well-formed items");
            for hook in Hook::ALL {
                let _ = b.hook_group(&th, pc, *hook, 1);
                let _ = b.hook_group(&th, pc, *hook, 2);
            }
            pc += n;
        }
        assert_eq!(pc, th.n_instrs);
    }
}

/// Compiled once: proptest calls the corruption case thousands of times.
fn catalogue_blobs() -> &'static [Vec<u8>] {
    static BLOBS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    BLOBS.get_or_init(|| {
        let (tests, _) = check_all(&catalogue_sources()).unwrap();
        tests.iter().map(|t| compile(t, &Policy::default(), &CompileOptions::default()).unwrap().blob).collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(b) = Blob::parse(&bytes) {
            exercise(&b);
        }
    }

    #[test]
    fn random_bytes_with_a_valid_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..800), hdr in proptest::collection::vec(any::<u8>(), HEADER_LEN - 8..=HEADER_LEN - 8)) {
        let mut bytes = b"SDLITMUS".to_vec();
        bytes.extend_from_slice(&hdr);
        bytes[8] = 1; // version
        bytes[9] = 0;
        bytes[10] = HEADER_LEN as u8;
        bytes[11] = 0;
        bytes.extend_from_slice(&tail);
        if let Ok(b) = Blob::parse(&bytes) {
            exercise(&b);
        }
    }

    #[test]
    fn corrupted_valid_blobs_never_panic(which in 0usize..13, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let blobs = catalogue_blobs();
        let mut blob = blobs[which % blobs.len()].clone();
        for (pos, val) in flips {
            let n = blob.len();
            blob[pos % n] = val;
        }
        if cut % 4 == 0 {
            let n = blob.len();
            blob.truncate(cut % n);
        }
        if let Ok(b) = Blob::parse(&blob) {
            exercise(&b);
        }
    }
}

#[test]
fn every_catalogue_blob_decodes() {
    for blob in catalogue_blobs() {
        let b = Blob::parse(blob).expect("compiler output decodes");
        exercise(&b);
    }
}
