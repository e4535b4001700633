use super::*;

#[test]
fn descriptors_round_trip() {
    let all = [
        InvDesc::PasidPages { pasid: 5, addr: 0x7fff_ffe0_0000, am: 9, leaf_only: true },
        InvDesc::PasidPages { pasid: pasid::MAX_PASID, addr: 0xffff_8000_0000_0000, am: 0, leaf_only: false },
        InvDesc::PasidAll { pasid: 77 },
        InvDesc::Global,
        InvDesc::DevTlb(DevTlbScope::All),
        InvDesc::DevTlb(DevTlbScope::Pasid { pasid: 3 }),
        InvDesc::DevTlb(DevTlbScope::Pages { pasid: 3, addr: 0x1000, am: 0 }),
        InvDesc::Wait { status_addr: Some(0x2000_0004), data: 0xdead_beef, irq: true, fence: true, drain_prq: false },
        InvDesc::Wait { status_addr: None, data: 0, irq: false, fence: false, drain_prq: true },
    ];
    for d in all {
        assert_eq!(InvDesc::decode(d.encode()), Ok(d), "{d:?}");
        assert_eq!(InvDesc::decode256(d.encode256()), Ok(d), "{d:?}");
    }
}

#[test]
fn malformed_descriptors_are_rejected() {
    use desc::*;
    assert_eq!(InvDesc::decode([0xf, 0]), Err(DescError::UnknownType));
    assert_eq!(InvDesc::decode([TYPE_IOTLB | (1 << 9), 0]), Err(DescError::UnknownType));
    assert_eq!(InvDesc::decode([TYPE_IOTLB | (G_PASID << G_SHIFT), 0]), Err(DescError::BadGranularity));
    assert_eq!(InvDesc::decode([TYPE_P_IOTLB | (G_PAGES << G_SHIFT), 0x1000 | (1 << 8)]), Err(DescError::ReservedBits));
    assert_eq!(InvDesc::decode([TYPE_P_IOTLB | (G_PAGES << G_SHIFT), 0x1000 | 37]), Err(DescError::SizeOrderTooBig));
    assert_eq!(InvDesc::decode([TYPE_P_IOTLB | (G_PAGES << G_SHIFT), 0x1000 | 1]), Err(DescError::AddressMisaligned));
    assert_eq!(
        InvDesc::decode([TYPE_P_IOTLB | (G_PAGES << G_SHIFT), 0x0000_8000_0000_0000]),
        Err(DescError::NonCanonical)
    );
    assert_eq!(InvDesc::decode([TYPE_WAIT | WAIT_SW, 0x1002]), Err(DescError::ReservedBits));
    assert_eq!(InvDesc::decode256([TYPE_IOTLB | (G_GLOBAL << G_SHIFT), 0, 1, 0]), Err(DescError::ReservedBits));
}

#[test]
fn page_request_round_trip() {
    let r = PageRequest {
        pasid: 0xabcde,
        op: AccessOp::Write,
        privileged: true,
        level: 2,
        reason: FaultReason::WriteToReadOnly,
        va: 0x7fff_1234_5678,
        entry: 0x8000_0000_1234_5025,
        entry_gpa: 0x10_0008,
    };
    assert_eq!(PageRequest::decode(r.encode()), Some(r));
    assert_eq!(PageRequest::decode([0, 0, 0, 0]), None);
}

#[test]
fn register_helpers() {
    assert_eq!(iqa::queue_bytes(iqa::encode(0x5000, false, 2)), 0x4000);
    assert_eq!(iqa::desc_bytes(iqa::encode(0x5000, true, 0)), 32);
    assert_eq!(pasid::table_entries(0), Some(512));
    assert_eq!(pasid::table_entries(11), Some(1 << 20));
    assert_eq!(pasid::table_entries(12), None);
    assert_eq!(pasid::entry(0x1234_5678, true), 0x1234_5003);
    assert_eq!(iqe::head(iqe::encode(0x40, iqe::RESERVED_BITS)), 0x40);
    assert!(is_canonical(0xffff_8000_0000_0000));
    assert!(!is_canonical(0x0000_8000_0000_0000));
}
