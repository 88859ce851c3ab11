//! Asking "which server answered?": small helpers around `current_setting('port')`
//! and the cluster's ports, shared by the routing, protocol and client tests.

use crate::TestDb;
use std::collections::BTreeSet;
use tokio_postgres::{Client, SimpleQueryMessage};

/// The first column of the first row `sql` returns, sent as a simple query
/// (text format), or `None` for a NULL. Panics with the SQL on error or no row.
pub async fn simple_value(client: &Client, sql: &str) -> Option<String> {
    let messages = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {}", error_text(&e)));
    messages
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// Every row of every statement of a simple query, each as its columns' text.
pub async fn simple_rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {}", error_text(&e)));
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect()
}

/// Port of the server that ran a simple `SELECT current_setting('port')`.
pub async fn answering_port(client: &Client) -> String {
    simple_value(client, "SELECT current_setting('port')").await.expect("port is never NULL")
}

/// The SQLSTATE of a failed query (panics if it is not a server error).
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_else(|| panic!("not a server error: {e:?}"))
}

/// The server's (or chorus's) message of a failed query; empty if it is not a
/// server error.
pub fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default()
}

/// The server's message and SQLSTATE when there is one (tokio-postgres's
/// Display only says "db error").
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl TestDb<'_> {
    pub fn leader_port(&self) -> String {
        self.cluster().leader().port().to_string()
    }

    /// The followers' ports, as `current_setting('port')` spells them.
    pub fn follower_ports(&self) -> BTreeSet<String> {
        self.cluster().followers().iter().map(|n| n.port().to_string()).collect()
    }

    /// Run `sql` directly on each node and return (node name, its first value).
    pub async fn value_on_each(&self, sql: &str) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        for node in self.cluster().nodes() {
            let client = self.connect_node(node).await;
            out.push((node.name().to_string(), simple_value(&client, sql).await));
        }
        out
    }

    /// [`Self::value_on_each`] on the followers only.
    pub async fn value_on_followers(&self, sql: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for node in self.cluster().followers() {
            let client = self.connect_node(node).await;
            out.push(simple_value(&client, sql).await);
        }
        out
    }

    /// `sql`'s first value directly on the leader.
    pub async fn value_on_leader(&self, sql: &str) -> Option<String> {
        simple_value(&self.connect_leader().await, sql).await
    }
}
