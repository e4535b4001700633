//! Conditions: `lib/stateLexer.mll` and the `skip_loc_constr` entry of
//! `lib/stateParser.mly` (the parts a condition over registers, locations,
//! numbers, names and fault atoms uses).

use super::{alt, class, is_alpha, is_digit, is_hexa, lit, opt, plus, seq, star, Re};

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

pub(super) struct Parser {
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
pub(super) fn check_int64(n: &str) -> Result<(), String> {
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
