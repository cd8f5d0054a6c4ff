//! A tiny expression language for `filter` and `map`, parsed once and bound to a batch's columns.
//!
//! Grammar (lowest precedence first; all binary operators are left-associative):
//!
//! ```text
//! or    := and ('||' and)*
//! and   := eq ('&&' eq)*
//! eq    := rel (('==' | '!=') rel)*
//! rel   := add (('<' | '<=' | '>' | '>=') add)*
//! add   := mul (('+' | '-') mul)*
//! mul   := unary (('*' | '/' | '%') unary)*
//! unary := ('-' | '!') unary | primary
//! primary := number | string | 'true' | 'false' | column | func '(' args ')' | '(' or ')'
//! ```
//!
//! Types are number, string and boolean; a column is a number if it is a Float64Array and a string
//! if it is a string column. Functions: `len(s)` (UTF-16 length, as JS `s.length`), `lower(s)`,
//! `abs`, `floor`, `ceil`, `sqrt` (of a number), `min(a, b)`, `max(a, b)` (as `Math.min/max`).
//! Numbers follow IEEE-754 exactly as JavaScript does. Strings support only `==` and `!=`.

use std::borrow::Cow;

use crate::batch::{Col, ColKind};
use crate::error::{NResult, NativeError};
use crate::unicode::{to_lower, utf16_len};

/// Deepest allowed expression tree (keeps recursion far from the stack limit).
pub const MAX_HEIGHT: usize = 64;

fn err(position: usize, message: impl Into<String>) -> NativeError {
    NativeError::BadExpr { position, message: message.into() }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
    End,
}

const OPS2: [&str; 6] = ["||", "&&", "==", "!=", "<=", ">="];
const OPS1: [&str; 11] = ["<", ">", "+", "-", "*", "/", "%", "!", "(", ")", ","];

fn lex(src: &str) -> NResult<Vec<(Tok, usize)>> {
    let chars: Vec<char> = src.chars().collect();
    // UTF-16 position of each char index, so positions match JavaScript string indices.
    let mut pos = Vec::with_capacity(chars.len() + 1);
    let mut p = 0;
    for c in &chars {
        pos.push(p);
        p += c.len_utf16();
    }
    pos.push(p);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if matches!(c, ' ' | '\t' | '\n' | '\r') {
            i += 1;
            continue;
        }
        let digit_at = |j: usize| j < chars.len() && chars[j].is_ascii_digit();
        if c.is_ascii_digit() || (c == '.' && digit_at(i + 1)) {
            while digit_at(i) {
                i += 1;
            }
            if i < chars.len() && chars[i] == '.' {
                i += 1;
                while digit_at(i) {
                    i += 1;
                }
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if digit_at(j) {
                    i = j;
                    while digit_at(i) {
                        i += 1;
                    }
                }
            }
            let text: String = chars[start..i].iter().collect();
            let value: f64 = text.parse().map_err(|_| err(pos[start], format!("bad number {text:?}")))?;
            out.push((Tok::Num(value), pos[start]));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), pos[start]));
            continue;
        }
        if c == '"' || c == '\'' {
            i += 1;
            let mut s = String::new();
            loop {
                if i >= chars.len() {
                    return Err(err(pos[start], "unterminated string"));
                }
                let d = chars[i];
                if d == c {
                    i += 1;
                    break;
                }
                if d == '\\' {
                    let e = chars.get(i + 1).copied();
                    let unescaped = match e {
                        Some('\\') => '\\',
                        Some('"') => '"',
                        Some('\'') => '\'',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        _ => return Err(err(pos[i], "unknown escape (use \\\\, \\\", \\', \\n or \\t)")),
                    };
                    s.push(unescaped);
                    i += 2;
                } else {
                    s.push(d);
                    i += 1;
                }
            }
            out.push((Tok::Str(s), pos[start]));
            continue;
        }
        if i + 1 < chars.len() {
            let two: String = chars[i..i + 2].iter().collect();
            if let Some(op) = OPS2.iter().find(|o| **o == two) {
                out.push((Tok::Op(op), pos[start]));
                i += 2;
                continue;
            }
        }
        let one = c.to_string();
        if let Some(op) = OPS1.iter().find(|o| **o == one) {
            out.push((Tok::Op(op), pos[start]));
            i += 1;
            continue;
        }
        return Err(err(pos[start], format!("unexpected character {c:?}")));
    }
    out.push((Tok::End, p));
    Ok(out)
}

