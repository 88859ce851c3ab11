//! The single pass over a query text that finds what [`super::plan`] replaces
//! or refuses: a hand-written lexer in the style of `normalize`.

use super::literal::{self, Meaning, Special, Style};
use super::names::{NONDETERMINISTIC, TEXT_TYPES, keyword_clock};
use super::shape::{Mode, Shape};
use super::{Cast, Edit, Nondeterministic, Replacement, Target, Value};
use crate::sql::normalize::{is_ident_byte, skip_block_comment, skip_dollar_quote, skip_number, skip_quoted};

pub(super) const FROM: &str = "in FROM: no literal can stand there";
pub(super) const DO_BLOCK: &str = "in a DO block: chorus does not rewrite procedural code";

pub(super) fn scan(sql: &str) -> Result<Vec<Edit>, Nondeterministic> {
    let mut scanner = Scanner::new(sql.as_bytes(), 0, false);
    scanner.run()?;
    Ok(scanner.edits)
}

/// [`scan`] of procedural code (a function body): every statement in it
/// counts as evaluated, whatever its first word.
pub(super) fn scan_body(body: &str) -> Result<Vec<Edit>, Nondeterministic> {
    let mut scanner = Scanner::new(body.as_bytes(), 0, true);
    scanner.run()?;
    Ok(scanner.edits)
}

/// A significant token, as far as the scanner needs to remember it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Start,
    /// `start..end` of an identifier or keyword, quotes included when quoted.
    Word {
        start: usize,
        end: usize,
        quoted: bool,
    },
    Dot,
    Open,
    Close,
    Comma,
    /// A constant, a parameter or a replaced expression.
    Value,
    Other,
}

/// How a string constant is typed where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TypeClass {
    Timestamptz,
    /// timestamp, date, time, timetz.
    OtherTime,
    Text,
    /// No explicit type, or one chorus does not know.
    Unknown,
}

/// A string constant found at the current position.
struct Constant {
    /// Where the token starts (its `E`, `U&` or first quote or tag) and ends.
    start: usize,
    end: usize,
    /// The bytes between the outer quotes.
    content: (usize, usize),
    style: Style,
}

struct Scanner<'a> {
    /// The text up to where this scan stops.
    b: &'a [u8],
    i: usize,
    edits: Vec<Edit>,
    /// Inside a DO body: every statement counts as evaluated.
    force_eval: bool,
    /// The last three significant tokens, latest first.
    toks: [Tok; 3],
    depth: u32,
    shape: Shape,
    /// A refusal that `WITH NO DATA` at the end of the statement lifts.
    pending: Option<Nondeterministic>,
    /// Bit d: the parenthesis at depth d holds the arguments of `age(`; and it has seen a comma.
    age_open: u64,
    age_comma: u64,
    /// Bit d: the parenthesis at depth d holds the arguments of a function
    /// whose syntax uses FROM (`extract(field FROM x)`, `substring`, `trim`, `overlay`).
    from_args: u64,
}

impl<'a> Scanner<'a> {
    fn new(b: &'a [u8], i: usize, force_eval: bool) -> Self {
        Scanner {
            b,
            i,
            edits: Vec::new(),
            force_eval,
            toks: [Tok::Start; 3],
            depth: 0,
            shape: Shape::default(),
            pending: None,
            age_open: 0,
            age_comma: 0,
            from_args: 0,
        }
    }

