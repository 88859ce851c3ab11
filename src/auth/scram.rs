//! Server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677), pure: no I/O.
