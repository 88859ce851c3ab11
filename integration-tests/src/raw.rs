//! The PostgreSQL protocol by hand, over a plain TCP socket: for tests that send
//! chorus what no real client would (garbage startup packets, unknown message
//! types, lying length fields) and check exactly what comes back.
//!
//! Every read runs under [`RAW_TIMEOUT`]: a chorus that neither answers nor
//! closes fails the test ("hung") instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one read may wait before the test calls chorus hung.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(15);

pub const PROTOCOL_3_0: i32 = 3 << 16;
pub const SSL_REQUEST: i32 = 80877103;
pub const GSSENC_REQUEST: i32 = 80877104;
pub const CANCEL_REQUEST: i32 = 80877102;

/// One message from chorus: tag and body (after the length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendMsg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl BackendMsg {
    /// The fields of an ErrorResponse or NoticeResponse; panics on another message.
    pub fn error(&self) -> ErrorFields {
        assert!(self.tag == b'E' || self.tag == b'N', "expected an ErrorResponse, got {:?}", self);
        ErrorFields::parse(&self.body)
    }

    /// The Int32 code of an Authentication ('R') message.
    pub fn auth_code(&self) -> i32 {
        assert_eq!(self.tag, b'R', "expected an Authentication message, got {self:?}");
        i32::from_be_bytes(self.body[..4].try_into().expect("4 bytes"))
    }
}

/// The interesting fields of an ErrorResponse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl ErrorFields {
    pub fn parse(body: &[u8]) -> ErrorFields {
        let mut e = ErrorFields::default();
        let mut rest = body;
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            let value = String::from_utf8_lossy(&tail[..end]).into_owned();
            match kind {
                b'S' => e.severity = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                _ => {}
            }
            rest = tail.get(end + 1..).unwrap_or(&[]);
        }
        e
    }
}

/// What a read from chorus produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Msg(BackendMsg),
    /// chorus closed the connection (EOF or reset).
    Closed,
}

/// The key a CancelRequest needs, from BackendKeyData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKey {
    pub pid: i32,
    pub secret: i32,
}

