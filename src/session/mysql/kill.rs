//! KILL through chorus. The thread ids a client knows are chorus's (the
//! greeting's connection id) or its server connection's (CONNECTION_ID()):
//! neither may reach a server as it is, where the number names some other
//! session's connection. chorus maps the id to the session it belongs to and
//! kills that session's statement or connection on the leader itself.

use super::{MySession, MySessionError};
use crate::backend::mysql::LoginOptions;
use crate::protocol::mysql::consts::{DEFAULT_COLLATION, cap};
use crate::protocol::mysql::error::ok_payload;
use crate::protocol::mysql::{MyError, code};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::{AsyncRead, AsyncWrite};

/// A live session, as KILL finds it.
#[derive(Debug)]
pub struct SessionEntry {
    pub user: parking_lot::Mutex<String>,
    /// The thread id of the session's leader connection.
    pub leader_thread: AtomicU32,
    /// KILL CONNECTION: the session ends before its next command.
    pub killed: tokio::sync::Notify,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> MySession<R, W> {
    /// Run a KILL (statement or COM_PROCESS_KILL) for the client; false when
    /// the session killed its own connection.
    pub(super) async fn kill(&mut self, target: KillTarget, id: u64, seq: u8) -> Result<bool, MySessionError> {
        let found = self.ctx.sessions.iter().find_map(|e| {
            let s = e.value();
            (*e.key() == id || u64::from(s.leader_thread.load(Ordering::Relaxed)) == id)
                .then(|| (*e.key(), s.user.lock().clone(), s.leader_thread.load(Ordering::Relaxed), s.clone()))
        });
        let Some((session, owner, thread, entry)) = found else {
            self.error(seq, &no_such_thread(id)).await?;
            return Ok(true);
        };
        if owner != self.login.user {
            self.error(seq, &not_owner(id)).await?;
            return Ok(true);
        }
        if session == self.id && target == KillTarget::Connection {
            self.error(seq, &MyError::new((1927, "70100"), "Connection was killed")).await?;
            return Ok(false);
        }
        let sql = match target {
            KillTarget::Query => format!("KILL QUERY {thread}"),
            KillTarget::Connection => format!("KILL CONNECTION {thread}"),
        };
        let opts = LoginOptions {
            database: None,
            capabilities: cap::PROXY,
            collation: DEFAULT_COLLATION,
            timeout: self.ctx.config.limits.connect_timeout,
        };
        let result = match self.ctx.connect_leader(&opts).await {
            Ok(mut conn) => conn.execute(&sql).await,
            Err(e) => Err(e),
        };
        if target == KillTarget::Connection {
            entry.killed.notify_one();
        }
        match result {
            Ok(()) => self.write(seq, &ok_payload(0, 0, self.status, 0)).await?,
            Err(crate::backend::mysql::MyBackendError::Server { error, .. }) => self.error(seq, &error).await?,
            Err(e) => self.error(seq, &self.ctx.unreachable(&e)).await?,
        }
        Ok(true)
    }
}

/// What to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillTarget {
    Query,
    Connection,
}

/// `KILL [HARD|SOFT] [CONNECTION | QUERY] id`; None when the text is not a
/// KILL chorus maps (not a KILL at all). `KILL QUERY ID n` and `KILL USER u`
/// are refused: chorus cannot map query ids or whole users' sessions.
pub fn parse_kill(sql: &str) -> Option<Result<(KillTarget, u64), MyError>> {
    let text = strip_leading_comments(sql);
    let text = text.trim_end().trim_end_matches(';').trim_end();
    let mut words = text.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("kill") {
        return None;
    }
    let mut target = KillTarget::Connection;
    let mut rest: Vec<&str> = words.collect();
    if rest.first().is_some_and(|w| w.eq_ignore_ascii_case("hard") || w.eq_ignore_ascii_case("soft")) {
        rest.remove(0);
    }
    match rest.first().map(|w| w.to_ascii_lowercase()) {
        Some(w) if w == "connection" => {
            rest.remove(0);
        }
        Some(w) if w == "query" => {
            target = KillTarget::Query;
            rest.remove(0);
        }
        Some(w) if w == "user" => return Some(Err(unsupported("KILL USER"))),
        _ => {}
    }
    if rest.first().is_some_and(|w| w.eq_ignore_ascii_case("id")) {
        return Some(Err(unsupported("KILL QUERY ID")));
    }
    match rest.as_slice() {
        [id] => match id.parse::<u64>() {
            Ok(n) => Some(Ok((target, n))),
            Err(_) => Some(Err(MyError::new(
                code::NOT_SUPPORTED,
                "chorus maps KILL only with a literal thread id; send KILL <id> as a statement of its own",
            ))),
        },
        _ => Some(Err(MyError::new(
            code::NOT_SUPPORTED,
            "chorus maps KILL only with a literal thread id; send KILL <id> as a statement of its own",
        ))),
    }
}

fn unsupported(what: &str) -> MyError {
    MyError::new(code::NOT_SUPPORTED, format!("{what} is not supported through chorus; use KILL [QUERY] <thread id>"))
}

fn strip_leading_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("/*") {
            match rest.find("*/") {
                Some(i) => s = &rest[i + 2..],
                None => return s,
            }
        } else if s.starts_with("-- ") || s.starts_with('#') {
            match s.find('\n') {
                Some(i) => s = &s[i + 1..],
                None => return "",
            }
        } else {
            return s;
        }
    }
}

/// ER_NO_SUCH_THREAD
pub fn no_such_thread(id: u64) -> MyError {
    MyError::new((1094, "HY000"), format!("Unknown thread id: {id}"))
}

/// ER_KILL_DENIED_ERROR
pub fn not_owner(id: u64) -> MyError {
    MyError::new((1095, "HY000"), format!("You are not owner of thread {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_statements_and_their_targets() {
        assert_eq!(parse_kill("KILL 12").unwrap().unwrap(), (KillTarget::Connection, 12));
        assert_eq!(parse_kill("kill query 7;").unwrap().unwrap(), (KillTarget::Query, 7));
        assert_eq!(parse_kill("/* cancel */ KILL HARD CONNECTION 3").unwrap().unwrap(), (KillTarget::Connection, 3));
        assert_eq!(parse_kill("  KILL SOFT QUERY 9 ").unwrap().unwrap(), (KillTarget::Query, 9));
        assert!(parse_kill("SELECT 1").is_none());
        assert!(parse_kill("killjoy").is_none());
        assert!(parse_kill("KILL QUERY ID 5").unwrap().is_err());
        assert!(parse_kill("KILL USER app").unwrap().is_err());
        assert!(parse_kill("KILL (SELECT 1)").unwrap().is_err());
        assert!(parse_kill("KILL 1; SELECT 2").unwrap().is_err());
    }
}
