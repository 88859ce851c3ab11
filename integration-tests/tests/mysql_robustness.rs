//! Bad input on the MySQL listener, end to end over raw TCP: garbage instead
//! of a handshake response, truncated and oversized packets, unknown
//! commands, malformed and unknown prepared-statement executes, writes whose
//! text is not UTF-8. Every bad client gets a MySQL error packet (the right
//! code) or a clean close, never a hang; where the protocol allows, the
//! connection stays usable; nothing half-done reaches the followers; other
//! sessions carry on; chorus never panics.

use chorus::config::{AuthMethod, MysqlAuth, User};
use integration_tests::*;
use mysql_async::prelude::Queryable;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RAW_USER: &str = "raw_native";
const RAW_PASSWORD: &str = "raw-pw";
/// The test's `limits.max_message_bytes`.
const LIMIT: usize = 64 * 1024;

/// A MySQL client speaking the protocol by hand.
struct Raw {
    s: TcpStream,
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr) -> Raw {
        Raw { s: TcpStream::connect(addr).await.expect("connect to chorus") }
    }

    async fn send(&mut self, seq: u8, payload: &[u8]) {
        let len = (payload.len() as u32).to_le_bytes();
        let mut out = vec![len[0], len[1], len[2], seq];
        out.extend_from_slice(payload);
        // The peer may have closed already: what it answered is what counts.
        let _ = self.s.write_all(&out).await;
    }

    /// The next packet; None when chorus closed the connection. Panics
    /// after 15 s: a hang is a failure.
    async fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(Duration::from_secs(15), async {
            let mut head = [0u8; 4];
            self.s.read_exact(&mut head).await.ok()?;
            let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
            let mut payload = vec![0u8; len];
            self.s.read_exact(&mut payload).await.ok()?;
            Some((head[3], payload))
        })
        .await
        .expect("chorus neither answered nor closed within 15 s")
    }

    /// An error packet's code, or None for a close; panics on anything else.
    async fn error_or_close(&mut self) -> Option<u16> {
        let (_, p) = self.read().await?;
        assert_eq!(p.first(), Some(&0xFF), "expected an error packet, got {p:?}");
        Some(u16::from_le_bytes([p[1], p[2]]))
    }

    /// The connection must be closed by now (after an error, perhaps).
    async fn closed(&mut self) {
        if let Some((_, p)) = self.read().await {
            assert_eq!(p.first(), Some(&0xFF), "expected an error or a close, got {p:?}");
            assert!(self.read().await.is_none(), "the connection stayed open");
        }
    }

    /// Log in as [`RAW_USER`] with mysql_native_password (following an
    /// auth switch if chorus greets with another plugin).
    async fn login(addr: std::net::SocketAddr, db: &str) -> Raw {
        let mut raw = Raw::connect(addr).await;
        let (_, greeting) = raw.read().await.expect("a greeting");
        let nonce = greeting_nonce(&greeting);
        let scramble = chorus::auth::mysql::native_scramble(RAW_PASSWORD, &nonce);
        // PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | LONG_PASSWORD |
        // TRANSACTIONS | CONNECT_WITH_DB | DEPRECATE_EOF
        let caps: u32 = 0x200 | 0x8000 | 0x8_0000 | 0x1 | 0x2000 | 0x8 | 0x100_0000;
        let mut p = Vec::new();
        p.extend_from_slice(&caps.to_le_bytes());
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(RAW_USER.as_bytes());
        p.push(0);
        p.push(scramble.len() as u8);
        p.extend_from_slice(&scramble);
        p.extend_from_slice(db.as_bytes());
        p.push(0);
        p.extend_from_slice(b"mysql_native_password\0");
        raw.send(1, &p).await;
        loop {
            let (seq, answer) = raw.read().await.expect("an answer to the login");
            match answer.first() {
                Some(0x00) => return raw,
                Some(0xFE) => {
                    // AuthSwitchRequest: plugin name NUL, then the new nonce.
                    let at = answer[1..].iter().position(|&b| b == 0).expect("a plugin name") + 2;
                    let nonce: Vec<u8> = answer[at..].iter().copied().take_while(|&b| b != 0).collect();
                    raw.send(seq + 1, &chorus::auth::mysql::native_scramble(RAW_PASSWORD, &nonce)).await;
                }
                _ => panic!("login failed: {answer:?}"),
            }
        }
    }

    /// COM_PING answers OK: the session is still usable.
    async fn ping(&mut self) {
        self.send(0, &[0x0e]).await;
        let (_, p) = self.read().await.expect("an answer to COM_PING");
        assert_eq!(p.first(), Some(&0x00), "COM_PING after bad input: {p:?}");
    }

    /// COM_QUERY `sql`, answered by an OK (panics otherwise).
    async fn ok(&mut self, sql: &str) {
        let mut p = vec![0x03];
        p.extend_from_slice(sql.as_bytes());
        self.send(0, &p).await;
        let (_, answer) = self.read().await.expect("an answer");
        assert_eq!(answer.first(), Some(&0x00), "{sql}: {answer:?}");
    }
}

