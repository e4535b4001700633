//! `--shard I/N`: one of N parts of a search.
//!
//! The systematic search splits its schedule tree at a fixed depth
//! ([`crate::Config::split_depth`]): every execution that leaves the part of
//! the tree above that depth starts a new *subtree*, numbered in the order
//! the depth-first search meets them, and subtree `j` belongs to shard
//! `j mod N`. Every shard walks the tree above the split (cheap: one
//! execution per subtree, reported as `discovery`) and searches only its own
//! subtrees below it. Nothing a shard decides depends on another shard's
//! subtrees (the reduction is path-local), so the shards together run
//! exactly the executions one machine runs, and [`crate::merge`] gives the
//! same counts, histogram and witness. PCT runs are split by run number.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Shard `index` (1-based, as printed and parsed) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The whole search.
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 || index == 0 || index > count {
            return Err(ShardError::Range { index, count });
        }
        Ok(Shard { index, count })
    }

    /// Whether part number `j` (0-based, in search order) is this shard's.
    pub fn owns(self, j: u64) -> bool {
        j % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("bad shard '{0}': expected I/N with 1 <= I <= N, e.g. 2/4")]
    Syntax(String),
    #[error("bad shard {index}/{count}: expected 1 <= I <= N")]
    Range { index: u32, count: u32 },
}

impl FromStr for Shard {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let (i, n) = s.split_once('/').ok_or_else(|| ShardError::Syntax(s.into()))?;
        let i = i.trim().parse().map_err(|_| ShardError::Syntax(s.into()))?;
        let n = n.trim().parse().map_err(|_| ShardError::Syntax(s.into()))?;
        Shard::new(i, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_own() {
        let s: Shard = "2/4".parse().unwrap();
        assert_eq!(s, Shard { index: 2, count: 4 });
        assert_eq!(s.to_string(), "2/4");
        assert!(s.owns(1) && s.owns(5) && !s.owns(0) && !s.owns(2));
        assert!(Shard::ALL.owns(7));
        assert!("0/4".parse::<Shard>().is_err());
        assert!("5/4".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
    }

    #[test]
    fn every_part_has_one_owner() {
        for n in 1..6 {
            for j in 0..20 {
                let owners = (1..=n).filter(|&i| Shard::new(i, n).unwrap().owns(j)).count();
                assert_eq!(owners, 1);
            }
        }
    }
}
