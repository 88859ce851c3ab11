//! Statement replication for MySQL/MariaDB clusters.
//!
//! ```text
//! session write on the leader: SET TIMESTAMP/rand seeds, the statement (its
//!     OK packet gives the AUTO_INCREMENT id), ... then at COMMIT:
//!     UPDATE _chorus.lsn (+1), INSERT INTO _chorus.log (entry), COMMIT
//!     --in-process notify (and a poll, for other chorus instances)-->
//! applier (one per follower): fetches entries after its applied LSN, replays
//!     each with its context in ONE follower transaction that also advances
//!     _chorus.applied --> ReplicationState (key [`SERVER_LOG`])
//! ```
//!
//! One log per server (`migrations/mysql/`): a MySQL transaction may touch
//! several databases.

pub mod apply;
pub mod conn;
pub mod entry;
pub mod migrate;
pub mod replay;
pub mod supervisor;
pub mod trim;

pub use supervisor::{MyReplication, MyReplicationError};

/// The key of the MySQL server-wide log in [`crate::replication::ReplicationState`]
/// (which is keyed by database for PostgreSQL).
pub const SERVER_LOG: &str = "*";
