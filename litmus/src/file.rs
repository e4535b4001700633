//! Litmus files: TOML → checked [`Test`].
//!
//! serde + `toml::Spanned` give the byte span of every key and value, so
//! each diagnostic, even one about the third line inside a `code = """…"""`
//! string or about an `[expect]` key, points at the file position. Checking
//! goes on after an error wherever that still makes sense, so one run shows
//! every problem of every file; nothing runs unless all files are clean.

use crate::ast::{CondKind, Condition, Expectation, Expr, Location, Observable, Operand, Stmt, Test, Thread, Verdict};
use crate::code::{looks_like_register, parse_code, register_index, RecordBudget};
use crate::cond::{parse_condition, RawExpr};
use crate::diag::{decode_source, Diagnostic, Severity, SourceFile, MAX_DIAGNOSTICS};
use crate::policy::{Key, Policy, KEYS};
use crate::text_map::TextMap;
use abi::limits::{
    page_tables_needed, LinkedLocations, MAX_COW_OPS, MAX_DEVICE_OPS, MAX_DEVICE_THREADS, MAX_EXPECTATIONS,
    MAX_LOCATIONS, MAX_NAME_LEN, MAX_OBSERVED, MAX_PAGE_LOCATIONS, MAX_PAGE_MAPPINGS, MAX_PAGE_TABLES,
    MAX_SHARED_PAGES, TEST_VA_END, TEST_VA_START,
};
use abi::litmus::{pinned_va_ok, LocKind, Op, Perm, ThreadKind, WaitCmp, MAX_THREADS, RESERVED_MIN};
use md5::{Digest, Md5};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use toml::Spanned;

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
            None => locations.push(Location {
                name: k.get_ref().clone(),
                kind: LocKind::Page,
                perm: Perm::Rw,
                init: 0,
                shared: false,
                va: None,
                implicit: false,
            }),
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

/// The declared locations fit the guest mm model (`abi::limits`, the same
/// rules `Blob::parse` applies): page and unmapped locations (one VMA
/// each), shared pages (one file each), and the page tables their
/// addresses may need. Each is refused at the location that goes past.
fn check_mm_capacity(c: &mut Checker<'_>, raw: &RawFile, locations: &[Location], spans: &[(usize, usize)]) {
    let mut pinned: Vec<u64> = Vec::new();
    let (mut pages, mut shared, mut window) = (0, 0, false);
    for (l, &sp) in locations.iter().zip(spans) {
        if l.kind == LocKind::Var {
            continue;
        }
        pages += 1;
        if pages > MAX_PAGE_LOCATIONS {
            c.error(
                sp,
                format!("too many page locations: `{}` is page or unmapped location number {pages}; a test has at most {MAX_PAGE_LOCATIONS} (one VMA of the test mm each)", l.name),
            );
            return;
        }
        let raw_loc = raw.locations.iter().find(|(k, _)| k.span().start == sp.0).map(|(_, v)| v.get_ref());
        if l.shared {
            shared += 1;
            if shared > MAX_SHARED_PAGES {
                let at = raw_loc.and_then(|r| r.shared.as_ref()).map_or(sp, span);
                c.error(at, format!("too many shared pages: a test has at most {MAX_SHARED_PAGES} (one file of the page cache each)"));
            }
        }
        match l.va {
            Some(va) => pinned.push(va),
            None => window = true,
        }
        let needed = page_tables_needed(&pinned, window);
        if needed > MAX_PAGE_TABLES {
            let at = raw_loc.and_then(|r| r.va.as_ref()).map_or(sp, span);
            c.error(
                at,
                format!("the pinned addresses up to here may need {needed} page-table pages; the test mm has at most {MAX_PAGE_TABLES}"),
            )
            .notes
            .push("each distinct 512 GiB, 1 GiB and 2 MiB region of a page needs a table; unpinned pages share one 2 MiB window".into());
            return;
        }
    }
}

