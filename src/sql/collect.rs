//! One visit over each statement's AST that collects what the router needs: the
//! reason to use the leader, pins, settings, functions and tables.
//!
//! Names are folded the way PostgreSQL folds them (unquoted lower-cased, quoted
//! kept as written) and joined with `.`, so they can be looked up in the catalog
//! as they are.

use std::ops::ControlFlow;

use sqlparser::ast::{
    ContextModifier, CopySource, CopyTarget, DataType, DeclareType, Expr, FromTable, Function, FunctionArg,
    FunctionArgExpr, FunctionArguments, Ident, ObjectName, ObjectNamePart, ObjectType, Query, Select, Set, SetExpr,
    Statement, TableFactor, TableObject, TransactionAccessMode, TransactionMode, UtilityOption, Value, Visitor,
};

use super::functions::{FunctionKind, changes_data, function_kind};
use super::{Classification, LeaderReason, PinReason, SettingChange, Shape, settings};

/// Accumulates the classification of a whole query text, statement by statement.
#[derive(Default)]
pub(super) struct Collector<'a> {
    leader: Option<LeaderReason>,
    pin: Option<PinReason>,
    settings: Vec<SettingChange>,
    functions: Vec<String>,
    tables: Vec<String>,
    sequences: Vec<String>,
    targets: Vec<String>,
    /// Original text of the top-level statement being visited.
    sql: &'a str,
    /// Nesting of statements (EXPLAIN's, PREPARE's, writable CTEs' ...).
    depth: usize,
    /// Above 0 inside parts that are planned or stored but not run now (EXPLAIN
    /// without ANALYZE, PREPARE, CREATE VIEW / FUNCTION ...): their functions and
    /// statements have no effect yet, only their tables are recorded.
    not_run: usize,
    /// Names visited as relations that are not tables (functions in FROM, index
    /// names), compared by address; valid for the current top-level statement.
    not_tables: Vec<*const ObjectName>,
    /// CTE names of the current top-level statement: references to them are not tables.
    ctes: Vec<String>,
    tables_at_start: usize,
    /// The current top-level statement changes data (see [`Collector::statement_effect`]).
    stmt_writes: bool,
    /// The current top-level statement calls a function only the catalog can judge.
    stmt_unknown_function: bool,
}

/// What one top-level statement does to the data, for the replication log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    Read,
    /// Calls functions the catalog must judge: a write if any is volatile.
    MaybeWrite,
    Write,
}

impl<'a> Collector<'a> {
    /// Starts a top-level statement whose original text is `sql`.
    pub fn start_statement(&mut self, sql: &'a str) {
        self.sql = sql;
        self.stmt_writes = false;
        self.stmt_unknown_function = false;
    }

    /// What the statement visited since [`Collector::start_statement`] does to data.
    pub fn statement_effect(&self) -> Effect {
        if self.stmt_writes {
            Effect::Write
        } else if self.stmt_unknown_function {
            Effect::MaybeWrite
        } else {
            Effect::Read
        }
    }

    /// Records a reason to use the leader. The first one wins, except that
    /// `Transaction` (a BEGIN) and `SystemCatalog` give way to any more telling
    /// reason that follows.
    pub fn lead(&mut self, reason: LeaderReason) {
        if self.not_run > 0 {
            return;
        }
        if matches!(
            reason,
            LeaderReason::Write
                | LeaderReason::Ddl
                | LeaderReason::WritableCte
                | LeaderReason::Utility
                | LeaderReason::Unparsed
        ) {
            self.stmt_writes = true;
        }
        let weak = |r: &LeaderReason| matches!(r, LeaderReason::Transaction | LeaderReason::SystemCatalog);
        let replace = match &self.leader {
            None => true,
            Some(current) if weak(current) => !weak(&reason),
            Some(_) => false,
        };
        if replace {
            self.leader = Some(reason);
        }
    }

    /// Records why the session stays on the leader; the first reason wins.
    pub fn pin(&mut self, reason: PinReason) {
        if self.not_run == 0 && self.pin.is_none() {
            self.pin = Some(reason);
        }
    }

    pub fn setting(&mut self, change: SettingChange) {
        self.settings.push(change);
    }

