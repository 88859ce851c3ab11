//! Client authentication at the proxy (SCRAM-SHA-256, trust).
//!
//! chorus authenticates clients itself and connects to servers with its own
//! credentials: a SCRAM exchange cannot be replayed onto another connection.

pub mod scram;
