use super::*;

/// A block as litmus7 prints it (herdtools7 `doc/kvm-log.txt`, cut).
const LITMUS7: &str = "Test MP-TTD+DMB.ST+DMB.LD Allowed
Histogram (4 states)
70    *>1:X7=1; fault(P1:L0,x,MMU:Translation);
1975326:>1:X7=0; ~fault(P1:L0,x,MMU:Translation);
21197 :>1:X7=0; fault(P1:L0,x,MMU:Translation);
3407  :>1:X7=1; ~fault(P1:L0,x,MMU:Translation);
Ok

Witnesses
Positive: 70, Negative: 1999930
Condition exists (1:X7=1 /\\ fault(P1:L0,x,MMU:Translation)) is validated
Hash=a7b7ee7bc9e2e2b17ed0aa0b1dd3f0d5
Observation MP-TTD+DMB.ST+DMB.LD Sometimes 70 1999930
Time MP-TTD+DMB.ST+DMB.LD 1.31

";

#[test]
fn reads_litmus7_output() {
    let t = check_log(LITMUS7).unwrap();
    assert_eq!(t.len(), 1);
    let t = &t[0];
    assert_eq!((t.name.as_str(), t.kind.as_str()), ("MP-TTD+DMB.ST+DMB.LD", "Allowed"));
    assert_eq!(t.states.len(), 4);
    assert_eq!(t.states[1].count, 1975326);
    assert_eq!(t.states[1].bindings, [("1:X7".to_string(), "0".to_string())]);
    assert_eq!(t.states[1].faults, ["~fault(P1:L0,x,MMU:Translation)"]);
    assert_eq!(t.validation.as_deref(), Some("Ok"));
    assert_eq!(t.witnesses, Some((70, 1999930)));
    assert_eq!(t.condition.as_deref(), Some("exists (1:X7=1 /\\ fault(P1:L0,x,MMU:Translation))"));
    assert!(t.condition_parses);
    assert_eq!(t.hash.as_deref(), Some("a7b7ee7bc9e2e2b17ed0aa0b1dd3f0d5"));
    assert_eq!(t.time, Some(1.31));
}

/// What issue 16 found with the tools themselves, reproduced.
#[test]
fn old_output_broke_the_tools() {
    // `P2:` in a state: Lex error pline, the whole file is ignored.
    let old = LITMUS7.replace("1:X7=0; ~fault", "P1:X7=0; ~fault");
    let e = read_log(&old).unwrap_err();
    assert_eq!((e.line, e.rule), (4, "pline"));
    // `stale-walk` is no value for the log lexer.
    assert_eq!(read_log(&LITMUS7.replace("1:X7=1; fault", "1:X7=stale-walk; fault")).unwrap_err().line, 3);
    // `=fault` in a condition: the tools drop the condition.
    let c = LITMUS7.replace("(1:X7=1 /\\ fault(", "(1:X7=fault /\\ fault(");
    let t = read_log(&c).unwrap();
    assert!(!t[0].condition_parses);
    assert!(check_log(&c).unwrap_err()[0].contains("does not parse"));
    // An `Expect …:` line before `Time` hides it (7.57's testname has no `:`) …
    let e = LITMUS7.replace("Time MP", "Expect sometimes: ok\nTime MP");
    assert_eq!(read_log(&e).unwrap()[0].time, None);
    // … and so does `Timeouts N`.
    let e = LITMUS7.replace("Time MP", "Timeouts 3\nTime MP");
    assert_eq!(read_log(&e).unwrap()[0].time, None);
    // After `Time` anything goes.
    let e = LITMUS7.replace("1.31\n", "1.31\nExpect sometimes: ok\nTimeouts 3\n");
    assert_eq!(read_log(&e).unwrap()[0].time, Some(1.31));
}

