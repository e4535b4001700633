//! How herdtools7's log tools read our text output: a transcription of
//! the log lexer of `mcompare7`, `msum7` and friends
//! (`tools/lexLog_tools.mll`, rules `main`, `pstate`, `plines`, `pline`,
//! `pwitnesses`, `pcond`, `phash`; herdtools7 7.57, unchanged in the parts
//! we use at 7.58 and HEAD except that HEAD's `testname` also takes `:`)
//! and of the condition parser they run on `Condition` lines
//! (`lib/stateLexer.mll`, `lib/stateParser.mly`'s `skip_loc_constr`,
//! called from `tools/logConstr.ml`).
//!
//! The tools give up on a whole file at the first line their lexer cannot
//! read (a `Lex error`, the file then contributes nothing and the tool
//! still exits 0), drop a test's condition when it does not parse, and
//! stop reading a block's trailer (`Hash=`, `Time`) at the first line
//! `phash` does not know. [`read_log`] reproduces all three, so the tests
//! can check that every block we print survives them — without OCaml.
//!
//! ocamllex semantics are kept where they matter: at each point every rule
//! is tried, the longest match wins and, on a tie, the rule written first.
//! Regular expressions are matched as sets of end positions, so the
//! longest overall match is found as ocamllex finds it. Only the value and
//! location forms herd logs use are transcribed (numbers, names, `name:name`,
//! `name+N`, fault atoms; not sets, page-table values or `instr:`): a line
//! outside them is reported as unreadable, which is on the safe side.

use std::collections::BTreeSet;
use std::fmt;

// ---------------------------------------------------------------------------
// A tiny regular-expression engine over bytes: every end position.

#[derive(Clone, Debug)]
enum Re {
    Lit(&'static [u8]),
    Class(fn(u8) -> bool),
    Seq(Vec<Re>),
    Alt(Vec<Re>),
    Star(Box<Re>),
}

fn lit(s: &'static str) -> Re {
    Re::Lit(s.as_bytes())
}
fn class(f: fn(u8) -> bool) -> Re {
    Re::Class(f)
}
fn seq(v: Vec<Re>) -> Re {
    Re::Seq(v)
}
fn alt(v: Vec<Re>) -> Re {
    Re::Alt(v)
}
fn star(r: Re) -> Re {
    Re::Star(Box::new(r))
}
fn plus(r: Re) -> Re {
    seq(vec![r.clone(), star(r)])
}
fn opt(r: Re) -> Re {
    alt(vec![r, lit("")])
}

impl Re {
    /// Every position where a match starting at `i` can end.
    fn ends(&self, s: &[u8], i: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        match self {
            Re::Lit(l) => {
                if s[i..].starts_with(l) {
                    out.insert(i + l.len());
                }
            }
            Re::Class(f) => {
                if i < s.len() && f(s[i]) {
                    out.insert(i + 1);
                }
            }
            Re::Seq(v) => {
                let mut cur: BTreeSet<usize> = [i].into();
                for r in v {
                    let mut next = BTreeSet::new();
                    for &p in &cur {
                        next.extend(r.ends(s, p));
                    }
                    cur = next;
                    if cur.is_empty() {
                        break;
                    }
                }
                out = cur;
            }
            Re::Alt(v) => {
                for r in v {
                    out.extend(r.ends(s, i));
                }
            }
            Re::Star(r) => {
                out.insert(i);
                let mut frontier = vec![i];
                while let Some(p) = frontier.pop() {
                    for e in r.ends(s, p) {
                        if e > p && out.insert(e) {
                            frontier.push(e);
                        }
                    }
                }
            }
        }
        out
    }

    /// The longest match at `i`, if any.
    fn longest(&self, s: &[u8], i: usize) -> Option<usize> {
        self.ends(s, i).into_iter().next_back()
    }
}

fn is_digit(c: u8) -> bool {
    c.is_ascii_digit()
}
fn is_alpha(c: u8) -> bool {
    c.is_ascii_alphabetic()
}
fn is_hexa(c: u8) -> bool {
    c.is_ascii_hexdigit()
}
fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}
fn not_nl(c: u8) -> bool {
    c != b'\r' && c != b'\n'
}

// The definitions of lexLog_tools.mll.
fn num() -> Re {
    plus(class(is_digit))
}
fn hexanum() -> Re {
    seq(vec![lit("0x"), plus(class(is_hexa))])
}
fn blank() -> Re {
    class(is_blank)
}
fn blanks() -> Re {
    star(blank())
}
fn nl() -> Re {
    alt(vec![lit("\n"), lit("\r\n")])
}
/// `name = (alpha|'_'|'.'|'$') (alpha|digit|'_'|'.')*`
fn name() -> Re {
    seq(vec![
        class(|c| is_alpha(c) || c == b'_' || c == b'.' || c == b'$'),
        star(class(|c| is_alpha(c) || is_digit(c) || c == b'_' || c == b'.')),
    ])
}
/// `loc = name | ('$' (alpha+|digit+))`
fn loc() -> Re {
    alt(vec![name(), seq(vec![lit("$"), alt(vec![plus(class(is_alpha)), plus(class(is_digit))])])])
}
/// `label = 'L' (alpha|digit)+` (7.57)
fn label() -> Re {
    seq(vec![lit("L"), plus(class(|c| is_alpha(c) || is_digit(c)))])
}
/// `fault = ['f''F'] "ault"`
fn fault() -> Re {
    seq(vec![class(|c| c == b'f' || c == b'F'), lit("ault")])
}
/// `fault_type = alpha+ (':' alpha+)?` (7.57)
fn fault_type() -> Re {
    seq(vec![plus(class(is_alpha)), opt(seq(vec![lit(":"), plus(class(is_alpha))]))])
}
/// `testname = (alpha|digit|'_'|'/'|'.'|'-'|'+'|'['|']')+`
fn testname() -> Re {
    plus(class(|c| is_alpha(c) || is_digit(c) || b"_/.-+[]".contains(&c)))
}
/// `validation = "Undef"|"Succeeded"|"Failed"|"Ok"|"No"|"??"`
fn validation() -> Re {
    alt(vec![lit("Undef"), lit("Succeeded"), lit("Failed"), lit("Ok"), lit("No"), lit("??")])
}
/// The location part of `pline`'s binding rule:
/// `(num ':' reg) | ('['? loc ']'?) | (loc '[' num ']')` (the `new_loc`
/// forms, `PTE(x)` and friends, are not transcribed).
fn pline_loc() -> Re {
    alt(vec![
        seq(vec![num(), lit(":"), name()]),
        seq(vec![opt(lit("[")), loc(), opt(lit("]"))]),
        seq(vec![loc(), lit("["), num(), lit("]")]),
    ])
}
/// The value part: `('-'? (num|hexanum)) | (name (':' name)?) | name_off |
/// (('P'? num) ':' label) | (':' alpha+)` (sets, page-table values,
/// `new_loc` and `instr:` are not transcribed).
fn pline_value() -> Re {
    alt(vec![
        seq(vec![opt(lit("-")), alt(vec![num(), hexanum()])]),
        seq(vec![name(), opt(seq(vec![lit(":"), name()]))]),
        seq(vec![name(), class(|c| c == b'-' || c == b'+'), alt(vec![num(), hexanum()])]),
        seq(vec![opt(lit("P")), num(), lit(":"), label()]),
        seq(vec![lit(":"), plus(class(is_alpha))]),
    ])
}

