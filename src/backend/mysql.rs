//! A connection from chorus to a MySQL/MariaDB server, logged in with
//! chorus's own credentials, then used as a packet pipe: chorus sends a
//! client's command and relays the answer.

use crate::auth::mysql::{encrypt_password, native_scramble, sha2_scramble};
use crate::config::Node;
use crate::protocol::mysql::consts::{CACHING_SHA2_PASSWORD, NATIVE_PASSWORD, cap};
use crate::protocol::mysql::packet::{frame, write_payload};
use crate::protocol::mysql::wire::{Malformed, Reader, put_lenenc_bytes, put_nul_str};
use crate::protocol::mysql::{MyError, Packet, PacketError, PacketReader};
use bytes::{BufMut, BytesMut};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug, thiserror::Error)]
pub enum MyBackendError {
    #[error("cannot connect to {node} ({addr}): {source}")]
    Connect { node: String, addr: String, source: std::io::Error },
    #[error("{node} did not answer within {0:?}", .timeout)]
    Timeout { node: String, timeout: Duration },
    /// The server refused: its error is the client's answer.
    #[error("{node}: {error}")]
    Server { node: String, error: MyError },
    #[error("{node}: {what}")]
    Protocol { node: String, what: String },
    #[error("{node}: connection lost: {source}")]
    Lost { node: String, source: PacketError },
}

/// What the server said about itself in its greeting.
#[derive(Debug, Clone)]
pub struct ServerHello {
    pub version: String,
    pub thread_id: u32,
    pub capabilities: u32,
    pub collation: u8,
    nonce: Vec<u8>,
    plugin: String,
}

pub fn parse_server_hello(payload: &[u8]) -> Result<ServerHello, Malformed> {
    let mut r = Reader::new(payload);
    if r.u8("protocol version")? != 10 {
        return Err(Malformed("not protocol version 10"));
    }
    let version = String::from_utf8_lossy(r.nul_bytes()).into_owned();
    let thread_id = r.u32("thread id")?;
    let mut nonce = r.take(8, "nonce")?.to_vec();
    r.u8("filler")?;
    let low = r.u16("capabilities")? as u32;
    let collation = r.u8("character set")?;
    r.u16("status")?;
    let high = r.u16("capabilities")? as u32;
    let capabilities = low | (high << 16);
    let nonce_len = r.u8("auth data length")? as usize;
    r.take(10, "reserved")?;
    if capabilities & cap::SECURE_CONNECTION != 0 {
        let n = nonce_len.saturating_sub(8).max(13);
        let part = r.take(n.min(r.rest().len()), "nonce")?;
        nonce.extend_from_slice(part.strip_suffix(&[0]).unwrap_or(part));
    }
    let plugin = String::from_utf8_lossy(r.nul_bytes()).into_owned();
    Ok(ServerHello { version, thread_id, capabilities, collation, nonce, plugin })
}

/// One logged-in server connection.
pub struct MyServerConn {
    pub node: usize,
    pub name: String,
    pub hello: ServerHello,
    /// The capabilities both sides agreed on.
    pub capabilities: u32,
    reader: PacketReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// How to log in: the client's wishes that shape the server's answers.
#[derive(Debug, Clone)]
pub struct LoginOptions<'a> {
    pub database: Option<&'a str>,
    /// The capabilities the client and chorus agreed on (SSL aside).
    pub capabilities: u32,
    pub collation: u8,
    pub timeout: Duration,
}

impl MyServerConn {
    pub async fn connect(index: usize, node: &Node, opts: &LoginOptions<'_>) -> Result<MyServerConn, MyBackendError> {
        let name = node.name.clone();
        let timeout = opts.timeout;
        match tokio::time::timeout(timeout, Self::connect_inner(index, node, opts)).await {
            Ok(r) => r,
            Err(_) => Err(MyBackendError::Timeout { node: name, timeout }),
        }
    }

