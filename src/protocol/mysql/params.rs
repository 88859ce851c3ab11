//! The parameters of a COM_STMT_EXECUTE, as SQL literals: what a logged
//! write needs to replay on another server with the text protocol.
//!
//! Strings become `_charset X'..'` (the client's character set, so they
//! compare and convert as the parameter did; no escaping rules apply), bytes
//! that are not text in that character set plain `X'..'`, numbers their
//! canonical text, and temporal values typed literals (`TIMESTAMP'..'`,
//! `DATE'..'`, `TIME'..'`) with the server's own reading of the parameter:
//! a temporal value, not a string (it compares, converts and prints as one),
//! with fractional digits only when it has microseconds (see [`temporal`]).

use super::wire::{Malformed, Reader};
use std::collections::HashMap;

use super::consts::column_type as ty;

/// A parameter's type as the client bound it: (type, unsigned).
pub type ParamType = (u8, bool);

/// The parameter types an execute packet binds; None when it binds none
/// (the types of an earlier execute apply).
pub fn bound_types(payload: &[u8], params: u16) -> Result<Option<Vec<ParamType>>, Malformed> {
    let n = params as usize;
    if n == 0 {
        return Ok(Some(Vec::new()));
    }
    let mut r = Reader::new(payload);
    r.take(1 + 4 + 1 + 4, "execute header")?;
    r.take(n.div_ceil(8), "null bitmap")?;
    if r.u8("new params bound flag")? != 1 {
        return Ok(None);
    }
    let mut bound = Vec::with_capacity(n);
    for _ in 0..n {
        let t = r.u8("parameter type")?;
        let flags = r.u8("parameter flags")?;
        bound.push((t, flags & 0x80 != 0));
    }
    Ok(Some(bound))
}

/// An execute packet (`payload`, command byte first) for statement `id` on
/// another server, with `types` bound explicitly: that server never saw
/// the executes that bound them.
pub fn rebound(payload: &[u8], params: u16, id: u32, types: &[ParamType]) -> Result<Vec<u8>, Malformed> {
    let n = params as usize;
    let mut r = Reader::new(payload);
    let head = r.take(1 + 4 + 1 + 4, "execute header")?;
    let mut out = Vec::with_capacity(payload.len() + 2 * n + 1);
    out.push(head[0]);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&head[5..]);
    if n == 0 {
        out.extend_from_slice(r.rest());
        return Ok(out);
    }
    if types.len() != n {
        return Err(Malformed("parameter types and parameters differ in number"));
    }
    out.extend_from_slice(r.take(n.div_ceil(8), "null bitmap")?);
    if r.u8("new params bound flag")? == 1 {
        r.take(2 * n, "parameter types")?;
    }
    out.push(1);
    for &(t, unsigned) in types {
        out.push(t);
        out.push(if unsigned { 0x80 } else { 0 });
    }
    out.extend_from_slice(r.rest());
    Ok(out)
}

/// Read the parameter values of an execute packet. `types` holds the types
/// bound by an earlier execute (clients send them once) and is updated when
/// this one binds new ones; `long_data` holds what COM_STMT_SEND_LONG_DATA
/// sent per parameter (those values are not in the packet).
pub fn literals(
    payload: &[u8],
    params: u16,
    types: &mut Option<Vec<ParamType>>,
    long_data: &HashMap<u16, Vec<u8>>,
    charset: &str,
) -> Result<Vec<String>, Malformed> {
    let n = params as usize;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(payload);
    r.take(1 + 4 + 1 + 4, "execute header")?;
    let nulls = r.take(n.div_ceil(8), "null bitmap")?.to_vec();
    if r.u8("new params bound flag")? == 1 {
        let mut bound = Vec::with_capacity(n);
        for _ in 0..n {
            let t = r.u8("parameter type")?;
            let flags = r.u8("parameter flags")?;
            bound.push((t, flags & 0x80 != 0));
        }
        *types = Some(bound);
    }
    let Some(bound) = types.as_ref() else { return Err(Malformed("parameter types were never sent")) };
    let mut out = Vec::with_capacity(n);
    for (i, &(t, unsigned)) in bound.iter().enumerate().take(n) {
        if nulls[i / 8] & (1 << (i % 8)) != 0 {
            out.push("NULL".to_string());
            continue;
        }
        if let Some(data) = long_data.get(&(i as u16)) {
            out.push(bytes_literal(data, t, charset));
            continue;
        }
        out.push(value(&mut r, t, unsigned, charset)?);
    }
    Ok(out)
}