// ---------------------------------------------------------------------------
// What the tools read.

/// One histogram line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedState {
    pub count: u64,
    /// `(location, value)` as written (`2:r1`, `1`; `[x]`, `FAULT`).
    pub bindings: Vec<(String, String)>,
    /// Fault atoms, `fault(P1:L0,x)` or with a leading `~`, as written.
    pub faults: Vec<String>,
}

/// One test as herdtools7 reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedTest {
    pub name: String,
    /// The word after the name (`Forbidden`, `Allowed`, …).
    pub kind: String,
    /// 1-based line of the `Test` line.
    pub line: usize,
    pub states: Vec<LoggedState>,
    /// `Ok`, `No`, … (`None`: the file ended inside the histogram).
    pub validation: Option<String>,
    pub witnesses: Option<(u64, u64)>,
    /// The condition text (before ` is … validated`), if there is a `Condition` line …
    pub condition: Option<String>,
    /// … and whether herd's condition parser accepts it (else the tools drop it).
    pub condition_parses: bool,
    pub hash: Option<String>,
    pub time: Option<f64>,
}

impl LoggedTest {
    /// Total count over the histogram.
    pub fn total(&self) -> u64 {
        self.states.iter().map(|s| s.count).sum()
    }
}

/// A line herd's lexer cannot read: the whole file is then ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexError {
    pub line: usize,
    pub column: usize,
    /// The lexer rule that failed (`pline`, `main`, …), as herd names it.
    pub rule: &'static str,
    pub text: String,
}

impl fmt::Display for LexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, character {}: Lex error {}: {:?}", self.line, self.column, self.rule, self.text)
    }
}

impl std::error::Error for LexError {}

/// Above this many states a test is skipped by the tools (`nstates_limit`).
pub const NSTATES_LIMIT: usize = 1024;

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
    line_start: usize,
}

impl<'a> Lexer<'a> {
    fn rest_of_line(&self) -> &'a [u8] {
        let end = self.s[self.pos..].iter().position(|&c| c == b'\n').map_or(self.s.len(), |e| self.pos + e);
        &self.s[self.pos..end]
    }
    fn error(&self, rule: &'static str) -> LexError {
        LexError {
            line: self.line,
            column: self.pos - self.line_start,
            rule,
            text: String::from_utf8_lossy(self.rest_of_line()).into_owned(),
        }
    }
    fn text(&self, a: usize, b: usize) -> String {
        String::from_utf8_lossy(&self.s[a..b]).into_owned()
    }
    fn eof(&self) -> bool {
        self.pos >= self.s.len()
    }
    /// Consumes `len` bytes, counting newlines.
    fn advance(&mut self, len: usize) {
        for i in self.pos..self.pos + len {
            if self.s[i] == b'\n' {
                self.line += 1;
                self.line_start = i + 1;
            }
        }
        self.pos += len;
    }
    /// `[^'\r''\n']* nl` at the current position.
    fn whole_line(&self) -> Option<usize> {
        seq(vec![star(class(not_nl)), nl()]).longest(self.s, self.pos).map(|e| e - self.pos)
    }
}

/// Reads a log as `mcompare7`/`msum7` do: every test they would keep, or
/// the lexer error that makes them ignore the whole file.
pub fn read_log(text: &str) -> Result<Vec<LoggedTest>, LexError> {
    let mut lx = Lexer { s: text.as_bytes(), pos: 0, line: 1, line_start: 0 };
    let mut tests = Vec::new();
    // rule main
    loop {
        if lx.eof() {
            return Ok(tests);
        }
        let test_rule = seq(vec![
            lit("Test"),
            plus(blank()),
            testname(),
            alt(vec![seq(vec![plus(blank()), name()]), lit("")]),
            nl(),
        ]);
        let t_len = test_rule.longest(lx.s, lx.pos).map(|e| e - lx.pos);
        let g_len = lx.whole_line();
        match (t_len, g_len) {
            // A tie goes to the rule written first: `Test`.
            (Some(t), g) if g.is_none_or(|g| t >= g) => {
                let line = lx.line;
                let start = lx.pos + 4;
                let body = lx.text(start, lx.pos + t);
                let body = body.trim_end_matches(['\n', '\r']).trim_start_matches([' ', '\t']);
                let (name, kind) = match body.split_once([' ', '\t']) {
                    Some((n, k)) => (n.to_string(), k.trim_start_matches([' ', '\t']).to_string()),
                    None => (body.to_string(), String::new()),
                };
                lx.advance(t);
                if !matches!(
                    kind.as_str(),
                    "Allow"
                        | "Allowed"
                        | "Require"
                        | "Required"
                        | "Forbid"
                        | "Forbidden"
                        | ""
                        | "Unknown"
                        | "Undefined"
                ) {
                    // Warn.fatal "Lexing kind": the tool drops the file.
                    return Err(LexError { line, column: 0, rule: "main (kind)", text: kind });
                }
                if let Some(mut t) = pstate(&mut lx)? {
                    if t.states.len() < NSTATES_LIMIT {
                        t.name = name;
                        t.kind = kind;
                        t.line = line;
                        tests.push(t);
                    }
                }
            }
            (_, Some(g)) => lx.advance(g),
            _ => return Err(lx.error("main")),
        }
    }
}

fn empty_test() -> LoggedTest {
    LoggedTest {
        name: String::new(),
        kind: String::new(),
        line: 0,
        states: vec![],
        validation: None,
        witnesses: None,
        condition: None,
        condition_parses: false,
        hash: None,
        time: None,
    }
}

