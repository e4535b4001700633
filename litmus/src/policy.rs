//! Policies: which historical kernel behaviour the guest's mm model follows.
//!
//! A policy string is `k=v,k=v` (used by `--policy` and by `[expect]` keys).
//! Keys not given keep their default, which is today's fixed kernel
//! behaviour, so `flush=pending,madv-nested-check=off` reads as "today's
//! kernel, but before 99baac21e458". [`Policy`] remembers which keys were
//! given so it prints back the way the user wrote it (in canonical key
//! order), and so an `[expect]` entry that does not mention `tlb`/`iotlb`
//! applies whatever TLB model the run uses.

use abi::config::{IotlbModel, TlbModel};
use abi::litmus::{
    DirtySharedFlush, FlushScheme, IotlbMode, MigrcUpgrade, MremapFlush, NestedRange, NotifierPlacement, OnOff,
    PolicyAbi, ResetRange, TlbMode, PPM,
};
use std::fmt;

/// The policy keys, in canonical order (the order of LITMUS.md's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Tlb,
    Iotlb,
    Pwc,
    Flush,
    Notifier,
    MadvNestedCheck,
    BatchedPendingCheck,
    MremapFlush,
    ResetRange,
    NestedRange,
    DirtySharedFlush,
    Migrc,
    MigrcUpgrade,
}

/// What a key means and which upstream change it stands for (for the guide
/// and `--help`).
pub struct KeyInfo {
    pub key: Key,
    pub name: &'static str,
    /// Valid values as written (`evict:P` stands for a probability).
    pub values: &'static [&'static str],
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every key with its values, default and meaning, in canonical order.
pub const KEYS: &[KeyInfo] = &[
    KeyInfo {
        key: Key::Tlb,
        name: "tlb",
        values: &["lazy", "evict:P", "native"],
        default: "lazy",
        meaning: "vCPU TLB model: lazy = entries die only by this vCPU's own flush; evict:P = also dropped with probability P at each exit; native = the host's real TLB",
    },
    KeyInfo {
        key: Key::Iotlb,
        name: "iotlb",
        values: &["lazy", "evict:P"],
        default: "lazy",
        meaning: "device IOTLB model",
    },
    KeyInfo {
        key: Key::Pwc,
        name: "pwc",
        values: &["on", "off"],
        default: "on",
        meaning: "the device's paging-structure cache",
    },
    KeyInfo {
        key: Key::Flush,
        name: "flush",
        values: &["ptl", "gather", "pending", "per-ptl", "generation"],
        default: "pending",
        meaning: "primary flush scheme: under the PTL; mmu_gather after release; + tlb_flush_pending with nested-zap check; pending tracked per page table; mm/table generations",
    },
    KeyInfo {
        key: Key::Notifier,
        name: "notifier",
        values: &["ptl", "end", "only-end", "tlb-flush", "none"],
        default: "tlb-flush",
        meaning: "where the secondary invalidation runs: under the PTL (*_notify), in invalidate_range_end, the 4.15 _only_end rule, from the TLB-flush path (6.6+), never",
    },
    KeyInfo {
        key: Key::MadvNestedCheck,
        name: "madv-nested-check",
        values: &["on", "off"],
        default: "on",
        meaning: "off = before 99baac21e458 (tlb_finish_mmu does not flush when a nested zap is pending)",
    },
    KeyInfo {
        key: Key::BatchedPendingCheck,
        name: "batched-pending-check",
        values: &["on", "off"],
        default: "on",
        meaning: "off = before 3ea277194daa (no flush_tlb_batched_pending)",
    },
    KeyInfo {
        key: Key::MremapFlush,
        name: "mremap-flush",
        values: &["before-unlock", "after-unlock"],
        default: "before-unlock",
        meaning: "after-unlock = before eb66ae030829 (CVE-2018-18281)",
    },
    KeyInfo {
        key: Key::ResetRange,
        name: "reset-range",
        values: &["keep-freed-tables", "clear-freed-tables"],
        default: "keep-freed-tables",
        meaning: "clear-freed-tables = before 7a30df49f63a: __tlb_reset_range clears freed_tables, device invalidation becomes leaf-only",
    },
    KeyInfo {
        key: Key::NestedRange,
        name: "nested-range",
        values: &["full", "sentinel"],
        default: "full",
        meaning: "sentinel = secondary invalidation of a reset (~0) range flushes nothing (2022 IOMMUv2 report)",
    },
    KeyInfo {
        key: Key::DirtySharedFlush,
        name: "dirty-shared-flush",
        values: &["under-ptl", "deferred"],
        default: "under-ptl",
        meaning: "deferred = before 1cf35d47712d: zap of a dirty shared PTE flushes after the PTL release",
    },
    KeyInfo {
        key: Key::Migrc,
        name: "migrc",
        values: &["off", "on"],
        default: "off",
        meaning: "on = deferred flush at migration of read-only pages (the migrc series)",
    },
    KeyInfo {
        key: Key::MigrcUpgrade,
        name: "migrc-upgrade",
        values: &["wp-only", "all"],
        default: "all",
        meaning: "which permission upgrades force migrc's pending flush: only the write-protect fault, or every upgrade (mprotect too)",
    },
];

