//! End-to-end tests of what happens to results after a run: shards merged
//! back (`--shard`, `vmm results merge`), a patch compared with its
//! baseline (`vmm compare`, `--baseline`), herdtools7 logs (`--log-dir`).

use std::path::PathBuf;

use libtest_mimic::Failed;

use super::litmus::repo;
use super::{ensure, text, vmm};

fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shootdown-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn read(p: &std::path::Path) -> Result<litmus::ResultsFile, Failed> {
    litmus::ResultsFile::parse(&std::fs::read_to_string(p)?).map_err(|e| format!("{}: {e}", p.display()).into())
}

/// Four shards of S1, S5 and S7 (every [expect] policy, 12 runs each), merged,
/// give exactly the unsharded run's histograms, timeouts and verdicts with
/// the same seed; a merge without one shard is incomplete and says so.
pub fn four_merged_shards_equal_the_unsharded_run() -> Result<(), Failed> {
    let dir = scratch_dir("shards");
    let files: Vec<String> = ["s1-concurrent-zap.toml", "s5-cow-two-pages-device.toml", "s7-ksm-device-store.toml"]
        .iter()
        .map(|f| repo().join("tests/litmus").join(f).to_string_lossy().into_owned())
        .collect();
    let json = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let run = |extra: &[&str], out: &str| {
        let mut a = vec!["litmus", "--runs", "12", "--seed", "5", "--json"];
        let o = json(out);
        a.push(&o);
        a.extend_from_slice(extra);
        a.extend(files.iter().map(|s| s.as_str()));
        vmm(&a)
    };
    let whole = run(&[], "whole.json");
    ensure(whole.status.code() == Some(0), || format!("unsharded run: {:?}\n{}", whole.status.code(), text(&whole).0))?;
    for i in 1..=4 {
        let shard = format!("{i}/4");
        let o = run(&["--shard", &shard], &format!("shard{i}.json"));
        let (out, err) = text(&o);
        ensure(o.status.code() == Some(0), || format!("shard {shard}: {:?}\n{out}\n{err}", o.status.code()))?;
        // 9 policies (S1's 6, S5's 2, S7's 1) × 12 runs = 108 iterations: 27
        // per shard, so each cut splits a run.
        ensure(out.starts_with(&format!("Shard {shard}: 27 of 108 iterations")), || out.clone())?;
    }
    let shards: Vec<String> = (1..=4).map(|i| json(&format!("shard{i}.json"))).collect();
    let merged = json("merged.json");
    let mut args = vec!["results", "merge", "--json", &merged];
    args.extend(shards.iter().map(|s| s.as_str()));
    let o = vmm(&args);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(0), || format!("merge: {:?}\n{out}\n{err}", o.status.code()))?;
    ensure(out.contains("Merged 4 file(s) (shards 1/4, 2/4, 3/4, 4/4): 9 runs, complete"), || out.clone())?;
    let (m, w) = (read(std::path::Path::new(&merged))?, read(std::path::Path::new(&json("whole.json")))?);
    m.same_results(&w).map_err(|e| format!("merged shards differ from the unsharded run: {e}"))?;
    // The merge prints the blocks the unsharded run printed (times and the
    // run's `Kernel` lines aside).
    let blocks = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("Time ") && !l.starts_with("Summary ") && !l.starts_with("Kernel "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (wout, _) = text(&whole);
    let table = |s: &str| s.split("\nVerdicts\n").nth(1).unwrap_or("").lines().take(8).collect::<Vec<_>>().join("\n");
    ensure(table(&out) == table(&wout), || format!("verdict tables differ:\n{}\nvs\n{}", table(&out), table(&wout)))?;
    ensure(blocks(&out).contains(&blocks(wout.split("Summary ").next().unwrap_or(""))), || {
        format!("S1's blocks differ:\n{out}\nvs\n{wout}")
    })?;
    // Without shard 3: incomplete, exit 1, the gap named, never → inconclusive.
    let mut args = vec!["results", "merge"];
    args.extend(shards.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, s)| s.as_str()));
    let o = vmm(&args);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(1), || format!("merge without 3/4: {:?}\n{out}\n{err}", o.status.code()))?;
    ensure(out.contains("INCOMPLETE") && out.contains("Gap shard(s) 3/4 not given"), || out.clone())?;
    ensure(out.contains("inconclusive"), || out.clone())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `--baseline`: S1 with the nested check off against the fixed kernel is