/// The operations fit the guest mm model: at most [`MAX_COW_OPS`] `cow`
/// statements, and no more than [`MAX_PAGE_MAPPINGS`] locations linked by
/// `ksm`/`mremap` (they may end up mapping one page). Refused at the
/// statement that goes past.
fn check_mm_operations(c: &mut Checker<'_>, threads: &[Thread], locations: &[Location]) {
    let index: HashMap<&str, usize> = locations.iter().enumerate().map(|(i, l)| (l.name.as_str(), i)).rev().collect();
    let mut linked = LinkedLocations::default();
    let (mut cows, mut reported) = (0, false);
    for t in threads {
        let mut all: Vec<&Stmt> = Vec::new();
        for s in &t.code {
            s.walk(&mut |s| all.push(s));
        }
        for s in all {
            match s.op {
                Op::Cow => {
                    cows += 1;
                    if cows == MAX_COW_OPS + 1 {
                        c.error(s.span, format!("more than {MAX_COW_OPS} `cow` statements in this test (each gives the fork child one more page reference)"));
                    }
                }
                Op::Ksm | Op::Mremap => {
                    let loc = |n: &Option<String>| n.as_deref().and_then(|n| index.get(n)).copied();
                    if let (Some(a), Some(b)) = (loc(&s.loc), loc(&s.loc2)) {
                        let n = linked.link(a, b);
                        if n > MAX_PAGE_MAPPINGS && !reported {
                            reported = true;
                            c.error(
                                s.span,
                                format!("this `{}` links {n} locations by ksm/mremap: one page could be mapped at {n} addresses; the mm model maps a page at most {MAX_PAGE_MAPPINGS} times", s.op.name()),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Names are length-prefixed with `u16` in the blob and printed in results:
/// [`MAX_NAME_LEN`] bytes at most.
fn check_name_len(c: &mut Checker<'_>, what: &str, name: &str, sp: (usize, usize)) -> bool {
    if name.len() > MAX_NAME_LEN {
        c.error(sp, format!("{what} too long: {} bytes, at most {MAX_NAME_LEN}", name.len()));
        return false;
    }
    true
}

/// DMA-engine ops a device thread's statements unroll to (loops repeated;
/// `Op::device_program_ops` per op, as the guest's program builder emits them).
fn device_ops(stmts: &[Stmt]) -> u64 {
    stmts.iter().fold(0u64, |n, s| n.saturating_add(stmt_device_ops(s)))
}

fn stmt_device_ops(s: &Stmt) -> u64 {
    let own = s.op.device_program_ops();
    if s.op != Op::Loop {
        return own;
    }
    let count = match s.val {
        Some(Operand::Imm(n)) => n,
        _ => 0,
    };
    own.saturating_add(device_ops(&s.body).saturating_mul(count))
}

/// A device thread becomes one DMA-engine program of at most
/// [`MAX_DEVICE_OPS`] ops: refused at the statement where it overflows.
fn check_device_ops(c: &mut Checker<'_>, thread: &str, stmts: &[Stmt]) {
    let mut total: u64 = 0;
    for s in stmts {
        let n = stmt_device_ops(s);
        total = total.saturating_add(n);
        if total > MAX_DEVICE_OPS {
            let at_least = if total == u64::MAX { "more than 2^64".to_string() } else { total.to_string() };
            c.error(
                s.span,
                format!(
                    "device thread {thread} unrolls to {at_least} DMA-engine ops up to here; a device program holds at most {MAX_DEVICE_OPS}"
                ),
            )
            .notes
            .push("loop bodies are repeated `loop N` times, `barrier` counts 2, every other operation 1".into());
            return;
        }
    }
}

fn check_location(c: &mut Checker<'_>, k: &Spanned<String>, v: &Spanned<RawLoc>) -> Option<Location> {
    let name = k.get_ref().clone();
    let ks = span(k);
    if !check_name_len(c, "location name", &name, ks) {
        return None;
    }
    if !valid_name(&name) {
        c.error(ks, format!("invalid location name `{name}`: use letters, digits, `_`, `-`"));
        return None;
    }
    if looks_like_register(&name) {
        c.error(ks, format!("location name `{name}` looks like a register (r0 … r31 are registers)"));
        return None;
    }
    if RESERVED_NAMES.contains(&name.as_str()) {
        c.error(ks, format!("`{name}` is a reserved word and cannot name a location"));
        return None;
    }
    let r = v.get_ref();
    let vs = span(v);
    let value = |c: &mut Checker<'_>, x: &Spanned<i64>| -> Option<u64> {
        let n = *x.get_ref();
        if n < 0 {
            c.error(span(x), format!("negative value {n}: values are unsigned 64-bit words"));
            None
        } else if n as u64 >= RESERVED_MIN {
            c.error(span(x), "value out of range");
            None
        } else {
            Some(n as u64)
        }
    };
    let mut loc = Location {
        name: name.clone(),
        kind: LocKind::Page,
        perm: Perm::Rw,
        init: 0,
        shared: false,
        va: None,
        implicit: false,
    };
    match (&r.page, &r.var) {
        (Some(_), Some(var)) => {
            c.error(span(var), "a location is either a `page` or a `var`, not both");
            return None;
        }
        (None, None) => {
            c.error(
                vs,
                format!("location `{name}`: expected `page = \"rw\"|\"ro\"|\"none\"|\"unmapped\"` or `var = N`"),
            );
            return None;
        }
        (None, Some(var)) => {
            loc.kind = LocKind::Var;
            loc.perm = Perm::None;
            loc.init = value(c, var)?;
            for (what, present) in [
                ("value", r.value.as_ref().map(span)),
                ("va", r.va.as_ref().map(span)),
                ("shared", r.shared.as_ref().map(span)),
            ] {
                if let Some(sp) = present {
                    c.error(sp, format!("`{what}` does not apply to a `var` (its value is `var = N`)"));
                }
            }
        }
        (Some(page), None) => {
            match page.get_ref().as_str() {
                "rw" => loc.perm = Perm::Rw,
                "ro" => loc.perm = Perm::Ro,
                "none" => loc.perm = Perm::None,
                "unmapped" => {
                    loc.kind = LocKind::Unmapped;
                    loc.perm = Perm::None;
                }
                other => {
                    c.error(span(page), format!("invalid page permission `{other}`"))
                        .notes
                        .push("expected one of: rw, ro, none, unmapped".into());
                    return None;
                }
            }
            if let Some(x) = &r.value {
                if loc.kind == LocKind::Unmapped {
                    c.error(span(x), "an unmapped location has no value");
                } else {
                    loc.init = value(c, x)?;
                }
            }
            if let Some(s) = &r.shared {
                if loc.kind == LocKind::Unmapped && *s.get_ref() {
                    c.error(span(s), "`shared` applies to mapped pages only");
                }
                loc.shared = *s.get_ref();
            }
            if let Some(va) = &r.va {
                let t = va.get_ref();
                let parsed = t.strip_prefix("0x").and_then(|h| u64::from_str_radix(&h.replace('_', ""), 16).ok());
                match parsed {
                    Some(a) if pinned_va_ok(a) => loc.va = Some(a),
                    Some(_) => {
                        c.error(
                            span(va),
                            format!(
                                "`va = \"{t}\"` is not a page of the test's address space: a pinned address is 4 KiB aligned, at least {TEST_VA_START:#x} and below {TEST_VA_END:#x}"
                            ),
                        )
                        .notes
                        .push(format!("below {TEST_VA_START:#x} is the guest kernel's own mapping"));
                    }
                    None => {
                        c.error(span(va), format!("expected a hex address like \"0x7f0000000000\", found \"{t}\""));
                    }
                }
            }
        }
    }
    Some(loc)
}

/// Resolve location names in code, add implicit flags (their first use goes
/// to `loc_spans`), and the register / flag sanity checks. Linear in the
/// code: names are looked up in a map, never by scanning.
fn check_code_names(
    c: &mut Checker<'_>,
    threads: &[Thread],
    locations: &mut Vec<Location>,
    loc_spans: &mut Vec<(usize, usize)>,
) {
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, l) in locations.iter().enumerate() {
        index.entry(l.name.clone()).or_insert(i);
    }
    let mut written_flags: BTreeSet<String> = BTreeSet::new();
    let mut waits: Vec<(String, (usize, usize), Option<u64>)> = Vec::new();
    for t in threads {
        let mut writes: BTreeSet<u8> = BTreeSet::new();
        let mut reads: Vec<(u8, (usize, usize))> = Vec::new();
        let mut all: Vec<&Stmt> = Vec::new();
        for s in &t.code {
            s.walk(&mut |s| all.push(s));
        }
        for s in all {
            if let Some(d) = s.dst {
                writes.insert(d);
            }
            for v in [s.val, s.val2].into_iter().flatten() {
                if let Operand::Reg(r) = v {
                    reads.push((r, s.span));
                }
            }
            let mut check = |c: &mut Checker<'_>, name: &str, sp: (usize, usize)| {
                let kind = index.get(name).map(|&i| locations[i].kind);
                match s.op {
                    Op::Wait | Op::Signal => match kind {
                        Some(LocKind::Var) => {}
                        Some(k) => {
                            c.error(
                                sp,
                                format!(
                                    "`{}` needs a flag (a `var` or an undeclared name), but `{name}` is a {} location",
                                    s.op.name(),
                                    k.name()
                                ),
                            );
                        }
                        None => {
                            if RESERVED_NAMES.contains(&name) {
                                c.error(sp, format!("`{name}` is a reserved word and cannot name a flag"));
                            } else if check_name_len(c, "flag name", name, sp) {
                                index.insert(name.to_string(), locations.len());
                                locations.push(Location {
                                    name: name.to_string(),
                                    kind: LocKind::Var,
                                    perm: Perm::None,
                                    init: 0,
                                    shared: false,
                                    va: None,
                                    implicit: true,
                                });
                                loc_spans.push(sp);
                            }
                        }
                    },
                    _ => {
                        let is_mem = matches!(s.op, Op::Load | Op::Store | Op::Xchg | Op::Cmpxchg | Op::FetchAdd);
                        match kind {
                            None => {
                                c.error(sp, format!("undeclared location `{name}`")).notes.push(format!(
                                    "declare it in [locations], e.g. `{name} = {{ page = \"rw\", value = 0 }}`"
                                ));
                            }
                            Some(LocKind::Var) if !is_mem => {
                                c.error(
                                    sp,
                                    format!("`{}` needs a page location, but `{name}` is a `var` (a kernel word, not part of the test mm)", s.op.name()),
                                );
                            }
                            _ => {}
                        }
                    }
                }
            };
            if let Some(l) = &s.loc {
                check(c, l, s.loc_span);
                match s.op {
                    Op::Signal | Op::Store | Op::Xchg | Op::Cmpxchg | Op::FetchAdd => {
                        written_flags.insert(l.clone());
                    }
                    Op::Wait => waits.push((
                        l.clone(),
                        s.span,
                        if s.arg == WaitCmp::Eq as u8 {
                            s.val.and_then(|v| match v {
                                Operand::Imm(i) => Some(i),
                                Operand::Reg(_) => None,
                            })
                        } else {
                            None
                        },
                    )),
                    _ => {}
                }
            }
            if let Some(l) = &s.loc2 {
                check(c, l, s.loc2_span);
            }
        }
        for (r, sp) in reads {
            if !writes.contains(&r) {
                c.warning(sp, format!("thread {} reads r{r}, which it never writes (registers start at 0)", t.name));
            }
        }
    }
    for (flag, sp, want) in waits {
        let Some(l) = index.get(&flag).map(|&i| &locations[i]).filter(|l| l.kind == LocKind::Var) else {
            continue;
        };
        let satisfied_initially = match want {
            Some(v) => l.init == v,
            None => l.init != 0,
        };
        if !written_flags.contains(&flag) && !satisfied_initially {
            c.warning(sp, format!("`wait {flag}` waits for a flag no thread signals: every iteration will time out"));
        }
    }
}

/// Threads and locations by name, and the registers each thread writes:
/// what `[final]` resolves against, in constant time per name.
struct Scope<'t> {
    threads: &'t [Thread],
    thread_index: HashMap<&'t str, usize>,
    /// Bit r set: thread writes register r.
    written_regs: Vec<u32>,
    loc_index: HashMap<&'t str, usize>,
}

impl<'t> Scope<'t> {
    fn new(threads: &'t [Thread], locations: &'t [Location]) -> Self {
        let mut thread_index = HashMap::new();
        for (i, t) in threads.iter().enumerate() {
            thread_index.entry(t.name.as_str()).or_insert(i);
        }
        let mut loc_index = HashMap::new();
        for (i, l) in locations.iter().enumerate() {
            loc_index.entry(l.name.as_str()).or_insert(i);
        }
        let written_regs = threads
            .iter()
            .map(|t| {
                let mut mask = 0u32;
                for s in &t.code {
                    s.walk(&mut |s| {
                        if let Some(r) = s.dst.filter(|r| u32::from(*r) < u32::BITS) {
                            mask |= 1 << r;
                        }
                    });
                }
                mask
            })
            .collect();
        Scope { threads, thread_index, written_regs, loc_index }
    }
}

/// Resolve `T:rN` or a location name to an observable.
fn resolve_observable(c: &mut Checker<'_>, text: &str, sp: (usize, usize), scope: &Scope<'_>) -> Option<Observable> {
    if let Some((t, r)) = text.split_once(':') {
        let Some(&ti) = scope.thread_index.get(t) else {
            let names: Vec<&str> = scope.threads.iter().take(16).map(|t| t.name.as_str()).collect();
            let more = if scope.threads.len() > names.len() { ", …" } else { "" };
            c.error(sp, format!("unknown thread `{t}` in `{text}`"))
                .notes
                .push(format!("threads: {}{more}", names.join(", ")));
            return None;
        };
        let Some(reg) = register_index(r) else {
            c.error(sp, format!("expected a register r0 … r31 after `{t}:`, found `{r}`"));
            return None;
        };
        if scope.written_regs[ti] & (1 << reg) == 0 {
            c.error(sp, format!("`{text}` is read in [final] but thread {t} never writes r{reg}"));
            return None;
        }
        Some(Observable::Reg { thread: ti, reg })
    } else {
        match scope.loc_index.get(text) {
            Some(&loc) => Some(Observable::Loc { loc }),
            None => {
                c.error(sp, format!("unknown location `{text}` in [final]"))
                    .notes
                    .push("observe registers as THREAD:rN (e.g. P0:r1) or declared locations by name".into());
                None
            }
        }
    }
}

/// What the guest reports per iteration, in order, with where each entry
/// first appears (an `observe` item or a condition atom).
#[derive(Default)]
struct Observed {
    list: Vec<Observable>,
    index: HashMap<Observable, usize>,
    spans: Vec<(usize, usize)>,
}

impl Observed {
    /// Index of `o`, added if new.
    fn add(&mut self, o: Observable, sp: (usize, usize)) -> (usize, bool) {
        if let Some(&i) = self.index.get(&o) {
            return (i, false);
        }
        let i = self.list.len();
        self.index.insert(o.clone(), i);
        self.list.push(o);
        self.spans.push(sp);
        (i, true)
    }
}

fn resolve_expr(c: &mut Checker<'_>, e: &RawExpr, observed: &mut Observed, scope: &Scope<'_>) -> Option<Expr> {
    let terms = |c: &mut Checker<'_>, es: &[RawExpr], observed: &mut Observed| -> Option<Vec<Expr>> {
        // Every term is resolved (all errors reported), then any failure fails.
        let resolved: Vec<Option<Expr>> = es.iter().map(|e| resolve_expr(c, e, observed, scope)).collect();
        resolved.into_iter().collect()
    };
    Some(match e {
        RawExpr::True => Expr::True,
        RawExpr::False => Expr::False,
        RawExpr::Cmp { lhs, span, eq, value } => {
            let o = resolve_observable(c, lhs, *span, scope)?;
            let (i, _) = observed.add(o, *span);
            let v = crate::ast::CondValue(*value);
            if *eq {
                Expr::Eq(i, v)
            } else {
                Expr::Ne(i, v)
            }
        }
        RawExpr::Not(x) => Expr::Not(Box::new(resolve_expr(c, x, observed, scope)?)),
        RawExpr::And(es) => Expr::And(terms(c, es, observed)?),
        RawExpr::Or(es) => Expr::Or(terms(c, es, observed)?),
    })
}

fn check_final(
    c: &mut Checker<'_>,
    raw: &RawFile,
    threads: &[Thread],
    locations: &[Location],
) -> Option<(Vec<Observable>, Condition)> {
    let Some(fin) = &raw.fin else {
        c.error((0, 0), "missing [final] table: a test needs `forbidden = \"…\"` or `exists = \"…\"`");
        return None;
    };
    let f = fin.get_ref();
    let scope = Scope::new(threads, locations);
    let mut observed = Observed::default();
    for o in &f.observe {
        if let Some(x) = resolve_observable(c, o.get_ref(), span(o), &scope) {
            if !observed.add(x, span(o)).1 {
                c.warning(span(o), format!("`{}` is observed twice", o.get_ref()));
            }
        }
    }
    let (kind, text) = match (&f.forbidden, &f.exists) {
        (Some(_), Some(e)) => {
            c.error(span(e), "give either `forbidden` or `exists`, not both");
            return None;
        }
        (None, None) => {
            c.error(span(fin), "[final] needs a condition: `forbidden = \"…\"` or `exists = \"…\"`");
            return None;
        }
        (Some(x), None) => (CondKind::Forbidden, x),
        (None, Some(x)) => (CondKind::Exists, x),
    };
    let map = text_map(c.file, span(text), text.get_ref());
    let raw_expr = match parse_condition(c.file, &map, text.get_ref()) {
        Ok(e) => e,
        Err(d) => {
            c.push(d);
            return None;
        }
    };
    let expr = resolve_expr(c, &raw_expr, &mut observed, &scope);
    if let Some(&sp) = observed.spans.get(MAX_OBSERVED) {
        c.error(
            sp,
            format!(
                "too many observed values: this is number {}; a test observes at most {MAX_OBSERVED} (`[final] observe` and what the condition reads)",
                MAX_OBSERVED + 1
            ),
        );
        return None;
    }
    Some((observed.list, Condition { kind, expr: expr? }))
}

fn check_expect(c: &mut Checker<'_>, raw: &RawFile, threads: &[Thread]) -> Vec<Expectation> {
    // Operations younger than some profile (uffd_wp): a kernel before it
    // cannot run the test at all.
    let mut young: Vec<(String, abi::policy::Release)> = Vec::new();
    for t in threads {
        for s in &t.code {
            s.walk(&mut |s| {
                if let Some(r) = crate::kernels::since(s) {
                    let what = if s.op == Op::Madvise { "madvise free".to_string() } else { s.op.name().to_string() };
                    if !young.iter().any(|(w, _)| *w == what) {
                        young.push((what, r));
                    }
                }
            });
        }
    }
    let mut items: Vec<_> = raw.expect.iter().collect();
    items.sort_by_key(|(k, _)| k.span().start);
    if let Some((k, _)) = items.get(MAX_EXPECTATIONS) {
        c.error(span(k), format!("too many [expect] entries: a test has at most {MAX_EXPECTATIONS}"));
        items.truncate(MAX_EXPECTATIONS);
    }
    let mut out: Vec<Expectation> = Vec::new();
    for (k, v) in items {
        let key = k.get_ref();
        let map = text_map(c.file, span(k), key);
        let policy = match Policy::parse(key) {
            Ok(p) => Some(p),
            Err(e) => {
                let (s, en) = (map.file_offset(e.start), map.file_offset(e.end));
                let d = c.error((s, en), format!("in [expect] policy: {}", e.message));
                d.notes.extend(e.notes);
                None
            }
        };
        let verdict = Verdict::from_name(v.get_ref());
        if verdict.is_none() {
            c.error(span(v), format!("invalid verdict \"{}\"", v.get_ref()))
                .notes
                .push("expected one of: never, sometimes, always".into());
        }
        if let (Some(policy), Some(verdict)) = (policy, verdict) {
            // Compare what the keys resolve to, not how they are written:
            // `default` and `flush=pending` are one policy, and an entry that
            // leaves `tlb` open overlaps one that names it.
            if let Some(prev) = out.iter().find(|e| expectations_overlap(&e.policy, &policy)) {
                let msg = if prev.verdict == verdict {
                    format!("[expect] `{key}` is the same policy as `{}`", prev.key)
                } else {
                    format!(
                        "[expect] `{key}` = \"{}\" contradicts `{}` = \"{}\": both resolve to the same policy",
                        verdict.name(),
                        prev.key,
                        prev.verdict.name()
                    )
                };
                let d = c.error(span(k), msg);
                d.notes.push(format!("both mean: {}", full_policy_text(&policy)));
                continue;
            }
            // Every kernel it covers must have been real, and have the test's operations.
            let mut bad = false;
            for kern in policy.kernels() {
                let p = policy.on_kernel(kern);
                let reality = p.reality();
                if reality.is_hypothetical() && !c.opts.allow_hypothetical {
                    let d = c.error(span(k), format!("[expect] `{key}` is no kernel that existed"));
                    d.notes.push(format!("on {}: {reality}", kern.name()));
                    d.notes.push("run with --allow-hypothetical to accept it (labelled hypothetical)".into());
                    bad = true;
                    break;
                }
                if let Some((what, since)) = young.iter().find(|(_, r)| kern.release() < *r) {
                    c.error(span(k), format!("[expect] `{key}`: {} has no `{what}` (since {since})", kern.name()));
                    bad = true;
                    break;
                }
            }
            if bad {
                continue;
            }
            // Entries that cover one run must agree.
            let runs: Vec<Policy> = policy.kernels().into_iter().map(|kern| policy.on_kernel(kern)).collect();
            if let Some(prev) =
                out.iter().find(|e| e.verdict != verdict && runs.iter().any(|r| e.policy.expectation_applies(r)))
            {
                let msg = format!(
                    "[expect] `{key}` = \"{}\" contradicts `{}` = \"{}\": both cover one kernel",
                    verdict.name(),
                    prev.key,
                    prev.verdict.name()
                );
                c.error(span(k), msg);
                continue;
            }
            out.push(Expectation { key: key.clone(), policy, verdict });
        }
    }
    out
}

/// Would a run match both `[expect]` policies? Every kernel-behaviour key
/// must resolve to the same value; the cache models `tlb`/`iotlb` only
/// separate two entries when both name them (see
/// [`Policy::expectation_applies`]).
/// `kernel` ranges are compared kernel by kernel by the caller.
fn expectations_overlap(a: &Policy, b: &Policy) -> bool {
    if a.kernel_range().is_some() || b.kernel_range().is_some() {
        return false;
    }
    KEYS.iter().all(|k| {
        let open = matches!(k.key, Key::Tlb | Key::Iotlb) && (!a.is_explicit(k.key) || !b.is_explicit(k.key));
        open || k.key == Key::Kernel || a.get(k.key) == b.get(k.key)
    })
}

fn full_policy_text(p: &Policy) -> String {
    p.full().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The test's `Hash=`, built the way herdtools7 builds it
/// (`lib/testHash.ml`, `digest`): the hex MD5 of the concatenated raw MD5s
/// of the metadata (none for us: empty, as herd's when no digested key is
/// given), the initial state, the code and the observed locations. As in
/// herd, the condition is left out, so a test whose condition alone changes
/// (herd's `recond7`) keeps its hash, and so do renamed, re-commented or
/// reformatted copies. Each part is our own normal form in herd's layout:
///
/// * init: `TYPE NAME=VALUE` sorted by name, joined by `"; "` (herd's
///   `digest_init`), TYPE being our location kind (`page-rw`,
///   `shared-page-ro`, `unmapped`, `var`, with `@0x…` for a pinned VA);
/// * code: one column per thread (vCPU threads, then devices), the first
///   row the thread kinds, then one canonical statement per cell, cells
///   `" %-W "` joined by `|`, each row ended by `";\n"` (herd's
///   `Misc.string_of_prog`);
/// * observed: the observed list in herd spelling (`2:r1`, `x`), sorted,
///   joined by `"; "` (herd's `digest_observed`).
///
/// The value cannot equal herd's for any herd test (our code is not
/// assembly); what carries over is what the hash is for: two logs with
/// one hash ran the same program from the same state.
pub fn test_hash(t: &Test) -> String {
    let md5 = |s: &str| -> [u8; 16] { Md5::digest(s.as_bytes()).into() };
    // Init.
    let mut init: Vec<(String, String)> = t
        .locations
        .iter()
        .map(|l| {
            let mut ty = match l.kind {
                LocKind::Page => format!("{}page-{}", if l.shared { "shared-" } else { "" }, l.perm.name()),
                other => other.name().to_string(),
            };
            if let Some(va) = l.va {
                ty += &format!("@{va:#x}");
            }
            (l.name.clone(), format!("{ty} {}={}", l.name, l.init))
        })
        .collect();
    init.sort();
    let init: Vec<String> = init.into_iter().map(|(_, s)| s).collect();
    // Code, in herd's column layout.
    let columns: Vec<Vec<String>> = t
        .threads
        .iter()
        .map(|th| {
            let mut col = vec![th.kind.name().to_string()];
            col.extend(th.code.iter().map(|st| st.to_string().split_whitespace().collect::<Vec<_>>().join(" ")));
            col
        })
        .collect();
    let widths: Vec<usize> = columns.iter().map(|c| c.iter().map(|s| s.len()).max().unwrap_or(0)).collect();
    let rows = columns.iter().map(|c| c.len()).max().unwrap_or(0);
    let mut code = String::new();
    for row in 0..rows {
        let cells: Vec<String> = columns
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {:<w$} ", c.get(row).map_or("", |s| s.as_str()), w = *w))
            .collect();
        code += &cells.join("|");
        code += ";\n";
    }
    // Observed locations.
    let mut observed: Vec<String> = t
        .observed
        .iter()
        .map(|o| match o {
            Observable::Reg { .. } => o.herd_name(t),
            Observable::Loc { loc } => t.locations[*loc].name.clone(),
        })
        .collect();
    observed.sort();
    let mut all = Vec::with_capacity(48);
    all.extend_from_slice(&md5(&init.join("; ")));
    all.extend_from_slice(&md5(&code));
    all.extend_from_slice(&md5(&observed.join("; ")));
    let d = Md5::digest(&all);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"name = "madv-dontneed-concurrent"
doc  = "Two zaps of one page; the second sees pte_none and skips its flush."

[locations]
x = { page = "rw", value = 1 }   # a page of the test mm; first word = 1

[thread.P0]
code = """
wait warm
madvise x dontneed at after_ptl_release { signal s1; wait s2 }
"""

[thread.P1]
code = """
wait s1
madvise x dontneed
signal done
wait read
signal s2
"""

[thread.P2]
code = """
load x -> r0          # warm this vCPU's TLB first
signal warm
wait done
load x -> r1          # after P1's madvise returned
signal read
"""

[final]
observe   = ["P2:r0", "P2:r1"]
forbidden = "P2:r1 == 1"

[expect]
"flush=pending"                         = "never"
"flush=pending,madv-nested-check=off"   = "sometimes"
"#;

    fn errors(src: &str) -> Vec<Diagnostic> {
        let r = check_source("t.toml", src);
        assert!(r.test.is_none(), "expected errors");
        r.diagnostics.into_iter().filter(|d| d.is_error()).collect()
    }

    #[test]
    fn example_checks() {
        let r = check_source("ex.toml", EXAMPLE);
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
        let t = r.test.unwrap();
        assert_eq!(t.name, "madv-dontneed-concurrent");
        assert_eq!(t.threads.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["P0", "P1", "P2"]);
        let names: Vec<&str> = t.locations.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["x", "warm", "s1", "s2", "done", "read"]);
        assert!(t.locations[1].implicit);
        assert_eq!(t.observed.len(), 2);
        assert_eq!(t.condition.expr.herd(&t), "2:r1=1");
        assert_eq!(t.expect.len(), 2);
        assert_eq!(t.expect[1].verdict, Verdict::Sometimes);
        assert_eq!(t.hash.len(), 32);
        assert_eq!(t.threads[0].code[1].line, 10);
        // Comments and spacing do not change the hash; code does.
        let t2 = check_source("b", &EXAMPLE.replace("# a page of the test mm; first word = 1", "")).test.unwrap();
        assert_eq!(t.hash, t2.hash);
        let t3 = check_source("c", &EXAMPLE.replace("load x -> r1 ", "load x -> r2\nload x -> r1")).test.unwrap();
        assert_ne!(t.hash, t3.hash);
        // As in herdtools7 (lib/testHash.ml), the condition is not hashed:
        // a re-conditioned test keeps its hash; the observed list is.
        let t4 = check_source("d", &EXAMPLE.replace("forbidden = \"P2:r1 == 1\"", "forbidden = \"P2:r1 == 0\""));
        assert_eq!(t.hash, t4.test.unwrap().hash);
        let t5 =
            check_source("e", &EXAMPLE.replace("forbidden = \"P2:r1 == 1\"", "forbidden = \"P2:r1 == 0 && x == 1\""));
        assert_ne!(t.hash, t5.test.unwrap().hash);
    }

    #[test]
    fn unknown_op_in_third_code_line() {
        let src = EXAMPLE.replace("wait done\nload x -> r1", "wait done\nlaod x -> r1");
        let d = errors(&src);
        // Line 27 of the file is the 4th line of P2's code block.
        assert_eq!(d[0].headline(), "t.toml:27:1: error: unknown operation `laod`");
        assert!(d[0].notes[0].starts_with("valid operations in a vCPU thread: load, store"));
        // P2:r1 is then written by no one: reported too (all errors at once).
        assert!(d.iter().any(|e| e.message.contains("never writes r1")), "{d:?}");
    }

    #[test]
    fn bad_hook_position() {
        let src = EXAMPLE.replace("at after_ptl_release", "at after_ptl_unlock");
        let d = errors(&src);
        assert_eq!(d[0].headline(), "t.toml:10:23: error: unknown hook `after_ptl_unlock`");
        assert!(d[0].notes[0].contains("after_ptl_release"));
    }

    #[test]
    fn bad_policy_key_lists_valid_ones() {
        let src = EXAMPLE.replace("\"flush=pending,madv-nested-check=off\"", "\"flush=pending,madv-nested=off\"");
        let d = errors(&src);
        let line = src.lines().position(|l| l.contains("madv-nested=off")).unwrap() as u32 + 1;
        assert_eq!(d[0].line, line);
        assert_eq!(d[0].col, 16);
        assert_eq!(d[0].message, "in [expect] policy: unknown policy key `madv-nested`");
        assert!(d[0].notes[0].contains("madv-nested-check"));
        let src = EXAMPLE.replace("= \"sometimes\"", "= \"often\"");
        let d = errors(&src);
        assert_eq!(d[0].message, "invalid verdict \"often\"");
    }

    #[test]
    fn bad_toml_has_position() {
        let d = errors("name = \"x\"\n[locations]\nx = { page = \"rw\" \n");
        assert_eq!(d[0].line, 3);
        assert!(d[0].message.starts_with("invalid TOML"), "{}", d[0]);
        let d = errors("name = \"x\"\nnmae = 1\n");
        assert_eq!((d[0].line, d[0].col), (2, 1));
        assert!(d[0].message.contains("unknown field `nmae`"), "{}", d[0]);
    }

    #[test]
    fn semantic_errors() {
        let base = "name = \"t\"\n[locations]\nx = { page = \"rw\" }\nf = { var = 0 }\n";
        let d = errors(&format!(
            "{base}[thread.P0]\ncode = \"load y -> r0\\nmunmap f\\nwait x\"\n[final]\nforbidden = \"P0:r0 == 1\"\nexists = \"P0:r0 == 1\"\n"
        ));
        let msgs: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert!(msgs.contains(&"undeclared location `y`"), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.starts_with("`munmap` needs a page location")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.starts_with("`wait` needs a flag")), "{msgs:?}");
        assert!(msgs.contains(&"give either `forbidden` or `exists`, not both"), "{msgs:?}");
        // Positions inside a basic string with escapes: `munmap` is on file line 6.
        let m = d.iter().find(|d| d.message.starts_with("`munmap`")).unwrap();
        assert_eq!((m.line, m.col), (6, 30));
        let d = errors(&format!(
            "{base}[thread.P0]\ncode = \"load x -> r0\"\n[final]\nforbidden = \"P1:r0 == 1 && P0:r3 == 0\"\n"
        ));
        assert!(d[0].message.starts_with("unknown thread `P1`"));
        assert!(d[1].message.contains("never writes r3"));
        let d = errors(&format!("{base}[thread.P0]\ncode = \"load x -> r0\"\n"));
        assert!(d[0].message.starts_with("missing [final]"));
        let d = errors("name = \"t\"\n[locations]\nx = { page = \"rx\" }\nr1 = { var = 1 }\n[thread.P0]\ncode = \"mfence\"\n[final]\nexists = \"true\"\n");
        assert_eq!(d[0].notes[0], "expected one of: rw, ro, none, unmapped");
        assert!(d[1].message.contains("looks like a register"));
    }

    /// Entries are compared by the policy they resolve to: `default` is
    /// `flush=pending`, and an entry without `tlb` overlaps `tlb=lazy`.
    #[test]
    fn contradictory_expectations_resolving_to_one_policy() {
        let with = |expect: &str| EXAMPLE.split("[expect]").next().unwrap().to_string() + "[expect]\n" + expect;
        let d = errors(&with("\"flush=pending\" = \"never\"\n\"default\" = \"sometimes\"\n"));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].message.contains("`default` = \"sometimes\" contradicts `flush=pending` = \"never\""), "{}", d[0]);
        let line = EXAMPLE.split("[expect]").next().unwrap().lines().count() as u32 + 3;
        assert_eq!((d[0].line, d[0].col), (line, 1), "{}", d[0]);
        assert!(d[0].notes[0].starts_with("both mean: "), "{:?}", d[0].notes);
        let d = errors(&with(
            "\"flush=pending,madv-nested-check=off\" = \"sometimes\"\n\"madv-nested-check=off,tlb=lazy\" = \"never\"\n",
        ));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].message.contains("contradicts"), "{}", d[0]);
        let d = errors(&with("\"kernel=v4.19\" = \"never\"\n\"kernel=v4.19,tlb=lazy\" = \"never\"\n"));
        assert!(d[0].message.contains("is the same policy as"), "{}", d[0]);
        // Different cache models named on both sides are different rows.
        let ok = check_source("t.toml", &with("\"tlb=lazy\" = \"never\"\n\"tlb=evict:0.5\" = \"sometimes\"\n"));
        assert!(ok.test.is_some(), "{:?}", ok.diagnostics);
    }

    #[test]
    fn all_errors_of_a_file_at_once() {
        let src = EXAMPLE
            .replace("forbidden = \"P2:r1 == 1\"", "forbidden = \"P3:r1 == 1\"")
            .replace("\"flush=pending\" ", "\"flush=pendin\" ")
            .replace("x = { page = \"rw\", value = 1 }", "x = { page = \"rx\", value = 1 }");
        let d = errors(&src);
        let msgs: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(d.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("invalid page permission"));
        assert!(msgs[1].starts_with("unknown thread `P3`"));
        assert!(msgs[2].starts_with("in [expect] policy: invalid value `pendin`"));
    }

    #[test]
    fn positions_in_literal_and_crlf_and_continued_strings() {
        let lit = "name = 't'\n[locations]\nx = { page = 'rw' }\n[thread.P0]\ncode = '''\nload x -> r0\n  lod x\n'''\n[final]\nexists = 'P0:r0 == 0'\n";
        let d = errors(lit);
        assert_eq!((d[0].line, d[0].col), (7, 3), "{}", d[0]);
        let crlf = lit.replace('\n', "\r\n");
        let d = errors(&crlf);
        assert_eq!((d[0].line, d[0].col), (7, 3), "{}", d[0]);
        let cont = "name = \"t\"\n[locations]\nx = { page = \"rw\" }\n[thread.P0]\ncode = \"\"\"\nload x -> r0; \\\n   lod x\n\"\"\"\n[final]\nexists = \"P0:r0 == 0\"\n";
        let d = errors(cont);
        assert_eq!((d[0].line, d[0].col), (7, 4), "{}", d[0]);
    }

    #[test]
    fn warnings_do_not_block() {
        let src = "name = \"t\"\n[locations]\nx = { page = \"rw\" }\n[thread.P0]\ncode = \"wait never_set\\nstore x r5\\nload x -> r0\"\n[final]\nexists = \"P0:r0 == 0 && x == fault\"\n";
        let r = check_source("w.toml", src);
        let t = r.test.expect("warnings only");
        assert_eq!(r.diagnostics.len(), 2, "{:?}", r.diagnostics);
        assert!(r.diagnostics.iter().all(|d| !d.is_error()));
        assert!(r.diagnostics[0].message.contains("no thread signals"));
        assert!(r.diagnostics[1].message.contains("never writes"));
        // x was added to the observed list by the condition.
        assert_eq!(t.observed.len(), 2);
        assert_eq!(t.condition.expr.herd(&t), "0:r0=0 /\\ [x]=FAULT");
    }
}
