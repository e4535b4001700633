//! Atomic access to guest memory.
//!
//! The device, the page-table walker and the vCPUs touch the same guest
//! words concurrently (the VMM does the guest's page-table ops with host
//! atomics), so every access here is a host atomic on the mapped guest page,
//! as a real IOMMU's locked read-modify-write of a PTE is. vm-memory gives
//! an `&AtomicU64` into guest memory through
//! [`VolatileMemory::get_atomic_ref`] on the slice returned by
//! [`GuestMemory::get_slices`]; no `unsafe` is needed here.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestMemory, Permissions, VolatileMemory};

/// A guest-physical access that cannot be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// No guest RAM at (all of) `gpa .. gpa + size`.
    #[error("GPA {gpa:#x} is not guest RAM")]
    NotRam { gpa: u64 },
    /// An atomic access must be naturally aligned.
    #[error("GPA {gpa:#x} is not {align}-byte aligned")]
    Misaligned { gpa: u64, align: u64 },
}

/// Runs `f` on the guest word at `gpa` as an `AtomicU64`. If `write`, the
/// dirty bitmap of the region (if it has one) is marked afterwards, so that a
/// VMM doing dirty tracking sees A/D updates and DMA stores.
pub fn with_u64<M, R>(mem: &M, gpa: u64, write: bool, f: impl FnOnce(&AtomicU64) -> R) -> Result<R, MemError>
where
    M: GuestMemory + ?Sized,
{
    if gpa % 8 != 0 {
        return Err(MemError::Misaligned { gpa, align: 8 });
    }
    let access = if write { Permissions::ReadWrite } else { Permissions::Read };
    let not_ram = MemError::NotRam { gpa };
    let mut slices = mem.get_slices(GuestAddress(gpa), 8, access).map_err(|_| not_ram)?;
    let slice = match slices.next() {
        Some(Ok(s)) if s.len() == 8 => s,
        _ => return Err(not_ram),
    };
    let atomic = slice.get_atomic_ref::<AtomicU64>(0).map_err(|_| not_ram)?;
    let r = f(atomic);
    if write {
        slice.bitmap().mark_dirty(0, 8);
    }
    Ok(r)
}

/// Like [`with_u64`] for a 32-bit word (wait-descriptor status writes).
pub fn with_u32<M, R>(mem: &M, gpa: u64, write: bool, f: impl FnOnce(&AtomicU32) -> R) -> Result<R, MemError>
where
    M: GuestMemory + ?Sized,
{
    if gpa % 4 != 0 {
        return Err(MemError::Misaligned { gpa, align: 4 });
    }
    let access = if write { Permissions::ReadWrite } else { Permissions::Read };
    let not_ram = MemError::NotRam { gpa };
    let mut slices = mem.get_slices(GuestAddress(gpa), 4, access).map_err(|_| not_ram)?;
    let slice = match slices.next() {
        Some(Ok(s)) if s.len() == 4 => s,
        _ => return Err(not_ram),
    };
    let atomic = slice.get_atomic_ref::<AtomicU32>(0).map_err(|_| not_ram)?;
    let r = f(atomic);
    if write {
        slice.bitmap().mark_dirty(0, 4);
    }
    Ok(r)
}

/// Atomic 64-bit load (acquire: pairs with the guest's release stores).
pub fn load_u64<M: GuestMemory + ?Sized>(mem: &M, gpa: u64) -> Result<u64, MemError> {
    with_u64(mem, gpa, false, |a| a.load(Ordering::Acquire))
}

/// Atomic 64-bit store (release).
pub fn store_u64<M: GuestMemory + ?Sized>(mem: &M, gpa: u64, v: u64) -> Result<(), MemError> {
    with_u64(mem, gpa, true, |a| a.store(v, Ordering::Release))
}

/// Atomic 32-bit store (release).
pub fn store_u32<M: GuestMemory + ?Sized>(mem: &M, gpa: u64, v: u32) -> Result<(), MemError> {
    with_u32(mem, gpa, true, |a| a.store(v, Ordering::Release))
}

/// Atomic exchange; returns the old value.
pub fn xchg_u64<M: GuestMemory + ?Sized>(mem: &M, gpa: u64, v: u64) -> Result<u64, MemError> {
    with_u64(mem, gpa, true, |a| a.swap(v, Ordering::SeqCst))
}

/// Atomic fetch-add (wrapping); returns the old value.
pub fn fetch_add_u64<M: GuestMemory + ?Sized>(mem: &M, gpa: u64, v: u64) -> Result<u64, MemError> {
    with_u64(mem, gpa, true, |a| a.fetch_add(v, Ordering::SeqCst))
}

/// Atomic compare-exchange; `Ok(old)` if it was `current` and is now `new`,
/// `Err(actual)` otherwise (the outer `Result` is the memory access).
#[allow(clippy::type_complexity)]
pub fn cmpxchg_u64<M: GuestMemory + ?Sized>(
    mem: &M,
    gpa: u64,
    current: u64,
    new: u64,
) -> Result<Result<u64, u64>, MemError> {
    with_u64(mem, gpa, true, |a| a.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn atomics_and_errors() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x2000)]).unwrap();
        store_u64(&mem, 0x1008, 5).unwrap();
        assert_eq!(load_u64(&mem, 0x1008), Ok(5));
        assert_eq!(xchg_u64(&mem, 0x1008, 7), Ok(5));
        assert_eq!(fetch_add_u64(&mem, 0x1008, 3), Ok(7));
        assert_eq!(cmpxchg_u64(&mem, 0x1008, 10, 11), Ok(Ok(10)));
        assert_eq!(cmpxchg_u64(&mem, 0x1008, 10, 12), Ok(Err(11)));
        assert_eq!(load_u64(&mem, 0x0), Err(MemError::NotRam { gpa: 0 }));
        assert_eq!(load_u64(&mem, 0x3000), Err(MemError::NotRam { gpa: 0x3000 }));
        assert_eq!(load_u64(&mem, 0x1004), Err(MemError::Misaligned { gpa: 0x1004, align: 8 }));
        assert!(load_u64(&mem, u64::MAX - 7).is_err());
        store_u32(&mem, 0x1010, 0xabcd).unwrap();
        assert_eq!(load_u64(&mem, 0x1010), Ok(0xabcd));
    }
}
