//! End-to-end tests of `vmm explore` on the real guest: a hook-free race is
//! found and its witness replays under `vmm litmus`, the fixed policy's
//! search is complete, a seed gives one search, shards merge into the
//! single search, a limit makes `never` inconclusive, PCT reports its bound.
//! The whole hook-free catalogue (`vmm explore --check tests/litmus/explore`)
//! is the opt-in `explore::catalogue_check` (several minutes).

use std::path::PathBuf;

use libtest_mimic::Failed;

use super::litmus::repo;
use super::{ensure, text, vmm};

fn s1() -> String {
    repo().join("tests/litmus/explore/s1-concurrent-zap.toml").display().to_string()
}

fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shootdown-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// S1 on v4.9 (no nested-zap check, 99baac21e458 came in v4.14) and on v4.14.
const BUGGY: &str = "kernel=v4.9";
const FIXED: &str = "kernel=v4.14";

/// The lines of one block's field (`Explore …`, `Expect …`).
fn lines<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// Hook-free S1: the fixed policy's search is complete with no violation;
/// the buggy one finds the window with one preemption, and the witness
/// file forces it: `vmm litmus --check` shows the forbidden state on every
/// iteration.
pub fn s1_found_and_witness_replays() -> Result<(), Failed> {
    let dir = scratch_dir("s1");
    let wdir = dir.join("w");
    let json = dir.join("r.json");
    let args = [
        "explore",
        "--check",
        "--seed",
        "3",
        "--policy",
        FIXED,
        "--policy",
        BUGGY,
        "--witness-dir",
        wdir.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        &s1(),
    ];
    let o = vmm(&args);
    let (out, err) = text(&o);
    let ctx = || format!("vmm {args:?}\nstatus {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(0), || format!("--check failed\n{}", ctx()))?;
    let explore = lines(&out, "Explore preemptions=2 schedules=");
    ensure(explore.len() == 2 && explore.iter().all(|l| l.ends_with(" complete")), ctx)?;
    ensure(lines(&out, "Expect never: ok").len() == 1 && lines(&out, "Expect sometimes: ok").len() == 1, ctx)?;
    ensure(out.contains("Witness ") && out.contains(" preemptions=1 "), ctx)?;
    ensure(lines(&out, "Replay ").iter().any(|l| l.ends_with(": always 10/10")), ctx)?;
    // The witness, on its own, through `vmm litmus --check`.
    let w = std::fs::read_dir(&wdir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "toml"))
        .ok_or("no witness file")?;
    let o2 = vmm(&["litmus", "--check", "--runs", "20", "--seed", "9", w.to_str().unwrap()]);
    let (out2, err2) = text(&o2);
    ensure(o2.status.code() == Some(0), || format!("witness replay failed\n{out2}\n{err2}"))?;
    ensure(out2.contains("Observation explore-s1-concurrent-zap-witness Always 20 0"), || out2.clone())?;
    let tl = w.with_extension("timeline.txt");
    let tl = std::fs::read_to_string(&tl).map_err(|e| format!("{}: {e}", tl.display()))?;
    ensure(tl.contains("(preempted)") && tl.contains("zap_pte_range: pte_unmap_unlock"), || tl.clone())?;
    // The JSON is an explore results file that reads back.
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    ensure(j["kind"] == "explore" && j["runs"].as_array().is_some_and(|r| r.len() == 2), || j.to_string())?;
    ensure(j["runs"][0]["explore"]["search"]["complete"] == true, || j.to_string())?;
    Ok(())
}