impl Key {
    pub fn info(self) -> &'static KeyInfo {
        &KEYS[self as usize]
    }
    pub fn name(self) -> &'static str {
        self.info().name
    }
    pub fn from_name(s: &str) -> Option<Key> {
        KEYS.iter().find(|k| k.name == s).map(|k| k.key)
    }
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A resolved policy: every key has a value; `explicit` says which were given.
/// The default is today's fixed kernel behaviour with no key given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Policy {
    pub abi: PolicyAbi,
    explicit: u16,
}

/// [`Policy::set`] was given a value its key does not take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidValue;

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid policy value")
    }
}

impl std::error::Error for InvalidValue {}

/// A problem in a policy string; `start..end` are byte offsets into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub start: usize,
    pub end: usize,
    pub message: String,
    pub notes: Vec<String>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        for n in &self.notes {
            write!(f, " ({n})")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

fn parse_prob(s: &str) -> Option<u32> {
    let p: f64 = s.parse().ok()?;
    if !(0.0..=1.0).contains(&p) {
        return None;
    }
    Some((p * PPM as f64).round() as u32)
}

fn fmt_prob(ppm: u32) -> String {
    format!("{}", ppm as f64 / PPM as f64)
}

impl Policy {
    /// Parse `k=v,k=v`. `""` and `"default"` are the default policy.
    pub fn parse(s: &str) -> Result<Policy, PolicyError> {
        let mut p = Policy::default();
        if s.trim().is_empty() || s.trim() == "default" {
            return Ok(p);
        }
        let mut pos = 0;
        for part in s.split(',') {
            let start = pos + (part.len() - part.trim_start().len());
            pos += part.len() + 1;
            let item = part.trim();
            let end = start + item.len();
            if item.is_empty() {
                return Err(PolicyError {
                    start,
                    end: start + 1,
                    message: "empty policy item: expected `key=value`".into(),
                    notes: vec![],
                });
            }
            let Some((k, v)) = item.split_once('=') else {
                return Err(PolicyError {
                    start,
                    end,
                    message: format!("expected `key=value`, found `{item}`"),
                    notes: vec![valid_keys_note()],
                });
            };
            let (k, v) = (k.trim(), v.trim());
            let key = Key::from_name(k).ok_or_else(|| PolicyError {
                start,
                end: start + k.len(),
                message: format!("unknown policy key `{k}`"),
                notes: vec![valid_keys_note()],
            })?;
            if p.explicit & key.bit() != 0 {
                return Err(PolicyError {
                    start,
                    end: start + k.len(),
                    message: format!("policy key `{k}` given twice"),
                    notes: vec![],
                });
            }
            let eq = item.find('=').unwrap_or(0);
            let raw_v = &item[eq + 1..];
            let vstart = start + eq + 1 + (raw_v.len() - raw_v.trim_start().len());
            p.set(key, v).map_err(|InvalidValue| PolicyError {
                start: vstart,
                end: (vstart + v.len()).max(vstart + 1),
                message: format!("invalid value `{v}` for policy key `{k}`"),
                notes: vec![format!("valid values: {}", key.info().values.join(", "))],
            })?;
        }
        Ok(p)
    }

    /// Set one key from its textual value.
    pub fn set(&mut self, key: Key, v: &str) -> Result<(), InvalidValue> {
        fn e<T: Copy>(v: Option<T>) -> Result<T, InvalidValue> {
            v.ok_or(InvalidValue)
        }
        let a = &mut self.abi;
        match key {
            Key::Tlb => {
                if let Some(p) = v.strip_prefix("evict:") {
                    a.tlb = TlbMode::Evict as u8;
                    a.tlb_evict_ppm = e(parse_prob(p))?;
                } else {
                    let m = e(TlbMode::from_name(v).filter(|m| *m != TlbMode::Evict))?;
                    a.tlb = m as u8;
                    a.tlb_evict_ppm = 0;
                }
            }
            Key::Iotlb => {
                if let Some(p) = v.strip_prefix("evict:") {
                    a.iotlb = IotlbMode::Evict as u8;
                    a.iotlb_evict_ppm = e(parse_prob(p))?;
                } else {
                    let m = e(IotlbMode::from_name(v).filter(|m| *m != IotlbMode::Evict))?;
                    a.iotlb = m as u8;
                    a.iotlb_evict_ppm = 0;
                }
            }
            Key::Pwc => a.pwc = e(OnOff::from_name(v))? as u8,
            Key::Flush => a.flush = e(FlushScheme::from_name(v))? as u8,
            Key::Notifier => a.notifier = e(NotifierPlacement::from_name(v))? as u8,
            Key::MadvNestedCheck => a.madv_nested_check = e(OnOff::from_name(v))? as u8,
            Key::BatchedPendingCheck => a.batched_pending_check = e(OnOff::from_name(v))? as u8,
            Key::MremapFlush => a.mremap_flush = e(MremapFlush::from_name(v))? as u8,
            Key::ResetRange => a.reset_range = e(ResetRange::from_name(v))? as u8,
            Key::NestedRange => a.nested_range = e(NestedRange::from_name(v))? as u8,
            Key::DirtySharedFlush => a.dirty_shared_flush = e(DirtySharedFlush::from_name(v))? as u8,
            Key::Migrc => a.migrc = e(OnOff::from_name(v))? as u8,
            Key::MigrcUpgrade => a.migrc_upgrade = e(MigrcUpgrade::from_name(v))? as u8,
        }
        self.explicit |= key.bit();
        Ok(())
    }

    /// The textual value of a key (`evict:0.25` for eviction).
    pub fn get(&self, key: Key) -> String {
        let a = &self.abi;
        let n = |o: Option<&'static str>| o.unwrap_or("?").to_string();
        match key {
            Key::Tlb => match TlbMode::from_u8(a.tlb) {
                Some(TlbMode::Evict) => format!("evict:{}", fmt_prob(a.tlb_evict_ppm)),
                m => n(m.map(|m| m.name())),
            },
            Key::Iotlb => match IotlbMode::from_u8(a.iotlb) {
                Some(IotlbMode::Evict) => format!("evict:{}", fmt_prob(a.iotlb_evict_ppm)),
                m => n(m.map(|m| m.name())),
            },
            Key::Pwc => n(OnOff::from_u8(a.pwc).map(|v| v.name())),
            Key::Flush => n(FlushScheme::from_u8(a.flush).map(|v| v.name())),
            Key::Notifier => n(NotifierPlacement::from_u8(a.notifier).map(|v| v.name())),
            Key::MadvNestedCheck => n(OnOff::from_u8(a.madv_nested_check).map(|v| v.name())),
            Key::BatchedPendingCheck => n(OnOff::from_u8(a.batched_pending_check).map(|v| v.name())),
            Key::MremapFlush => n(MremapFlush::from_u8(a.mremap_flush).map(|v| v.name())),
            Key::ResetRange => n(ResetRange::from_u8(a.reset_range).map(|v| v.name())),
            Key::NestedRange => n(NestedRange::from_u8(a.nested_range).map(|v| v.name())),
            Key::DirtySharedFlush => n(DirtySharedFlush::from_u8(a.dirty_shared_flush).map(|v| v.name())),
            Key::Migrc => n(OnOff::from_u8(a.migrc).map(|v| v.name())),
            Key::MigrcUpgrade => n(MigrcUpgrade::from_u8(a.migrc_upgrade).map(|v| v.name())),
        }
    }

    /// The `tlb` key, typed (what the VMM's TLB model is built from).
    pub fn tlb_model(&self) -> TlbModel {
        TlbModel::from_policy(&self.abi)
    }

    /// The `iotlb` key, typed.
    pub fn iotlb_model(&self) -> IotlbModel {
        IotlbModel::from_policy(&self.abi)
    }

    /// The `pwc` key: is the paging-structure cache on?
    pub fn pwc_on(&self) -> bool {
        OnOff::from_u8(self.abi.pwc) != Some(OnOff::Off)
    }

    /// Sets `tlb` explicitly from a typed model (`--tlb`).
    pub fn set_tlb_model(&mut self, m: TlbModel) {
        m.apply_to(&mut self.abi);
        self.explicit |= Key::Tlb.bit();
    }

    /// Sets `iotlb` explicitly from a typed model (`--iotlb`).
    pub fn set_iotlb_model(&mut self, m: IotlbModel) {
        m.apply_to(&mut self.abi);
        self.explicit |= Key::Iotlb.bit();
    }

    /// Sets `pwc` explicitly (`--pwc`).
    pub fn set_pwc(&mut self, on: bool) {
        self.abi.pwc = if on { OnOff::On } else { OnOff::Off } as u8;
        self.explicit |= Key::Pwc.bit();
    }

    pub fn is_explicit(&self, key: Key) -> bool {
        self.explicit & key.bit() != 0
    }

    /// `self` with every key `over` gives explicitly replaced by `over`'s value
    /// (how `--tlb evict:0.1` or a CLI policy overrides a test's policy).
    pub fn merged(&self, over: &Policy) -> Policy {
        let mut p = *self;
        for k in KEYS {
            if over.is_explicit(k.key) {
                p.set(k.key, &over.get(k.key)).expect("values printed by get parse");
            }
        }
        p
    }

    /// Canonical form: the explicitly given keys in table order, or `default`.
    pub fn canonical(&self) -> String {
        self.canonical_filtered(|_| true)
    }

    /// Canonical form without `tlb` and `iotlb` (printed separately on the
    /// `Policy` output line).
    pub fn canonical_mm(&self) -> String {
        self.canonical_filtered(|k| !matches!(k, Key::Tlb | Key::Iotlb))
    }

    fn canonical_filtered(&self, f: impl Fn(Key) -> bool) -> String {
        let items: Vec<String> = KEYS
            .iter()
            .filter(|k| self.is_explicit(k.key) && f(k.key))
            .map(|k| format!("{}={}", k.name, self.get(k.key)))
            .collect();
        if items.is_empty() {
            "default".into()
        } else {
            items.join(",")
        }
    }

    /// Every key with its value, explicit or not, in table order.
    pub fn full(&self) -> Vec<(&'static str, String)> {
        KEYS.iter().map(|k| (k.name, self.get(k.key))).collect()
    }

    /// Does an `[expect]` policy apply to a run under `run`? Every key must
    /// resolve to the same value, except that `tlb` and `iotlb` (the cache
    /// models, not kernel behaviour) are only compared when the expectation
    /// names them.
    pub fn expectation_applies(&self, run: &Policy) -> bool {
        KEYS.iter().all(|k| {
            if matches!(k.key, Key::Tlb | Key::Iotlb) && !self.is_explicit(k.key) {
                true
            } else {
                self.get(k.key) == run.get(k.key)
            }
        })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl std::str::FromStr for Policy {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::parse(s)
    }
}

fn valid_keys_note() -> String {
    format!("valid keys: {}", KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", "))
}

/// The policies to run a test under: the CLI's `--policy` list if any (each
/// a row of the matrix), else the test's `[expect]` policies in file order,
/// else the default. `overrides` (e.g. `--tlb`) is merged into every row.
/// Rows that resolve to the same policy are run once.
pub fn policy_matrix(cli: &[Policy], expect: &[Policy], overrides: &Policy) -> Vec<Policy> {
    let base: Vec<Policy> = if !cli.is_empty() {
        cli.to_vec()
    } else if !expect.is_empty() {
        expect.to_vec()
    } else {
        vec![Policy::default()]
    };
    let mut out: Vec<Policy> = Vec::new();
    for p in base {
        let p = p.merged(overrides);
        if !out.iter().any(|q| q.abi == p.abi) {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_canonical() {
        let p = Policy::parse("").unwrap();
        assert_eq!(p.canonical(), "default");
        assert_eq!(p.get(Key::Flush), "pending");
        let p = Policy::parse(" madv-nested-check=off , flush=pending").unwrap();
        assert_eq!(p.canonical(), "flush=pending,madv-nested-check=off");
        assert_eq!(p.abi.madv_nested_check, 0);
        let p = Policy::parse("tlb=evict:0.25,iotlb=evict:1").unwrap();
        assert_eq!(p.abi.tlb_evict_ppm, 250_000);
        assert_eq!(p.abi.iotlb_evict_ppm, 1_000_000);
        assert_eq!(p.canonical(), "tlb=evict:0.25,iotlb=evict:1");
        assert_eq!(p.canonical_mm(), "default");
        assert_eq!(Policy::parse(&p.canonical()).unwrap(), p);
    }

    #[test]
    fn errors_list_valid_names() {
        let e = Policy::parse("flush=pending,flsh=ptl").unwrap_err();
        assert_eq!((e.start, e.end), (14, 18));
        assert_eq!(e.message, "unknown policy key `flsh`");
        assert!(e.notes[0].starts_with("valid keys: tlb, iotlb, pwc, flush, notifier, madv-nested-check"));
        let e = Policy::parse("flush=lazy").unwrap_err();
        assert_eq!((e.start, e.end), (6, 10));
        assert_eq!(e.notes[0], "valid values: ptl, gather, pending, per-ptl, generation");
        let e = Policy::parse("tlb=evict:2").unwrap_err();
        assert!(e.message.contains("evict:2"));
        assert!(Policy::parse("tlb=evict").is_err());
        assert!(Policy::parse("flush").is_err());
        assert!(Policy::parse("flush=ptl,flush=gather").is_err());
        assert!(Policy::parse("flush=ptl,").is_err());
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
    }
}
