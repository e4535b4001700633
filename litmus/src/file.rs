//! Litmus files: TOML → checked [`Test`].
//!
//! serde + `toml::Spanned` give the byte span of every key and value, so
//! each diagnostic, even one about the third line inside a `code = """…"""`
//! string or about an `[expect]` key, points at the file position. Checking
//! goes on after an error wherever that still makes sense, so one run shows
//! every problem of every file; nothing runs unless all files are clean.

use crate::ast::{Location, Test, Thread};
use crate::code::{looks_like_register, parse_code, RecordBudget};
use crate::diag::{decode_source, Diagnostic, Severity, SourceFile, MAX_DIAGNOSTICS};
use crate::text_map::TextMap;
use abi::limits::{MAX_DEVICE_THREADS, MAX_LOCATIONS};
use abi::litmus::{LocKind, ThreadKind, MAX_THREADS};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use toml::Spanned;

mod code_names;
mod expect;
mod final_cond;
mod hash;
mod locations;
use code_names::check_code_names;
use expect::check_expect;
use final_cond::check_final;
pub use hash::test_hash;
use locations::{check_device_ops, check_location, check_mm_capacity, check_mm_operations, check_name_len};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Spanned<String>,
    #[serde(default)]
    doc: Option<String>,
    #[serde(default)]
    locations: BTreeMap<Spanned<String>, Spanned<RawLoc>>,
    #[serde(default)]
    thread: BTreeMap<Spanned<String>, Spanned<RawThread>>,
    #[serde(default)]
    device: BTreeMap<Spanned<String>, Spanned<RawThread>>,
    #[serde(rename = "final")]
    fin: Option<Spanned<RawFinal>>,
    #[serde(default)]
    expect: BTreeMap<Spanned<String>, Spanned<String>>,
    /// A test for `vmm explore`: its `[expect]` holds for the search.
    explore: Option<Spanned<RawExplore>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExplore {
    preemptions: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoc {
    page: Option<Spanned<String>>,
    value: Option<Spanned<i64>>,
    var: Option<Spanned<i64>>,
    va: Option<Spanned<String>>,
    shared: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThread {
    code: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFinal {
    #[serde(default)]
    observe: Vec<Spanned<String>>,
    forbidden: Option<Spanned<String>>,
    exists: Option<Spanned<String>>,
}

/// The result of checking one file.
#[derive(Clone, Debug)]
pub struct CheckedFile {
    /// `None` if the file has errors.
    pub test: Option<Test>,
    /// Errors and warnings in file order.
    pub diagnostics: Vec<Diagnostic>,
}

/// Names the language reserves (outcome names, condition literals).
const RESERVED_NAMES: &[&str] = &["fault", "stale-walk", "timeout", "true", "false", "at"];

fn valid_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn span<T>(s: &Spanned<T>) -> (usize, usize) {
    let r = s.span();
    (r.start, r.end)
}

/// Map for a TOML string value or key at `sp`: exact for quoted strings,
/// identity for bare keys.
fn text_map(file: &SourceFile, sp: (usize, usize), value: &str) -> TextMap {
    let raw = file.text.get(sp.0..sp.1).unwrap_or("");
    if raw.starts_with('"') || raw.starts_with('\'') {
        TextMap::for_literal(&file.text, sp.0, sp.1, value)
    } else {
        TextMap::identity(sp.0, value.len())
    }
}

struct Checker<'a> {
    file: &'a SourceFile,
    diags: Vec<Diagnostic>,
    /// Errors and warnings kept, and those past [`MAX_DIAGNOSTICS`] each
    /// (counted, never built: building one costs a pass over its line).
    kept: [usize; 2],
    dropped: [usize; 2],
    /// Where a dropped diagnostic's notes go.
    scratch: Option<Diagnostic>,
    opts: CheckOptions,
}

/// How strictly files are checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Accept `[expect]` policies no kernel ever had (`--allow-hypothetical`);
    /// they are still labelled hypothetical in the output.
    pub allow_hypothetical: bool,
}

impl Checker<'_> {
    fn slot(severity: Severity) -> usize {
        match severity {
            Severity::Error => 0,
            Severity::Warning => 1,
        }
    }
    fn push(&mut self, d: Diagnostic) -> &mut Diagnostic {
        let k = Self::slot(d.severity);
        if self.kept[k] < MAX_DIAGNOSTICS {
            self.kept[k] += 1;
            self.diags.push(d);
            return self.diags.last_mut().expect("just pushed");
        }
        self.dropped[k] += 1;
        self.scratch.insert(d)
    }
    fn add(&mut self, severity: Severity, sp: (usize, usize), msg: impl Into<String>) -> &mut Diagnostic {
        let k = Self::slot(severity);
        if self.kept[k] < MAX_DIAGNOSTICS {
            let d = self.file.diag(severity, sp.0, sp.1, msg);
            return self.push(d);
        }
        self.dropped[k] += 1;
        let file = self.file;
        self.scratch.get_or_insert_with(|| file.diag(severity, 0, 0, ""))
    }
    fn error(&mut self, sp: (usize, usize), msg: impl Into<String>) -> &mut Diagnostic {
        self.add(Severity::Error, sp, msg)
    }
    fn warning(&mut self, sp: (usize, usize), msg: impl Into<String>) -> &mut Diagnostic {
        self.add(Severity::Warning, sp, msg)
    }
}

