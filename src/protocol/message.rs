//! PostgreSQL protocol framing: read whole messages as bytes, forward them untouched.
//!
//! chorus decodes only the few messages it must (Query, Parse, Bind, Close,
//! ReadyForQuery, ErrorResponse...); everything else passes through as the exact
//! bytes the peer sent, which keeps formats, tags and notices intact.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// One tagged protocol message: `tag`, then the whole frame (tag + length + body).
#[derive(Debug, Clone)]
pub struct Message {
    pub tag: u8,
    /// The complete frame as it travels on the wire.
    pub frame: Bytes,
}

impl Message {
    /// The body after the tag and length.
    pub fn body(&self) -> &[u8] {
        &self.frame[5..]
    }

    pub fn new(tag: u8, body: &[u8]) -> Message {
        let mut buf = BytesMut::with_capacity(body.len() + 5);
        buf.put_u8(tag);
        buf.put_i32(body.len() as i32 + 4);
        buf.put_slice(body);
        Message { tag, frame: buf.freeze() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
}

/// Buffered reader of framed messages.
pub struct MessageReader<R> {
    inner: R,
    buf: BytesMut,
    max_len: usize,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    pub fn new(inner: R, max_len: usize) -> Self {
        MessageReader { inner, buf: BytesMut::with_capacity(16 * 1024), max_len }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    pub fn from_parts(inner: R, buf: BytesMut, max_len: usize) -> Self {
        MessageReader { inner, buf, max_len }
    }

    /// True when a complete message is already buffered (no read needed).
    pub fn has_buffered_message(&self) -> bool {
        if self.buf.len() < 5 {
            return false;
        }
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        len >= 4 && self.buf.len() > len as usize
    }

    async fn fill(&mut self, need: usize) -> Result<(), FrameError> {
        while self.buf.len() < need {
            if self.buf.capacity() - self.buf.len() < 8192 {
                self.buf.reserve((need - self.buf.len()).max(16 * 1024));
            }
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(FrameError::Closed);
            }
        }
        Ok(())
    }

    /// The next message if it is already complete in the buffer: no I/O, no
    /// await. Lets the relay drain a burst of replies without going back
    /// through `select!` for each one.
    pub fn next_buffered(&mut self) -> Option<Result<Message, FrameError>> {
        if self.buf.len() < 5 {
            return None;
        }
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len < 4 {
            return Some(Err(FrameError::BadLength(len as i64)));
        }
        let total = len as usize + 1;
        if total > self.max_len {
            return Some(Err(FrameError::TooLarge(total, self.max_len)));
        }
        if self.buf.len() < total {
            return None;
        }
        let tag = self.buf[0];
        Some(Ok(Message { tag, frame: self.buf.split_to(total).freeze() }))
    }

    /// Read one tagged message. Cancel-safe: a partially read message stays buffered.
    pub async fn read(&mut self) -> Result<Message, FrameError> {
        loop {
            if let Some(r) = self.next_buffered() {
                return r;
            }
            // Need at least the header, then the whole frame.
            let need = if self.buf.len() < 5 {
                5
            } else {
                i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize + 1
            };
            self.fill(need).await?;
        }
    }

    /// Read the untagged startup-phase packet (length + body), returning the body.
    pub async fn read_startup(&mut self, max: usize) -> Result<Bytes, FrameError> {
        self.fill(4).await?;
        let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if len < 8 {
            return Err(FrameError::BadLength(len as i64));
        }
        if len as usize > max {
            return Err(FrameError::TooLarge(len as usize, max));
        }
        self.fill(len as usize).await?;
        let mut frame = self.buf.split_to(len as usize);
        frame.advance(4);
        Ok(frame.freeze())
    }
}

/// Cursor over a message body for the few fields chorus decodes.
pub struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Fields { data }
    }
    pub fn cstr(&mut self) -> Option<&'a str> {
        let end = self.data.iter().position(|b| *b == 0)?;
        let s = std::str::from_utf8(&self.data[..end]).ok()?;
        self.data = &self.data[end + 1..];
        Some(s)
    }
    pub fn i16(&mut self) -> Option<i16> {
        if self.data.len() < 2 {
            return None;
        }
        let v = i16::from_be_bytes([self.data[0], self.data[1]]);
        self.data = &self.data[2..];
        Some(v)
    }
    pub fn i32(&mut self) -> Option<i32> {
        if self.data.len() < 4 {
            return None;
        }
        let v = i32::from_be_bytes([self.data[0], self.data[1], self.data[2], self.data[3]]);
        self.data = &self.data[4..];
        Some(v)
    }
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (a, b) = self.data.split_at(n);
        self.data = b;
        Some(a)
    }
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
}

/// Builders for the messages chorus itself writes.
pub mod build {
    use super::Message;
    use bytes::{BufMut, BytesMut};

    fn with_body(tag: u8, f: impl FnOnce(&mut BytesMut)) -> Message {
        let mut body = BytesMut::new();
        f(&mut body);
        Message::new(tag, &body)
    }

