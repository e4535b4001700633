use super::*;

const PROFILES: &[Profile] = Profile::ALL;

#[test]
fn every_kernel_key_has_exactly_one_value_per_profile() {
    for p in PROFILES {
        let rel = p.release();
        for d in KEYS.iter().filter(|d| d.kind == KeyKind::Kernel) {
            let n = d.values.iter().filter(|v| v.status.in_release(rel)).count();
            // A key made only of proposals (migrc-upgrade) has no kernel value:
            // profiles carry its default, which means nothing without the proposal.
            let any_kernel = d.values.iter().any(|v| matches!(v.status, Status::Kernel(_)));
            assert_eq!(n, any_kernel as usize, "{} in {}: {} values claim it", d.name, rel, n);
        }
    }
}

#[test]
fn table_is_well_formed() {
    for d in KEYS {
        assert!(d.value(d.default).is_some(), "{}: default is a value", d.name);
        for (i, v) in d.values.iter().enumerate() {
            assert!(!v.doc.is_empty() && !v.name.is_empty());
            for w in &d.values[i + 1..] {
                assert_ne!(v.num, w.num, "{}: wire numbers unique", d.name);
                assert_ne!(v.name, w.name, "{}: names unique", d.name);
            }
            match (d.kind, v.status) {
                (KeyKind::Hardware, Status::Hardware)
                | (KeyKind::Profile, Status::Profile(_))
                | (KeyKind::Kernel, Status::Kernel(_) | Status::Proposal | Status::Model) => {}
                other => panic!("{}={}: status {:?} in a {:?} key", d.name, v.name, other.1, other.0),
            }
        }
    }
    // The default of a kernel key is mainline's value.
    let m = PolicyAbi::DEFAULT;
    for d in KEYS.iter().filter(|d| d.kind == KeyKind::Kernel) {
        assert_eq!(m.bytes[d.key as usize], d.default, "{}: default is mainline's value", d.name);
    }
    for q in REQUIREMENTS {
        assert!(q.key.desc().value(q.value).is_some());
        assert!(q.needs_values.iter().all(|&v| q.needs.desc().value(v).is_some()));
    }
}

#[test]
fn wire_round_trip() {
    for p in PROFILES {
        let a = profile_abi(*p);
        assert!(a.is_valid());
        assert_eq!(PolicyAbi::from_bytes(&a.to_bytes()), a);
    }
    let a = PolicyAbi { tlb_evict_ppm: 250_000, ..PolicyAbi::DEFAULT }.with(TlbMode::Evict);
    assert_eq!(a.get::<TlbMode>(), TlbMode::Evict);
    assert_eq!(PolicyAbi::from_bytes(&a.to_bytes()), a);
    let mut bad = PolicyAbi::DEFAULT;
    bad.bytes[Key::Flush as usize] = 99;
    assert!(!bad.is_valid());
}

#[test]
fn profiles_have_the_documented_key_values() {
    let v = |p: Profile| profile_abi(p);
    assert_eq!(v(Profile::V3_19).get::<Notifier>(), Notifier::Page);
    assert_eq!(v(Profile::V4_9).get::<MadvNestedCheck>(), MadvNestedCheck::Off);
    assert_eq!(v(Profile::V4_14).get::<Notifier>(), Notifier::Ptl);
    assert_eq!(v(Profile::V4_14).get::<FlushScheme>(), FlushScheme::Pending);
    assert_eq!(v(Profile::V4_19).get::<MremapFlush>(), MremapFlush::BeforeUnlock);
    assert_eq!(v(Profile::V5_4).get::<ResetRange>(), ResetRange::KeepFreedTables);
    assert_eq!(v(Profile::V5_10).get::<WpFaultFlush>(), WpFaultFlush::None);
    assert_eq!(v(Profile::V6_6).get::<NestedRange>(), NestedRange::Sentinel);
    assert_eq!(v(Profile::Mainline).get::<NestedRange>(), NestedRange::Full);
    assert_eq!(v(Profile::Mainline).get::<Profile>(), Profile::Mainline);
}