#[test]
fn what_our_spellings_give() {
    for v in ["FAULT", "STALE_WALK", "TIMEOUT", "0", "18446744073709551615"] {
        let log = LITMUS7.replace("1:X7=1; fault", &format!("1:X7={v}; [x]={v}; fault"));
        let t = check_log(&log).unwrap();
        assert_eq!(t[0].states[0].bindings[1], ("[x]".into(), v.into()));
    }
    for c in ["~exists (2:r1=FAULT)", "exists (2:r1=STALE_WALK \\/ ~([x]=1))", "~exists (0:r0=0 /\\ [x]=FAULT)"] {
        parse_condition(c).unwrap();
    }
    assert!(parse_condition("~exists (2:r1=fault)").is_err());
    assert!(parse_condition("~exists (P2:r1=stale-walk)").is_ok(), "stateLexer's names take `-`");
    assert!(parse_condition("~exists (2:r1=18446744073709551615)").is_err());
    assert!(parse_condition("exists (0:r0=1 /\\ ~0:r1=2 \\/ x=3 => y=4)").is_ok());
    assert!(parse_condition("exists (0:r0=1 /\\)").is_err());
}

#[test]
fn fatal_drops_a_test_and_a_bad_kind_the_file() {
    let f = LITMUS7.replace("Histogram (4 states)", "Fatal: boom\nHistogram (4 states)");
    assert!(read_log(&f).unwrap().is_empty());
    assert!(read_log(&LITMUS7.replace("Allowed", "Permitted")).is_err());
}

#[test]
fn tokens_follow_longest_match_then_rule_order() {
    assert_eq!(tokens("P2").unwrap()[0], Token::Proc(2));
    assert_eq!(tokens("P2x").unwrap()[0], Token::Name("P2x".into()));
    assert_eq!(tokens("exists").unwrap()[0], Token::Kw("EXISTS"));
    assert_eq!(tokens("existsx").unwrap()[0], Token::Name("existsx".into()));
    assert_eq!(tokens("0x1f").unwrap()[0], Token::Num("0x1f".into()));
    assert_eq!(tokens("==").unwrap()[0], Token::Kw("EQUALEQUAL"));
    assert_eq!(tokens("stale-walk").unwrap()[0], Token::Name("stale-walk".into()));
    assert_eq!(tokens("fault").unwrap()[0], Token::Kw("FAULT"));
    assert_eq!(tokens("FAULT").unwrap()[0], Token::Name("FAULT".into()));
}

/// Every block the catalogue can print — every test under each of its
/// `[expect]` policies, with every kind of value in its histogram,
/// timeouts, and each expectation result — read back through the
/// transcribed lexer, one log per policy as `--log-dir` writes them:
/// the tools must see the same tests, states and counts.
#[test]
fn every_catalogue_block_survives_herds_lexer() {
    use crate::results::ThreadPosition;
    use crate::{check_all, herd_block, logdir::log_file_name, state_text, RunResult};
    use abi::litmus::{Hook, VALUE_FAULT, VALUE_STALE_WALK, VALUE_TIMEOUT};
    use std::collections::BTreeMap;

    let (tests, _) = check_all(&crate::catalogue_sources()).unwrap();
    let mut logs: BTreeMap<String, String> = BTreeMap::new();
    type Blocks = Vec<(String, Vec<(u64, String)>)>;
    let mut want: BTreeMap<String, Blocks> = BTreeMap::new();
    let specials = [0, 1, 2, VALUE_FAULT, VALUE_STALE_WALK];
    let mut n_blocks = 0;
    for t in &tests {
        for (pi, policy) in t.expect_policies().into_iter().enumerate() {
            let n = t.observed.len();
            let mut r = RunResult::new(t, policy, 42, 1000);
            // Every value kind in every position, and the all-zero state.
            for (k, v) in specials.iter().enumerate() {
                let state: Vec<u64> = (0..n).map(|i| if i == k % n { *v } else { (i as u64) % 3 }).collect();
                r.record_n(&state, 10 + k as u64).unwrap();
            }
            if pi % 2 == 0 {
                let pos = vec![ThreadPosition {
                    thread: t.threads[0].name.clone(),
                    pc: Some(3),
                    source: Some((12, 1)),
                    hook: Some(Hook::AfterPtlRelease),
                }];
                r.record_timeout(7, &vec![VALUE_TIMEOUT; n], pos).unwrap();
            }
            r.time_secs = 1.5 + pi as f64;
            let block = herd_block(t, &r);
            let file = log_file_name(&r.policy);
            let log = logs.entry(file.clone()).or_default();
            log.push_str(&block);
            log.push('\n');
            let states = r.histogram.iter().map(|(k, c)| (*c, state_text(t, k))).collect();
            want.entry(file).or_default().push((t.name.clone(), states));
            n_blocks += 1;
        }
    }
    assert!(n_blocks >= 28, "{n_blocks} blocks");
    for (file, text) in &logs {
        let read = check_log(text).unwrap_or_else(|p| panic!("{file}:\n{}\n{text}", p.join("\n")));
        let want = &want[file];
        assert_eq!(read.len(), want.len(), "{file}");
        for (got, (name, states)) in read.iter().zip(want) {
            assert_eq!(&got.name, name);
            let got_states: Vec<(u64, String)> = got
                .states
                .iter()
                .map(|s| (s.count, s.bindings.iter().map(|(l, v)| format!("{l}={v};")).collect::<Vec<_>>().join(" ")))
                .collect();
            assert_eq!(&got_states, states, "{file}: {name}");
            assert!(got.time.is_some() && got.hash.is_some() && got.condition_parses);
        }
    }
}

