//! The MySQL connection phase's packets, pure: chorus's greeting (protocol
//! 10) and the client's answer to it (an SSL request, or HandshakeResponse41).

use crate::protocol::mysql::consts::{NATIVE_PASSWORD, cap, status};
use crate::protocol::mysql::wire::{Malformed, Reader, put_nul_str};
use bytes::{BufMut, BytesMut};

/// What chorus tells a client first.
#[derive(Debug, Clone)]
pub struct Greeting {
    pub connection_id: u32,
    pub server_version: String,
    pub nonce: [u8; crate::auth::mysql::NONCE_LEN],
    pub capabilities: u32,
    pub collation: u8,
}

impl Greeting {
    pub fn payload(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(128);
        out.put_u8(10);
        put_nul_str(&mut out, self.server_version.as_bytes());
        out.put_u32_le(self.connection_id);
        out.put_slice(&self.nonce[..8]);
        out.put_u8(0);
        out.put_u16_le(self.capabilities as u16);
        out.put_u8(self.collation);
        out.put_u16_le(status::AUTOCOMMIT);
        out.put_u16_le((self.capabilities >> 16) as u16);
        out.put_u8(self.nonce.len() as u8 + 1);
        // Reserved; MariaDB puts its extended capabilities in the last four
        // bytes: chorus announces none of them.
        out.put_slice(&[0u8; 10]);
        put_nul_str(&mut out, &self.nonce[8..]);
        put_nul_str(&mut out, NATIVE_PASSWORD.as_bytes());
        out
    }
}

/// The client's answer to the greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// Switch to TLS, then the real answer follows.
    SslRequest {
        capabilities: u32,
    },
    Response(HandshakeResponse),
}

/// HandshakeResponse41: who the client is and its proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub max_packet: u32,
    pub collation: u8,
    pub user: String,
    pub auth: Vec<u8>,
    pub database: Option<String>,
    pub plugin: Option<String>,
    pub attributes: Vec<(String, String)>,
}

/// The fixed part every 4.1 answer starts with.
const FIXED: usize = 4 + 4 + 1 + 23;

