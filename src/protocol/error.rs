//! Errors as clients see them: an SQLSTATE, a message that says what happened and
//! what to do, encoded as a PostgreSQL ErrorResponse. Internals never leak here.

use super::message::{Fields, Message};
use bytes::BytesMut;
use pgwire::messages::Message as _;
use pgwire::messages::response::ErrorResponse;
use std::borrow::Cow;

/// A well-known SQLSTATE chorus raises itself.
pub mod sqlstate {
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const CONNECTION_REJECTED: &str = "08004";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
    pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const UNDEFINED_OBJECT: &str = "42704";
}

/// An error chorus reports to a client in its own name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub severity: &'static str,
    pub code: Cow<'static, str>,
    pub message: String,
    pub hint: Option<String>,
}

impl ClientError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ClientError { severity: "ERROR", code: Cow::Borrowed(code), message: message.into(), hint: None }
    }
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        ClientError { severity: "FATAL", code: Cow::Borrowed(code), message: message.into(), hint: None }
    }
    /// Relay a server's error in chorus's own words (e.g. from an out-of-band step).
    pub fn from_server(e: &ServerError, fatal: bool) -> Self {
        let code = if e.code.is_empty() { Cow::Borrowed(sqlstate::INTERNAL_ERROR) } else { Cow::Owned(e.code.clone()) };
        ClientError { severity: if fatal { "FATAL" } else { "ERROR" }, code, message: e.message.clone(), hint: None }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The same fields as a NoticeResponse (a WARNING the client is told
    /// about without the request failing).
    pub fn to_notice(&self) -> Message {
        let e = self.to_message();
        let mut frame = BytesMut::from(&e.frame[..]);
        frame[0] = b'N';
        Message { tag: b'N', frame: frame.freeze() }
    }

    pub fn to_message(&self) -> Message {
        let mut fields = vec![
            (b'S', self.severity.to_string()),
            (b'V', self.severity.to_string()),
            (b'C', self.code.to_string()),
            (b'M', self.message.clone()),
        ];
        if let Some(h) = &self.hint {
            fields.push((b'H', h.clone()));
        }
        let mut buf = BytesMut::new();
        ErrorResponse::new(fields).encode(&mut buf).expect("error response encodes");
        Message { tag: b'E', frame: buf.freeze() }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)
    }
}

/// The interesting fields of a server's ErrorResponse / NoticeResponse.
#[derive(Debug, Clone, Default)]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl ServerError {
    pub fn parse(body: &[u8]) -> ServerError {
        let mut f = Fields::new(body);
        let mut e = ServerError::default();
        while let Some(kind) = f.u8() {
            if kind == 0 {
                break;
            }
            let Some(v) = f.cstr() else { break };
            match kind {
                b'S' => e.severity = v.to_string(),
                b'C' => e.code = v.to_string(),
                b'M' => e.message = v.to_string(),
                _ => {}
            }
        }
        e
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)
    }
}