    fn run(&mut self) -> Result<(), Nondeterministic> {
        let b = self.b;
        while let Some(&c) = b.get(self.i) {
            let i = self.i;
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => self.i += 1,
                b'-' if b.get(i + 1) == Some(&b'-') => self.i = line_end(b, i),
                b'/' if b.get(i + 1) == Some(&b'*') => self.i = skip_block_comment(b, i),
                b'"' => {
                    let end = skip_quoted(b, i + 1, b'"', false);
                    self.word(i, end, true)?;
                }
                b'\'' => {
                    let constant = self.constant(i, i, Style::Standard);
                    self.untyped_constant(constant)?;
                }
                b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    self.i = skip_number(b, i + 1);
                    self.push(Tok::Value);
                }
                b'$' => match self.dollar_constant(i) {
                    Some(constant) => self.untyped_constant(constant)?,
                    None => self.token(Tok::Other, 1),
                },
                b'0'..=b'9' => {
                    self.i = skip_number(b, i);
                    self.push(Tok::Value);
                }
                b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    self.i = skip_number(b, i);
                    self.push(Tok::Value);
                }
                c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => self.identifier(i)?,
                b'(' => {
                    self.shape.open();
                    self.depth += 1;
                    if self.depth < 64 {
                        let from_arg =
                            ["extract", "substring", "trim", "overlay"].iter().any(|f| self.is_kw(self.toks[0], f));
                        self.from_args = self.from_args & !(1 << self.depth) | u64::from(from_arg) << self.depth;
                    }
                    self.token(Tok::Open, 1);
                }
                b')' => {
                    self.close_paren()?;
                    self.token(Tok::Close, 1);
                }
                b',' => {
                    if self.depth == 0 {
                        self.shape.comma();
                    }
                    if self.depth < 64 && self.age_open & (1 << self.depth) != 0 {
                        self.age_comma |= 1 << self.depth;
                    }
                    self.token(Tok::Comma, 1);
                }
                b';' if self.depth == 0 && self.shape.ends_at_semicolon() => {
                    self.end_statement()?;
                    self.i += 1;
                }
                b':' if b.get(i + 1) == Some(&b':') => self.token(Tok::Other, 2),
                b'.' => self.token(Tok::Dot, 1),
                _ => self.token(Tok::Other, 1),
            }
        }
        self.end_statement()
    }

    fn token(&mut self, tok: Tok, len: usize) {
        self.i += len;
        self.push(tok);
    }

    fn push(&mut self, tok: Tok) {
        self.toks = [tok, self.toks[0], self.toks[1]];
    }

    fn end_statement(&mut self) -> Result<(), Nondeterministic> {
        if let Some(refusal) = self.pending.take()
            && !self.shape.ends_with_no_data()
        {
            return Err(refusal);
        }
        let (b, i, force_eval) = (self.b, self.i, self.force_eval);
        let edits = std::mem::take(&mut self.edits);
        *self = Scanner { edits, ..Scanner::new(b, i, force_eval) };
        Ok(())
    }

    fn mode(&self) -> Mode {
        if self.force_eval { Mode::Eval } else { self.shape.mode() }
    }

    /// Refuses the statement, unless `WITH NO DATA` may still lift it.
    fn refuse(&mut self, refusal: Nondeterministic) -> Result<(), Nondeterministic> {
        if !self.force_eval && self.shape.defers_refusals() {
            self.pending.get_or_insert(refusal);
            return Ok(());
        }
        Err(refusal)
    }

    fn close_paren(&mut self) -> Result<(), Nondeterministic> {
        let d = self.depth;
        self.depth = d.saturating_sub(1);
        if d < 64 && self.age_open & (1 << d) != 0 {
            self.age_open &= !(1 << d);
            if self.age_comma & (1 << d) == 0 {
                // age(x) measures from today: per transaction, per server for xids.
                return self.refuse(Nondeterministic::Function { name: "age".into() });
            }
        }
        Ok(())
    }

    /// An identifier or keyword starting at `start`, or a prefixed string constant.
    fn identifier(&mut self, start: usize) -> Result<(), Nondeterministic> {
        let b = self.b;
        let mut end = start + 1;
        while b.get(end).is_some_and(|&c| is_ident_byte(c) || c == b'$') {
            end += 1;
        }
        let prefix = &b[start..end];
        match (prefix, b.get(end), b.get(end + 1)) {
            (b"e" | b"E", Some(b'\''), _) => {
                let constant = self.constant(start, end, Style::Escape);
                self.untyped_constant(constant)
            }
            (b"u" | b"U", Some(b'&'), Some(b'\'')) => {
                let constant = self.constant(start, end + 1, Style::Unicode(b'\\'));
                self.untyped_constant(constant)
            }
            (b"u" | b"U", Some(b'&'), Some(b'"')) => {
                self.i = skip_quoted(b, end + 2, b'"', false);
                self.push(Tok::Word { start, end: self.i, quoted: true });
                Ok(())
            }
            // N'' is bpchar, B'' and X'' are bit strings: never a date.
            (b"n" | b"N" | b"b" | b"B" | b"x" | b"X", Some(b'\''), _) => {
                self.i = skip_quoted(b, end + 1, b'\'', false);
                self.push(Tok::Value);
                Ok(())
            }
            _ => self.word(start, end, false),
        }
    }

    fn word(&mut self, start: usize, end: usize, quoted: bool) -> Result<(), Nondeterministic> {
        self.i = end;
        let tok = Tok::Word { start, end, quoted };
        let b = self.b;
        self.shape.word(&b[start..end], quoted, self.depth == 0, || next_word_is(b, end, "values"));
        // Qualified: only pg_catalog's functions are the built-in ones.
        let (from, before) = match self.toks {
            [Tok::Dot, q @ Tok::Word { start: qs, .. }, before] if self.name_is(q, "pg_catalog") => (qs, before),
            [Tok::Dot, ..] => {
                self.push(tok);
                return Ok(());
            }
            [before, ..] => (start, before),
        };
        let mode = self.mode();
        if (self.name_is(tok, "now") || self.name_is(tok, "transaction_timestamp"))
            && mode != Mode::Define
            && let Some(call_end) = self.empty_call(end)
        {
            return self.clock(from, call_end, before, None);
        }
        if !quoted
            && from == start
            && !self.is_kw(before, "as")
            && mode != Mode::Define
            && let Some((to, precise)) = keyword_clock(&self.b[start..end])
        {
            let (expr_end, precision) = if precise { self.precision(end) } else { (end, None) };
            let cast = (to != Target::Timestamptz || precision.is_some()).then_some(Cast { to, precision });
            return self.clock(start, expr_end, before, cast);
        }
        if mode != Mode::Define && self.next_is(end, b'(') {
            if let Some(&name) = NONDETERMINISTIC.iter().find(|n| self.name_is(tok, n)) {
                self.refuse(Nondeterministic::Function { name: name.into() })?;
            } else if self.name_is(tok, "age") {
                let d = self.depth + 1;
                if d >= 64 {
                    self.refuse(Nondeterministic::Function { name: "age".into() })?;
                } else {
                    self.age_open |= 1 << d;
                    self.age_comma &= !(1 << d);
                }
            }
        }
        if let Some((class, ty_end)) = self.type_name(tok) {
            let j = skip_space(self.b, ty_end);
            if let Some(constant) = self.constant_at(j) {
                return self.typed_constant(constant, class, Some((from, ty_end)));
            }
        }
        self.push(tok);
        Ok(())
    }

    /// A transaction-time expression at `start..end`.
    fn clock(&mut self, start: usize, end: usize, before: Tok, cast: Option<Cast>) -> Result<(), Nondeterministic> {
        self.i = end;
        self.push(Tok::Value);
        let b = self.b;
        let expr = || String::from_utf8_lossy(&b[start..end]).into_owned();
        match self.mode() {
            Mode::Define => Ok(()),
            Mode::Stored(place) => self.refuse(Nondeterministic::Placement { expr: expr(), place }),
            Mode::Eval if self.in_from_clause(before) => Err(Nondeterministic::Placement { expr: expr(), place: FROM }),
            Mode::Eval => {
                self.edits.push(Edit { start, end, with: Replacement::Clock(cast) });
                Ok(())
            }
        }
    }

    /// A string constant with no type written before it: typed by `::` or `CAST(... AS`, or by context.
    fn untyped_constant(&mut self, constant: Constant) -> Result<(), Nondeterministic> {
        if self.shape.take_do_body() {
            self.i = constant.end;
            self.push(Tok::Value);
            return self.do_body(constant.content);
        }
        let j = skip_space(self.b, constant.end);
        let class = if self.b[j..].starts_with(b"::") {
            self.type_at(skip_space(self.b, j + 2))
        } else if self.toks[0] == Tok::Open
            && self.is_kw(self.toks[1], "cast")
            && next_word_is(self.b, constant.end, "as")
        {
            let k = skip_space(self.b, j + 2);
            self.type_at(k)
        } else {
            TypeClass::Unknown
        };
        self.typed_constant(constant, class, None)
    }

    /// Decides a string constant of type `class`; `prefix` is the type written
    /// before it (`start..end`), if any.
    fn typed_constant(
        &mut self,
        constant: Constant,
        class: TypeClass,
        prefix: Option<(usize, usize)>,
    ) -> Result<(), Nondeterministic> {
        self.i = constant.end;
        self.push(Tok::Value);
        let (a, z) = constant.content;
        let meaning = literal::meaning(&self.b[a..z], constant.style);
        let value = match (class, meaning) {
            (_, Meaning::Plain) | (TypeClass::Text, _) => return Ok(()),
            (TypeClass::Timestamptz, Meaning::Exact(Special::Now)) => {
                let (start, end) = (constant.start, constant.end);
                self.edits.push(Edit { start, end, with: Replacement::Text });
                return Ok(());
            }
            (TypeClass::Timestamptz | TypeClass::OtherTime, Meaning::Exact(s)) if self.mode() == Mode::Eval => {
                match s {
                    Special::Now => Value::Now,
                    Special::Day(k) => Value::Day(k),
                }
            }
            _ => {
                let mut text = String::from_utf8_lossy(&self.b[constant.start..constant.end]).into_owned();
                if text.len() > 60 {
                    let cut = (0..=57).rev().find(|&n| text.is_char_boundary(n)).unwrap_or(0);
                    text.truncate(cut);
                    text.push_str("...");
                }
                return Err(Nondeterministic::Literal { literal: text });
            }
        };
        self.edits.push(match prefix {
            Some((start, ty_end)) => {
                Edit { start, end: constant.end, with: Replacement::Typed { value, ty: (start, ty_end) } }
            }
            None => Edit { start: constant.start, end: constant.end, with: Replacement::Value(value) },
        });
        Ok(())
    }

    /// Refuses a DO block whose body mentions anything chorus would replace or refuse.
    fn do_body(&mut self, (start, end): (usize, usize)) -> Result<(), Nondeterministic> {
        let mut body = Scanner::new(&self.b[..end], start, true);
        body.run()?;
        match body.edits.first() {
            None => Ok(()),
            Some(edit) => Err(Nondeterministic::Placement {
                expr: String::from_utf8_lossy(&self.b[edit.start..edit.end]).into_owned(),
                place: DO_BLOCK,
            }),
        }
    }

    /// The string constant whose token starts at `start`, its opening quote at `quote`.
    fn constant(&self, start: usize, quote: usize, style: Style) -> Constant {
        let b = self.b;
        let escapes = style == Style::Escape;
        let mut end = skip_quoted(b, quote + 1, b'\'', escapes);
        // 'a'<white space with a newline>'b' is one constant.
        loop {
            let j = end + b[end..].iter().take_while(|c| c.is_ascii_whitespace()).count();
            if b.get(j) != Some(&b'\'') || !b[end..j].contains(&b'\n') || b.get(end - 1) != Some(&b'\'') {
                break;
            }
            end = skip_quoted(b, j + 1, b'\'', escapes);
        }
        let closed = end > quote + 1 && b.get(end - 1) == Some(&b'\'');
        let content = (quote + 1, if closed { end - 1 } else { end });
        let mut constant = Constant { start, end, content, style };
        if let Style::Unicode(_) = style {
            // U&'...' UESCAPE '!'
            let j = skip_space(self.b, end);
            if word_at(self.b, j).is_some_and(|(a, z)| b[a..z].eq_ignore_ascii_case(b"uescape")) {
                let k = skip_space(self.b, j + 7);
                if b.get(k) == Some(&b'\'') && b.get(k + 2) == Some(&b'\'') {
                    constant.style = Style::Unicode(b[k + 1]);
                    constant.end = k + 3;
                }
            }
        }
        constant
    }

    fn dollar_constant(&self, start: usize) -> Option<Constant> {
        let end = skip_dollar_quote(self.b, start);
        if end == start + 1 {
            return None;
        }
        let tag = 1 + self.b[start + 1..].iter().position(|&c| c == b'$')? + 1;
        let content_end = if end >= start + 2 * tag { end - tag } else { end };
        Some(Constant { start, end, content: (start + tag, content_end.max(start + tag)), style: Style::Raw })
    }

    /// A string constant starting exactly at `j`, if one does.
    fn constant_at(&self, j: usize) -> Option<Constant> {
        let b = self.b;
        match (b.get(j)?, b.get(j + 1), b.get(j + 2)) {
            (b'\'', _, _) => Some(self.constant(j, j, Style::Standard)),
            (b'e' | b'E', Some(b'\''), _) => Some(self.constant(j, j + 1, Style::Escape)),
            (b'u' | b'U', Some(b'&'), Some(b'\'')) => Some(self.constant(j, j + 2, Style::Unicode(b'\\'))),
            (b'$', Some(c), _) if !c.is_ascii_digit() => self.dollar_constant(j),
            _ => None,
        }
    }

    /// If `tok` names a date/time or text type, its class and where its name ends
    /// (precision and `with[out] time zone` included).
    fn type_name(&self, tok: Tok) -> Option<(TypeClass, usize)> {
        let Tok::Word { end, .. } = tok else { return None };
        let zoned = |scanner: &Self, at: usize| -> (bool, usize) {
            let at = scanner.precision(at).0;
            let j = skip_space(scanner.b, at);
            let Some((a, z)) = word_at(scanner.b, j) else { return (false, at) };
            let with = scanner.b[a..z].eq_ignore_ascii_case(b"with");
            if !with && !scanner.b[a..z].eq_ignore_ascii_case(b"without") {
                return (false, at);
            }
            let time = skip_space(scanner.b, z);
            match word_at(scanner.b, time) {
                Some((c, d)) if scanner.b[c..d].eq_ignore_ascii_case(b"time") => {
                    match word_at(scanner.b, skip_space(scanner.b, d)) {
                        Some((e, f)) if scanner.b[e..f].eq_ignore_ascii_case(b"zone") => (with, f),
                        _ => (false, at),
                    }
                }
                _ => (false, at),
            }
        };
        if self.name_is(tok, "timestamp") || self.name_is(tok, "time") {
            let (with, ty_end) = zoned(self, end);
            let timestamp = self.name_is(tok, "timestamp");
            return Some((if with && timestamp { TypeClass::Timestamptz } else { TypeClass::OtherTime }, ty_end));
        }
        if self.name_is(tok, "timestamptz") {
            return Some((TypeClass::Timestamptz, self.precision(end).0));
        }
        if self.name_is(tok, "timetz") {
            return Some((TypeClass::OtherTime, self.precision(end).0));
        }
        if self.name_is(tok, "date") {
            return Some((TypeClass::OtherTime, end));
        }
        if TEXT_TYPES.iter().any(|t| self.name_is(tok, t)) {
            let mut at = end;
            if let Some((a, z)) = word_at(self.b, skip_space(self.b, at))
                && self.b[a..z].eq_ignore_ascii_case(b"varying")
            {
                at = z;
            }
            let j = skip_space(self.b, at);
            if self.b.get(j) == Some(&b'(') {
                let k = skip_space(self.b, j + 1);
                let digits = self.b[k..].iter().take_while(|c| c.is_ascii_digit()).count();
                let close = skip_space(self.b, k + digits);
                if digits > 0 && self.b.get(close) == Some(&b')') {
                    at = close + 1;
                }
            }
            return Some((TypeClass::Text, at));
        }
        None
    }

    /// The class of the type named at `j` (after `::` or `AS`).
    fn type_at(&self, mut j: usize) -> TypeClass {
        let word = |j: usize| -> Option<Tok> {
            if self.b.get(j) == Some(&b'"') {
                return Some(Tok::Word { start: j, end: skip_quoted(self.b, j + 1, b'"', false), quoted: true });
            }
            word_at(self.b, j).map(|(start, end)| Tok::Word { start, end, quoted: false })
        };
        let Some(mut tok) = word(j) else { return TypeClass::Unknown };
        if self.name_is(tok, "pg_catalog") {
            let Tok::Word { end, .. } = tok else { return TypeClass::Unknown };
            let dot = skip_space(self.b, end);
            if self.b.get(dot) != Some(&b'.') {
                return TypeClass::Unknown;
            }
            j = skip_space(self.b, dot + 1);
            match word(j) {
                Some(t) => tok = t,
                None => return TypeClass::Unknown,
            }
        }
        match self.type_name(tok) {
            // An array of dates, or a type chorus does not know.
            Some((class, end)) if self.b.get(skip_space(self.b, end)) != Some(&b'[') => class,
            _ => TypeClass::Unknown,
        }
    }

    /// `( digits )` after `at`: (where the expression ends, the digits).
    fn precision(&self, at: usize) -> (usize, Option<(usize, usize)>) {
        let j = skip_space(self.b, at);
        if self.b.get(j) != Some(&b'(') {
            return (at, None);
        }
        let k = skip_space(self.b, j + 1);
        let digits = self.b[k..].iter().take_while(|c| c.is_ascii_digit()).count();
        let close = skip_space(self.b, k + digits);
        if digits == 0 || self.b.get(close) != Some(&b')') {
            return (at, None);
        }
        (close + 1, Some((k, k + digits)))
    }

    /// `(` `)` after `at`: where the call ends.
    fn empty_call(&self, at: usize) -> Option<usize> {
        let j = skip_space(self.b, at);
        let k = skip_space(self.b, j + 1);
        (self.b.get(j) == Some(&b'(') && self.b.get(k) == Some(&b')')).then_some(k + 1)
    }

    fn next_is(&self, at: usize, c: u8) -> bool {
        self.b.get(skip_space(self.b, at)) == Some(&c)
    }

    /// Whether a function call after `before` would be a table function.
    fn in_from_clause(&self, before: Tok) -> bool {
        let function_arg = self.depth < 64 && self.from_args & (1 << self.depth) != 0;
        ["join", "lateral"].iter().any(|k| self.is_kw(before, k)) || (self.is_kw(before, "from") && !function_arg)
    }

    /// An unquoted keyword.
    fn is_kw(&self, tok: Tok, kw: &str) -> bool {
        matches!(tok, Tok::Word { start, end, quoted: false } if self.b[start..end].eq_ignore_ascii_case(kw.as_bytes()))
    }

    /// An identifier as PostgreSQL folds it: unquoted case-insensitively, quoted exactly.
    fn name_is(&self, tok: Tok, name: &str) -> bool {
        match tok {
            Tok::Word { start, end, quoted: false } => self.b[start..end].eq_ignore_ascii_case(name.as_bytes()),
            Tok::Word { start, end, quoted: true } => {
                end >= start + 2 && self.b.get(start + 1..end - 1) == Some(name.as_bytes())
            }
            _ => false,
        }
    }
}

fn next_word_is(b: &[u8], at: usize, kw: &str) -> bool {
    word_at(b, skip_space(b, at)).is_some_and(|(a, z)| b[a..z].eq_ignore_ascii_case(kw.as_bytes()))
}

/// The unquoted identifier starting exactly at `j`.
fn word_at(b: &[u8], j: usize) -> Option<(usize, usize)> {
    let &c = b.get(j)?;
    if !(c.is_ascii_alphabetic() || c == b'_' || c >= 0x80) {
        return None;
    }
    let len = b[j..].iter().take_while(|&&c| is_ident_byte(c) || c == b'$').count();
    Some((j, j + len))
}

/// Past white space and comments from `at`.
fn skip_space(b: &[u8], mut at: usize) -> usize {
    loop {
        match (b.get(at), b.get(at + 1)) {
            (Some(b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c), _) => at += 1,
            (Some(b'-'), Some(b'-')) => at = line_end(b, at),
            (Some(b'/'), Some(b'*')) => at = skip_block_comment(b, at),
            _ => return at,
        }
    }
}

fn line_end(b: &[u8], i: usize) -> usize {
    b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |p| i + p)
}
