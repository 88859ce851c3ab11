//! Relaying one command's answer from the server to the client, packet by
//! packet, with the server's sequence ids (chorus sends each command as the
//! client framed it, so the ids already match what the client expects).

use super::{MySession, MySessionError};
use crate::protocol::mysql::consts::cap;
use crate::protocol::mysql::packet::frame_raw;
use crate::protocol::mysql::{Expect, MyError, Packet, PacketError, Response, Step, code};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Client output buffered beyond this is written even if more is coming.
const CLIENT_FLUSH_BYTES: usize = 64 * 1024;

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> MySession<R, W> {
    /// Send the command to the leader and relay its whole answer.
    pub(super) async fn relay(&mut self, cmd: &Packet, expect: Expect) -> Result<Response, MySessionError> {
        let deprecate_eof = self.login.capabilities & cap::DEPRECATE_EOF != 0;
        let mut answer = Response::new(expect, deprecate_eof);
        if let Err(e) = self.leader.send(0, &cmd.payload).await {
            crate::metrics::error("connection");
            self.error(cmd.seq.wrapping_add(1), &self.ctx.unreachable(&e)).await?;
            return Err(e.into());
        }
        let mut relayed_any = false;
        loop {
            let p = match self.leader.read().await {
                Ok(p) => p,
                Err(e) => {
                    crate::metrics::error("connection");
                    if !relayed_any {
                        self.error(cmd.seq.wrapping_add(1), &self.ctx.unreachable(&e)).await?;
                    }
                    return Err(e.into());
                }
            };
            relayed_any = true;
            frame_raw(&mut self.out, p.seq, &p.payload);
            let step = answer.feed(&p).map_err(|e| {
                MySessionError::Backend(crate::backend::mysql::MyBackendError::Protocol {
                    node: self.leader.name.clone(),
                    what: e.to_string(),
                })
            })?;
            match step {
                Step::More => {
                    if self.out.len() >= CLIENT_FLUSH_BYTES || !self.leader.has_buffered() {
                        self.flush().await?;
                    }
                }
                Step::LocalInfile => {
                    self.flush().await?;
                    self.send_infile(None).await?;
                    answer.infile_sent();
                }
                Step::Done => {
                    self.flush().await?;
                    break;
                }
            }
        }
        if let Some(s) = answer.status {
            self.status = s;
        }
        self.after_answer(&answer);
        Ok(answer)
    }

    /// LOAD DATA LOCAL: the client's file packets go to the server up to
    /// the empty packet that ends them; with `collect`, their content is
    /// also appended to its buffer, up to just past its limit.
    pub(super) async fn send_infile(
        &mut self,
        mut collect: Option<(&mut Vec<u8>, usize)>,
    ) -> Result<(), MySessionError> {
        loop {
            let p = match self.reader.read_raw().await {
                Ok(p) => p,
                Err(PacketError::Closed) => return Err(MySessionError::ClientGone),
                Err(e) => return Err(MySessionError::Client(e)),
            };
            let mut framed = bytes::BytesMut::with_capacity(p.payload.len() + 4);
            frame_raw(&mut framed, p.seq, &p.payload);
            self.leader.send_framed(&framed).await?;
            if let Some((data, limit)) = collect.as_mut()
                && data.len() <= *limit
            {
                data.extend_from_slice(&p.payload);
            }
            if p.payload.is_empty() {
                return Ok(());
            }
        }
    }

    pub(super) async fn flush(&mut self) -> Result<(), MySessionError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        self.writer.write_all(&out).await.map_err(|e| MySessionError::Client(e.into()))?;
        self.writer.flush().await.map_err(|e| MySessionError::Client(e.into()))?;
        self.out = out;
        self.out.clear();
        Ok(())
    }
}

/// What a client is told when the leader cannot be reached.
pub fn unreachable_error(e: &crate::backend::mysql::MyBackendError) -> MyError {
    MyError::new(
        code::BACKEND_UNREACHABLE,
        format!("chorus cannot reach a server: {e}; retry when it is back (the connection may have to be reopened)"),
    )
}
