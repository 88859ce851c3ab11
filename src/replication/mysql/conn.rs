//! Control-plane connections to MySQL/MariaDB nodes (mysql_async, TCP only,
//! chorus's own credentials) and the error type of MySQL replication.
//!
//! Migrations, appliers, the trimmer and the health checker all connect
//! through [`connect`], so every one of them stays on TCP (mysql_async would
//! otherwise move to the server's Unix socket after the handshake, which
//! would bypass whatever the configured address points at) and gives up
//! after the configured connect timeout.

use crate::config::Node;
use std::time::Duration;

/// Why a step of MySQL replication failed: always names the node, and for a
/// query what it was for.
#[derive(Debug, thiserror::Error)]
pub enum MyReplicationError {
    #[error("cannot connect to {node}: {}", my_text(.source))]
    Connect {
        node: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("timed out connecting to {node}")]
    Timeout { node: String },
    #[error("{node}: {what} failed: {}", my_text(.source))]
    Query {
        node: String,
        what: String,
        #[source]
        source: mysql_async::Error,
    },
    /// Another chorus held the migration lock for the whole wait.
    #[error("{node}: the migration lock ({lock}) stayed taken for {secs} s (another chorus migrating?)")]
    Locked { node: String, lock: &'static str, secs: u32 },
    /// The follower's `_chorus.applied` is not where this applier left it:
    /// something else applies to it (never happens while the apply lock is held).
    #[error("{node}: _chorus.applied is no longer at LSN {expected}; re-reading it")]
    PositionMoved { node: String, expected: i64 },
}

impl MyReplicationError {
    /// The server's error, when the failure is one (not a connection problem).
    pub fn server_error(&self) -> Option<&mysql_async::ServerError> {
        match self {
            MyReplicationError::Connect { source: mysql_async::Error::Server(e), .. }
            | MyReplicationError::Query { source: mysql_async::Error::Server(e), .. } => Some(e),
            _ => None,
        }
    }
}

/// A mysql_async error as one line: the server's code, SQLSTATE and message,
/// or the I/O or driver problem (its own Display repeats "Input/output error").
pub fn my_text(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => s.to_string(),
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => format!("I/O error: {io}"),
        mysql_async::Error::Driver(d) => format!("driver error: {d}"),
        other => other.to_string(),
    }
}

/// Connection settings for `db` (None: no default database) on `node`.
pub fn opts(node: &Node, db: Option<&str>) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(node.host.as_str())
        .tcp_port(node.port)
        .user(Some(node.user.as_str()))
        .pass(node.password.as_deref())
        .db_name(db)
        // Stay on TCP: see the module documentation.
        .prefer_socket(false)
        .into()
}

/// Connect to `node` (default database `db`), giving up after `timeout`.
pub async fn connect(
    node: &Node,
    db: Option<&str>,
    timeout: Duration,
) -> Result<mysql_async::Conn, MyReplicationError> {
    match tokio::time::timeout(timeout, mysql_async::Conn::new(opts(node, db))).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) => Err(MyReplicationError::Connect { node: node.name.clone(), source }),
        Err(_) => Err(MyReplicationError::Timeout { node: node.name.clone() }),
    }
}

/// Turn a query error into a [`MyReplicationError::Query`] naming what failed.
pub fn query_error(node: &Node, what: &str) -> impl FnOnce(mysql_async::Error) -> MyReplicationError {
    let (node, what) = (node.name.clone(), what.to_string());
    move |source| MyReplicationError::Query { node, what, source }
}

/// A backquoted identifier (backquotes inside doubled), valid under every sql_mode.
pub fn quote_name(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_backquoted_and_errors_read_as_one_line() {
        assert_eq!(quote_name("shop"), "`shop`");
        assert_eq!(quote_name("we`ird"), "`we``ird`");
        let e = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1062,
            message: "Duplicate entry '5' for key 'PRIMARY'".into(),
            state: "23000".into(),
        });
        assert_eq!(my_text(&e), "ERROR 1062 (23000): Duplicate entry '5' for key 'PRIMARY'");
        let q = query_error(
            &Node {
                name: "follower1".into(),
                dialect: crate::config::Dialect::Mysql,
                role: crate::config::Role::Follower,
                host: "127.0.0.1".into(),
                port: 3306,
                user: "root".into(),
                password: None,
                admin_database: "mysql".into(),
            },
            "reading _chorus.applied",
        )(e);
        assert_eq!(q.server_error().map(|s| s.code), Some(1062));
        assert_eq!(
            q.to_string(),
            "follower1: reading _chorus.applied failed: ERROR 1062 (23000): Duplicate entry '5' for key 'PRIMARY'"
        );
    }
}
