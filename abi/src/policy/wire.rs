//! The policy on the wire ([`PolicyAbi`]): one byte per key in table
//! order, then the `evict:P` probabilities; a profile's value of every key.

use super::{Key, KeyKind, PolicyValue, Profile, KEYS, MAX_KEYS, N_KEYS};

/// Fixed-point unit of eviction probabilities: parts per million.
pub const PPM: u32 = 1_000_000;

/// The policy a run uses, on the wire: one byte per key in table order
/// (the wire number of its value), then the `evict:P` probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyAbi {
    pub bytes: [u8; MAX_KEYS],
    /// `tlb=evict:P`: P in parts per million (0 unless tlb = evict).
    pub tlb_evict_ppm: u32,
    /// `iotlb=evict:P`: P in parts per million.
    pub iotlb_evict_ppm: u32,
}

/// Bytes of [`PolicyAbi`] on the wire: the two probabilities (u32 LE), then the key bytes.
pub const POLICY_LEN: usize = 8 + MAX_KEYS;

/// The value of every key in release `rel`: kernel keys take the value
/// whose era contains `rel` (the first in table order if several do;
/// the table's tests require exactly one), hardware keys their default.
pub const fn profile_abi(profile: Profile) -> PolicyAbi {
    let rel = profile.release();
    let mut bytes = [0u8; MAX_KEYS];
    let mut k = 0;
    while k < N_KEYS {
        let d = &KEYS[k];
        bytes[k] = d.default;
        if let KeyKind::Kernel = d.kind {
            let mut v = 0;
            while v < d.values.len() {
                if d.values[v].status.in_release(rel) {
                    bytes[k] = d.values[v].num;
                    break;
                }
                v += 1;
            }
        }
        k += 1;
    }
    bytes[Key::Kernel as usize] = profile as u8;
    PolicyAbi { bytes, tlb_evict_ppm: 0, iotlb_evict_ppm: 0 }
}

impl Default for PolicyAbi {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl PolicyAbi {
    /// `kernel=mainline` on the default hardware.
    pub const DEFAULT: PolicyAbi = profile_abi(Profile::Mainline);

    /// The typed value of a key (its default if the byte is not a value;
    /// cannot happen after [`Self::is_valid`]).
    pub fn get<V: PolicyValue>(&self) -> V {
        V::from_u8(self.bytes[V::KEY as usize]).unwrap_or(V::DEFAULT)
    }

    pub fn set<V: PolicyValue>(&mut self, v: V) {
        self.bytes[V::KEY as usize] = v.to_u8();
    }

    /// `self` with one key's value replaced.
    pub fn with<V: PolicyValue>(mut self, v: V) -> Self {
        self.set(v);
        self
    }

    pub const fn byte(&self, k: Key) -> u8 {
        self.bytes[k as usize]
    }

    /// The wire form (`const`, so the guest's store can start from `DEFAULT`).
    pub const fn to_bytes(&self) -> [u8; POLICY_LEN] {
        let mut b = [0u8; POLICY_LEN];
        let (tlb, iotlb) = (self.tlb_evict_ppm.to_le_bytes(), self.iotlb_evict_ppm.to_le_bytes());
        let mut i = 0;
        while i < 4 {
            b[i] = tlb[i];
            b[4 + i] = iotlb[i];
            i += 1;
        }
        let mut k = 0;
        while k < MAX_KEYS {
            b[8 + k] = self.bytes[k];
            k += 1;
        }
        b
    }

    pub fn from_bytes(b: &[u8; POLICY_LEN]) -> Self {
        let mut bytes = [0u8; MAX_KEYS];
        bytes.copy_from_slice(&b[8..]);
        PolicyAbi {
            bytes,
            tlb_evict_ppm: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            iotlb_evict_ppm: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Every key byte holds a value of its key, unused bytes are 0 and
    /// probabilities are ≤ 1.
    pub fn is_valid(&self) -> bool {
        KEYS.iter().all(|d| d.value(self.bytes[d.key as usize]).is_some())
            && self.bytes[N_KEYS..].iter().all(|&b| b == 0)
            && self.tlb_evict_ppm <= PPM
            && self.iotlb_evict_ppm <= PPM
    }
}
