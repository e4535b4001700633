//! The run's policy (`abi::policy`): which kernel release the mm model
//! behaves like, key by key. One relaxed byte load per question — these are
//! asked on every mm path, and every guest instruction is emulated on our
//! hosts. Ask with the key's type: `policy::get::<FlushScheme>()`.

use core::sync::atomic::{AtomicU8, Ordering};

use abi::policy::{PolicyAbi, PolicyValue, MAX_KEYS};

static BYTES: [AtomicU8; MAX_KEYS] = {
    let d = PolicyAbi::DEFAULT;
    let mut a = [const { AtomicU8::new(0) }; MAX_KEYS];
    let mut i = 0;
    while i < MAX_KEYS {
        a[i] = AtomicU8::new(d.bytes[i]);
        i += 1;
    }
    a
};

pub fn set(p: PolicyAbi) {
    for (b, v) in BYTES.iter().zip(p.bytes) {
        b.store(v, Ordering::Release);
    }
}

/// The whole policy (the probabilities are the VMM's business: zero here).
pub fn get_all() -> PolicyAbi {
    PolicyAbi { bytes: core::array::from_fn(|i| BYTES[i].load(Ordering::Acquire)), ..PolicyAbi::DEFAULT }
}

/// The value of the key `V` stands for.
#[inline]
pub fn get<V: PolicyValue>() -> V {
    V::from_u8(BYTES[V::KEY as usize].load(Ordering::Relaxed)).unwrap_or(V::DEFAULT)
}
