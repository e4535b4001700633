//! `vmm`: boot the shootdown guest on KVM and run litmus tests (with no
//! arguments: the built-in catalogue), its self-tests, probes and
//! benchmarks. See README.md for the CLI.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use abi::config::{GuestMode, IotlbModel, TlbModel};
use clap::{Parser, Subcommand};
use litmus::Policy;
use vmm::boot::ImageError;
use vmm::commands::{self, litmus::LitmusArgs, selftest::What};
use vmm::config;
use vmm::error::{chain, Error};
use vmm::status;
use vmm::vstate::{vm, VmConfig};

#[derive(Parser, Debug)]
#[command(
    name = "vmm",
    version,
    about = "shootdown: TLB-shootdown and mmu_notifier correctness on a KVM-booted model of the Linux mm",
    after_help = "With no command, vmm runs `vmm litmus --check` on the built-in catalogue (S1–S8 and the \
                  examples, every [expect] policy, 100 iterations each) and exits 0 only if every expectation holds."
)]
struct Cli {
    /// Boot this ELF image instead of the embedded shootdown guest.
    #[arg(long, global = true, help_heading = VM_HEADING, value_name = "PATH")]
    guest: Option<PathBuf>,
    /// Number of vCPUs, each on its own host thread (default: 2; for
    /// `litmus`, as many as the test has vCPU threads).
    #[arg(long, global = true, help_heading = VM_HEADING, value_name = "N")]
    vcpus: Option<u64>,
    /// Guest RAM in MiB.
    #[arg(long, global = true, help_heading = VM_HEADING, default_value_t = 256, value_name = "MiB")]
    mem: u64,
    /// Extra kernel command line, passed to the guest.
    #[arg(long, global = true, help_heading = VM_HEADING, default_value = "", value_name = "STR")]
    cmdline: String,
    /// Watchdog: if the guest has not ended after this many seconds, print
    /// every vCPU's RIP/RSP/CR3 and exit with status 4. Default 300; for
    /// `explore` 30 days: a search runs many schedules in one boot, and
    /// each schedule has its own watchdog (--iteration-timeout).
    #[arg(long, global = true, help_heading = VM_HEADING, value_name = "SECS")]
    timeout: Option<u64>,
    /// vCPU TLB model: `lazy` (entries live until this vCPU flushes),
    /// `evict:P` (also drop each stale entry with probability P at every
    /// exit), `native` (the host's real TLB; see `vmm probe`).
    /// For `litmus` this overrides the policies' `tlb=` key.
    #[arg(long, global = true, help_heading = VM_HEADING, value_name = "MODEL", value_parser = config::parse_tlb)]
    tlb: Option<TlbModel>,
    /// Seed for everything random (eviction, placement), for re-runnable
    /// results (default 1; `litmus` picks one and prints it).
    #[arg(long, global = true, help_heading = VM_HEADING, value_name = "N")]
    seed: Option<u64>,
    /// Show the guest's serial console (boot messages).
    #[arg(long, global = true, help_heading = VM_HEADING)]
    verbose: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run litmus tests (files or directories of `*.toml`; none = the
    /// built-in catalogue S1–S8) and print herdtools7-style results.
    Litmus {
        /// Litmus files or directories.
        paths: Vec<PathBuf>,
        /// Iterations per (test, policy), at least 1.
        #[arg(long, default_value_t = 100, value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64))]
        runs: u64,
        /// A policy `k=v,k=v` to run (repeatable: a matrix). Default: the
        /// policies of each test's [expect] table.
        #[arg(long = "policy", value_name = "POLICY")]
        policies: Vec<String>,
        /// Device IOTLB model: `lazy` or `evict:P` (overrides the policies).
        #[arg(long, value_name = "MODEL", value_parser = config::parse_iotlb)]
        iotlb: Option<IotlbModel>,
        /// The IOMMU's paging-structure cache: `on` or `off` (overrides the policies).
        #[arg(long, value_name = "on|off", value_parser = config::parse_on_off)]
        pwc: Option<bool>,
        /// Also write the results as JSON (schema `shootdown-results/3`),
        /// rewritten atomically after every block (`"complete": false` until
        /// the last).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Also write one herdtools7 log per policy, DIR/<policy>.log, for
        /// `mcompare7 DIR/*.log` (a test × policy table) and `msum7`.
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        /// Exit with status 1 if any observation disagrees with [expect] (or pages leaked).
        #[arg(long)]
        check: bool,
        /// Time limit per iteration; one that runs out is recorded as `timeout`.
        #[arg(long, default_value_t = 3000, value_name = "MS")]
        iteration_timeout: u64,
        /// Print every hook point with one line each, then exit.
        #[arg(long)]
        list_hooks: bool,
        /// Print every policy key, its values and default, then exit.
        #[arg(long)]
        list_policies: bool,
        /// Print every kernel profile and the value of each kernel key in it, then exit.
        #[arg(long)]
        list_kernels: bool,
        /// Run on this kernel profile (`v4.14`, …, `mainline`; overrides the
        /// policies' `kernel=`), or `all`: one row per profile and a kernel ×
        /// verdict table.
        #[arg(long, value_name = "PROFILE|all")]
        kernel: Option<String>,
        /// Run policies no kernel ever had (a switch of one era with the
        /// notifier placement of another…); they are labelled hypothetical.
        #[arg(long)]
        allow_hypothetical: bool,
        /// Record a trace of every (test, policy) run into FILE (see
        /// `vmm trace report`); streamed, so a crash or timeout keeps it.
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// Trace only the first K iterations of each run (default: all).
        #[arg(long, value_name = "K", requires = "trace")]
        trace_runs: Option<u64>,
        /// Records per vCPU trace ring (a power of two, at least 16; default:
        /// as many as fit). A full ring makes its vCPU wait for the VMM to
        /// drain it; small rings show that nothing is lost.
        #[arg(long, value_name = "N", requires = "trace")]
        trace_ring: Option<u64>,
        /// Run only shard I of N of the job (1 <= I <= N): its (test,
        /// policy, iteration range) parts, cut deterministically; `vmm
        /// results merge` puts the shards' --json files back together.
        #[arg(long, value_name = "I/N", value_parser = parse_shard)]
        shard: Option<litmus::Shard>,
        /// Also run every test under POLICY and compare each other policy's
        /// verdict with it (new violation, fixed, now inconclusive); exit 1
        /// on a new violation.
        #[arg(long, value_name = "POLICY")]
        baseline: Option<String>,
        /// Show progress on stderr (iterations done, rate, ETA, current test
        /// and policy) even when stderr is not a terminal; on a terminal it
        /// is always shown.
        #[arg(long)]
        progress: bool,
        /// Print TAP (kselftest's `TAP version 13`, one `ok`/`not ok` per
        /// (test, policy) against its [expect] entry) with the herd blocks
        /// as `#` lines, for kernel CI.
        #[arg(long)]
        tap: bool,
    },
    /// Search the schedules of litmus tests (hook-free tests: every
    /// interleaving within a preemption bound, or PCT samples) instead of
    /// replaying the one hooks script; herdtools7-style results with the
    /// search's completeness, and each violation's witness written as a
    /// litmus file that forces it and as a timeline.
    Explore {
        /// Litmus files or directories.
        paths: Vec<PathBuf>,
        /// A policy `k=v,k=v` to search under (repeatable: a matrix).
        /// Default: each test's [expect] policies.
        #[arg(long = "policy", value_name = "POLICY")]
        policies: Vec<String>,
        /// Every schedule with at most K preemptions (a switch away from a
        /// thread that could still run). Default: the test's `[explore]
        /// preemptions`, else 2.
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(0..=64))]
        preemptions: Option<u32>,
        /// PCT (randomised priorities with D-1 change points) instead of the
        /// systematic search, for tests too big to enumerate.
        #[arg(long, value_name = "D", value_parser = clap::value_parser!(u32).range(1..=32))]
        pct: Option<u32>,
        /// PCT runs.
        #[arg(long, default_value_t = 1000, value_name = "N", requires = "pct")]
        runs: u64,
        /// Stop after N schedules (the search then says `limit`, and a
        /// `never` is inconclusive).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max_schedules: Option<u64>,
        /// Search only shard I of N of each schedule tree (1 <= I <= N);
        /// `vmm results merge` puts the shards' --json files back together.
        #[arg(long, value_name = "I/N", value_parser = parse_explore_shard)]
        shard: Option<explore::Shard>,
        /// Turn the partial-order reduction off: run every schedule within
        /// the bound (to measure what the reduction saves).
        #[arg(long)]
        no_reduction: bool,
        /// Exit with status 1 if an [expect] entry is contradicted or
        /// inconclusive, or a witness does not replay under `vmm litmus`.
        #[arg(long)]
        check: bool,
        /// Time limit per schedule; one that runs out is recorded as `timeout`
        /// (a deadlock the test allows). A schedule normally takes tens of
        /// milliseconds; the default leaves room for a loaded host, where
        /// 3 s cut off a healthy schedule (mremap on v4.19, load average 7).
        #[arg(long, default_value_t = 10_000, value_name = "MS")]
        iteration_timeout: u64,
        /// Where each violation's witness goes: TEST--POLICY.toml (a litmus
        /// file forcing the schedule) and TEST--POLICY.timeline.txt.
        #[arg(long, default_value = "witnesses", value_name = "DIR")]
        witness_dir: PathBuf,
        /// Also write the results as JSON (schema `shootdown-results/3`, kind `explore`).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Also write one herdtools7 log per policy, DIR/<policy>.log.
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        /// Show progress on stderr even when it is not a terminal.
        #[arg(long)]
        progress: bool,
        /// Search on this kernel profile (overrides the policies' `kernel=`),
        /// or `all`: one search per profile.
        #[arg(long, value_name = "PROFILE|all")]
        kernel: Option<String>,
        /// Search policies no kernel ever had (labelled hypothetical).
        #[arg(long)]
        allow_hypothetical: bool,
    },
    /// Compare two results files (`--json` of two runs: before and after a
    /// patch): per test the baseline's and the candidate's verdict, every
    /// change flagged; exit 1 if the candidate shows a new violation.
    Compare {
        /// The baseline's results.
        baseline: PathBuf,
        /// The candidate's results.
        candidate: PathBuf,
    },
    /// Work on results files.
    Results {
        #[command(subcommand)]
        command: ResultsCommand,
    },
    /// Staleness-window report, Perfetto and SVG export of a trace
    /// written by `vmm litmus --trace`.
    Trace {
        #[command(subcommand)]
        command: TraceCommand,
    },
    /// Run the guest self-tests: one PASS/FAIL/SKIP line each, then a SUMMARY.
    Selftest {
        /// Run only tests whose names start with one of these (e.g. `ipi.` or `boot.all-vcpus`).
        filter: Vec<String>,
        /// Print the guest's table of self-tests, one name a line, and run none.
        #[arg(long)]
        list: bool,
        /// Print TAP (kselftest's `TAP version 13`: `ok N name`, `not ok N
        /// name`, `# SKIP`) instead of PASS/FAIL lines.
        #[arg(long)]
        tap: bool,
    },
    /// Boot the guest with only --cmdline and exit with its status.
    Run,
    /// Measure whether this host can show a stale translation under
    /// `--tlb native`, and print a fidelity report.
    Probe {
        /// Tries per probe.
        #[arg(long, default_value_t = 1000)]
        tries: u64,
    },
    /// Print benchmark figures: boot-to-exit time, hypercall and exit costs,
    /// shootdown latency, and what a litmus iteration of S1 and S5 costs
    /// (runs/s, emulated instructions, exits, hypercalls, VMM time).
    Bench {
        /// Boots per boot-time figure.
        #[arg(long, default_value_t = 11)]
        runs: usize,
        /// Also write the figures as JSON (S1 and S5 under `s1`/`s5`).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Only these groups of figures (repeatable; default: all).
        #[arg(long, value_enum, value_name = "GROUP")]
        only: Vec<commands::bench::Group>,
        /// Show progress on stderr even when it is not a terminal.
        #[arg(long)]
        progress: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ResultsCommand {
    /// Merge the --json files of a sharded job (`vmm litmus --shard I/N`)
    /// into one with the histograms and verdicts of the unsharded run;
    /// prints its herd blocks and verdict table. Exit 1 if iterations of
    /// the job are in no input (their verdicts are then inconclusive), or
    /// with --check if an expectation fails.
    Merge {
        /// The shards' results files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the merged results here.
        #[arg(long, value_name = "OUT")]
        json: Option<PathBuf>,
        /// Also write one herdtools7 log per policy, DIR/<policy>.log.
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        /// Also exit 1 if an [expect] entry is contradicted or inconclusive
        /// over the merged runs (judge shards here, not one by one).
        #[arg(long)]
        check: bool,
    },
}

fn parse_shard(s: &str) -> Result<litmus::Shard, String> {
    s.parse()
}

fn parse_explore_shard(s: &str) -> Result<explore::Shard, String> {
    s.parse().map_err(|e: explore::ShardError| e.to_string())
}

#[derive(Subcommand, Debug)]
enum TraceCommand {
    /// Per (iteration, VA): PTE change, PTL release, invalidation, flushes,
    /// the window split at the release, stale accesses; distributions per
    /// (test, policy).
    Report {
        file: PathBuf,
        /// JSON (schema `shootdown-trace-report/1`) instead of the table.
        #[arg(long)]
        json: bool,
        /// Also windows opened during set-up and teardown.
        #[arg(long)]
        all_phases: bool,
    },
    /// Export for viewing: Perfetto/Chrome trace-event JSON, or an SVG
    /// timeline of one iteration.
    Export {
        file: PathBuf,
        /// Write Chrome/Perfetto trace-event JSON (opens in ui.perfetto.dev).
        #[arg(long, value_name = "OUT.json")]
        perfetto: Option<PathBuf>,
        /// Write an SVG timeline of one iteration.
        #[arg(long, value_name = "OUT.svg")]
        svg: Option<PathBuf>,
        /// The iteration to draw (default: the first with a stale access after a PTL release).
        #[arg(long, value_name = "N")]
        iteration: Option<u64>,
        /// The run to draw, numbered as in the report (default 0).
        #[arg(long, value_name = "R", default_value_t = 0)]
        run: usize,
    },
    /// One iteration as plain text, one column per litmus thread (and the
    /// IOMMU), Linux function names, PTL holds, flushes, invalidations,
    /// stale accesses marked `!!`: for pasting into a mailing-list reply.
    Timeline {
        file: PathBuf,
        /// The run, numbered as in the report (default 0).
        #[arg(long, value_name = "R", default_value_t = 0)]
        run: usize,
        /// The iteration (default: the first with a stale access after a PTL release).
        #[arg(long, value_name = "N")]
        iteration: Option<u64>,
        /// Characters per column.
        #[arg(long, value_name = "W", default_value_t = 38)]
        width: usize,
    },
    /// Print every record (seq, µs since the iteration start, who, kind, operands).
    Dump {
        file: PathBuf,
        #[arg(long, value_name = "R")]
        run: Option<usize>,
        #[arg(long, value_name = "N")]
        iteration: Option<u64>,
    },
    /// Runs per second of S1 and S5 with tracing off and on (the ratio is
    /// tracing's cost).
    Bench {
        /// Iterations per (test, policy) and mode.
        #[arg(long, default_value_t = 40)]
        runs: u64,
        /// Show progress on stderr even when it is not a terminal.
        #[arg(long)]
        progress: bool,
    },
}

const VM_HEADING: &str = "VM options (litmus, selftest, run, probe, bench, trace bench)";

/// The options that configure a VM (global, so valid before or after the
/// command; their help heading says which commands use them), and the
/// commands that boot none: giving one there is an error, not silently
/// ignored.
const VM_OPTIONS: &[&str] = &["guest", "vcpus", "mem", "cmdline", "timeout", "tlb", "seed", "verbose"];
const NO_VM: &[&[&str]] = &[
    &["trace", "report"],
    &["trace", "export"],
    &["trace", "dump"],
    &["trace", "timeline"],
    &["compare"],
    &["results", "merge"],
];

/// A VM option given on the command line of a command that boots no VM.
fn misplaced_vm_option(m: &clap::ArgMatches) -> Option<(String, &'static str)> {
    let (mut m, mut path) = (m, Vec::new());
    while let Some((name, sub)) = m.subcommand() {
        path.push(name.to_string());
        m = sub;
    }
    if !NO_VM.iter().any(|p| p.iter().copied().eq(path.iter().map(|s| s.as_str()))) {
        return None;
    }
    let given = VM_OPTIONS.iter().find(|o| m.value_source(o) == Some(clap::parser::ValueSource::CommandLine))?;
    Some((path.join(" "), given))
}

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    vmm::logger::init(matches.get_flag("verbose"));
    if let Some((cmd, opt)) = misplaced_vm_option(&matches) {
        eprintln!("vmm: error: --{opt} does nothing with `vmm {cmd}` (it boots no VM)");
        return ExitCode::from(status::SETUP_ERROR as u8);
    }
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match real_main(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        // Litmus diagnostics are already rendered (file:line:col, snippet, help).
        Err(Error::Litmus(d)) => {
            eprint!("{d}");
            if !d.ends_with('\n') {
                eprintln!();
            }
            ExitCode::from(status::SETUP_ERROR as u8)
        }
        Err(e) => {
            eprintln!("vmm: error: {}", chain(&e));
            ExitCode::from(status::SETUP_ERROR as u8)
        }
    }
}