    pub fn finish(self, shape: Shape, statement_count: usize) -> Classification {
        Classification {
            leader_reason: self.leader,
            pin_reason: self.pin,
            shape,
            settings: self.settings,
            functions: self.functions,
            tables: self.tables,
            sequences: self.sequences,
            targets: self.targets,
            statement_count,
            ops: Vec::new(),
            keyed: Vec::new(),
            capture: Vec::new(),
        }
    }

    fn function(&mut self, name: &ObjectName, call: Option<&Function>) {
        if self.not_run > 0 {
            return;
        }
        let parts = fold(name);
        let kind = function_kind(&parts);
        let draws = matches!(parts.as_slice(), [f] | [_, f] if f == "nextval" || f == "setval");
        match call.and_then(|f| sequence_argument(&parts, f)) {
            Some(seq) => {
                if draws {
                    self.target(seq.clone());
                }
                if !self.sequences.contains(&seq) {
                    self.sequences.push(seq);
                }
            }
            // A sequence chorus cannot name: a target that is nobody's
            // temporary object.
            None if draws => self.target(UNKNOWN_SEQUENCE.into()),
            None => {}
        }
        if changes_data(&parts) {
            self.stmt_writes = true;
        } else if kind == FunctionKind::Unknown {
            self.stmt_unknown_function = true;
        }
        if kind == FunctionKind::Harmless {
            return;
        }
        let display = parts.join(".");
        match kind {
            FunctionKind::Volatile => self.lead(LeaderReason::VolatileFunction(display.clone())),
            FunctionKind::SessionAdvisoryLock => {
                self.lead(LeaderReason::VolatileFunction(display.clone()));
                self.pin(PinReason::AdvisoryLock);
            }
            FunctionKind::SetConfig => {
                self.lead(LeaderReason::VolatileFunction(display.clone()));
                if !call.is_some_and(set_config_is_local) {
                    self.pin(PinReason::SetConfig);
                }
            }
            FunctionKind::Harmless | FunctionKind::Unknown => {}
        }
        if !self.functions.contains(&display) {
            self.functions.push(display);
        }
    }

    fn target(&mut self, name: String) {
        if !self.targets.contains(&name) {
            self.targets.push(name);
        }
    }

    fn table(&mut self, name: String) {
        if is_system_relation(&name) {
            self.lead(LeaderReason::SystemCatalog);
        }
        if !self.tables.contains(&name) {
            self.tables.push(name);
        }
    }