// rule pstate: skip to `Histogram`/`States`; `Fatal` drops the test.
fn pstate(lx: &mut Lexer) -> Result<Option<LoggedTest>, LexError> {
    loop {
        if lx.eof() {
            return Ok(Some(empty_test()));
        }
        let generated = lit("Generated assembler\n").longest(lx.s, lx.pos).map(|e| e - lx.pos);
        let states = seq(vec![lit("States"), opt(seq(vec![plus(blank()), plus(class(is_digit))])), nl()]);
        let histogram = seq(vec![
            lit("Histogram"),
            opt(seq(vec![
                plus(blank()),
                lit("("),
                plus(class(is_digit)),
                plus(blank()),
                lit("states"),
                blanks(),
                lit(")"),
            ])),
            nl(),
        ]);
        let fatal = seq(vec![lit("Fatal"), class(|c| c == b':' || c == b' '), star(class(not_nl)), nl()]);
        let cands = [
            generated,
            states.longest(lx.s, lx.pos).map(|e| e - lx.pos),
            histogram.longest(lx.s, lx.pos).map(|e| e - lx.pos),
            fatal.longest(lx.s, lx.pos).map(|e| e - lx.pos),
            lx.whole_line(),
        ];
        let Some(best) = pick(&cands) else { return Err(lx.error("pstate")) };
        let len = cands[best].unwrap();
        lx.advance(len);
        match best {
            0 => continue,
            1 | 2 => return plines(lx).map(Some),
            3 => return Ok(None),
            _ => continue,
        }
    }
}

/// The longest candidate; on a tie the first (ocamllex's rule order).
fn pick(cands: &[Option<usize>]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, c) in cands.iter().enumerate() {
        if let Some(l) = c {
            if best.is_none_or(|b| *l > cands[b].unwrap()) {
                best = Some(i);
            }
        }
    }
    best
}

// rule plines
fn plines(lx: &mut Lexer) -> Result<LoggedTest, LexError> {
    let mut t = empty_test();
    loop {
        let count_re = seq(vec![num(), blanks(), alt(vec![lit(":>"), lit("*>")])]);
        let a_len = count_re.longest(lx.s, lx.pos).map_or(0, |e| e - lx.pos);
        let a = Some(a_len);
        let b = seq(vec![blanks(), nl()]).longest(lx.s, lx.pos).map(|e| e - lx.pos);
        let c = seq(vec![opt(seq(vec![lit("Loop"), plus(blank())])), validation(), star(class(not_nl))])
            .longest(lx.s, lx.pos)
            .map(|e| e - lx.pos);
        // `eof` is a rule of its own, but the optional count prefix also
        // matches the empty string there and is written first.
        let Some(best) = pick(&[a, b, c]) else { return Err(lx.error("plines")) };
        match best {
            0 => {
                let len = a_len;
                let count = if len == 0 {
                    1
                } else {
                    let txt = lx.text(lx.pos, lx.pos + len);
                    let digits: String = txt.chars().take_while(|c| c.is_ascii_digit()).collect();
                    // Int64.of_string: a count beyond it raises, which the tools do not catch.
                    digits.parse::<i64>().map_err(|_| lx.error("plines (count)"))? as u64
                };
                lx.advance(len);
                let (bindings, faults) = pline(lx)?;
                t.states.push(LoggedState { count, bindings, faults });
            }
            1 => {
                lx.advance(b.unwrap());
                if t.states.is_empty() {
                    t.states.push(LoggedState { count: 1, bindings: vec![], faults: vec![] });
                }
            }
            _ => {
                let len = c.unwrap();
                let txt = lx.text(lx.pos, lx.pos + len);
                let txt = txt.strip_prefix("Loop").map_or(txt.as_str(), |r| r.trim_start()).to_string();
                lx.advance(len);
                let v = ["Undef", "Succeeded", "Failed", "Ok", "No", "??"]
                    .iter()
                    .find(|v| txt.starts_with(*v))
                    .map(|v| v.to_string());
                t.validation = v;
                t.witnesses = pwitnesses(lx);
                let (cond, parses) = pcond(lx);
                t.condition = cond;
                t.condition_parses = parses;
                // skip_empty_lines
                while let Some(e) = seq(vec![blanks(), nl()]).longest(lx.s, lx.pos) {
                    lx.advance(e - lx.pos);
                }
                let (hash, time) = phash(lx);
                t.hash = hash;
                t.time = time;
                return Ok(t);
            }
        }
    }
}

type Bindings = (Vec<(String, String)>, Vec<String>);

// rule pline: `loc=value;` bindings and fault atoms up to the end of the line.
fn pline(lx: &mut Lexer) -> Result<Bindings, LexError> {
    let mut bindings = Vec::new();
    let mut faults = Vec::new();
    loop {
        let s = lx.s;
        let p = lx.pos;
        // Alternative 1: blank* LOC blank* '=' blank* VALUE blank* ';'
        let mut best1: Option<(usize, usize, usize, usize, usize)> = None; // (end, loc_a, loc_b, val_a, val_b)
        let b0 = blanks().longest(s, p).unwrap_or(p);
        for le in pline_loc().ends(s, b0) {
            for e1 in blanks().ends(s, le) {
                if !s[e1..].starts_with(b"=") {
                    continue;
                }
                for vs in blanks().ends(s, e1 + 1) {
                    for ve in pline_value().ends(s, vs) {
                        for e2 in blanks().ends(s, ve) {
                            if s[e2..].starts_with(b";") {
                                let end = e2 + 1;
                                if best1.is_none_or(|b| end > b.0) {
                                    best1 = Some((end, b0, le, vs, ve));
                                }
                            }
                        }
                    }
                }
            }
        }
        // Alternative 2: a fault atom.
        let fault_re = seq(vec![
            blanks(),
            opt(lit("~")),
            fault(),
            blanks(),
            lit("("),
            blanks(),
            opt(lit("P")),
            num(),
            opt(seq(vec![lit(":"), name()])),
            blanks(),
            opt(seq(vec![lit(","), loc(), opt(seq(vec![lit(":"), plus(class(is_alpha))]))])),
            blanks(),
            opt(seq(vec![lit(","), blanks(), fault_type()])),
            blanks(),
            opt(seq(vec![lit(","), star(class(|c| c != b')'))])),
            lit(")"),
            blanks(),
            lit(";"),
        ]);
        let a2 = fault_re.longest(s, p).map(|e| e - p);
        // Alternative 3: end of the state.
        let a3 = seq(vec![blanks(), opt(seq(vec![lit("#"), star(class(|c| c != b'\n'))])), nl()])
            .longest(s, p)
            .map(|e| e - p);
        let cands = [best1.map(|b| b.0 - p), a2, a3];
        let Some(which) = pick(&cands) else { return Err(lx.error("pline")) };
        match which {
            0 => {
                let (end, la, lb, va, vb) = best1.unwrap();
                bindings.push((lx.text(la, lb), lx.text(va, vb)));
                lx.advance(end - p);
            }
            1 => {
                let len = a2.unwrap();
                faults.push(lx.text(p, p + len).trim().trim_end_matches(';').trim().to_string());
                lx.advance(len);
            }
            _ => {
                lx.advance(a3.unwrap());
                return Ok((bindings, faults));
            }
        }
    }
}