/// The same seed gives the same search: schedule count, histogram and
/// witness, byte for byte.
pub fn same_seed_same_search() -> Result<(), Failed> {
    let run = |tag: &str| -> Result<(String, String), Failed> {
        let wdir = scratch_dir(tag);
        let o = vmm(&["explore", "--seed", "5", "--policy", BUGGY, "--witness-dir", wdir.to_str().unwrap(), &s1()]);
        let (out, err) = text(&o);
        ensure(o.status.code() == Some(0), || format!("{out}\n{err}"))?;
        // Times and the wait exits of parked vCPUs depend on the host; the
        // schedules and scheduling points of the Cost line do not.
        let keep: Vec<String> = out
            .lines()
            .filter(|l| !l.starts_with("Time ") && !l.starts_with("Witness "))
            .map(|l| match l.strip_prefix("Cost ") {
                Some(c) => c
                    .split(' ')
                    .filter(|f| f.starts_with("schedules=") || f.starts_with("points="))
                    .collect::<Vec<_>>()
                    .join(" "),
                None => l.to_string(),
            })
            .collect();
        let w = std::fs::read_dir(&wdir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "toml"))
            .ok_or("no witness")?;
        Ok((keep.join("\n"), std::fs::read_to_string(w)?))
    };
    let a = run("seed-a")?;
    let b = run("seed-b")?;
    ensure(a.0 == b.0, || format!("blocks differ:\n{}\n---\n{}", a.0, b.0))?;
    ensure(a.1 == b.1, || format!("witnesses differ:\n{}\n---\n{}", a.1, b.1))
}

/// Two shards of the search, merged by `vmm results merge`, give the
/// single search's schedule count, histogram, completeness and witness.
pub fn shards_merge_into_the_single_search() -> Result<(), Failed> {
    let dir = scratch_dir("shards");
    let json = |n: &str| dir.join(format!("{n}.json"));
    let go = |extra: &[&str], out_json: &PathBuf| -> Result<(), Failed> {
        let mut args = vec!["explore", "--seed", "2", "--policy", BUGGY, "--witness-dir"];
        let w = dir.join("w");
        args.push(w.to_str().unwrap());
        args.push("--json");
        args.push(out_json.to_str().unwrap());
        args.extend_from_slice(extra);
        let s = s1();
        args.push(&s);
        let o = vmm(&args);
        let (out, err) = text(&o);
        ensure(o.status.code() == Some(0), || format!("vmm {args:?}\n{out}\n{err}"))
    };
    go(&[], &json("whole"))?;
    go(&["--shard", "1/2"], &json("1"))?;
    go(&["--shard", "2/2"], &json("2"))?;
    let merged = json("merged");
    let o = vmm(&[
        "results",
        "merge",
        json("1").to_str().unwrap(),
        json("2").to_str().unwrap(),
        "--json",
        merged.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(0), || format!("merge failed\n{out}\n{err}"))?;
    let read = |p: &PathBuf| -> Result<serde_json::Value, Failed> {
        Ok(serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p)?)?["runs"][0].clone())
    };
    let (a, b) = (read(&json("whole"))?, read(&merged)?);
    for key in ["schedules", "complete", "histogram", "witness", "by_preemptions", "redundant"] {
        let (x, y) = (&a["explore"]["search"][key], &b["explore"]["search"][key]);
        ensure(x == y, || format!("{key}: whole {x} vs merged {y}"))?;
    }
    ensure(a["histogram"] == b["histogram"], || {
        format!("histograms differ: {} vs {}", a["histogram"], b["histogram"])
    })?;
    ensure(a["expect_result"] == b["expect_result"], || "verdicts differ".to_string())
}

