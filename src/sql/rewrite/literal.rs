//! What a string constant means when PostgreSQL reads it as a date or time:
//! does it hold one of the inputs that stand for the current time ('now',
//! 'today', 'tomorrow', 'yesterday')?
//!
//! PostgreSQL splits date/time input into fields and looks the alphabetic ones
//! up, case-insensitively, ignoring white space and stray punctuation. So
//! `' Now '`, `'today 12:00'`, `'{now}'` (an array) and `'[today,tomorrow)'`
//! (a range) all read the clock, while `'I did it today'` is an invalid
//! timestamp and harmless prose when it is text.

/// How the bytes between a constant's quotes are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    /// `$tag$...$tag$`: as written.
    Raw,
    /// `'...'`: `''` is a quote; `'<white space with a newline>'` joins two constants.
    Standard,
    /// `E'...'`: also backslash escapes.
    Escape,
    /// `U&'...'`: also `<escape>XXXX` and `<escape>+XXXXXX` code points.
    Unicode(u8),
}

/// A special date/time input that reads the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
    /// 'now': the transaction timestamp.
    Now,
    /// 'today' (0), 'tomorrow' (1), 'yesterday' (-1): midnight of that day in the session time zone.
    Day(i8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Meaning {
    /// No special input, or text that cannot be a date/time anyway.
    Plain,
    /// Exactly one special word, white space around it allowed.
    Exact(Special),
    /// A special word among other date/time fields.
    Mixed,
}

/// The meaning of a constant whose text between the outer quotes is `content`.
pub(super) fn meaning(content: &[u8], style: Style) -> Meaning {
    let chars = Chars { b: content, i: 0, style };
    if let Some(special) = exact(chars.clone()) {
        return Meaning::Exact(special);
    }
    let mut found = false;
    let mut run = Run::default();
    for c in chars.chain(std::iter::once(b' ')) {
        if c.is_ascii_alphabetic() || c >= 0x80 || (run.len > 0 && matches!(c, b'_' | b'/')) {
            run.push(c);
            continue;
        }
        if run.len > 0 {
            match run.kind() {
                RunKind::Special => found = true,
                RunKind::Field => {}
                RunKind::Prose => return Meaning::Plain,
            }
            run = Run::default();
        }
    }
    if found { Meaning::Mixed } else { Meaning::Plain }
}

fn exact(chars: Chars<'_>) -> Option<Special> {
    let mut word = [0u8; 9];
    let mut len = 0;
    let mut ended = false;
    for c in chars {
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            ended = len > 0;
        } else if ended || len == word.len() {
            return None;
        } else {
            word[len] = c.to_ascii_lowercase();
            len += 1;
        }
    }
    special(&word[..len])
}

fn special(word: &[u8]) -> Option<Special> {
    match word {
        b"now" => Some(Special::Now),
        b"today" => Some(Special::Day(0)),
        b"tomorrow" => Some(Special::Day(1)),
        b"yesterday" => Some(Special::Day(-1)),
        _ => None,
    }
}

/// Alphabetic fields PostgreSQL's date/time input accepts next to a special word.
const FIELDS: &[&[u8]] = &[
    b"allballs",
    b"epoch",
    b"infinity",
    b"am",
    b"pm",
    b"at",
    b"on",
    b"t",
    b"z",
    b"zulu",
    b"utc",
    b"gmt",
    b"ut",
    b"ad",
    b"bc",
    b"sun",
    b"sunday",
    b"mon",
    b"monday",
    b"tue",
    b"tues",
    b"tuesday",
    b"wed",
    b"wednesday",
    b"thu",
    b"thur",
    b"thurs",
    b"thursday",
    b"fri",
    b"friday",
    b"sat",
    b"saturday",
];

enum RunKind {
    Special,
    /// Another date/time field: a keyword, a zone name (`Europe/Paris`) or an
    /// upper-case zone abbreviation (`CEST`).
    Field,
    Prose,
}

/// One alphabetic field, lower-cased (its first bytes).
#[derive(Default)]
struct Run {
    lower: [u8; 12],
    len: usize,
    upper: bool,
    slash: bool,
}

impl Run {
    fn push(&mut self, c: u8) {
        if self.len == 0 {
            self.upper = true;
        }
        self.upper &= c.is_ascii_uppercase();
        self.slash |= c == b'/';
        if let Some(slot) = self.lower.get_mut(self.len) {
            *slot = c.to_ascii_lowercase();
        }
        self.len += 1;
    }

    fn kind(&self) -> RunKind {
        let word = &self.lower[..self.len.min(self.lower.len())];
        if self.len > self.lower.len() {
            return if self.slash { RunKind::Field } else { RunKind::Prose };
        }
        if special(word).is_some() {
            RunKind::Special
        } else if self.slash || FIELDS.contains(&word) || (self.upper && (2..=5).contains(&self.len)) {
            RunKind::Field
        } else {
            RunKind::Prose
        }
    }
}

/// The bytes of a constant's value (non-ASCII characters from escapes as 0x80).
#[derive(Clone)]
struct Chars<'a> {
    b: &'a [u8],
    i: usize,
    style: Style,
}

