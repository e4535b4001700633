//! End-to-end tests of `vmm litmus`: the catalogue's expectations on the real
//! guest, timeouts, JSON, and malformed files (which never reach KVM).

use std::path::{Path, PathBuf};

use libtest_mimic::Failed;

use super::{ensure, text, vmm};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn catalogue_files() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo().join("tests/litmus"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .collect();
    v.sort();
    v
}

/// One herd block's facts.
struct Block {
    test: String,
    policy: String,
    expect: Option<String>,
    expect_ok: bool,
    matching: u64,
    total: u64,
}

fn blocks(out: &str) -> Vec<Block> {
    let mut v = Vec::new();
    let mut cur: Option<Block> = None;
    for line in out.lines() {
        if let Some(t) = line.strip_prefix("Test ") {
            if let Some(b) = cur.take() {
                v.push(b);
            }
            let test = t.split_whitespace().next().unwrap_or("").to_string();
            cur = Some(Block { test, policy: String::new(), expect: None, expect_ok: true, matching: 0, total: 0 });
        } else if let Some(b) = cur.as_mut() {
            if let Some(p) = line.strip_prefix("Policy ") {
                b.policy = p.to_string();
            } else if let Some(o) = line.strip_prefix("Observation ") {
                let f: Vec<&str> = o.split_whitespace().collect();
                if f.len() == 4 {
                    let (m, n): (u64, u64) = (f[2].parse().unwrap_or(0), f[3].parse().unwrap_or(0));
                    b.matching = m;
                    b.total = m + n;
                }
            } else if let Some(e) = line.strip_prefix("Expect ") {
                b.expect = e.split(':').next().map(|s| s.trim().to_string());
                b.expect_ok = e.trim_end().ends_with(": ok");
            }
        }
    }
    v.extend(cur);
    v
}

/// Every block of `out` met its expectation, and each `sometimes` showed
/// in at least 90% of its runs (the hooks make the replays deterministic
/// under `tlb=lazy`).
fn check_blocks(out: &str, min_runs: u64, ctx: &dyn Fn() -> String) -> Result<Vec<Block>, Failed> {
    let bs = blocks(out);
    ensure(!bs.is_empty(), || format!("no result blocks\n{}", ctx()))?;
    for b in &bs {
        ensure(b.total >= min_runs, || format!("{} {}: too few runs\n{}", b.test, b.policy, ctx()))?;
        ensure(b.expect_ok, || format!("{} {}: expectation not met\n{}", b.test, b.policy, ctx()))?;
        if b.expect.as_deref() == Some("sometimes") {
            ensure(b.matching * 10 >= b.total * 9, || {
                format!(
                    "{} {}: forbidden outcome in {}/{} runs, want ≥ 90%\n{}",
                    b.test,
                    b.policy,
                    b.matching,
                    b.total,
                    ctx()
                )
            })?;
        }
    }
    Ok(bs)
}

/// The README's main command: `vmm` with no arguments runs the embedded
/// catalogue (S1–S8) with its expectations under `tlb=lazy`, prints the
/// verdict table and exits 0. Every catalogue file's test and every one of
/// its `[expect]` policies is there.
pub fn default_command_runs_catalogue() -> Result<(), Failed> {
    let o = vmm(&[]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(0), || format!("the catalogue did not pass\n{}", ctx()))?;
    ensure(out.contains("\nVerdicts\n") && !out.contains("MISMATCH "), || format!("verdict table\n{}", ctx()))?;
    let bs = check_blocks(&out, 100, &ctx)?;
    // herdtools7's log tools read every block: the transcribed lexer finds
    // each test with its condition, hash and time, and every iteration.
    let read = litmus::herdlog::check_log(&out).map_err(|p| format!("{}\n{}", p.join("\n"), ctx()))?;
    ensure(read.len() == bs.len(), || format!("herd's lexer reads {} of {} blocks\n{}", read.len(), bs.len(), ctx()))?;
    for (r, b) in read.iter().zip(&bs) {
        ensure(r.name == b.test && r.total() == b.total, || {
            format!(
                "herd reads {} with {} iterations, we printed {} with {}\n{}",
                r.name,
                r.total(),
                b.test,
                b.total,
                ctx()
            )
        })?;
    }
    for file in catalogue_files() {
        let src = std::fs::read_to_string(repo().join("tests/litmus").join(&file))?;
        let name =
            src.lines().find_map(|l| l.strip_prefix("name = \"")).and_then(|l| l.split('"').next()).unwrap_or("?");
        let expects = src.lines().skip_while(|l| l.trim() != "[expect]").filter(|l| l.starts_with('"')).count();
        let ran = bs.iter().filter(|b| b.test == name).count();
        ensure(ran == expects, || format!("{file}: {ran} policy runs of {name}, expected {expects}\n{}", ctx()))?;
    }
    Ok(())
}

