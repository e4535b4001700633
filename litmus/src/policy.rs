//! Policies: which kernel the guest's mm model behaves like.
//!
//! A policy string is `k=v,k=v` (`--policy`, `[expect]` keys). Every key
//! and value comes from the one table in [`abi::policy`]. `kernel=` picks a
//! profile (default `mainline`); the other kernel keys given with it
//! override the profile's value — one commit applied or reverted — and the
//! hardware keys (`tlb`, `iotlb`, `pwc`, `walk-cache`) describe the
//! emulated machine. [`Policy`] remembers which keys were given so it
//! prints back the way the user wrote it (in canonical key order), and so an
//! `[expect]` entry that does not mention `tlb`/`iotlb` applies whatever TLB
//! model the run uses.
//!
//! [`Policy::reality`] says whether a policy is a kernel that existed: a
//! profile, a profile with one commit applied or reverted, or values that
//! all co-existed in some release; a proposal on top of one; or a
//! combination no kernel ever had (refused unless `--allow-hypothetical`).

use abi::config::{IotlbModel, TlbModel};
use abi::policy::Pwc;
pub use abi::policy::{
    profile_abi, Key, KeyDesc, KeyKind, PolicyAbi, Profile, Release, Status, ValueDesc, KEYS, PPM, REQUIREMENTS,
};
use std::fmt;

mod reality;
use reality::reality;
pub use reality::Reality;

/// The table entry of a key (kept under its old name for the crate's users).
pub type KeyInfo = KeyDesc;

/// A resolved policy: every key has a value; `explicit` says which were given.
/// The default is `kernel=mainline` on the default hardware, no key given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    pub abi: PolicyAbi,
    explicit: u64,
    /// `kernel=A..B` (an `[expect]` key covering several profiles): the
    /// range; `abi` is resolved for its newest profile.
    range: Option<(Profile, Profile)>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { abi: PolicyAbi::DEFAULT, explicit: 0, range: None }
    }
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

fn bit(k: Key) -> u64 {
    1 << (k as u64)
}

/// Every profile, oldest first.
pub fn profiles() -> &'static [Profile] {
    Profile::ALL
}

/// The profile named `v4.14` / `mainline`.
pub fn profile_named(s: &str) -> Option<Profile> {
    Profile::from_name(s)
}

/// Values accepted for a key, as written (`evict:P` for a parameter).
pub fn value_names(k: &KeyDesc) -> Vec<String> {
    k.values
        .iter()
        .map(|v| match k.param {
            Some(p) if p.value == v.num => format!("{}:P", v.name),
            _ => v.name.to_string(),
        })
        .collect()
}

impl Policy {
    /// The profile's policy, nothing given explicitly but the kernel.
    pub fn profile(p: Profile) -> Policy {
        Policy { abi: profile_abi(p), explicit: bit(Key::Kernel), range: None }
    }