// rule pwitnesses
fn pwitnesses(lx: &mut Lexer) -> Option<(u64, u64)> {
    loop {
        if let Some(e) = seq(vec![blanks(), nl()]).longest(lx.s, lx.pos) {
            lx.advance(e - lx.pos);
            continue;
        }
        let re = seq(vec![
            lit("Witnesses"),
            blanks(),
            nl(),
            lit("Positive:"),
            blanks(),
            num(),
            opt(lit(",")),
            blanks(),
            lit("Negative:"),
            blanks(),
            num(),
            blanks(),
            nl(),
        ]);
        let e = re.longest(lx.s, lx.pos)?;
        let txt = lx.text(lx.pos, e);
        lx.advance(e - lx.pos);
        let nums: Vec<u64> =
            txt.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).filter_map(|w| w.parse().ok()).collect();
        return Some((nums[0], nums[1]));
    }
}

// rule pcond: the condition text and whether LogConstr.parse accepts it.
fn pcond(lx: &mut Lexer) -> (Option<String>, bool) {
    loop {
        let blank_line = seq(vec![blanks(), nl()]).longest(lx.s, lx.pos);
        let skip =
            seq(vec![alt(vec![lit("Bad executions"), lit("Flag ")]), star(class(not_nl)), nl()]).longest(lx.s, lx.pos);
        let cond = seq(vec![lit("Condition"), plus(blank()), plus(class(not_nl)), nl()]).longest(lx.s, lx.pos);
        let cands = [blank_line.map(|e| e - lx.pos), skip.map(|e| e - lx.pos), cond.map(|e| e - lx.pos)];
        match pick(&cands) {
            Some(0) | Some(1) => {
                let len = cands[pick(&cands).unwrap()].unwrap();
                lx.advance(len);
            }
            Some(_) => {
                let end = cond.unwrap();
                let body_start = plus(blank()).longest(lx.s, lx.pos + "Condition".len()).unwrap();
                let line = lx.text(body_start, end);
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                lx.advance(end - lx.pos);
                let c = strip_end_cond(&line);
                let ok = parse_condition(&c).is_ok();
                return (Some(c), ok);
            }
            None => return (None, false),
        }
    }
}

/// `strip_end_cond`: the text before the first `blank+ "is" _* "validated"`.
fn strip_end_cond(s: &str) -> String {
    let b = s.as_bytes();
    for i in 0..b.len() {
        if is_blank(b[i]) {
            let j = b[i..].iter().position(|&c| !is_blank(c)).map_or(b.len(), |k| i + k);
            if b[j..].starts_with(b"is") && s[j + 2..].contains("validated") {
                return s[..i].to_string();
            }
        }
    }
    s.to_string()
}

// rule phash: `Hash=`, `Time`, `Topology`, and lines of two known shapes;
// anything else ends the block's trailer.
fn phash(lx: &mut Lexer) -> (Option<String>, Option<f64>) {
    let (mut hash, mut time) = (None, None);
    loop {
        let s = lx.s;
        let p = lx.pos;
        let ci = |c: &'static [u8]| class_ci(c);
        let h1 = seq(vec![
            ci(b"hH"),
            ci(b"aA"),
            ci(b"sS"),
            ci(b"hH"),
            blanks(),
            lit("="),
            blanks(),
            plus(class(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))),
            blanks(),
            nl(),
        ]);
        let h2 =
            seq(vec![lit("Time"), plus(blank()), testname(), plus(blank()), num(), lit("."), num(), blanks(), nl()]);
        let h3 = seq(vec![
            lit("Topology"),
            plus(blank()),
            num(),
            blanks(),
            lit(":>"),
            blanks(),
            plus(class(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))),
            blanks(),
            nl(),
        ]);
        let h4 = seq(vec![plus(class(is_alpha)), blanks(), lit("="), star(class(not_nl)), nl()]);
        let h5 = seq(vec![plus(class(is_alpha)), plus(blank()), testname(), plus(blank()), star(class(not_nl)), nl()]);
        let cands: Vec<Option<usize>> = [h1, h2, h3, h4, h5].iter().map(|r| r.longest(s, p).map(|e| e - p)).collect();
        let Some(which) = pick(&cands) else { return (hash, time) };
        let len = cands[which].unwrap();
        let line = lx.text(p, p + len);
        lx.advance(len);
        match which {
            0 => {
                let v = line.split_once('=').map(|x| x.1).unwrap_or("").trim();
                hash = Some(v.to_string());
            }
            1 => {
                time = line.split_whitespace().nth(2).and_then(|t| t.parse().ok());
            }
            _ => {}
        }
    }
}

fn class_ci(c: &'static [u8]) -> Re {
    // Two-letter classes like [hH]; a function pointer cannot capture, so
    // spell the four of `phash` out.
    match c {
        b"hH" => class(|x| x == b'h' || x == b'H'),
        b"aA" => class(|x| x == b'a' || x == b'A'),
        b"sS" => class(|x| x == b's' || x == b'S'),
        _ => unreachable!("class_ci({c:?})"),
    }
}

// ---------------------------------------------------------------------------
// Conditions: lib/stateLexer.mll and the `skip_loc_constr` entry of
// lib/stateParser.mly (the parts a condition over registers, locations,
// numbers, names and fault atoms uses).

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    Num(String),
    Proc(i64),
    SymbReg(String),
    Name(String),
    DollarName(String),
    Value(String),
    Instr(String),
    /// Keywords and punctuation, as written in the grammar (`EXISTS`, `AND`, …).
    Kw(&'static str),
    Eof,
}

