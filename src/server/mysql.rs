//! The MySQL listener's connections: greeting, optional TLS, authentication
//! at chorus, the session's leader connection, then the session.

use crate::auth::mysql::nonce;
use crate::backend::mysql::{LoginOptions, MyBackendError};
use crate::context::MysqlContext;
use crate::frontend::mysql::auth::{Attempt, AuthError, Channel, authenticate};
use crate::frontend::mysql::handshake::{ClientHello, Greeting, HandshakeResponse, parse_hello};
use crate::protocol::mysql::consts::cap;
use crate::protocol::mysql::error::ok_payload;
use crate::protocol::mysql::packet::write_payload;
use crate::protocol::mysql::{MyError, PacketReader, code};
use crate::session::mysql::{MyLogin, MySession};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// A client stream after the optional switch to TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Serve one accepted MySQL connection to its end.
pub async fn handle_connection(
    ctx: Arc<MysqlContext>,
    mut stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    limit: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let id = ctx.next_session_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Ok(_permit) = limit.try_acquire_owned() else {
        let e = MyError::new(code::TOO_MANY_CONNECTIONS, "Too many connections; raise limits.max_client_connections");
        let _ = write_payload(&mut stream, 0, &e.payload()).await;
        return;
    };
    let timeout = ctx.config.limits.startup_timeout;
    let login = tokio::time::timeout(timeout, login(&ctx, stream, peer, tls.as_ref(), id as u32)).await;
    let (reader, writer, leader, login) = match login {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "MySQL login failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "MySQL login timed out");
            return;
        }
    };
    tracing::debug!(%peer, user = %login.user, "MySQL client authenticated");
    crate::metrics::session_started();
    MySession::new(ctx, id, reader, writer, leader, login, stop).run().await;
    crate::metrics::session_ended();
}

#[derive(Debug, thiserror::Error)]
enum LoginError {
    #[error("{0}")]
    Told(MyError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Backend(MyBackendError),
}

async fn login(
    ctx: &MysqlContext,
    mut stream: TcpStream,
    peer: SocketAddr,
    tls: Option<&TlsAcceptor>,
    connection_id: u32,
) -> Result<
    (
        PacketReader<tokio::io::ReadHalf<Box<dyn Io>>>,
        tokio::io::WriteHalf<Box<dyn Io>>,
        crate::backend::mysql::MyServerConn,
        MyLogin,
    ),
    LoginError,
> {
    let (version, mut capabilities, collation) = ctx.greeting_facts();
    if tls.is_some() {
        capabilities |= cap::SSL;
    }
    let nonce = nonce();
    let greeting = Greeting { connection_id, server_version: version, nonce, capabilities, collation };
    write_payload(&mut stream, 0, &greeting.payload()).await?;
    // The first answer is read straight off the socket, unbuffered: after an
    // SSL request the next bytes belong to the TLS handshake.
    let (seq, first) = read_unbuffered(&mut stream).await?;
    let max = ctx.config.limits.max_message_bytes;
    let hello = parse_hello(&first).map_err(|e| MyError::new(code::BAD_HANDSHAKE, format!("Bad handshake: {e}")));
    match hello {
        Err(e) => {
            let _ = write_payload(&mut stream, seq.wrapping_add(1), &e.payload()).await;
            Err(LoginError::Told(e))
        }
        Ok(ClientHello::Response(response)) => {
            let boxed: Box<dyn Io> = Box::new(stream);
            let (r, w) = tokio::io::split(boxed);
            let reader = PacketReader::new(r, max);
            finish(ctx, reader, w, seq.wrapping_add(1), response, false, nonce, capabilities, peer).await
        }
        Ok(ClientHello::SslRequest { .. }) => {
            let Some(acceptor) = tls else {
                let e = MyError::new(code::BAD_HANDSHAKE, "TLS is not configured on chorus");
                let _ = write_payload(&mut stream, seq.wrapping_add(1), &e.payload()).await;
                return Err(LoginError::Told(e));
            };
            let boxed: Box<dyn Io> = Box::new(acceptor.accept(stream).await?);
            let (r, mut w) = tokio::io::split(boxed);
            let mut reader = PacketReader::new(r, max);
            let p = reader.read_command().await.map_err(|e| std::io::Error::other(e.to_string()))?;
            let Ok(ClientHello::Response(response)) = parse_hello(&p.payload) else {
                let e = MyError::new(code::BAD_HANDSHAKE, "Bad handshake after the switch to TLS");
                let _ = write_payload(&mut w, p.seq.wrapping_add(1), &e.payload()).await;
                return Err(LoginError::Told(e));
            };
            finish(ctx, reader, w, p.seq.wrapping_add(1), response, true, nonce, capabilities, peer).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn finish<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    ctx: &MysqlContext,
    mut reader: PacketReader<R>,
    mut writer: W,
    mut seq: u8,
    response: HandshakeResponse,
    tls: bool,
    nonce: [u8; crate::auth::mysql::NONCE_LEN],
    offered: u32,
    peer: SocketAddr,
) -> Result<(PacketReader<R>, W, crate::backend::mysql::MyServerConn, MyLogin), LoginError> {
    let host = peer.ip().to_string();
    let attempt = Attempt {
        user: &response.user,
        plugin: response.plugin.as_deref(),
        auth: &response.auth,
        can_switch: response.capabilities & cap::PLUGIN_AUTH != 0,
        tls,
        host: &host,
    };
    let mut ch = Channel { reader: &mut reader, writer: &mut writer, seq: &mut seq };
    match authenticate(&mut ch, &ctx.users, &ctx.sha2_cache, &nonce, &attempt).await {
        Ok(()) => {}
        Err(AuthError::Denied(e)) => {
            let _ = write_payload(&mut writer, seq, &e.payload()).await;
            let _ = writer.shutdown().await;
            return Err(LoginError::Told(e));
        }
        Err(e) => return Err(e.into()),
    }
    if response.capabilities & cap::SECURE_CONNECTION == 0 {
        let e = MyError::new(code::BAD_HANDSHAKE, "chorus needs a client with CLIENT_SECURE_CONNECTION (4.1 auth)");
        let _ = write_payload(&mut writer, seq, &e.payload()).await;
        return Err(LoginError::Told(e));
    }
    let capabilities = response.capabilities & offered & !cap::SSL;
    let opts = LoginOptions {
        database: response.database.as_deref(),
        capabilities,
        collation: response.collation,
        timeout: ctx.config.limits.connect_timeout,
    };
    let leader = match ctx.connect_leader(&opts).await {
        Ok(c) => c,
        Err(e) => {
            let told = match &e {
                // The server's own answer (unknown database, ...) is the client's.
                MyBackendError::Server { error, .. } => error.clone(),
                other => ctx.unreachable(other),
            };
            let _ = write_payload(&mut writer, seq, &told.payload()).await;
            return Err(LoginError::Backend(e));
        }
    };
    let status = crate::protocol::mysql::consts::status::AUTOCOMMIT;
    write_payload(&mut writer, seq, &ok_payload(0, 0, status, 0)).await?;
    let program =
        response.attributes.iter().find(|(k, _)| k == "program_name").map(|(_, v)| v.clone()).unwrap_or_default();
    let login = MyLogin {
        program,
        user: response.user,
        database: response.database,
        capabilities,
        collation: response.collation,
        nonce,
        tls,
        host,
    };
    Ok((reader, writer, leader, login))
}

/// One packet read byte-exactly from the socket: (sequence id, payload).
async fn read_unbuffered(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    if len > 64 * 1024 {
        return Err(std::io::Error::other(format!("handshake answer of {len} bytes is too large")));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok((head[3], body))
}
