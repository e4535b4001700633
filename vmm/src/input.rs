//! Reading a file named on the command line (a guest image, a trace, a
//! litmus file, a results file): a regular file only, up to a size limit,
//! never blocking.
//!
//! `std::fs::read` on a FIFO waits for a writer forever; on `/dev/zero` it
//! grows memory until the process dies; on a directory it fails with a
//! confusing "Is a directory" only after the open. Here each is refused
//! with one clear reason before any byte is read, and a file that grows
//! past the limit while being read (or a pseudo-file whose size says 0) is
//! cut off at the limit and refused.

use std::fs::{FileType, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Largest guest image `--guest` reads (the kernel window is 12 MiB; the
/// rest is room for symbols and debug info).
pub const GUEST_IMAGE_MAX: u64 = 256 << 20;
/// Largest trace `vmm trace report|export|dump` reads (whole, in memory).
pub const TRACE_FILE_MAX: u64 = 2 << 30;
/// Largest results file (`--json` output) `vmm compare` and `vmm results
/// merge` read.
pub const RESULTS_FILE_MAX: u64 = 1 << 30;
/// Largest litmus file `vmm litmus` reads. A test at every limit of
/// `abi::limits` is well under 2 MiB of text.
pub const LITMUS_FILE_MAX: u64 = 8 << 20;

fn describe(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn refuse(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn size(n: u64) -> String {
    if n >= 1 << 20 && n & ((1 << 20) - 1) == 0 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// The contents of `path`, a regular file of at most `max_len` bytes.
/// `what` names the file's role in the error ("guest image", "trace").
pub fn read_input_file(path: &Path, max_len: u64, what: &str) -> io::Result<Vec<u8>> {
    let too_large = || refuse(format!("larger than the {} a {what} may have", size(max_len)));
    // The type first: opening a socket fails with an obscure errno, and a
    // FIFO must not be opened for reading without O_NONBLOCK.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(refuse(format!("is {}; a {what} must be a regular file", describe(meta.file_type()))));
    }
    // O_NONBLOCK: if the path was swapped for a FIFO since, the open does
    // not wait for a writer; the type is checked again on what was opened.
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refuse(format!("is {}; a {what} must be a regular file", describe(meta.file_type()))));
    }
    if meta.len() > max_len {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_len + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_len {
        return Err(too_large());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("shootdown-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn regular_file_read_whole() {
        let p = scratch("ok");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_input_file(&p, 5, "test file").unwrap(), b"hello");
        let e = read_input_file(&p, 4, "test file").unwrap_err();
        assert_eq!(e.to_string(), "larger than the 4 bytes a test file may have");
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = scratch("");
        let e = read_input_file(&dir, 1 << 20, "trace").unwrap_err();
        assert_eq!(e.to_string(), "is a directory; a trace must be a regular file");
        let e = read_input_file(Path::new("/dev/zero"), 1 << 20, "guest image").unwrap_err();
        assert_eq!(e.to_string(), "is a character device; a guest image must be a regular file");
        let e = read_input_file(Path::new("/nonexistent/x"), 1 << 20, "trace").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    /// A FIFO with no writer is refused at once, not waited on.
    #[test]
    fn fifo_does_not_block() {
        let p = scratch("fifo");
        let _ = std::fs::remove_file(&p);
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_input_file(&p, 1 << 20, "litmus file").unwrap_err();
        assert_eq!(e.to_string(), "is a FIFO; a litmus file must be a regular file");
    }

    /// A regular file whose size says 0 but that reads on (a /proc file) is
    /// cut off at the limit.
    #[test]
    fn size_less_pseudo_file_is_bounded() {
        let p = Path::new("/proc/self/maps");
        if !p.exists() {
            return;
        }
        let e = read_input_file(p, 16, "trace").unwrap_err();
        assert!(e.to_string().starts_with("larger than the 16 bytes"), "{e}");
    }
}