/// Binary operators, by their source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

fn bin_op(s: &str) -> BinOp {
    match s {
        "||" => BinOp::Or,
        "&&" => BinOp::And,
        "==" => BinOp::Eq,
        "!=" => BinOp::Ne,
        "<" => BinOp::Lt,
        "<=" => BinOp::Le,
        ">" => BinOp::Gt,
        ">=" => BinOp::Ge,
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        _ => BinOp::Rem,
    }
}

/// Built-in functions and their arity.
const FUNCS: [(&str, usize); 8] =
    [("len", 1), ("lower", 1), ("abs", 1), ("floor", 1), ("ceil", 1), ("sqrt", 1), ("min", 2), ("max", 2)];

/// A parsed, not yet typed, expression.
#[derive(Debug, Clone)]
pub struct Ast {
    kind: AstKind,
    pos: usize,
    height: usize,
}

#[derive(Debug, Clone)]
enum AstKind {
    Num(f64),
    Str(String),
    Bool(bool),
    Column(String),
    Neg(Box<Ast>),
    Not(Box<Ast>),
    Binary(BinOp, Box<Ast>, Box<Ast>),
    Call(&'static str, Vec<Ast>),
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
    depth: usize,
}

const LEVELS: [&[&str]; 6] = [&["||"], &["&&"], &["==", "!="], &["<", "<=", ">", ">="], &["+", "-"], &["*", "/", "%"]];

impl Parser {
    fn peek(&self) -> &(Tok, usize) {
        &self.toks[self.i]
    }

    fn node(kind: AstKind, pos: usize, child_heights: &[usize]) -> NResult<Ast> {
        let height = 1 + child_heights.iter().copied().max().unwrap_or(0);
        if height > MAX_HEIGHT {
            return Err(err(pos, format!("expression is nested more than {MAX_HEIGHT} levels deep")));
        }
        Ok(Ast { kind, pos, height })
    }

    fn binary(&mut self, level: usize) -> NResult<Ast> {
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        loop {
            let (tok, pos) = self.peek().clone();
            match tok {
                Tok::Op(op) if LEVELS[level].contains(&op) => {
                    self.i += 1;
                    let right = self.binary(level + 1)?;
                    let heights = [left.height, right.height];
                    left = Self::node(AstKind::Binary(bin_op(op), Box::new(left), Box::new(right)), pos, &heights)?;
                }
                _ => return Ok(left),
            }
        }
    }

    fn unary(&mut self) -> NResult<Ast> {
        let (tok, pos) = self.peek().clone();
        match tok {
            Tok::Op("-") | Tok::Op("!") => {
                self.i += 1;
                self.enter(pos)?;
                let inner = self.unary()?;
                self.depth -= 1;
                let heights = [inner.height];
                let kind = if tok == Tok::Op("-") { AstKind::Neg(Box::new(inner)) } else { AstKind::Not(Box::new(inner)) };
                Self::node(kind, pos, &heights)
            }
            _ => self.primary(),
        }
    }

    /// Counts one level of recursion, so deeply nested input fails before it can exhaust the stack.
    fn enter(&mut self, pos: usize) -> NResult<()> {
        self.depth += 1;
        if self.depth > MAX_HEIGHT {
            return Err(err(pos, format!("expression is nested more than {MAX_HEIGHT} levels deep")));
        }
        Ok(())
    }

    fn expect(&mut self, op: &'static str) -> NResult<()> {
        let (tok, pos) = self.peek().clone();
        if tok == Tok::Op(op) {
            self.i += 1;
            Ok(())
        } else {
            Err(err(pos, format!("expected {op:?}, found {}", describe(&tok))))
        }
    }