impl Iterator for Chars<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            match self.style {
                Style::Raw => return Some(c),
                _ if c == b'\'' => {
                    if self.b.get(self.i) == Some(&b'\'') {
                        self.i += 1;
                        return Some(c);
                    }
                    // The end of one constant and the start of its continuation.
                    while self.b.get(self.i).is_some_and(|&x| x != b'\'') {
                        self.i += 1;
                    }
                    self.i += 1;
                }
                Style::Escape if c == b'\\' => return Some(self.backslash()),
                Style::Unicode(e) if c == e => return Some(self.code_point(e)),
                _ => return Some(c),
            }
        }
    }
}

impl Chars<'_> {
    /// After a backslash in an `E'...'` constant.
    fn backslash(&mut self) -> u8 {
        let Some(&c) = self.b.get(self.i) else { return b'\\' };
        self.i += 1;
        match c {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'0'..=b'7' => {
                // Up to three octal digits, the first one already read.
                let (rest, n) = self.digits(8, 2);
                ascii(u32::from(c - b'0') * 8u32.pow(n) + rest)
            }
            b'x' => match self.digits(16, 2) {
                (_, 0) => b'x',
                (v, _) => ascii(v),
            },
            b'u' => ascii(self.digits(16, 4).0),
            b'U' => ascii(self.digits(16, 8).0),
            other => other,
        }
    }

    /// After the escape character in a `U&'...'` constant.
    fn code_point(&mut self, escape: u8) -> u8 {
        match self.b.get(self.i) {
            Some(&c) if c == escape => {
                self.i += 1;
                escape
            }
            Some(b'+') => {
                self.i += 1;
                ascii(self.digits(16, 6).0)
            }
            _ => ascii(self.digits(16, 4).0),
        }
    }

    /// Up to `max` digits in `radix`: (value, how many).
    fn digits(&mut self, radix: u32, max: u32) -> (u32, u32) {
        let (mut value, mut n) = (0u32, 0);
        while n < max {
            let Some(d) = self.b.get(self.i).and_then(|&c| (c as char).to_digit(radix)) else { break };
            value = value.saturating_mul(radix).saturating_add(d);
            self.i += 1;
            n += 1;
        }
        (value, n)
    }
}

/// A decoded code point as one byte: itself when ASCII, 0x80 otherwise.
fn ascii(code: u32) -> u8 {
    u8::try_from(code).ok().filter(u8::is_ascii).unwrap_or(0x80)
}

#[cfg(test)]
mod tests {
    use super::{Meaning, Special, Style, meaning};

    #[test]
    fn table() {
        use Meaning::{Exact, Mixed, Plain};
        use Special::{Day, Now};
        let cases: &[(&str, Style, Meaning)] = &[
            ("now", Style::Standard, Exact(Now)),
            ("  NoW\t", Style::Standard, Exact(Now)),
            ("today", Style::Standard, Exact(Day(0))),
            ("Tomorrow", Style::Raw, Exact(Day(1))),
            (" yesterday ", Style::Standard, Exact(Day(-1))),
            ("no' \n 'w", Style::Standard, Exact(Now)),
            ("n\\157w", Style::Escape, Exact(Now)),
            ("\\x6eow", Style::Escape, Exact(Now)),
            ("\\u006Eow", Style::Escape, Exact(Now)),
            ("no\\w", Style::Escape, Exact(Now)),
            ("n\\006Fw", Style::Unicode(b'\\'), Exact(Now)),
            ("n!006Fw", Style::Unicode(b'!'), Exact(Now)),
            ("n\\+00006Fw", Style::Unicode(b'\\'), Exact(Now)),
            ("today 12:00", Style::Standard, Mixed),
            ("tomorrow 3pm", Style::Standard, Mixed),
            ("yesterday 10:00 Europe/Paris", Style::Standard, Mixed),
            ("today 10:00 CEST", Style::Standard, Mixed),
            ("{now}", Style::Standard, Mixed),
            ("{\"now\"}", Style::Standard, Mixed),
            ("[today,tomorrow)", Style::Standard, Mixed),
            ("today!", Style::Standard, Mixed),
            ("now", Style::Standard, Exact(Now)),
            ("", Style::Standard, Plain),
            ("nowhere", Style::Standard, Plain),
            ("snow", Style::Standard, Plain),
            ("I did it today", Style::Standard, Plain),
            ("today is the day", Style::Standard, Plain),
            ("{\"when\":\"today\"}", Style::Standard, Plain),
            ("SELECT now()", Style::Raw, Plain),
            (" BEGIN RETURN now(); END ", Style::Raw, Plain),
            ("2026-01-01 10:00", Style::Standard, Plain),
            ("epoch", Style::Standard, Plain),
            ("n\\ow", Style::Standard, Plain),
            ("nöw", Style::Standard, Plain),
        ];
        for &(content, style, want) in cases {
            assert_eq!(meaning(content.as_bytes(), style), want, "{content:?} {style:?}");
        }
    }
}