/// `--max-schedules` stops the search: `limit`, and `never` is inconclusive
/// (`--check` fails).
pub fn limit_makes_never_inconclusive() -> Result<(), Failed> {
    let wdir = scratch_dir("limit");
    let o = vmm(&[
        "explore",
        "--check",
        "--max-schedules",
        "5",
        "--policy",
        FIXED,
        "--witness-dir",
        wdir.to_str().unwrap(),
        &s1(),
    ]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\n{out}\n{err}", o.status.code());
    ensure(o.status.code() == Some(1), ctx)?;
    ensure(out.contains("Explore preemptions=2 schedules=5 limit"), ctx)?;
    ensure(out.contains("Expect never: inconclusive (the search stopped after 5 schedules (limit))"), ctx)
}

/// PCT samples schedules and states the probability bound it gives.
pub fn pct_reports_its_bound() -> Result<(), Failed> {
    let wdir = scratch_dir("pct");
    let o = vmm(&[
        "explore",
        "--pct",
        "2",
        "--runs",
        "12",
        "--seed",
        "4",
        "--policy",
        BUGGY,
        "--witness-dir",
        wdir.to_str().unwrap(),
        &s1(),
    ]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\n{out}\n{err}", o.status.code());
    ensure(o.status.code() == Some(0), ctx)?;
    ensure(out.contains("Explore pct=2 runs=12 schedules=13 limit"), ctx)?;
    ensure(lines(&out, "Pct depth=2 threads=3 ").iter().any(|l| l.contains(" runs=12: ")), ctx)
}

/// `vmm litmus` leaves `[explore]` tests to `vmm explore`.
pub fn litmus_leaves_explore_tests() -> Result<(), Failed> {
    let o = vmm(&["litmus", &s1()]);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(2) && err.contains("[explore] test") && err.contains("vmm explore"), || {
        format!("status {:?}\n{out}\n{err}", o.status.code())
    })
}

/// The acceptance run: every hook-free catalogue test, every policy —
/// buggy rows find a violation whose witness replays, fixed rows are
/// complete with no violation.
pub fn catalogue_check() -> Result<(), Failed> {
    let wdir = scratch_dir("catalogue");
    let dir = repo().join("tests/litmus/explore");
    let o = vmm(&["explore", "--check", "--witness-dir", wdir.to_str().unwrap(), dir.to_str().unwrap()]);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(0), || format!("status {:?}\n{out}\n{err}", o.status.code()))?;
    println!(
        "{}",
        out.lines().filter(|l| l.starts_with("Explore ") || l.starts_with("Replay ")).collect::<Vec<_>>().join("\n")
    );
    Ok(())
}

/// The reduction keeps every final state, each state's fewest
/// preemptions and the witness: the same search with and without it
/// reaches the same states and writes the same witness (S1 and S5 at K=1).
pub fn reduction_keeps_states_and_witness() -> Result<(), Failed> {
    for (file, policy) in [
        ("tests/litmus/explore/s1-concurrent-zap.toml", BUGGY),
        ("tests/litmus/explore/s5-cow-two-pages-device.toml", "kernel=v3.19,notifier=end"),
    ] {
        let run = |extra: &[&str], tag: &str| -> Result<(Vec<String>, String), Failed> {
            let wdir = scratch_dir(tag);
            let f = repo().join(file);
            let mut args = vec!["explore", "--preemptions", "1", "--seed", "6", "--policy", policy, "--witness-dir"];
            args.push(wdir.to_str().unwrap());
            args.extend_from_slice(extra);
            args.push(f.to_str().unwrap());
            let o = vmm(&args);
            let (out, err) = text(&o);
            ensure(o.status.code() == Some(0), || format!("vmm {args:?}\n{out}\n{err}"))?;
            let mut states: Vec<String> =
                out.lines().filter(|l| l.contains(">")).map(|l| l.split_once('>').unwrap().1.to_string()).collect();
            states.sort();
            let w = std::fs::read_dir(&wdir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "toml"))
                .ok_or("no witness")?;
            Ok((states, std::fs::read_to_string(w)?))
        };
        let (s1, w1) = run(&[], "red")?;
        let (s2, w2) = run(&["--no-reduction"], "plain")?;
        ensure(s1 == s2, || format!("{file}: states differ: {s1:?} vs {s2:?}"))?;
        ensure(w1 == w2, || format!("{file}: witnesses differ:\n{w1}\n---\n{w2}"))?;
    }
    Ok(())
}
