//! A set-associative cache with configurable geometry, replacement and
//! random eviction: the one structure behind the IOTLB, the device TLB and
//! the paging-structure cache.
//!
//! All randomness comes from a seeded [`SplitMix64`], so a run is
//! reproducible from its seed.

use std::fmt;
use std::str::FromStr;

pub use abi::rng::{mix64, SplitMix64};

/// Which way of a full set is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replacement {
    /// Least recently used (a lookup hit counts as a use).
    Lru,
    /// Oldest insertion.
    Fifo,
    /// A uniformly random way (seeded).
    Random,
}

impl FromStr for Replacement {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "lru" => Ok(Replacement::Lru),
            "fifo" => Ok(Replacement::Fifo),
            "random" => Ok(Replacement::Random),
            _ => Err(ConfigError::BadValue { what: "replacement", value: s.to_string(), valid: "lru, fifo, random" }),
        }
    }
}

impl fmt::Display for Replacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Replacement::Lru => "lru",
            Replacement::Fifo => "fifo",
            Replacement::Random => "random",
        })
    }
}

/// Whether the cache drops entries on its own (besides capacity).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Eviction {
    /// Never: an entry lives until invalidated or replaced for capacity —
    /// maximally stale and deterministic.
    Lazy,
    /// On each device access every entry is dropped with this probability
    /// (seeded): a finite, busy hardware cache.
    Evict(f64),
}

impl Eviction {
    /// From a probability in parts per million (`evict:P` parsed once at
    /// the edge); 0 ppm is `Lazy`.
    pub fn from_ppm(ppm: u32) -> Self {
        if ppm == 0 {
            Eviction::Lazy
        } else {
            Eviction::Evict(ppm.min(1_000_000) as f64 / 1e6)
        }
    }
}

impl FromStr for Eviction {
    type Err = ConfigError;
    /// `lazy` or `evict:P` with 0 <= P <= 1.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad =
            || ConfigError::BadValue { what: "eviction", value: s.to_string(), valid: "lazy, evict:P (0 <= P <= 1)" };
        if s == "lazy" {
            return Ok(Eviction::Lazy);
        }
        let p: f64 = s.strip_prefix("evict:").ok_or_else(bad)?.parse().map_err(|_| bad())?;
        if (0.0..=1.0).contains(&p) {
            Ok(Eviction::Evict(p))
        } else {
            Err(bad())
        }
    }
}

impl fmt::Display for Eviction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Eviction::Lazy => f.write_str("lazy"),
            Eviction::Evict(p) => write!(f, "evict:{p}"),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {what} `{value}`; valid: {valid}")]
    BadValue { what: &'static str, value: String, valid: &'static str },
    #[error("cache geometry {sets} sets x {ways} ways: both must be >= 1 and the product <= {max}")]
    BadGeometry { sets: usize, ways: usize, max: usize },
    #[error("unknown policy key `{0}`; valid: iotlb, pwc, devtlb")]
    UnknownKey(String),
}

/// Largest number of entries a cache may have.
pub const MAX_ENTRIES: usize = 1 << 20;

/// Geometry and behaviour of one cache.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CacheConfig {
    pub sets: usize,
    pub ways: usize,
    pub replacement: Replacement,
    pub eviction: Eviction,
}

impl CacheConfig {
    pub const fn new(sets: usize, ways: usize, replacement: Replacement) -> Self {
        CacheConfig { sets, ways, replacement, eviction: Eviction::Lazy }
    }
    /// One set of `entries` ways.
    pub const fn fully_associative(entries: usize, replacement: Replacement) -> Self {
        CacheConfig::new(1, entries, replacement)
    }
    pub const fn capacity(&self) -> usize {
        self.sets.saturating_mul(self.ways)
    }
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ok = self.sets >= 1 && self.ways >= 1 && self.sets.checked_mul(self.ways).is_some_and(|n| n <= MAX_ENTRIES);
        let ok_p = match self.eviction {
            Eviction::Lazy => true,
            Eviction::Evict(p) => (0.0..=1.0).contains(&p),
        };
        if !ok {
            return Err(ConfigError::BadGeometry { sets: self.sets, ways: self.ways, max: MAX_ENTRIES });
        }
        if !ok_p {
            return Err(ConfigError::BadValue {
                what: "eviction",
                value: self.eviction.to_string(),
                valid: "lazy, evict:P (0 <= P <= 1)",
            });
        }
        Ok(())
    }
}

/// Keys say which set they belong to: set = `set_hash() % sets`. Like a
/// hardware TLB, the IOTLB uses the low VPN bits, so consecutive pages
/// spread evenly over the sets.
pub trait SetKey: Copy + Eq {
    fn set_hash(&self) -> u64;
}

#[derive(Clone, Debug)]
struct Slot<K, V> {
    key: K,
    value: V,
    used: u64,
    inserted: u64,
}

/// The cache. Slots of set `s` are `slots[s * ways .. (s + 1) * ways]`.
#[derive(Clone, Debug)]
pub struct SetAssoc<K, V> {
    cfg: CacheConfig,
    slots: Vec<Option<Slot<K, V>>>,
    clock: u64,
    len: usize,
    rng: SplitMix64,
}

