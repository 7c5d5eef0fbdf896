//! The interface description language of remote executables, in the
//! spirit of Ninf's:
//!
//! ```text
//! Module linalg;
//!
//! # C = A * B, all n by n
//! Define dmmul(IN int n, IN double A[n][n], IN double B[n][n],
//!              OUT double C[n][n])
//! "matrix product";
//! ```
//!
//! A `Define` names a function and its parameters in call order. Each
//! parameter has a mode (`IN`, `OUT`, `INOUT`), a type (`char`, `short`,
//! `int`, `long`, `float`, `double`, or `string` for an IN string) and,
//! for an array, one or more dimensions: integer expressions (`+ - * /`,
//! parentheses) of literals and of IN or INOUT integer scalars. An
//! optional doc string and an optional Ninf `Calls "C" name(...)` clause
//! may follow; the terminating `;` is optional. Comments run from `#` or
//! `//` to the end of the line, or between `/*` and `*/`.
//!
//! Errors name the line and column.

use std::collections::HashMap;
use std::fmt;

/// A parsed interface: the module name (if given) and its functions.
#[derive(Debug, Clone, PartialEq)]
pub struct Idl {
    pub module: Option<String>,
    pub functions: Vec<Function>,
}

/// One `Define`.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    pub params: Vec<Param>,
    pub doc: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    In,
    Out,
    InOut,
}

impl Mode {
    /// Whether the caller sends it.
    pub fn sent(self) -> bool {
        matches!(self, Mode::In | Mode::InOut)
    }
    /// Whether the callee sends it back.
    pub fn returned(self) -> bool {
        matches!(self, Mode::Out | Mode::InOut)
    }
}

/// Element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Char,
    Short,
    Int,
    Long,
    Float,
    Double,
    /// A NUL-terminated string (IN scalars only).
    Str,
}

impl Type {
    /// Bytes of one element on the wire (strings: variable).
    pub fn size(self) -> usize {
        match self {
            Type::Char | Type::Str => 1,
            Type::Short => 2,
            Type::Int | Type::Float => 4,
            Type::Long | Type::Double => 8,
        }
    }
    fn integer(self) -> bool {
        matches!(self, Type::Char | Type::Short | Type::Int | Type::Long)
    }
    fn name(self) -> &'static str {
        match self {
            Type::Char => "char",
            Type::Short => "short",
            Type::Int => "int",
            Type::Long => "long",
            Type::Float => "float",
            Type::Double => "double",
            Type::Str => "string",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub mode: Mode,
    pub ty: Type,
    /// Empty for a scalar.
    pub dims: Vec<Expr>,
}

impl Param {
    pub fn is_array(&self) -> bool {
        !self.dims.is_empty()
    }
}

/// A dimension: an integer expression of literals and scalar parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(i64),
    /// Index of an integer scalar parameter of the same function.
    Var(usize),
    Bin(Box<Expr>, char, Box<Expr>),
}

/// An IDL error, with where it is (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {col}: {msg}")]
pub struct IdlError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

/// Why an element count cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimError {
    #[error("dimension of {param} is negative ({value})")]
    Negative { param: String, value: i64 },
    #[error("dimension of {param} divides by zero")]
    DivZero { param: String },
    #[error("dimension of {param} overflows")]
    Overflow { param: String },
}

impl Expr {
    /// Its value, with `scalar(i)` the value of parameter `i`.
    pub fn eval(&self, scalar: &dyn Fn(usize) -> i64) -> Option<i64> {
        match self {
            Expr::Lit(v) => Some(*v),
            Expr::Var(i) => Some(scalar(*i)),
            Expr::Bin(a, op, b) => {
                let (a, b) = (a.eval(scalar)?, b.eval(scalar)?);
                match op {
                    '+' => a.checked_add(b),
                    '-' => a.checked_sub(b),
                    '*' => a.checked_mul(b),
                    _ => a.checked_div(b),
                }
            }
        }
    }

    fn show(&self, params: &[Param], out: &mut String) {
        match self {
            Expr::Lit(v) => out.push_str(&v.to_string()),
            Expr::Var(i) => out.push_str(&params[*i].name),
            Expr::Bin(a, op, b) => {
                out.push('(');
                a.show(params, out);
                out.push(*op);
                b.show(params, out);
                out.push(')');
            }
        }
    }
}

