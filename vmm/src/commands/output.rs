//! Output files: checked before anything runs (a missing directory, a
//! directory, a device such as `/dev/full` fail at once with exit status 2,
//! not after an hour), and written atomically (temp file + rename), so a
//! crash or SIGKILL leaves the last complete version readable.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{option} {}: {reason}", path.display())]
    Unusable { option: &'static str, path: PathBuf, reason: String },
    #[error("{option} {}: {source}", path.display())]
    Write {
        option: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{option}: cannot encode JSON: {source}")]
    Json {
        option: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_name(path: &Path, what: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir_of(path).join(format!(".{name}.{what}.{}", std::process::id()))
}

/// Can `path` take an output file? Its directory must exist and be
/// writable, and the path must not name a directory or a special file.
pub fn check_output_path(option: &'static str, path: &Path) -> Result<(), OutputError> {
    let unusable = |reason: String| OutputError::Unusable { option, path: path.to_path_buf(), reason };
    if let Ok(m) = std::fs::metadata(path) {
        if m.is_dir() {
            return Err(unusable("is a directory".into()));
        }
        if !m.is_file() {
            return Err(unusable("not a regular file (a device, FIFO or socket)".into()));
        }
    }
    let dir = dir_of(path);
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(unusable(format!("{} is not a directory", dir.display()))),
        Err(e) => return Err(unusable(format!("directory {}: {e}", dir.display()))),
    }
    // Can we create and write a file there (read-only directory, full disk)?
    let probe = temp_name(path, "probe");
    let r = File::create(&probe).and_then(|mut f| f.write_all(b"{}\n").and_then(|()| f.sync_all()));
    let _ = std::fs::remove_file(&probe);
    r.map_err(|e| unusable(format!("cannot write there: {e}")))
}

/// Writes `bytes` to `path` through a temp file in the same directory and
/// a rename: readers see the old or the new content, never a torn file.
pub fn write_atomic(option: &'static str, path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let tmp = temp_name(path, "tmp");
    let err = |source| OutputError::Write { option, path: path.to_path_buf(), source };
    let r = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(err)
}

/// `value` as pretty JSON, atomically.
pub fn write_json(option: &'static str, path: &Path, value: &serde_json::Value) -> Result<(), OutputError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| OutputError::Json { option, source })?;
    text.push('\n');
    write_atomic(option, path, text.as_bytes())
}

/// `--log-dir DIR`: the directory of herdtools7 logs, created (with its
/// parents) before anything runs; `None` without the option.
pub fn create_log_dir(dir: Option<&Path>) -> Result<Option<litmus::logdir::LogDir>, OutputError> {
    dir.map(|d| {
        litmus::logdir::LogDir::create(d).map_err(|source| OutputError::Write {
            option: "--log-dir",
            path: d.to_path_buf(),
            source,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unusable_paths() {
        let dir = std::env::temp_dir();
        assert!(check_output_path("--json", &dir).unwrap_err().to_string().contains("is a directory"));
        let missing = dir.join("shootdown-no-such-dir").join("x.json");
        assert!(check_output_path("--json", &missing).unwrap_err().to_string().contains("directory"));
        let dev = Path::new("/dev/full");
        if dev.exists() {
            assert!(check_output_path("--json", dev).unwrap_err().to_string().contains("not a regular file"));
        }
        let ok = dir.join(format!("shootdown-out-{}.json", std::process::id()));
        check_output_path("--json", &ok).unwrap();
        write_atomic("--json", &ok, b"1\n").unwrap();
        write_atomic("--json", &ok, b"2\n").unwrap();
        assert_eq!(std::fs::read(&ok).unwrap(), b"2\n");
        let _ = std::fs::remove_file(&ok);
    }
}