    pub fn query(sql: &str) -> Message {
        query_bytes(sql.as_bytes())
    }
    /// A simple Query whose text is bytes in the connection's client encoding.
    pub fn query_bytes(sql: &[u8]) -> Message {
        with_body(b'Q', |b| {
            b.put_slice(sql);
            b.put_u8(0);
        })
    }
    /// Parse `sql` (bytes in the client encoding) as statement `name` with the
    /// given parameter type OIDs (0: let the server infer it).
    pub fn parse(name: &str, sql: &[u8], param_types: &[u32]) -> Message {
        with_body(b'P', |b| {
            b.put_slice(name.as_bytes());
            b.put_u8(0);
            b.put_slice(sql);
            b.put_u8(0);
            b.put_i16(param_types.len() as i16);
            for t in param_types {
                b.put_u32(*t);
            }
        })
    }
    /// Bind `statement` to `portal`; `tail` is the rest of the Bind body as a
    /// client sent it: parameter format codes, parameter values, result format codes.
    pub fn bind_raw(portal: &str, statement: &str, tail: &[u8]) -> Message {
        with_body(b'B', |b| {
            b.put_slice(portal.as_bytes());
            b.put_u8(0);
            b.put_slice(statement.as_bytes());
            b.put_u8(0);
            b.put_slice(tail);
        })
    }
    /// The tail of a Bind (see [`bind_raw`]): one format code per parameter
    /// (0 text, 1 binary), the values (`None` is NULL), and result format codes.
    pub fn bind_tail(formats: &[i16], values: &[Option<&[u8]>], result_formats: &[i16]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(formats.len() as i16);
        for f in formats {
            b.put_i16(*f);
        }
        put_values(&mut b, values);
        b.put_i16(result_formats.len() as i16);
        for f in result_formats {
            b.put_i16(*f);
        }
        b.to_vec()
    }
    /// Execute `portal`, all rows (`max_rows` 0) or at most `max_rows`.
    pub fn execute(portal: &str, max_rows: i32) -> Message {
        with_body(b'E', |b| {
            b.put_slice(portal.as_bytes());
            b.put_u8(0);
            b.put_i32(max_rows);
        })
    }
    pub fn copy_data(data: &[u8]) -> Message {
        Message::new(b'd', data)
    }
    pub fn copy_done() -> Message {
        Message::new(b'c', &[])
    }
    pub fn sync() -> Message {
        Message::new(b'S', &[])
    }
    pub fn terminate() -> Message {
        Message::new(b'X', &[])
    }
    pub fn close_statement(name: &str) -> Message {
        with_body(b'C', |b| {
            b.put_u8(b'S');
            b.put_slice(name.as_bytes());
            b.put_u8(0);
        })
    }
    /// RowDescription of text columns (type text, text format).
    pub fn row_description_text(columns: &[&str]) -> Message {
        with_body(b'T', |b| {
            b.put_i16(columns.len() as i16);
            for c in columns {
                b.put_slice(c.as_bytes());
                b.put_u8(0);
                b.put_u32(0); // table OID
                b.put_i16(0); // column number
                b.put_u32(25); // text
                b.put_i16(-1);
                b.put_i32(-1);
                b.put_i16(0);
            }
        })
    }
    pub fn data_row(values: &[Option<&[u8]>]) -> Message {
        with_body(b'D', |b| put_values(b, values))
    }
    /// A count, then each value as its length and bytes (-1: NULL), as in
    /// Bind and DataRow.
    fn put_values(b: &mut BytesMut, values: &[Option<&[u8]>]) {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    }
    /// ParameterDescription with no parameters.
    pub fn no_parameters() -> Message {
        Message::new(b't', &[0, 0])
    }
    pub fn ready_for_query(status: u8) -> Message {
        Message::new(b'Z', &[status])
    }
    pub fn command_complete(tag: &str) -> Message {
        with_body(b'C', |b| {
            b.put_slice(tag.as_bytes());
            b.put_u8(0);
        })
    }
    pub fn parameter_status(name: &str, value: &str) -> Message {
        with_body(b'S', |b| {
            b.put_slice(name.as_bytes());
            b.put_u8(0);
            b.put_slice(value.as_bytes());
            b.put_u8(0);
        })
    }
    pub fn backend_key_data(pid: i32, secret: i32) -> Message {
        with_body(b'K', |b| {
            b.put_i32(pid);
            b.put_i32(secret);
        })
    }
    pub fn auth(code: i32, payload: &[u8]) -> Message {
        with_body(b'R', |b| {
            b.put_i32(code);
            b.put_slice(payload);
        })
    }
}

impl MessageReader<tokio::net::tcp::OwnedReadHalf> {
    /// Without blocking, tell whether the peer closed the connection or sent
    /// something unsolicited that ends it (an ErrorResponse, typically FATAL on
    /// server shutdown). Used before reusing an idle server connection.
    pub fn is_closed_nonblocking(&mut self) -> bool {
        loop {
            match self.inner.try_read_buf(&mut self.buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return true,
            }
        }
        self.buf.first() == Some(&b'E')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_protocol_builders_frame_their_fields() {
        let p = build::parse("", b"SELECT $1", &[23, 0]);
        assert_eq!(&p.frame[..], b"P\0\0\0\x19\0SELECT $1\0\0\x02\0\0\0\x17\0\0\0\0");
        let tail = build::bind_tail(&[1], &[Some(&[0, 0, 0, 7]), None], &[]);
        assert_eq!(tail, b"\0\x01\0\x01\0\x02\0\0\0\x04\0\0\0\x07\xff\xff\xff\xff\0\0");
        let b = build::bind_raw("", "s1", &tail);
        assert_eq!(b.tag, b'B');
        assert_eq!(&b.body()[..4], b"\0s1\0");
        assert_eq!(&b.body()[4..], &tail[..]);
        assert_eq!(&build::execute("", 0).frame[..], b"E\0\0\0\x09\0\0\0\0\0");
        assert_eq!(&build::copy_data(b"1\n").frame[..], b"d\0\0\0\x061\n");
        assert_eq!(&build::copy_done().frame[..], b"c\0\0\0\x04");
        assert_eq!(&build::query_bytes(b"\xe9").frame[..], b"Q\0\0\0\x06\xe9\0");
    }
}
