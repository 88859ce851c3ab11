//! Statements chorus answers itself (its own settings, see
//! [`crate::sql::chorus_setting`]), through the simple and the extended
//! protocol. They never reach a server; replies keep their place in order
//! (a session with requests in flight answers them once those are done).

use super::statements::{bind_head, execute_head, parse_head, target_head};
use super::{Session, SessionError};
use crate::protocol::{ClientError, Message, build, sqlstate};
use crate::sql::chorus_setting::{self, Command, CommandError, Setting};
use bytes::BufMut;
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncWrite};

/// Extended-protocol statements and portals that are chorus commands.
#[derive(Default)]
pub(super) struct LocalStatements {
    statements: HashMap<String, Command>,
    portals: HashMap<String, Command>,
}

/// What a chorus command answers: rows of text columns (SHOW) or none, and its tag.
struct Reply {
    columns: &'static [&'static str],
    rows: Vec<Vec<Option<String>>>,
    tag: &'static str,
}

impl Reply {
    fn done(tag: &'static str) -> Reply {
        Reply { columns: &[], rows: Vec::new(), tag }
    }

    fn write_rows(&self, out: &mut bytes::BytesMut) {
        for row in &self.rows {
            let cells: Vec<Option<&[u8]>> = row.iter().map(|c| c.as_deref().map(str::as_bytes)).collect();
            out.put_slice(&build::data_row(&cells).frame);
        }
    }
}

/// The columns `cmd` answers with (none: it answers no rows).
fn columns(cmd: &Command) -> &'static [&'static str] {
    match cmd {
        Command::Show(Setting::Position) => &["chorus.position"],
        Command::Show(Setting::Status) => &crate::status::COLUMNS,
        _ => &[],
    }
}

