//! Server-side connections and their pools.

pub mod conn;
pub mod mysql;
pub mod pool;

pub use conn::{BackendError, CancelKey, ServerConn};
pub use pool::Pool;
