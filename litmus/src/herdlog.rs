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

use std::fmt;

mod condition;
mod re;
pub use condition::{parse_condition, tokens, Token};
use re::{alt, class, is_alpha, is_blank, is_digit, is_hexa, lit, not_nl, opt, plus, seq, star, Re};

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
mod tests;
