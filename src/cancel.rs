//! CancelRequest handling: clients get chorus-issued keys; a cancel is forwarded
//! to whichever server connection is running the session's query right now.

use crate::backend::CancelKey;
use bytes::{BufMut, BytesMut};
use dashmap::DashMap;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Where a session's cancel requests go, updated by the session.
pub type CancelSlot = Arc<Mutex<CancelTarget>>;

#[derive(Default)]
pub struct CancelTarget {
    /// The server connection the session's requests last went to.
    pub key: Option<CancelKey>,
    /// The session is placing a request that has not reached a server yet
    /// (routing, connecting, looking up the catalog): a cancel must wait for it.
    pub routing: bool,
    /// A cancel arrived while `routing`; the session sends it once the request
    /// is on its server.
    pub pending: bool,
}

#[derive(Default)]
pub struct CancelRegistry {
    sessions: DashMap<i32, (i32, CancelSlot)>,
}

impl CancelRegistry {
    /// Issue a fresh (pid, secret) for a session.
    pub fn register(&self) -> (i32, i32, CancelSlot) {
        let slot: CancelSlot = Arc::new(Mutex::new(CancelTarget::default()));
        loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            if pid == 0 {
                continue;
            }
            let secret = rand::random::<i32>();
            if let dashmap::Entry::Vacant(v) = self.sessions.entry(pid) {
                v.insert((secret, slot.clone()));
                return (pid, secret, slot);
            }
        }
    }

    pub fn unregister(&self, pid: i32) {
        self.sessions.remove(&pid);
    }

    /// Forward a cancel if the key matches; silently ignore otherwise (as PostgreSQL does).
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let target = match self.sessions.get(&pid) {
            Some(e) if e.0 == secret => {
                let mut t = e.1.lock();
                if t.routing {
                    t.pending = true;
                    tracing::debug!(pid, "cancel request held until the request reaches its server");
                    return;
                }
                t.key
            }
            _ => None,
        };
        let Some(key) = target else {
            tracing::debug!(pid, "cancel request for unknown session or idle session ignored");
            return;
        };
        if let Err(e) = send_cancel(key).await {
            tracing::warn!(error = %e, "could not forward cancel request");
        }
    }
}

/// Forward a cancel the session held while its request was being placed.
pub fn send_held_cancel(key: CancelKey) {
    tokio::spawn(async move {
        if let Err(e) = send_cancel(key).await {
            tracing::warn!(error = %e, "could not forward cancel request");
        }
    });
}

async fn send_cancel(key: CancelKey) -> std::io::Result<()> {
    let mut s = tokio::net::TcpStream::connect(key.addr).await?;
    let mut buf = BytesMut::with_capacity(16);
    buf.put_i32(16);
    buf.put_i32(80877102);
    buf.put_i32(key.pid);
    buf.put_i32(key.secret);
    s.write_all(&buf).await?;
    // The server closes the connection once it has processed the request.
    let mut sink = [0u8; 1];
    let _ = tokio::io::AsyncReadExt::read(&mut s, &mut sink).await;
    Ok(())
}