impl Function {
    /// Elements of parameter `p` (1 for a scalar), given the values of the
    /// integer scalars.
    pub fn count(&self, p: usize, scalar: &dyn Fn(usize) -> i64) -> Result<usize, DimError> {
        let param = &self.params[p];
        let mut n: usize = 1;
        for d in &param.dims {
            let v = d.eval(scalar).ok_or_else(|| {
                if has_zero_division(d, scalar) {
                    DimError::DivZero {
                        param: param.name.clone(),
                    }
                } else {
                    DimError::Overflow {
                        param: param.name.clone(),
                    }
                }
            })?;
            if v < 0 {
                return Err(DimError::Negative {
                    param: param.name.clone(),
                    value: v,
                });
            }
            n = n
                .checked_mul(usize::try_from(v).map_err(|_| DimError::Overflow {
                    param: param.name.clone(),
                })?)
                .ok_or_else(|| DimError::Overflow {
                    param: param.name.clone(),
                })?;
        }
        Ok(n)
    }

    /// A canonical one-line form, the same for equal interfaces: what a
    /// client and a worker compare to agree on a function.
    pub fn signature(&self) -> String {
        let mut s = format!("{}(", self.name);
        for (i, p) in self.params.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(match p.mode {
                Mode::In => "IN ",
                Mode::Out => "OUT ",
                Mode::InOut => "INOUT ",
            });
            s.push_str(p.ty.name());
            s.push(' ');
            s.push_str(&p.name);
            for d in &p.dims {
                s.push('[');
                d.show(&self.params, &mut s);
                s.push(']');
            }
        }
        s.push(')');
        s
    }
}

fn has_zero_division(e: &Expr, scalar: &dyn Fn(usize) -> i64) -> bool {
    match e {
        Expr::Bin(a, op, b) => {
            (*op == '/' && b.eval(scalar) == Some(0))
                || has_zero_division(a, scalar)
                || has_zero_division(b, scalar)
        }
        _ => false,
    }
}

impl Idl {
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }
}

impl fmt::Display for Idl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = &self.module {
            writeln!(f, "Module {m};")?;
        }
        for func in &self.functions {
            writeln!(f, "Define {};", func.signature())?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Str(String),
    Punct(char),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
    col: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, IdlError> {
    let chars: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let mut out = Vec::new();
    let err = |line, col, msg: String| IdlError { line, col, msg };
    while i < chars.len() {
        let c = chars[i];
        let (l0, c0) = (line, col);
        let advance = |i: &mut usize, line: &mut usize, col: &mut usize| {
            if chars[*i] == '\n' {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
            *i += 1;
        };
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut col);
        } else if c == '#' || (c == '/' && chars.get(i + 1) == Some(&'/')) {
            while i < chars.len() && chars[i] != '\n' {
                advance(&mut i, &mut line, &mut col);
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            advance(&mut i, &mut line, &mut col);
            advance(&mut i, &mut line, &mut col);
            loop {
                if i >= chars.len() {
                    return Err(err(l0, c0, "comment never closed (*/ missing)".into()));
                }
                if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    advance(&mut i, &mut line, &mut col);
                    advance(&mut i, &mut line, &mut col);
                    break;
                }
                advance(&mut i, &mut line, &mut col);
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut s = String::new();
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                s.push(chars[i]);
                advance(&mut i, &mut line, &mut col);
            }
            out.push(Token {
                tok: Tok::Ident(s),
                line: l0,
                col: c0,
            });
        } else if c.is_ascii_digit() {
            let mut s = String::new();
            while i < chars.len() && chars[i].is_ascii_digit() {
                s.push(chars[i]);
                advance(&mut i, &mut line, &mut col);
            }
            let v = s
                .parse::<i64>()
                .map_err(|_| err(l0, c0, format!("number {s} is too large")))?;
            out.push(Token {
                tok: Tok::Int(v),
                line: l0,
                col: c0,
            });
        } else if c == '"' {
            advance(&mut i, &mut line, &mut col);
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None | Some('\n') => {
                        return Err(err(l0, c0, "string never closed (\" missing)".into()))
                    }
                    Some('"') => {
                        advance(&mut i, &mut line, &mut col);
                        break;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        advance(&mut i, &mut line, &mut col);
                    }
                }
            }
            out.push(Token {
                tok: Tok::Str(s),
                line: l0,
                col: c0,
            });
        } else if "()[],;+-*/".contains(c) {
            out.push(Token {
                tok: Tok::Punct(c),
                line: l0,
                col: c0,
            });
            advance(&mut i, &mut line, &mut col);
        } else {
            return Err(err(l0, c0, format!("unexpected character '{c}'")));
        }
    }
    out.push(Token {
        tok: Tok::End,
        line,
        col,
    });
    Ok(out)
}

