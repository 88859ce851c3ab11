//! Where a server's answer to one command ends, read off the packets as they
//! are relayed: pure, fed one wire packet at a time.
//!
//! MySQL frames no "end of answer" marker of its own: a result set ends with
//! an EOF (or, with CLIENT_DEPRECATE_EOF, an OK packet with a 0xFE header),
//! several result sets are chained by SERVER_MORE_RESULTS_EXISTS, a prepare's
//! answer is counted from its header, a LOCAL INFILE request hands the turn to
//! the client. The last status flags tell whether a transaction is open.

use super::consts::status;
use super::packet::{MAX_CHUNK, Packet};
use super::wire::{Malformed, Reader};
use smallvec::SmallVec;

/// What kind of answer a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// COM_QUERY, COM_STMT_EXECUTE, COM_PROCESS_INFO: OK, ERR, LOCAL INFILE,
    /// or result sets, possibly several.
    ResultSets,
    /// COM_STMT_PREPARE: a header with counts, then parameter and column definitions.
    Prepare,
    /// COM_FIELD_LIST: column definitions up to an EOF.
    FieldList,
    /// COM_STMT_FETCH: rows up to an EOF.
    Fetch,
    /// One packet (OK, ERR, EOF or a plain string).
    Single,
}

/// A successful COM_STMT_PREPARE's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    pub statement_id: u32,
    pub columns: u16,
    pub params: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More packets of this answer follow.
    More,
    /// The server asks for a file (LOAD DATA LOCAL): the client sends it next.
    LocalInfile,
    /// The answer is complete.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Columns(u64),
    ColumnsEof,
    Rows,
    PrepareParams(u16, u16),
    PrepareParamsEof(u16),
    PrepareColumns(u16),
    PrepareColumnsEof,
    Definitions,
    Single,
    Finished,
}

/// Follows one answer; see the module docs.
#[derive(Debug, Clone)]
pub struct Response {
    state: State,
    deprecate_eof: bool,
    /// The previous packet was a full chunk: this one continues its payload.
    continuation: bool,
    /// Status flags of the last OK/EOF seen.
    pub status: Option<u16>,
    /// The answer (or one of its results) was an error.
    pub error: bool,
    /// Its error code, when it was one.
    pub error_code: Option<u16>,
    /// Affected rows, last insert id and warnings of the last OK/EOF seen.
    pub affected: u64,
    pub warnings: u16,
    pub last_insert_id: u64,
    pub prepared: Option<Prepared>,
    /// The answer held a result set (a write's, with MariaDB's RETURNING).
    pub result_set: bool,
    /// The rows of its result sets.
    pub rows: u64,
    /// Affected rows and last insert id of each OK result, in order (one
    /// per statement of a multi-statement query up to its first error).
    /// Inline for the usual single OK: no allocation per relayed write.
    pub oks: SmallVec<[(u64, u64); 1]>,
}