    /// Parse `k=v,k=v`. `""` and `"default"` are the default policy.
    /// `kernel=A..B` covers the profiles from A to B (for `[expect]`).
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
            if p.explicit & bit(key) != 0 {
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
            let err = || PolicyError {
                start: vstart,
                end: (vstart + v.len()).max(vstart + 1),
                message: format!("invalid value `{v}` for policy key `{k}`"),
                notes: vec![format!("valid values: {}", value_names(key.desc()).join(", "))],
            };
            if key == Key::Kernel {
                if let Some((a, b)) = v.split_once("..") {
                    let (a, b) = (profile_named(a.trim()).ok_or_else(err)?, profile_named(b.trim()).ok_or_else(err)?);
                    if b < a {
                        return Err(PolicyError {
                            notes: vec![format!(
                                "a range goes from the older profile to the newer: {}..{}",
                                b.name(),
                                a.name()
                            )],
                            ..err()
                        });
                    }
                    p.set_kernel(b);
                    p.range = (a != b).then_some((a, b));
                    continue;
                }
            }
            p.set(key, v).map_err(|InvalidValue| err())?;
        }
        Ok(p)
    }

    /// `kernel=`: rebase every kernel key not given explicitly on `prof`.
    fn set_kernel(&mut self, prof: Profile) {
        let mut abi = profile_abi(prof);
        for d in KEYS {
            if d.key != Key::Kernel && self.is_explicit(d.key) {
                abi.bytes[d.key as usize] = self.abi.bytes[d.key as usize];
            }
        }
        abi.tlb_evict_ppm = self.abi.tlb_evict_ppm;
        abi.iotlb_evict_ppm = self.abi.iotlb_evict_ppm;
        self.abi = abi;
        self.explicit |= bit(Key::Kernel);
        self.range = None;
    }

    /// Set one key from its textual value.
    pub fn set(&mut self, key: Key, v: &str) -> Result<(), InvalidValue> {
        let d = key.desc();
        if key == Key::Kernel {
            self.set_kernel(profile_named(v).ok_or(InvalidValue)?);
            return Ok(());
        }
        let mut ppm = None;
        let num = match (d.param, v.split_once(':')) {
            (Some(param), Some((name, p))) if d.value(param.value).is_some_and(|x| x.name == name) => {
                ppm = Some((param.slot, parse_prob(p).ok_or(InvalidValue)?));
                param.value
            }
            _ => {
                let val = d.value_named(v).ok_or(InvalidValue)?;
                if d.param.is_some_and(|p| p.value == val.num) {
                    return Err(InvalidValue); // `evict` needs its `:P`
                }
                val.num
            }
        };
        self.abi.bytes[key as usize] = num;
        if d.param.is_some() {
            let (slot, p) = ppm.unwrap_or((d.param.map(|p| p.slot).unwrap(), 0));
            match slot {
                abi::policy::PpmSlot::Tlb => self.abi.tlb_evict_ppm = p,
                abi::policy::PpmSlot::Iotlb => self.abi.iotlb_evict_ppm = p,
            }
        }
        self.explicit |= bit(key);
        Ok(())
    }

    /// The textual value of a key (`evict:0.25` for eviction).
    pub fn get(&self, key: Key) -> String {
        let d = key.desc();
        let num = self.abi.bytes[key as usize];
        let Some(v) = d.value(num) else { return "?".into() };
        match d.param {
            Some(p) if p.value == num => {
                let ppm = match p.slot {
                    abi::policy::PpmSlot::Tlb => self.abi.tlb_evict_ppm,
                    abi::policy::PpmSlot::Iotlb => self.abi.iotlb_evict_ppm,
                };
                format!("{}:{}", v.name, fmt_prob(ppm))
            }
            _ => v.name.to_string(),
        }
    }

    /// The table entry of a key's current value.
    pub fn value(&self, key: Key) -> &'static ValueDesc {
        key.desc().value(self.abi.bytes[key as usize]).expect("a resolved policy holds valid values")
    }

    /// The profile the policy is based on (`kernel=`, default mainline).
    pub fn kernel(&self) -> Profile {
        self.abi.get::<Profile>()
    }

    /// `kernel=A..B` of an `[expect]` key.
    pub fn kernel_range(&self) -> Option<(Profile, Profile)> {
        self.range
    }

    /// The profiles this policy stands for: its range, or its one kernel.
    pub fn kernels(&self) -> Vec<Profile> {
        match self.range {
            Some((a, b)) => profiles().iter().copied().filter(|p| *p >= a && *p <= b).collect(),
            None => vec![self.kernel()],
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
        self.abi.get::<Pwc>() != Pwc::Off
    }

    /// Sets `tlb` explicitly from a typed model (`--tlb`).
    pub fn set_tlb_model(&mut self, m: TlbModel) {
        m.apply_to(&mut self.abi);
        self.explicit |= bit(Key::Tlb);
    }

    /// Sets `iotlb` explicitly from a typed model (`--iotlb`).
    pub fn set_iotlb_model(&mut self, m: IotlbModel) {
        m.apply_to(&mut self.abi);
        self.explicit |= bit(Key::Iotlb);
    }

    /// Sets `pwc` explicitly (`--pwc`).
    pub fn set_pwc(&mut self, on: bool) {
        self.abi.set(if on { Pwc::On } else { Pwc::Off });
        self.explicit |= bit(Key::Pwc);
    }

    pub fn is_explicit(&self, key: Key) -> bool {
        self.explicit & bit(key) != 0
    }

    /// The same explicit overrides on another profile (`--kernel all`).
    pub fn on_kernel(&self, p: Profile) -> Policy {
        let mut q = *self;
        q.set_kernel(p);
        q
    }

    /// `self` with every key `over` gives explicitly replaced by `over`'s value
    /// (how `--tlb evict:0.1` or a CLI policy overrides a test's policy).
    pub fn merged(&self, over: &Policy) -> Policy {
        let mut p = *self;
        if over.is_explicit(Key::Kernel) {
            p.set_kernel(over.kernel());
            p.range = over.range;
        }
        for k in KEYS {
            if k.key != Key::Kernel && over.is_explicit(k.key) {
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
            .map(|k| match (k.key, self.range) {
                (Key::Kernel, Some((a, b))) => format!("kernel={}..{}", a.name(), b.name()),
                _ => format!("{}={}", k.name, self.get(k.key)),
            })
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

    /// The same behaviour: every key but `kernel` resolves to the same
    /// value, except that `tlb` and `iotlb` (the cache models, verdict-
    /// neutral by design) are compared only when `self` names them.
    fn same_behaviour(&self, run: &Policy) -> bool {
        KEYS.iter().all(|k| match k.key {
            Key::Kernel => true,
            Key::Tlb | Key::Iotlb if !self.is_explicit(k.key) => true,
            _ => self.get(k.key) == run.get(k.key),
        })
    }

    /// Does an `[expect]` policy apply to a run under `run`? The run must
    /// behave as the expectation's kernel (any kernel of its range) with
    /// its other keys.
    pub fn expectation_applies(&self, run: &Policy) -> bool {
        match self.range {
            None => self.same_behaviour(run),
            Some(_) => self.kernels().into_iter().any(|k| self.on_kernel(k).same_behaviour(run)),
        }
    }

    /// Is this a kernel that existed? See [`Reality`].
    pub fn reality(&self) -> Reality {
        reality(self)
    }

    /// `proposal` or `hypothetical` for labels; `None` for a real kernel.
    pub fn label(&self) -> Option<&'static str> {
        match self.reality() {
            Reality::Proposal { .. } => Some("proposal"),
            Reality::Hypothetical { .. } => Some("hypothetical"),
            _ => None,
        }
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
/// a row of the matrix), else the test's `[expect]` policies in file order
/// (a `kernel=A..B` entry runs once, on its newest profile), else the
/// default. `overrides` (e.g. `--tlb`) is merged into every row. Rows that
/// resolve to the same policy are run once.
pub fn policy_matrix(cli: &[Policy], expect: &[Policy], overrides: &Policy) -> Vec<Policy> {
    let base: Vec<Policy> = if !cli.is_empty() {
        cli.to_vec()
    } else if !expect.is_empty() {
        expect.iter().map(|p| Policy { range: None, ..*p }).collect()
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

/// `--kernel all`: one row per profile, each with `overrides` (the CLI's
/// `--policy` keys and `--tlb`…) on top.
pub fn kernel_matrix(overrides: &Policy) -> Vec<Policy> {
    profiles().iter().map(|p| Policy::profile(*p).merged(&Policy { range: None, ..*overrides }).on_kernel(*p)).collect()
}

#[cfg(test)]
mod tests;