    async fn connect_inner(index: usize, node: &Node, opts: &LoginOptions<'_>) -> Result<MyServerConn, MyBackendError> {
        let addr = format!("{}:{}", node.host, node.port);
        let stream = TcpStream::connect(&addr).await.map_err(|source| MyBackendError::Connect {
            node: node.name.clone(),
            addr: addr.clone(),
            source,
        })?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        let mut conn = MyServerConn {
            node: index,
            name: node.name.clone(),
            hello: ServerHello {
                version: String::new(),
                thread_id: 0,
                capabilities: 0,
                collation: 0,
                nonce: Vec::new(),
                plugin: String::new(),
            },
            capabilities: 0,
            reader: PacketReader::new(r, 1 << 30),
            writer: w,
        };
        let greeting = conn.read().await?;
        if greeting.first_byte() == Some(0xFF) {
            return Err(conn.server_error(&greeting.payload));
        }
        conn.hello = parse_server_hello(&greeting.payload).map_err(|e| conn.protocol(e.to_string()))?;
        let mut caps = (opts.capabilities & conn.hello.capabilities & cap::PROXY & !cap::CONNECT_ATTRS & !cap::SSL)
            | cap::PROTOCOL_41
            | cap::SECURE_CONNECTION
            | cap::PLUGIN_AUTH;
        caps &= !cap::CONNECT_WITH_DB;
        if opts.database.is_some() {
            caps |= cap::CONNECT_WITH_DB;
        }
        conn.capabilities = caps;
        let password = node.password.clone().unwrap_or_default();
        let plugin = if conn.hello.plugin == CACHING_SHA2_PASSWORD { CACHING_SHA2_PASSWORD } else { NATIVE_PASSWORD };
        let scramble = scramble_for(plugin, &password, &conn.hello.nonce);
        let mut out = BytesMut::with_capacity(128);
        out.put_u32_le(caps);
        out.put_u32_le(1 << 30);
        out.put_u8(opts.collation);
        out.put_slice(&[0u8; 23]);
        put_nul_str(&mut out, node.user.as_bytes());
        if caps & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc_bytes(&mut out, &scramble);
        } else {
            out.put_u8(scramble.len() as u8);
            out.put_slice(&scramble);
        }
        if let Some(db) = opts.database {
            put_nul_str(&mut out, db.as_bytes());
        }
        put_nul_str(&mut out, plugin.as_bytes());
        conn.write(1, &out).await?;
        let mut nonce = conn.hello.nonce.clone();
        let mut plugin = plugin.to_string();
        loop {
            let p = conn.read().await?;
            let seq = p.seq.wrapping_add(1);
            match p.first_byte() {
                Some(0x00) => return Ok(conn),
                Some(0xFF) => return Err(conn.server_error(&p.payload)),
                Some(0xFE) => {
                    // AuthSwitchRequest: another plugin, maybe another nonce.
                    let mut r = Reader::new(&p.payload[1..]);
                    plugin = String::from_utf8_lossy(r.nul_bytes()).into_owned();
                    let data = r.rest();
                    nonce = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
                    if plugin != NATIVE_PASSWORD && plugin != CACHING_SHA2_PASSWORD {
                        return Err(conn.protocol(format!(
                            "the server asks for the authentication plugin {plugin:?}; give chorus's user \
                             mysql_native_password or caching_sha2_password on it"
                        )));
                    }
                    conn.write(seq, &scramble_for(&plugin, &password, &nonce)).await?;
                }
                Some(0x01) if plugin == CACHING_SHA2_PASSWORD => match &p.payload[1..] {
                    [0x03] => {} // fast path accepted: the OK follows
                    [0x04] => {
                        conn.write(seq, &[0x02]).await?;
                    }
                    pem => {
                        let cipher = encrypt_password(&password, &nonce, pem).map_err(|e| conn.protocol(e))?;
                        conn.write(seq, &cipher).await?;
                    }
                },
                _ => return Err(conn.protocol("unexpected packet during login".into())),
            }
        }
    }

    fn server_error(&self, payload: &[u8]) -> MyBackendError {
        match MyError::parse(payload) {
            Some(error) => MyBackendError::Server { node: self.name.clone(), error },
            None => self.protocol("malformed error packet".into()),
        }
    }

    fn protocol(&self, what: String) -> MyBackendError {
        MyBackendError::Protocol { node: self.name.clone(), what }
    }

    fn lost(&self, source: PacketError) -> MyBackendError {
        MyBackendError::Lost { node: self.name.clone(), source }
    }

    async fn write(&mut self, seq: u8, payload: &[u8]) -> Result<u8, MyBackendError> {
        write_payload(&mut self.writer, seq, payload).await.map_err(|e| self.lost(e.into()))
    }

    /// One wire packet of the server's answer.
    pub async fn read(&mut self) -> Result<Packet, MyBackendError> {
        match self.reader.read_raw().await {
            Ok(p) => Ok(p),
            Err(e) => Err(self.lost(e)),
        }
    }

    /// More of the answer is already buffered: no need to flush to the client yet.
    pub fn has_buffered(&self) -> bool {
        self.reader.has_buffered()
    }

    /// Send a command (a whole payload; split as needed), starting at `seq`.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> Result<u8, MyBackendError> {
        self.write(seq, payload).await
    }

    /// Send wire packets exactly as framed in `bytes`.
    pub async fn send_framed(&mut self, bytes: &[u8]) -> Result<(), MyBackendError> {
        match self.writer.write_all(bytes).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.lost(e.into())),
        }
    }

    /// Run a statement that answers with OK or ERR (chorus's own, e.g. KILL).
    pub async fn execute(&mut self, sql: &str) -> Result<(), MyBackendError> {
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(crate::protocol::mysql::consts::com::QUERY);
        payload.extend_from_slice(sql.as_bytes());
        self.send(0, &payload).await?;
        let p = self.read().await?;
        match p.first_byte() {
            Some(0x00) => Ok(()),
            Some(0xFF) => Err(self.server_error(&p.payload)),
            _ => Err(self.protocol(format!("{sql:?} answered with more than OK"))),
        }
    }

    /// Frame helper for callers that batch: `payload` as packets from `seq`.
    pub fn frame_into(out: &mut BytesMut, seq: u8, payload: &[u8]) -> u8 {
        frame(out, seq, payload)
    }
}

fn scramble_for(plugin: &str, password: &str, nonce: &[u8]) -> Vec<u8> {
    if plugin == CACHING_SHA2_PASSWORD { sha2_scramble(password, nonce) } else { native_scramble(password, nonce) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::mysql::handshake::Greeting;

    #[test]
    fn chorus_reads_its_own_greeting() {
        let g = Greeting {
            connection_id: 42,
            server_version: "5.5.5-10.11.6-MariaDB".into(),
            nonce: *b"abcdefghijklmnopqrst",
            capabilities: cap::PROXY,
            collation: 45,
        };
        let h = parse_server_hello(&g.payload()).unwrap();
        assert_eq!(h.thread_id, 42);
        assert_eq!(h.nonce, b"abcdefghijklmnopqrst");
        assert_eq!(h.plugin, NATIVE_PASSWORD);
        assert_eq!(h.capabilities, cap::PROXY);
        assert_eq!(h.version, "5.5.5-10.11.6-MariaDB");
    }
}
