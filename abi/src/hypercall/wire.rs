//! How typed hypercall requests and replies map onto the mailbox's words.
//!
//! A request is `args[0..8]`, a reply `ret[0..4]`: each field of a typed
//! struct takes whole words, in declaration order. [`wire_struct!`] writes
//! the struct `#[repr(C)]`, its [`Wire`] impl, and compile-time checks that
//! the in-memory layout is that word order (offset of field *i* = 8 × the
//! words before it) and that it fits its half of the mailbox — the same kind
//! of check as the mailbox's own `size_of == 4096`.

/// A value that occupies whole mailbox words.
pub trait WireField: Sized + Copy {
    /// Words it occupies.
    const WORDS: usize;
    /// Writes itself into `out[..WORDS]`.
    fn put(self, out: &mut [u64]);
    /// Reads itself from `w[..WORDS]`; `None` if a word is not a valid value.
    fn get(w: &[u64]) -> Option<Self>;
}

impl WireField for u64 {
    const WORDS: usize = 1;
    #[inline(always)]
    fn put(self, out: &mut [u64]) {
        out[0] = self;
    }
    #[inline(always)]
    fn get(w: &[u64]) -> Option<Self> {
        Some(w[0])
    }
}

/// Signed values travel as their two's-complement word.
impl WireField for i64 {
    const WORDS: usize = 1;
    #[inline(always)]
    fn put(self, out: &mut [u64]) {
        out[0] = self as u64;
    }
    #[inline(always)]
    fn get(w: &[u64]) -> Option<Self> {
        Some(w[0] as i64)
    }
}

/// A yes/no word: 0 or 1, any other word is invalid. (A word, not a
/// `bool`, so that a typed struct's layout is the mailbox's word order.)
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flag(u64);

impl Flag {
    pub const NO: Flag = Flag(0);
    pub const YES: Flag = Flag(1);
    pub const fn new(b: bool) -> Self {
        Flag(b as u64)
    }
    pub const fn get(self) -> bool {
        self.0 != 0
    }
}

impl From<bool> for Flag {
    fn from(b: bool) -> Self {
        Flag::new(b)
    }
}

impl From<Flag> for bool {
    fn from(f: Flag) -> bool {
        f.get()
    }
}

impl WireField for Flag {
    const WORDS: usize = 1;
    #[inline(always)]
    fn put(self, out: &mut [u64]) {
        out[0] = self.0;
    }
    #[inline(always)]
    fn get(w: &[u64]) -> Option<Self> {
        match w[0] {
            0 | 1 => Some(Flag(w[0])),
            _ => None,
        }
    }
}

impl<const N: usize> WireField for [u64; N] {
    const WORDS: usize = N;
    #[inline(always)]
    fn put(self, out: &mut [u64]) {
        out[..N].copy_from_slice(&self);
    }
    #[inline(always)]
    fn get(w: &[u64]) -> Option<Self> {
        let mut a = [0u64; N];
        a.copy_from_slice(&w[..N]);
        Some(a)
    }
}

/// Which field of which request or reply held an invalid word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub what: &'static str,
    pub field: &'static str,
    pub value: u64,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{} = {:#x} is not a valid value", self.what, self.field, self.value)
    }
}

impl core::error::Error for DecodeError {}

/// A typed request or reply.
pub trait Wire: Sized + Copy {
    /// Words used (at most 8 for a request, 4 for a reply).
    const WORDS: usize;
    fn encode(&self, out: &mut [u64]);
    fn decode(w: &[u64]) -> Result<Self, DecodeError>;
}

/// The empty request or reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Empty;

impl Wire for Empty {
    const WORDS: usize = 0;
    fn encode(&self, _: &mut [u64]) {}
    fn decode(_: &[u64]) -> Result<Self, DecodeError> {
        Ok(Empty)
    }
}

/// A `#[repr(u64)]` enum that travels as one word (a sub-operation, a kind,
/// an outcome), with its [`WireField`] impl: unknown words do not decode.
#[macro_export]
macro_rules! wire_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident = $n:expr),* $(,)? }) => {
        $(#[$m])*
        #[repr(u64)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v = $n),* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),*];
            pub const fn from_u64(v: u64) -> Option<Self> {
                match v {
                    $($n => Some($name::$v),)*
                    _ => None,
                }
            }
        }

        impl $crate::hypercall::wire::WireField for $name {
            const WORDS: usize = 1;
            #[inline(always)]
    fn put(self, out: &mut [u64]) {
                out[0] = self as u64;
            }
            #[inline(always)]
    fn get(w: &[u64]) -> Option<Self> {
                Self::from_u64(w[0])
            }
        }
    };
}

/// A typed request or reply: `#[repr(C)]`, fields of whole words, with its
/// [`Wire`] impl and the compile-time layout checks (see the module docs).
#[macro_export]
macro_rules! wire_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }

        impl $crate::hypercall::wire::Wire for $name {
            const WORDS: usize = 0 $(+ <$t as $crate::hypercall::wire::WireField>::WORDS)*;
            #[allow(unused_assignments, unused_variables, unused_mut)]
            #[inline(always)]
            fn encode(&self, out: &mut [u64]) {
                let mut i = 0;
                $(
                    $crate::hypercall::wire::WireField::put(self.$f, &mut out[i..]);
                    i += <$t as $crate::hypercall::wire::WireField>::WORDS;
                )*
            }
            #[allow(unused_assignments, unused_variables, unused_mut)]
            #[inline(always)]
            fn decode(w: &[u64]) -> Result<Self, $crate::hypercall::wire::DecodeError> {
                let mut i = 0;
                Ok($name { $(
                    $f: {
                        let v = <$t as $crate::hypercall::wire::WireField>::get(&w[i..]).ok_or(
                            $crate::hypercall::wire::DecodeError { what: stringify!($name), field: stringify!($f), value: w[i] },
                        )?;
                        i += <$t as $crate::hypercall::wire::WireField>::WORDS;
                        v
                    },
                )* })
            }
        }

        // The layout is the word order the mailbox carries.
        #[allow(unused_assignments, unused_mut)]
        const _: () = {
            let mut words = 0;
            $(
                assert!(core::mem::offset_of!($name, $f) == 8 * words);
                words += <$t as $crate::hypercall::wire::WireField>::WORDS;
            )*
            assert!(core::mem::size_of::<$name>() == 8 * words);
        };
    };
}