fn value(r: &mut Reader<'_>, t: u8, unsigned: bool, charset: &str) -> Result<String, Malformed> {
    let int = |b: &[u8], unsigned: bool| -> String {
        let mut v = [0u8; 8];
        v[..b.len()].copy_from_slice(b);
        if unsigned {
            u64::from_le_bytes(v).to_string()
        } else {
            // Sign-extend from the value's width.
            let bits = 64 - 8 * b.len() as u32;
            ((i64::from_le_bytes(v) << bits) >> bits).to_string()
        }
    };
    Ok(match t {
        ty::TINY => int(r.take(1, "tinyint")?, unsigned),
        ty::SHORT | ty::YEAR => int(r.take(2, "smallint")?, unsigned),
        ty::LONG | ty::INT24 => int(r.take(4, "int")?, unsigned),
        ty::LONGLONG => int(r.take(8, "bigint")?, unsigned),
        ty::FLOAT => {
            let b = r.take(4, "float")?;
            float(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))?
        }
        ty::DOUBLE => {
            let b = r.take(8, "double")?;
            float(f64::from_le_bytes(b.try_into().expect("8 bytes")))?
        }
        ty::NULL => "NULL".to_string(),
        ty::DATE | ty::DATETIME | ty::TIMESTAMP => {
            let len = r.u8("temporal length")? as usize;
            let b = r.take(len, "temporal value")?;
            let mut v = Temporal::default();
            if len >= 4 {
                (v.year, v.month, v.day) = (u16::from_le_bytes([b[0], b[1]]).into(), b[2].into(), b[3].into());
            }
            // A DATE parameter is the date alone, whatever else was sent.
            if len >= 7 && t != ty::DATE {
                (v.hour, v.minute, v.second) = (b[4].into(), b[5].into(), b[6].into());
            }
            if len >= 11 && t != ty::DATE {
                v.micros = u32::from_le_bytes([b[7], b[8], b[9], b[10]]);
            }
            temporal(v, if t == ty::DATE { Kind::Date } else { Kind::DateTime })
        }
        ty::TIME => {
            let len = r.u8("time length")? as usize;
            let b = r.take(len, "time value")?;
            let mut v = Temporal::default();
            if len >= 8 {
                v.negative = b[0] == 1;
                let days = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
                v.hour = u64::from(days) * 24 + u64::from(b[5]);
                (v.minute, v.second) = (b[6].into(), b[7].into());
            }
            if len >= 12 {
                v.micros = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
            }
            temporal(v, Kind::Time)
        }
        _ => {
            // DECIMAL, strings, blobs, enum, set, bit, json, geometry: length-encoded bytes.
            let data = r.lenenc_bytes("parameter value")?;
            bytes_literal(data, t, charset)
        }
    })
}

/// A temporal parameter's fields, as the client sent them.
#[derive(Debug, Default, Clone, Copy)]
struct Temporal {
    negative: bool,
    year: u32,
    month: u32,
    day: u32,
    /// For TIME, days * 24 + hours.
    hour: u64,
    minute: u32,
    second: u32,
    micros: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Date,
    DateTime,
    Time,
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        _ => 31,
    }
}

/// The literal that gives the value the server makes of a temporal
/// parameter (`Item_param::set_time` and `set_param_time`): a TIME over 838
/// hours is 838:59:59; a field out of range makes the value zero (with a
/// warning); fractional digits (6) only when the client sent microseconds,
/// so it prints as the parameter does (`CONCAT(?, '')`). A typed literal
/// keeps the value temporal in comparisons and conversions; a value a typed
/// literal refuses (zero dates, 30 February: the server keeps those in a
/// parameter) is written as a string, which the server reads the same way
/// where a temporal value is expected.
fn temporal(mut v: Temporal, kind: Kind) -> String {
    let fraction = v.micros > 0;
    if kind == Kind::Time && v.hour > 838 {
        (v.hour, v.minute, v.second) = (838, 59, 59);
    }
    let max_hour = if kind == Kind::Time { 838 } else { 23 };
    if v.year > 9999
        || v.month > 12
        || v.day > 31
        || v.hour > max_hour
        || v.minute > 59
        || v.second > 59
        || v.micros > 999_999
    {
        v = Temporal::default();
    }
    let time = {
        let sign = if v.negative { "-" } else { "" };
        let mut t = format!("{sign}{:02}:{:02}:{:02}", v.hour, v.minute, v.second);
        if fraction {
            t.push_str(&format!(".{:06}", v.micros));
        }
        t
    };
    let date = format!("{:04}-{:02}-{:02}", v.year, v.month, v.day);
    let valid_date =
        v.year >= 1 && (1..=12).contains(&v.month) && v.day >= 1 && v.day <= days_in_month(v.year, v.month);
    match kind {
        Kind::Time => format!("TIME'{time}'"),
        Kind::Date if valid_date => format!("DATE'{date}'"),
        Kind::Date => format!("'{date}'"),
        Kind::DateTime if valid_date => format!("TIMESTAMP'{date} {time}'"),
        Kind::DateTime => format!("'{date} {time}'"),
    }
}

