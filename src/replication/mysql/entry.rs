//! One MySQL log entry: the statements of one committed writing transaction,
//! each with the context that makes its replay compute what the leader did.
//! Stored as JSON in `_chorus.log.entry`; pure encode/decode.

use serde::{Deserialize, Serialize};

/// A committed writing transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LogEntry {
    pub statements: Vec<LoggedStatement>,
    /// A DDL statement: MySQL commits implicitly around it, so the entry holds
    /// it alone and a follower runs it outside a transaction, then records it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ddl: bool,
}

/// One statement as the leader ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedStatement {
    /// The statement's text; when `raw` is set, its lossy UTF-8 reading
    /// (for messages only).
    pub sql: String,
    /// The statement's bytes when they are not UTF-8 (a string literal of
    /// raw bytes, as mariadb-dump writes BLOBs): what the follower runs.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_bytes")]
    pub raw: Option<Vec<u8>>,
    /// `LOAD DATA LOCAL INFILE`: the file's content as the client sent it,
    /// which the follower's replay sends when its server asks for the file.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_bytes")]
    pub infile: Option<Vec<u8>>,
    /// The session's default database (`USE`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
    pub ctx: StatementContext,
}

/// What the statement's meaning depends on beyond its text. Every field is
/// set on the follower's session before the statement runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatementContext {
    /// `SET TIMESTAMP`: NOW(), CURRENT_TIMESTAMP, UNIX_TIMESTAMP(), CURDATE()...
    /// as seconds since the epoch with microseconds ("1764670000.123456").
    pub timestamp: String,
    /// `SET @@rand_seed1, @@rand_seed2`: RAND()'s sequence.
    pub rand_seed1: u32,
    pub rand_seed2: u32,
    /// `SET INSERT_ID`: the first AUTO_INCREMENT value the statement generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insert_id: Option<u64>,
    /// `SET LAST_INSERT_ID`: what LAST_INSERT_ID() returned in the statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_insert_id: Option<u64>,
    /// Session variables, as `(name, value)`: sql_mode, time_zone, character
    /// set and collation, foreign_key_checks, unique_checks...
    #[serde(default)]
    pub session: Vec<(String, String)>,
    /// User variables the statement reads, as `(name, literal)`: their
    /// values on the leader right before it ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_vars: Vec<(String, String)>,
}

impl LoggedStatement {
    /// What the follower runs: the bytes the leader ran.
    pub fn bytes(&self) -> &[u8] {
        self.raw.as_deref().unwrap_or(self.sql.as_bytes())
    }
}

/// `Option<Vec<u8>>` as a hex string in the JSON entry.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else { return Ok(None) };
        if text.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd-length hex"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

impl LogEntry {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a log entry serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<LogEntry, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// `s` as a MySQL string literal that means the same under every sql_mode
/// (hex: no escaping rules apply), in utf8mb4.
pub fn literal(s: &str) -> String {
    if s.is_empty() {
        return "''".to_string();
    }
    let mut out = String::with_capacity(2 * s.len() + 24);
    out.push_str("CONVERT(X'");
    for b in s.as_bytes() {
        out.push_str(&format!("{b:02X}"));
    }
    out.push_str("' USING utf8mb4)");
    out
}

/// A session variable's value: numbers bare (boolean variables refuse '1'
/// as a string), the rest as [`literal`].
fn value(v: &str) -> String {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) { v.to_string() } else { literal(v) }
}

/// The `SET` statement that establishes `ctx` on a session.
pub fn context_sql(ctx: &StatementContext) -> String {
    let mut parts: Vec<String> = ctx.session.iter().map(|(k, v)| format!("@@session.{k} = {}", value(v))).collect();
    parts.push(format!("TIMESTAMP = {}", ctx.timestamp));
    parts.push(format!("@@rand_seed1 = {}", ctx.rand_seed1));
    parts.push(format!("@@rand_seed2 = {}", ctx.rand_seed2));
    if let Some(n) = ctx.insert_id {
        parts.push(format!("INSERT_ID = {n}"));
    }
    if let Some(n) = ctx.last_insert_id {
        parts.push(format!("LAST_INSERT_ID = {n}"));
    }
    parts.extend(ctx.user_vars.iter().map(|(name, value)| format!("{name} = {value}")));
    format!("SET {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_context_becomes_one_set() {
        let ctx = StatementContext {
            timestamp: "1764670000.123456".into(),
            rand_seed1: 7,
            rand_seed2: 9,
            insert_id: Some(41),
            last_insert_id: None,
            session: vec![("sql_mode".into(), "STRICT_TRANS_TABLES".into()), ("time_zone".into(), "+00:00".into())],
            user_vars: Vec::new(),
        };
        let e = LogEntry {
            statements: vec![LoggedStatement {
                sql: "INSERT INTO t (v) VALUES (NOW())".into(),
                raw: None,
                infile: None,
                db: Some("shop".into()),
                ctx: ctx.clone(),
            }],
            ddl: false,
        };
        assert_eq!(LogEntry::decode(&e.encode()).unwrap(), e);
        assert_eq!(e.statements[0].bytes(), b"INSERT INTO t (v) VALUES (NOW())");
        // Bytes that are not UTF-8 travel as hex, beside their lossy text.
        let raw = b"INSERT INTO t (b) VALUES ('\\0\xff\x10')".to_vec();
        let mut binary = e.clone();
        binary.statements[0].raw = Some(raw.clone());
        binary.statements[0].sql = String::from_utf8_lossy(&raw).into_owned();
        let encoded = binary.encode();
        assert!(std::str::from_utf8(&encoded).is_ok());
        let decoded = LogEntry::decode(&encoded).unwrap();
        assert_eq!((decoded.statements[0].bytes(), &decoded), (&raw[..], &binary));
        assert!(!String::from_utf8_lossy(&e.encode()).contains("raw"), "absent when the text is UTF-8");
        assert_eq!(
            context_sql(&ctx),
            "SET @@session.sql_mode = CONVERT(X'5354524943545F5452414E535F5441424C4553' USING utf8mb4), \
             @@session.time_zone = CONVERT(X'2B30303A3030' USING utf8mb4), TIMESTAMP = 1764670000.123456, \
             @@rand_seed1 = 7, @@rand_seed2 = 9, INSERT_ID = 41"
        );
        assert_eq!(literal(""), "''");
        let with_vars = StatementContext { user_vars: vec![("@n".into(), "7".into())], ..ctx };
        assert!(context_sql(&with_vars).ends_with("INSERT_ID = 41, @n = 7"));
    }
}