/// `vmm litmus --check <catalogue dir>` reads the files themselves.
pub fn check_catalogue_dir() -> Result<(), Failed> {
    let dir = repo().join("tests/litmus");
    let o = vmm(&["litmus", "--check", "--runs", "10", "--seed", "7", "--tlb", "lazy", dir.to_str().unwrap()]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(0), || format!("--check failed\n{}", ctx()))?;
    check_blocks(&out, 10, &ctx).map(|_| ())
}

/// The example tests run and meet their expectations.
pub fn examples() -> Result<(), Failed> {
    let dir = repo().join("tests/litmus/examples");
    let o = vmm(&["litmus", "--check", "--runs", "10", "--seed", "3", dir.to_str().unwrap()]);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(0), || format!("status {:?}\n{out}\n{err}", o.status.code()))?;
    ensure(out.contains("Verdicts"), || format!("no verdict table\n{out}"))
}

/// An iteration that deadlocks under the PTL is recorded as `timeout` with
/// every thread's position, and the run goes on with the next iteration
/// (1 s per iteration: the threads must reach their positions first, also on
/// a loaded host).
pub fn timeout_is_recorded_and_run_goes_on() -> Result<(), Failed> {
    let f = repo().join("tests/e2e/data/deadlock-under-ptl.toml");
    let o = vmm(&["litmus", "--runs", "2", "--seed", "1", "--iteration-timeout", "1000", f.to_str().unwrap()]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(0), || format!("non-zero exit\n{}", ctx()))?;
    ensure(out.contains("2     :>1:r0=TIMEOUT; 2:r1=TIMEOUT;"), || format!("no timeout states\n{}", ctx()))?;
    ensure(out.contains("Timeouts 2"), || format!("timeouts not counted\n{}", ctx()))?;
    for it in 0..2 {
        let want = format!(
            "Timeout iteration {it}: P0 at line 9:54 in hook after_ptl_acquire, P1 at line 15:1, D0 at line 23:1"
        );
        ensure(out.contains(&want), || format!("missing `{want}`\n{}", ctx()))?;
    }
    Ok(())
}

/// `--json` writes the versioned schema with the same facts, and one seed
/// gives the same histogram twice.
pub fn json_and_seeded_rerun() -> Result<(), Failed> {
    let f = repo().join("tests/litmus/s1-concurrent-zap.toml");
    let json = std::env::temp_dir().join(format!("shootdown-e2e-{}.json", std::process::id()));
    let args = ["litmus", "--runs", "5", "--seed", "11", "--json", json.to_str().unwrap(), f.to_str().unwrap()];
    let a = vmm(&args);
    let b = vmm(&args);
    let strip =
        |o: &std::process::Output| text(o).0.lines().filter(|l| !l.starts_with("Time ")).collect::<Vec<_>>().join("\n");
    ensure(a.status.code() == Some(0), || format!("{:?}\n{}", a.status.code(), text(&a).0))?;
    ensure(strip(&a) == strip(&b), || format!("re-run differs:\n{}\nvs\n{}", strip(&a), strip(&b)))?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let _ = std::fs::remove_file(&json);
    ensure(v["schema"] == "shootdown-results/3", || format!("schema: {}", v["schema"]))?;
    let runs = v["runs"].as_array().ok_or("no runs array")?;
    // One run per [expect] row (a kernel range runs once, on its newest profile).
    let want = expectations(&std::fs::read_to_string(&f)?).len();
    ensure(runs.len() == want, || format!("want {want} (test, policy) runs, got {}", runs.len()))?;
    Ok(())
}

