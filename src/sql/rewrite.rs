//! Deterministic replay text: the leader runs a client's statement as sent,
//! chorus logs a copy in which the transaction's clock is written as literals.
//!
//! `now()`, `CURRENT_TIMESTAMP` and friends are constant within a transaction,
//! so once the leader's transaction timestamp is known, replacing each of them
//! by a typed literal of it gives the follower exactly the leader's values.
//! Functions whose leader-side value chorus cannot learn after the fact
//! (`clock_timestamp()`, `random()`, `gen_random_uuid()`, ...) cannot be fixed
//! that way: [`plan`] reports them so the statement is refused before the
//! leader runs it.
//!
//! Replacements, `T` standing for the timestamp as
//! `CAST('YYYY-MM-DD HH:MM:SS.ffffff+00' AS timestamp with time zone)`:
//! `now()`, `transaction_timestamp()`, `CURRENT_TIMESTAMP` become `(T)`; the
//! others cast it as PostgreSQL defines them, which converts with the session
//! TimeZone (the follower replays under the leader's settings) and rounds
//! precision the same way: `CURRENT_TIMESTAMP(p)` is `(CAST(T AS timestamp(p)
//! with time zone))`, `LOCALTIMESTAMP[(p)]` casts to `timestamp[(p)] without
//! time zone`, `CURRENT_DATE` to `date`, `CURRENT_TIME[(p)]` to `time[(p)] with
//! time zone`, `LOCALTIME[(p)]` to `time[(p)] without time zone`.
//!
//! Where the text is a definition rather than an evaluation, nothing is
//! replaced: `CREATE TABLE ... DEFAULT now()`, views, rules, triggers,
//! policies, routine bodies, `ALTER TABLE ... SET DEFAULT`, `PREPARE` store the
//! expression, and a literal there would freeze it. Where a statement both
//! stores and evaluates (`ALTER TABLE ... ADD COLUMN ... DEFAULT now()` fills
//! existing rows, `CREATE MATERIALIZED VIEW` without `WITH NO DATA` fills the
//! view), no text can be right on the follower and the statement is refused.
//! `CREATE TABLE ... AS`, partition bounds and `ALTER ... TYPE ... USING`
//! evaluate once and are rewritten like DML. A `DO` block mentioning the clock
//! or a nondeterministic function is refused (procedural code is not rewritten).
//!
//! Special date/time strings ('now', 'today', 'tomorrow', 'yesterday') are
//! read by PostgreSQL when the constant is converted, i.e. in the leader's
//! transaction, and mean the current time *in the type the context gives*.
//! No single replacement text is right for every type ('...+00'::timestamp
//! ignores the offset, and as text 'now' is just a word), so:
//! - with an explicit `timestamptz` type (`'now'::timestamptz`,
//!   `CAST('now' AS timestamptz)`, `timestamptz 'now'`, with or without
//!   precision): the string becomes the ISO text of the timestamp, a constant
//!   of exactly the leader's value even inside a stored definition;
//! - with another explicit date/time type (`timestamp`, `date`, `time`,
//!   `timetz`) or a relative day: in evaluated text the string becomes `(T)`,
//!   or `(CAST(T AS date) ± k)` for today/tomorrow/yesterday, and the explicit
//!   cast converts it as PostgreSQL converts the string; in a definition this
//!   would store a conversion instead of a constant, so it is refused;
//! - with an explicit text type (`'now'::text`, `varchar 'today'`) it is left alone;
//! - otherwise (the type comes from a column, an operator or a function
//!   argument, which chorus cannot see) it is refused. So are strings mixing a
//!   special word with other date/time fields ('today 12:00', '{now}',
//!   '[today,tomorrow)'); prose that merely contains the word is not a date and
//!   is left alone (see `literal`).
//!
//! Untouched: quoted identifiers (`"now"` as a column; `"now"()` is still the
//! function), bare words (`now` as a column), functions of other schemas
//! (`myschema.now()`), comments, string contents (dollar-quoted bodies, `E''`,
//! `U&''`), keyword forms used as names (`t.current_date`, `AS current_date`).
//!
//! The scanner assumes `standard_conforming_strings = on` (PostgreSQL's
//! default), like the rest of `sql`.

