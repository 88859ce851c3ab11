//! Cutting the last column off result messages: RowDescription and DataRow
//! with one column fewer, the cut DataRow value kept (without copying it).
//! chorus appends a column of its own to a statement's results when it
//! captures the rows a write produced (`session::capture`) and hands the
//! client the results it asked for.

use super::Message;
use bytes::{BufMut, Bytes, BytesMut};

/// A RowDescription without its last field; `None` if it is malformed or has
/// no field.
pub fn without_last_field(m: &Message) -> Option<Message> {
    let body = m.body();
    let n = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    if n < 1 {
        return None;
    }
    // Each field: name (C string), then 18 bytes (table oid, attnum, type
    // oid, typlen, typmod, format).
    let mut at = 2;
    for _ in 0..n - 1 {
        at += body.get(at..)?.iter().position(|&b| b == 0)? + 1 + 18;
    }
    body.get(..at)?;
    Some(rebuilt(b'T', n - 1, &body[2..at]))
}

/// A DataRow without its last column, and that column's value (`None` for
/// SQL NULL); `None` if the message is malformed or has no column.
pub fn split_last_column(m: &Message) -> Option<(Message, Option<Bytes>)> {
    let body = m.body();
    let n = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    if n < 1 {
        return None;
    }
    let mut at = 2;
    let mut last = (at, -1i32);
    for _ in 0..n {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        last = (at, len);
        at += 4 + usize::try_from(len.max(0)).ok()?;
    }
    if at != body.len() {
        return None;
    }
    let (start, len) = last;
    let value = (len >= 0).then(|| m.frame.slice(5 + start + 4..5 + at));
    Some((rebuilt(b'D', n - 1, &body[2..start]), value))
}

fn rebuilt(tag: u8, count: i16, rest: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(rest.len() + 7);
    b.put_u8(tag);
    b.put_i32(rest.len() as i32 + 6);
    b.put_i16(count);
    b.put_slice(rest);
    Message { tag, frame: b.freeze() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_row(values: &[Option<&[u8]>]) -> Message {
        crate::protocol::build::data_row(values)
    }

    fn row_description(names: &[&str]) -> Message {
        let mut b = BytesMut::new();
        b.put_i16(names.len() as i16);
        for n in names {
            b.put_slice(n.as_bytes());
            b.put_u8(0);
            b.put_slice(&[7u8; 18]);
        }
        Message::new(b'T', &b)
    }

    #[test]
    fn cuts_the_last_column() {
        let (rest, last) = split_last_column(&data_row(&[Some(b"1"), None, Some(b"(1,x)")])).unwrap();
        assert_eq!(rest.frame, data_row(&[Some(b"1"), None]).frame);
        assert_eq!(last.as_deref(), Some(&b"(1,x)"[..]));
        let (rest, last) = split_last_column(&data_row(&[None])).unwrap();
        assert_eq!((rest.frame, last), (data_row(&[]).frame, None));
        assert!(split_last_column(&data_row(&[])).is_none());
        let mut bad = data_row(&[Some(b"12")]).frame.to_vec();
        bad.truncate(bad.len() - 1);
        assert!(split_last_column(&Message { tag: b'D', frame: bad.into() }).is_none());
    }

    #[test]
    fn cuts_the_last_field() {
        let m = without_last_field(&row_description(&["id", "v", "row_text"])).unwrap();
        assert_eq!(m.frame, row_description(&["id", "v"]).frame);
        assert_eq!(without_last_field(&row_description(&["row_text"])).unwrap().frame, row_description(&[]).frame);
        assert!(without_last_field(&row_description(&[])).is_none());
    }
}