/// SCENARIOS.md "Verdicts need evidence": a `never` test whose every
/// iteration times out is `inconclusive` — in the block, the verdict table
/// and the JSON — and `--check` fails.
pub fn all_timed_out_is_inconclusive() -> Result<(), Failed> {
    let f = repo().join("tests/e2e/data/never-but-stuck.toml");
    let json = std::env::temp_dir().join(format!("shootdown-e2e-stuck-{}.json", std::process::id()));
    let o = vmm(&[
        "litmus",
        "--check",
        "--runs",
        "3",
        "--seed",
        "1",
        "--iteration-timeout",
        "200",
        "--json",
        json.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(1), || format!("--check must fail\n{}", ctx()))?;
    ensure(out.contains("Expect never: inconclusive (0 of 3 completed, 3 timed out)"), ctx)?;
    ensure(!out.contains("Expect never: ok"), ctx)?;
    let row = out.lines().find(|l| l.starts_with("never-but-stuck ")).unwrap_or("");
    let cells: Vec<&str> = row.split_whitespace().collect();
    ensure(cells == ["never-but-stuck", "default", "0/3", "3", "never", "never", "inconclusive"], || {
        format!("verdict row {cells:?}\n{}", ctx())
    })?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let _ = std::fs::remove_file(&json);
    let run = &v["runs"][0];
    ensure(run["expect_result"] == "inconclusive" && run["expect_ok"] == false, || format!("{run}"))?;
    ensure(run["completed"] == 0 && run["timed_out"] == 3 && run["requested"] == 3, || format!("{run}"))
}

/// A guest that says it is done before it ran every requested iteration is
/// an error, and the run's verdict is `inconclusive`, never `ok`.
pub fn guest_stopping_early_is_an_error(image: &std::path::Path) -> Result<(), Failed> {
    let f = repo().join("tests/litmus/s1-concurrent-zap.toml");
    let o = vmm(&[
        "--guest",
        image.to_str().unwrap(),
        "litmus",
        "--check",
        "--runs",
        "5",
        "--seed",
        "1",
        f.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(3), || format!("want exit 3 (guest error)\n{}", ctx()))?;
    ensure(out.contains("the guest ended the run after 0 of 5 iterations"), ctx)?;
    ensure(!out.contains(": ok\n") && out.contains("inconclusive (0 of 5 completed, 5 never ran)"), ctx)?;
    Ok(())
}

/// `--runs 0` is refused, not silently one run.
pub fn zero_runs_refused() -> Result<(), Failed> {
    let f = repo().join("tests/litmus/s1-concurrent-zap.toml");
    let o = vmm(&["litmus", "--runs", "0", f.to_str().unwrap()]);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(2), || format!("want exit 2: {:?}\n{out}\n{err}", o.status.code()))?;
    ensure(err.contains("'0'") && err.contains("--runs"), || err.clone())?;
    ensure(!out.contains("Test "), || out.clone())
}

/// Malformed files: nothing runs, exit 2, and each message points at the
/// right file:line:column with what was found and what was expected.
pub fn malformed(file: &str, want: &[&str]) -> Result<(), Failed> {
    let good = repo().join("tests/litmus/s1-concurrent-zap.toml");
    let bad = repo().join("tests/e2e/data/bad").join(file);
    let o = vmm(&["litmus", "--runs", "1", good.to_str().unwrap(), bad.to_str().unwrap()]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(2), || format!("want exit 2\n{}", ctx()))?;
    ensure(!out.contains("Test "), || format!("a test ran although a file was invalid\n{}", ctx()))?;
    for w in want {
        ensure(err.contains(w), || format!("stderr lacks `{w}`\n{}", ctx()))?;
    }
    Ok(())
}

/// The `[expect]` entries of a catalogue file: (policy, verdict).
fn expectations(src: &str) -> Vec<(String, String)> {
    src.lines()
        .skip_while(|l| l.trim() != "[expect]")
        .filter(|l| l.starts_with('"'))
        .filter_map(|l| {
            let q: Vec<&str> = l.split('"').collect();
            (q.len() >= 4).then(|| (q[1].to_string(), q[q.len() - 2].to_string()))
        })
        .collect()
}

/// An `[expect]` key with a kernel range (`kernel=v4.14..mainline,k=v`) as
/// the `--policy` of each profile in it (`--policy` takes one profile).
fn expand_kernel_range(key: &str) -> Vec<String> {
    let (head, rest) = match key.split_once(',') {
        Some((h, r)) => (h, Some(r)),
        None => (key, None),
    };
    let Some((from, to)) = head.strip_prefix("kernel=").and_then(|r| r.split_once("..")) else {
        return vec![key.to_string()];
    };
    let names: Vec<&str> = litmus::policy::profiles().iter().map(|p| p.name()).collect();
    let (Some(a), Some(b)) = (names.iter().position(|n| *n == from), names.iter().position(|n| *n == to)) else {
        return vec![key.to_string()];
    };
    names[a..=b]
        .iter()
        .map(|n| match rest {
            Some(r) => format!("kernel={n},{r}"),
            None => format!("kernel={n}"),
        })
        .collect()
}

/// The longer job (opt in, ~1 h on our machines):
/// `cargo test --release --test e2e -- --ignored litmus::long::never_10k_runs_per_scenario`.
/// Every fixed-policy expectation (`never`) of every scenario holds over at
/// least 10,000 runs in total per scenario, split evenly over its `never`
/// policies, under `tlb=lazy`.
pub fn never_10k_runs_per_scenario() -> Result<(), Failed> {
    for file in catalogue_files() {
        let path = repo().join("tests/litmus").join(&file);
        let nevers: Vec<String> = expectations(&std::fs::read_to_string(&path)?)
            .into_iter()
            .filter(|(_, v)| v == "never")
            .flat_map(|(p, _)| expand_kernel_range(&p))
            .collect();
        if nevers.is_empty() {
            continue;
        }
        let runs = 10_000u64.div_ceil(nevers.len() as u64).to_string();
        // `--progress` with stderr passed through: a person running the
        // long job sees iterations, rate and ETA instead of minutes of nothing.
        let mut args = vec!["litmus", "--check", "--progress", "--runs", &runs, "--seed", "11", "--tlb", "lazy"];
        for p in &nevers {
            args.extend(["--policy", p.as_str()]);
        }
        args.push(path.to_str().unwrap());
        let started = std::time::Instant::now();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_vmm"))
            .args(&args)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("cannot run the vmm binary");
        let (out, err) = text(&o);
        let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
        ensure(o.status.code() == Some(0), || format!("{file}: --check failed\n{}", ctx()))?;
        let bs = check_blocks(&out, runs.parse().unwrap(), &ctx)?;
        let total: u64 = bs.iter().map(|b| b.total).sum();
        let forbidden: u64 = bs.iter().map(|b| b.matching).sum();
        ensure(forbidden == 0 && total >= 10_000, || format!("{file}: {forbidden} forbidden in {total}\n{}", ctx()))?;
        eprintln!(
            "{file}: {total} runs over {} never-policies, 0 forbidden, {:.0} s",
            nevers.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// S6's rmap-before-flush row on mainline under an evicting TLB (a seeded
/// regression): when P0's stale entry is evicted, its `store x 2` faults and
/// queues for the PTL behind P2's writeback, so the store lands after the
/// first writeback (`2:r0=1`). The second writeback, which waits for the
/// store, must still find it dirty in a PTE (`2:r1=2`): never `2:r1=1`.
/// The run must also have taken the fault path at least once (`2:r0=1`),
/// or it shows nothing about it.
pub fn s6_rmap_before_flush_evicted_store() -> Result<(), Failed> {
    let f = repo().join("tests/litmus/s6-dirty-shared-rmap-before-flush.toml");
    let args = [
        "litmus",
        "--check",
        "--runs",
        "400",
        "--seed",
        "962005227",
        "--tlb",
        "evict:0.5",
        "--policy",
        "kernel=mainline",
        f.to_str().unwrap(),
    ];
    let o = vmm(&args);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(0), || format!("forbidden outcome or error\n{}", ctx()))?;
    let bs = check_blocks(&out, 400, &ctx)?;
    ensure(bs.len() == 1 && bs[0].matching == 0, || format!("want one block, 0 forbidden\n{}", ctx()))?;
    ensure(out.contains(":>2:r0=1; 2:r1=2;"), || format!("no iteration took the evicted-entry fault path\n{}", ctx()))
}

/// Unsynchronised threads mixing every mm operation on pages that share
/// page tables (`tests/e2e/data/stress/`), under several flush schemes and
/// notifier placements, with an evicting TLB and IOTLB: every iteration ends (no
/// timeout), without a guest error, and returns every page, table and
/// swap slot (`--check` fails on a leak).
pub fn stress_no_crash_no_leak() -> Result<(), Failed> {
    let dir = repo().join("tests/e2e/data/stress");
    let mut args =
        vec!["litmus", "--check", "--runs", "30", "--seed", "9", "--tlb", "evict:0.3", "--iotlb", "evict:0.3"];
    // Today's kernel, the two per-table proposals, an old profile (no
    // nested check, invalidate_page, flushes under the old rules), migrc.
    for p in ["default", "flush=per-ptl", "flush=generation", "kernel=v4.9", "kernel=v6.6,migrc=on"] {
        args.extend(["--policy", p]);
    }
    args.push(dir.to_str().unwrap());
    let o = vmm(&args);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(0), || format!("stress run failed\n{}", ctx()))?;
    ensure(!out.contains("\nLeak ") && !out.contains("\nError ") && !out.contains("\nTimeouts "), ctx)?;
    let bs = blocks(&out);
    ensure(bs.len() == 10 && bs.iter().all(|b| b.total == 30), || format!("expected 10 blocks of 30 runs\n{}", ctx()))
}

/// `vmm litmus --list-kernels`: every profile, then every kernel key with
/// its value in each (issue 11).
pub fn list_kernels() -> Result<(), Failed> {
    let o = vmm(&["litmus", "--list-kernels"]);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(0), || format!("status {:?}\n{out}\n{err}", o.status.code()))?;
    for p in ["v3.19", "v4.9", "v4.14", "v4.19", "v5.4", "v5.10", "v6.1", "v6.6", "mainline"] {
        ensure(out.lines().any(|l| l.starts_with(&format!("{p} "))), || format!("no profile {p}\n{out}"))?;
    }
    let header = out.lines().find(|l| l.starts_with("key ")).ok_or_else(|| format!("no key table\n{out}"))?;
    ensure(header.split_whitespace().count() == 10, || format!("want key + 9 profiles: {header}"))?;
    for k in abi::policy::KEYS.iter().filter(|k| k.kind == abi::policy::KeyKind::Kernel) {
        ensure(out.lines().any(|l| l.starts_with(&format!("{} ", k.name))), || {
            format!("no row for {}\n{out}", k.name)
        })?;
    }
    Ok(())
}

/// A policy no kernel had is refused before anything runs, with the
/// reason and the way out; `--allow-hypothetical` is that way out.
pub fn hypothetical_refused() -> Result<(), Failed> {
    let f = repo().join("tests/litmus/s1-concurrent-zap.toml");
    let o = vmm(&["litmus", "--runs", "1", "--policy", "kernel=v4.9,notifier=tlb-flush", f.to_str().unwrap()]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(2), || format!("want exit 2\n{}", ctx()))?;
    ensure(!out.contains("Test "), || format!("a test ran\n{}", ctx()))?;
    ensure(err.contains("is no kernel that existed") && err.contains("--allow-hypothetical"), ctx)?;
    // A proposal is not refused: it is labelled.
    let o = vmm(&["litmus", "--list-policies"]);
    ensure(text(&o).0.contains("proposal"), || text(&o).0)
}

/// `--kernel all --check`: one row per profile, the kernel x verdict table,
/// `n/a` where the operation did not exist (MADV_FREE before v4.5).
pub fn kernel_all_check() -> Result<(), Failed> {
    let s1 = repo().join("tests/litmus/s1-concurrent-zap.toml");
    let free = repo().join("tests/litmus/examples/madv-free-nested.toml");
    let o = vmm(&[
        "litmus",
        "--kernel",
        "all",
        "--check",
        "--runs",
        "3",
        "--seed",
        "5",
        s1.to_str().unwrap(),
        free.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(0), || format!("--kernel all --check failed\n{}", ctx()))?;
    let table = out.split("\nKernels (").nth(1).ok_or_else(|| format!("no kernel table\n{}", ctx()))?;
    let row = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .map(|l| l.split_whitespace().skip(1).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let s1_row = row("s1-concurrent-zap");
    ensure(
        s1_row.len() == 9 && s1_row[..2] == ["always", "always"] && s1_row[2..].iter().all(|c| c == "never"),
        || format!("s1 row {s1_row:?}\n{}", ctx()),
    )?;
    let free_row = row("madv-free-nested");
    ensure(free_row.len() == 9 && free_row[0] == "n/a" && free_row[1] == "always", || {
        format!("madv-free-nested row {free_row:?}\n{}", ctx())
    })
}