// ----------------------------------------------------------------- parser

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.pos]
    }
    fn next(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn fail<T>(&self, t: &Token, msg: impl Into<String>) -> Result<T, IdlError> {
        Err(IdlError {
            line: t.line,
            col: t.col,
            msg: msg.into(),
        })
    }
    fn describe(t: &Tok) -> String {
        match t {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Int(v) => format!("number {v}"),
            Tok::Str(_) => "a string".into(),
            Tok::Punct(c) => format!("'{c}'"),
            Tok::End => "the end of the file".into(),
        }
    }
    fn expect(&mut self, c: char, what: &str) -> Result<(), IdlError> {
        let t = self.next();
        if t.tok == Tok::Punct(c) {
            Ok(())
        } else {
            self.fail(
                &t,
                format!("expected '{c}' {what}, found {}", Self::describe(&t.tok)),
            )
        }
    }
    fn ident(&mut self, what: &str) -> Result<(String, Token), IdlError> {
        let t = self.next();
        match &t.tok {
            Tok::Ident(s) => Ok((s.clone(), t.clone())),
            other => self.fail(
                &t,
                format!("expected {what}, found {}", Self::describe(other)),
            ),
        }
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek().tok == Tok::Punct(c) {
            self.next();
            true
        } else {
            false
        }
    }
}

/// Parses an IDL text.
pub fn parse(src: &str) -> Result<Idl, IdlError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
    };
    let mut idl = Idl {
        module: None,
        functions: Vec::new(),
    };
    loop {
        let t = p.next();
        match &t.tok {
            Tok::End => break,
            Tok::Ident(k) if k == "Module" => {
                if idl.module.is_some() {
                    return p.fail(&t, "a second Module");
                }
                let (name, _) = p.ident("a module name")?;
                p.expect(';', "after the module name")?;
                idl.module = Some(name);
            }
            Tok::Ident(k) if k == "Define" => {
                let f = define(&mut p)?;
                if idl.function(&f.name).is_some() {
                    return p.fail(&t, format!("function {} is defined twice", f.name));
                }
                idl.functions.push(f);
            }
            other => {
                return p.fail(
                    &t,
                    format!(
                        "expected Module or Define, found {}",
                        Parser::describe(other)
                    ),
                )
            }
        }
    }
    Ok(idl)
}

