//! `--log-dir DIR`: one herdtools7 log per policy, `DIR/<policy>.log`.
//!
//! herdtools7's log tools key a log's blocks by test name, so one test run
//! under several policies in one log would be merged into one test.
//! Written one log per policy, `mcompare7 DIR/*.log` prints the test ×
//! policy table and `msum7 DIR/*.log` sums them.
//!
//! Blocks are appended as runs finish, so a stopped job keeps what it
//! printed; each file is truncated the first time this job writes to it.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::policy::Policy;

/// Where a job's per-policy logs go.
#[derive(Debug)]
pub struct LogDir {
    dir: PathBuf,
    started: BTreeSet<PathBuf>,
}

/// `flush=pending,madv-nested-check=off.log`, `default.log`: the policy's
/// canonical text (it never holds `/`; anything outside a conservative
/// file-name alphabet becomes `_`).
pub fn log_file_name(policy: &Policy) -> String {
    let name: String = policy
        .canonical()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "=,.:+-_".contains(c) { c } else { '_' })
        .collect();
    format!("{name}.log")
}

impl LogDir {
    /// Creates `dir` (and its parents) if needed.
    pub fn create(dir: &Path) -> io::Result<LogDir> {
        std::fs::create_dir_all(dir)?;
        Ok(LogDir { dir: dir.to_path_buf(), started: BTreeSet::new() })
    }

    /// Appends `block` to the policy's log and flushes it; returns its path.
    pub fn append(&mut self, policy: &Policy, block: &str) -> io::Result<PathBuf> {
        let path = self.dir.join(log_file_name(policy));
        let mut f: File = if self.started.insert(path.clone()) {
            File::create(&path)?
        } else {
            OpenOptions::new().append(true).open(&path)?
        };
        f.write_all(block.as_bytes())?;
        if !block.ends_with("\n\n") {
            f.write_all(b"\n")?;
        }
        f.flush()?;
        Ok(path)
    }

    /// The logs written so far.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.started.iter()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_policy_truncated_once() {
        let dir = std::env::temp_dir().join(format!("shootdown-logdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let stale = dir.join("default.log");
        std::fs::write(&stale, "old job\n").unwrap();
        let mut l = LogDir::create(&dir).unwrap();
        let a = Policy::parse("flush=pending,madv-nested-check=off").unwrap();
        l.append(&Policy::default(), "Test a\n").unwrap();
        l.append(&a, "Test a\n").unwrap();
        l.append(&Policy::default(), "Test b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&stale).unwrap(), "Test a\n\nTest b\n\n");
        let p = dir.join("flush=pending,madv-nested-check=off.log");
        assert_eq!(std::fs::read_to_string(p).unwrap(), "Test a\n\n");
        assert_eq!(l.files().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
