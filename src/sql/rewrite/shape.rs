//! Just enough statement shape, word by word, to tell text PostgreSQL
//! evaluates now (DML, `CREATE TABLE ... AS`, partition bounds) from text it
//! stores (defaults, views, routine bodies), and the statements that do both.

pub(super) const ADD_COLUMN: &str =
    "in ALTER TABLE ... ADD COLUMN: existing rows would get the leader's value while the default stays an expression";
pub(super) const MATERIALIZED_VIEW: &str =
    "in CREATE MATERIALIZED VIEW: the view keeps the expression but is filled with the leader's value";

/// First words of statements that evaluate their expressions.
const EVALUATING: &[&str] = &[
    "select", "insert", "update", "delete", "merge", "values", "with", "table", "call", "execute", "explain", "copy",
    "declare",
];

/// What the text at the current position does with its expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Eval,
    Define,
    /// Stored and evaluated: refused, with this explanation.
    Stored(&'static str),
}

/// The statement being scanned.
#[derive(Debug, Default)]
pub(super) struct Shape {
    stmt: Stmt,
    /// `BEGIN ATOMIC` / `CASE` blocks open in a routine body.
    routine_depth: u32,
    /// The last three words: with = 1, no = 2, data = 3, other = 0; latest first.
    tail: [u8; 3],
}

/// What the statement being scanned does with its expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Stmt {
    #[default]
    Start,
    /// DML and anything else that evaluates now.
    Eval,
    /// A definition: expressions are stored, not evaluated.
    Define,
    CreateHead,
    CreateTable,
    MaterializedView {
        query: bool,
    },
    /// `CREATE FUNCTION | PROCEDURE`: a definition whose `BEGIN ATOMIC` body holds semicolons.
    Routine,
    AlterHead,
    AlterTable(Sub),
    Do {
        body_seen: bool,
    },
}

/// The current subcommand of an `ALTER TABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    Other,
    /// Just after ADD.
    Add,
    /// ADD [COLUMN]: the default fills existing rows.
    AddColumn,
    /// [SET DATA] TYPE, maybe followed by USING.
    Type,
    /// USING or FOR VALUES: evaluated once.
    Eval,
}

impl Shape {
    /// Sees the statement's next word; `top`: outside parentheses;
    /// `next_is_values`: whether the word after it is VALUES.
    pub(super) fn word(&mut self, w: &[u8], quoted: bool, top: bool, next_is_values: impl Fn() -> bool) {
        let is = |s: &str| !quoted && w.eq_ignore_ascii_case(s.as_bytes());
        let code = if is("with") {
            1
        } else if is("no") {
            2
        } else if is("data") {
            3
        } else {
            0
        };
        self.tail = [code, self.tail[0], self.tail[1]];
        self.stmt = match self.stmt {
            Stmt::Start if EVALUATING.iter().any(|s| is(s)) => Stmt::Eval,
            Stmt::Start if is("do") => Stmt::Do { body_seen: false },
            Stmt::Start if is("create") => Stmt::CreateHead,
            Stmt::Start if is("alter") => Stmt::AlterHead,
            Stmt::Start => Stmt::Define,
            Stmt::CreateHead if is("table") => Stmt::CreateTable,
            Stmt::CreateHead if is("materialized") => Stmt::MaterializedView { query: false },
            Stmt::CreateHead if is("function") || is("procedure") => Stmt::Routine,
            Stmt::CreateHead
                if ["or", "replace", "global", "local", "temp", "temporary", "unlogged"].iter().any(|s| is(s)) =>
            {
                Stmt::CreateHead
            }
            Stmt::CreateHead => Stmt::Define,
            Stmt::AlterHead if is("table") => Stmt::AlterTable(Sub::Other),
            Stmt::AlterHead => Stmt::Define,
            Stmt::CreateTable if top && (is("as") || (is("for") && next_is_values())) => Stmt::Eval,
            Stmt::MaterializedView { query: false } if top && is("as") => Stmt::MaterializedView { query: true },
            Stmt::Routine => {
                if is("begin") || is("case") {
                    self.routine_depth += 1;
                } else if is("end") {
                    self.routine_depth = self.routine_depth.saturating_sub(1);
                }
                Stmt::Routine
            }
            Stmt::AlterTable(sub) if top => Stmt::AlterTable(match sub {
                Sub::Add
                    if ["constraint", "check", "primary", "unique", "foreign", "exclude"].iter().any(|s| is(s)) =>
                {
                    Sub::Other
                }
                Sub::Add => Sub::AddColumn,
                _ if is("add") => Sub::Add,
                Sub::Other if is("type") => Sub::Type,
                Sub::Type if is("using") => Sub::Eval,
                _ if is("for") && next_is_values() => Sub::Eval,
                sub => sub,
            }),
            stmt => stmt,
        };
    }

    /// A parenthesis opens: `(SELECT ...) UNION ...` is a query.
    pub(super) fn open(&mut self) {
        if self.stmt == Stmt::Start {
            self.stmt = Stmt::Eval;
        }
    }

    /// A comma outside parentheses: the next `ALTER TABLE` subcommand.
    pub(super) fn comma(&mut self) {
        if let Stmt::AlterTable(_) = self.stmt {
            self.stmt = Stmt::AlterTable(Sub::Other);
        }
    }

    pub(super) fn mode(&self) -> Mode {
        match self.stmt {
            Stmt::Eval | Stmt::AlterTable(Sub::Eval) => Mode::Eval,
            Stmt::AlterTable(Sub::AddColumn) => Mode::Stored(ADD_COLUMN),
            Stmt::MaterializedView { query: true } => Mode::Stored(MATERIALIZED_VIEW),
            _ => Mode::Define,
        }
    }

    /// A semicolon here ends the statement (not inside a `BEGIN ATOMIC` body).
    pub(super) fn ends_at_semicolon(&self) -> bool {
        self.routine_depth == 0
    }

    /// Refusals wait for the end of the statement: `WITH NO DATA` lifts them.
    pub(super) fn defers_refusals(&self) -> bool {
        matches!(self.stmt, Stmt::MaterializedView { .. })
    }

    pub(super) fn ends_with_no_data(&self) -> bool {
        self.tail == [3, 2, 1]
    }

    /// True for the first string constant of a `DO` statement: its body.
    pub(super) fn take_do_body(&mut self) -> bool {
        let body = self.stmt == Stmt::Do { body_seen: false };
        if body {
            self.stmt = Stmt::Do { body_seen: true };
        }
        body
    }
}
