//! Listeners and the accept loop: connection limits, TLS, startup timeouts,
//! graceful shutdown. Each accepted connection becomes one task.

use crate::config::Config;
use crate::context::Context;
use crate::frontend::auth::authenticate;
use crate::frontend::startup::{ClientStream, Startup, negotiate};
use crate::protocol::{ClientError, MessageReader, build, sqlstate};
use crate::session::{Session, StartupInfo};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("{0}")]
    Config(String),
}

/// A bound (listening) chorus, ready to serve.
pub struct Server {
    ctx: Arc<Context>,
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    /// The Prometheus endpoint's listener, when configured.
    metrics: Option<tokio::net::TcpListener>,
}

impl Server {
    /// Bind the configured listeners (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let tls = match &config.tls {
            Some(t) => Some(load_tls(&t.cert, &t.key)?),
            None => None,
        };
        let addr = config.listen.postgres.ok_or_else(|| ServerError::Config("listen.postgres is not set".into()))?;
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
        let metrics = match config.metrics.listen {
            Some(addr) => Some(crate::metrics::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?),
            None => None,
        };
        let ctx = Arc::new(Context::new(config).map_err(ServerError::Config)?);
        Ok(Server { ctx, listener, tls, metrics })
    }

    /// The state every session shares (topology, replication progress...).
    pub fn context(&self) -> Arc<Context> {
        self.ctx.clone()
    }

    /// The metrics endpoint's address, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The PostgreSQL listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serve until `shutdown` completes, then stop accepting, ask sessions to
    /// end at their next idle point, and wait briefly for them.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let ctx = self.ctx.clone();
        let metrics = self.metrics.take().map(|l| tokio::spawn(crate::metrics::serve(ctx.clone(), l)));
        let health =
            crate::health::spawn(ctx.topology.clone(), ctx.config.health.clone(), ctx.config.limits.connect_timeout);
        ctx.replication.start();
        let limit = Arc::new(Semaphore::new(ctx.config.limits.max_client_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        tracing::info!(addr = %self.local_addr(), "chorus is accepting PostgreSQL connections");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let ctx = ctx.clone();
                    let tls = self.tls.clone();
                    let limit = limit.clone();
                    let stop = stop_rx.clone();
                    tasks.spawn(async move { handle_connection(ctx, stream, peer, tls, limit, stop).await });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tracing::info!("shutting down");
        drop(self.listener);
        let _ = stop_tx.send(true);
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                r = tasks.join_next() => if r.is_none() { break },
            }
        }
        tasks.abort_all();
        for h in health {
            h.abort();
        }
        if let Some(m) = metrics {
            m.abort();
        }
        ctx.replication.shutdown();
        Ok(())
    }
}

fn load_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| ServerError::Tls(format!("{}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn handle_connection(
    ctx: Arc<Context>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    limit: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let timeout = ctx.config.limits.startup_timeout;
    let (client, startup) = match tokio::time::timeout(timeout, negotiate(stream, tls.as_ref())).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "startup failed");
            // The stream is gone with the error; a reject was for a protocol
            // violation the client cannot recover from anyway.
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "startup timed out");
            return;
        }
    };
    let (user, database, params) = match startup {
        Startup::Cancel { pid, secret } => {
            ctx.cancels.cancel(pid, secret).await;
            return;
        }
        Startup::Session { user, database, params } => (user, database, params),
    };
    let info = StartupInfo { user, database, params };
    let max = ctx.config.limits.max_message_bytes;
    match client {
        ClientStream::Plain(s) => {
            let (r, w) = s.into_split();
            serve_client(ctx, MessageReader::new(r, max), w, info, limit, stop, peer).await
        }
        ClientStream::Tls(s) => {
            let (r, w) = tokio::io::split(*s);
            serve_client(ctx, MessageReader::new(r, max), w, info, limit, stop, peer).await
        }
    }
}

async fn reject<W: AsyncWrite + Unpin>(w: &mut W, e: &ClientError) {
    let _ = w.write_all(&e.to_message().frame).await;
    let _ = w.shutdown().await;
}

async fn serve_client<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    ctx: Arc<Context>,
    mut reader: MessageReader<R>,
    mut writer: W,
    info: StartupInfo,
    limit: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    peer: SocketAddr,
) {
    let Ok(_permit) = limit.try_acquire_owned() else {
        let e = ClientError::fatal(sqlstate::TOO_MANY_CONNECTIONS, "sorry, too many clients already")
            .with_hint("Raise limits.max_client_connections or use fewer connections.");
        reject(&mut writer, &e).await;
        return;
    };
    let user = ctx.users.get(&info.user);
    let timeout = ctx.config.limits.startup_timeout;
    match tokio::time::timeout(timeout, authenticate(&mut reader, &mut writer, user, &info.user)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::info!(%peer, user = %info.user, error = %e, "authentication failed");
            if let Some(ce) = e.client_error() {
                reject(&mut writer, &ce).await;
            }
            return;
        }
        Err(_) => {
            let e = ClientError::fatal(sqlstate::PROTOCOL_VIOLATION, "authentication timed out");
            reject(&mut writer, &e).await;
            return;
        }
    }
    if writer.write_all(&build::auth(0, &[]).frame).await.is_err() {
        return;
    }
    tracing::debug!(%peer, user = %info.user, db = %info.database, "client authenticated");
    match Session::start(ctx, reader, writer, info, stop).await {
        Ok(session) => {
            crate::metrics::session_started();
            session.run().await;
            crate::metrics::session_ended();
        }
        Err((mut w, e)) => {
            if let crate::session::SessionError::Fatal(ce) = &e {
                tracing::info!(%peer, error = %ce, "session could not start");
                reject(&mut w, ce).await;
            }
        }
    }
}
