//! Parking a vCPU inside KVM: a service that wants the calling vCPU to
//! sleep (`WAIT`) returns [`Flow::Park`](super::Flow::Park) after
//! [`Parking::park`]; the vCPU thread then sets the vCPU's mp_state to
//! HALTED and re-enters KVM_RUN, where it sleeps like a `hlt` — so an
//! interrupt (a TLB-shootdown IPI from another vCPU through the in-kernel
//! LAPIC, an MSI) still wakes it and runs its handler, with no exit to the
//! VMM. [`Parking::wake`] kicks the thread out of KVM_RUN with the kick
//! signal (no guest instruction, no injected interrupt); the thread sets
//! the vCPU runnable again and it resumes after its `WAIT`.
//!
//! Each park has a ticket: a wake for an older park (the vCPU resumed on
//! its own, through an interrupt, and went on) finds another ticket and
//! does nothing, so callers need not track who is still asleep.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use vmm_sys_util::signal::SIGRTMIN;

use super::vcpu::KICK_SIGNAL_OFFSET;

struct Slot {
    /// Odd while parked: the ticket of the park in progress.
    ticket: AtomicU64,
    /// A wake for the current ticket arrived.
    woken: AtomicBool,
}

/// The parking state of every vCPU of a VM.
pub struct Parking {
    slots: Vec<Slot>,
    /// The vCPU threads, for the kick.
    threads: Mutex<Vec<Option<libc::pthread_t>>>,
    pub parks: AtomicU64,
    pub wakes: AtomicU64,
}

/// What the vCPU thread does after KVM_RUN returned for a parked vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resume {
    /// Woken (or running again after an interrupt): make it runnable.
    Run,
    /// A kick that was not its wake-up: stay asleep.
    Sleep,
}

impl Parking {
    pub fn new(vcpus: u64) -> Self {
        Self {
            slots: (0..vcpus).map(|_| Slot { ticket: AtomicU64::new(0), woken: AtomicBool::new(false) }).collect(),
            threads: Mutex::new(vec![None; vcpus as usize]),
            parks: AtomicU64::new(0),
            wakes: AtomicU64::new(0),
        }
    }

    /// The calling vCPU thread is `cpu`'s (kicks go to it).
    pub(super) fn register_thread(&self, cpu: u64) {
        if let Some(t) = self.threads.lock().unwrap_or_else(|e| e.into_inner()).get_mut(cpu as usize) {
            // SAFETY: pthread_self has no preconditions.
            *t = Some(unsafe { libc::pthread_self() });
        }
    }

    pub(super) fn unregister_thread(&self, cpu: u64) {
        if let Some(t) = self.threads.lock().unwrap_or_else(|e| e.into_inner()).get_mut(cpu as usize) {
            *t = None;
        }
    }

    /// Parks vCPU `cpu` (the caller then returns `Flow::Park` from its
    /// exit): returns the ticket a [`Parking::wake`] must name. A wake that
    /// arrives before the vCPU is asleep is not lost: its thread's next
    /// KVM_RUN returns at once.
    pub fn park(&self, cpu: u64) -> Option<u64> {
        let s = self.slots.get(cpu as usize)?;
        s.woken.store(false, Ordering::Relaxed);
        let t = s.ticket.load(Ordering::Relaxed);
        let t = if t % 2 == 1 { t + 2 } else { t + 1 };
        s.ticket.store(t, Ordering::Release);
        self.parks.fetch_add(1, Ordering::Relaxed);
        Some(t)
    }

    /// Wakes vCPU `cpu` if it is still parked with `ticket`.
    pub fn wake(&self, cpu: u64, ticket: u64) -> bool {
        let Some(s) = self.slots.get(cpu as usize) else { return false };
        if s.ticket.load(Ordering::Acquire) != ticket {
            return false;
        }
        s.woken.store(true, Ordering::Release);
        self.wakes.fetch_add(1, Ordering::Relaxed);
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = threads.get(cpu as usize).copied().flatten() {
            // SAFETY: `t` is a live vCPU thread of this VM: a thread
            // unregisters (under this lock, held across the kill) before it
            // exits. The kick signal's handler only sets a flag.
            unsafe { libc::pthread_kill(t, SIGRTMIN() + KICK_SIGNAL_OFFSET) };
        }
        true
    }

    /// Whether vCPU `cpu` is parked (asleep, or about to be).
    pub fn is_parked(&self, cpu: u64) -> bool {
        self.slots.get(cpu as usize).is_some_and(|s| s.ticket.load(Ordering::Acquire) % 2 == 1)
    }

    /// Whether vCPU `cpu`'s current park has had its wake-up.
    pub(super) fn is_woken(&self, cpu: u64) -> bool {
        self.slots.get(cpu as usize).is_some_and(|s| s.woken.load(Ordering::Acquire))
    }

    /// KVM_RUN returned for parked vCPU `cpu`: `kicked` if it returned
    /// because of a signal, `halted` if KVM still has the vCPU asleep.
    pub(super) fn after_run(&self, cpu: u64, kicked: bool, halted: bool) -> Resume {
        let Some(s) = self.slots.get(cpu as usize) else { return Resume::Run };
        if kicked && halted && !s.woken.load(Ordering::Acquire) {
            return Resume::Sleep;
        }
        // Woken, or it ran (an interrupt woke it inside KVM) and exited.
        let t = s.ticket.load(Ordering::Relaxed);
        if t % 2 == 1 {
            s.ticket.store(t + 1, Ordering::Release);
        }
        Resume::Run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_names_the_park_it_ends() {
        let p = Parking::new(2);
        let t = p.park(1).unwrap();
        assert!(p.is_parked(1));
        // A stray kick leaves it asleep; its wake-up does not.
        assert_eq!(p.after_run(1, true, true), Resume::Sleep);
        assert!(p.wake(1, t));
        assert_eq!(p.after_run(1, true, true), Resume::Run);
        assert!(!p.is_parked(1));
        // A wake for that park, arriving late, does nothing.
        assert!(!p.wake(1, t));
        // Resumed by an interrupt: a real exit ends the park.
        let t2 = p.park(1).unwrap();
        assert_ne!(t, t2);
        assert_eq!(p.after_run(1, false, false), Resume::Run);
        assert!(!p.wake(1, t2));
        assert_eq!(p.park(9), None);
    }
}
