use super::*;

#[test]
fn defaults_and_canonical() {
    let p = Policy::parse("").unwrap();
    assert_eq!(p.canonical(), "default");
    assert_eq!(p.get(Key::Flush), "pending");
    assert_eq!(p.get(Key::Kernel), "mainline");
    let p = Policy::parse(" madv-nested-check=off , flush=pending").unwrap();
    assert_eq!(p.canonical(), "flush=pending,madv-nested-check=off");
    assert_eq!(p.abi.byte(Key::MadvNestedCheck), 0);
    let p = Policy::parse("tlb=evict:0.25,iotlb=evict:1").unwrap();
    assert_eq!(p.abi.tlb_evict_ppm, 250_000);
    assert_eq!(p.abi.iotlb_evict_ppm, 1_000_000);
    assert_eq!(p.canonical(), "tlb=evict:0.25,iotlb=evict:1");
    assert_eq!(p.canonical_mm(), "default");
    assert_eq!(Policy::parse(&p.canonical()).unwrap(), p);
}

#[test]
fn kernel_sets_every_key_and_explicit_keys_override_it_in_any_order() {
    let a = Policy::parse("kernel=v4.9").unwrap();
    assert_eq!(a.get(Key::MadvNestedCheck), "off");
    assert_eq!(a.get(Key::Notifier), "page");
    let b = Policy::parse("madv-nested-check=on,kernel=v4.9").unwrap();
    let c = Policy::parse("kernel=v4.9,madv-nested-check=on").unwrap();
    assert_eq!(b.abi, c.abi);
    assert_eq!(b.get(Key::MadvNestedCheck), "on");
    assert_eq!(c.canonical(), "kernel=v4.9,madv-nested-check=on");
    // The hardware stays as given.
    let d = Policy::parse("tlb=evict:0.5,kernel=v5.4").unwrap();
    assert_eq!(d.get(Key::Tlb), "evict:0.5");
    assert_eq!(d.get(Key::WalkCache), "x86");
}

#[test]
fn ranges_cover_profiles_and_apply_to_each() {
    let e = Policy::parse("kernel=v4.14..mainline").unwrap();
    assert_eq!(e.kernels().len(), 7);
    assert_eq!(e.kernel(), Profile::Mainline);
    assert_eq!(e.canonical(), "kernel=v4.14..mainline");
    assert!(e.expectation_applies(&Policy::profile(Profile::V5_4)));
    assert!(!e.expectation_applies(&Policy::profile(Profile::V4_9)));
    assert!(Policy::parse("kernel=v5.4..v4.9").is_err());
}

#[test]
fn reality_of_profiles_commits_proposals_and_mixtures() {
    for p in profiles() {
        let r = Policy::profile(*p).reality();
        assert_eq!(r, Reality::Profile(*p), "{}: {r}", p.name());
    }
    // 99baac21e458 reverted on mainline: one commit.
    let r = Policy::parse("madv-nested-check=off").unwrap().reality();
    assert!(matches!(r, Reality::OneCommit { key: Key::MadvNestedCheck, .. }), "{r}");
    // e7ad6c2a4b1a applied to v6.6 is mainline's behaviour: a real kernel.
    assert!(!Policy::parse("kernel=v6.6,nested-range=full").unwrap().reality().is_hypothetical());
    // The 6.6 notifier on a 4.14: many commits away.
    let r = Policy::parse("kernel=v4.14,notifier=tlb-flush").unwrap().reality();
    assert!(r.is_hypothetical(), "{r}");
    assert!(r.to_string().contains("notifier=tlb-flush"), "{r}");
    // The VT-d overflow needs the 6.6 placement.
    let r = Policy::parse("kernel=v6.1,nested-range=sentinel").unwrap().reality();
    assert!(r.is_hypothetical(), "{r}");
    // A proposal on a real kernel is labelled, not refused.
    let r = Policy::parse("kernel=v6.6,migrc=on,migrc-upgrade=wp-only").unwrap().reality();
    assert!(matches!(r, Reality::Proposal { .. }), "{r}");
    assert_eq!(Policy::parse("flush=per-ptl").unwrap().label(), Some("proposal"));
    // A model value is no kernel.
    assert!(Policy::parse("notifier=none").unwrap().reality().is_hypothetical());
    // migrc-upgrade without migrc.
    assert!(Policy::parse("migrc-upgrade=wp-only").unwrap().reality().is_hypothetical());
}

#[test]
fn errors_list_valid_names() {
    let e = Policy::parse("flush=pending,flsh=ptl").unwrap_err();
    assert_eq!((e.start, e.end), (14, 18));
    assert_eq!(e.message, "unknown policy key `flsh`");
    assert!(e.notes[0].starts_with("valid keys: kernel, tlb, iotlb, pwc, walk-cache, flush, notifier"), "{e:?}");
    let e = Policy::parse("flush=lazy").unwrap_err();
    assert_eq!((e.start, e.end), (6, 10));
    assert_eq!(e.notes[0], "valid values: pending, per-ptl, generation, ptl");
    let e = Policy::parse("tlb=evict:2").unwrap_err();
    assert!(e.message.contains("evict:2"));
    assert!(Policy::parse("tlb=evict").is_err());
    assert!(Policy::parse("flush").is_err());
    assert!(Policy::parse("flush=ptl,flush=pending").is_err());
    assert!(Policy::parse("flush=ptl,").is_err());
    assert!(Policy::parse("kernel=v2.6").is_err());
}

#[test]
fn expectation_matching_and_matrix() {
    let e = Policy::parse("flush=pending").unwrap();
    let run = Policy::parse("tlb=evict:0.5").unwrap();
    assert!(e.expectation_applies(&run));
    assert!(e.expectation_applies(&Policy::default()));
    let e2 = Policy::parse("flush=pending,madv-nested-check=off").unwrap();
    assert!(!e2.expectation_applies(&run));
    let over = Policy::parse("tlb=evict:0.5").unwrap();
    let m = policy_matrix(&[], &[e, e2, Policy::default()], &over);
    assert_eq!(m.len(), 2, "flush=pending is the default: one row");
    assert_eq!(m[0].canonical(), "tlb=evict:0.5,flush=pending");
    let m = policy_matrix(&[], &[], &Policy::default());
    assert_eq!(m, vec![Policy::default()]);
    let k = kernel_matrix(&Policy::parse("walk-cache=arm64").unwrap());
    assert_eq!(k.len(), profiles().len());
    assert!(k.iter().all(|p| p.get(Key::WalkCache) == "arm64"));
    assert_eq!(k[0].canonical(), "kernel=v3.19,walk-cache=arm64");
}
