//! Typed settings that cross the guest↔VMM boundary or several host layers:
//! the vCPU TLB model, the device IOTLB model and the guest's mode. Each is
//! parsed once at the edge (the CLI, or a litmus policy) and carried typed —
//! probabilities as parts per million, never as text or floats.

use crate::policy::{IotlbMode, PolicyAbi, TlbMode, PPM};

/// The vCPU TLB model (`--tlb`, the `tlb=` policy key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TlbModel {
    /// Entries live until this vCPU flushes them.
    #[default]
    Lazy,
    /// As `Lazy`, and each stale entry is dropped with probability
    /// `ppm` / 1e6 at every exit of its vCPU.
    Evict { ppm: u32 },
    /// The host's real TLB.
    Native,
}

/// The device IOTLB model (`--iotlb`, the `iotlb=` policy key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IotlbModel {
    #[default]
    Lazy,
    Evict {
        ppm: u32,
    },
}

/// Why a model did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelError {
    /// Not one of the model names.
    Unknown,
    /// `evict:P` with P not a number in 0..=1.
    BadProbability,
}

impl core::fmt::Display for ModelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ModelError::Unknown => "unknown model",
            ModelError::BadProbability => "P must be between 0 and 1",
        })
    }
}

impl core::error::Error for ModelError {}

/// `P` of `evict:P` (a decimal in 0..=1, at most six fractional digits
/// counted) as parts per million, without floating point.
pub fn parse_probability(s: &str) -> Result<u32, ModelError> {
    let s = s.trim();
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err(ModelError::BadProbability);
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| ModelError::BadProbability)? };
    // Round to the nearest ppm: the seventh fractional digit decides.
    let mut ppm = int.checked_mul(PPM as u64).ok_or(ModelError::BadProbability)?;
    let mut scale = PPM as u64 / 10;
    let mut round = 0;
    for (i, b) in frac.bytes().enumerate() {
        let d = (b - b'0') as u64;
        if i < 6 {
            ppm += d * scale;
            scale /= 10;
        } else if i == 6 {
            round = (d >= 5) as u64;
        }
    }
    let ppm = ppm + round;
    if ppm > PPM as u64 {
        return Err(ModelError::BadProbability);
    }
    Ok(ppm as u32)
}

/// Writes `ppm` / 1e6 as the shortest decimal (`0.25`, `1`, `0.000001`).
pub fn write_probability(f: &mut core::fmt::Formatter<'_>, ppm: u32) -> core::fmt::Result {
    let (int, mut frac) = (ppm / PPM, ppm % PPM);
    write!(f, "{int}")?;
    if frac != 0 {
        let mut width = 6;
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        write!(f, ".{frac:0width$}")?;
    }
    Ok(())
}

impl TlbModel {
    /// `lazy`, `evict:P` (0 <= P <= 1) or `native`.
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        match s {
            "lazy" => Ok(TlbModel::Lazy),
            "native" => Ok(TlbModel::Native),
            _ => match s.strip_prefix("evict:") {
                Some(p) => Ok(TlbModel::Evict { ppm: parse_probability(p)? }),
                None => Err(ModelError::Unknown),
            },
        }
    }

    /// Under `lazy`/`evict` each vCPU runs on a VMM-owned shadow page table.
    pub const fn is_shadowed(self) -> bool {
        !matches!(self, TlbModel::Native)
    }

    /// The eviction probability in ppm (0 unless `evict:P`).
    pub const fn evict_ppm(self) -> u32 {
        match self {
            TlbModel::Evict { ppm } => ppm,
            _ => 0,
        }
    }

    /// The model a compiled policy names (an invalid byte reads as `lazy`;
    /// `PolicyAbi::is_valid` rejects it first).
    pub fn from_policy(p: &PolicyAbi) -> Self {
        match p.get::<TlbMode>() {
            TlbMode::Evict => TlbModel::Evict { ppm: p.tlb_evict_ppm },
            TlbMode::Native => TlbModel::Native,
            TlbMode::Lazy => TlbModel::Lazy,
        }
    }

    /// Writes the model into a policy's wire form.
    pub fn apply_to(self, p: &mut PolicyAbi) {
        let (mode, ppm) = match self {
            TlbModel::Lazy => (TlbMode::Lazy, 0),
            TlbModel::Evict { ppm } => (TlbMode::Evict, ppm),
            TlbModel::Native => (TlbMode::Native, 0),
        };
        p.set(mode);
        p.tlb_evict_ppm = ppm;
    }
}