/// Tokenises a condition as stateLexer does (longest match, then rule order).
pub fn tokens(src: &str) -> Result<Vec<Token>, String> {
    let s = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let decimal = || seq(vec![opt(lit("-")), plus(class(is_digit))]);
    let hexadecimal = || seq(vec![alt(vec![lit("0x"), lit("0X")]), plus(class(is_hexa))]);
    // name = (alpha|'_'|'.'|'$')+ (alpha|digit|'_'|'/'|'.'|'-')*
    let sname = || {
        seq(vec![
            plus(class(|c| is_alpha(c) || c == b'_' || c == b'.' || c == b'$')),
            star(class(|c| is_alpha(c) || is_digit(c) || b"_/.-".contains(&c))),
        ])
    };
    // (pattern, token maker) in rule order.
    type Mk = Box<dyn Fn(&str) -> Option<Token>>;
    let kw = |k: &'static str| -> Mk { Box::new(move |_| Some(Token::Kw(k))) };
    let rules: Vec<(Re, Mk)> = vec![
        (alt(vec![lit("NOP"), lit("nop")]), kw("NOP")),
        (class(|c| c == b' ' || c == b'\t' || c == b'\r' || c == b'\n'), Box::new(|_| None)),
        (alt(vec![decimal(), hexadecimal()]), Box::new(|t| Some(Token::Num(t.into())))),
        (seq(vec![lit("P"), decimal()]), Box::new(|t| t[1..].parse().ok().map(Token::Proc))),
        (seq(vec![lit("%"), sname()]), Box::new(|t| Some(Token::SymbReg(t[1..].into())))),
        (lit(","), kw("COMMA")),
        (lit("&"), kw("AMPER")),
        (lit(";"), kw("SEMI")),
        (lit(":"), kw("COLON")),
        (lit("+"), kw("PLUS")),
        (lit("["), kw("LBRK")),
        (lit("]"), kw("RBRK")),
        (lit("("), kw("LPAR")),
        (lit(")"), kw("RPAR")),
        (lit("{"), kw("LCURLY")),
        (lit("}"), kw("RCURLY")),
        (lit("="), kw("EQUAL")),
        (lit("=="), kw("EQUALEQUAL")),
        (alt(vec![lit("!="), lit("<>")]), kw("NOTEQUAL")),
        (lit("=>"), kw("IMPLIES")),
        (lit("/\\"), kw("AND")),
        (lit("\\/"), kw("OR")),
        (alt(vec![lit("~"), lit("not")]), kw("NOT")),
        (lit("true"), kw("TRUE")),
        (lit("false"), kw("FALSE")),
        (alt(vec![lit("observed"), lit("Observed")]), kw("OBSERVED")),
        (lit("and"), kw("TOKAND")),
        (lit("exists"), kw("EXISTS")),
        (lit("forall"), kw("FORALL")),
        (lit("final"), kw("FINAL")),
        (lit("with"), kw("WITH")),
        (lit("locations"), kw("LOCATIONS")),
        (lit("filter"), kw("FILTER")),
        (alt(vec![lit("fault"), lit("Fault")]), kw("FAULT")),
        (alt(vec![lit("tag"), lit("TAG")]), kw("TOK_TAG")),
        (alt(vec![lit("attrs"), lit("Attrs")]), kw("ATTRS")),
        (lit("oa"), kw("TOK_OA")),
        (alt(vec![lit("PTE"), lit("TTD")]), kw("TOK_PTE")),
        (lit("PA"), kw("TOK_PA")),
        (lit("_Atomic"), kw("ATOMIC")),
        (lit("ATOMIC_INIT"), kw("ATOMICINIT")),
        (
            seq(vec![lit("instr:\""), plus(class(|c| c != b'"')), lit("\"")]),
            Box::new(|t| Some(Token::Instr(t[7..t.len() - 1].into()))),
        ),
        (
            seq(vec![lit("`"), plus(class(|c| c != b'`')), lit("`")]),
            Box::new(|t| Some(Token::Value(t[1..t.len() - 1].into()))),
        ),
        (
            alt(vec![lit(".reg"), lit(".s32"), lit(".b64"), lit(".b32"), lit(".u64"), lit(".u32"), lit(".pred")]),
            Box::new(|t| Some(Token::Name(format!("ptx{t}")))),
        ),
        (lit("*"), kw("STAR")),
        (
            seq(vec![lit("$"), alt(vec![plus(class(is_digit)), plus(class(is_alpha))])]),
            Box::new(|t| Some(Token::DollarName(t.into()))),
        ),
        (alt(vec![lit("__int128"), lit("__uint128")]), Box::new(|t| Some(Token::Name(t.into())))),
        (seq(vec![opt(lit("_")), sname()]), Box::new(|t| Some(Token::Name(t.into())))),
    ];
    while i < s.len() {
        if s[i..].starts_with(b"(*") {
            let end = src[i + 2..].find("*)").ok_or("unterminated comment")?;
            i += end + 4;
            continue;
        }
        if s[i..].starts_with(b"<<") {
            return Err(format!("`<<` at {i}"));
        }
        let mut best: Option<(usize, usize)> = None;
        for (ri, (re, _)) in rules.iter().enumerate() {
            if let Some(e) = re.longest(s, i) {
                if e > i && best.is_none_or(|(_, be)| e > be) {
                    best = Some((ri, e));
                }
            }
        }
        let Some((ri, e)) = best else {
            return Err(format!("no token at {:?}", &src[i..]));
        };
        if let Some(t) = (rules[ri].1)(&src[i..e]) {
            out.push(t);
        }
        i = e;
    }
    out.push(Token::Eof);
    Ok(out)
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.i]
    }
    fn peek2(&self) -> &Token {
        self.toks.get(self.i + 1).unwrap_or(&Token::Eof)
    }
    fn is(&self, k: &str) -> bool {
        matches!(self.peek(), Token::Kw(x) if *x == k)
    }
    fn eat(&mut self, k: &str) -> Result<(), String> {
        if self.is(k) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {k}, found {:?}", self.peek()))
        }
    }
    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        self.i += 1;
        t
    }

    // skip_loc_constr: locations constr EOF
    fn skip_loc_constr(&mut self) -> Result<(), String> {
        if self.is("LOCATIONS") {
            return Err("`locations [...]` is not transcribed".into());
        }
        // constr
        match self.peek() {
            Token::Eof => {}
            Token::Kw("FORALL") | Token::Kw("EXISTS") | Token::Kw("FINAL") => {
                self.i += 1;
                self.prop(0)?;
            }
            Token::Kw("NOT") => {
                self.i += 1;
                self.eat("EXISTS")?;
                self.prop(0)?;
            }
            Token::Kw("LPAR") => {
                self.i += 1;
                self.prop(0)?;
                self.eat("RPAR")?;
            }
            Token::Kw("OBSERVED") => return Err("`observed` is not transcribed".into()),
            t => return Err(format!("unexpected {t:?} at the start of a constraint")),
        }
        match self.peek() {
            Token::Eof => Ok(()),
            t => Err(format!("unexpected {t:?} after the constraint")),
        }
    }

    /// prop with menhir's precedences: OR (left) < AND (left) < IMPLIES
    /// (right) < NOT.
    fn prop(&mut self, min: u8) -> Result<(), String> {
        self.prop_primary()?;
        loop {
            let (prec, right) = match self.peek() {
                Token::Kw("OR") => (1, false),
                Token::Kw("AND") => (2, false),
                Token::Kw("IMPLIES") => (3, true),
                _ => return Ok(()),
            };
            if prec < min {
                return Ok(());
            }
            self.i += 1;
            self.prop(if right { prec } else { prec + 1 })?;
        }
    }

    fn prop_primary(&mut self) -> Result<(), String> {
        match self.peek().clone() {
            Token::Kw("TRUE") | Token::Kw("FALSE") => {
                self.i += 1;
                Ok(())
            }
            // NOT binds tighter than every binary operator.
            Token::Kw("NOT") => {
                self.i += 1;
                self.prop_primary()
            }
            Token::Kw("LPAR") => {
                self.i += 1;
                self.prop(0)?;
                self.eat("RPAR")
            }
            Token::Kw("FAULT") => self.fault(),
            _ => self.atom_prop(),
        }
    }

    // fault: FAULT LPAR lbl (COMMA …)* RPAR
    fn fault(&mut self) -> Result<(), String> {
        self.eat("FAULT")?;
        self.eat("LPAR")?;
        match self.next() {
            Token::Proc(_) => {}
            t => return Err(format!("fault: expected Pn, found {t:?}")),
        }
        if self.is("COLON") {
            self.i += 1;
            match self.next() {
                Token::Name(_) => {}
                t => return Err(format!("fault: expected a label, found {t:?}")),
            }
        }
        while self.is("COMMA") {
            self.i += 1;
            match self.next() {
                Token::Name(_) => {}
                t => return Err(format!("fault: expected a name, found {t:?}")),
            }
            while self.is("COLON") {
                self.i += 1;
                match self.next() {
                    Token::Name(_) => {}
                    t => return Err(format!("fault: expected a name, found {t:?}")),
                }
            }
        }
        self.eat("RPAR")
    }

    fn reg(&mut self) -> Result<(), String> {
        match self.next() {
            Token::Name(_) | Token::DollarName(_) | Token::SymbReg(_) => Ok(()),
            t => Err(format!("expected a register, found {t:?}")),
        }
    }

    /// location_global (the NAME forms and `NAME:NAME`/`NAME:NUM` tags).
    fn location_global(&mut self) -> Result<(), String> {
        match self.next() {
            Token::Name(_) => {
                if self.is("COLON") {
                    self.i += 1;
                    match self.next() {
                        Token::Name(_) | Token::Num(_) => {}
                        t => return Err(format!("expected a tag, found {t:?}")),
                    }
                }
                Ok(())
            }
            Token::Kw("TOK_PTE") | Token::Kw("TOK_PA") => Err("PTE(…)/PA(…) are not transcribed".into()),
            t => Err(format!("expected a location, found {t:?}")),
        }
    }

    /// location: location_reg | location_global.
    fn location(&mut self) -> Result<(), String> {
        match (self.peek().clone(), self.peek2().clone()) {
            (Token::Proc(_), Token::Kw("COLON")) | (Token::Num(_), Token::Kw("COLON")) => {
                self.i += 2;
                self.reg()?;
                if self.is("COLON") {
                    // NUM COLON NAME COLON NUM: a Morello location.
                    self.i += 1;
                    match self.next() {
                        Token::Num(_) => {}
                        t => return Err(format!("expected a number, found {t:?}")),
                    }
                }
                Ok(())
            }
            (Token::SymbReg(_), _) => {
                self.i += 1;
                Ok(())
            }
            _ => self.location_global(),
        }
    }

    /// maybev: NUM | VALUE | location_global | NUM:NUM | NAME[NUM] | :NAME.
    fn maybev(&mut self) -> Result<(), String> {
        match self.peek().clone() {
            Token::Num(n) => {
                self.i += 1;
                check_int64(&n)?;
                if self.is("COLON") {
                    self.i += 1;
                    match self.next() {
                        Token::Num(_) => {}
                        t => return Err(format!("expected a number, found {t:?}")),
                    }
                }
                Ok(())
            }
            Token::Value(_) => {
                self.i += 1;
                Ok(())
            }
            Token::Kw("COLON") => {
                self.i += 1;
                match self.next() {
                    Token::Name(_) => Ok(()),
                    t => Err(format!("expected a tag, found {t:?}")),
                }
            }
            Token::Name(_) if self.peek2() == &Token::Kw("LBRK") => {
                self.i += 2;
                match self.next() {
                    Token::Num(_) => {}
                    t => return Err(format!("expected an index, found {t:?}")),
                }
                self.eat("RBRK")
            }
            _ => self.location_global(),
        }
    }

    fn atom_prop(&mut self) -> Result<(), String> {
        if self.is("LBRK") {
            self.i += 1;
            self.location_global()?;
            self.eat("RBRK")?;
        } else {
            self.location()?;
        }
        match self.next() {
            Token::Kw("EQUAL") | Token::Kw("EQUALEQUAL") | Token::Kw("NOTEQUAL") => {}
            t => return Err(format!("expected `=`, found {t:?}")),
        }
        self.maybev()
    }
}