/// `vmm explore`'s blocks (an `Explore` line after `Policy`, `Witness`
/// and `Pct` lines after `Expect`) read as litmus7's do: the tools keep
/// their states, condition, hash and time.
#[test]
fn explore_blocks_survive_herds_lexer() {
    use crate::explore_results::ExploreRecord;
    use crate::{check_all, herd_block, state_text, RunResult};
    use explore::{PctBound, Reduction, Shard, Strategy, Witness};

    let (tests, _) = check_all(&crate::explore_sources()).unwrap();
    let mut log = String::new();
    let mut want = Vec::new();
    for (i, t) in tests.iter().enumerate() {
        let policy = t.expect_policies()[0];
        let n = t.observed.len();
        let state: Vec<u64> = (0..n as u64).collect();
        let strategy = if i % 2 == 0 {
            Strategy::Bounded { preemptions: Some(2), reduction: Reduction::SleepSets }
        } else {
            Strategy::Pct { depth: 3, runs: 100 }
        };
        let mut search = explore::ExploreResult::<Vec<u64>> {
            strategy,
            seed: 1,
            shard: Shard::ALL,
            split_depth: 6,
            schedules: 17,
            complete: i % 2 == 0,
            redundant: 3,
            discovery: 0,
            longest: 40,
            by_preemptions: Default::default(),
            histogram: [(state.clone(), 17)].into_iter().collect(),
            witness: Some(Witness { preemptions: 1, order: vec![0, 1], steps: vec![], outcome: state.clone() }),
            pct: None,
        };
        if i % 2 == 1 {
            search.pct = Some(PctBound::new(3, t.threads.len() as u32, 50, 100, false));
        }
        let mut r = RunResult::new(t, policy, 1, crate::explore_results::requested(&search));
        r.record_n(&state, 17).unwrap();
        r.time_secs = 2.5;
        r.explore = Some(ExploreRecord {
            search,
            witness_file: Some(format!("witnesses/{}--x.toml", t.name)),
            timeline_file: None,
            points: 600,
            parks: 40,
            boots: 1,
        });
        let block = herd_block(t, &r);
        assert!(block.contains("\nExplore "), "{block}");
        log.push_str(&block);
        log.push('\n');
        want.push((t.name.clone(), vec![(17, state_text(t, &state))]));
    }
    let read = check_log(&log).unwrap_or_else(|p| panic!("{}\n{log}", p.join("\n")));
    assert_eq!(read.len(), want.len());
    for (got, (name, states)) in read.iter().zip(&want) {
        assert_eq!(&got.name, name);
        let got_states: Vec<(u64, String)> = got
            .states
            .iter()
            .map(|s| (s.count, s.bindings.iter().map(|(l, v)| format!("{l}={v};")).collect::<Vec<_>>().join(" ")))
            .collect();
        assert_eq!(&got_states, states, "{name}");
        assert!(got.time.is_some() && got.hash.is_some() && got.condition_parses, "{name}");
    }
}
