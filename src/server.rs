//! Listeners and the accept loop: connection limits, TLS, startup timeouts,
//! graceful shutdown. Each accepted connection becomes one task.
//!
//! Each dialect with nodes in the configuration is a cluster of its own with
//! its own listener: PostgreSQL clients here, MySQL clients in [`mysql`].

mod mysql;

use crate::config::{Config, Dialect};
use crate::context::{Context, MysqlContext};
use crate::frontend::auth::authenticate;
use crate::frontend::startup::{ClientStream, Startup, negotiate};
use crate::protocol::{ClientError, MessageReader, build, sqlstate};
use crate::session::{Session, StartupInfo};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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
    /// The PostgreSQL cluster and its listener, when PostgreSQL nodes are configured.
    pg: Option<(Arc<Context>, TcpListener)>,
    /// The MySQL cluster and its listener, when MySQL nodes are configured.
    mysql: Option<(Arc<MysqlContext>, TcpListener)>,
    tls: Option<TlsAcceptor>,
    /// The Prometheus endpoint's listener, when configured.
    metrics: Option<TcpListener>,
    max_client_connections: usize,
}

async fn bind_addr(addr: Option<SocketAddr>, key: &str) -> Result<TcpListener, ServerError> {
    let addr = addr.ok_or_else(|| ServerError::Config(format!("{key} is not set")))?;
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })
}

impl Server {
    /// Bind the configured listeners (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let tls = match &config.tls {
            Some(t) => Some(load_tls(&t.cert, &t.key)?),
            None => None,
        };
        let dialects = config.dialects();
        let pg = match dialects.contains(&Dialect::Postgres) {
            true => {
                let listener = bind_addr(config.listen.postgres, "listen.postgres").await?;
                let ctx = Context::new(config.for_dialect(Dialect::Postgres)).map_err(ServerError::Config)?;
                Some((Arc::new(ctx), listener))
            }
            false => None,
        };
        let mysql = match dialects.contains(&Dialect::Mysql) {
            true => {
                let listener = bind_addr(config.listen.mysql, "listen.mysql").await?;
                let ctx = MysqlContext::new(config.for_dialect(Dialect::Mysql)).map_err(ServerError::Config)?;
                ctx.probe_leader().await;
                if let Some(r) = &ctx.replication {
                    r.prepare().await.map_err(|e| ServerError::Config(format!("MySQL replication: {e}")))?;
                }
                Some((Arc::new(ctx), listener))
            }
            false => None,
        };
        let metrics = match config.metrics.listen {
            Some(addr) => Some(crate::metrics::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?),
            None => None,
        };
        Ok(Server { pg, mysql, tls, metrics, max_client_connections: config.limits.max_client_connections })
    }

    /// The state every PostgreSQL session shares (topology, replication
    /// progress...), when PostgreSQL nodes are configured.
    pub fn context(&self) -> Option<Arc<Context>> {
        self.pg.as_ref().map(|(c, _)| c.clone())
    }

    /// The state every MySQL session shares, when MySQL nodes are configured.
    pub fn mysql_context(&self) -> Option<Arc<crate::context::MysqlContext>> {
        self.mysql.as_ref().map(|(c, _)| c.clone())
    }

    /// The metrics endpoint's address, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The PostgreSQL listener's address, when PostgreSQL nodes are configured.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.pg.as_ref().map(|(_, l)| l.local_addr().expect("bound listener has an address"))
    }

    /// The MySQL listener's address, when MySQL nodes are configured.
    pub fn mysql_addr(&self) -> Option<SocketAddr> {
        self.mysql.as_ref().map(|(_, l)| l.local_addr().expect("bound listener has an address"))
    }

    /// Serve until `shutdown` completes, then stop accepting, ask sessions to
    /// end at their next idle point, and wait briefly for them.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let pg_ctx = self.pg.as_ref().map(|(c, _)| c.clone());
        let mut background = Vec::new();
        if let Some(l) = self.metrics.take() {
            let mut sources = Vec::new();
            if let Some(ctx) = &pg_ctx {
                let replication = Some(ctx.replication.state().clone());
                sources.push(crate::metrics::Source { topology: ctx.topology.clone(), replication });
            }
            if let Some((ctx, _)) = &self.mysql {
                let replication = ctx.replication.as_ref().map(|r| r.state());
                sources.push(crate::metrics::Source { topology: ctx.topology.clone(), replication });
            }
            background.push(tokio::spawn(crate::metrics::serve(sources, l)));
        }
        if let Some(ctx) = &pg_ctx {
            background.extend(crate::health::spawn(
                ctx.topology.clone(),
                ctx.config.health.clone(),
                ctx.config.limits.connect_timeout,
            ));
            ctx.replication.start();
        }
        if let Some((ctx, _)) = &self.mysql {
            background.extend(crate::health::mysql::spawn(
                ctx.topology.clone(),
                ctx.config.health.clone(),
                ctx.config.limits.connect_timeout,
            ));
            if let Some(r) = &ctx.replication {
                r.start();
            }
        }
        // One limit for the clients of both listeners.
        let limit = Arc::new(Semaphore::new(self.max_client_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(addr) = self.local_addr() {
            tracing::info!(%addr, "chorus is accepting PostgreSQL connections");
        }
        if let Some(addr) = self.mysql_addr() {
            tracing::info!(%addr, "chorus is accepting MySQL connections");
        }
        let pg = self.pg.take();
        let mysql = self.mysql.take();
        let mysql_ctx = mysql.as_ref().map(|(c, _)| c.clone());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = accept(pg.as_ref().map(|(_, l)| l)) => {
                    let Some((stream, peer)) = accepted else { continue };
                    let ctx = pg_ctx.clone().expect("a PostgreSQL listener has its context");
                    let tls = self.tls.clone();
                    let limit = limit.clone();
                    let stop = stop_rx.clone();
                    tasks.spawn(async move { handle_connection(ctx, stream, peer, tls, limit, stop).await });
                }
                accepted = accept(mysql.as_ref().map(|(_, l)| l)) => {
                    let Some((stream, peer)) = accepted else { continue };
                    let ctx = mysql.as_ref().expect("accepted on it").0.clone();
                    let tls = self.tls.clone();
                    let limit = limit.clone();
                    let stop = stop_rx.clone();
                    tasks.spawn(async move { mysql::handle_connection(ctx, stream, peer, tls, limit, stop).await });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tracing::info!("shutting down");
        drop(pg);
        drop(mysql);
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
        for h in background {
            h.abort();
        }
        if let Some(ctx) = pg_ctx {
            ctx.replication.shutdown();
        }
        if let Some(r) = mysql_ctx.and_then(|c| c.replication.clone()) {
            r.stop(std::time::Duration::from_secs(2)).await;
        }
        Ok(())
    }
}

/// The next connection on `listener`; never, without one. A failed accept
/// (out of descriptors...) pauses briefly and yields None.
async fn accept(listener: Option<&TcpListener>) -> Option<(TcpStream, SocketAddr)> {
    let Some(l) = listener else { return std::future::pending().await };
    match l.accept().await {
        Ok(x) => Some(x),
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            None
        }
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
