//! The MySQL client side: the connection phase (greeting, TLS, the client's
//! answer) and authentication at chorus.

pub mod auth;
pub mod handshake;