/// The 20-byte nonce of a protocol-10 greeting.
fn greeting_nonce(g: &[u8]) -> Vec<u8> {
    assert_eq!(g[0], 10, "protocol 10");
    let mut i = 1 + g[1..].iter().position(|&b| b == 0).unwrap() + 1;
    i += 4; // connection id
    let mut nonce = g[i..i + 8].to_vec();
    i += 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10;
    nonce.extend(g[i..].iter().copied().take_while(|&b| b != 0).take(12));
    nonce
}

/// A bystander session that must keep working while other clients misbehave.
async fn still_works(c: &mut mysql_async::Conn, what: &str) {
    let one: Option<i64> = tokio::time::timeout(Duration::from_secs(15), c.query_first("SELECT 1"))
        .await
        .unwrap_or_else(|_| panic!("bystander session hung after {what}"))
        .unwrap_or_else(|e| panic!("bystander session failed after {what}: {e}"));
    assert_eq!(one, Some(1), "after {what}");
}

#[tokio::test]
async fn bad_mysql_clients_get_errors_or_a_close_and_nothing_half_done_replicates() {
    let db = fresh_maria_database().await;
    let cluster = maria_cluster();
    let chorus = start_mysql_chorus_with(cluster, |c| {
        c.users.push(User {
            name: RAW_USER.into(),
            password: Some(RAW_PASSWORD.into()),
            auth: AuthMethod::ScramSha256,
            mysql_auth: Some(MysqlAuth::NativePassword),
        });
        c.limits.max_message_bytes = LIMIT;
    });
    let addr = chorus.addr();
    let mut bystander = chorus.connect(db.name()).await;
    bystander.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(100))").await.unwrap();

    // Garbage where the handshake response belongs.
    let mut raw = Raw::connect(addr).await;
    raw.read().await.expect("a greeting");
    raw.send(1, &[0xAB; 200]).await;
    raw.closed().await;
    still_works(&mut bystander, "a garbage handshake response").await;

    // A handshake response cut short after the capabilities.
    let mut raw = Raw::connect(addr).await;
    raw.read().await.expect("a greeting");
    raw.send(1, &0x8200u32.to_le_bytes()).await;
    raw.closed().await;

    // A header announcing 16 MB, then nothing: refused from the header.
    let mut raw = Raw::connect(addr).await;
    raw.read().await.expect("a greeting");
    let _ = raw.s.write_all(&[0xFF, 0xFF, 0xFF, 1]).await;
    raw.closed().await;
    // The client hangs up in the middle of its handshake.
    let mut raw = Raw::connect(addr).await;
    raw.read().await.expect("a greeting");
    let _ = raw.s.write_all(&[50, 0, 0, 1, 0x05, 0xa6]).await;
    drop(raw);
    still_works(&mut bystander, "truncated handshakes").await;

    // Logged in: an unknown command is an error, and the session goes on.
    let mut raw = Raw::login(addr, db.name()).await;
    raw.send(0, &[0xEE, 1, 2, 3]).await;
    assert_eq!(raw.error_or_close().await, Some(1047), "ER_UNKNOWN_COM_ERROR");
    raw.ping().await;
    // An empty command packet.
    raw.send(0, &[]).await;
    assert!(raw.error_or_close().await.is_some(), "an error for an empty command");
    raw.ping().await;

    // An execute of a statement never prepared: the server's error.
    let mut exec = vec![0x17];
    exec.extend_from_slice(&12345u32.to_le_bytes());
    exec.extend_from_slice(&[0, 1, 0, 0, 0]);
    raw.send(0, &exec).await;
    assert_eq!(raw.error_or_close().await, Some(1243), "ER_UNKNOWN_STMT_HANDLER");
    raw.ping().await;

    // A prepared INSERT executed with its parameters cut off: refused
    // before anything runs, and the session goes on.
    let mut prepare = vec![0x16];
    prepare.extend_from_slice(b"INSERT INTO t VALUES (?, ?)");
    raw.send(0, &prepare).await;
    let (_, ok) = raw.read().await.expect("a prepare answer");
    assert_eq!(ok[0], 0x00, "{ok:?}");
    let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
    let params = u16::from_le_bytes([ok[7], ok[8]]);
    assert_eq!(params, 2);
    // Two parameter definitions (DEPRECATE_EOF: no EOF after them).
    for _ in 0..params {
        raw.read().await.expect("a parameter definition");
    }
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id.to_le_bytes());
    exec.extend_from_slice(&[0, 1, 0, 0, 0]);
    raw.send(0, &exec).await;
    assert!(raw.error_or_close().await.is_some(), "an execute without its parameters");
    raw.ping().await;
    // Types bound, values cut short in the middle of the string.
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id.to_le_bytes());
    exec.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 3, 0, 253, 0]);
    exec.extend_from_slice(&7i32.to_le_bytes());
    exec.extend_from_slice(&[50, b'x']);
    raw.send(0, &exec).await;
    assert!(raw.error_or_close().await.is_some(), "an execute whose string is cut short");
    raw.ping().await;

    // A write whose text is not UTF-8, into a utf8mb4 column: chorus would log
    // its bytes, but the server (strict mode) refuses the string itself: no row.
    let mut q = vec![0x03];
    q.extend_from_slice(b"INSERT INTO t VALUES (1, '\xff\xfe')");
    raw.send(0, &q).await;
    assert_eq!(raw.error_or_close().await, Some(1366));
    raw.ping().await;
    // A write the session can still make.
    raw.ok("INSERT INTO t VALUES (2, 'fine')").await;

    // Over limits.max_message_bytes: the error, then the close.
    let mut q = vec![0x03];
    q.extend_from_slice(format!("SELECT '{}'", "x".repeat(LIMIT)).as_bytes());
    raw.send(0, &q).await;
    assert_eq!(raw.error_or_close().await, Some(1153), "ER_NET_PACKET_TOO_LARGE");
    raw.closed().await;
    still_works(&mut bystander, "an oversized packet").await;

    // Out-of-order sequence ids on a command: answered as a command anyway
    // or refused, but never a hang.
    let mut raw = Raw::login(addr, db.name()).await;
    raw.send(7, &[0x0e]).await;
    let _ = raw.read().await;

    // (The raw session wrote it: the bystander may read on a follower only once all have it.)
    chorus.assert_converged(cluster, db.name()).await;
    let rows: Vec<(i32, String)> = bystander.query("SELECT id, v FROM t ORDER BY id").await.unwrap();
    assert_eq!(rows, [(2, "fine".to_string())], "only the good write is there");
    assert_no_chorus_panics();
}
