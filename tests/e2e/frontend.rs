//! Issue 12, part 3, end to end through the `vmm` binary: what the guest
//! cannot run is refused by the checker with exit 2 at the file's
//! line:column before anything boots; a test at every limit at once runs on
//! the real guest; hostile inputs (sizes, nesting, bytes, FIFOs, devices,
//! directories) get one clear error, never a panic, hang or unbounded read.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use abi::limits::*;
use libtest_mimic::{Failed, Trial};

use super::{ensure, text, VMM};

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shootdown-e2e-frontend-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch_dir().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Runs `vmm args`, killed if it has not ended within `limit` (a hang is
/// the bug some of these tests look for; the limit is generous, not a
/// speed claim).
fn vmm_bounded(args: &[&str], limit: Duration) -> Result<Output, Failed> {
    // Output goes to files, not pipes: a child writing more than a pipe
    // holds would wait for a reader while we wait for it.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (out_path, err_path) = (scratch_dir().join(format!("out-{n}")), scratch_dir().join(format!("err-{n}")));
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut child = Command::new(VMM)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?)
        .spawn()
        .map_err(|e| format!("cannot run vmm: {e}"))?;
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("vmm {args:?} did not end within {} s", limit.as_secs()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    Ok(Output { status, stdout: read(&out_path)?, stderr: read(&err_path)? })
}

/// Exit 2, `want` in the first stderr line, nothing ran, no panic.
fn refused(o: &Output, want: &[&str]) -> Result<(), Failed> {
    let (out, err) = text(o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{}", o.status.code(), &err[..err.len().min(4000)]);
    ensure(o.status.code() == Some(2), || format!("want exit 2\n{}", ctx()))?;
    ensure(!err.contains("panicked") && !out.contains("Test "), ctx)?;
    let first = err.lines().next().unwrap_or("");
    for w in want {
        ensure(first.contains(w), || format!("first stderr line lacks `{w}`\n{}", ctx()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- test files

const TAIL: &str = "[final]\nexists = \"true\"\n";

/// A test at every limit of `abi::limits` at once (that can be combined):
/// 256 locations (32 pages, 16 of them shared, pinned so their page tables
/// number exactly 64; the rest vars and flags), 64 threads of which 16 are
/// devices (so 48 vCPUs), 32
/// `cow`s, a page linked to 3 others by `ksm`, 64 observed values, names
/// of 255 bytes, a condition nested 64 deep; if `long`, also 2,047 DMA ops
/// per device and exactly 32,768 instruction records (about half a minute
/// per iteration on our machines: interpreted at emulated CPL0).
fn at_every_limit(long: bool) -> String {
    let mut s = format!("name = \"{}\"\n[locations]\n", "t".repeat(MAX_NAME_LEN));
    // The PGD, 3 tables for the unpinned pages' window (no pinned page in
    // its slot), 3 per pinned page in a slot of its own, 1 per page in
    // another 2 MiB of slot 2: exactly MAX_PAGE_TABLES.
    let slots = (MAX_PAGE_TABLES - 4) / 3;
    let extra = (MAX_PAGE_TABLES - 4) % 3;
    for i in 0..MAX_PAGE_LOCATIONS {
        let mut decl =
            if i < MAX_SHARED_PAGES { "page = \"rw\", shared = true".to_string() } else { "page = \"rw\"".into() };
        if i < slots {
            let _ = write!(decl, ", va = \"{:#x}\"", (i as u64 + 2) << 39);
        } else if i < slots + extra {
            let _ = write!(decl, ", va = \"{:#x}\"", (2u64 << 39) | ((i - slots + 1) as u64) << 21);
        }
        let name = if i == 0 { "p".repeat(MAX_NAME_LEN) } else { format!("p{i}") };
        let _ = writeln!(s, "{name} = {{ {decl} }}");
    }
    let flags = 24;
    for i in 0..MAX_LOCATIONS - MAX_PAGE_LOCATIONS - flags {
        let _ = writeln!(s, "v{i} = {{ var = {i} }}");
    }
    let p0 = "p".repeat(MAX_NAME_LEN);
    let mut code = String::new();
    for i in 0..MAX_COW_OPS {
        let _ = writeln!(code, "cow p{}", 1 + i % (MAX_PAGE_LOCATIONS - 1));
    }
    for i in 1..MAX_PAGE_MAPPINGS {
        let _ = writeln!(code, "ksm p{} {p0}", 20 + i);
    }
    for f in 0..flags {
        let _ = writeln!(code, "signal f{f}");
    }
    let _ = writeln!(code, "load {p0} -> r31");
    let p0_records = MAX_COW_OPS + MAX_PAGE_MAPPINGS - 1 + flags + 1;
    let dev_records = 2 * MAX_DEVICE_THREADS;
    // vCPU threads P0, P1 and these fill the thread limit with the devices.
    let more_vcpus = MAX_THREADS - MAX_DEVICE_THREADS - 2;
    let _ = write!(s, "[thread.{}]\ncode = \"\"\"\n{code}\"\"\"\n", "P".repeat(MAX_NAME_LEN));
    s.push_str("[thread.P1]\ncode = \"\"\"\n");
    for _ in 0..if long { MAX_RECORDS - p0_records - dev_records - more_vcpus } else { 1 } {
        s.push_str("mfence\n");
    }
    s.push_str("\"\"\"\n");
    for i in 0..more_vcpus {
        let _ = write!(s, "[thread.Q{i}]\ncode = \"mfence\"\n");
    }
    let ops = if long { MAX_DEVICE_OPS } else { 3 };
    for d in 0..MAX_DEVICE_THREADS {
        let _ = write!(s, "[device.D{d}]\ncode = \"loop {ops} {{ dma_load p{} -> r0 }}\"\n", 1 + d);
    }
    let observe: Vec<String> = (0..MAX_OBSERVED - 1).map(|i| format!("\"v{i}\"")).collect();
    let depth = MAX_CONDITION_DEPTH;
    let _ = write!(
        s,
        "[final]\nobserve = [{}]\nexists = \"{}v0 == 0 && {}:r31 == 0{}\"\n",
        observe.join(", "),
        "(".repeat(depth),
        "P".repeat(MAX_NAME_LEN),
        ")".repeat(depth)
    );
    s
}

/// (name, file, what the first stderr line must say) — each one past one
/// limit, or hostile.
fn past_a_limit() -> Vec<(&'static str, Vec<u8>, Vec<String>)> {
    let vars = |n: usize| -> String {
        let mut s = String::from("name = \"t\"\n[locations]\nx = { page = \"rw\" }\n");
        for i in 1..n {
            let _ = writeln!(s, "v{i} = {{ var = 0 }}");
        }
        s
    };
    let pages = |n: usize, extra: &dyn Fn(usize) -> String| -> String {
        let mut s = String::from("name = \"t\"\n[locations]\n");
        for i in 0..n {
            let _ = writeln!(s, "x{i} = {{ page = \"rw\"{} }}", extra(i));
        }
        s
    };
    let thread = |code: &str| format!("[thread.P0]\ncode = \"\"\"\n{code}\"\"\"\n{TAIL}");
    let mut v: Vec<(&'static str, Vec<u8>, Vec<String>)> = Vec::new();
    let mut add = |name: &'static str, src: String, want: &[&str]| {
        v.push((name, src.into_bytes(), want.iter().map(|s| s.to_string()).collect()));
    };
    add("locations", vars(MAX_LOCATIONS + 1) + &thread("load x -> r0\n"), &[":259:1: error: too many locations"]);
    let signals: String = (0..MAX_LOCATIONS).map(|f| format!("signal f{f}\n")).collect();
    add("flags", vars(1) + &thread(&signals), &[":261:8: error: too many locations: `f255`"]);
    let flags100k: String = (0..100_000).map(|f| format!("signal f{f}\n")).collect();
    add("flags-100k", "name = \"t\"\n".to_string() + &thread(&flags100k), &[":260:8: error: too many locations"]);
    let devices: String =
        (0..=MAX_DEVICE_THREADS).map(|d| format!("[device.D{d}]\ncode = \"dma_load x -> r0\"\n")).collect();
    add("devices", vars(1) + &devices + TAIL, &[":36:9: error: too many device threads"]);
    let threads: String = (0..=MAX_THREADS).map(|t| format!("[thread.P{t}]\ncode = \"mfence\"\n")).collect();
    add("threads", "name = \"t\"\n".to_string() + &threads + TAIL, &[":130:9: error: too many threads"]);
    add(
        "unroll",
        vars(1) + &format!("[device.D0]\ncode = \"prefetch x\\nloop {MAX_DEVICE_OPS} {{ dma_load x -> r0 }}\"\n{TAIL}"),
        &[":5:21: error: device thread D0 unrolls to 2048 DMA-engine ops"],
    );
    add(
        "records",
        "name = \"t\"\n".to_string() + &thread(&"mfence\n".repeat(MAX_RECORDS + 1)),
        &[":32772:1: error: more than 32768 instruction records"],
    );
    let obs: Vec<String> = (0..=MAX_OBSERVED).map(|i| format!("\"v{}\"", i + 1)).collect();
    add(
        "observed",
        vars(MAX_OBSERVED + 2)
            + &format!("[thread.P0]\ncode = \"mfence\"\n[final]\nobserve = [{}]\nexists = \"true\"\n", obs.join(", ")),
        &[":72:451: error: too many observed values"],
    );
    add(
        "name",
        format!("name = \"{}\"\n", "n".repeat(MAX_NAME_LEN + 1)) + &thread("mfence\n"),
        &[":1:8: error: test name too long: 256 bytes"],
    );
    add(
        "va-below-window",
        pages(1, &|_| ", va = \"0x1000\"".into()) + &thread("load x0 -> r0\n"),
        &[":3:26: error: `va = \"0x1000\"` is not a page of the test's address space", "at least 0x8000000000"],
    );
    add(
        "va-twice",
        pages(2, &|_| ", va = \"0x7f0000000000\"".into()) + &thread("load x0 -> r0\n"),
        &[":4:26: error: `x1` and `x0` (line 3, column 1) are both pinned at 0x7f0000000000"],
    );
    add(
        "page-locations",
        pages(MAX_PAGE_LOCATIONS + 1, &|_| String::new()) + &thread("load x0 -> r0\n"),
        &[":35:1: error: too many page locations"],
    );
    add(
        "shared-pages",
        pages(MAX_SHARED_PAGES + 1, &|_| ", shared = true".into()) + &thread("load x0 -> r0\n"),
        &[":19:31: error: too many shared pages"],
    );
    // 21 slots of 3 and the PGD: 64; one more 2 MiB in the first slot: 65.
    let spread = |i: usize| {
        let va = if i < MAX_PAGE_TABLES / 3 { (i as u64 + 2) << 39 } else { (2u64 << 39) | (1 << 21) };
        format!(", va = \"{va:#x}\"")
    };
    add(
        "page-tables",
        pages(MAX_PAGE_TABLES / 3 + 1, &spread) + &thread("load x0 -> r0\n"),
        &[":24:27: error: the pinned addresses up to here may need 65 page-table pages"],
    );
    add(
        "cow",
        pages(1, &|_| String::new()) + &thread(&"cow x0\n".repeat(MAX_COW_OPS + 1)),
        &[":38:1: error: more than 32 `cow` statements"],
    );
    add(
        "ksm",
        pages(5, &|_| String::new()) + &thread("ksm x1 x0\nksm x2 x0\nksm x3 x0\nksm x4 x0\n"),
        &[":13:1: error: this `ksm` links 5 locations"],
    );
    let cond = |c: String| format!("{}[thread.P0]\ncode = \"load x -> r0\"\n[final]\nexists = \"{c}\"\n", vars(1));
    add(
        "parens-10k",
        cond(format!("{}x == 0{}", "(".repeat(10_000), ")".repeat(10_000))),
        &[":7:75: error: condition nested too deeply"],
    );
    add("nots-20k", cond(format!("{}x == 0", "!".repeat(20_000))), &[":7:75: error: condition nested too deeply"]);
    let mut expect = "name = \"t\"\n".to_string() + &thread("mfence\n") + "[expect]\n";
    for i in 0..=MAX_EXPECTATIONS {
        let _ = writeln!(expect, "\"tlb=evict:0.{i:04}\" = \"sometimes\"");
    }
    add("expect", expect, &[":265:1: error: too many [expect] entries"]);
    let mut bytes = b"name = \"t\"\n[locations]\nx = { page = \"rw\" }\n# caf".to_vec();
    bytes.extend_from_slice(b"\xe9\n");
    v.push(("non-utf8", bytes, vec![":4:6: error: not UTF-8: invalid byte sequence 0xe9".into()]));
    v
}

// ---------------------------------------------------------------- trials

/// Every case of `past_a_limit`: exit 2 at its line:column, and quickly
/// (the 100,000-flag file took 201 s before the checker was linear).
fn past_limit(name: &'static str, bytes: Vec<u8>, want: Vec<String>) -> Result<(), Failed> {
    let good = super::litmus::repo().join("tests/litmus/s1-concurrent-zap.toml");
    let bad = write(&format!("{name}.toml"), &bytes);
    let o = vmm_bounded(
        &["litmus", "--runs", "1", good.to_str().unwrap(), bad.to_str().unwrap()],
        Duration::from_secs(60),
    )?;
    let want: Vec<String> =
        want.iter().map(|w| if w.starts_with(':') { format!("{name}.toml{w}") } else { w.clone() }).collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    refused(&o, &want)
}

/// The test at every limit runs on the real guest: no guest error, every
/// iteration reported.
fn at_limits_runs(long: bool) -> Result<(), Failed> {
    let src = at_every_limit(long);
    // It is at the limits it claims to be at.
    let t = litmus::check_source("at-every-limit.toml", &src).test.ok_or("the checker refuses it")?;
    let pages: Vec<&litmus::Location> = t.locations.iter().filter(|l| l.kind != abi::litmus::LocKind::Var).collect();
    let pinned: Vec<u64> = pages.iter().filter_map(|l| l.va).collect();
    let count = |op: abi::litmus::Op| {
        let mut n = 0;
        for th in &t.threads {
            for s in &th.code {
                s.walk(&mut |s| n += usize::from(s.op == op));
            }
        }
        n
    };
    let facts = [
        (t.locations.len(), MAX_LOCATIONS),
        (pages.len(), MAX_PAGE_LOCATIONS),
        (pages.iter().filter(|l| l.shared).count(), MAX_SHARED_PAGES),
        (page_tables_needed(&pinned, pinned.len() < pages.len()), MAX_PAGE_TABLES),
        (count(abi::litmus::Op::Cow), MAX_COW_OPS),
        (t.threads.iter().filter(|t| t.kind == abi::litmus::ThreadKind::Device).count(), MAX_DEVICE_THREADS),
        (t.threads.len(), MAX_THREADS),
        (t.observed.len(), MAX_OBSERVED),
        (t.name.len(), MAX_NAME_LEN),
    ];
    for (i, (got, want)) in facts.iter().enumerate() {
        ensure(got == want, || format!("fact {i}: {got} != {want}"))?;
    }
    let c = litmus::compile(&t, &litmus::Policy::default(), &litmus::CompileOptions::default())?;
    let records = abi::litmus::Blob::parse(&c.blob).map_err(|e| format!("{e:?}"))?.header().n_instrs as usize;
    ensure(!long || records == MAX_RECORDS, || format!("{records} records"))?;
    let f = write(&format!("at-every-limit-{long}.toml"), src.as_bytes());
    let o = vmm_bounded(
        &["--timeout", "1200", "litmus", "--runs", "2", "--iteration-timeout", "300000", f.to_str().unwrap()],
        Duration::from_secs(1500),
    )?;
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{}\nstderr:\n{err}", o.status.code(), &out[..out.len().min(3000)]);
    ensure(o.status.code() == Some(0), || format!("want exit 0\n{}", ctx()))?;
    ensure(out.contains(&format!("Observation {} ", "t".repeat(MAX_NAME_LEN))), ctx)?;
    ensure(out.contains("2/2"), || format!("not every iteration completed\n{}", ctx()))
}

/// Files named on the command line are read only as bounded regular files:
/// a FIFO with no writer, a device that never ends, a directory, a file too
/// large: one line on stderr, exit 2, at once.
fn input_files(what: &'static str) -> Result<(), Failed> {
    let dir = scratch_dir().join(format!("input-{what}"));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let _ = std::fs::remove_file(&fifo);
    let st = Command::new("mkfifo").arg(&fifo).status().map_err(|e| e.to_string())?;
    ensure(st.success(), || "mkfifo failed".to_string())?;
    let huge = dir.join("huge");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(8 << 30).unwrap(); // sparse: 8 GiB, no disk used
    drop(f);
    let args = |p: &Path| -> Vec<String> {
        let p = p.to_str().unwrap().to_string();
        match what {
            "guest" => vec!["--guest".into(), p, "run".into()],
            "trace" => vec!["trace".into(), "report".into(), p],
            _ => vec!["litmus".into(), "--runs".into(), "1".into(), p],
        }
    };
    let role = match what {
        "guest" => "guest image",
        "trace" => "trace",
        _ => "litmus file",
    };
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    // `vmm litmus DIR` runs the directory's files: an empty one is the error.
    let dir_why = if what == "litmus" { "no *.toml litmus files in this directory" } else { "is a directory" };
    for (p, why) in [
        (fifo.as_path(), "is a FIFO"),
        (Path::new("/dev/zero"), "is a character device"),
        (empty.as_path(), dir_why),
        (huge.as_path(), "larger than the "),
    ] {
        let a = args(p);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = vmm_bounded(&a, Duration::from_secs(60))?;
        let (out, err) = text(&o);
        let ctx = || format!("vmm {a:?}\nstatus {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
        ensure(o.status.code() == Some(2), || format!("want exit 2\n{}", ctx()))?;
        ensure(err.contains(why) && err.contains(p.to_str().unwrap()), ctx)?;
        ensure(p == empty.as_path() || err.contains(role), ctx)?;
        ensure(!err.contains("panicked"), ctx)?;
        if what != "litmus" {
            ensure(err.lines().count() == 1, || format!("want one line on stderr\n{}", ctx()))?;
        }
    }
    let _ = std::fs::remove_file(&huge);
    Ok(())
}

/// The trials of this file; `kvm_trial` marks those that boot the guest
/// (reported ignored, loudly, where KVM is missing).
/// How `main` makes a trial that needs KVM.
pub type KvmTrial<'a> = &'a dyn Fn(&str, fn() -> Result<(), Failed>) -> Trial;

pub fn trials(kvm_trial: KvmTrial<'_>) -> Vec<Trial> {
    let mut t = Vec::new();
    for (name, bytes, want) in past_a_limit() {
        t.push(Trial::test(format!("frontend::refused::{name}"), move || past_limit(name, bytes, want)));
    }
    t.push(kvm_trial("frontend::at_every_limit_runs_on_the_guest", || at_limits_runs(false)));
    // The longer job: opt in with `-- --ignored` (see README, "Longer runs").
    t.push(
        Trial::test("frontend::long::at_every_limit_with_full_programs", || at_limits_runs(true))
            .with_ignored_flag(true),
    );
    t.push(Trial::test("frontend::input::guest_image", || input_files("guest")));
    t.push(Trial::test("frontend::input::trace", || input_files("trace")));
    t.push(Trial::test("frontend::input::litmus_file", || input_files("litmus")));
    t.push(kvm_trial("frontend::hundred_thousand_term_chain_runs", || {
        let chain = vec!["x == 0"; 100_000].join(" && ");
        let src = format!("name = \"chain\"\n[locations]\nx = {{ page = \"rw\" }}\n[thread.P0]\ncode = \"load x -> r0\"\n[final]\nexists = \"{chain}\"\n");
        let f = write("chain.toml", src.as_bytes());
        let o = vmm_bounded(&["litmus", "--runs", "2", f.to_str().unwrap()], Duration::from_secs(300))?;
        let (out, err) = text(&o);
        let ctx = || format!("status {:?}\nstderr:\n{err}", o.status.code());
        ensure(o.status.code() == Some(0), ctx)?;
        ensure(out.contains("Observation chain Always 2 0"), ctx)
    }));
    t
}