/// Check one litmus file.
pub fn check_source(file_name: &str, text: &str) -> CheckedFile {
    check_source_with(file_name, text, &CheckOptions::default())
}

/// Check one litmus file with `opts`.
pub fn check_source_with(file_name: &str, text: &str, opts: &CheckOptions) -> CheckedFile {
    let file = SourceFile::new(file_name, text);
    let mut c = Checker { file: &file, diags: Vec::new(), kept: [0; 2], dropped: [0; 2], scratch: None, opts: *opts };
    let test = check_inner(&mut c);
    let mut diagnostics = c.diags;
    diagnostics.sort_by_key(|d| (d.line, d.col));
    let [dropped_errors, dropped_warnings] = c.dropped;
    if dropped_errors + dropped_warnings > 0 {
        if let Some(last) = diagnostics.last_mut() {
            last.notes.push(format!(
                "{dropped_errors} more error(s) and {dropped_warnings} more warning(s) in this file not shown"
            ));
        }
    }
    let ok = dropped_errors == 0 && !diagnostics.iter().any(|d| d.is_error());
    CheckedFile { test: if ok { test } else { None }, diagnostics }
}

/// Check one litmus file given as bytes: non-UTF-8 input is an error at the
/// first bad byte.
pub fn check_bytes(file_name: &str, bytes: Vec<u8>) -> CheckedFile {
    match decode_source(file_name, bytes) {
        Ok(text) => check_source(file_name, &text),
        Err(d) => CheckedFile { test: None, diagnostics: vec![d] },
    }
}

/// Check several files. `Ok` only if no file has an error; the warnings of
/// every file come along either way.
pub fn check_all(sources: &[(String, String)]) -> Result<(Vec<Test>, Vec<Diagnostic>), Vec<Diagnostic>> {
    check_all_with(sources, &CheckOptions::default())
}

/// [`check_all`] with `opts`.
pub fn check_all_with(
    sources: &[(String, String)],
    opts: &CheckOptions,
) -> Result<(Vec<Test>, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut tests = Vec::new();
    let mut diags = Vec::new();
    let mut failed = false;
    for (name, text) in sources {
        let r = check_source_with(name, text, opts);
        diags.extend(r.diagnostics);
        match r.test {
            Some(t) => tests.push(t),
            None => failed = true,
        }
    }
    if failed {
        Err(diags)
    } else {
        Ok((tests, diags))
    }
}