impl core::fmt::Display for TlbModel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            TlbModel::Lazy => f.write_str("lazy"),
            TlbModel::Native => f.write_str("native"),
            TlbModel::Evict { ppm } => {
                f.write_str("evict:")?;
                write_probability(f, ppm)
            }
        }
    }
}

impl IotlbModel {
    /// `lazy` or `evict:P` (0 <= P <= 1).
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        match s {
            "lazy" => Ok(IotlbModel::Lazy),
            _ => match s.strip_prefix("evict:") {
                Some(p) => Ok(IotlbModel::Evict { ppm: parse_probability(p)? }),
                None => Err(ModelError::Unknown),
            },
        }
    }

    pub fn from_policy(p: &PolicyAbi) -> Self {
        match p.get::<IotlbMode>() {
            IotlbMode::Evict => IotlbModel::Evict { ppm: p.iotlb_evict_ppm },
            IotlbMode::Lazy => IotlbModel::Lazy,
        }
    }

    pub fn apply_to(self, p: &mut PolicyAbi) {
        let (mode, ppm) = match self {
            IotlbModel::Lazy => (IotlbMode::Lazy, 0),
            IotlbModel::Evict { ppm } => (IotlbMode::Evict, ppm),
        };
        p.set(mode);
        p.iotlb_evict_ppm = ppm;
    }
}

impl core::fmt::Display for IotlbModel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            IotlbModel::Lazy => f.write_str("lazy"),
            IotlbModel::Evict { ppm } => {
                f.write_str("evict:")?;
                write_probability(f, ppm)
            }
        }
    }
}

crate::wire_enum! {
    /// What the guest does after boot ([`crate::BootInfo::mode`]).
    pub enum GuestMode {
        /// Read `mode=` from the command line (`vmm run`; default self-tests).
        FromCmdline = 0,
        /// Run the self-tests (`selftest.filter=` on the command line selects).
        Selftest = 1,
        /// Name every self-test of the table (`TEST_LISTED`), run none.
        SelftestList = 2,
        /// Run the litmus blob from iteration `mode_arg`.
        Litmus = 3,
        /// Boot benchmark: every vCPU comes online, then exit.
        Boot = 4,
        /// Hypercall and exit costs.
        BenchExits = 5,
        /// Page-table op, flush, fill and shootdown costs.
        BenchTlb = 6,
        /// Native-TLB probes, `mode_arg` tries each.
        Probe = 7,
        /// `vmm explore`: the litmus blob, one schedule per round at the
        /// placement of iteration `mode_arg`, as long as the VMM has plans
        /// (`EXPLORE_NEXT`, `abi::explore`).
        Explore = 8,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn models_round_trip() {
        for s in ["lazy", "native", "evict:0.25", "evict:1", "evict:0", "evict:0.000001", "evict:0.5"] {
            assert_eq!(TlbModel::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(TlbModel::parse("evict:1.0").unwrap(), TlbModel::Evict { ppm: 1_000_000 });
        assert_eq!(TlbModel::parse("evict:.5").unwrap(), TlbModel::Evict { ppm: 500_000 });
        assert_eq!(TlbModel::parse("evict:0.0000005").unwrap(), TlbModel::Evict { ppm: 1 });
        for bad in ["evict:1.5", "evict:", "evict:x", "evict:-1", "evict:1e-3", "evict:99999999999999999999", "lazy "] {
            assert!(TlbModel::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(IotlbModel::parse("evict:0.3").unwrap().to_string(), "evict:0.3");
        assert!(IotlbModel::parse("native").is_err());
        let mut p = PolicyAbi::DEFAULT;
        TlbModel::Evict { ppm: 250_000 }.apply_to(&mut p);
        assert_eq!(TlbModel::from_policy(&p), TlbModel::Evict { ppm: 250_000 });
    }
}
