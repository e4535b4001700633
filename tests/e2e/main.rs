//! End-to-end tests: boot the real guest on real KVM through the `vmm`
//! binary, and check bad input is refused with a clear message and status 2.
//!
//! A custom harness (libtest-mimic) so that, where `/dev/kvm` is missing or
//! not usable, the KVM tests are reported as *ignored* with the reason
//! printed loudly — never as passed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use libtest_mimic::{Arguments, Failed, Trial};

mod explore;
mod frontend;
mod hostile;
mod litmus;
mod results;
mod trace;

const VMM: &str = env!("CARGO_BIN_EXE_vmm");

fn vmm(args: &[&str]) -> Output {
    Command::new(VMM).args(args).output().expect("cannot run the vmm binary")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Why KVM tests cannot run here, if they cannot.
fn kvm_unavailable() -> Option<String> {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => None,
        Err(e) => Some(format!("/dev/kvm not usable: {e}")),
    }
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(msg().into())
    }
}

/// The guest's table of self-tests, as the guest itself names them
/// (`vmm selftest --list`): the one list the tests below derive from.
fn all_tests() -> &'static [String] {
    static LIST: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        let o = vmm(&["selftest", "--list"]);
        assert_eq!(o.status.code(), Some(0), "vmm selftest --list failed: {}", text(&o).1);
        text(&o).0.lines().map(str::to_string).collect()
    })
}

/// The self-tests pass on `vcpus` vCPUs: only PASS lines, a SUMMARY with 0
/// failures, exit status 0, and every test of the guest's table present.
fn selftest_passes(vcpus: u32, extra: &[&str]) -> Result<(), Failed> {
    selftest_result(vcpus, extra, &[])
}