/// Parses one function after `Define`.
fn define(p: &mut Parser) -> Result<Function, IdlError> {
    let (name, _) = p.ident("a function name")?;
    p.expect('(', "after the function name")?;
    // Dimensions are parsed after all names are known (a dimension may
    // name a later parameter).
    let mut raw: Vec<Raw> = Vec::new();
    if !p.eat(')') {
        loop {
            let (m, mt) = p.ident("IN, OUT or INOUT")?;
            let mode = match m.as_str() {
                "IN" | "mode_in" => Mode::In,
                "OUT" | "mode_out" => Mode::Out,
                "INOUT" | "mode_inout" => Mode::InOut,
                _ => return p.fail(&mt, format!("expected IN, OUT or INOUT, found '{m}'")),
            };
            let (t, tt) = p.ident("a type")?;
            let ty = match t.as_str() {
                "char" => Type::Char,
                "short" => Type::Short,
                "int" => Type::Int,
                "long" => Type::Long,
                "float" => Type::Float,
                "double" => Type::Double,
                "string" => Type::Str,
                _ => {
                    return p.fail(
                        &tt,
                        format!(
                            "unknown type '{t}' (char, short, int, long, float, double, string)"
                        ),
                    )
                }
            };
            let (pname, pt) = p.ident("a parameter name")?;
            if raw.iter().any(|r| r.0 == pname) {
                return p.fail(&pt, format!("parameter {pname} appears twice"));
            }
            let mut dims = Vec::new();
            while p.eat('[') {
                let mut toks = Vec::new();
                let mut depth = 0;
                loop {
                    let t = p.next();
                    match t.tok {
                        Tok::Punct(']') if depth == 0 => break,
                        Tok::Punct('(') => depth += 1,
                        Tok::Punct(')') => depth -= 1,
                        Tok::End => return p.fail(&t, "']' missing"),
                        _ => {}
                    }
                    toks.push(t);
                }
                if toks.is_empty() {
                    return p.fail(&pt, format!("empty dimension of {pname}"));
                }
                dims.push(toks);
            }
            if ty == Type::Str && (!dims.is_empty() || mode != Mode::In) {
                return p.fail(&tt, format!("{pname}: string parameters are IN scalars"));
            }
            raw.push((pname, pt, mode, ty, dims));
            if p.eat(')') {
                break;
            }
            p.expect(',', "or ')' between parameters")?;
        }
    }
    let names: HashMap<&str, usize> = raw
        .iter()
        .enumerate()
        .map(|(i, r)| (r.0.as_str(), i))
        .collect();
    let mut params = Vec::new();
    for (pname, _pt, mode, ty, dims) in &raw {
        let mut exprs = Vec::new();
        for toks in dims {
            let mut ep = Parser {
                toks: toks
                    .iter()
                    .cloned()
                    .chain(std::iter::once(Token {
                        tok: Tok::End,
                        line: toks.last().map_or(0, |t| t.line),
                        col: toks.last().map_or(0, |t| t.col + 1),
                    }))
                    .collect(),
                pos: 0,
            };
            let e = expr(&mut ep, &names, &raw)?;
            let t = ep.peek().clone();
            if t.tok != Tok::End {
                return ep.fail(
                    &t,
                    format!(
                        "unexpected {} in a dimension of {pname}",
                        Parser::describe(&t.tok)
                    ),
                );
            }
            exprs.push(e);
        }
        params.push(Param {
            name: pname.clone(),
            mode: *mode,
            ty: *ty,
            dims: exprs,
        });
    }
    let mut doc = None;
    if let Tok::Str(s) = &p.peek().tok {
        doc = Some(s.clone());
        p.next();
    }
    // Ninf's `Calls "C" name(args)`: accepted, not needed.
    if matches!(&p.peek().tok, Tok::Ident(k) if k == "Calls") {
        p.next();
        if matches!(p.peek().tok, Tok::Str(_)) {
            p.next();
        }
        p.ident("the called function's name")?;
        p.expect('(', "after the called function's name")?;
        while !p.eat(')') {
            let t = p.next();
            if t.tok == Tok::End {
                return p.fail(&t, "')' missing in Calls");
            }
        }
    }
    p.eat(';');
    Ok(Function { name, params, doc })
}

type Raw = (String, Token, Mode, Type, Vec<Vec<Token>>);

fn expr(p: &mut Parser, names: &HashMap<&str, usize>, raw: &[Raw]) -> Result<Expr, IdlError> {
    let mut e = term(p, names, raw)?;
    loop {
        let op = match p.peek().tok {
            Tok::Punct(c @ ('+' | '-')) => c,
            _ => return Ok(e),
        };
        p.next();
        e = Expr::Bin(Box::new(e), op, Box::new(term(p, names, raw)?));
    }
}

fn term(p: &mut Parser, names: &HashMap<&str, usize>, raw: &[Raw]) -> Result<Expr, IdlError> {
    let mut e = atom(p, names, raw)?;
    loop {
        let op = match p.peek().tok {
            Tok::Punct(c @ ('*' | '/')) => c,
            _ => return Ok(e),
        };
        p.next();
        e = Expr::Bin(Box::new(e), op, Box::new(atom(p, names, raw)?));
    }
}