/// `Int64.of_string` (LogConstr.tr_v) raises on a decimal beyond i64,
/// and the tools do not catch it.
fn check_int64(n: &str) -> Result<(), String> {
    let ok = if let Some(h) = n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).is_ok()
    } else {
        n.parse::<i64>().is_ok()
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{n} does not fit OCaml's Int64"))
    }
}

/// Parses a `Condition` text as `LogConstr.parse` does; `Err` = the tools
/// drop the condition.
pub fn parse_condition(src: &str) -> Result<(), String> {
    let toks = tokens(src)?;
    Parser { toks, i: 0 }.skip_loc_constr()
}

/// Strict reading of one of our logs: herd's lexer must read every test,
/// keep its condition, its `Hash` and its `Time`, and find exactly
/// `expected_tests` tests. Returns the tests, or every problem found.
pub fn check_log(text: &str) -> Result<Vec<LoggedTest>, Vec<String>> {
    let tests = read_log(text).map_err(|e| vec![format!("herdtools7 would ignore the whole file: {e}")])?;
    let mut problems = Vec::new();
    for t in &tests {
        let at = format!("Test {} (line {})", t.name, t.line);
        if t.validation.is_none() {
            problems.push(format!("{at}: no Ok/No line"));
        }
        if t.witnesses.is_none() {
            problems.push(format!("{at}: Witnesses/Positive/Negative not read"));
        }
        match &t.condition {
            None => problems.push(format!("{at}: no Condition line read")),
            Some(c) if !t.condition_parses => {
                problems.push(format!("{at}: condition `{c}` does not parse: {}", parse_condition(c).unwrap_err()))
            }
            _ => {}
        }
        if t.hash.is_none() {
            problems.push(format!("{at}: Hash= not read"));
        }
        if t.time.is_none() {
            problems.push(format!("{at}: Time not read (a line before it stops herd's `phash` rule)"));
        }
    }
    if problems.is_empty() {
        Ok(tests)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block as litmus7 prints it (herdtools7 `doc/kvm-log.txt`, cut).
    const LITMUS7: &str = "Test MP-TTD+DMB.ST+DMB.LD Allowed
Histogram (4 states)
70    *>1:X7=1; fault(P1:L0,x,MMU:Translation);
1975326:>1:X7=0; ~fault(P1:L0,x,MMU:Translation);
21197 :>1:X7=0; fault(P1:L0,x,MMU:Translation);
3407  :>1:X7=1; ~fault(P1:L0,x,MMU:Translation);
Ok

Witnesses
Positive: 70, Negative: 1999930
Condition exists (1:X7=1 /\\ fault(P1:L0,x,MMU:Translation)) is validated
Hash=a7b7ee7bc9e2e2b17ed0aa0b1dd3f0d5
Observation MP-TTD+DMB.ST+DMB.LD Sometimes 70 1999930
Time MP-TTD+DMB.ST+DMB.LD 1.31

";

    #[test]
    fn reads_litmus7_output() {
        let t = check_log(LITMUS7).unwrap();
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert_eq!((t.name.as_str(), t.kind.as_str()), ("MP-TTD+DMB.ST+DMB.LD", "Allowed"));
        assert_eq!(t.states.len(), 4);
        assert_eq!(t.states[1].count, 1975326);
        assert_eq!(t.states[1].bindings, [("1:X7".to_string(), "0".to_string())]);
        assert_eq!(t.states[1].faults, ["~fault(P1:L0,x,MMU:Translation)"]);
        assert_eq!(t.validation.as_deref(), Some("Ok"));
        assert_eq!(t.witnesses, Some((70, 1999930)));
        assert_eq!(t.condition.as_deref(), Some("exists (1:X7=1 /\\ fault(P1:L0,x,MMU:Translation))"));
        assert!(t.condition_parses);
        assert_eq!(t.hash.as_deref(), Some("a7b7ee7bc9e2e2b17ed0aa0b1dd3f0d5"));
        assert_eq!(t.time, Some(1.31));
    }

    /// What issue 16 found with the tools themselves, reproduced.
    #[test]
    fn old_output_broke_the_tools() {
        // `P2:` in a state: Lex error pline, the whole file is ignored.
        let old = LITMUS7.replace("1:X7=0; ~fault", "P1:X7=0; ~fault");
        let e = read_log(&old).unwrap_err();
        assert_eq!((e.line, e.rule), (4, "pline"));
        // `stale-walk` is no value for the log lexer.
        assert_eq!(read_log(&LITMUS7.replace("1:X7=1; fault", "1:X7=stale-walk; fault")).unwrap_err().line, 3);
        // `=fault` in a condition: the tools drop the condition.
        let c = LITMUS7.replace("(1:X7=1 /\\ fault(", "(1:X7=fault /\\ fault(");
        let t = read_log(&c).unwrap();
        assert!(!t[0].condition_parses);
        assert!(check_log(&c).unwrap_err()[0].contains("does not parse"));
        // An `Expect …:` line before `Time` hides it (7.57's testname has no `:`) …
        let e = LITMUS7.replace("Time MP", "Expect sometimes: ok\nTime MP");
        assert_eq!(read_log(&e).unwrap()[0].time, None);
        // … and so does `Timeouts N`.
        let e = LITMUS7.replace("Time MP", "Timeouts 3\nTime MP");
        assert_eq!(read_log(&e).unwrap()[0].time, None);
        // After `Time` anything goes.
        let e = LITMUS7.replace("1.31\n", "1.31\nExpect sometimes: ok\nTimeouts 3\n");
        assert_eq!(read_log(&e).unwrap()[0].time, Some(1.31));
    }

    #[test]
    fn what_our_spellings_give() {
        for v in ["FAULT", "STALE_WALK", "TIMEOUT", "0", "18446744073709551615"] {
            let log = LITMUS7.replace("1:X7=1; fault", &format!("1:X7={v}; [x]={v}; fault"));
            let t = check_log(&log).unwrap();
            assert_eq!(t[0].states[0].bindings[1], ("[x]".into(), v.into()));
        }
        for c in ["~exists (2:r1=FAULT)", "exists (2:r1=STALE_WALK \\/ ~([x]=1))", "~exists (0:r0=0 /\\ [x]=FAULT)"] {
            parse_condition(c).unwrap();
        }
        assert!(parse_condition("~exists (2:r1=fault)").is_err());
        assert!(parse_condition("~exists (P2:r1=stale-walk)").is_ok(), "stateLexer's names take `-`");
        assert!(parse_condition("~exists (2:r1=18446744073709551615)").is_err());
        assert!(parse_condition("exists (0:r0=1 /\\ ~0:r1=2 \\/ x=3 => y=4)").is_ok());
        assert!(parse_condition("exists (0:r0=1 /\\)").is_err());
    }

    #[test]
    fn fatal_drops_a_test_and_a_bad_kind_the_file() {
        let f = LITMUS7.replace("Histogram (4 states)", "Fatal: boom\nHistogram (4 states)");
        assert!(read_log(&f).unwrap().is_empty());
        assert!(read_log(&LITMUS7.replace("Allowed", "Permitted")).is_err());
    }

    #[test]
    fn tokens_follow_longest_match_then_rule_order() {
        assert_eq!(tokens("P2").unwrap()[0], Token::Proc(2));
        assert_eq!(tokens("P2x").unwrap()[0], Token::Name("P2x".into()));
        assert_eq!(tokens("exists").unwrap()[0], Token::Kw("EXISTS"));
        assert_eq!(tokens("existsx").unwrap()[0], Token::Name("existsx".into()));
        assert_eq!(tokens("0x1f").unwrap()[0], Token::Num("0x1f".into()));
        assert_eq!(tokens("==").unwrap()[0], Token::Kw("EQUALEQUAL"));
        assert_eq!(tokens("stale-walk").unwrap()[0], Token::Name("stale-walk".into()));
        assert_eq!(tokens("fault").unwrap()[0], Token::Kw("FAULT"));
        assert_eq!(tokens("FAULT").unwrap()[0], Token::Name("FAULT".into()));
    }

    /// Every block the catalogue can print — every test under each of its
    /// `[expect]` policies, with every kind of value in its histogram,
    /// timeouts, and each expectation result — read back through the
    /// transcribed lexer, one log per policy as `--log-dir` writes them:
    /// the tools must see the same tests, states and counts.
    #[test]
    fn every_catalogue_block_survives_herds_lexer() {
        use crate::results::ThreadPosition;
        use crate::{check_all, herd_block, logdir::log_file_name, state_text, RunResult};
        use abi::litmus::{Hook, VALUE_FAULT, VALUE_STALE_WALK, VALUE_TIMEOUT};
        use std::collections::BTreeMap;

        let (tests, _) = check_all(&crate::catalogue_sources()).unwrap();
        let mut logs: BTreeMap<String, String> = BTreeMap::new();
        type Blocks = Vec<(String, Vec<(u64, String)>)>;
        let mut want: BTreeMap<String, Blocks> = BTreeMap::new();
        let specials = [0, 1, 2, VALUE_FAULT, VALUE_STALE_WALK];
        let mut n_blocks = 0;
        for t in &tests {
            for (pi, policy) in t.expect_policies().into_iter().enumerate() {
                let n = t.observed.len();
                let mut r = RunResult::new(t, policy, 42, 1000);
                // Every value kind in every position, and the all-zero state.
                for (k, v) in specials.iter().enumerate() {
                    let state: Vec<u64> = (0..n).map(|i| if i == k % n { *v } else { (i as u64) % 3 }).collect();
                    r.record_n(&state, 10 + k as u64).unwrap();
                }
                if pi % 2 == 0 {
                    let pos = vec![ThreadPosition {
                        thread: t.threads[0].name.clone(),
                        pc: Some(3),
                        source: Some((12, 1)),
                        hook: Some(Hook::AfterPtlRelease),
                    }];
                    r.record_timeout(7, &vec![VALUE_TIMEOUT; n], pos).unwrap();
                }
                r.time_secs = 1.5 + pi as f64;
                let block = herd_block(t, &r);
                let file = log_file_name(&r.policy);
                let log = logs.entry(file.clone()).or_default();
                log.push_str(&block);
                log.push('\n');
                let states = r.histogram.iter().map(|(k, c)| (*c, state_text(t, k))).collect();
                want.entry(file).or_default().push((t.name.clone(), states));
                n_blocks += 1;
            }
        }
        assert!(n_blocks >= 28, "{n_blocks} blocks");
        for (file, text) in &logs {
            let read = check_log(text).unwrap_or_else(|p| panic!("{file}:\n{}\n{text}", p.join("\n")));
            let want = &want[file];
            assert_eq!(read.len(), want.len(), "{file}");
            for (got, (name, states)) in read.iter().zip(want) {
                assert_eq!(&got.name, name);
                let got_states: Vec<(u64, String)> = got
                    .states
                    .iter()
                    .map(|s| {
                        (s.count, s.bindings.iter().map(|(l, v)| format!("{l}={v};")).collect::<Vec<_>>().join(" "))
                    })
                    .collect();
                assert_eq!(&got_states, states, "{file}: {name}");
                assert!(got.time.is_some() && got.hash.is_some() && got.condition_parses);
            }
        }
    }

    /// `vmm explore`'s blocks (an `Explore` line after `Policy`, `Witness`
    /// and `Pct` lines after `Expect`) read as litmus7's do: the tools keep
    /// their states, condition, hash and time.
    #[test]
    fn explore_blocks_survive_herds_lexer() {
        use crate::explore_results::ExploreRecord;
        use crate::{check_all, herd_block, state_text, RunResult};
        use explore::{PctBound, Reduction, Shard, Strategy, Witness};

        let (tests, _) = check_all(&crate::explore_sources()).unwrap();
        let mut log = String::new();
        let mut want = Vec::new();
        for (i, t) in tests.iter().enumerate() {
            let policy = t.expect_policies()[0];
            let n = t.observed.len();
            let state: Vec<u64> = (0..n as u64).collect();
            let strategy = if i % 2 == 0 {
                Strategy::Bounded { preemptions: Some(2), reduction: Reduction::SleepSets }
            } else {
                Strategy::Pct { depth: 3, runs: 100 }
            };
            let mut search = explore::ExploreResult::<Vec<u64>> {
                strategy,
                seed: 1,
                shard: Shard::ALL,
                split_depth: 6,
                schedules: 17,
                complete: i % 2 == 0,
                redundant: 3,
                discovery: 0,
                longest: 40,
                by_preemptions: Default::default(),
                histogram: [(state.clone(), 17)].into_iter().collect(),
                witness: Some(Witness { preemptions: 1, order: vec![0, 1], steps: vec![], outcome: state.clone() }),
                pct: None,
            };
            if i % 2 == 1 {
                search.pct = Some(PctBound::new(3, t.threads.len() as u32, 50, 100, false));
            }
            let mut r = RunResult::new(t, policy, 1, crate::explore_results::requested(&search));
            r.record_n(&state, 17).unwrap();
            r.time_secs = 2.5;
            r.explore = Some(ExploreRecord {
                search,
                witness_file: Some(format!("witnesses/{}--x.toml", t.name)),
                timeline_file: None,
                points: 600,
                parks: 40,
                boots: 1,
            });
            let block = herd_block(t, &r);
            assert!(block.contains("\nExplore "), "{block}");
            log.push_str(&block);
            log.push('\n');
            want.push((t.name.clone(), vec![(17, state_text(t, &state))]));
        }
        let read = check_log(&log).unwrap_or_else(|p| panic!("{}\n{log}", p.join("\n")));
        assert_eq!(read.len(), want.len());
        for (got, (name, states)) in read.iter().zip(&want) {
            assert_eq!(&got.name, name);
            let got_states: Vec<(u64, String)> = got
                .states
                .iter()
                .map(|s| (s.count, s.bindings.iter().map(|(l, v)| format!("{l}={v};")).collect::<Vec<_>>().join(" ")))
                .collect();
            assert_eq!(&got_states, states, "{name}");
            assert!(got.time.is_some() && got.hash.is_some() && got.condition_parses, "{name}");
        }
    }
}
