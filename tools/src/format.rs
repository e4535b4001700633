//! The trace file: streamed as a run goes, so a crash or timeout keeps
//! everything written before it.
//!
//! ```text
//! header   16 bytes: magic "SHDTRACE" | version u32 LE | record length u16 LE | 0 u16
//! frames   tag u32 LE | length u32 LE | payload (length bytes), until EOF
//!   RUN      (1) JSON RunMeta: one (test, policy) run starts
//!   BOOT     (2) JSON BootMeta: a guest boot of that run starts
//!   RECORDS  (3) n × 48-byte abi::trace records of that boot (any order;
//!                readers sort by sequence number within a boot)
//!   BOOT_END (4) JSON BootEnd: how the boot ended, dropped-record counts
//!   RUN_END  (5) JSON RunEnd
//! ```
//!
//! Sequence numbers restart with each boot (the counter lives in guest
//! memory), so the order is total within a boot; iterations never span
//! boots. Unknown frame tags are skipped (with a warning), so a newer
//! writer's extra frames do not stop an older reader.

use std::io::{self, Write};

use abi::trace::{Record, RECORD_LEN};
use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 8] = *b"SHDTRACE";
/// File format version (independent of `abi::trace::VERSION`, which is
/// the record and ring layout; both are checked).
pub const FILE_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 16;
const FRAME_HEADER_LEN: usize = 8;
/// Frames larger than this are taken as corruption.
const MAX_FRAME: u32 = 256 << 20;

pub mod tag {
    pub const RUN: u32 = 1;
    pub const BOOT: u32 = 2;
    pub const RECORDS: u32 = 3;
    pub const BOOT_END: u32 = 4;
    pub const RUN_END: u32 = 5;
}

/// Who runs a thread, and who made a stale access: a vCPU or a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreadKind {
    #[default]
    Vcpu,
    Device,
}

/// A litmus thread of the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadMeta {
    pub name: String,
    /// `vcpu` or `device` in the file.
    pub kind: ThreadKind,
}

/// One (test, policy) run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub test: String,
    /// The test's hash (as on the herd `Hash=` line).
    pub hash: String,
    /// The mm policy in canonical form (`notifier=end`, `default`, …).
    pub policy: String,
    pub tlb: String,
    pub iotlb: String,
    pub seed: u64,
    /// The litmus file, if the test came from one.
    #[serde(default)]
    pub file: Option<String>,
    /// Iterations the run asked for, and how many of them are traced.
    pub iterations: u64,
    pub traced_iterations: u64,
    pub vcpus: u64,
    /// vCPU threads first, then device threads (device thread d has unit d).
    pub threads: Vec<ThreadMeta>,
    /// `abi::trace::VERSION` of the records.
    pub record_version: u32,
}

impl RunMeta {
    pub fn devices(&self) -> Vec<&str> {
        self.threads.iter().filter(|t| t.kind == ThreadKind::Device).map(|t| t.name.as_str()).collect()
    }

    /// `test` and `policy` as one label.
    pub fn label(&self) -> String {
        format!("{} [{}]", self.test, self.policy)
    }
}

/// One boot of the guest inside a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootMeta {
    pub boot: u64,
    pub first_iteration: u64,
    /// Guest TSC frequency (KVM_GET_TSC_KHZ); timestamps are guest TSC.
    pub tsc_khz: u64,
    pub vcpus: u64,
    pub capacity: u64,
    /// Host TSC minus guest TSC when the boot started (host records were
    /// converted with it).
    pub tsc_offset: i64,
}

/// How a boot ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootEnd {
    /// `exit`, `iteration-timeout`, `guest-error: …`, `watchdog`.
    pub end: String,
    /// Per ring: records lost (ring full and the drain failed).
    pub dropped: Vec<u64>,
    /// Per ring: times the vCPU waited for the VMM to drain its ring.
    pub blocked: Vec<u64>,
    /// Records written for this boot.
    pub records: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEnd {
    pub iterations: u64,
    pub timeouts: u64,
}

/// Writes a trace file. Every call writes whole frames; `flush` pushes them
/// to the file (the VMM flushes after each iteration).
pub struct Writer<W: Write> {
    w: W,
}