fn float(v: f64) -> Result<String, Malformed> {
    if !v.is_finite() {
        return Err(Malformed("a floating-point parameter that is not a number"));
    }
    // Rust's shortest round-trip form, with an exponent MySQL reads as a double.
    Ok(format!("{v:e}"))
}

fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(3 + 2 * data.len());
    s.push_str("X'");
    for b in data {
        s.push_str(&format!("{b:02X}"));
    }
    s.push('\'');
    s
}

fn bytes_literal(data: &[u8], t: u8, charset: &str) -> String {
    let decimal = matches!(t, ty::DECIMAL | ty::NEWDECIMAL);
    if decimal && !data.is_empty() && data.iter().all(|b| b.is_ascii_digit() || b"+-.eE".contains(b)) {
        return String::from_utf8_lossy(data).into_owned();
    }
    let blob = matches!(t, ty::TINY_BLOB | ty::MEDIUM_BLOB | ty::LONG_BLOB | ty::BLOB);
    let utf8 = charset.starts_with("utf8");
    if data.is_empty() {
        return "''".to_string();
    }
    if blob || charset == "binary" || (utf8 && std::str::from_utf8(data).is_err()) {
        return hex(data);
    }
    let charset: String = charset.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    format!("_{charset} {}", hex(data))
}

