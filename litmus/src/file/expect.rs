//! `[expect]`: the expected verdict per policy, checked for overlaps.

use super::{span, text_map, Checker, RawFile};
use crate::ast::{Expectation, Thread, Verdict};
use crate::policy::{Key, Policy, KEYS};
use abi::limits::MAX_EXPECTATIONS;
use abi::litmus::Op;

pub(super) fn check_expect(c: &mut Checker<'_>, raw: &RawFile, threads: &[Thread]) -> Vec<Expectation> {
    // Operations younger than some profile (uffd_wp): a kernel before it
    // cannot run the test at all.
    let mut young: Vec<(String, abi::policy::Release)> = Vec::new();
    for t in threads {
        for s in &t.code {
            s.walk(&mut |s| {
                if let Some(r) = crate::kernels::since(s) {
                    let what = if s.op == Op::Madvise { "madvise free".to_string() } else { s.op.name().to_string() };
                    if !young.iter().any(|(w, _)| *w == what) {
                        young.push((what, r));
                    }
                }
            });
        }
    }
    let mut items: Vec<_> = raw.expect.iter().collect();
    items.sort_by_key(|(k, _)| k.span().start);
    if let Some((k, _)) = items.get(MAX_EXPECTATIONS) {
        c.error(span(k), format!("too many [expect] entries: a test has at most {MAX_EXPECTATIONS}"));
        items.truncate(MAX_EXPECTATIONS);
    }
    let mut out: Vec<Expectation> = Vec::new();
    for (k, v) in items {
        let key = k.get_ref();
        let map = text_map(c.file, span(k), key);
        let policy = match Policy::parse(key) {
            Ok(p) => Some(p),
            Err(e) => {
                let (s, en) = (map.file_offset(e.start), map.file_offset(e.end));
                let d = c.error((s, en), format!("in [expect] policy: {}", e.message));
                d.notes.extend(e.notes);
                None
            }
        };
        let verdict = Verdict::from_name(v.get_ref());
        if verdict.is_none() {
            c.error(span(v), format!("invalid verdict \"{}\"", v.get_ref()))
                .notes
                .push("expected one of: never, sometimes, always".into());
        }
        if let (Some(policy), Some(verdict)) = (policy, verdict) {
            // Compare what the keys resolve to, not how they are written:
            // `default` and `flush=pending` are one policy, and an entry that
            // leaves `tlb` open overlaps one that names it.
            if let Some(prev) = out.iter().find(|e| expectations_overlap(&e.policy, &policy)) {
                let msg = if prev.verdict == verdict {
                    format!("[expect] `{key}` is the same policy as `{}`", prev.key)
                } else {
                    format!(
                        "[expect] `{key}` = \"{}\" contradicts `{}` = \"{}\": both resolve to the same policy",
                        verdict.name(),
                        prev.key,
                        prev.verdict.name()
                    )
                };
                let d = c.error(span(k), msg);
                d.notes.push(format!("both mean: {}", full_policy_text(&policy)));
                continue;
            }
            // Every kernel it covers must have been real, and have the test's operations.
            let mut bad = false;
            for kern in policy.kernels() {
                let p = policy.on_kernel(kern);
                let reality = p.reality();
                if reality.is_hypothetical() && !c.opts.allow_hypothetical {
                    let d = c.error(span(k), format!("[expect] `{key}` is no kernel that existed"));
                    d.notes.push(format!("on {}: {reality}", kern.name()));
                    d.notes.push("run with --allow-hypothetical to accept it (labelled hypothetical)".into());
                    bad = true;
                    break;
                }
                if let Some((what, since)) = young.iter().find(|(_, r)| kern.release() < *r) {
                    c.error(span(k), format!("[expect] `{key}`: {} has no `{what}` (since {since})", kern.name()));
                    bad = true;
                    break;
                }
            }
            if bad {
                continue;
            }
            // Entries that cover one run must agree.
            let runs: Vec<Policy> = policy.kernels().into_iter().map(|kern| policy.on_kernel(kern)).collect();
            if let Some(prev) =
                out.iter().find(|e| e.verdict != verdict && runs.iter().any(|r| e.policy.expectation_applies(r)))
            {
                let msg = format!(
                    "[expect] `{key}` = \"{}\" contradicts `{}` = \"{}\": both cover one kernel",
                    verdict.name(),
                    prev.key,
                    prev.verdict.name()
                );
                c.error(span(k), msg);
                continue;
            }
            out.push(Expectation { key: key.clone(), policy, verdict });
        }
    }
    out
}

/// Would a run match both `[expect]` policies? Every kernel-behaviour key
/// must resolve to the same value; the cache models `tlb`/`iotlb` only
/// separate two entries when both name them (see
/// [`Policy::expectation_applies`]).
/// `kernel` ranges are compared kernel by kernel by the caller.
pub(super) fn expectations_overlap(a: &Policy, b: &Policy) -> bool {
    if a.kernel_range().is_some() || b.kernel_range().is_some() {
        return false;
    }
    KEYS.iter().all(|k| {
        let open = matches!(k.key, Key::Tlb | Key::Iotlb) && (!a.is_explicit(k.key) || !b.is_explicit(k.key));
        open || k.key == Key::Kernel || a.get(k.key) == b.get(k.key)
    })
}

pub(super) fn full_policy_text(p: &Policy) -> String {
    p.full().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}