    fn primary(&mut self) -> NResult<Ast> {
        let (tok, pos) = self.peek().clone();
        self.i += 1;
        match tok {
            Tok::Num(x) => Self::node(AstKind::Num(x), pos, &[]),
            Tok::Str(s) => Self::node(AstKind::Str(s), pos, &[]),
            Tok::Ident(name) if name == "true" || name == "false" => Self::node(AstKind::Bool(name == "true"), pos, &[]),
            Tok::Ident(name) => {
                if self.peek().0 != Tok::Op("(") {
                    return Self::node(AstKind::Column(name), pos, &[]);
                }
                let Some(&(fname, arity)) = FUNCS.iter().find(|(f, _)| *f == name) else {
                    return Err(err(pos, format!("unknown function {name:?}")));
                };
                self.i += 1;
                self.enter(pos)?;
                let mut args = Vec::new();
                if self.peek().0 != Tok::Op(")") {
                    loop {
                        args.push(self.binary(0)?);
                        if self.peek().0 == Tok::Op(",") {
                            self.i += 1;
                        } else {
                            break;
                        }
                    }
                }
                self.expect(")")?;
                self.depth -= 1;
                if args.len() != arity {
                    return Err(err(pos, format!("{fname} takes {arity} argument(s), got {}", args.len())));
                }
                let heights: Vec<usize> = args.iter().map(|a| a.height).collect();
                Self::node(AstKind::Call(fname, args), pos, &heights)
            }
            Tok::Op("(") => {
                self.enter(pos)?;
                let inner = self.binary(0)?;
                self.expect(")")?;
                self.depth -= 1;
                Ok(inner)
            }
            other => Err(err(pos, format!("unexpected {}", describe(&other)))),
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(_) => "number".to_string(),
        Tok::Str(_) => "string".to_string(),
        Tok::Ident(n) => format!("identifier {n:?}"),
        Tok::Op(o) => format!("{o:?}"),
        Tok::End => "end of expression".to_string(),
    }
}

/// Parses an expression (without knowing column types yet).
pub fn parse(src: &str) -> NResult<Ast> {
    let toks = lex(src)?;
    let mut p = Parser { toks, i: 0, depth: 0 };
    let ast = p.binary(0)?;
    let (tok, pos) = p.peek().clone();
    if tok != Tok::End {
        return Err(err(pos, format!("unexpected {} after the expression", describe(&tok))));
    }
    Ok(ast)
}

/// The type of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Num,
    Str,
    Bool,
}

impl Ty {
    pub fn name(self) -> &'static str {
        match self {
            Ty::Num => "number",
            Ty::Str => "string",
            Ty::Bool => "boolean",
        }
    }
}

