//! `--shard I/N`: one machine's part of a job.
//!
//! A job is a list of units — (test, policy) pairs, each with its planned
//! iterations — in the order a single machine would run them. Its
//! iterations, laid end to end, are cut into N contiguous, nearly equal
//! ranges; shard I runs the I-th. A unit cut in two runs its first part in
//! one shard and the rest in the next, each part as iterations
//! `[first, end)` of the unit (the guest's placement for iteration `i` is a
//! function of the seed and `i` alone, so a part behaves as it would inside
//! the whole run). The plan depends only on the units and N, so every
//! machine computes the same one, and `vmm results merge` puts the parts
//! back together.

use std::fmt;
use std::str::FromStr;

use crate::results_file::ShardInfo;

/// Shard `index` (1-based) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// The whole job.
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    pub fn info(self) -> ShardInfo {
        ShardInfo { index: self.index, count: self.count }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `I/N` with 1 ≤ I ≤ N (Jest's and Playwright's `--shard` spelling; a
    /// Kubernetes Indexed Job passes `$((JOB_COMPLETION_INDEX + 1))/N`).
    fn from_str(s: &str) -> Result<Shard, String> {
        let (i, n) = s.split_once('/').ok_or_else(|| format!("`{s}`: expected I/N, e.g. 2/4"))?;
        let index: u64 = i.trim().parse().map_err(|_| format!("`{s}`: shard index `{i}` is not a number"))?;
        let count: u64 = n.trim().parse().map_err(|_| format!("`{s}`: shard count `{n}` is not a number"))?;
        if count == 0 {
            return Err(format!("`{s}`: the shard count must be at least 1"));
        }
        if index == 0 || index > count {
            return Err(format!("`{s}`: the shard index runs from 1 to {count}"));
        }
        Ok(Shard { index, count })
    }
}

/// A unit's iterations `[first, end)` that a shard runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Index into the job's unit list.
    pub unit: usize,
    pub first: u64,
    pub end: u64,
}

/// The pieces of `units` (planned iterations per unit, in job order) that
/// `shard` runs, in job order. Shards 1..=N together cover every iteration
/// exactly once; their sizes differ by at most one iteration.
pub fn plan(units: &[u64], shard: Shard) -> Vec<Piece> {
    let total: u128 = units.iter().map(|&u| u as u128).sum();
    let k = (shard.index - 1) as u128;
    let n = shard.count as u128;
    let (lo, hi) = (total * k / n, total * (k + 1) / n);
    let mut out = Vec::new();
    let mut base: u128 = 0;
    for (i, &u) in units.iter().enumerate() {
        let (a, b) = (base, base + u as u128);
        base = b;
        let (s, e) = (a.max(lo), b.min(hi));
        if s < e {
            out.push(Piece { unit: i, first: (s - a) as u64, end: (e - a) as u64 });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert!("0/4".parse::<Shard>().unwrap_err().contains("from 1 to 4"));
        assert!("5/4".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().unwrap_err().contains("expected I/N"));
        assert_eq!(Shard { index: 3, count: 8 }.to_string(), "3/8");
    }

    #[test]
    fn cuts_across_units() {
        // 3 units of 100: 4 shards of 75.
        let p = |i| plan(&[100, 100, 100], Shard { index: i, count: 4 });
        assert_eq!(p(1), [Piece { unit: 0, first: 0, end: 75 }]);
        assert_eq!(p(2), [Piece { unit: 0, first: 75, end: 100 }, Piece { unit: 1, first: 0, end: 50 }]);
        assert_eq!(p(3), [Piece { unit: 1, first: 50, end: 100 }, Piece { unit: 2, first: 0, end: 25 }]);
        assert_eq!(p(4), [Piece { unit: 2, first: 25, end: 100 }]);
        assert_eq!(plan(&[5], Shard::ALL), [Piece { unit: 0, first: 0, end: 5 }]);
        // More shards than iterations: some shards are empty.
        assert!(plan(&[1], Shard { index: 1, count: 2 }).is_empty());
    }

    proptest! {
        /// The shards tile every unit exactly once, in order, and are
        /// balanced to one iteration.
        #[test]
        fn shards_tile_the_job(units in prop::collection::vec(0u64..50, 0..12), n in 1u64..9) {
            let mut next = vec![0u64; units.len()];
            let mut sizes = Vec::new();
            for i in 1..=n {
                let pieces = plan(&units, Shard { index: i, count: n });
                let mut size = 0;
                for p in pieces {
                    prop_assert_eq!(p.first, next[p.unit]);
                    prop_assert!(p.end > p.first && p.end <= units[p.unit]);
                    next[p.unit] = p.end;
                    size += p.end - p.first;
                }
                sizes.push(size);
            }
            prop_assert_eq!(&next, &units);
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "{:?}", sizes);
        }
    }
}
