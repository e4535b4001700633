//! The front end (decode → check → compile → `Blob::parse` → disassemble →
//! format) on seeded inputs: the body of the `frontend` fuzz target
//! (`litmus::fuzzing::run_frontend`, `litmus/fuzz`), run here without
//! cargo-fuzz. Over 10,000 inputs per run, from a fixed seed so a failure
//! reproduces: mutations of every catalogue file and of the malformed
//! examples, and generated tests (deep nesting, long chains, counts at and
//! just past every limit). No input may panic; every test the checker
//! accepts must compile to a blob the guest accepts.

use litmus::catalogue_sources;
use litmus::fuzzing::{dictionary, generate, mutate, run_frontend, Outcome, Rng};

fn seeds() -> Vec<Vec<u8>> {
    let mut s: Vec<Vec<u8>> = catalogue_sources().into_iter().map(|(_, t)| t.into_bytes()).collect();
    for bad in [
        include_str!("../../tests/e2e/data/bad/bad-cond.toml"),
        include_str!("../../tests/e2e/data/bad/badtoml.toml"),
        include_str!("../../tests/e2e/data/bad/contradictory-expect.toml"),
        include_str!("../../tests/e2e/data/bad/undeclared-reg.toml"),
        include_str!("../../tests/e2e/data/bad/unknown-hook.toml"),
        include_str!("../../tests/e2e/data/bad/unknown-op.toml"),
        include_str!("../../tests/e2e/data/bad/unknown-policy.toml"),
    ] {
        s.push(bad.as_bytes().to_vec());
    }
    s
}

/// Runs `cases` mutations from `seed`; returns (accepted, refused).
fn mutations(seed: u64, cases: usize) -> (usize, usize) {
    let seeds = seeds();
    let refs: Vec<&[u8]> = seeds.iter().map(|s| s.as_slice()).collect();
    let dict = dictionary();
    let mut rng = Rng::new(seed);
    let (mut ok, mut refused) = (0, 0);
    for i in 0..cases {
        let base = &seeds[i % seeds.len()];
        let input = mutate(&mut rng, base, &refs, &dict);
        match run_frontend(&input) {
            Outcome::Accepted => ok += 1,
            Outcome::Refused => refused += 1,
        }
    }
    (ok, refused)
}

fn generated(seed: u64, cases: usize) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..cases {
        let text = generate(&mut rng);
        match run_frontend(text.as_bytes()) {
            Outcome::Accepted => ok += 1,
            Outcome::Refused => refused += 1,
        }
    }
    (ok, refused)
}

// Split in four so the test harness runs them on every core.

#[test]
fn mutated_catalogue_files_a() {
    let (ok, refused) = mutations(0x5eed_0001, 3000);
    eprintln!("mutations a: {ok} accepted, {refused} refused");
    assert!(ok > 100 && refused > 1000, "the mutator must reach both outcomes: {ok}/{refused}");
}

#[test]
fn mutated_catalogue_files_b() {
    let (ok, refused) = mutations(0x5eed_0002, 3000);
    eprintln!("mutations b: {ok} accepted, {refused} refused");
    assert!(ok > 100 && refused > 1000, "the mutator must reach both outcomes: {ok}/{refused}");
}

#[test]
fn generated_tests_a() {
    let (ok, refused) = generated(0x6e4e_0001, 2000);
    eprintln!("generated a: {ok} accepted, {refused} refused");
    assert!(ok > 200 && refused > 200, "the generator must reach both outcomes: {ok}/{refused}");
}

#[test]
fn generated_tests_b() {
    let (ok, refused) = generated(0x6e4e_0002, 2000);
    eprintln!("generated b: {ok} accepted, {refused} refused");
    assert!(ok > 200 && refused > 200, "the generator must reach both outcomes: {ok}/{refused}");
}

/// The dictionary the mutator shares with libFuzzer parses as intended.
#[test]
fn dictionary_decodes() {
    let d = dictionary();
    assert!(d.len() > 80);
    assert!(d.contains(&b"\n".to_vec()));
    assert!(d.contains(&b"/\\".to_vec()));
    assert!(d.contains(&vec![0xff]));
    assert!(d.contains(&b"code = \"\"\"".to_vec()));
}
