//! The PostgreSQL authentication exchange with a client (SCRAM-SHA-256 or trust).