/// A raw client connection.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// BackendKeyData, once seen.
    pub key: Option<BackendKey>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = tokio::time::timeout(RAW_TIMEOUT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        RawConn { stream, buf: Vec::new(), key: None }
    }

    /// Send bytes. Errors are returned, not raised: chorus may already have
    /// closed the connection on a bad client, which is a fine outcome.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Close our sending side (chorus then sees end of file).
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Read more bytes into the buffer; false on EOF or reset.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(RAW_TIMEOUT, self.stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("chorus neither answered nor closed the connection within {RAW_TIMEOUT:?}"));
        match n {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// One byte (the answer to SSLRequest / GSSENCRequest), or None if closed.
    pub async fn read_byte(&mut self) -> Option<u8> {
        if self.buf.is_empty() && !self.fill().await {
            return None;
        }
        Some(self.buf.remove(0))
    }

    /// The next message, or [`Reply::Closed`]. A message cut short by the close
    /// counts as closed.
    pub async fn read(&mut self) -> Reply {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().expect("4 bytes"));
                assert!(len >= 4, "chorus sent a message with length {len}: {:?}", self.buf);
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    let frame: Vec<u8> = self.buf.drain(..total).collect();
                    let msg = BackendMsg { tag: frame[0], body: frame[5..].to_vec() };
                    if msg.tag == b'K' && msg.body.len() == 8 {
                        self.key = Some(BackendKey {
                            pid: i32::from_be_bytes(msg.body[..4].try_into().expect("4 bytes")),
                            secret: i32::from_be_bytes(msg.body[4..8].try_into().expect("4 bytes")),
                        });
                    }
                    return Reply::Msg(msg);
                }
            }
            if !self.fill().await {
                return Reply::Closed;
            }
        }
    }

    /// The next message; panics if chorus closed instead.
    pub async fn expect_msg(&mut self) -> BackendMsg {
        match self.read().await {
            Reply::Msg(m) => m,
            Reply::Closed => panic!("chorus closed the connection; a message was expected"),
        }
    }

    /// Messages up to and including ReadyForQuery; panics on a close.
    pub async fn until_ready(&mut self) -> Vec<BackendMsg> {
        let mut out = Vec::new();
        loop {
            let m = self.expect_msg().await;
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// Everything chorus sends until it closes the connection.
    pub async fn until_closed(&mut self) -> Vec<BackendMsg> {
        let mut out = Vec::new();
        while let Reply::Msg(m) = self.read().await {
            out.push(m);
        }
        out
    }

    /// chorus must answer with exactly one ErrorResponse and close the connection.
    pub async fn expect_fatal_then_close(&mut self) -> ErrorFields {
        let msgs = self.until_closed().await;
        let errors: Vec<&BackendMsg> = msgs.iter().filter(|m| m.tag == b'E').collect();
        assert_eq!(errors.len(), 1, "expected one ErrorResponse before the close, got {msgs:?}");
        assert_eq!(msgs.last().map(|m| m.tag), Some(b'E'), "the error must be the last message: {msgs:?}");
        errors[0].error()
    }

    /// Start a session as a `trust` user: startup, AuthenticationOk, up to
    /// ReadyForQuery. Returns the messages after AuthenticationOk.
    pub async fn login_trust(addr: SocketAddr, user: &str, database: &str) -> (RawConn, Vec<BackendMsg>) {
        let mut c = RawConn::connect(addr).await;
        c.send(&startup_packet(PROTOCOL_3_0, &[("user", user), ("database", database)])).await.expect("send startup");
        let first = c.expect_msg().await;
        assert_eq!(first.auth_code(), 0, "a trust user gets AuthenticationOk at once");
        let rest = c.until_ready().await;
        assert!(c.key.is_some(), "no BackendKeyData in {rest:?}");
        (c, rest)
    }

    /// Run one simple query that must succeed; returns its messages up to ReadyForQuery.
    pub async fn simple_ok(&mut self, sql: &str) -> Vec<BackendMsg> {
        self.send(&query(sql)).await.expect("send query");
        let msgs = self.until_ready().await;
        assert!(
            msgs.iter().all(|m| m.tag != b'E'),
            "{sql:?} failed: {:?}",
            msgs.iter().filter(|m| m.tag == b'E').map(|m| m.error()).collect::<Vec<_>>()
        );
        msgs
    }
}

/// The text of the first column of every DataRow in `msgs` (NULL as "").
pub fn data_rows(msgs: &[BackendMsg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| {
            let len = i32::from_be_bytes(m.body[2..6].try_into().expect("4 bytes"));
            if len < 0 { String::new() } else { String::from_utf8_lossy(&m.body[6..6 + len as usize]).into_owned() }
        })
        .collect()
}

/// A startup-phase packet: Int32 length (including itself), then `body`.
pub fn untagged(body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// StartupMessage for protocol `version` with `params`.
pub fn startup_packet(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    untagged(&body)
}

pub fn ssl_request() -> Vec<u8> {
    untagged(&SSL_REQUEST.to_be_bytes())
}

pub fn gssenc_request() -> Vec<u8> {
    untagged(&GSSENC_REQUEST.to_be_bytes())
}

pub fn cancel_request(key: BackendKey) -> Vec<u8> {
    let mut body = CANCEL_REQUEST.to_be_bytes().to_vec();
    body.extend_from_slice(&key.pid.to_be_bytes());
    body.extend_from_slice(&key.secret.to_be_bytes());
    untagged(&body)
}

/// A tagged message with a correct length.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Extended-protocol messages (no parameters, text results).
pub mod frames {
    use super::message;
    fn cstr(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }
    pub fn parse(name: &str, sql: &str) -> Vec<u8> {
        message(b'P', &[cstr(name), cstr(sql), vec![0, 0]].concat())
    }
    pub fn bind(portal: &str, stmt: &str) -> Vec<u8> {
        message(b'B', &[cstr(portal), cstr(stmt), vec![0, 0, 0, 0, 0, 0]].concat())
    }
    pub fn describe_portal(name: &str) -> Vec<u8> {
        message(b'D', &[vec![b'P'], cstr(name)].concat())
    }
    pub fn execute(portal: &str) -> Vec<u8> {
        message(b'E', &[cstr(portal), vec![0, 0, 0, 0]].concat())
    }
    pub fn close_statement(name: &str) -> Vec<u8> {
        message(b'C', &[vec![b'S'], cstr(name)].concat())
    }
    pub fn sync() -> Vec<u8> {
        message(b'S', &[])
    }
}

/// A simple Query message.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

pub fn terminate() -> Vec<u8> {
    message(b'X', &[])
}

/// Send a CancelRequest for `key` on a new connection; chorus answers nothing
/// and closes it (as PostgreSQL does). Panics if it sends anything or hangs.
pub async fn send_cancel(addr: SocketAddr, key: BackendKey) {
    let mut c = RawConn::connect(addr).await;
    c.send(&cancel_request(key)).await.expect("send cancel request");
    let msgs = c.until_closed().await;
    assert!(msgs.is_empty(), "chorus answered a CancelRequest with {msgs:?}");
}

/// Deterministic pseudo-random bytes (xorshift), for garbage that is the same
/// on every run.
pub fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