impl Response {
    pub fn new(expect: Expect, deprecate_eof: bool) -> Response {
        let state = match expect {
            Expect::ResultSets => State::Start,
            Expect::Prepare => State::PrepareParams(u16::MAX, u16::MAX),
            Expect::FieldList => State::Definitions,
            Expect::Fetch => State::Rows,
            Expect::Single => State::Single,
        };
        Response {
            state,
            deprecate_eof,
            continuation: false,
            status: None,
            error: false,
            error_code: None,
            affected: 0,
            warnings: 0,
            last_insert_id: 0,
            prepared: None,
            result_set: false,
            rows: 0,
            oks: SmallVec::new(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Finished
    }

    /// Account for one packet of the answer.
    pub fn feed(&mut self, p: &Packet) -> Result<Step, Malformed> {
        let was_error = self.error;
        let step = self.feed_inner(p);
        if self.error && !was_error && p.payload.first() == Some(&0xFF) && p.payload.len() >= 3 {
            self.error_code = Some(u16::from_le_bytes([p.payload[1], p.payload[2]]));
        }
        step
    }

    fn feed_inner(&mut self, p: &Packet) -> Result<Step, Malformed> {
        let data = &p.payload[..];
        if self.continuation {
            self.continuation = p.payload.len() == MAX_CHUNK;
            return Ok(Step::More);
        }
        self.continuation = p.payload.len() == MAX_CHUNK;
        match self.state {
            State::Single => {
                // Whatever the one packet is, it is the answer.
                self.note_terminal(data);
                self.state = State::Finished;
                Ok(Step::Done)
            }
            State::Finished => Err(Malformed("a packet after the end of the answer")),
            State::Start => match data.first() {
                Some(0x00) => {
                    self.ok(data)?;
                    self.oks.push((self.affected, self.last_insert_id));
                    Ok(self.after_result())
                }
                Some(0xFF) => {
                    self.error = true;
                    self.state = State::Finished;
                    Ok(Step::Done)
                }
                Some(0xFB) => Ok(Step::LocalInfile),
                Some(_) => {
                    let n = Reader::new(data).lenenc("column count")?.ok_or(Malformed("column count"))?;
                    self.result_set = true;
                    self.state = State::Columns(n);
                    Ok(Step::More)
                }
                None => Err(Malformed("empty answer")),
            },
            State::Columns(n) => {
                self.state = match n - 1 {
                    0 if self.deprecate_eof => State::Rows,
                    0 => State::ColumnsEof,
                    k => State::Columns(k),
                };
                Ok(Step::More)
            }
            State::ColumnsEof => {
                if data.first() == Some(&0xFF) {
                    self.error = true;
                    self.state = State::Finished;
                    return Ok(Step::Done);
                }
                self.eof(data)?;
                if self.status.is_some_and(|s| s & status::CURSOR_EXISTS != 0) {
                    self.state = State::Finished;
                    return Ok(Step::Done);
                }
                self.state = State::Rows;
                Ok(Step::More)
            }
            State::Rows => {
                if self.is_terminator(data) {
                    if self.deprecate_eof {
                        self.ok(data)?
                    } else {
                        self.eof(data)?
                    }
                    return Ok(self.after_result());
                }
                if data.first() == Some(&0xFF) {
                    self.error = true;
                    self.state = State::Finished;
                    return Ok(Step::Done);
                }
                self.rows += 1;
                Ok(Step::More)
            }
            State::PrepareParams(u16::MAX, u16::MAX) => {
                // The header.
                if data.first() == Some(&0xFF) {
                    self.error = true;
                    self.state = State::Finished;
                    return Ok(Step::Done);
                }
                let mut r = Reader::new(data);
                if r.u8("prepare ok")? != 0 {
                    return Err(Malformed("prepare ok"));
                }
                let statement_id = r.u32("statement id")?;
                let columns = r.u16("column count")?;
                let params = r.u16("parameter count")?;
                self.prepared = Some(Prepared { statement_id, columns, params });
                self.state = State::PrepareParams(params, columns);
                Ok(self.prepare_next())
            }
            State::PrepareParams(p, c) => {
                self.state = State::PrepareParams(p - 1, c);
                Ok(self.prepare_next())
            }
            State::PrepareParamsEof(c) => {
                self.state = State::PrepareColumns(c);
                Ok(self.prepare_next())
            }
            State::PrepareColumns(c) => {
                self.state = State::PrepareColumns(c - 1);
                Ok(self.prepare_next())
            }
            State::PrepareColumnsEof => {
                self.state = State::Finished;
                Ok(Step::Done)
            }
            State::Definitions => {
                if self.is_terminator(data) || data.first() == Some(&0xFF) {
                    self.error = data.first() == Some(&0xFF);
                    self.note_terminal(data);
                    self.state = State::Finished;
                    return Ok(Step::Done);
                }
                Ok(Step::More)
            }
        }
    }

    /// After a LOCAL INFILE's data went to the server, its OK or ERR follows.
    pub fn infile_sent(&mut self) {
        self.state = State::Start;
    }

    fn prepare_next(&mut self) -> Step {
        self.state = match self.state {
            State::PrepareParams(0, c) if !self.deprecate_eof && self.prepared.is_some_and(|p| p.params > 0) => {
                State::PrepareParamsEof(c)
            }
            State::PrepareParams(0, c) => State::PrepareColumns(c),
            State::PrepareColumns(0) if !self.deprecate_eof && self.prepared.is_some_and(|p| p.columns > 0) => {
                State::PrepareColumnsEof
            }
            State::PrepareColumns(0) => State::Finished,
            s => s,
        };
        if let State::PrepareColumns(0) = self.state {
            return self.prepare_next();
        }
        if self.state == State::Finished { Step::Done } else { Step::More }
    }

    fn is_terminator(&self, data: &[u8]) -> bool {
        data.first() == Some(&0xFE) && if self.deprecate_eof { data.len() < MAX_CHUNK } else { data.len() < 9 }
    }

    fn after_result(&mut self) -> Step {
        if self.status.is_some_and(|s| s & status::MORE_RESULTS_EXISTS != 0) {
            self.state = State::Start;
            Step::More
        } else {
            self.state = State::Finished;
            Step::Done
        }
    }

    /// A single-packet answer: remember its status when it has one.
    fn note_terminal(&mut self, data: &[u8]) {
        match data.first() {
            Some(0x00) => {
                let _ = self.ok(data);
            }
            Some(0xFE) if data.len() < 9 => {
                let _ = self.eof(data);
            }
            Some(0xFF) => self.error = true,
            _ => {}
        }
    }

    fn ok(&mut self, data: &[u8]) -> Result<(), Malformed> {
        let mut r = Reader::new(&data[1..]);
        self.affected = r.lenenc("affected rows")?.unwrap_or(0);
        self.last_insert_id = r.lenenc("last insert id")?.unwrap_or(0);
        self.status = Some(r.u16("status flags")?);
        self.warnings = r.u16("warnings").unwrap_or(0);
        Ok(())
    }

    fn eof(&mut self, data: &[u8]) -> Result<(), Malformed> {
        let mut r = Reader::new(data);
        if r.u8("eof")? != 0xFE {
            return Err(Malformed("expected an EOF packet"));
        }
        // A bare 0xFE (pre-4.1 EOF) carries no status.
        if data.len() >= 5 {
            self.warnings = r.u16("warnings")?;
            self.status = Some(r.u16("status flags")?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pkt(b: &[u8]) -> Packet {
        Packet { seq: 0, payload: Bytes::copy_from_slice(b) }
    }
    const OK_IDLE: &[u8] = b"\x00\x00\x00\x02\x00\x00\x00";
    const OK_MORE: &[u8] = b"\x00\x01\x00\x0a\x00\x00\x00";
    const EOF_IDLE: &[u8] = b"\xfe\x00\x00\x02\x00";
    const EOF_MORE_IN_TRANS: &[u8] = b"\xfe\x00\x00\x09\x00";
    const OKEOF_IDLE: &[u8] = b"\xfe\x00\x00\x02\x00\x00\x00";
    const COLDEF: &[u8] = b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00";

    fn run(r: &mut Response, packets: &[&[u8]]) -> Vec<Step> {
        packets.iter().map(|p| r.feed(&pkt(p)).unwrap()).collect()
    }

    #[test]
    fn a_result_set_ends_at_its_eof_with_or_without_deprecate_eof() {
        let mut r = Response::new(Expect::ResultSets, false);
        let steps = run(&mut r, &[b"\x01", COLDEF, EOF_IDLE, b"\x011", b"\xfb", EOF_IDLE]);
        assert_eq!(steps.last(), Some(&Step::Done));
        assert!(steps[..5].iter().all(|s| *s == Step::More));
        assert_eq!(r.status, Some(status::AUTOCOMMIT));

        let mut r = Response::new(Expect::ResultSets, true);
        let steps = run(&mut r, &[b"\x01", COLDEF, b"\x011", OKEOF_IDLE]);
        assert_eq!(steps, [Step::More, Step::More, Step::More, Step::Done]);
        assert!(r.result_set);
        assert_eq!(r.rows, 1);
    }

    #[test]
    fn rows_are_counted_once_however_long() {
        let mut big = vec![0x01u8; MAX_CHUNK];
        big[0] = 0xFE;
        let mut r = Response::new(Expect::ResultSets, true);
        run(&mut r, &[b"\x01", COLDEF, b"\x011", &big, b"\xfe", b"\x012", OKEOF_IDLE]);
        assert!(r.is_done());
        assert_eq!(r.rows, 3);
        let mut r = Response::new(Expect::ResultSets, true);
        run(&mut r, &[OK_IDLE]);
        assert!(!r.result_set);
        assert_eq!(r.rows, 0);
    }

    #[test]
    fn chained_results_continue_until_the_last_one() {
        let mut r = Response::new(Expect::ResultSets, false);
        let steps = run(&mut r, &[OK_MORE, b"\x01", COLDEF, EOF_IDLE, EOF_MORE_IN_TRANS, OK_IDLE]);
        assert_eq!(steps, [Step::More, Step::More, Step::More, Step::More, Step::More, Step::Done]);
        assert_eq!(r.oks.as_slice(), [(1, 0), (0, 0)]);
        let mut r = Response::new(Expect::ResultSets, false);
        assert_eq!(run(&mut r, &[OK_MORE, b"\xff\x28\x04#42000oops"]), [Step::More, Step::Done]);
        assert!(r.error);
    }

    #[test]
    fn rows_that_start_like_terminators_are_rows() {
        // A long row: its first chunk is full size, its continuation may start with anything.
        let mut big = vec![0xFEu8; MAX_CHUNK];
        big[0] = 0xFE;
        let mut r = Response::new(Expect::ResultSets, true);
        let steps = run(&mut r, &[b"\x01", COLDEF, &big, EOF_IDLE, OKEOF_IDLE]);
        assert_eq!(steps, [Step::More, Step::More, Step::More, Step::More, Step::Done]);
    }

    #[test]
    fn prepare_answers_are_counted_from_their_header() {
        // 2 params, 1 column, with EOFs.
        let mut r = Response::new(Expect::Prepare, false);
        let head = b"\x00\x07\x00\x00\x00\x01\x00\x02\x00\x00\x00\x00";
        let steps = run(&mut r, &[head, COLDEF, COLDEF, EOF_IDLE, COLDEF, EOF_IDLE]);
        assert_eq!(steps.last(), Some(&Step::Done));
        assert_eq!(steps.iter().filter(|s| **s == Step::Done).count(), 1);
        assert_eq!(r.prepared, Some(Prepared { statement_id: 7, columns: 1, params: 2 }));
        // No params, no columns: the header is all.
        let mut r = Response::new(Expect::Prepare, false);
        assert_eq!(run(&mut r, &[b"\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"]), [Step::Done]);
        // Deprecate EOF: no EOFs.
        let mut r = Response::new(Expect::Prepare, true);
        assert_eq!(run(&mut r, &[head, COLDEF, COLDEF, COLDEF]), [Step::More, Step::More, Step::More, Step::Done]);
    }

    #[test]
    fn a_cursor_answer_ends_after_its_metadata() {
        let mut r = Response::new(Expect::ResultSets, false);
        let cursor_eof = b"\xfe\x00\x00\x42\x00";
        assert_eq!(run(&mut r, &[b"\x01", COLDEF, cursor_eof]), [Step::More, Step::More, Step::Done]);
        let mut r = Response::new(Expect::Fetch, false);
        assert_eq!(run(&mut r, &[b"\x00\x00\x01", b"\xfe\x00\x00\xc2\x00"]), [Step::More, Step::Done]);
    }

    #[test]
    fn local_infile_and_single_packet_answers() {
        let mut r = Response::new(Expect::ResultSets, false);
        assert_eq!(r.feed(&pkt(b"\xfb/etc/data.csv")).unwrap(), Step::LocalInfile);
        r.infile_sent();
        assert_eq!(r.feed(&pkt(OK_IDLE)).unwrap(), Step::Done);
        let mut r = Response::new(Expect::Single, false);
        assert_eq!(r.feed(&pkt(b"Uptime: 5  Threads: 1")).unwrap(), Step::Done);
        let mut r = Response::new(Expect::FieldList, false);
        assert_eq!(run(&mut r, &[COLDEF, COLDEF, EOF_IDLE]), [Step::More, Step::More, Step::Done]);
    }
}
