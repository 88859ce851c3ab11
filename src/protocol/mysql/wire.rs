//! The MySQL protocol's basic types: fixed-width little-endian integers,
//! length-encoded integers and strings, NUL-terminated strings.

use bytes::{BufMut, BytesMut};

/// A payload did not have the shape its header promised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed packet: {0}")]
pub struct Malformed(pub &'static str);

/// Reads a payload front to back.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if self.buf.len() < n {
            return Err(Malformed(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, Malformed> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, Malformed> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-encoded integer; `None` for the NULL marker 0xFB.
    pub fn lenenc(&mut self, what: &'static str) -> Result<Option<u64>, Malformed> {
        let first = self.u8(what)?;
        let width = match first {
            0xFB => return Ok(None),
            0xFC => 2,
            0xFD => 3,
            0xFE => 8,
            0xFF => return Err(Malformed(what)),
            n => return Ok(Some(u64::from(n))),
        };
        let b = self.take(width, what)?;
        let mut v = [0u8; 8];
        v[..width].copy_from_slice(b);
        Ok(Some(u64::from_le_bytes(v)))
    }

    pub fn lenenc_bytes(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let n = self.lenenc(what)?.ok_or(Malformed(what))?;
        self.take(usize::try_from(n).map_err(|_| Malformed(what))?, what)
    }

    /// Bytes up to (not including) a NUL, which is consumed; the rest of the
    /// payload when there is no NUL.
    pub fn nul_bytes(&mut self) -> &'a [u8] {
        match self.buf.iter().position(|&b| b == 0) {
            Some(i) => {
                let s = &self.buf[..i];
                self.buf = &self.buf[i + 1..];
                s
            }
            None => std::mem::take(&mut self.buf),
        }
    }
}

pub fn put_lenenc(out: &mut BytesMut, n: u64) {
    match n {
        0..=250 => out.put_u8(n as u8),
        251..=0xFFFF => {
            out.put_u8(0xFC);
            out.put_u16_le(n as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            out.put_u8(0xFD);
            out.put_uint_le(n, 3);
        }
        _ => {
            out.put_u8(0xFE);
            out.put_u64_le(n);
        }
    }
}

pub fn put_lenenc_bytes(out: &mut BytesMut, b: &[u8]) {
    put_lenenc(out, b.len() as u64);
    out.put_slice(b);
}

pub fn put_nul_str(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trips_at_every_width() {
        for n in [0u64, 250, 251, 0xFFFF, 0x1_0000, 0xFF_FFFF, 0x100_0000, u64::MAX] {
            let mut out = BytesMut::new();
            put_lenenc(&mut out, n);
            let mut r = Reader::new(&out);
            assert_eq!(r.lenenc("n").unwrap(), Some(n));
            assert!(r.is_empty());
        }
        assert_eq!(Reader::new(&[0xFB]).lenenc("n").unwrap(), None);
        assert!(Reader::new(&[0xFC, 1]).lenenc("n").is_err());
    }

    #[test]
    fn nul_strings_and_short_payloads() {
        let mut r = Reader::new(b"root\0db");
        assert_eq!(r.nul_bytes(), b"root");
        assert_eq!(r.nul_bytes(), b"db");
        assert!(r.is_empty());
        assert_eq!(Reader::new(&[1]).u32("x"), Err(Malformed("x")));
    }
}
