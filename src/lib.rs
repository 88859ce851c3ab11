//! chorus: a PostgreSQL and MySQL wire-protocol proxy that makes a group of
//! servers behave as one leader with followers.
//!
//! The data flow, module by module:
//!
//! ```text
//! client --wire--> server (accept, limits, TLS) --> frontend (startup, auth)
//!        --> session (per-client relay loop, prepared statements, settings)
//!        --> sql (classify, cached by text) --> router (pure: pick a target)
//!        --> consistency (pure: which followers are fresh enough for the read)
//!        --> backend (server connections, pools) --> leader | follower
//! topology: nodes, roles, health (checked by `health`), read rotation
//! catalog: which functions are safe on followers (from the leader's pg_proc)
//! cancel: chorus-issued cancel keys -> the server running the session's query
//! replication: leader's _chorus.log --feed--> applier (one per follower and
//!              database) --> follower, applied LSN recorded in the same transaction
//! metrics: counters and replication progress on a Prometheus endpoint
//! verify: the convergence judge (per-table checksums on every node, compared)
//! ```
//!
//! MySQL clusters take the same path through their own modules, each beside
//! its PostgreSQL twin: `server/mysql.rs` (connection phase), `frontend/mysql/`
//! (handshake, auth), `protocol/mysql/` (packets), `session/mysql/` (command
//! loop, logging writes, follower reads), `sql/mysql/` (lexer, classifier),
//! `backend/mysql.rs`, `replication/mysql/` (log, appliers), `health/mysql.rs`,
//! `verify/mysql.rs`; `consistency`, `policy` and the replication state are
//! shared.

pub mod auth;
pub mod backend;
pub mod cancel;
pub mod catalog;
pub mod config;
pub mod consistency;
pub mod context;
pub mod demo;
pub mod frontend;
pub mod health;
pub mod localcluster;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod replication;
pub mod router;
pub mod server;
pub mod session;
pub mod sql;
pub mod status;
pub mod topology;
pub mod verify;