impl<K: SetKey, V> SetAssoc<K, V> {
    /// `cfg` must be valid ([`CacheConfig::validate`]); an invalid geometry
    /// is clamped to one entry rather than panicking.
    pub fn new(cfg: CacheConfig, seed: u64) -> Self {
        let mut cfg = cfg;
        if cfg.validate().is_err() {
            cfg.sets = cfg.sets.clamp(1, MAX_ENTRIES);
            cfg.ways = cfg.ways.clamp(1, MAX_ENTRIES / cfg.sets);
        }
        let mut slots = Vec::new();
        slots.resize_with(cfg.capacity(), || None);
        SetAssoc { cfg, slots, clock: 0, len: 0, rng: SplitMix64::new(seed) }
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn set_range(&self, key: &K) -> std::ops::Range<usize> {
        let set = (key.set_hash() % self.cfg.sets as u64) as usize;
        set * self.cfg.ways..(set + 1) * self.cfg.ways
    }

    fn find(&self, key: &K) -> Option<usize> {
        self.set_range(key).find(|&i| matches!(&self.slots[i], Some(s) if s.key == *key))
    }

    /// Looks `key` up and counts it as a use (LRU).
    pub fn lookup(&mut self, key: &K) -> Option<&V> {
        let i = self.find(key)?;
        self.clock += 1;
        let clock = self.clock;
        self.slots[i].as_mut().map(|s| {
            s.used = clock;
            &s.value
        })
    }

    /// Looks `key` up without touching replacement state.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.find(key).and_then(|i| self.slots[i].as_ref().map(|s| &s.value))
    }

    /// Inserts or replaces `key`. Returns the entry evicted to make room
    /// (never the entry for `key` itself).
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        self.clock += 1;
        let clock = self.clock;
        let fresh = Slot { key, value, used: clock, inserted: clock };
        if let Some(i) = self.find(&key) {
            self.slots[i] = Some(fresh);
            return None;
        }
        let range = self.set_range(&key);
        if let Some(i) = range.clone().find(|&i| self.slots[i].is_none()) {
            self.slots[i] = Some(fresh);
            self.len += 1;
            return None;
        }
        let start = range.start;
        let victim = match self.cfg.replacement {
            Replacement::Lru => range.min_by_key(|&i| self.slots[i].as_ref().map_or(0, |s| s.used)),
            Replacement::Fifo => range.min_by_key(|&i| self.slots[i].as_ref().map_or(0, |s| s.inserted)),
            Replacement::Random => Some(start + self.rng.below(self.cfg.ways as u64) as usize),
        }
        .unwrap_or(start);
        self.slots[victim].replace(fresh).map(|old| (old.key, old.value))
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.find(key)?;
        self.len -= 1;
        self.slots[i].take().map(|s| s.value)
    }

    /// Keeps the entries for which `keep` is true; hands the others to `dropped`.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool, mut dropped: impl FnMut(K, V)) {
        for slot in &mut self.slots {
            if matches!(slot, Some(s) if !keep(&s.key, &s.value)) {
                if let Some(s) = slot.take() {
                    self.len -= 1;
                    dropped(s.key, s.value);
                }
            }
        }
    }

    /// Drops every entry independently with probability `p`. Costs
    /// O(1 + entries dropped): the gaps between dropped slots are drawn
    /// from the geometric distribution instead of one draw per slot.
    pub fn drop_random(&mut self, p: f64, mut dropped: impl FnMut(K, V)) {
        if p.is_nan() || p <= 0.0 || self.len == 0 {
            return;
        }
        if p >= 1.0 {
            self.retain(|_, _| false, dropped);
            return;
        }
        let ln_q = (1.0 - p).ln();
        let mut i = 0usize;
        loop {
            // Number of slots skipped before the next one that is hit.
            let u = 1.0 - self.rng.next_f64(); // (0, 1]
            let skip = (u.ln() / ln_q).floor();
            if skip.is_nan() || skip >= (self.slots.len() - i) as f64 {
                return;
            }
            i += skip as usize;
            if let Some(s) = self.slots[i].take() {
                self.len -= 1;
                dropped(s.key, s.value);
            }
            i += 1;
            if i >= self.slots.len() {
                return;
            }
        }
    }

    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
        self.len = 0;
    }

    /// All entries, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slots.iter().filter_map(|s| s.as_ref().map(|s| (&s.key, &s.value)))
    }

    /// The number of the set `key` maps to (for tests and traces).
    pub fn set_of(&self, key: &K) -> usize {
        self.set_range(key).start / self.cfg.ways
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl SetKey for u64 {
        fn set_hash(&self) -> u64 {
            *self
        }
    }

    #[test]
    fn parse_policies() {
        assert_eq!("lazy".parse::<Eviction>(), Ok(Eviction::Lazy));
        assert_eq!("evict:0.25".parse::<Eviction>(), Ok(Eviction::Evict(0.25)));
        assert!("evict:1.5".parse::<Eviction>().is_err());
        assert!("evict:x".parse::<Eviction>().is_err());
        assert!("eager".parse::<Eviction>().is_err());
        assert_eq!("fifo".parse::<Replacement>(), Ok(Replacement::Fifo));
        assert!("mru".parse::<Replacement>().is_err());
    }

    #[test]
    fn fifo_ignores_use_lru_honours_it() {
        for (policy, expect_evicted) in [(Replacement::Lru, 2u64), (Replacement::Fifo, 1)] {
            let mut c = SetAssoc::new(CacheConfig::fully_associative(2, policy), 1);
            c.insert(1u64, ());
            c.insert(2, ());
            c.lookup(&1);
            assert_eq!(c.insert(3, ()).map(|(k, _)| k), Some(expect_evicted));
            assert_eq!(c.len(), 2);
        }
    }

    #[test]
    fn random_drop_rates() {
        let mut c = SetAssoc::new(CacheConfig::new(64, 16, Replacement::Random), 7);
        for k in 0..100_000u64 {
            c.insert(k, ());
        }
        assert_eq!(c.len(), 1024);
        let mut n = 0;
        c.drop_random(0.5, |_, _| n += 1);
        assert!((400..650).contains(&n), "{n}");
        assert_eq!(c.len(), 1024 - n);
        c.drop_random(0.0, |_, _| panic!());
        c.drop_random(1.0, |_, _| ());
        assert!(c.is_empty());
    }
}
