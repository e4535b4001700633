//! Settings parsed once, at the CLI edge, into typed values: the TLB and
//! IOTLB models, the watchdog, output paths. Everything after this carries
//! types, never the strings.

use std::time::Duration;

use abi::config::{IotlbModel, ModelError, TlbModel};

/// The longest `--timeout` (30 days): beyond it a timer is no watchdog.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;
/// The watchdog when `--timeout` is not given (but for `vmm explore`).
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;

/// A command-line value that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("--timeout 0 would disable the watchdog; give a number of seconds (1..={MAX_TIMEOUT_SECS})")]
    TimeoutZero,
    #[error("--timeout {0}: at most {MAX_TIMEOUT_SECS} seconds (30 days)")]
    TimeoutTooLong(u64),
    #[error("--{option} {value}: {reason}")]
    Bad { option: &'static str, value: String, reason: String },
}

fn model_error(s: &str, e: ModelError, valid: &str) -> String {
    match e {
        ModelError::Unknown => format!("unknown TLB model {s:?}; valid: {valid}"),
        ModelError::BadProbability => format!("{s}: P must be between 0 and 1"),
    }
}

/// `--tlb`: `lazy`, `evict:P` (0 <= P <= 1) or `native`.
pub fn parse_tlb(s: &str) -> Result<TlbModel, String> {
    TlbModel::parse(s).map_err(|e| model_error(s, e, "lazy, evict:P (0 <= P <= 1), native"))
}

/// `--iotlb`: `lazy` or `evict:P`.
pub fn parse_iotlb(s: &str) -> Result<IotlbModel, String> {
    IotlbModel::parse(s).map_err(|e| model_error(s, e, "lazy, evict:P (0 <= P <= 1)"))
}

/// `--pwc`: `on` or `off`.
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: valid: on, off")),
    }
}

/// `--timeout SECS`: 1 s to [`MAX_TIMEOUT_SECS`].
pub fn watchdog(secs: u64) -> Result<Duration, ConfigError> {
    match secs {
        0 => Err(ConfigError::TimeoutZero),
        s if s > MAX_TIMEOUT_SECS => Err(ConfigError::TimeoutTooLong(s)),
        s => Ok(Duration::from_secs(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert!(matches!(watchdog(0), Err(ConfigError::TimeoutZero)));
        assert!(matches!(watchdog(u64::MAX), Err(ConfigError::TimeoutTooLong(_))));
        assert_eq!(watchdog(300).unwrap(), Duration::from_secs(300));
    }

    #[test]
    fn models() {
        assert_eq!(parse_tlb("evict:0.5").unwrap(), TlbModel::Evict { ppm: 500_000 });
        assert!(parse_tlb("evict:1.5").unwrap_err().contains("P must be between 0 and 1"));
        assert!(parse_tlb("fast").unwrap_err().contains("valid: lazy"));
        assert_eq!(parse_iotlb("lazy").unwrap(), IotlbModel::Lazy);
        assert!(parse_on_off("maybe").is_err());
    }
}
