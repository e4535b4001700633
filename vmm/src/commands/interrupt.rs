//! SIGINT and SIGTERM during a litmus run: the first stops the running VM
//! (a supervisor watch on an eventfd the handler writes) and lets the run
//! print and save what it has; a second exits at once (status 128 + signal).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::vstate::{EndReason, Service, SetupError, VmSetup, Watch};

static COUNT: AtomicU32 = AtomicU32::new(0);
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static EVENT_FD: AtomicI32 = AtomicI32::new(-1);
static EVENT: OnceLock<EventFd> = OnceLock::new();

extern "C" fn on_signal(sig: libc::c_int) {
    if COUNT.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: `_exit` is async-signal-safe; the user asked twice.
        unsafe { libc::_exit(128 + sig) };
    }
    SIGNAL.store(sig, Ordering::SeqCst);
    let fd = EVENT_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: `write` is async-signal-safe; `fd` is the eventfd kept
        // open for the life of the process in `EVENT`.
        unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    }
}

/// Installs the handlers (once).
pub fn install() -> std::io::Result<()> {
    if EVENT.get().is_some() {
        return Ok(());
    }
    let evt = EventFd::new(libc::EFD_NONBLOCK)?;
    EVENT_FD.store(evt.as_raw_fd(), Ordering::SeqCst);
    let _ = EVENT.set(evt);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed `sigaction` with a plain handler and an empty
        // mask is valid; `on_signal` only touches atomics and makes
        // async-signal-safe calls.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signal that interrupted the run, if one did.
pub fn interrupted() -> Option<i32> {
    (COUNT.load(Ordering::SeqCst) > 0).then(|| SIGNAL.load(Ordering::SeqCst))
}

/// The signal's name for messages.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// The watch that ends a running VM when a signal arrives.
pub struct InterruptWatch;

impl Watch for InterruptWatch {
    fn fd(&self) -> RawFd {
        EVENT_FD.load(Ordering::SeqCst)
    }
    fn ready(&self, _: &GuestMemoryMmap) -> Option<EndReason> {
        // Left readable on purpose: later boots see it at once too.
        interrupted().map(|_| EndReason::Interrupted)
    }
}

impl Service for InterruptWatch {
    fn name(&self) -> &'static str {
        "interrupt"
    }
    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError> {
        if EVENT_FD.load(Ordering::SeqCst) >= 0 {
            vm.add_watch(self);
        }
        Ok(())
    }
}
