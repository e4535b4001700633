//! Serial console (16550 at 0x3f8) and the `kprintln!` macro. Quiet by
//! default: results travel by hypercall; the console is for humans debugging.

use core::fmt::{self, Write};

use crate::{arch, sync::SpinLock};
use abi::hypercall::SERIAL_PORT;

struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                arch::outb(SERIAL_PORT, b'\r');
            }
            arch::outb(SERIAL_PORT, b);
        }
        Ok(())
    }
}

static LOCK: SpinLock<()> = SpinLock::new(());

pub fn print(args: fmt::Arguments) {
    let _g = LOCK.lock();
    let _ = Serial.write_fmt(args);
}

#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// A fixed buffer that implements `fmt::Write`, truncating when full.
pub struct FixedBuf<const N: usize> {
    pub buf: [u8; N],
    pub len: usize,
}

impl<const N: usize> FixedBuf<N> {
    pub const fn new() -> Self {
        Self { buf: [0; N], len: 0 }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    pub fn push_bytes(&mut self, b: &[u8]) {
        let n = b.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }
}

impl<const N: usize> Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_bytes(s.as_bytes());
        Ok(())
    }
}
