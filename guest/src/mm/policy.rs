//! The run's policy (`abi::litmus::PolicyAbi`): which flush scheme, which
//! mmu_notifier placement, and which historical bugs are switched back on.
//! One relaxed byte load per question: these are asked on every mm path.

use core::sync::atomic::{AtomicU8, Ordering};

use abi::litmus::{
    DirtySharedFlush, FlushScheme, MigrcUpgrade, MremapFlush, NestedRange, NotifierPlacement, OnOff, PolicyAbi,
    ResetRange,
};

const N: usize = abi::litmus::POLICY_LEN;
static BYTES: [AtomicU8; N] = {
    let d = PolicyAbi::DEFAULT.to_bytes();
    let mut a = [const { AtomicU8::new(0) }; N];
    let mut i = 0;
    while i < N {
        a[i] = AtomicU8::new(d[i]);
        i += 1;
    }
    a
};

pub fn set(p: PolicyAbi) {
    for (b, v) in BYTES.iter().zip(p.to_bytes()) {
        b.store(v, Ordering::Release);
    }
}

pub fn get() -> PolicyAbi {
    PolicyAbi::from_bytes(&core::array::from_fn(|i| BYTES[i].load(Ordering::Acquire)))
}

fn byte(i: usize) -> u8 {
    BYTES[i].load(Ordering::Relaxed)
}

/// The primary flush scheme (`flush=`).
pub fn flush() -> FlushScheme {
    FlushScheme::from_u8(byte(3)).unwrap_or(FlushScheme::Pending)
}
/// Where the secondary-MMU invalidation runs (`notifier=`).
pub fn notifier() -> NotifierPlacement {
    NotifierPlacement::from_u8(byte(4)).unwrap_or(NotifierPlacement::TlbFlush)
}
/// `madv-nested-check=on` (99baac21e458).
pub fn madv_nested_check() -> bool {
    OnOff::from_u8(byte(5)) != Some(OnOff::Off)
}
/// `batched-pending-check=on` (3ea277194daa).
pub fn batched_pending_check() -> bool {
    OnOff::from_u8(byte(6)) != Some(OnOff::Off)
}
pub fn mremap_flush() -> MremapFlush {
    MremapFlush::from_u8(byte(7)).unwrap_or(MremapFlush::BeforeUnlock)
}
pub fn reset_range() -> ResetRange {
    ResetRange::from_u8(byte(8)).unwrap_or(ResetRange::KeepFreedTables)
}
pub fn nested_range() -> NestedRange {
    NestedRange::from_u8(byte(9)).unwrap_or(NestedRange::Full)
}
pub fn dirty_shared_flush() -> DirtySharedFlush {
    DirtySharedFlush::from_u8(byte(10)).unwrap_or(DirtySharedFlush::UnderPtl)
}
pub fn migrc() -> bool {
    OnOff::from_u8(byte(11)) == Some(OnOff::On)
}
pub fn migrc_upgrade() -> MigrcUpgrade {
    MigrcUpgrade::from_u8(byte(12)).unwrap_or(MigrcUpgrade::All)
}