fn load_image(cli: &Cli) -> Result<(Arc<[u8]>, PathBuf), Error> {
    match &cli.guest {
        None => Ok((Arc::from(vmm::DEFAULT_GUEST), PathBuf::from("<embedded guest>"))),
        Some(p) => {
            let bytes = vmm::input::read_input_file(p, vmm::input::GUEST_IMAGE_MAX, "guest image")
                .map_err(|source| ImageError::Read { path: p.clone(), source })?;
            Ok((Arc::from(bytes), p.clone()))
        }
    }
}

fn real_main(cli: Cli) -> Result<i32, Error> {
    match &cli.command {
        Some(Command::Trace { command: TraceCommand::Report { file, json, all_phases } }) => {
            return commands::trace::report(file, *json, *all_phases);
        }
        Some(Command::Trace { command: TraceCommand::Export { file, perfetto, svg, iteration, run } }) => {
            return commands::trace::export(file, perfetto.as_deref(), svg.as_deref(), *run, *iteration);
        }
        Some(Command::Trace { command: TraceCommand::Dump { file, run, iteration } }) => {
            return commands::trace::dump(file, *run, *iteration);
        }
        Some(Command::Trace { command: TraceCommand::Timeline { file, run, iteration, width } }) => {
            return commands::trace::timeline(file, *run, *iteration, *width);
        }
        Some(Command::Compare { baseline, candidate }) => return Ok(commands::results::compare(baseline, candidate)),
        Some(Command::Results { command: ResultsCommand::Merge { files, json, log_dir, check } }) => {
            return Ok(commands::results::merge(files, json.as_deref(), log_dir.as_deref(), *check));
        }
        _ => {}
    }
    let default_timeout = match cli.command {
        Some(Command::Explore { .. }) => config::MAX_TIMEOUT_SECS,
        _ => config::DEFAULT_TIMEOUT_SECS,
    };
    let timeout = config::watchdog(cli.timeout.unwrap_or(default_timeout))?;
    let (image, image_path) = load_image(&cli)?;
    let command = cli.command.unwrap_or(Command::Litmus {
        paths: vec![],
        runs: 100,
        policies: vec![],
        iotlb: None,
        pwc: None,
        json: None,
        log_dir: None,
        check: true,
        iteration_timeout: 3000,
        list_hooks: false,
        list_policies: false,
        list_kernels: false,
        kernel: None,
        allow_hypothetical: false,
        trace: None,
        trace_runs: None,
        trace_ring: None,
        shard: None,
        baseline: None,
        progress: false,
        tap: false,
    });
    match &command {
        Command::Litmus { list_hooks: true, .. } => {
            print!("{}", litmus::list_hooks());
            return Ok(status::OK);
        }
        Command::Litmus { list_policies: true, .. } => {
            print!("{}", litmus::list_policies());
            return Ok(status::OK);
        }
        Command::Litmus { list_kernels: true, .. } => {
            print!("{}", litmus::list_kernels());
            return Ok(status::OK);
        }
        _ => {}
    }
    let mut cmdline = cli.cmdline.clone();
    if cli.verbose {
        cmdline += " verbose";
    }
    let cfg = VmConfig {
        vcpus: cli.vcpus.unwrap_or(2),
        mem_mib: cli.mem,
        cmdline: cmdline.trim().to_string(),
        timeout,
        image,
        image_path,
        tlb: cli.tlb.unwrap_or(TlbModel::Lazy),
        seed: cli.seed.unwrap_or(1),
        mode: GuestMode::FromCmdline,
        mode_arg: 0,
    };
    // Unusable output paths, bad --vcpus/--mem/--guest are refused before
    // anything runs or prints.
    if let Command::Litmus { json, trace, .. } = &command {
        if let Some(p) = json {
            commands::output::check_output_path("--json", p)?;
        }
        if let Some(p) = trace {
            commands::output::check_output_path("--trace", p)?;
        }
    }
    if let Command::Bench { json: Some(p), .. } = &command {
        commands::output::check_output_path("--json", p)?;
    }
    vm::validate(&cfg)?;
    match command {
        Command::Trace { command: TraceCommand::Bench { runs, progress } } => {
            commands::trace::bench(&cfg, runs.max(1), progress)?;
            Ok(status::OK)
        }
        Command::Trace { .. } | Command::Compare { .. } | Command::Results { .. } => Ok(status::OK),
        Command::Litmus {
            paths,
            runs,
            policies,
            iotlb,
            pwc,
            json,
            log_dir,
            check,
            iteration_timeout,
            trace,
            trace_runs,
            trace_ring,
            shard,
            baseline,
            progress,
            tap,
            kernel,
            allow_hypothetical,
            ..
        } => {
            let parse = |what: &str, p: &str| Policy::parse(p).map_err(|e| Error::Litmus(format!("{what} {p}: {e}")));
            let policies = policies.iter().map(|p| parse("--policy", p)).collect::<Result<Vec<_>, _>>()?;
            let baseline = baseline.as_deref().map(|b| parse("--baseline", b)).transpose()?;
            let args = LitmusArgs {
                paths,
                runs,
                policies,
                json,
                log_dir,
                check,
                tlb: cli.tlb,
                iotlb,
                pwc,
                seed: cli.seed,
                vcpus: cli.vcpus,
                iteration_timeout: Duration::from_millis(iteration_timeout.max(1)),
                trace,
                trace_runs,
                trace_ring,
                shard,
                baseline,
                force_progress: progress,
                progress: Default::default(),
                tap,
                measure: false,
                kernel,
                allow_hypothetical,
            };
            commands::litmus::run(&cfg, &args)
        }
        Command::Explore {
            paths,
            policies,
            preemptions,
            pct,
            runs,
            max_schedules,
            shard,
            no_reduction,
            check,
            iteration_timeout,
            witness_dir,
            json,
            log_dir,
            progress,
            kernel,
            allow_hypothetical,
        } => {
            let policies = policies
                .iter()
                .map(|p| Policy::parse(p).map_err(|e| Error::Litmus(format!("--policy {p}: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let reduction = if no_reduction { explore::Reduction::None } else { explore::Reduction::SleepSets };
            let strategy = match pct {
                Some(depth) => explore::Strategy::Pct { depth, runs },
                None => explore::Strategy::Bounded { preemptions, reduction },
            };
            let args = commands::explore::ExploreArgs {
                paths,
                policies,
                strategy,
                max_schedules,
                shard: shard.unwrap_or_default(),
                seed: cli.seed.unwrap_or(1),
                check,
                iteration_timeout: Duration::from_millis(iteration_timeout.max(1)),
                witness_dir,
                json,
                log_dir,
                force_progress: progress,
                kernel,
                allow_hypothetical,
            };
            commands::explore::run(&cfg, &args)
        }
        Command::Probe { tries } => {
            commands::probe::run(&cfg, tries.max(1))?;
            Ok(status::OK)
        }
        Command::Bench { runs, json, only, progress } => {
            commands::bench::run(&cfg, runs.max(1), &only, json.as_deref(), progress)?;
            Ok(status::OK)
        }
        Command::Selftest { list: true, .. } => {
            for name in commands::selftest::list(&cfg)? {
                println!("{name}");
            }
            Ok(status::OK)
        }
        Command::Selftest { filter, tap, .. } => commands::selftest::run(&cfg, &What::Selftest { filter, tap }, true),
        Command::Run => commands::selftest::run(&cfg, &What::Cmdline, true),
    }
}
