//! chorus's own statements for MySQL clients, answered by chorus: the
//! session's position in the log, to carry read-your-writes to another
//! connection (`SHOW chorus.position` on one, `SET chorus.position = '<n>'`
//! on the other), and `SHOW chorus.status` (the nodes, their health and
//! lag as chorus sees them), as for PostgreSQL.

use super::{MySession, MySessionError};
use crate::protocol::mysql::MyError;
use crate::protocol::mysql::error::ok_payload;
use crate::protocol::mysql::packet::frame;
use crate::protocol::mysql::wire::{put_lenenc, put_lenenc_bytes};
use crate::replication::mysql::SERVER_LOG;
use crate::sql::mysql::lex::Token;
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// A statement of chorus's own.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Local {
    ShowPosition,
    ShowStatus,
    SetPosition(Result<i64, String>),
}

/// `SHOW chorus.position` / `SET chorus.position = '<n>'` (any case; the
/// value may be quoted), else None.
pub(super) fn parse(toks: &[Token<'_>]) -> Option<Local> {
    let word = |i: usize, w: &str| matches!(toks.get(i), Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
    if !(word(1, "chorus") && toks.get(2) == Some(&Token::Symbol('.'))) {
        return None;
    }
    let rest: Vec<&Token<'_>> = toks[4..].iter().filter(|t| !matches!(t, Token::End(_))).collect();
    if word(0, "SHOW") && word(3, "status") && rest.is_empty() {
        return Some(Local::ShowStatus);
    }
    if !word(3, "position") {
        return None;
    }
    if word(0, "SHOW") && rest.is_empty() {
        return Some(Local::ShowPosition);
    }
    if !word(0, "SET") {
        return None;
    }
    let value = match rest.as_slice() {
        [Token::Symbol('='), v] | [Token::Word(_), v] if !matches!(rest[0], Token::Word(w) if !w.eq_ignore_ascii_case("TO")) => {
            *v
        }
        _ => return Some(Local::SetPosition(Err("expected SET chorus.position = '<position>'".into()))),
    };
    let text = match value {
        Token::Number(n) => n.to_string(),
        Token::Str(s) if s.len() >= 2 => s[1..s.len() - 1].to_string(),
        _ => return Some(Local::SetPosition(Err("the position is a number, as SHOW chorus.position gives it".into()))),
    };
    Some(Local::SetPosition(
        text.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| format!("{text:?} is not a position")),
    ))
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> MySession<R, W> {
    pub(super) async fn local(&mut self, seq: u8, stmt: Local) -> Result<(), MySessionError> {
        match stmt {
            Local::SetPosition(Ok(n)) => {
                self.reads.position.ask(n);
                self.write(seq, &ok_payload(0, 0, self.status, 0)).await
            }
            Local::SetPosition(Err(why)) => {
                let e = MyError::new((1231, "42000"), format!("Variable 'chorus.position' can't be set: {why}"));
                self.error(seq, &e).await
            }
            Local::ShowPosition => {
                let value = self.reads.position.token().to_string();
                let out =
                    text_result(&["chorus.position"], &[vec![Some(value)]], self.status, self.deprecate_eof(), seq);
                self.write_all(&out).await
            }
            Local::ShowStatus => {
                let rows: Vec<Vec<Option<String>>> = match &self.ctx.replication {
                    Some(r) => crate::status::from_state(&self.ctx.topology, &r.state(), SERVER_LOG)
                        .iter()
                        .map(|r| r.cells().to_vec())
                        .collect(),
                    None => Vec::new(),
                };
                let out = text_result(&crate::status::COLUMNS, &rows, self.status, self.deprecate_eof(), seq);
                self.write_all(&out).await
            }
        }
    }

    async fn write_all(&mut self, out: &[u8]) -> Result<(), MySessionError> {
        use tokio::io::AsyncWriteExt;
        self.writer.write_all(out).await.map_err(|e| MySessionError::Client(e.into()))?;
        self.writer.flush().await.map_err(|e| MySessionError::Client(e.into()))
    }
}

/// A text result set of VARCHAR `columns` and `rows` (None: NULL), framed from `seq`.
fn text_result(columns: &[&str], rows: &[Vec<Option<String>>], status: u16, deprecate_eof: bool, seq: u8) -> BytesMut {
    let mut out = BytesMut::new();
    let mut count = BytesMut::new();
    put_lenenc(&mut count, columns.len() as u64);
    let mut seq = frame(&mut out, seq, &count);
    for name in columns {
        let mut col = BytesMut::new();
        for part in ["def", "", "", ""] {
            put_lenenc_bytes(&mut col, part.as_bytes());
        }
        put_lenenc_bytes(&mut col, name.as_bytes());
        put_lenenc_bytes(&mut col, b"");
        put_lenenc(&mut col, 0x0c);
        col.put_u16_le(45); // utf8mb4_general_ci
        col.put_u32_le(1024);
        col.put_u8(0xFD); // VAR_STRING
        col.put_u16_le(0);
        col.put_u8(0);
        col.put_u16_le(0);
        seq = frame(&mut out, seq, &col);
    }
    let eof = |status: u16| -> Vec<u8> {
        let mut e = vec![0xFE, 0, 0];
        e.extend_from_slice(&status.to_le_bytes());
        e
    };
    if !deprecate_eof {
        seq = frame(&mut out, seq, &eof(status));
    }
    for r in rows {
        let mut row = BytesMut::new();
        for cell in r {
            match cell {
                Some(v) => put_lenenc_bytes(&mut row, v.as_bytes()),
                None => row.put_u8(0xFB),
            }
        }
        seq = frame(&mut out, seq, &row);
    }
    if deprecate_eof {
        let mut ok = ok_payload(0, 0, status, 0);
        ok[0] = 0xFE;
        frame(&mut out, seq, &ok);
    } else {
        frame(&mut out, seq, &eof(status));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mysql::packet::PacketReader;
    use crate::protocol::mysql::{Expect, Response, Step};
    use crate::sql::mysql::lex::tokens;

    #[test]
    fn position_statements() {
        let p = |s: &str| parse(&tokens(s, true));
        assert_eq!(p("SHOW chorus.position"), Some(Local::ShowPosition));
        assert_eq!(p("set CHORUS.POSITION = '42';"), Some(Local::SetPosition(Ok(42))));
        assert_eq!(p("SET chorus.position = 7"), Some(Local::SetPosition(Ok(7))));
        assert_eq!(p("SET chorus.position TO '9'"), Some(Local::SetPosition(Ok(9))));
        assert!(matches!(p("SET chorus.position = 'x'"), Some(Local::SetPosition(Err(_)))));
        assert_eq!(p("SHOW chorus"), None);
        assert_eq!(p("show CHORUS.status;"), Some(Local::ShowStatus));
        assert_eq!(p("SHOW chorus.status x"), None);
        assert_eq!(p("SET @position = 1"), None);
    }

    #[tokio::test]
    async fn the_answer_is_a_well_formed_result_set() {
        for deprecate in [false, true] {
            let rows = [vec![Some("12".to_string()), None], vec![Some("x".repeat(300)), Some(String::new())]];
            let bytes = text_result(&["a", "b"], &rows, 2, deprecate, 1);
            let mut r = PacketReader::new(&bytes[..], 1 << 20);
            let mut answer = Response::new(Expect::ResultSets, deprecate);
            let mut expect_seq = 1u8;
            loop {
                let pk = r.read_raw().await.unwrap();
                assert_eq!(pk.seq, expect_seq);
                expect_seq += 1;
                if answer.feed(&pk).unwrap() == Step::Done {
                    break;
                }
            }
            assert!(!r.has_buffered(), "nothing after the end");
            assert_eq!(answer.status, Some(2));
        }
    }
}