fn command_error(e: CommandError) -> ClientError {
    ClientError::new(e.sqlstate, e.message).with_hint(e.hint)
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// The transaction status a ReadyForQuery chorus writes itself carries.
    fn own_ready_status(&self) -> u8 {
        if self.local_abort {
            return b'E';
        }
        if let Some(n) = self.txn_node {
            return self.conns[n].as_ref().map_or(b'T', |c| c.status);
        }
        if self.deferred_begin { b'T' } else { b'I' }
    }

    fn run_command(&mut self, cmd: &Command) -> Result<Reply, ClientError> {
        if self.own_ready_status() == b'E' {
            return Err(ClientError::new(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        let read_only = |s: Setting| {
            ClientError::new("55P02", format!("parameter \"{}\" cannot be changed", s.name()))
                .with_hint("chorus.status is read-only: SHOW chorus.status.")
        };
        match cmd {
            Command::Show(Setting::Position) => Ok(Reply {
                columns: columns(cmd),
                rows: vec![vec![Some(self.position.token().to_string())]],
                tag: "SHOW",
            }),
            Command::Show(Setting::Status) => Ok(Reply {
                columns: columns(cmd),
                rows: crate::status::from_state(&self.ctx.topology, self.ctx.replication.state(), &self.database)
                    .iter()
                    .map(|r| r.cells().to_vec())
                    .collect(),
                tag: "SHOW",
            }),
            Command::Set(Setting::Status, _) | Command::Reset(Setting::Status) => Err(read_only(Setting::Status)),
            Command::Set(Setting::Position, v) => {
                let lsn: i64 = v.trim().parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ClientError::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!("invalid value for chorus.position: \"{v}\""),
                    )
                    .with_hint("Use a value read with SHOW chorus.position (a non-negative integer).")
                })?;
                self.position.ask(lsn);
                Ok(Reply::done("SET"))
            }
            Command::Reset(Setting::Position) => {
                // What the session wrote and read itself still counts.
                self.position.asked = 0;
                Ok(Reply::done("RESET"))
            }
        }
    }

    /// A simple Query that is a chorus command (or a mistake in one).
    pub(super) fn answer_local_query(&mut self, cmd: Result<Command, CommandError>) {
        match cmd.map_err(command_error).and_then(|c| self.run_command(&c)) {
            Ok(reply) => {
                if !reply.columns.is_empty() {
                    self.cout.put_slice(&build::row_description_text(reply.columns).frame);
                    reply.write_rows(&mut self.cout);
                }
                self.cout.put_slice(&build::command_complete(reply.tag).frame);
                let status = self.own_ready_status();
                self.cout.put_slice(&build::ready_for_query(status).frame);
            }
            Err(e) => {
                // The command ran nowhere: a transaction around it goes on.
                self.cout.put_slice(&e.to_message().frame);
                let status = self.own_ready_status();
                self.cout.put_slice(&build::ready_for_query(status).frame);
            }
        }
    }

    /// Does the pending batch address chorus? `Some(true)`: all of it (answer
    /// it with [`Self::answer_local_batch`]); `Some(false)`: part of it (refused);
    /// `None`: none of it.
    pub(super) fn batch_is_local(&mut self) -> Option<bool> {
        // Statements and portals (re)defined by this batch, in order, shadow
        // what the session had: true when chorus's.
        let mut stmts: Vec<(&str, bool)> = Vec::new();
        let mut portals: Vec<(&str, bool)> = Vec::new();
        let (mut local, mut other, mut closes) = (0usize, 0usize, 0usize);
        let l = &self.local;
        let stmt_is_local = |stmts: &[(&str, bool)], name: &str| {
            stmts.iter().rev().find(|(n, _)| *n == name).map_or_else(|| l.statements.contains_key(name), |(_, m)| *m)
        };
        let portal_is_local = |portals: &[(&str, bool)], name: &str| {
            portals.iter().rev().find(|(n, _)| *n == name).map_or_else(|| l.portals.contains_key(name), |(_, m)| *m)
        };
        for m in &self.batch {
            let mine = match m.tag {
                b'P' => parse_head(m).is_some_and(|(name, sql)| {
                    let mine = chorus_setting::parse(sql).is_some();
                    stmts.push((name, mine));
                    mine
                }),
                b'B' => bind_head(m).is_some_and(|(portal, stmt)| {
                    let mine = stmt_is_local(&stmts, stmt);
                    portals.push((portal, mine));
                    mine
                }),
                b'D' => target_head(m).is_some_and(|(kind, name)| match kind {
                    b'S' => stmt_is_local(&stmts, name),
                    _ => portal_is_local(&portals, name),
                }),
                b'E' => execute_head(m).is_some_and(|p| portal_is_local(&portals, p)),
                b'C' => {
                    // A Close is harmless on a server (closing what does not
                    // exist there succeeds): one of chorus's statements may go
                    // along with server statements (pgjdbc sends Closes with
                    // its next batch).
                    let of_local = target_head(m).is_some_and(|(kind, name)| match kind {
                        b'S' => stmt_is_local(&stmts, name),
                        _ => portal_is_local(&portals, name),
                    });
                    closes += usize::from(of_local);
                    continue;
                }
                _ => false,
            };
            if mine {
                local += 1;
            } else {
                other += 1;
            }
        }
        if local == 0 && (other > 0 || closes == 0) {
            if !self.local.statements.is_empty() || !self.local.portals.is_empty() {
                // A name reused for a server statement, or closed, is no longer chorus's.
                for m in &self.batch {
                    match m.tag {
                        b'P' => {
                            if let Some((n, _)) = parse_head(m) {
                                self.local.statements.remove(n);
                            }
                        }
                        b'B' => {
                            if let Some((p, _)) = bind_head(m) {
                                self.local.portals.remove(p);
                            }
                        }
                        b'C' => match target_head(m) {
                            Some((b'S', n)) => {
                                self.local.statements.remove(n);
                            }
                            Some((_, n)) => {
                                self.local.portals.remove(n);
                            }
                            None => {}
                        },
                        _ => {}
                    }
                }
            }
            return None;
        }
        Some(other == 0)
    }

    /// Answer the pending batch, all of it chorus commands; `ready`: it
    /// ended with Sync (else Flush: no ReadyForQuery).
    fn answer_local_batch(&mut self, ready: bool) {
        let batch = std::mem::take(&mut self.batch);
        let mut failed = false;
        for m in &batch {
            if failed {
                break;
            }
            let r = self.local_message(m);
            if let Err(e) = r {
                failed = true;
                self.cout.put_slice(&e.to_message().frame);
            }
        }
        if ready {
            // Unnamed portals end with the Sync (outside a transaction, all do).
            self.local.portals.retain(|name, _| !name.is_empty());
            let status = self.own_ready_status();
            self.cout.put_slice(&build::ready_for_query(status).frame);
        }
    }

    /// The pending batch, ended by `m` (Sync or Flush), addresses chorus
    /// ([`Self::batch_is_local`]): answer it once the connection is idle, or
    /// refuse it if it mixes chorus's statements with a server's.
    pub(super) async fn on_local_batch(&mut self, m: Message) -> Result<(), SessionError> {
        if self.busy() {
            self.stalled = Some(m);
            return Ok(());
        }
        match self.batch_is_local() {
            Some(true) => {
                self.answer_local_batch(m.tag == b'S');
                Ok(())
            }
            _ => self.refuse_mixed_local_batch(m).await,
        }
    }

    /// A batch that mixes chorus commands with statements for a server.
    async fn refuse_mixed_local_batch(&mut self, m: Message) -> Result<(), SessionError> {
        self.batch.clear();
        let e = ClientError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "chorus settings (chorus.position) must be sent in a request of their own, not pipelined with other statements",
        )
        .with_hint("Send SHOW/SET chorus.position on its own and wait for its reply.");
        self.reply_error(&e, m.tag == b'S');
        Ok(())
    }

    /// Answer one message of a batch [`Self::batch_is_local`] found to be
    /// chorus's. A name closed earlier in the same batch is gone, as on a
    /// server: the errors are the server's (26000, 34000).
    fn local_message(&mut self, m: &Message) -> Result<(), ClientError> {
        let malformed = || ClientError::new(sqlstate::PROTOCOL_VIOLATION, "malformed extended-protocol message");
        let no_statement = |name: &str| {
            ClientError::new(
                sqlstate::INVALID_SQL_STATEMENT_NAME,
                format!("prepared statement \"{name}\" does not exist"),
            )
        };
        let no_portal = |name: &str| ClientError::new("34000", format!("portal \"{name}\" does not exist"));
        match m.tag {
            b'P' => {
                let (name, sql) = parse_head(m).ok_or_else(malformed)?;
                let cmd = chorus_setting::parse(sql).ok_or_else(malformed)?.map_err(command_error)?;
                self.local.statements.insert(name.to_string(), cmd);
                self.cout.put_slice(&Message::new(b'1', &[]).frame);
            }
            b'B' => {
                let (portal, stmt) = bind_head(m).ok_or_else(malformed)?;
                let cmd = self.local.statements.get(stmt).cloned().ok_or_else(|| no_statement(stmt))?;
                self.local.portals.insert(portal.to_string(), cmd);
                self.cout.put_slice(&Message::new(b'2', &[]).frame);
            }
            b'D' => {
                let (kind, name) = target_head(m).ok_or_else(malformed)?;
                let cmd = if kind == b'S' {
                    self.local.statements.get(name).ok_or_else(|| no_statement(name))?
                } else {
                    self.local.portals.get(name).ok_or_else(|| no_portal(name))?
                };
                let cols = columns(cmd);
                if kind == b'S' {
                    self.cout.put_slice(&build::no_parameters().frame);
                }
                let d = if cols.is_empty() { Message::new(b'n', &[]) } else { build::row_description_text(cols) };
                self.cout.put_slice(&d.frame);
            }
            b'E' => {
                let portal = execute_head(m).ok_or_else(malformed)?;
                let cmd = self.local.portals.get(portal).cloned().ok_or_else(|| no_portal(portal))?;
                let reply = self.run_command(&cmd)?;
                reply.write_rows(&mut self.cout);
                self.cout.put_slice(&build::command_complete(reply.tag).frame);
            }
            b'C' => {
                let (kind, name) = target_head(m).ok_or_else(malformed)?;
                if kind == b'S' {
                    self.local.statements.remove(name);
                } else {
                    self.local.portals.remove(name);
                }
                self.cout.put_slice(&Message::new(b'3', &[]).frame);
            }
            _ => {}
        }
        Ok(())
    }
}