impl<W: Write> Writer<W> {
    pub fn new(mut w: W) -> io::Result<Self> {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&FILE_VERSION.to_le_bytes());
        h[12..14].copy_from_slice(&(RECORD_LEN as u16).to_le_bytes());
        w.write_all(&h)?;
        Ok(Writer { w })
    }

    fn frame(&mut self, tag: u32, payload: &[u8]) -> io::Result<()> {
        let mut f = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
        f.extend_from_slice(&tag.to_le_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(payload);
        self.w.write_all(&f)
    }

    fn json<T: Serialize>(&mut self, tag: u32, v: &T) -> io::Result<()> {
        let text = serde_json::to_vec(v).map_err(io::Error::other)?;
        self.frame(tag, &text)
    }

    pub fn run(&mut self, m: &RunMeta) -> io::Result<()> {
        self.json(tag::RUN, m)
    }
    pub fn boot(&mut self, m: &BootMeta) -> io::Result<()> {
        self.json(tag::BOOT, m)
    }
    pub fn boot_end(&mut self, m: &BootEnd) -> io::Result<()> {
        self.json(tag::BOOT_END, m)
    }
    pub fn run_end(&mut self, m: &RunEnd) -> io::Result<()> {
        self.json(tag::RUN_END, m)
    }

    /// Writes records in frames of at most 64 Ki records.
    pub fn records(&mut self, recs: &[Record]) -> io::Result<()> {
        for chunk in recs.chunks(1 << 16) {
            let mut p = Vec::with_capacity(chunk.len() * RECORD_LEN);
            for r in chunk {
                p.extend_from_slice(&r.to_bytes());
            }
            self.frame(tag::RECORDS, &p)?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    pub fn into_inner(self) -> W {
        self.w
    }
}

/// A parsed trace (possibly only the readable prefix of a damaged file).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub file_version: u32,
    pub runs: Vec<Run>,
    /// Non-fatal oddities (unknown frames skipped).
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Run {
    pub meta: RunMeta,
    pub boots: Vec<Boot>,
    pub end: Option<RunEnd>,
}

#[derive(Clone, Debug, Default)]
pub struct Boot {
    pub meta: BootMeta,
    /// Sorted by sequence number.
    pub records: Vec<Record>,
    pub end: Option<BootEnd>,
}

impl Trace {
    pub fn record_count(&self) -> usize {
        self.runs.iter().flat_map(|r| &r.boots).map(|b| b.records.len()).sum()
    }

    /// Records lost in the guest (ring full, drain failed), over all boots.
    pub fn dropped(&self) -> u64 {
        self.runs.iter().flat_map(|r| &r.boots).filter_map(|b| b.end.as_ref()).flat_map(|e| &e.dropped).sum()
    }
}

/// Why a file could not be read to its end; `offset` is where reading stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError {
    pub offset: u64,
    pub message: String,
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.message)
    }
}

/// The readable part of a file and, if it could not be read to the end, why.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    pub trace: Trace,
    pub error: Option<FormatError>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Parses a whole trace file. Never panics; a damaged file gives what was
/// readable before the damage plus the error.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let err = |offset: usize, message: String| Some(FormatError { offset: offset as u64, message });
    if bytes.len() < HEADER_LEN {
        out.error =
            err(0, format!("not a shootdown trace: {} bytes, shorter than the {HEADER_LEN}-byte header", bytes.len()));
        return out;
    }
    if bytes[..8] != MAGIC {
        out.error = err(0, "not a shootdown trace (bad magic; expected \"SHDTRACE\")".into());
        return out;
    }
    let version = u32_at(bytes, 8);
    out.trace.file_version = version;
    if version != FILE_VERSION {
        out.error = err(8, format!("unsupported trace file version {version} (this reader knows {FILE_VERSION})"));
        return out;
    }
    let rec_len = u16::from_le_bytes([bytes[12], bytes[13]]) as usize;
    if rec_len != RECORD_LEN {
        out.error = err(12, format!("record length {rec_len}, this reader knows {RECORD_LEN}-byte records"));
        return out;
    }
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        if bytes.len() - at < FRAME_HEADER_LEN {
            out.error = err(at, format!("truncated: {} stray bytes where a frame header starts", bytes.len() - at));
            return out;
        }
        let tag = u32_at(bytes, at);
        let len = u32_at(bytes, at + 4);
        if len > MAX_FRAME {
            out.error = err(at, format!("corrupt frame header (tag {tag}, length {len})"));
            return out;
        }
        let body_start = at + FRAME_HEADER_LEN;
        let avail = bytes.len() - body_start;
        let truncated = (len as usize) > avail;
        let body = &bytes[body_start..body_start + (len as usize).min(avail)];
        let t = &mut out.trace;
        let no_boot = || format!("a frame (tag {tag}) before any run/boot frame");
        match tag {
            tag::RUN | tag::BOOT | tag::BOOT_END | tag::RUN_END if truncated => {
                out.error = err(at, format!("truncated: metadata frame (tag {tag}) of {len} bytes, {avail} present"));
                return out;
            }
            tag::RUN => match serde_json::from_slice::<RunMeta>(body) {
                Ok(m) => t.runs.push(Run { meta: m, boots: Vec::new(), end: None }),
                Err(e) => {
                    out.error = err(at, format!("bad run metadata: {e}"));
                    return out;
                }
            },
            tag::BOOT => {
                let m = match serde_json::from_slice::<BootMeta>(body) {
                    Ok(m) => m,
                    Err(e) => {
                        out.error = err(at, format!("bad boot metadata: {e}"));
                        return out;
                    }
                };
                match t.runs.last_mut() {
                    Some(r) => r.boots.push(Boot { meta: m, records: Vec::new(), end: None }),
                    None => {
                        out.error = err(at, no_boot());
                        return out;
                    }
                }
            }
            tag::BOOT_END | tag::RUN_END => {
                let run = match t.runs.last_mut() {
                    Some(r) => r,
                    None => {
                        out.error = err(at, no_boot());
                        return out;
                    }
                };
                let ok = if tag == tag::BOOT_END {
                    match (serde_json::from_slice::<BootEnd>(body), run.boots.last_mut()) {
                        (Ok(e), Some(b)) => {
                            b.end = Some(e);
                            Ok(())
                        }
                        (Err(e), _) => Err(format!("bad boot-end metadata: {e}")),
                        (_, None) => Err(no_boot()),
                    }
                } else {
                    serde_json::from_slice::<RunEnd>(body)
                        .map(|e| run.end = Some(e))
                        .map_err(|e| format!("bad run-end metadata: {e}"))
                };
                if let Err(m) = ok {
                    out.error = err(at, m);
                    return out;
                }
            }
            tag::RECORDS => {
                let Some(boot) = t.runs.last_mut().and_then(|r| r.boots.last_mut()) else {
                    out.error = err(at, no_boot());
                    return out;
                };
                for c in body.chunks_exact(RECORD_LEN) {
                    let mut a = [0u8; RECORD_LEN];
                    a.copy_from_slice(c);
                    boot.records.push(Record::from_bytes(&a));
                }
                if truncated {
                    out.error = err(
                        at,
                        format!(
                            "truncated: records frame of {} records has only {} complete",
                            len as usize / RECORD_LEN,
                            body.len() / RECORD_LEN
                        ),
                    );
                } else if !body.len().is_multiple_of(RECORD_LEN) {
                    out.error = err(at, format!("records frame of {len} bytes is not a whole number of records"));
                }
                if out.error.is_some() {
                    break;
                }
            }
            other => t.warnings.push(format!("byte {at}: skipped unknown frame tag {other} ({len} bytes)")),
        }
        if truncated {
            out.error = err(at, format!("truncated: frame (tag {tag}) of {len} bytes, {avail} present"));
            break;
        }
        at = body_start + len as usize;
    }
    for b in out.trace.runs.iter_mut().flat_map(|r| r.boots.iter_mut()) {
        b.records.sort_by_key(|r| r.seq);
    }
    out
}