/// Read files with `read` and check them, like [`check_all`]. A file that
/// cannot be read is an error at 1:1; one that is not UTF-8, an error at
/// its first bad byte. (The caller decides how files are read: the VMM
/// refuses FIFOs, devices and oversized files before reading.)
pub fn load_files<P: AsRef<Path>>(
    paths: &[P],
    read: impl FnMut(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<(Vec<Test>, Vec<Diagnostic>), Vec<Diagnostic>> {
    load_files_with(paths, read, &CheckOptions::default())
}

/// [`load_files`] with `opts`.
pub fn load_files_with<P: AsRef<Path>>(
    paths: &[P],
    mut read: impl FnMut(&Path) -> std::io::Result<Vec<u8>>,
    opts: &CheckOptions,
) -> Result<(Vec<Test>, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut sources = Vec::new();
    let mut early = Vec::new();
    for p in paths {
        let name = p.as_ref().display().to_string();
        match read(p.as_ref()).map(|b| decode_source(&name, b)) {
            Ok(Ok(t)) => sources.push((name, t)),
            Ok(Err(d)) => early.push(d),
            Err(e) => early.push(SourceFile::new(name, "").error(0, 0, format!("cannot read file: {e}"))),
        }
    }
    match check_all_with(&sources, opts) {
        Ok(r) if early.is_empty() => Ok(r),
        Ok((_, d)) | Err(d) => {
            early.extend(d);
            Err(early)
        }
    }
}

fn check_inner(c: &mut Checker<'_>) -> Option<Test> {
    let raw: RawFile = match toml::from_str(&c.file.text) {
        Ok(r) => r,
        Err(e) => {
            let sp = e.span().map(|r| (r.start, r.end)).unwrap_or((0, 0));
            let msg = e.message().trim().to_string();
            let msg = if msg.starts_with("unknown field") || msg.starts_with("missing field") {
                msg
            } else {
                format!("invalid TOML: {msg}")
            };
            c.error(sp, msg);
            return None;
        }
    };

    // --- name
    let name = raw.name.get_ref().clone();
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        c.error(span(&raw.name), "a test name must be non-empty and without spaces");
    }
    check_name_len(c, "test name", &name, span(&raw.name));

    // --- locations, in file order; `loc_spans[i]` is where location i
    // comes from (its key, or an implicit flag's first use)
    let mut locs: Vec<(&Spanned<String>, &Spanned<RawLoc>)> = raw.locations.iter().collect();
    locs.sort_by_key(|(k, _)| k.span().start);
    let mut locations: Vec<Location> = Vec::new();
    let mut loc_spans: Vec<(usize, usize)> = Vec::new();
    let mut pinned: HashMap<u64, usize> = HashMap::new();
    for (k, v) in locs {
        match check_location(c, k, v) {
            Some(l) => {
                if let (Some(va), Some(va_text)) = (l.va, &v.get_ref().va) {
                    if let Some(&first) = pinned.get(&va) {
                        let (line, col) = c.file.line_col(loc_spans[first].0);
                        c.error(
                            span(va_text),
                            format!(
                                "`{}` and `{}` (line {line}, column {col}) are both pinned at {va:#x}: two locations cannot share a page",
                                l.name, locations[first].name
                            ),
                        );
                    } else {
                        pinned.insert(va, locations.len());
                    }
                }
                locations.push(l)
            }
            // Keep the name (as a plain page) so its uses do not cascade
            // into "undeclared location" errors; the file is invalid anyway.
            None => locations.push(Location::page(k.get_ref().clone())),
        }
        loc_spans.push(span(k));
    }
    check_mm_capacity(c, &raw, &locations, &loc_spans);
    let declared: HashMap<String, LocKind> = locations.iter().map(|l| (l.name.clone(), l.kind)).collect();

    // --- threads: vCPU threads in file order, then devices in file order
    let mut threads: Vec<Thread> = Vec::new();
    let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
    let mut budget = RecordBudget::default();
    for (table, kind) in [(&raw.thread, ThreadKind::Vcpu), (&raw.device, ThreadKind::Device)] {
        let mut ts: Vec<_> = table.iter().collect();
        ts.sort_by_key(|(k, _)| k.span().start);
        for (i, (k, v)) in ts.into_iter().enumerate() {
            let tname = k.get_ref();
            if threads.len() == MAX_THREADS {
                c.error(
                    span(k),
                    format!("too many threads: a test has at most {MAX_THREADS} (vCPU and device threads together)"),
                );
            }
            if kind == ThreadKind::Device && i == MAX_DEVICE_THREADS {
                c.error(span(k), format!("too many device threads: a test has at most {MAX_DEVICE_THREADS}"));
            }
            if !valid_name(tname) || looks_like_register(tname) {
                c.error(span(k), format!("invalid thread name `{tname}`: use letters, digits, `_` (e.g. P0, D0)"));
            }
            check_name_len(c, "thread name", tname, span(k));
            if let Some(prev) = seen.insert(tname.clone(), span(k)) {
                let (l, col) = c.file.line_col(prev.0);
                c.error(span(k), format!("thread name `{tname}` used twice (first at line {l}, column {col})"));
            }
            if declared.contains_key(tname) {
                c.error(span(k), format!("thread name `{tname}` is also a location name"));
            }
            let code = &v.get_ref().code;
            let map = text_map(c.file, span(code), code.get_ref());
            let (stmts, d) = parse_code(c.file, &map, code.get_ref(), kind, &mut budget);
            for d in d {
                c.push(d);
            }
            if kind == ThreadKind::Device {
                check_device_ops(c, tname, &stmts);
            }
            threads.push(Thread { name: tname.clone(), kind, code: stmts });
        }
    }
    if threads.is_empty() {
        c.error((0, 0), "a test needs at least one [thread.NAME] or [device.NAME] table");
    }

    // --- names used by code
    check_code_names(c, &threads, &mut locations, &mut loc_spans);
    if let (Some(&sp), Some(l)) = (loc_spans.get(MAX_LOCATIONS), locations.get(MAX_LOCATIONS)) {
        c.error(
            sp,
            format!(
                "too many locations: `{}` is location number {}; a test has at most {MAX_LOCATIONS}, declared locations and flags used by wait/signal together",
                l.name,
                MAX_LOCATIONS + 1
            ),
        );
    }

    check_mm_operations(c, &threads, &locations);

    // --- final and expect (both checked even if one fails, to report everything)
    let fin = check_final(c, &raw, &threads, &locations);
    let expect = check_expect(c, &raw, &threads);
    let (observed, condition) = fin?;

    let explore = raw.explore.as_ref().and_then(|e| {
        let preemptions = match &e.get_ref().preemptions {
            None => crate::ast::DEFAULT_EXPLORE_PREEMPTIONS,
            Some(k) if (0..=64).contains(k.get_ref()) => *k.get_ref() as u32,
            Some(k) => {
                c.error(span(k), "`preemptions` is a preemption bound from 0 to 64");
                return None;
            }
        };
        Some(crate::ast::ExploreSpec { preemptions })
    });
    let mut test = Test {
        file: c.file.name.clone(),
        name,
        doc: raw.doc.clone(),
        locations,
        threads,
        observed,
        condition,
        expect,
        explore,
        hash: String::new(),
    };
    test.hash = test_hash(&test);
    Some(test)
}

#[cfg(test)]
mod tests;
