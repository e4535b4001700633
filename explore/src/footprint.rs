//! What one step touched: the objects of the independence relation.
//!
//! A *step* is what a thread does from one scheduling point to its next one
//! (it runs alone in between). Its footprint is the set of shared objects it
//! read or wrote, *including the objects its guard reads* (the lock a lock
//! acquisition tests, the flag a `wait` tests), so that a step that enables
//! or disables another thread's pending step conflicts with it.
//!
//! Two steps of different threads are **independent** iff no object is in
//! both footprints with at least one of the two accesses a write. The
//! reduction in [`crate::dfs`] is sound exactly when footprints are
//! complete: every shared read and write the step does is listed (an
//! over-approximation is always safe; [`Object::ALL`] is the coarsest one).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A shared object, named by the program (a kernel word, a lock, a PTE, a
/// device, "the whole mm"). The engine only compares them for equality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Object(pub u64);

impl Object {
    /// Every object at once: a step that writes `ALL` conflicts with every
    /// step that touches anything; one that reads `ALL` with every writer.
    pub const ALL: Object = Object(u64::MAX);
}

/// One access of a footprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Access {
    pub object: Object,
    pub write: bool,
}

/// The objects one step accessed, sorted by object, one entry per object
/// (a write absorbs a read of the same object).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Footprint {
    accesses: Vec<Access>,
}

impl Footprint {
    /// A purely local step: independent of everything.
    pub const fn empty() -> Footprint {
        Footprint { accesses: Vec::new() }
    }

    pub fn read(o: Object) -> Footprint {
        Footprint { accesses: vec![Access { object: o, write: false }] }
    }

    pub fn write(o: Object) -> Footprint {
        Footprint { accesses: vec![Access { object: o, write: true }] }
    }

    /// Adds one access (keeps the list sorted and merged).
    pub fn add(&mut self, object: Object, write: bool) {
        match self.accesses.binary_search_by(|a| a.object.cmp(&object)) {
            Ok(i) => self.accesses[i].write |= write,
            Err(i) => self.accesses.insert(i, Access { object, write }),
        }
    }

    pub fn with(mut self, object: Object, write: bool) -> Footprint {
        self.add(object, write);
        self
    }

    pub fn accesses(&self) -> &[Access] {
        &self.accesses
    }

    pub fn is_empty(&self) -> bool {
        self.accesses.is_empty()
    }

    fn has_write(&self) -> bool {
        self.accesses.iter().any(|a| a.write)
    }

    fn all(&self) -> Option<bool> {
        self.accesses.last().filter(|a| a.object == Object::ALL).map(|a| a.write)
    }

    /// Whether the two steps are dependent: some object is accessed by
    /// both and written by at least one. Symmetric.
    pub fn conflicts(&self, other: &Footprint) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        // `ALL` sorts last (u64::MAX).
        match (self.all(), other.all()) {
            (Some(true), _) | (_, Some(true)) => return true,
            (Some(false), _) if other.has_write() => return true,
            (_, Some(false)) if self.has_write() => return true,
            _ => {}
        }
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.accesses, &other.accesses);
        while i < a.len() && j < b.len() {
            match a[i].object.cmp(&b[j].object) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    if a[i].write || b[j].write {
                        return true;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        false
    }
}

impl fmt::Display for Footprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, a) in self.accesses.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let o = if a.object == Object::ALL { "ALL".to_string() } else { format!("{:#x}", a.object.0) };
            write!(f, "{}{o}", if a.write { "W" } else { "R" })?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn independence() {
        let x = Object(1);
        let y = Object(2);
        assert!(!Footprint::read(x).conflicts(&Footprint::read(x)));
        assert!(Footprint::read(x).conflicts(&Footprint::write(x)));
        assert!(Footprint::write(x).conflicts(&Footprint::write(x)));
        assert!(!Footprint::write(x).conflicts(&Footprint::write(y)));
        assert!(Footprint::read(y).with(x, true).conflicts(&Footprint::read(x)));
        // A local step commutes with anything, even with ALL.
        assert!(!Footprint::empty().conflicts(&Footprint::write(Object::ALL)));
        assert!(Footprint::write(Object::ALL).conflicts(&Footprint::read(y)));
        assert!(!Footprint::read(Object::ALL).conflicts(&Footprint::read(y)));
        assert!(Footprint::read(Object::ALL).conflicts(&Footprint::write(y)));
        assert!(Footprint::read(y).conflicts(&Footprint::read(x).with(Object::ALL, true)));
    }

    #[test]
    fn merge_keeps_one_entry_per_object() {
        let f = Footprint::read(Object(3)).with(Object(1), false).with(Object(3), true).with(Object(1), false);
        assert_eq!(
            f.accesses(),
            &[Access { object: Object(1), write: false }, Access { object: Object(3), write: true }]
        );
        assert_eq!(f.to_string(), "{R0x1 W0x3}");
    }
}