/// A number-valued expression bound to column positions.
#[derive(Debug, Clone)]
pub enum NumExpr {
    Const(f64),
    Col(usize),
    Neg(Box<NumExpr>),
    Arith(BinOp, Box<NumExpr>, Box<NumExpr>),
    Len(Box<StrExpr>),
    Math(&'static str, Box<NumExpr>),
    Min(Box<NumExpr>, Box<NumExpr>),
    Max(Box<NumExpr>, Box<NumExpr>),
}

/// A string-valued expression bound to column positions.
#[derive(Debug, Clone)]
pub enum StrExpr {
    Const(String),
    Col(usize),
    Lower(Box<StrExpr>),
}

/// A boolean-valued expression bound to column positions.
#[derive(Debug, Clone)]
pub enum BoolExpr {
    Const(bool),
    Not(Box<BoolExpr>),
    And(Box<BoolExpr>, Box<BoolExpr>),
    Or(Box<BoolExpr>, Box<BoolExpr>),
    Cmp(BinOp, Box<NumExpr>, Box<NumExpr>),
    StrEq(bool, Box<StrExpr>, Box<StrExpr>),
    BoolEq(bool, Box<BoolExpr>, Box<BoolExpr>),
}

/// A typed expression.
#[derive(Debug, Clone)]
pub enum Typed {
    Num(NumExpr),
    Str(StrExpr),
    Bool(BoolExpr),
}

impl Typed {
    pub fn ty(&self) -> Ty {
        match self {
            Typed::Num(_) => Ty::Num,
            Typed::Str(_) => Ty::Str,
            Typed::Bool(_) => Ty::Bool,
        }
    }
}

fn type_err(pos: usize, message: String) -> NativeError {
    err(pos, message)
}

/// Types `ast` against a batch schema (column names and kinds, by position).
pub fn bind(ast: &Ast, schema: &[(&str, ColKind)]) -> NResult<Typed> {
    let pos = ast.pos;
    Ok(match &ast.kind {
        AstKind::Num(x) => Typed::Num(NumExpr::Const(*x)),
        AstKind::Str(s) => Typed::Str(StrExpr::Const(s.clone())),
        AstKind::Bool(b) => Typed::Bool(BoolExpr::Const(*b)),
        AstKind::Column(name) => match schema.iter().position(|(n, _)| n == name) {
            None => {
                return Err(NativeError::batch(name, format!("missing column (used by the expression at position {pos})")));
            }
            Some(i) => match schema[i].1 {
                ColKind::F64 => Typed::Num(NumExpr::Col(i)),
                ColKind::Utf8 => Typed::Str(StrExpr::Col(i)),
            },
        },
        AstKind::Neg(inner) => match bind(inner, schema)? {
            Typed::Num(e) => Typed::Num(NumExpr::Neg(Box::new(e))),
            t => return Err(type_err(pos, format!("'-' needs a number, got a {}", t.ty().name()))),
        },
        AstKind::Not(inner) => match bind(inner, schema)? {
            Typed::Bool(e) => Typed::Bool(BoolExpr::Not(Box::new(e))),
            t => return Err(type_err(pos, format!("'!' needs a boolean, got a {}", t.ty().name()))),
        },
        AstKind::Binary(op, l, r) => {
            let l = bind(l, schema)?;
            let r = bind(r, schema)?;
            let (lt, rt) = (l.ty(), r.ty());
            match (op, l, r) {
                (BinOp::Or | BinOp::And, Typed::Bool(a), Typed::Bool(b)) => {
                    if *op == BinOp::Or {
                        Typed::Bool(BoolExpr::Or(Box::new(a), Box::new(b)))
                    } else {
                        Typed::Bool(BoolExpr::And(Box::new(a), Box::new(b)))
                    }
                }
                (BinOp::Eq | BinOp::Ne, Typed::Num(a), Typed::Num(b)) => {
                    Typed::Bool(BoolExpr::Cmp(*op, Box::new(a), Box::new(b)))
                }
                (BinOp::Eq | BinOp::Ne, Typed::Str(a), Typed::Str(b)) => {
                    Typed::Bool(BoolExpr::StrEq(*op == BinOp::Eq, Box::new(a), Box::new(b)))
                }
                (BinOp::Eq | BinOp::Ne, Typed::Bool(a), Typed::Bool(b)) => {
                    Typed::Bool(BoolExpr::BoolEq(*op == BinOp::Eq, Box::new(a), Box::new(b)))
                }
                (BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge, Typed::Num(a), Typed::Num(b)) => {
                    Typed::Bool(BoolExpr::Cmp(*op, Box::new(a), Box::new(b)))
                }
                (BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem, Typed::Num(a), Typed::Num(b)) => {
                    Typed::Num(NumExpr::Arith(*op, Box::new(a), Box::new(b)))
                }
                _ => {
                    return Err(type_err(
                        pos,
                        format!("operator {} does not apply to a {} and a {}", op_text(*op), lt.name(), rt.name()),
                    ))
                }
            }
        }
        AstKind::Call(name, args) => {
            let mut bound = Vec::with_capacity(args.len());
            for a in args {
                bound.push(bind(a, schema)?);
            }
            let mut it = bound.into_iter();
            match (*name, it.next(), it.next()) {
                ("len", Some(Typed::Str(s)), None) => Typed::Num(NumExpr::Len(Box::new(s))),
                ("lower", Some(Typed::Str(s)), None) => Typed::Str(StrExpr::Lower(Box::new(s))),
                ("abs" | "floor" | "ceil" | "sqrt", Some(Typed::Num(x)), None) => Typed::Num(NumExpr::Math(name, Box::new(x))),
                ("min", Some(Typed::Num(a)), Some(Typed::Num(b))) => Typed::Num(NumExpr::Min(Box::new(a), Box::new(b))),
                ("max", Some(Typed::Num(a)), Some(Typed::Num(b))) => Typed::Num(NumExpr::Max(Box::new(a), Box::new(b))),
                _ => {
                    let want = if matches!(*name, "len" | "lower") { "a string" } else { "numbers" };
                    return Err(type_err(pos, format!("{name} takes {want}")));
                }
            }
        }
    })
}

fn op_text(op: BinOp) -> &'static str {
    match op {
        BinOp::Or => "||",
        BinOp::And => "&&",
        BinOp::Eq => "==",
        BinOp::Ne => "!=",
        BinOp::Lt => "<",
        BinOp::Le => "<=",
        BinOp::Gt => ">",
        BinOp::Ge => ">=",
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Rem => "%",
    }
}