fn atom(p: &mut Parser, names: &HashMap<&str, usize>, raw: &[Raw]) -> Result<Expr, IdlError> {
    let t = p.next();
    match &t.tok {
        Tok::Int(v) => Ok(Expr::Lit(*v)),
        Tok::Ident(name) => {
            let Some(&i) = names.get(name.as_str()) else {
                return p.fail(&t, format!("unknown parameter '{name}' in a dimension"));
            };
            let r = &raw[i];
            if !r.3.integer() || !r.4.is_empty() || !r.2.sent() {
                return p.fail(
                    &t,
                    format!("dimension uses '{name}', which is not an IN or INOUT integer scalar"),
                );
            }
            Ok(Expr::Var(i))
        }
        Tok::Punct('(') => {
            let e = expr(p, names, raw)?;
            p.expect(')', "to close '('")?;
            Ok(e)
        }
        other => p.fail(
            &t,
            format!(
                "expected a number or a name, found {}",
                Parser::describe(other)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DMMUL: &str = r#"
Module linalg;
# C = A * B
Define dmmul(IN int n, IN double A[n][n], IN double B[n][n],
             OUT double C[n][n])
"matrix product"
Calls "C" mmul(n, A, B, C);
/* a block
   comment */
Define scale(IN long m, INOUT float v[2*m+1], IN string tag) // trailing
"#;

    #[test]
    fn parses_functions_modes_types_and_dimensions() {
        let idl = parse(DMMUL).unwrap();
        assert_eq!(idl.module.as_deref(), Some("linalg"));
        assert_eq!(idl.functions.len(), 2);
        let f = idl.function("dmmul").unwrap();
        assert_eq!(f.doc.as_deref(), Some("matrix product"));
        assert_eq!(f.params.len(), 4);
        assert_eq!(f.params[3].mode, Mode::Out);
        assert_eq!(f.params[1].dims, vec![Expr::Var(0), Expr::Var(0)]);
        let n = |_| 3;
        assert_eq!(f.count(1, &n).unwrap(), 9);
        assert_eq!(f.count(0, &n).unwrap(), 1);
        let g = idl.function("scale").unwrap();
        assert_eq!(g.count(1, &|_| 4).unwrap(), 9);
        assert_eq!(g.params[2].ty, Type::Str);
        assert_eq!(
            g.signature(),
            "scale(IN long m, INOUT float v[((2*m)+1)], IN string tag)"
        );
    }

    #[test]
    fn signatures_are_canonical() {
        let a = parse("Define f(IN int n, OUT double x[n])").unwrap();
        let b = parse("Define f ( IN int n ,\n OUT double x [ n ] ) ;").unwrap();
        assert_eq!(a.functions[0].signature(), b.functions[0].signature());
        let idl = parse(&a.to_string()).unwrap();
        assert_eq!(idl, a);
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases = [
            (
                "Define f(IN int n, OUT double x[m])",
                1,
                33,
                "unknown parameter 'm'",
            ),
            (
                "Define f(IN int n,\n  OUT dbl x[n])",
                2,
                7,
                "unknown type 'dbl'",
            ),
            (
                "Define f(IN double d, OUT int x[d])",
                1,
                33,
                "not an IN or INOUT integer",
            ),
            ("Define f(IN int n, IN int n)", 1, 27, "appears twice"),
            ("Define f(IN int n OUT int x)", 1, 19, "expected ','"),
            ("Module a;\nModule b;", 2, 1, "a second Module"),
            (
                "Define f(IN int n)\nDefine f(IN int n)",
                2,
                1,
                "defined twice",
            ),
            (
                "Define f(OUT string s)",
                1,
                14,
                "string parameters are IN scalars",
            ),
            (
                "Define f(IN int n, IN int x[n+])",
                1,
                31,
                "expected a number",
            ),
            ("/* open", 1, 1, "comment never closed"),
            ("Define f(IN int n) \"doc", 1, 20, "string never closed"),
            ("Define f(IN int n) $", 1, 20, "unexpected character '$'"),
            ("Defin f()", 1, 1, "expected Module or Define"),
            ("Define f(IN int n, IN int x[n]", 1, 31, "or ')'"),
        ];
        for (src, line, col, what) in cases {
            let e = parse(src).expect_err(src);
            assert_eq!((e.line, e.col), (line, col), "{src}: {e}");
            assert!(e.msg.contains(what), "{src}: {e}");
        }
    }

    #[test]
    fn counts_refuse_negative_overflowing_and_zero_divided_sizes() {
        let idl =
            parse("Define f(IN long n, IN int x[n], IN int y[4/n], IN int z[n][n][n])").unwrap();
        let f = &idl.functions[0];
        assert!(matches!(
            f.count(1, &|_| -1),
            Err(DimError::Negative { .. })
        ));
        assert!(matches!(f.count(2, &|_| 0), Err(DimError::DivZero { .. })));
        assert!(matches!(
            f.count(3, &|_| i64::MAX / 2),
            Err(DimError::Overflow { .. })
        ));
        assert!(matches!(
            f.count(3, &|_| 1 << 30),
            Err(DimError::Overflow { .. })
        ));
    }
}