mod literal;
mod names;
mod scan;
mod shape;
mod timestamp;

use std::borrow::Cow;
use std::fmt::Write;

use timestamp::UtcText;

/// A parsed plan for one query text: where its transaction-time expressions
/// are. Computed once per text (the caller caches it), rendered per transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimePlan {
    /// In text order, not overlapping.
    edits: Vec<Edit>,
}

/// Why a statement cannot be replayed deterministically; the caller refuses it
/// (SQLSTATE 0A000) before the leader runs it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Nondeterministic {
    /// A function whose value differs per statement, row, call or server
    /// (`clock_timestamp`, `random`, `gen_random_uuid`, `txid_current`, ...).
    #[error("chorus cannot replicate {name}(): its value on the leader is not known to chorus")]
    Function { name: String },
    /// A special date/time string ('now', 'today', ...) whose type chorus
    /// cannot see, or whose value cannot be written where it stands.
    #[error(
        "chorus cannot replicate the literal {literal}: read as a date or time it means the current time, \
         and chorus cannot write the leader's value for it here"
    )]
    Literal { literal: String },
    /// A transaction-time expression where no literal can replace it.
    #[error("chorus cannot replicate {expr} {place}")]
    Placement { expr: String, place: &'static str },
}

impl Nondeterministic {
    /// What makes the statement nondeterministic, as a clause ("it calls random()").
    pub fn what(&self) -> String {
        match self {
            Nondeterministic::Function { name } => format!("it calls {name}()"),
            Nondeterministic::Literal { literal } => format!("the literal {literal} reads as the current time"),
            Nondeterministic::Placement { expr, place } => format!("it uses {expr} {place}"),
        }
    }
}

/// Plan the rewrite of `sql` (one or more statements, as sent by a client).
/// One pass over the bytes; allocates only when there is something to replace.
pub fn plan(sql: &str) -> Result<TimePlan, Nondeterministic> {
    scan::scan(sql).map(|edits| TimePlan { edits })
}

/// [`plan`] of a function body (procedural code): what it evaluates, its
/// first word notwithstanding. Only whether it is the identity or refused
/// is meaningful (`sql::routine`).
pub fn plan_body(body: &str) -> Result<TimePlan, Nondeterministic> {
    scan::scan_body(body).map(|edits| TimePlan { edits })
}

/// [`plan`] and [`TimePlan::render`] in one go.
pub fn rewrite(sql: &str, txn_micros: i64) -> Result<Cow<'_, str>, Nondeterministic> {
    Ok(plan(sql)?.render(sql, txn_micros))
}

impl TimePlan {
    /// True when the text has nothing to replace (render returns it borrowed).
    pub fn is_identity(&self) -> bool {
        self.edits.is_empty()
    }

    /// The text with every transaction-time expression replaced by a literal
    /// of `txn_micros` (µs since 1970-01-01 UTC). `sql` must be the text the
    /// plan was made from.
    pub fn render<'a>(&self, sql: &'a str, txn_micros: i64) -> Cow<'a, str> {
        if self.edits.is_empty() {
            return Cow::Borrowed(sql);
        }
        let ts = UtcText::new(txn_micros);
        self.render_with(sql, ts.as_str())
    }

    /// [`TimePlan::render`] with the timestamp's text given (a placeholder the
    /// server replaces, when chorus does not know the timestamp yet).
    pub fn render_with<'a>(&self, sql: &'a str, ts: &str) -> Cow<'a, str> {
        if self.edits.is_empty() {
            return Cow::Borrowed(sql);
        }
        let room: usize = self.edits.iter().map(|e| e.with.max_len(ts)).sum();
        let capacity = sql.len() + room;
        let mut out = String::with_capacity(capacity);
        let mut copied = 0;
        for edit in &self.edits {
            out.push_str(&sql[copied..edit.start]);
            edit.with.write(&mut out, ts, sql);
            copied = edit.end;
        }
        out.push_str(&sql[copied..]);
        debug_assert_eq!(out.capacity(), capacity, "render grew its buffer");
        Cow::Owned(out)
    }
}