/// `Math.min` for two numbers: NaN wins, and -0 is smaller than +0.
#[inline]
pub fn js_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a < b {
        a
    } else if b < a {
        b
    } else if a.is_sign_negative() {
        a
    } else {
        b
    }
}

/// `Math.max` for two numbers: NaN wins, and +0 is larger than -0.
#[inline]
pub fn js_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a > b {
        a
    } else if b > a {
        b
    } else if a.is_sign_positive() {
        a
    } else {
        b
    }
}

type Cols<'c, 'a> = &'c [(String, Col<'a>)];

impl NumExpr {
    pub fn eval(&self, cols: Cols<'_, '_>, row: usize) -> f64 {
        match self {
            NumExpr::Const(x) => *x,
            NumExpr::Col(i) => match &cols[*i].1 {
                Col::F64(v) => v[row],
                Col::Utf8(_) => f64::NAN, // unreachable: binding checked the kind
            },
            NumExpr::Neg(e) => -e.eval(cols, row),
            NumExpr::Arith(op, a, b) => {
                let (x, y) = (a.eval(cols, row), b.eval(cols, row));
                match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    BinOp::Div => x / y,
                    _ => x % y,
                }
            }
            NumExpr::Len(s) => utf16_len(&s.eval(cols, row)) as f64,
            NumExpr::Math(f, e) => {
                let x = e.eval(cols, row);
                match *f {
                    "abs" => x.abs(),
                    "floor" => x.floor(),
                    "ceil" => x.ceil(),
                    _ => x.sqrt(),
                }
            }
            NumExpr::Min(a, b) => js_min(a.eval(cols, row), b.eval(cols, row)),
            NumExpr::Max(a, b) => js_max(a.eval(cols, row), b.eval(cols, row)),
        }
    }
}

impl StrExpr {
    pub fn eval<'c>(&'c self, cols: Cols<'c, '_>, row: usize) -> Cow<'c, str> {
        match self {
            StrExpr::Const(s) => Cow::Borrowed(s.as_str()),
            StrExpr::Col(i) => match &cols[*i].1 {
                Col::Utf8(s) => Cow::Borrowed(s.get(row)),
                Col::F64(_) => Cow::Borrowed(""), // unreachable: binding checked the kind
            },
            StrExpr::Lower(e) => Cow::Owned(to_lower(&e.eval(cols, row))),
        }
    }
}

impl BoolExpr {
    pub fn eval(&self, cols: Cols<'_, '_>, row: usize) -> bool {
        match self {
            BoolExpr::Const(b) => *b,
            BoolExpr::Not(e) => !e.eval(cols, row),
            BoolExpr::And(a, b) => a.eval(cols, row) && b.eval(cols, row),
            BoolExpr::Or(a, b) => a.eval(cols, row) || b.eval(cols, row),
            BoolExpr::Cmp(op, a, b) => {
                let (x, y) = (a.eval(cols, row), b.eval(cols, row));
                match op {
                    BinOp::Eq => x == y,
                    BinOp::Ne => x != y,
                    BinOp::Lt => x < y,
                    BinOp::Le => x <= y,
                    BinOp::Gt => x > y,
                    _ => x >= y,
                }
            }
            BoolExpr::StrEq(eq, a, b) => (a.eval(cols, row) == b.eval(cols, row)) == *eq,
            BoolExpr::BoolEq(eq, a, b) => (a.eval(cols, row) == b.eval(cols, row)) == *eq,
        }
    }
}
