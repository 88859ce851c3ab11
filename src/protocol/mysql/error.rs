//! Errors as MySQL clients see them: an error code, a SQLSTATE and a message
//! that says what happened and what to do, as an ERR packet.

use super::wire::put_nul_str;
use bytes::{BufMut, BytesMut};

/// Error codes chorus raises itself, with the SQLSTATE MySQL gives each.
pub mod code {
    /// ER_CON_COUNT_ERROR
    pub const TOO_MANY_CONNECTIONS: (u16, &str) = (1040, "08004");
    /// ER_HANDSHAKE_ERROR
    pub const BAD_HANDSHAKE: (u16, &str) = (1043, "08S01");
    /// ER_ACCESS_DENIED_ERROR
    pub const ACCESS_DENIED: (u16, &str) = (1045, "28000");
    /// ER_UNKNOWN_COM_ERROR
    pub const UNKNOWN_COMMAND: (u16, &str) = (1047, "08S01");
    /// ER_SERVER_SHUTDOWN
    pub const SHUTDOWN: (u16, &str) = (1053, "08S01");
    /// ER_UNKNOWN_ERROR
    pub const UNKNOWN: (u16, &str) = (1105, "HY000");
    /// ER_NET_PACKET_TOO_LARGE
    pub const PACKET_TOO_LARGE: (u16, &str) = (1153, "08S01");
    /// ER_NET_READ_ERROR (a malformed packet)
    pub const NET_READ: (u16, &str) = (1158, "08S01");
    /// ER_SPECIFIC_ACCESS_DENIED_ERROR
    pub const NOT_ALLOWED: (u16, &str) = (1227, "42000");
    /// ER_UNKNOWN_STMT_HANDLER
    pub const UNKNOWN_STATEMENT: (u16, &str) = (1243, "HY000");
    /// ER_NOT_SUPPORTED_AUTH_MODE
    pub const AUTH_MODE: (u16, &str) = (1251, "08004");
    /// ER_NOT_SUPPORTED_YET
    pub const NOT_SUPPORTED: (u16, &str) = (1235, "42000");
    /// ER_CONNECT_TO_FOREIGN_DATA_SOURCE: the server behind chorus is unreachable.
    pub const BACKEND_UNREACHABLE: (u16, &str) = (1429, "HY000");
}

/// An error chorus reports to a MySQL client in its own name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ERROR {code} ({state}): {message}")]
pub struct MyError {
    pub code: u16,
    pub state: String,
    pub message: String,
}

impl MyError {
    pub fn new((code, state): (u16, &str), message: impl Into<String>) -> Self {
        MyError { code, state: state.to_string(), message: message.into() }
    }

    /// The ERR packet's payload.
    pub fn payload(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(9 + self.message.len());
        out.put_u8(0xFF);
        out.put_u16_le(self.code);
        out.put_u8(b'#');
        let mut state = [b'H', b'Y', b'0', b'0', b'0'];
        for (d, s) in state.iter_mut().zip(self.state.bytes()) {
            *d = s;
        }
        out.put_slice(&state);
        out.put_slice(self.message.as_bytes());
        out
    }

    /// Read an ERR packet's payload (0xFF first).
    pub fn parse(payload: &[u8]) -> Option<MyError> {
        if payload.first() != Some(&0xFF) || payload.len() < 3 {
            return None;
        }
        let code = u16::from_le_bytes([payload[1], payload[2]]);
        let rest = &payload[3..];
        let (state, message) = if rest.first() == Some(&b'#') && rest.len() >= 6 {
            (String::from_utf8_lossy(&rest[1..6]).into_owned(), &rest[6..])
        } else {
            ("HY000".to_string(), rest)
        };
        Some(MyError { code, state, message: String::from_utf8_lossy(message).into_owned() })
    }
}

/// An OK packet's payload with the given status flags.
pub fn ok_payload(affected: u64, last_insert_id: u64, status: u16, warnings: u16) -> BytesMut {
    let mut out = BytesMut::with_capacity(11);
    out.put_u8(0x00);
    super::wire::put_lenenc(&mut out, affected);
    super::wire::put_lenenc(&mut out, last_insert_id);
    out.put_u16_le(status);
    out.put_u16_le(warnings);
    out
}

/// An AuthSwitchRequest: use `plugin` with this nonce instead.
pub fn auth_switch_payload(plugin: &str, nonce: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(2 + plugin.len() + nonce.len() + 1);
    out.put_u8(0xFE);
    put_nul_str(&mut out, plugin.as_bytes());
    put_nul_str(&mut out, nonce);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_packets_round_trip() {
        let e = MyError::new(code::ACCESS_DENIED, "Access denied for user 'x'");
        let p = e.payload();
        assert_eq!(&p[..9], b"\xff\x15\x04#28000");
        assert_eq!(MyError::parse(&p), Some(e));
        assert_eq!(MyError::parse(b"\xff\x15\x04no state").unwrap().state, "HY000");
    }
}