/// Replace `start..end` of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit {
    start: usize,
    end: usize,
    with: Replacement,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Replacement {
    /// `now()` and the SQL keyword forms: `(T)`, or `T` cast to the keyword's type.
    Clock(Option<Cast>),
    /// A 'now' string in a `timestamptz` context: the quoted timestamp text.
    Text,
    /// A special string before an explicit cast: the value the cast converts.
    Value(Value),
    /// A special string after its type (`date 'today'`): `(CAST(value AS type))`,
    /// the type being `start..end` of the text as written.
    Typed { value: Value, ty: (usize, usize) },
}

/// What the special strings stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    /// 'now': `(T)`.
    Now,
    /// 'today' + k days: `(CAST(T AS date) + k)`.
    Day(i8),
}

/// The type a keyword form casts the timestamp to, with its precision
/// (`start..end` of the digits in the text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cast {
    to: Target,
    precision: Option<(usize, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Timestamptz,
    Timestamp,
    Date,
    Timetz,
    Time,
}

const TZ: &str = "timestamp with time zone";

impl Replacement {
    /// An upper bound of what `write` appends.
    fn max_len(&self, ts: &str) -> usize {
        let extra = match self {
            Replacement::Clock(Some(Cast { precision: Some((a, b)), .. })) => b - a,
            Replacement::Typed { ty: (a, b), .. } => b - a + 16,
            _ => 0,
        };
        ts.len() + extra + 96
    }

    fn write(&self, out: &mut String, ts: &str, sql: &str) {
        match *self {
            Replacement::Clock(None) => {
                let _ = write!(out, "(CAST('{ts}' AS {TZ}))");
            }
            Replacement::Clock(Some(Cast { to, precision })) => {
                let p = precision.map(|(a, b)| &sql[a..b]);
                let (name, zone) = match to {
                    Target::Timestamptz => ("timestamp", " with time zone"),
                    Target::Timestamp => ("timestamp", " without time zone"),
                    Target::Date => ("pg_catalog.date", ""),
                    Target::Timetz => ("time", " with time zone"),
                    Target::Time => ("time", " without time zone"),
                };
                let _ = write!(out, "(CAST(CAST('{ts}' AS {TZ}) AS {name}");
                if let Some(p) = p {
                    let _ = write!(out, "({p})");
                }
                let _ = write!(out, "{zone}))");
            }
            Replacement::Text => {
                let _ = write!(out, "'{ts}'");
            }
            Replacement::Value(value) => value.write(out, ts),
            Replacement::Typed { value, ty: (a, b) } => {
                out.push_str("(CAST(");
                value.write(out, ts);
                let _ = write!(out, " AS {}))", &sql[a..b]);
            }
        }
    }
}

impl Value {
    fn write(self, out: &mut String, ts: &str) {
        let _ = match self {
            Value::Now => write!(out, "(CAST('{ts}' AS {TZ}))"),
            Value::Day(0) => write!(out, "(CAST(CAST('{ts}' AS {TZ}) AS pg_catalog.date))"),
            Value::Day(k) => {
                let (sign, n) = if k < 0 { ('-', -i16::from(k)) } else { ('+', i16::from(k)) };
                write!(out, "(CAST(CAST('{ts}' AS {TZ}) AS pg_catalog.date) {sign} {n})")
            }
        };
    }
}

#[cfg(test)]
mod tests;
