//! One connection from chorus to a PostgreSQL server, spoken as raw protocol.
//!
//! Sessions forward client bytes through it; chorus also runs small
//! "out-of-band" exchanges on it (re-applying settings, preparing a statement the
//! client prepared on another server, a deferred BEGIN) whose replies never reach
//! the client.

use crate::config::Node;
use crate::protocol::{Fields, FrameError, Message, MessageReader, ServerError, build};
use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Largest message chorus accepts from a server (servers are trusted; this only
/// guards against a corrupted stream).
const MAX_SERVER_MESSAGE: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to {node}: {source}")]
    Connect { node: String, source: std::io::Error },
    #[error("timed out connecting to {node}")]
    Timeout { node: String },
    #[error("server {node} refused the connection: {error}")]
    Refused { node: String, error: ServerError },
    #[error("authentication to {node} failed: {reason}")]
    Auth { node: String, reason: String },
    #[error("connection to {node} lost: {source}")]
    Io { node: String, source: FrameError },
    #[error("unexpected message {tag:?} from {node}")]
    Unexpected { node: String, tag: char },
    /// The server answered an out-of-band request with an error.
    #[error("{0}")]
    Server(ServerError),
}

/// The key a CancelRequest for this connection needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelKey {
    pub addr: std::net::SocketAddr,
    pub pid: i32,
    pub secret: i32,
}

/// A server connection plus what chorus knows about its state.
pub struct ServerConn {
    /// Index of the node in the topology.
    pub node: usize,
    pub node_name: Arc<str>,
    pub database: Arc<str>,
    reader: MessageReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    out: BytesMut,
    pub cancel_key: CancelKey,
    /// Latest ParameterStatus values reported by the server.
    pub params: HashMap<String, String>,
    /// Transaction status from the last ReadyForQuery.
    pub status: u8,
    /// Named prepared statements that exist on this connection.
    pub prepared: HashSet<Arc<str>, foldhash::fast::RandomState>,
    /// Text of the unnamed prepared statement on this connection, if chorus knows it.
    pub unnamed: Option<Arc<str>>,
    /// Statement names closed by the client elsewhere, to close here before next use.
    pub to_close: Vec<Arc<str>>,
    /// Which version of the session's settings this connection has applied.
    pub settings_version: u64,
    /// Set when the connection is in an unknown protocol state and must not be reused.
    pub broken: bool,
    /// Which of chorus's own statements (`session::own`) are prepared here, one bit each.
    pub own_prepared: u16,
    /// When the connection was opened (the pool never keeps one opened
    /// before its database was dropped, see `Pool::forget`).
    pub opened: std::time::Instant,
    /// The open transaction was declared READ ONLY (by chorus's session);
    /// cleared when the transaction ends.
    pub read_only_txn: bool,
}

impl ServerConn {
    /// The transaction status of a ReadyForQuery.
    pub fn set_status(&mut self, status: u8) {
        self.status = status;
        if status == b'I' {
            self.read_only_txn = false;
        }
    }

    /// Connect, authenticate with chorus's credentials, and wait for ReadyForQuery.
    pub async fn connect(
        node_index: usize,
        node: &Node,
        database: &str,
        startup_params: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<ServerConn, BackendError> {
        let name = node.name.as_str();
        match tokio::time::timeout(timeout, Self::connect_inner(node_index, node, database, startup_params)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout { node: name.to_string() }),
        }
    }

    async fn connect_inner(
        node_index: usize,
        node: &Node,
        database: &str,
        startup_params: &[(&str, &str)],
    ) -> Result<ServerConn, BackendError> {
        let name = node.name.clone();
        let stream = TcpStream::connect((node.host.as_str(), node.port))
            .await
            .map_err(|source| BackendError::Connect { node: name.clone(), source })?;
        let _ = stream.set_nodelay(true);
        let addr = stream.peer_addr().map_err(|source| BackendError::Connect { node: name.clone(), source })?;
        let (r, w) = stream.into_split();
        let mut conn = ServerConn {
            node: node_index,
            node_name: name.clone().into(),
            database: database.into(),
            reader: MessageReader::new(r, MAX_SERVER_MESSAGE),
            writer: w,
            out: BytesMut::with_capacity(8192),
            cancel_key: CancelKey { addr, pid: 0, secret: 0 },
            params: HashMap::new(),
            status: b'I',
            prepared: HashSet::default(),
            unnamed: None,
            to_close: Vec::new(),
            settings_version: 0,
            broken: false,
            own_prepared: 0,
            opened: std::time::Instant::now(),
            read_only_txn: false,
        };
        let mut params: Vec<(&str, &str)> = vec![("user", node.user.as_str()), ("database", database)];
        params.extend_from_slice(startup_params);
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::startup_message(params.iter().copied(), &mut buf)
            .map_err(|source| BackendError::Connect { node: name.clone(), source })?;
        conn.write_raw(&buf).await?;
        conn.authenticate(node).await?;
        loop {
            let m = conn.read().await?;
            match m.tag {
                b'S' => conn.note_parameter(&m),
                b'K' => {
                    let mut f = Fields::new(m.body());
                    conn.cancel_key.pid = f.i32().unwrap_or(0);
                    conn.cancel_key.secret = f.i32().unwrap_or(0);
                }
                b'Z' => {
                    conn.status = m.body().first().copied().unwrap_or(b'I');
                    return Ok(conn);
                }
                b'E' => return Err(BackendError::Refused { node: name, error: ServerError::parse(m.body()) }),
                b'N' => {}
                t => return Err(BackendError::Unexpected { node: name, tag: t as char }),
            }
        }
    }

