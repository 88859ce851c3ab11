//! chorus's own statements on a session's leader connection (the log
//! append, the determinism context, transactions chorus opens), and
//! answers held back from the client until chorus's steps after them
//! are done.

use super::{MySession, MySessionError};
use crate::backend::mysql::MyBackendError;
use crate::protocol::mysql::consts::{cap, com};
use crate::protocol::mysql::packet::frame_raw;
use crate::protocol::mysql::wire::Reader;
use crate::protocol::mysql::{Expect, MyError, Packet, Response, Step};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

/// One answer to one of chorus's statements.
#[derive(Debug, Default)]
pub(super) struct Answer {
    pub error: Option<MyError>,
    /// Text-protocol rows, when the statement returned some.
    pub rows: Vec<Vec<Option<String>>>,
    /// The type of each column (`enum_field_types`), when it returned rows.
    pub types: Vec<u8>,
}

/// A whole answer to a client's command, held back.
pub(super) struct Held {
    pub packets: Vec<Packet>,
    pub response: Response,
    /// `LOAD DATA LOCAL INFILE`: the file the client sent (relayed to the
    /// leader when it asked), to be logged with the statement. Collected up
    /// to just past the largest entry the leader takes.
    pub infile: Option<Vec<u8>>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> MySession<R, W> {
    pub(super) fn deprecate_eof(&self) -> bool {
        self.login.capabilities & cap::DEPRECATE_EOF != 0
    }

    /// Send `sqls` back to back (one round trip), then read every answer.
    pub(super) async fn internal(&mut self, sqls: &[String]) -> Result<Vec<Answer>, MySessionError> {
        let mut out = BytesMut::new();
        for sql in sqls {
            let mut payload = Vec::with_capacity(sql.len() + 1);
            payload.push(com::QUERY);
            payload.extend_from_slice(sql.as_bytes());
            crate::protocol::mysql::packet::frame(&mut out, 0, &payload);
        }
        self.leader.send_framed(&out).await?;
        let mut answers = Vec::with_capacity(sqls.len());
        for _ in sqls {
            let held = self.read_held(Expect::ResultSets).await?;
            answers.push(self.to_answer(&held));
        }
        Ok(answers)
    }

    /// Is a transaction open on the leader connection? Asked with `DO 0`,
    /// whose OK packet carries the status flags an error packet lacks.
    pub(super) async fn server_in_transaction(&mut self) -> Result<bool, MySessionError> {
        let mut out = BytesMut::new();
        crate::protocol::mysql::packet::frame(&mut out, 0, b"\x03DO 0");
        self.leader.send_framed(&out).await?;
        let held = self.read_held(Expect::ResultSets).await?;
        Ok(held.response.status.is_none_or(|s| s & crate::protocol::mysql::consts::status::IN_TRANS != 0))
    }

    /// chorus's `sqls`, then the client's command `payload`, back to back
    /// (one round trip): the answers to `sqls`, and the command's whole
    /// answer, held. The command runs whatever `sqls` answered.
    pub(super) async fn internal_then(
        &mut self,
        sqls: &[String],
        payload: &[u8],
    ) -> Result<(Vec<Answer>, Held), MySessionError> {
        let mut out = BytesMut::new();
        for sql in sqls {
            let mut p = Vec::with_capacity(sql.len() + 1);
            p.push(com::QUERY);
            p.extend_from_slice(sql.as_bytes());
            crate::protocol::mysql::packet::frame(&mut out, 0, &p);
        }
        crate::protocol::mysql::packet::frame(&mut out, 0, payload);
        self.leader.send_framed(&out).await?;
        let mut answers = Vec::with_capacity(sqls.len());
        for _ in sqls {
            let held = self.read_held(Expect::ResultSets).await?;
            answers.push(self.to_answer(&held));
        }
        let held = self.read_held_inner(Expect::ResultSets, true).await?;
        Ok((answers, held))
    }

    /// Like [`Self::internal`], failing with the first statement's error.
    pub(super) async fn internal_ok(&mut self, sqls: &[String]) -> Result<Vec<Answer>, InternalFailure> {
        let answers = self.internal(sqls).await.map_err(InternalFailure::Session)?;
        if let Some((i, e)) = answers.iter().enumerate().find_map(|(i, a)| a.error.clone().map(|e| (i, e))) {
            return Err(InternalFailure::Statement { sql: sqls[i].clone(), error: e });
        }
        Ok(answers)
    }

    /// Read one whole answer from the leader without relaying it.
    pub(super) async fn read_held(&mut self, expect: Expect) -> Result<Held, MySessionError> {
        self.read_held_inner(expect, false).await
    }

    /// [`Self::read_held`]; `infile`: the answer is to the client's own
    /// command, which may be a LOAD DATA LOCAL (chorus's statements load
    /// nothing, and a request for a file there is a protocol error).
    async fn read_held_inner(&mut self, expect: Expect, infile_ok: bool) -> Result<Held, MySessionError> {
        let mut response = Response::new(expect, self.deprecate_eof());
        let mut packets = Vec::new();
        let mut infile = None;
        loop {
            let p = self.leader.read().await?;
            let step = response.feed(&p).map_err(|e| {
                MySessionError::Backend(MyBackendError::Protocol {
                    node: self.leader.name.clone(),
                    what: e.to_string(),
                })
            })?;
            match step {
                Step::More => packets.push(p),
                Step::Done => {
                    packets.push(p);
                    break;
                }
                Step::LocalInfile if !infile_ok => {
                    return Err(MySessionError::Backend(MyBackendError::Protocol {
                        node: self.leader.name.clone(),
                        what: "unexpected LOCAL INFILE request".into(),
                    }));
                }
                Step::LocalInfile => {
                    // A client's LOAD DATA LOCAL: the request goes to the
                    // client now, its file to the leader, and the answer
                    // after it is held.
                    frame_raw(&mut self.out, p.seq, &p.payload);
                    self.flush().await?;
                    let limit = self.log.context.as_ref().map_or(usize::MAX, |c| c.max_packet);
                    let mut data = Vec::new();
                    self.send_infile(Some((&mut data, limit))).await?;
                    response.infile_sent();
                    infile = Some(data);
                }
            }
        }
        Ok(Held { packets, response, infile })
    }

    fn to_answer(&self, held: &Held) -> Answer {
        let first = &held.packets[0].payload;
        if first.first() == Some(&0xFF) {
            return Answer { error: MyError::parse(first), ..Answer::default() };
        }
        Answer { error: None, rows: text_rows(&held.packets, self.deprecate_eof()), types: column_types(&held.packets) }
    }

    /// Send a held answer to the client, its final status flags passed
    /// through `patch` (e.g. hiding the transaction chorus opened).
    pub(super) async fn send_held(&mut self, held: Held, patch: impl Fn(u16) -> u16) -> Result<(), MySessionError> {
        let deprecate_eof = self.deprecate_eof();
        let n = held.packets.len();
        for (i, p) in held.packets.into_iter().enumerate() {
            if i + 1 == n {
                let mut payload = p.payload.to_vec();
                patch_status(&mut payload, deprecate_eof, &patch);
                frame_raw(&mut self.out, p.seq, &payload);
            } else {
                frame_raw(&mut self.out, p.seq, &p.payload);
            }
        }
        if let Some(s) = held.response.status {
            self.status = patch(s);
        }
        self.after_answer(&held.response);
        self.flush().await
    }
}

/// Why one of chorus's own steps failed.
#[derive(Debug)]
pub(super) enum InternalFailure {
    Session(MySessionError),
    Statement {
        sql: String,
        error: MyError,
    },
    /// A statement chorus would send is larger than the leader accepts
    /// (`max_allowed_packet`): not sent, the connection stays usable.
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
}

impl InternalFailure {
    /// Whether the leader connection itself failed (its state is unknown).
    pub fn lost_connection(&self) -> bool {
        matches!(self, InternalFailure::Session(_))
    }
}

/// The column types of a result set (the first one), from its column
/// definitions: six length-encoded names, the fixed fields' length, the
/// character set (2 bytes), the column length (4), then the type.
fn column_types(packets: &[Packet]) -> Vec<u8> {
    let Some(first) = packets.first() else { return Vec::new() };
    if matches!(first.first_byte(), Some(0x00 | 0xFF)) {
        return Vec::new();
    }
    let Ok(Some(columns)) = Reader::new(&first.payload).lenenc("column count") else { return Vec::new() };
    let column_type = |p: &Packet| -> Option<u8> {
        let mut r = Reader::new(&p.payload);
        for _ in 0..6 {
            r.lenenc_bytes("column name").ok()?;
        }
        r.lenenc("fixed length").ok()?;
        r.u16("character set").ok()?;
        r.u32("column length").ok()?;
        r.u8("column type").ok()
    };
    packets[1..].iter().take(columns as usize).map(|p| column_type(p).unwrap_or(0xFD)).collect()
}

/// The rows of a text-protocol result set (the first one).
fn text_rows(packets: &[Packet], deprecate_eof: bool) -> Vec<Vec<Option<String>>> {
    let Some(first) = packets.first() else { return Vec::new() };
    if matches!(first.first_byte(), Some(0x00 | 0xFF)) {
        return Vec::new();
    }
    let Ok(Some(columns)) = Reader::new(&first.payload).lenenc("column count") else { return Vec::new() };
    let mut rest = packets[1..].iter().skip(columns as usize);
    if !deprecate_eof {
        rest.next();
    }
    let mut rows = Vec::new();
    for p in rest {
        let d = &p.payload;
        if d.first() == Some(&0xFE) && d.len() < 0xFF_FFFF || d.first() == Some(&0xFF) {
            break;
        }
        let mut r = Reader::new(d);
        let mut row = Vec::with_capacity(columns as usize);
        for _ in 0..columns {
            if r.rest().first() == Some(&0xFB) {
                let _ = r.u8("null");
                row.push(None);
            } else {
                match r.lenenc_bytes("value") {
                    Ok(v) => row.push(Some(String::from_utf8_lossy(v).into_owned())),
                    Err(_) => break,
                }
            }
        }
        rows.push(row);
    }
    rows
}

/// Rewrite the status flags of an answer's last packet (OK or EOF) in place.
fn patch_status(payload: &mut [u8], deprecate_eof: bool, patch: &impl Fn(u16) -> u16) {
    let at = match payload.first() {
        Some(0x00) => ok_status_offset(payload),
        Some(0xFE) if payload.len() < 9 && !deprecate_eof => (payload.len() >= 5).then_some(3),
        Some(0xFE) => ok_status_offset(payload),
        _ => None,
    };
    if let Some(i) = at.filter(|&i| i + 2 <= payload.len()) {
        let s = u16::from_le_bytes([payload[i], payload[i + 1]]);
        payload[i..i + 2].copy_from_slice(&patch(s).to_le_bytes());
    }
}

fn ok_status_offset(payload: &[u8]) -> Option<usize> {
    let mut r = Reader::new(&payload[1..]);
    r.lenenc("affected").ok()?;
    r.lenenc("insert id").ok()?;
    Some(payload.len() - r.rest().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn p(b: &[u8]) -> Packet {
        Packet { seq: 1, payload: Bytes::copy_from_slice(b) }
    }

    #[test]
    fn rows_of_a_text_result_and_status_patches() {
        let coldef = b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00";
        let packets = [
            p(b"\x02"),
            p(coldef),
            p(coldef),
            p(b"\xfe\x00\x00\x02\x00"),
            p(b"\x0242\xfb"),
            p(b"\xfe\x00\x00\x02\x00"),
        ];
        assert_eq!(text_rows(&packets, false), [vec![Some("42".to_string()), None]]);
        let mut ok = b"\x00\x01\x05\x03\x00\x00\x00".to_vec();
        patch_status(&mut ok, false, &|s| s & !1);
        assert_eq!(ok, b"\x00\x01\x05\x02\x00\x00\x00");
        let mut eof = b"\xfe\x00\x00\x03\x00".to_vec();
        patch_status(&mut eof, false, &|s| s & !1);
        assert_eq!(eof, b"\xfe\x00\x00\x02\x00");
    }
}