/// Every self-test passes, except `skipped`, which must be reported as SKIP.
fn selftest_result(vcpus: u32, extra: &[&str], skipped: &[&str]) -> Result<(), Failed> {
    let n = vcpus.to_string();
    let mut args = vec!["--vcpus", &n];
    args.extend_from_slice(extra);
    args.push("selftest");
    let o = vmm(&args);
    let (out, err) = text(&o);
    let ctx = || format!("vmm {args:?}\nstatus: {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(0), || format!("non-zero exit\n{}", ctx()))?;
    let lines: Vec<&str> = out.lines().collect();
    let summary = lines.last().copied().unwrap_or("");
    ensure(summary.starts_with("SUMMARY: ") && summary.contains(" 0 failures"), || format!("bad summary\n{}", ctx()))?;
    let all = all_tests();
    ensure(all.len() >= 30, || format!("the guest lists only {} self-tests", all.len()))?;
    for t in all {
        let want = if skipped.contains(&t.as_str()) { format!("SKIP {t}: ") } else { format!("PASS {t}") };
        ensure(lines.iter().any(|l| l.starts_with(&want)), || format!("missing {want}\n{}", ctx()))?;
    }
    ensure(lines.len() == all.len() + 1, || format!("unexpected lines\n{}", ctx()))?;
    Ok(())
}

fn bad_input(args: &[&str], want_in_stderr: &[&str]) -> Result<(), Failed> {
    let o = vmm(args);
    let (out, err) = text(&o);
    let ctx = || format!("vmm {args:?}\nstatus: {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(2), || format!("expected exit status 2\n{}", ctx()))?;
    ensure(err.lines().count() == 1, || format!("expected exactly one line on stderr\n{}", ctx()))?;
    for w in want_in_stderr {
        ensure(err.contains(w), || format!("stderr lacks {w:?}\n{}", ctx()))?;
    }
    ensure(!out.contains("PASS") && !out.contains("SUMMARY"), || {
        format!("the guest must not have started\n{}", ctx())
    })?;
    Ok(())
}

/// The guest misbehaves on its last vCPU; the VMM reports vCPU, RIP and
/// cause on stderr and exits with `status`, without panicking.
fn misbehaviour(kind: &str, status: i32, want: &[&str]) -> Result<(), Failed> {
    let mode = format!("mode=misbehave.{kind}");
    let o = vmm(&["--vcpus", "3", "--timeout", "3", "run", "--cmdline", &mode]);
    let (out, err) = text(&o);
    let ctx = || format!("{mode}\nstatus: {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(status), || format!("expected exit status {status}\n{}", ctx()))?;
    ensure(!err.contains("panicked"), || format!("the VMM panicked\n{}", ctx()))?;
    for w in want {
        ensure(err.contains(w), || format!("stderr lacks {w:?}\n{}", ctx()))?;
    }
    Ok(())
}

fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shootdown-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A minimal ELF64 header with the given class/machine/type and one PT_LOAD.
fn fake_elf(class: u8, machine: u16, etype: u16, paddr: u64, memsz: u64) -> Vec<u8> {
    let mut b = vec![0u8; 64 + 56];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = class;
    b[5] = 1;
    b[6] = 1;
    b[16..18].copy_from_slice(&etype.to_le_bytes());
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b[24..32].copy_from_slice(&paddr.to_le_bytes()); // entry
    b[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = &mut b[64..];
    ph[..4].copy_from_slice(&1u32.to_le_bytes());
    ph[16..24].copy_from_slice(&paddr.to_le_bytes());
    ph[24..32].copy_from_slice(&paddr.to_le_bytes());
    ph[40..48].copy_from_slice(&memsz.to_le_bytes());
    b
}

/// A 64-bit image whose every vCPU writes exit status 0 at once: a guest
/// that claims success having run nothing.
fn exit_zero_elf() -> Vec<u8> {
    let base = 0x40_0000u64;
    #[rustfmt::skip]
    let code: [u8; 10] = [
        0x66, 0xba, 0x11, 0x05,             // mov dx, 0x511
        0x31, 0xc0,                         // xor eax, eax
        0xef,                               // out dx, eax
        0xf4,                               // hlt
        0xeb, 0xfd,                         // jmp hlt
    ];
    let mut b = fake_elf(2, 62, 2, base, 0x1000);
    let code_off = 0x200u64;
    b[64 + 8..64 + 16].copy_from_slice(&code_off.to_le_bytes());
    b[64 + 32..64 + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    b.resize(0x400, 0);
    b[code_off as usize..code_off as usize + code.len()].copy_from_slice(&code);
    b
}

/// An ELF with a PVH note (`XEN_ELFNOTE_PHYS32_ENTRY`) whose 32-bit entry
/// checks `[ebx]` is the `hvm_start_info` magic and exits 0 (else 7).
fn pvh_elf() -> Vec<u8> {
    let base = 0x40_0000u64;
    #[rustfmt::skip]
    let code: [u8; 29] = [
        0x8b, 0x03,                         // mov eax, [ebx]
        0x3d, 0x78, 0xc5, 0x6e, 0x33,       // cmp eax, 0x336ec578
        0x75, 0x09,                         // jne bad
        0x66, 0xba, 0x11, 0x05,             // mov dx, 0x511
        0x31, 0xc0,                         // xor eax, eax
        0xef,                               // out dx, eax
        0xeb, 0xfe,                         // jmp $
        0x66, 0xba, 0x11, 0x05,             // bad: mov dx, 0x511
        0xb8, 0x07, 0x00, 0x00, 0x00,       // mov eax, 7
        0xef,                               // out dx, eax
        0xeb,                               // (jmp $, first byte; second below)
    ];
    let mut b = fake_elf(2, 62, 2, base, 0x1000);
    b[56..58].copy_from_slice(&2u16.to_le_bytes()); // two program headers
    let code_off = 0x200u64;
    let note_off = 0x300u64;
    // PT_LOAD: file offset and size of the code.
    b[64 + 8..64 + 16].copy_from_slice(&code_off.to_le_bytes());
    b[64 + 32..64 + 40].copy_from_slice(&(code.len() as u64 + 1).to_le_bytes());
    // PT_NOTE header.
    let mut ph = vec![0u8; 56];
    ph[..4].copy_from_slice(&4u32.to_le_bytes());
    ph[8..16].copy_from_slice(&note_off.to_le_bytes());
    ph[32..40].copy_from_slice(&20u64.to_le_bytes());
    ph[40..48].copy_from_slice(&20u64.to_le_bytes());
    ph[48..56].copy_from_slice(&4u64.to_le_bytes());
    b.extend_from_slice(&ph);
    b.resize(0x400, 0);
    b[code_off as usize..code_off as usize + code.len()].copy_from_slice(&code);
    b[code_off as usize + code.len()] = 0xfe;
    let note = &mut b[note_off as usize..note_off as usize + 20];
    note[..4].copy_from_slice(&4u32.to_le_bytes()); // namesz
    note[4..8].copy_from_slice(&4u32.to_le_bytes()); // descsz
    note[8..12].copy_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note[12..16].copy_from_slice(b"Xen\0");
    note[16..20].copy_from_slice(&(base as u32).to_le_bytes());
    b
}

fn main() {
    let args = Arguments::from_args();
    let no_kvm = kvm_unavailable();
    if let Some(reason) = &no_kvm {
        eprintln!("\n!!!! SKIPPING the KVM end-to-end tests: {reason} !!!!\n");
    }
    let kvm_trial = |name: &str, f: fn() -> Result<(), Failed>| {
        Trial::test(name.to_string(), f).with_ignored_flag(no_kvm.is_some())
    };
    let mut trials = vec![
        kvm_trial("boot::selftest_1_vcpu", || {
            // Everything that needs a second CPU is reported as SKIP, with its reason.
            let two_cpus = &[
                "tlb.lazy.remote-stale-until-shootdown",
                "tlb.cpl3.remote-stale-until-shootdown",
                "tlb.cpl3.shootdown-handled-at-cpl3",
                "mm.madvise.free",
                "mm.cow",
                "mm.ksm",
                "mm.migrate",
                "mm.mkclean",
                "mm.reclaim.swap-in",
                "mm.mremap",
                "mm.zap.nested-check",
                "mm.policy.all-combinations-run",
            ];
            selftest_result(1, &[], two_cpus)
        }),
        kvm_trial("boot::selftest_2_vcpus", || selftest_passes(2, &[])),
        kvm_trial("boot::selftest_4_vcpus", || selftest_passes(4, &[])),
        kvm_trial("tlb::lazy_4_vcpus", || selftest_passes(4, &["--tlb", "lazy"])),
        kvm_trial("tlb::evict_half_4_vcpus", || selftest_passes(4, &["--tlb", "evict:0.5", "--seed", "1"])),
        kvm_trial("tlb::evict_full_2_vcpus", || selftest_passes(2, &["--tlb", "evict:1.0", "--seed", "9"])),
        kvm_trial("tlb::native_skips_model_tests", || {
            selftest_result(
                2,
                &["--tlb", "native"],
                &[
                    "mm.zap.nested-check",
                    "tlb.lazy.stale-until-flush",
                    "tlb.lazy.remote-stale-until-shootdown",
                    "tlb.evict.coherent",
                    "tlb.stray-store.reported",
                    "tlb.cpl3.stale-until-flush",
                    "tlb.cpl3.remote-stale-until-shootdown",
                    "tlb.cpl3.shootdown-handled-at-cpl3",
                    "tlb.cpl3.evict.coherent",
                ],
            )
        }),
        kvm_trial("tlb::lazy_is_deterministic", || {
            let first = vmm(&["--vcpus", "4", "--tlb", "lazy", "selftest", "tlb."]);
            for _ in 0..4 {
                let again = vmm(&["--vcpus", "4", "--tlb", "lazy", "selftest", "tlb."]);
                ensure(again.stdout == first.stdout && again.status.code() == Some(0), || {
                    format!("run differs:\n{}\nvs\n{}", text(&first).0, text(&again).0)
                })?;
            }
            Ok(())
        }),
        kvm_trial("tlb::probe_reports_fidelity", || {
            let o = vmm(&["probe", "--tries", "20"]);
            let (out, err) = text(&o);
            let ctx = || format!("status {:?}\n{out}\n{err}", o.status.code());
            ensure(o.status.code() == Some(0), ctx)?;
            ensure(out.lines().nth(1).is_some_and(|l| l.starts_with("host: ")), ctx)?;
            for p in ["same vCPU, guest PTE store", "other vCPU, guest PTE store", "same vCPU, VMM-side PTE write"] {
                let line = out.lines().find(|l| l.contains(p)).unwrap_or("");
                ensure(line.contains(" / 20 "), || format!("probe {p:?} did not run 20 tries\n{}", ctx()))?;
            }
            ensure(out.lines().any(|l| l.starts_with("fidelity: native TLB staleness ")), ctx)
        }),
        kvm_trial("bad_input::bad_tlb_model", || {
            let o = vmm(&["--tlb", "evict:1.5"]);
            let (_, err) = text(&o);
            ensure(o.status.code() == Some(2) && err.contains("P must be between 0 and 1"), || err.clone())
        }),
        kvm_trial("misbehave::stray_page_table_store", || {
            misbehaviour(
                "stray-pte-store",
                3,
                &["vCPU 2 at RIP 0x", "stray 8-byte store of 0x777", "page-table memory at GPA 0x3"],
            )
        }),
        kvm_trial("boot::filter_selects_tests", || {
            let o = vmm(&["selftest", "ipi."]);
            let (out, _) = text(&o);
            ensure(out.trim() == "PASS ipi.all-pairs\nSUMMARY: 1 tests, 0 failures, 0 skipped", || out.clone())
        }),
        kvm_trial("boot::failed_check_is_reported", || {
            let o = vmm(&["--cmdline", "selftest.inject-failure", "selftest"]);
            let (out, err) = text(&o);
            let ctx = || format!("status {:?}\n{out}\n{err}", o.status.code());
            ensure(o.status.code() == Some(1), || format!("expected exit status 1\n{}", ctx()))?;
            ensure(out.contains("\nFAIL selftest.injected-failure: src/selftest.rs:"), ctx)?;
            ensure(out.contains(": injected failure: answer is 41\n"), ctx)?;
            ensure(out.contains("PASS ipi.all-pairs"), ctx)?;
            let want = format!("SUMMARY: {} tests, 1 failures, 0 skipped", all_tests().len() + 1);
            ensure(out.trim_end().ends_with(&want), ctx)
        }),
        kvm_trial("misbehave::hang_dumps_every_vcpu", || {
            misbehaviour("hang", 4, &["watchdog", "vCPU   0: RIP 0x", "vCPU   1: RIP 0x", "vCPU   2: RIP 0x", "CR3 0x"])
        }),
        kvm_trial("misbehave::triple_fault", || misbehaviour("triple-fault", 3, &["vCPU 2 at RIP 0x", "triple fault"])),
        kvm_trial("misbehave::bad_hypercall", || {
            misbehaviour("bad-hypercall", 3, &["vCPU 2 at RIP 0x", "bad hypercall: unknown op 0xdead"])
        }),
        kvm_trial("misbehave::stray_mmio", || {
            misbehaviour("stray-mmio", 3, &["vCPU 2 at RIP 0x", "stray 8-byte write of 0x5a5a", "0xd0000000"])
        }),
        kvm_trial("misbehave::unhandled_page_fault", || {
            misbehaviour("page-fault", 3, &["vCPU 2 at RIP 0x", "#PF (vector 14)", "CR2 0x8000000040"])
        }),
        kvm_trial("misbehave::guest_panic_has_file_line", || {
            misbehaviour("panic", 3, &["vCPU 2 at RIP 0x", "src/misbehave.rs:", "deliberate panic"])
        }),
        kvm_trial("boot::pvh_note_is_honoured", || {
            let p = scratch("pvh", &pvh_elf());
            let o = vmm(&["--guest", p.to_str().unwrap(), "--vcpus", "2", "--timeout", "10", "run"]);
            let (out, err) = text(&o);
            ensure(o.status.code() == Some(0), || {
                format!("PVH image did not see hvm_start_info in ebx: status {:?}\n{out}\n{err}", o.status.code())
            })
        }),
        kvm_trial("bad_input::vcpus_zero", || bad_input(&["--vcpus", "0"], &["--vcpus 0", "at least 1"])),
        kvm_trial("bad_input::vcpus_too_many", || bad_input(&["--vcpus", "100000"], &["--vcpus 100000", "at most"])),
        kvm_trial("bad_input::mem_too_small", || bad_input(&["--mem", "8"], &["--mem 8 MiB", "between"])),
        kvm_trial("bad_input::not_elf", || {
            let p = scratch("not-elf", b"#!/bin/sh\necho hi\n");
            bad_input(&["--guest", p.to_str().unwrap()], &["not an ELF file"])
        }),
        kvm_trial("bad_input::elf32", || {
            let p = scratch("elf32", &fake_elf(1, 3, 2, 0x40_0000, 0x1000));
            bad_input(&["--guest", p.to_str().unwrap()], &["32-bit ELF"])
        }),
        kvm_trial("bad_input::not_x86_64", || {
            let p = scratch("aarch64", &fake_elf(2, 183, 2, 0x40_0000, 0x1000));
            bad_input(&["--guest", p.to_str().unwrap()], &["AArch64", "not x86-64"])
        }),
        kvm_trial("bad_input::does_not_fit", || {
            let p = scratch("huge", &fake_elf(2, 62, 2, 0x40_0000, 1 << 30));
            bad_input(&["--guest", p.to_str().unwrap(), "--mem", "96"], &["does not fit in guest memory of 96 MiB"])
        }),
        kvm_trial("bad_input::outside_kernel_window", || {
            let p = scratch("low", &fake_elf(2, 62, 2, 0x1000, 0x1000));
            bad_input(&["--guest", p.to_str().unwrap()], &["outside the kernel window"])
        }),
        // The image is read before /dev/kvm is opened, so this runs everywhere.
        Trial::test("bad_input::missing_file", || {
            bad_input(&["--guest", "/nonexistent/guest.elf"], &["/nonexistent/guest.elf", "No such file"])
        }),
    ];
    for (name, f) in hostile::TRIALS {
        trials.push(kvm_trial(name, *f));
    }
    for (name, f) in hostile::NO_KVM_TRIALS {
        trials.push(Trial::test(*name, *f));
    }
    trials.push(kvm_trial("litmus::default_command_runs_catalogue", litmus::default_command_runs_catalogue));
    trials.push(kvm_trial("litmus::check_catalogue_dir", litmus::check_catalogue_dir));
    trials.push(kvm_trial("litmus::stress_no_crash_no_leak", litmus::stress_no_crash_no_leak));
    trials.push(kvm_trial("litmus::s6_rmap_before_flush_evicted_store", litmus::s6_rmap_before_flush_evicted_store));
    // The longer job: opt in with `-- --ignored` (see README, "Longer runs").
    trials.push(
        Trial::test("litmus::long::never_10k_runs_per_scenario", litmus::never_10k_runs_per_scenario)
            .with_ignored_flag(true),
    );
    trials.push(kvm_trial("litmus::examples", litmus::examples));
    trials.push(kvm_trial("litmus::timeout_is_recorded_and_run_goes_on", litmus::timeout_is_recorded_and_run_goes_on));
    trials.push(kvm_trial("litmus::json_and_seeded_rerun", litmus::json_and_seeded_rerun));
    trials.push(kvm_trial("litmus::evidence::all_timed_out_is_inconclusive", litmus::all_timed_out_is_inconclusive));
    trials.push(kvm_trial("litmus::evidence::guest_stopping_early_is_an_error", || {
        litmus::guest_stopping_early_is_an_error(&scratch("exit-zero", &exit_zero_elf()))
    }));
    trials.push(Trial::test("litmus::evidence::zero_runs_refused", litmus::zero_runs_refused));
    trials.push(Trial::test("litmus::kernels::list_kernels", litmus::list_kernels));
    trials.push(Trial::test("litmus::kernels::hypothetical_refused", litmus::hypothetical_refused));
    trials.push(kvm_trial("litmus::kernels::kernel_all_check", litmus::kernel_all_check));
    trials.push(kvm_trial(
        "results::four_merged_shards_equal_the_unsharded_run",
        results::four_merged_shards_equal_the_unsharded_run,
    ));
    trials.push(kvm_trial("results::baseline_and_compare", results::baseline_and_compare));
    trials.push(kvm_trial("explore::s1_found_and_witness_replays", explore::s1_found_and_witness_replays));
    trials.push(kvm_trial("explore::same_seed_same_search", explore::same_seed_same_search));
    trials
        .push(kvm_trial("explore::shards_merge_into_the_single_search", explore::shards_merge_into_the_single_search));
    trials.push(kvm_trial("explore::limit_makes_never_inconclusive", explore::limit_makes_never_inconclusive));
    trials.push(kvm_trial("explore::pct_reports_its_bound", explore::pct_reports_its_bound));
    trials.push(kvm_trial("explore::reduction_keeps_states_and_witness", explore::reduction_keeps_states_and_witness));
    trials.push(Trial::test("explore::litmus_leaves_explore_tests", explore::litmus_leaves_explore_tests));
    // Opt-in (several minutes): the acceptance run of issue 15.
    trials.push(kvm_trial("explore::catalogue_check", explore::catalogue_check).with_ignored_flag(true));
    trials.push(kvm_trial("results::log_dir_one_log_per_policy", results::log_dir_one_log_per_policy));
    trials.push(kvm_trial("results::tap_for_kernel_ci", results::tap_for_kernel_ci));
    trials.push(kvm_trial("results::progress_on_stderr", results::progress_on_stderr));
    trials.push(kvm_trial("selftest::filter_matching_nothing_is_an_error", || {
        let o = vmm(&["selftest", "no-such-test."]);
        let (out, err) = text(&o);
        ensure(o.status.code() == Some(2), || format!("want exit 2, got {:?}\n{out}\n{err}", o.status.code()))?;
        ensure(err.contains("no self-test name starts with `no-such-test.`"), || err.clone())?;
        ensure(!out.contains("SUMMARY"), || out.clone())
    }));
    trials.push(kvm_trial("trace::s1_device_windows", trace::s1_device_windows));
    trials.push(kvm_trial("trace::s1_primary_windows", trace::s1_primary_windows));
    trials.push(kvm_trial("trace::trace_runs_limits", trace::trace_runs_limits));
    trials.push(kvm_trial("trace::full_ring_blocks_no_loss", trace::full_ring_blocks_no_loss));
    trials.push(kvm_trial("trace::perfetto_parses_back", trace::perfetto_parses_back));
    trials.push(kvm_trial("trace::svg_well_formed", trace::svg_well_formed));
    trials.push(kvm_trial("trace::damaged_files", trace::damaged_files));
    // S5 needs CoW in the mm model; until it is there these are reported
    // as ignored (with the reason), never as passed.
    let no_cow = if no_kvm.is_none() { trace::cow_missing() } else { None };
    if let Some(why) = &no_cow {
        eprintln!("\n!!!! IGNORING trace::s5_*: {why} !!!!\n");
    }
    for (name, f) in [
        ("trace::s5_end_after_release", trace::s5_end_after_release as fn() -> Result<(), Failed>),
        ("trace::s5_ptl_no_after_release", trace::s5_ptl_no_after_release),
        ("trace::s5_end_timeline", trace::s5_end_timeline),
    ] {
        trials.push(Trial::test(name, f).with_ignored_flag(no_kvm.is_some() || no_cow.is_some()));
    }
    // Checked before any VM exists: these run everywhere.
    let malformed: &[(&str, &[&str])] = &[
        ("badtoml.toml", &["badtoml.toml:2:11", "invalid TOML"]),
        ("unknown-op.toml", &["unknown-op.toml:7:1", "unknown operation `frobnicate`", "valid"]),
        ("unknown-hook.toml", &["unknown-hook.toml:6:23", "unknown hook `after_lunch`", "after_ptl_release"]),
        ("bad-cond.toml", &["bad-cond.toml:10:19", "expected a number", "found `==`"]),
        ("undeclared-reg.toml", &["undeclared-reg.toml:9:12", "never writes r5"]),
        (
            "unknown-policy.toml",
            &["unknown-policy.toml:12:8", "`sometimes-later`", "pending, per-ptl, generation, ptl"],
        ),
        (
            "contradictory-expect.toml",
            &["contradictory-expect.toml:15:1", "`default` = \"sometimes\" contradicts `flush=pending` = \"never\""],
        ),
    ];
    for &(file, want) in malformed {
        let name = format!("litmus::malformed::{}", file.trim_end_matches(".toml"));
        trials.push(Trial::test(name, move || litmus::malformed(file, want)));
    }
    trials.extend(frontend::trials(&kvm_trial));
    trials.push(Trial::test("litmus::list_hooks", || {
        let o = vmm(&["litmus", "--list-hooks"]);
        let (out, _) = text(&o);
        ensure(o.status.code() == Some(0) && out.lines().count() == abi::litmus::Hook::ALL.len(), || out.clone())?;
        ensure(out.lines().any(|l| l.starts_with("after_ptl_release ")), || out.clone())
    }));
    if Path::new("/dev/kvm").exists() {
        trials.push(kvm_trial("bad_input::exit_status_is_2_not_panic", || {
            let p = scratch("empty", b"");
            bad_input(&["--guest", p.to_str().unwrap()], &["not an ELF file"])
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}
