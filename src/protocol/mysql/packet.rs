//! MySQL packet framing: a 3-byte little-endian length, a 1-byte sequence id,
//! then the payload. A payload of 16 MiB - 1 bytes or more is split into
//! several wire packets, each but the last exactly 0xFFFFFF bytes long.
//!
//! chorus relays most server answers packet by packet without joining them
//! ([`PacketReader::read_raw`]), and joins a client's command into one payload
//! ([`PacketReader::read_command`]) because it must look at all of it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload one wire packet carries.
pub const MAX_CHUNK: usize = 0xFF_FFFF;

/// One wire packet as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub seq: u8,
    pub payload: Bytes,
}

impl Packet {
    /// More wire packets of the same payload follow this one.
    pub fn continues(&self) -> bool {
        self.payload.len() == MAX_CHUNK
    }

    pub fn first_byte(&self) -> Option<u8> {
        self.payload.first().copied()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("packet of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

/// Reads packets from one side of a connection, buffering reads.
pub struct PacketReader<R> {
    inner: R,
    buf: BytesMut,
    /// Largest joined payload accepted (a client's `max_allowed_packet`).
    limit: usize,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    pub fn new(inner: R, limit: usize) -> Self {
        PacketReader { inner, buf: BytesMut::with_capacity(16 * 1024), limit }
    }

    pub fn into_inner(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    /// Bytes already read from the stream but not consumed yet.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    async fn fill(&mut self, want: usize) -> Result<(), PacketError> {
        while self.buf.len() < want {
            self.buf.reserve(want - self.buf.len());
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(PacketError::Closed);
            }
        }
        Ok(())
    }

    /// One wire packet, as it is (a part of a split payload stays a part).
    pub async fn read_raw(&mut self) -> Result<Packet, PacketError> {
        self.fill(4).await?;
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], 0]) as usize;
        let seq = self.buf[3];
        if len > self.limit {
            // Refused before it is buffered.
            return Err(PacketError::TooLarge { size: len, limit: self.limit });
        }
        self.fill(4 + len).await?;
        self.buf.advance(4);
        Ok(Packet { seq, payload: self.buf.split_to(len).freeze() })
    }

    /// One whole payload, joining split packets; `seq` is the last part's id.
    pub async fn read_command(&mut self) -> Result<Packet, PacketError> {
        let first = self.read_raw().await?;
        if !first.continues() {
            return Ok(first);
        }
        let mut joined = BytesMut::from(&first.payload[..]);
        let mut seq;
        loop {
            let part = self.read_raw().await?;
            seq = part.seq;
            if joined.len() + part.payload.len() > self.limit {
                return Err(PacketError::TooLarge { size: joined.len() + part.payload.len(), limit: self.limit });
            }
            joined.extend_from_slice(&part.payload);
            if !part.continues() {
                break;
            }
        }
        Ok(Packet { seq, payload: joined.freeze() })
    }
}

/// Append `payload` framed as packets starting at sequence id `seq`; returns
/// the id the next packet takes.
pub fn frame(out: &mut BytesMut, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_CHUNK);
        out.reserve(4 + n);
        out.put_uint_le(n as u64, 3);
        out.put_u8(seq);
        out.put_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        // A payload that is an exact multiple of MAX_CHUNK ends with an empty packet.
        if n < MAX_CHUNK {
            return seq;
        }
    }
}

/// Append one wire packet as it is (relaying: the part of a split payload
/// stays a part), with a new sequence id.
pub fn frame_raw(out: &mut BytesMut, seq: u8, payload: &[u8]) {
    out.reserve(4 + payload.len());
    out.put_uint_le(payload.len() as u64, 3);
    out.put_u8(seq);
    out.put_slice(payload);
}

/// Write a whole payload as packets and flush.
pub async fn write_payload<W: AsyncWrite + Unpin>(w: &mut W, seq: u8, payload: &[u8]) -> std::io::Result<u8> {
    let mut out = BytesMut::with_capacity(payload.len() + 4);
    let next = frame(&mut out, seq, payload);
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn split_payloads_are_joined_and_small_ones_pass() {
        let big = vec![7u8; MAX_CHUNK * 2 + 10];
        let mut wire = BytesMut::new();
        assert_eq!(frame(&mut wire, 0, &big), 3);
        assert_eq!(frame(&mut wire, 5, b"\x0eping"), 6);
        let exact = vec![1u8; MAX_CHUNK];
        assert_eq!(frame(&mut wire, 0, &exact), 2, "an exact multiple ends with an empty packet");
        let mut r = PacketReader::new(&wire[..], 64 << 20);
        let p = r.read_command().await.unwrap();
        assert_eq!((p.seq, p.payload.len()), (2, big.len()));
        let p = r.read_command().await.unwrap();
        assert_eq!((p.seq, &p.payload[..]), (5, &b"\x0eping"[..]));
        let p = r.read_command().await.unwrap();
        assert_eq!((p.seq, p.payload.len()), (1, MAX_CHUNK));
        assert!(matches!(r.read_raw().await, Err(PacketError::Closed)));
    }

    #[tokio::test]
    async fn a_joined_payload_over_the_limit_is_refused() {
        let big = vec![7u8; MAX_CHUNK + 10];
        let mut wire = BytesMut::new();
        frame(&mut wire, 0, &big);
        let mut r = PacketReader::new(&wire[..], MAX_CHUNK);
        assert!(matches!(r.read_command().await, Err(PacketError::TooLarge { .. })));
        // One packet over a limit below the chunk size: refused from its header.
        let mut r = PacketReader::new(&wire[..4], 1024);
        assert!(
            matches!(r.read_command().await, Err(PacketError::TooLarge { size, limit: 1024 }) if size == MAX_CHUNK)
        );
    }
}
