//! chorus: a PostgreSQL wire-protocol proxy that makes a group of servers behave as
//! one leader with followers.
//!
//! The data flow, module by module:
//!
//! ```text
//! client --wire--> server (accept, limits, TLS) --> frontend (startup, auth)
//!        --> session (per-client relay loop, prepared statements, settings)
//!        --> sql (classify, cached by text) --> router (pure: pick a target)
//!        --> backend (server connections, pools) --> leader | follower
//! topology: nodes, roles, health (checked by health), read rotation
//! ```

pub mod auth;
pub mod config;
pub mod frontend;
pub mod protocol;
pub mod server;
pub mod sql;