/// `sql` with its `?` placeholders (at the byte offsets `at`) replaced by `values`.
pub fn inline(sql: &str, at: &[usize], values: &[String]) -> Option<String> {
    if at.len() != values.len() {
        return None;
    }
    let mut out = String::with_capacity(sql.len() + values.iter().map(String::len).sum::<usize>());
    let mut from = 0;
    for (&pos, v) in at.iter().zip(values) {
        out.push_str(&sql[from..pos]);
        out.push_str(v);
        from = pos + 1;
    }
    out.push_str(&sql[from..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn execute(types: &[(u8, u8)], nulls: u8, values: &[u8]) -> Vec<u8> {
        let mut p = bytes::BytesMut::new();
        p.put_u8(0x17);
        p.put_u32_le(1);
        p.put_u8(0);
        p.put_u32_le(1);
        p.put_u8(nulls);
        p.put_u8(1);
        for (t, f) in types {
            p.put_u8(*t);
            p.put_u8(*f);
        }
        p.put_slice(values);
        p.to_vec()
    }

    #[test]
    fn each_type_becomes_a_literal_that_means_the_same() {
        let mut v = Vec::new();
        v.put_i64_le(-5);
        v.put_u8(0xFF); // tiny unsigned 255
        v.put_f64_le(1.5);
        v.put_u8(3);
        v.put_slice(b"a'b");
        v.put_u8(11);
        v.put_u16_le(2026);
        v.put_slice(&[12, 2, 10, 30, 5]);
        v.put_u32_le(123);
        v.put_u8(5);
        v.put_slice(b"12.50");
        let types = [
            (ty::LONGLONG, 0),
            (ty::TINY, 0x80),
            (ty::DOUBLE, 0),
            (253, 0),
            (ty::DATETIME, 0),
            (ty::NULL, 0),
            (ty::NEWDECIMAL, 0),
        ];
        let payload = execute(&types, 0b0010_0000, &v);
        let mut cached = None;
        let out = literals(&payload, 7, &mut cached, &HashMap::new(), "utf8mb4").unwrap();
        assert_eq!(
            out,
            ["-5", "255", "1.5e0", "_utf8mb4 X'612762'", "TIMESTAMP'2026-12-02 10:30:05.000123'", "NULL", "12.50"]
        );
        assert_eq!(cached.as_ref().map(Vec::len), Some(7));

        // The next execute sends no types: the cached ones apply.
        let mut p = payload[..10].to_vec();
        p.push(0b0011_1111); // all null but the last (the 7th)
        p.push(0);
        p.put_u8(2);
        p.put_slice(b"-1");
        let out = literals(&p, 7, &mut cached, &HashMap::new(), "latin1").unwrap();
        assert_eq!(out.last().map(String::as_str), Some("-1"));
    }

    #[test]
    fn an_execute_rebound_for_another_server_carries_its_types() {
        let types = [(8u8, 0u8), (253, 0)];
        let mut v = 7i64.to_le_bytes().to_vec();
        v.extend_from_slice(&[2, b'h', b'i']);
        let first = execute(&types, 0, &v);
        let bound = bound_types(&first, 2).unwrap().unwrap();
        assert_eq!(bound, [(8, false), (253, false)]);
        // A later execute binds no types: the rebound packet has them.
        let mut later = first[..11].to_vec();
        later.push(0);
        later.extend_from_slice(&v);
        assert_eq!(bound_types(&later, 2).unwrap(), None);
        let again = rebound(&later, 2, 99, &bound).unwrap();
        assert_eq!(&again[1..5], &99u32.to_le_bytes());
        assert_eq!(&again[5..], &first[5..], "the same packet, another statement id");
        assert_eq!(rebound(&first, 2, 99, &bound).unwrap(), again);
    }

    #[test]
    fn temporal_parameters_are_typed_literals_with_the_servers_precision() {
        let one = |t: u8, value: &[u8]| {
            let mut v = vec![value.len() as u8];
            v.extend_from_slice(value);
            literals(&execute(&[(t, 0)], 0, &v), 1, &mut None, &HashMap::new(), "utf8mb4").unwrap().remove(0)
        };
        let mut dt = vec![0xE8, 0x07, 1, 2, 3, 4, 5];
        assert_eq!(one(ty::DATETIME, &dt), "TIMESTAMP'2024-01-02 03:04:05'", "no fraction without micros");
        assert_eq!(one(ty::DATETIME, &dt[..4]), "TIMESTAMP'2024-01-02 00:00:00'");
        assert_eq!(one(ty::DATE, &dt), "DATE'2024-01-02'");
        assert_eq!(one(ty::DATETIME, &[]), "'0000-00-00 00:00:00'", "zero: a string");
        dt.extend_from_slice(&120u32.to_le_bytes());
        assert_eq!(one(ty::TIMESTAMP, &dt), "TIMESTAMP'2024-01-02 03:04:05.000120'");
        dt.truncate(7);
        dt.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(one(ty::DATETIME, &dt), "TIMESTAMP'2024-01-02 03:04:05'", "zero micros sent: still none");
        assert_eq!(one(ty::DATETIME, &[0xE8, 0x07, 2, 30]), "'2024-02-30 00:00:00'", "kept by the server, not typed");
        assert_eq!(one(ty::DATETIME, &[0xE8, 0x07, 13, 1, 1, 0, 0]), "'0000-00-00 00:00:00'", "out of range: zero");
        assert_eq!(one(ty::DATE, &[0xD0, 0x07, 2, 29]), "DATE'2000-02-29'");
        assert_eq!(one(ty::DATE, &[0x6C, 0x07, 2, 29]), "'1900-02-29'");
        let mut tm = vec![0, 0, 0, 0, 0, 5, 6, 7];
        assert_eq!(one(ty::TIME, &tm), "TIME'05:06:07'");
        tm[0] = 1;
        tm[1] = 2;
        tm.extend_from_slice(&500_000u32.to_le_bytes());
        assert_eq!(one(ty::TIME, &tm), "TIME'-53:06:07.500000'");
        assert_eq!(one(ty::TIME, &[0, 40, 0, 0, 0, 0, 0, 0]), "TIME'838:59:59'", "clamped as the server does");
        assert_eq!(one(ty::TIME, &[]), "TIME'00:00:00'");
    }

    #[test]
    fn long_data_invalid_text_and_placeholders() {
        let payload = execute(&[(253, 0), (ty::BLOB, 0)], 0, &[2, 0xC3, 0x28]);
        let mut long = HashMap::new();
        long.insert(1u16, vec![0u8, 1, 2]);
        let out = literals(&payload, 2, &mut None, &long, "utf8mb4").unwrap();
        assert_eq!(out, ["X'C328'", "X'000102'"], "invalid UTF-8 stays bytes; long data is the value");
        assert!(literals(&payload[..12], 2, &mut None, &long, "utf8mb4").is_err());
        let sql = "UPDATE t SET a = ?, b = ? WHERE id = ?";
        let at: Vec<usize> = sql.match_indices('?').map(|(i, _)| i).collect();
        let vals = ["1".to_string(), "'x'".to_string(), "NULL".to_string()];
        assert_eq!(inline(sql, &at, &vals).unwrap(), "UPDATE t SET a = 1, b = 'x' WHERE id = NULL");
        assert_eq!(inline(sql, &at[..2], &vals), None);
    }
}