    async fn authenticate(&mut self, node: &Node) -> Result<(), BackendError> {
        let name = self.node_name.to_string();
        let auth_err = |reason: &str| BackendError::Auth { node: name.clone(), reason: reason.to_string() };
        let password = node.password.clone().unwrap_or_default();
        let mut scram: Option<ScramSha256> = None;
        loop {
            let m = self.read().await?;
            match m.tag {
                b'R' => {}
                b'E' => return Err(BackendError::Refused { node: name, error: ServerError::parse(m.body()) }),
                t => return Err(BackendError::Unexpected { node: name, tag: t as char }),
            }
            let mut f = Fields::new(m.body());
            let code = f.i32().ok_or_else(|| auth_err("malformed authentication request"))?;
            let mut buf = BytesMut::new();
            match code {
                0 => return Ok(()),
                3 => {
                    postgres_protocol::message::frontend::password_message(password.as_bytes(), &mut buf)
                        .map_err(|e| auth_err(&e.to_string()))?;
                }
                5 => {
                    let salt = f.bytes(4).ok_or_else(|| auth_err("malformed MD5 salt"))?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        node.user.as_bytes(),
                        password.as_bytes(),
                        [salt[0], salt[1], salt[2], salt[3]],
                    );
                    postgres_protocol::message::frontend::password_message(hash.as_bytes(), &mut buf)
                        .map_err(|e| auth_err(&e.to_string()))?;
                }
                10 => {
                    let mut mechs = Vec::new();
                    while let Some(m) = f.cstr() {
                        if m.is_empty() {
                            break;
                        }
                        mechs.push(m.to_string());
                    }
                    if !mechs.iter().any(|m| m == "SCRAM-SHA-256") {
                        return Err(auth_err(&format!("server offers no supported SASL mechanism ({mechs:?})")));
                    }
                    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    postgres_protocol::message::frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut buf)
                        .map_err(|e| auth_err(&e.to_string()))?;
                    scram = Some(s);
                }
                11 => {
                    let s = scram.as_mut().ok_or_else(|| auth_err("unexpected SASL continue"))?;
                    s.update(f.rest()).map_err(|e| auth_err(&e.to_string()))?;
                    postgres_protocol::message::frontend::sasl_response(s.message(), &mut buf)
                        .map_err(|e| auth_err(&e.to_string()))?;
                }
                12 => {
                    let s = scram.as_mut().ok_or_else(|| auth_err("unexpected SASL final"))?;
                    s.finish(f.rest()).map_err(|e| auth_err(&e.to_string()))?;
                    continue;
                }
                other => return Err(auth_err(&format!("unsupported authentication method (code {other})"))),
            }
            self.write_raw(&buf).await?;
        }
    }

    fn io_err(&self, source: FrameError) -> BackendError {
        BackendError::Io { node: self.node_name.to_string(), source }
    }

    /// Read one message from the server. Cancel-safe.
    pub async fn read(&mut self) -> Result<Message, BackendError> {
        match self.reader.read().await {
            Ok(m) => Ok(m),
            Err(e) => {
                self.broken = true;
                Err(self.io_err(e))
            }
        }
    }

    /// The next server message if it is already buffered (no I/O).
    pub fn next_buffered(&mut self) -> Option<Result<Message, BackendError>> {
        match self.reader.next_buffered()? {
            Ok(m) => Some(Ok(m)),
            Err(e) => {
                self.broken = true;
                Some(Err(self.io_err(e)))
            }
        }
    }

    /// True when a whole server message is already buffered.
    pub fn has_buffered(&self) -> bool {
        self.reader.has_buffered_message()
    }

    async fn write_raw(&mut self, data: &[u8]) -> Result<(), BackendError> {
        if let Err(e) = self.writer.write_all(data).await {
            self.broken = true;
            return Err(self.io_err(FrameError::Io(e)));
        }
        Ok(())
    }

    /// Queue bytes for the server; nothing is sent until [`ServerConn::flush`].
    pub fn queue(&mut self, frame: &Bytes) {
        self.out.put_slice(frame);
    }

    pub fn queued_len(&self) -> usize {
        self.out.len()
    }

    pub async fn flush(&mut self) -> Result<(), BackendError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.writer.write_all(&self.out).await;
        self.out.clear();
        if let Err(e) = r {
            self.broken = true;
            return Err(self.io_err(FrameError::Io(e)));
        }
        Ok(())
    }

    /// Send everything queued while reading what the server answers meanwhile,
    /// so a long pipeline (large COPY data, many statements) cannot deadlock
    /// against a server blocked on writing its replies. Returns the messages
    /// read so far, in order; the caller reads the rest with [`ServerConn::read`].
    pub async fn flush_reading(&mut self) -> Result<Vec<Message>, BackendError> {
        use tokio::io::AsyncWriteExt as _;
        let data = self.out.split().freeze();
        let mut written = 0;
        let mut got = Vec::new();
        while written < data.len() {
            tokio::select! {
                r = self.writer.write(&data[written..]) => match r {
                    Ok(0) => {
                        self.broken = true;
                        return Err(self.io_err(FrameError::Closed));
                    }
                    Ok(n) => written += n,
                    Err(e) => {
                        self.broken = true;
                        return Err(self.io_err(FrameError::Io(e)));
                    }
                },
                m = self.reader.read() => match m {
                    Ok(m) => got.push(m),
                    Err(e) => {
                        self.broken = true;
                        return Err(self.io_err(e));
                    }
                },
            }
        }
        Ok(got)
    }

    /// Record a ParameterStatus message's value.
    pub fn note_parameter(&mut self, m: &Message) {
        let mut f = Fields::new(m.body());
        if let (Some(k), Some(v)) = (f.cstr(), f.cstr()) {
            self.params.insert(k.to_string(), v.to_string());
        }
    }

    /// Run messages ending in Sync or a simple Query and swallow the replies.
    /// Returns the first server error, if any. The connection must be idle.
    pub async fn exchange_oob(&mut self, messages: &[Message]) -> Result<(), BackendError> {
        self.exchange_rows_oob(messages, |_| {}).await
    }

    /// [`Self::exchange_oob`], handing each DataRow's body to `on_row`.
    pub async fn exchange_rows_oob(
        &mut self,
        messages: &[Message],
        mut on_row: impl FnMut(&[u8]),
    ) -> Result<(), BackendError> {
        for m in messages {
            self.queue(&m.frame);
        }
        self.flush().await?;
        let mut first_error = None;
        loop {
            let m = self.read().await?;
            match m.tag {
                b'D' => on_row(m.body()),
                b'E' if first_error.is_none() => first_error = Some(ServerError::parse(m.body())),
                b'S' => self.note_parameter(&m),
                b'Z' => {
                    self.set_status(m.body().first().copied().unwrap_or(b'I'));
                    break;
                }
                // CopyIn during an out-of-band exchange cannot happen for the
                // statements chorus issues; refuse rather than hang.
                b'G' | b'W' => {
                    self.broken = true;
                    return Err(BackendError::Unexpected { node: self.node_name.to_string(), tag: m.tag as char });
                }
                _ => {}
            }
        }
        match first_error {
            Some(e) => Err(BackendError::Server(e)),
            None => Ok(()),
        }
    }

    /// A simple query out of band (the connection must be idle): its rows,
    /// every column as text (`None`: NULL), or the first server error.
    pub async fn query_text_oob(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, BackendError> {
        let mut rows = Vec::new();
        self.exchange_rows_oob(&[build::query(sql)], |body| {
            let mut f = Fields::new(body);
            let n = f.i16().unwrap_or(0);
            let mut row = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                let len = f.i32().unwrap_or(-1);
                row.push(match usize::try_from(len) {
                    Ok(len) => f.bytes(len).map(|b| String::from_utf8_lossy(b).into_owned()),
                    Err(_) => None,
                });
            }
            rows.push(row);
        })
        .await?;
        Ok(rows)
    }

    /// Simple query out of band, replies swallowed.
    pub async fn simple_oob(&mut self, sql: &str) -> Result<(), BackendError> {
        self.exchange_oob(&[build::query(sql)]).await
    }

    /// Close statements the client closed while they were not on this connection.
    pub async fn close_stale(&mut self) -> Result<(), BackendError> {
        if self.to_close.is_empty() {
            return Ok(());
        }
        let mut msgs: Vec<Message> = self.to_close.drain(..).map(|n| build::close_statement(&n)).collect();
        msgs.push(build::sync());
        self.exchange_oob(&msgs).await
    }

    /// Politely end the connection.
    pub async fn terminate(mut self) {
        let _ = self.write_raw(&build::terminate().frame).await;
        let _ = self.writer.shutdown().await;
    }
}

impl ServerConn {
    /// True when this idle connection can no longer be used (server closed it).
    pub fn is_dead(&mut self) -> bool {
        self.broken || self.reader.is_closed_nonblocking()
    }
}