/// Reads and parses a trace file.
pub fn read_file(path: &std::path::Path) -> io::Result<Parsed> {
    Ok(parse(&std::fs::read(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> Record {
        Record { seq, tsc: 1000 + seq, kind: 5, va: 0x1000 * seq, ..Default::default() }
    }

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new()).unwrap();
        w.run(&RunMeta { test: "t".into(), policy: "default".into(), vcpus: 2, ..Default::default() }).unwrap();
        w.boot(&BootMeta { boot: 0, tsc_khz: 1_000_000, vcpus: 2, ..Default::default() }).unwrap();
        w.records(&[rec(3), rec(1), rec(2)]).unwrap();
        w.boot_end(&BootEnd { end: "exit".into(), dropped: vec![0, 0], ..Default::default() }).unwrap();
        w.run_end(&RunEnd { iterations: 1, timeouts: 0 }).unwrap();
        w.into_inner()
    }

    #[test]
    fn round_trip_sorted() {
        let p = parse(&sample());
        assert!(p.error.is_none(), "{:?}", p.error);
        let b = &p.trace.runs[0].boots[0];
        assert_eq!(b.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(b.end.as_ref().unwrap().end, "exit");
        assert_eq!(p.trace.runs[0].end, Some(RunEnd { iterations: 1, timeouts: 0 }));
    }

    #[test]
    fn every_truncation_keeps_a_prefix_and_never_panics() {
        let full = sample();
        for n in 0..full.len() {
            let p = parse(&full[..n]);
            let recs = p.trace.record_count();
            assert!(recs <= 3);
            if n < full.len() {
                // Cut inside the last frames: either an error, or a clean cut
                // at a frame boundary.
                let boundary = p.error.is_none();
                if boundary {
                    assert!(n >= HEADER_LEN);
                }
            }
        }
        // Cutting the records frame after two records keeps two.
        let cut = full.windows(4).position(|w| w == 3u32.to_le_bytes()).unwrap();
        let p = parse(&full[..cut + 8 + 2 * RECORD_LEN + 5]);
        assert_eq!(p.trace.record_count(), 2);
        assert!(p.error.unwrap().message.contains("truncated"));
    }

    #[test]
    fn garbage_is_refused_clearly() {
        let p = parse(b"hello world, not a trace at all");
        assert!(p.error.unwrap().message.contains("bad magic"));
        let mut bad = sample();
        bad[8] = 9;
        assert!(parse(&bad).error.unwrap().message.contains("version 9"));
        let mut junk = sample();
        let n = junk.len();
        junk.truncate(n - 3);
        junk.extend_from_slice(&[0xff; 64]);
        let p = parse(&junk);
        assert!(p.error.is_some());
        assert_eq!(p.trace.record_count(), 3);
    }
}