    /// The rules for one statement node (top-level or nested).
    fn statement(&mut self, s: &Statement) {
        use LeaderReason::*;
        if self.depth == 1 && makes_transaction_writable(s) {
            // Allowed before a transaction's first query even after BEGIN READ
            // ONLY: on a follower it would lift the server-side read-only guard.
            self.lead(Utility);
        }
        if self.depth == 1
            && let Some(change) = settings::from_statement(s, self.sql)
        {
            self.settings.extend(change);
            return;
        }
        if self.not_run == 0 {
            for name in written(s) {
                self.target(fold(name).join("."));
            }
        }
        match s {
            Statement::Query(_) => {} // pre_visit_query / pre_visit_select
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) | Statement::Merge(_) => {
                self.lead(Write)
            }
            Statement::Copy { source, to, target, .. } => {
                if let CopySource::Table { table_name, .. } = source {
                    self.table(fold(table_name).join("."));
                }
                if !*to {
                    self.lead(Write);
                } else if !matches!(target, CopyTarget::Stdout) {
                    self.lead(Utility); // a file or program on the server
                }
            }
            Statement::CreateTable(ct) => {
                if ct.temporary || in_temp_schema(&ct.name) {
                    self.pin(PinReason::TempTable);
                }
                self.lead(if ct.query.is_some() { Write } else { Ddl });
            }
            Statement::CreateView(v) if v.temporary || in_temp_schema(&v.name) => {
                self.pin(PinReason::TempTable);
                self.lead(Ddl);
            }
            Statement::CreateSequence { temporary, name, .. } if *temporary || in_temp_schema(name) => {
                self.pin(PinReason::TempTable);
                self.lead(Ddl);
            }
            Statement::CreateIndex(ci) => {
                if let Some(name) = &ci.name {
                    self.not_tables.push(name);
                }
                self.lead(Ddl);
            }
            Statement::Drop { object_type, names, .. } => {
                if matches!(object_type, ObjectType::Table | ObjectType::View | ObjectType::MaterializedView) {
                    for n in names {
                        self.table(fold(n).join("."));
                    }
                }
                self.lead(Ddl);
            }
            Statement::StartTransaction { modes, .. } => {
                if access_mode(modes) != Some(true) {
                    self.lead(Transaction);
                }
            }
            Statement::Prepare { .. } => {
                self.pin(PinReason::Prepare);
                self.lead(Utility);
            }
            Statement::Declare { stmts } => {
                if stmts.iter().any(|d| d.declare_type == Some(DeclareType::Cursor) && d.hold == Some(true)) {
                    self.pin(PinReason::HoldCursor);
                }
            }
            Statement::LISTEN { .. } => {
                self.pin(PinReason::Listen);
                self.lead(Utility);
            }
            // Reads, transaction control inside a transaction, cursors, session state.
            Statement::Explain { .. }
            | Statement::ExplainTable { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowFunctions { .. }
            | Statement::ShowCreate { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowViews { .. }
            | Statement::ShowObjects(_)
            | Statement::ShowCollation { .. }
            | Statement::ShowCharset(_)
            | Statement::ShowCatalogs { .. }
            | Statement::ShowProcessList { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Deallocate { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Discard { .. } => {}
            Statement::Truncate(_)
            | Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::Deny(_)
            | Statement::Comment { .. }
            | Statement::RenameTable(_)
            | Statement::CreateView(_)
            | Statement::CreateSequence { .. }
            | Statement::CreateRole(_)
            | Statement::CreateServer(_)
            | Statement::CreatePolicy(_)
            | Statement::CreateOperator(_)
            | Statement::CreateOperatorFamily(_)
            | Statement::CreateOperatorClass(_)
            | Statement::CreateTextSearch(_)
            | Statement::CreateExtension(_)
            | Statement::CreateCollation(_)
            | Statement::CreateSchema { .. }
            | Statement::CreateDatabase { .. }
            | Statement::CreateFunction(_)
            | Statement::CreateTrigger(_)
            | Statement::CreateProcedure { .. }
            | Statement::CreateDomain(_)
            | Statement::CreateType { .. }
            | Statement::CreateUser(_)
            | Statement::AlterTable(_)
            | Statement::AlterSchema(_)
            | Statement::AlterIndex { .. }
            | Statement::AlterView { .. }
            | Statement::AlterFunction(_)
            | Statement::AlterType(_)
            | Statement::AlterCollation(_)
            | Statement::AlterOperator(_)
            | Statement::AlterOperatorFamily(_)
            | Statement::AlterOperatorClass(_)
            | Statement::AlterTextSearch(_)
            | Statement::AlterRole { .. }
            | Statement::AlterPolicy(_)
            | Statement::AlterUser(_)
            | Statement::DropFunction(_)
            | Statement::DropDomain(_)
            | Statement::DropProcedure { .. }
            | Statement::DropPolicy(_)
            | Statement::DropTrigger(_)
            | Statement::DropExtension(_)
            | Statement::DropOperator(_)
            | Statement::DropOperatorFamily(_)
            | Statement::DropOperatorClass(_) => self.lead(Ddl),
            // VACUUM, ANALYZE, CALL, NOTIFY, UNLISTEN, LOCK, LOAD, EXECUTE, and
            // whatever else: only the leader may run what is not known to be harmless.
            _ => self.lead(Utility),
        }
    }

    fn set_expr_tables(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Table(t) => {
                if let Some(name) = &t.table_name {
                    let name = match &t.schema_name {
                        Some(schema) => format!("{}.{}", schema.to_lowercase(), name.to_lowercase()),
                        None => name.to_lowercase(),
                    };
                    self.table(name);
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr_tables(left);
                self.set_expr_tables(right);
            }
            _ => {}
        }
    }
}

impl Visitor for Collector<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        if self.depth == 0 {
            self.tables_at_start = self.tables.len();
            self.ctes.clear();
            self.not_tables.clear();
        }
        self.depth += 1;
        self.statement(s);
        if !runs_body(s) {
            self.not_run += 1;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        if !runs_body(s) {
            self.not_run -= 1;
        }
        // A holdable cursor outlives its transaction on the server that ran it.
        if let Statement::Declare { .. } = s
            && self.pin == Some(PinReason::HoldCursor)
            && self.leader.is_none()
        {
            self.lead(LeaderReason::Utility);
        }
        self.depth -= 1;
        if self.depth == 0 && !self.ctes.is_empty() {
            let added = self.tables.split_off(self.tables_at_start);
            let ctes = std::mem::take(&mut self.ctes);
            self.tables.extend(added.into_iter().filter(|t| !ctes.contains(t)));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if !q.locks.is_empty() {
            self.lead(LeaderReason::LockingRead);
        }
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                if matches!(
                    *cte.query.body,
                    SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
                ) {
                    self.lead(LeaderReason::WritableCte);
                }
                self.ctes.push(fold_ident(&cte.alias.name));
            }
        }
        self.set_expr_tables(&q.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if let Some(into) = &s.into {
            self.lead(LeaderReason::Write);
            let in_pg_temp = |t: &Expr| match t {
                Expr::CompoundIdentifier(ids) => ids.len() == 2 && fold_ident(&ids[0]).starts_with("pg_temp"),
                _ => false,
            };
            if into.temporary || into.targets.iter().any(in_pg_temp) {
                self.pin(PinReason::TempTable);
            }
            for target in &into.targets {
                match target {
                    Expr::Identifier(id) => {
                        self.table(fold_ident(id));
                        self.target(fold_ident(id));
                    }
                    Expr::CompoundIdentifier(ids) => {
                        let name = ids.iter().map(fold_ident).collect::<Vec<_>>().join(".");
                        self.table(name.clone());
                        self.target(name);
                    }
                    _ => {}
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            Expr::Function(f) => self.function(&f.name, Some(f)),
            Expr::Cast { data_type, .. } if is_oid_type(data_type) => self.lead(LeaderReason::SystemCatalog),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        match tf {
            // `FROM f(...)`: a function call, not a table.
            TableFactor::Table { name, args: Some(_), .. } => {
                self.not_tables.push(name);
                self.function(name, None);
            }
            TableFactor::Function { name, .. } => self.function(name, None),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
        if !self.not_tables.contains(&(name as *const ObjectName)) {
            self.table(fold(name).join("."));
        }
        ControlFlow::Continue(())
    }
}

/// False for statements whose inner statement or query is planned or stored, not run.
fn runs_body(s: &Statement) -> bool {
    match s {
        Statement::Explain { analyze, options, .. } => *analyze || explain_analyze_option(options.as_deref()),
        Statement::CreateView(v) => v.materialized,
        Statement::Prepare { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateTrigger(_)
        | Statement::CreatePolicy(_)
        | Statement::CreateDomain(_) => false,
        _ => true,
    }
}

/// `EXPLAIN (ANALYZE [true|on|1 ...])`. An argument not understood counts as true:
/// better the leader than a write run on a follower.
fn explain_analyze_option(options: Option<&[UtilityOption]>) -> bool {
    let Some(options) = options else { return false };
    let mut analyze = false;
    for o in options.iter().filter(|o| o.name.value.eq_ignore_ascii_case("analyze")) {
        analyze = match &o.arg {
            None => true,
            Some(Expr::Value(v)) => match &v.value {
                Value::Boolean(b) => *b,
                Value::Number(n, _) => n != "0",
                Value::SingleQuotedString(s) => !is_false_word(s),
                _ => true,
            },
            Some(Expr::Identifier(id)) => !is_false_word(&id.value),
            Some(_) => true,
        };
    }
    analyze
}

/// PostgreSQL's boolean spellings of false (any unambiguous prefix of them).
fn is_false_word(s: &str) -> bool {
    let s = s.trim().to_ascii_lowercase();
    matches!(s.as_str(), "0" | "off" | "of") || (!s.is_empty() && ("false".starts_with(&s) || "no".starts_with(&s)))
}

/// `set_config(name, value, true)` only changes the transaction: no pin.
/// Anything but a literal true (false, a parameter, an expression) pins.
/// Stands in [`Classification::targets`] for a sequence a `nextval` /
/// `setval` call names by an expression.
pub(super) const UNKNOWN_SEQUENCE: &str = "?";

/// The relations a statement itself writes or alters (not the ones it
/// reads, nor what its nested statements write: they are visited too).
fn written(s: &Statement) -> Vec<&ObjectName> {
    fn of_factor(tf: &TableFactor) -> Option<&ObjectName> {
        match tf {
            TableFactor::Table { name, args: None, .. } => Some(name),
            _ => None,
        }
    }
    match s {
        Statement::Insert(i) => match &i.table {
            TableObject::TableName(name) => vec![name],
            _ => vec![],
        },
        Statement::Update(u) => of_factor(&u.table.relation).into_iter().collect(),
        Statement::Delete(d) => {
            let from = match &d.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            d.tables.iter().chain(from.iter().filter_map(|t| of_factor(&t.relation))).collect()
        }
        Statement::Merge(m) => of_factor(&m.table).into_iter().collect(),
        Statement::Copy { source: CopySource::Table { table_name, .. }, to: false, .. } => vec![table_name],
        Statement::CreateTable(ct) => vec![&ct.name],
        Statement::CreateView(v) => vec![&v.name],
        Statement::CreateSequence { name, .. } => vec![name],
        Statement::CreateIndex(ci) => vec![&ci.table_name],
        Statement::AlterTable(a) => vec![&a.name],
        Statement::Truncate(t) => t.table_names.iter().map(|t| &t.name).collect(),
        Statement::Drop { names, .. } => names.iter().collect(),
        _ => vec![],
    }
}

/// The sequence a `nextval('s')` / `currval` / `setval` call names by a
/// literal (`'s'`, `'s'::regclass`), folded as regclass input folds it.
fn sequence_argument(parts: &[String], f: &Function) -> Option<String> {
    let func = parts.last()?;
    let schema_ok = parts.len() == 1 || (parts.len() == 2 && parts[0] == "pg_catalog");
    if !schema_ok || !matches!(func.as_str(), "nextval" | "currval" | "setval") {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else { return None };
    let mut arg = match list.args.first()? {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => e,
        _ => return None,
    };
    while let Expr::Cast { expr, .. } = arg {
        arg = expr;
    }
    match arg {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => fold_regclass_text(s),
            _ => None,
        },
        _ => None,
    }
}

/// `'Public."MySeq"'` as PostgreSQL's regclass input reads it: unquoted parts
/// lower-cased, quoted ones kept, joined with `.`.
fn fold_regclass_text(text: &str) -> Option<String> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
            part = part.trim().to_string();
        }
        if part.is_empty() {
            return None;
        }
        parts.push(part);
        match chars.next() {
            None => return Some(parts.join(".")),
            Some('.') => continue,
            Some(_) => return None,
        }
    }
}

fn set_config_is_local(f: &Function) -> bool {
    let FunctionArguments::List(list) = &f.args else { return false };
    match list.args.get(2) {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
            Value::Boolean(b) => *b,
            Value::SingleQuotedString(s) => {
                let s = s.trim().to_ascii_lowercase();
                !s.is_empty() && ("true".starts_with(&s) || "yes".starts_with(&s) || s == "on" || s == "1")
            }
            _ => false,
        },
        _ => false,
    }
}

/// `SET TRANSACTION READ WRITE` or `SET LOCAL transaction_read_only`: turns the
/// current transaction read-write (the session-level forms are settings).
fn makes_transaction_writable(s: &Statement) -> bool {
    match s {
        Statement::Set(Set::SetTransaction { modes, session: false, .. }) => access_mode(modes) == Some(false),
        Statement::Set(Set::SingleAssignment { scope: Some(ContextModifier::Local), variable, .. }) => {
            variable.to_string().eq_ignore_ascii_case("transaction_read_only")
        }
        _ => false,
    }
}

/// A relation of the system catalogs, as [`fold`] names it: `pg_catalog.x`, or
/// an unqualified `pg_x` (pg_catalog comes first in every search_path).
fn is_system_relation(name: &str) -> bool {
    name.starts_with("pg_catalog.") || (!name.contains('.') && name.starts_with("pg_"))
}

/// `oid` and the `reg*` types: casts that turn names into a server's object ids.
fn is_oid_type(t: &DataType) -> bool {
    const OID_TYPES: &[&str] = &[
        "oid",
        "regclass",
        "regtype",
        "regproc",
        "regprocedure",
        "regoper",
        "regoperator",
        "regnamespace",
        "regrole",
        "regconfig",
        "regdictionary",
        "regcollation",
    ];
    match t {
        DataType::Regclass => true,
        DataType::Custom(name, _) => {
            let parts = fold(name);
            let builtin = parts.len() == 1 || (parts.len() == 2 && parts[0] == "pg_catalog");
            builtin && OID_TYPES.contains(&parts[parts.len() - 1].as_str())
        }
        _ => false,
    }
}

/// READ ONLY / READ WRITE among transaction modes; the last one counts.
pub(super) fn access_mode(modes: &[TransactionMode]) -> Option<bool> {
    modes.iter().rev().find_map(|m| match m {
        TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => Some(true),
        TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => Some(false),
        TransactionMode::IsolationLevel(_) => None,
    })
}

/// `pg_temp.x` (or `pg_temp_3.x`): in the session's temporary schema, so a
/// temporary object whatever the statement says.
pub(super) fn in_temp_schema(name: &ObjectName) -> bool {
    let parts = fold(name);
    parts.len() == 2 && parts[0].starts_with("pg_temp")
}

pub(super) fn fold_ident(id: &Ident) -> String {
    if id.quote_style.is_some() { id.value.clone() } else { id.value.to_lowercase() }
}

pub(super) fn fold(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(id) => fold_ident(id),
            other => other.to_string().to_lowercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use super::super::{LeaderReason, PinReason};
    use LeaderReason::*;
    use PinReason::*;

    #[test]
    fn pins_and_their_leader_reasons() {
        let vf = |n: &str| Some(VolatileFunction(n.to_string()));
        let cases: Vec<(&str, Option<PinReason>, Option<LeaderReason>)> = vec![
            ("CREATE TEMP TABLE x (a int)", Some(TempTable), Some(Ddl)),
            ("CREATE TEMPORARY TABLE x (a int) ON COMMIT DROP", Some(TempTable), Some(Ddl)),
            ("CREATE GLOBAL TEMPORARY TABLE x (a int)", Some(TempTable), Some(Ddl)),
            ("CREATE TEMP TABLE x AS SELECT * FROM t", Some(TempTable), Some(Write)),
            ("SELECT * INTO TEMP newt FROM t", Some(TempTable), Some(Write)),
            ("SELECT * INTO TEMPORARY TABLE newt FROM t", Some(TempTable), Some(Write)),
            ("CREATE TEMP VIEW v AS SELECT 1", Some(TempTable), Some(Ddl)),
            ("CREATE TEMP SEQUENCE s", Some(TempTable), Some(Ddl)),
            ("CREATE TABLE pg_temp.x (a int)", Some(TempTable), Some(Ddl)),
            ("CREATE VIEW pg_temp.v AS SELECT 1", Some(TempTable), Some(Ddl)),
            ("SELECT * INTO pg_temp.newt FROM t", Some(TempTable), Some(Write)),
            ("CREATE TABLE x (a int)", None, Some(Ddl)),
            ("SELECT * INTO newt FROM t", None, Some(Write)),
            ("LISTEN ch", Some(Listen), Some(Utility)),
            ("listen \"Chan\"", Some(Listen), Some(Utility)),
            ("UNLISTEN ch", None, Some(Utility)),
            ("SELECT pg_advisory_lock(1)", Some(AdvisoryLock), vf("pg_advisory_lock")),
            ("SELECT pg_advisory_lock_shared(1, 2)", Some(AdvisoryLock), vf("pg_advisory_lock_shared")),
            ("SELECT pg_try_advisory_lock(1)", Some(AdvisoryLock), vf("pg_try_advisory_lock")),
            (
                "SELECT pg_catalog.pg_try_advisory_lock_shared(1)",
                Some(AdvisoryLock),
                vf("pg_catalog.pg_try_advisory_lock_shared"),
            ),
            (
                "SELECT * FROM t WHERE pg_try_advisory_lock(t.id) LIMIT 1",
                Some(AdvisoryLock),
                vf("pg_try_advisory_lock"),
            ),
            ("SELECT pg_advisory_xact_lock(1)", None, vf("pg_advisory_xact_lock")),
            ("SELECT pg_try_advisory_xact_lock_shared(1)", None, vf("pg_try_advisory_xact_lock_shared")),
            ("SELECT pg_advisory_unlock(1)", None, vf("pg_advisory_unlock")),
            ("EXPLAIN SELECT pg_advisory_lock(1)", None, None),
            ("CREATE VIEW v AS SELECT pg_advisory_lock(1)", None, Some(Ddl)),
            ("PREPARE p (int) AS SELECT $1", Some(Prepare), Some(Utility)),
            ("PREPARE p AS INSERT INTO t VALUES (1)", Some(Prepare), Some(Utility)),
            ("PREPARE p AS SELECT pg_advisory_lock(1)", Some(Prepare), Some(Utility)),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", Some(HoldCursor), Some(Utility)),
            (
                "DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM t FOR UPDATE",
                Some(HoldCursor),
                Some(LockingRead),
            ),
            ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", None, None),
            ("DECLARE c CURSOR FOR SELECT 1", None, None),
            ("SELECT set_config('search_path', 'a', false)", Some(SetConfig), vf("set_config")),
            ("SELECT pg_catalog.set_config('search_path', '', false)", Some(SetConfig), vf("pg_catalog.set_config")),
            ("SELECT set_config('a.b', $1, $2)", Some(SetConfig), vf("set_config")),
            ("SELECT set_config('a.b', 'c', 'off')", Some(SetConfig), vf("set_config")),
            ("SELECT set_config('a.b', 'c', true)", None, vf("set_config")),
            ("SELECT set_config('a.b', 'c', 'on')", None, vf("set_config")),
            ("SELECT set_config('a.b', 'c')", Some(SetConfig), vf("set_config")),
            // The first pin wins; the leader reason is the first telling one.
            ("LISTEN a; CREATE TEMP TABLE x (a int)", Some(Listen), Some(Utility)),
            ("BEGIN; SELECT pg_advisory_lock(1); COMMIT", Some(AdvisoryLock), vf("pg_advisory_lock")),
        ];
        for (sql, pin, leader) in cases {
            let c = classify(sql);
            assert_eq!(c.pin_reason, pin, "{sql}");
            assert_eq!(c.leader_reason, leader, "{sql}");
        }
    }

    #[test]
    fn tables_referenced() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT 1", &[]),
            ("SELECT * FROM t", &["t"]),
            ("SELECT * FROM T AS x JOIN s.U u ON true, \"Quoted\" q", &["t", "s.u", "Quoted"]),
            ("SELECT * FROM \"MySchema\".\"MyTable\"", &["MySchema.MyTable"]),
            ("SELECT * FROM t, t AS t2, public.t", &["t", "public.t"]),
            ("SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE EXISTS (SELECT 1 FROM v))", &["t", "u", "v"]),
            ("SELECT * FROM (SELECT * FROM inner_t) AS d", &["inner_t"]),
            ("WITH x AS (SELECT * FROM t) SELECT * FROM x JOIN u ON true", &["t", "u"]),
            ("WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r", &[]),
            ("WITH d AS (DELETE FROM t RETURNING *) INSERT INTO archive SELECT * FROM d", &["t", "archive"]),
            ("SELECT * FROM generate_series(1, 3) AS g, f(1)", &[]),
            ("TABLE t", &["t"]),
            ("SELECT 1 UNION TABLE s.t", &["s.t"]),
            ("INSERT INTO s.t (a) SELECT b FROM u ON CONFLICT (a) DO UPDATE SET a = excluded.a", &["s.t", "u"]),
            ("UPDATE t SET a = u.a FROM u WHERE t.id = u.id", &["t", "u"]),
            ("DELETE FROM t USING u WHERE t.id = u.id", &["t", "u"]),
            ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", &["t", "s"]),
            ("COPY t FROM STDIN", &["t"]),
            ("COPY s.t TO STDOUT", &["s.t"]),
            ("COPY (SELECT * FROM u) TO STDOUT", &["u"]),
            ("SELECT * INTO newt FROM t", &["newt", "t"]),
            ("CREATE TABLE x AS SELECT * FROM t", &["x", "t"]),
            ("CREATE INDEX i ON t (a)", &["t"]),
            ("DROP TABLE a, b.c", &["a", "b.c"]),
            ("TRUNCATE t", &["t"]),
            ("LOCK TABLE t IN SHARE MODE", &["t"]),
            ("ALTER TABLE t ADD COLUMN b int", &["t"]),
            ("EXPLAIN SELECT * FROM t", &["t"]),
            ("SELECT * FROM t; SELECT * FROM u; SELECT * FROM t", &["t", "u"]),
            ("WITH t AS (SELECT 1) SELECT * FROM t; SELECT * FROM t", &["t"]),
        ];
        for (sql, want) in cases {
            assert_eq!(classify(sql).tables, *want, "{sql}");
        }
    }
}