/// a new violation (exit 1); `vmm compare` of the two runs says the same,
/// and the other way round says `fixed` (exit 0).
pub fn baseline_and_compare() -> Result<(), Failed> {
    let dir = scratch_dir("compare");
    let s1 = repo().join("tests/litmus/s1-concurrent-zap.toml").to_string_lossy().into_owned();
    let o = vmm(&[
        "litmus",
        "--runs",
        "3",
        "--seed",
        "2",
        "--policy",
        "flush=pending,madv-nested-check=off",
        "--baseline",
        "flush=pending",
        &s1,
    ]);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(1), || format!("--baseline must fail: {:?}\n{out}\n{err}", o.status.code()))?;
    ensure(out.contains("Compared with the baseline flush=pending"), || out.clone())?;
    let after = out.split("Compared with the baseline").nth(1).unwrap_or("");
    let row = after.lines().find(|l| l.starts_with("s1-concurrent-zap  flush=pending,madv")).unwrap_or("");
    ensure(row.contains("never (3/3)") && row.contains("always (3 of 3)") && row.ends_with("NEW VIOLATION"), || {
        format!("row `{row}`\n{out}")
    })?;
    let (a, b) = (dir.join("fixed.json"), dir.join("buggy.json"));
    for (p, policy) in [(&a, "flush=pending"), (&b, "flush=pending,madv-nested-check=off")] {
        let o = vmm(&["litmus", "--runs", "3", "--seed", "2", "--policy", policy, "--json", p.to_str().unwrap(), &s1]);
        ensure(o.status.code() == Some(0), || text(&o).0)?;
    }
    let o = vmm(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    let (out, _) = text(&o);
    ensure(o.status.code() == Some(1) && out.contains("NEW VIOLATION") && out.contains("1 new violation(s)"), || {
        format!("{:?}\n{out}", o.status.code())
    })?;
    let o = vmm(&["compare", b.to_str().unwrap(), a.to_str().unwrap()]);
    let (out, _) = text(&o);
    ensure(o.status.code() == Some(0) && out.contains("  fixed\n"), || format!("{:?}\n{out}", o.status.code()))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `--log-dir`: one log per policy, each read by the transcribed herd
/// lexer with the states and counts the run printed.
pub fn log_dir_one_log_per_policy() -> Result<(), Failed> {
    let dir = scratch_dir("logs");
    let s1 = repo().join("tests/litmus/s1-concurrent-zap.toml").to_string_lossy().into_owned();
    let o = vmm(&["litmus", "--runs", "4", "--seed", "3", "--log-dir", dir.to_str().unwrap(), &s1]);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(0), || format!("{:?}\n{out}\n{err}", o.status.code()))?;
    let mut names: Vec<String> =
        std::fs::read_dir(&dir)?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let want = [
        "flush=generation.log",
        "flush=per-ptl.log",
        "kernel=mainline.log",
        "kernel=v4.19,madv-nested-check=off.log",
        "kernel=v4.9.log",
        "kernel=v6.6,madv-nested-check=off.log",
    ];
    ensure(names == want, || format!("{names:?}"))?;
    for n in &names {
        let log = std::fs::read_to_string(dir.join(n))?;
        let t = litmus::herdlog::check_log(&log).map_err(|p| p.join("\n"))?;
        ensure(t.len() == 1 && t[0].name == "s1-concurrent-zap" && t[0].total() == 4, || format!("{n}: {t:?}"))?;
        // The same lines as in the run's output.
        let block = log.trim_end();
        ensure(out.contains(block), || format!("{n} is not what the run printed:\n{block}"))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `--tap`: kselftest's TAP for litmus runs and self-tests; every other
/// line is a `#` diagnostic, so a TAP consumer reads only results.
pub fn tap_for_kernel_ci() -> Result<(), Failed> {
    let s1 = repo().join("tests/litmus/s1-concurrent-zap.toml").to_string_lossy().into_owned();
    let o = vmm(&["litmus", "--tap", "--runs", "2", "--seed", "1", &s1]);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(0), || format!("{:?}\n{out}\n{err}", o.status.code()))?;
    let results: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    ensure(
        results
            == [
                "TAP version 13",
                "1..6",
                "ok 1 s1-concurrent-zap [kernel=v4.9]",
                "ok 2 s1-concurrent-zap [kernel=mainline]",
                "ok 3 s1-concurrent-zap [kernel=v4.19,madv-nested-check=off]",
                "ok 4 s1-concurrent-zap [kernel=v6.6,madv-nested-check=off]",
                "ok 5 s1-concurrent-zap [flush=per-ptl]",
                "ok 6 s1-concurrent-zap [flush=generation]",
            ],
        || format!("{results:?}\n{out}"),
    )?;
    ensure(
        out.contains("# Histogram (1 states)")
            && out.ends_with("# totals: pass:6 fail:0 xfail:0 xpass:0 skip:0 error:0\n"),
        || out.clone(),
    )?;
    let o = vmm(&["selftest", "--tap", "boot.", "hypercall."]);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(0), || format!("{:?}\n{out}\n{err}", o.status.code()))?;
    let lines: Vec<&str> = out.lines().collect();
    ensure(lines.first() == Some(&"TAP version 13") && lines.contains(&"ok 1 boot.all-vcpus"), || out.clone())?;
    ensure(
        lines
            .iter()
            .all(|l| l.starts_with("ok ") || l.starts_with("1..") || l.starts_with('#') || l.starts_with("TAP")),
        || out.clone(),
    )
}

/// `--progress` without a terminal: plain progress lines on stderr, the
/// results on stdout untouched.
pub fn progress_on_stderr() -> Result<(), Failed> {
    let s1 = repo().join("tests/litmus/s1-concurrent-zap.toml").to_string_lossy().into_owned();
    let o = vmm(&["litmus", "--progress", "--runs", "2", "--seed", "1", &s1]);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(0), || format!("{:?}\n{out}\n{err}", o.status.code()))?;
    // S1's 6 [expect] rows × 2 runs.
    ensure(err.contains("progress: 12 iterations in "), || format!("stderr:\n{err}"))?;
    ensure(!out.contains("progress"), || out.clone())?;
    // Without --progress and without a terminal: nothing.
    let o = vmm(&["litmus", "--runs", "1", "--seed", "1", &s1]);
    ensure(!text(&o).1.contains("progress"), || text(&o).1)
}