pub fn parse_hello(payload: &[u8]) -> Result<ClientHello, Malformed> {
    let mut r = Reader::new(payload);
    let capabilities = r.u32("client capabilities")?;
    if capabilities & cap::PROTOCOL_41 == 0 {
        return Err(Malformed("the client does not speak protocol 4.1"));
    }
    let max_packet = r.u32("max packet size")?;
    let collation = r.u8("character set")?;
    r.take(23, "filler")?;
    if payload.len() == FIXED && capabilities & cap::SSL != 0 {
        return Ok(ClientHello::SslRequest { capabilities });
    }
    let user = String::from_utf8_lossy(r.nul_bytes()).into_owned();
    let auth = if capabilities & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        r.lenenc_bytes("auth response")?.to_vec()
    } else if capabilities & cap::SECURE_CONNECTION != 0 {
        let n = r.u8("auth response length")? as usize;
        r.take(n, "auth response")?.to_vec()
    } else {
        r.nul_bytes().to_vec()
    };
    let database = if capabilities & cap::CONNECT_WITH_DB != 0 && !r.is_empty() {
        Some(String::from_utf8_lossy(r.nul_bytes()).into_owned()).filter(|d| !d.is_empty())
    } else {
        None
    };
    let plugin = if capabilities & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
        Some(String::from_utf8_lossy(r.nul_bytes()).into_owned()).filter(|p| !p.is_empty())
    } else {
        None
    };
    let mut attributes = Vec::new();
    if capabilities & cap::CONNECT_ATTRS != 0 && !r.is_empty() {
        let mut attrs = Reader::new(r.lenenc_bytes("connection attributes")?);
        while !attrs.is_empty() {
            let k = attrs.lenenc_bytes("attribute name")?;
            let v = attrs.lenenc_bytes("attribute value")?;
            attributes.push((String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(ClientHello::Response(HandshakeResponse {
        capabilities,
        max_packet,
        collation,
        user,
        auth,
        database,
        plugin,
        attributes,
    }))
}

/// COM_CHANGE_USER: another user (and database) on the same connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeUser {
    pub user: String,
    pub auth: Vec<u8>,
    pub database: Option<String>,
    pub collation: Option<u8>,
    pub plugin: Option<String>,
}

pub fn parse_change_user(payload: &[u8], capabilities: u32) -> Result<ChangeUser, Malformed> {
    let mut r = Reader::new(payload);
    r.u8("command")?;
    let user = String::from_utf8_lossy(r.nul_bytes()).into_owned();
    let auth = if capabilities & cap::SECURE_CONNECTION != 0 {
        let n = r.u8("auth response length")? as usize;
        r.take(n, "auth response")?.to_vec()
    } else {
        r.nul_bytes().to_vec()
    };
    let database = Some(String::from_utf8_lossy(r.nul_bytes()).into_owned()).filter(|d| !d.is_empty());
    let collation = if r.rest().len() >= 2 { Some(r.u16("character set")? as u8) } else { None };
    let plugin = if capabilities & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
        Some(String::from_utf8_lossy(r.nul_bytes()).into_owned()).filter(|p| !p.is_empty())
    } else {
        None
    };
    Ok(ChangeUser { user, auth, database, collation, plugin })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mysql::wire::put_lenenc_bytes;

    fn response_bytes(caps: u32, user: &str, auth: &[u8], db: Option<&str>, plugin: &str) -> BytesMut {
        let mut out = BytesMut::new();
        out.put_u32_le(caps);
        out.put_u32_le(1 << 24);
        out.put_u8(45);
        out.put_slice(&[0u8; 23]);
        put_nul_str(&mut out, user.as_bytes());
        if caps & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc_bytes(&mut out, auth);
        } else {
            out.put_u8(auth.len() as u8);
            out.put_slice(auth);
        }
        if let Some(db) = db {
            put_nul_str(&mut out, db.as_bytes());
        }
        put_nul_str(&mut out, plugin.as_bytes());
        if caps & cap::CONNECT_ATTRS != 0 {
            let mut attrs = BytesMut::new();
            put_lenenc_bytes(&mut attrs, b"_client_name");
            put_lenenc_bytes(&mut attrs, b"libmariadb");
            put_lenenc_bytes(&mut out, &attrs);
        }
        out
    }

    #[test]
    fn a_full_response_is_read_field_by_field() {
        let caps = cap::PROXY;
        let bytes = response_bytes(caps, "app", &[9; 20], Some("shop"), "mysql_native_password");
        let ClientHello::Response(r) = parse_hello(&bytes).unwrap() else { panic!("not a response") };
        assert_eq!(r.user, "app");
        assert_eq!(r.auth, vec![9; 20]);
        assert_eq!(r.database.as_deref(), Some("shop"));
        assert_eq!(r.plugin.as_deref(), Some("mysql_native_password"));
        assert_eq!(r.attributes, [("_client_name".to_string(), "libmariadb".to_string())]);
        assert_eq!(r.collation, 45);
    }

    #[test]
    fn ssl_requests_old_clients_and_truncated_answers() {
        let ssl = &response_bytes(cap::PROTOCOL_41 | cap::SSL, "", &[], None, "")[..FIXED];
        assert_eq!(parse_hello(ssl).unwrap(), ClientHello::SslRequest { capabilities: cap::PROTOCOL_41 | cap::SSL });
        let old = response_bytes(cap::SECURE_CONNECTION, "app", &[], None, "");
        assert!(parse_hello(&old).is_err());
        let caps = cap::PROTOCOL_41 | cap::SECURE_CONNECTION;
        let cut = response_bytes(caps, "app", &[1; 20], None, "");
        assert!(parse_hello(&cut[..FIXED + 5]).is_err(), "auth response cut short");
        let ClientHello::Response(r) = parse_hello(&cut[..cut.len() - 1]).unwrap() else { panic!() };
        assert_eq!((r.database, r.plugin), (None, None));
    }

    #[test]
    fn the_greeting_carries_the_nonce_in_two_parts() {
        let g = Greeting {
            connection_id: 7,
            server_version: "5.5.5-10.11.6-MariaDB".into(),
            nonce: *b"abcdefghijklmnopqrst",
            capabilities: cap::PROXY,
            collation: 45,
        };
        let p = g.payload();
        let mut r = Reader::new(&p);
        assert_eq!(r.u8("v").unwrap(), 10);
        assert_eq!(r.nul_bytes(), b"5.5.5-10.11.6-MariaDB");
        assert_eq!(r.u32("id").unwrap(), 7);
        assert_eq!(r.take(8, "n").unwrap(), b"abcdefgh");
        r.take(1 + 2 + 1 + 2 + 2 + 1 + 10, "fixed").unwrap();
        assert_eq!(r.nul_bytes(), b"ijklmnopqrst");
        assert_eq!(r.nul_bytes(), b"mysql_native_password");
    }

    #[test]
    fn change_user_packets() {
        let mut p = BytesMut::new();
        p.put_u8(0x11);
        put_nul_str(&mut p, b"other");
        p.put_u8(20);
        p.put_slice(&[3; 20]);
        put_nul_str(&mut p, b"db2");
        p.put_u16_le(33);
        put_nul_str(&mut p, b"mysql_native_password");
        let c = parse_change_user(&p, cap::PROXY).unwrap();
        assert_eq!(c.user, "other");
        assert_eq!(c.database.as_deref(), Some("db2"));
        assert_eq!(c.collation, Some(33));
        assert_eq!(c.plugin.as_deref(), Some("mysql_native_password"));
    }
}
