//! The PostgreSQL authentication exchange with a client (SCRAM-SHA-256 or trust).
//!
//! Runs after the startup packet and before AuthenticationOk, which the caller
//! sends itself because ParameterStatus, BackendKeyData and ReadyForQuery follow.
//! Generic over the streams so it works on TCP, TLS and in-memory test pipes.

use crate::auth::scram::{SCRAM_SHA_256, ScramError, ScramServer};
use crate::auth::{AuthUser, Credential};
use crate::protocol::{ClientError, Fields, FrameError, Message, MessageReader, build, sqlstate};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// AuthenticationSASL: the list of mechanisms the server offers.
const AUTH_SASL: i32 = 10;
/// AuthenticationSASLContinue: server-first-message.
const AUTH_SASL_CONTINUE: i32 = 11;
/// AuthenticationSASLFinal: server-final-message.
const AUTH_SASL_FINAL: i32 = 12;

/// Why a client was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No such user; the client cannot tell this from [`AuthError::WrongPassword`].
    #[error("password authentication failed for user \"{user}\": no such user")]
    UnknownUser { user: String },
    #[error("password authentication failed for user \"{user}\": wrong password")]
    WrongPassword { user: String },
    /// The client sent something the authentication protocol does not allow.
    #[error("{0}")]
    Protocol(String),
    /// The client's SCRAM messages broke the protocol.
    #[error(transparent)]
    Scram(ScramError),
    /// The client went away mid-exchange (psql does this to prompt for a password).
    #[error("client closed the connection during authentication")]
    Closed,
    #[error("i/o error during authentication: {0}")]
    Io(#[from] std::io::Error),
}

impl AuthError {
    /// What to send the client before closing, if the connection can still carry it.
    /// Never says whether the user exists.
    pub fn client_error(&self) -> Option<ClientError> {
        match self {
            AuthError::UnknownUser { user } | AuthError::WrongPassword { user } => Some(ClientError::fatal(
                sqlstate::INVALID_PASSWORD,
                format!("password authentication failed for user \"{user}\""),
            )),
            AuthError::Protocol(msg) => Some(ClientError::fatal(sqlstate::PROTOCOL_VIOLATION, msg.clone())),
            AuthError::Scram(e @ ScramError::AuthzidNotSupported) => {
                Some(ClientError::fatal(sqlstate::FEATURE_NOT_SUPPORTED, e.to_string()))
            }
            AuthError::Scram(e) => Some(ClientError::fatal(sqlstate::PROTOCOL_VIOLATION, e.to_string())),
            AuthError::Closed | AuthError::Io(_) => None,
        }
    }
}

impl From<FrameError> for AuthError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Closed => AuthError::Closed,
            FrameError::Io(e) => AuthError::Io(e),
            e @ (FrameError::BadLength(_) | FrameError::TooLarge(..)) => {
                AuthError::Protocol(format!("invalid message during authentication: {e}"))
            }
        }
    }
}

/// Authenticate the client that named `username` in its startup packet; `user` is
/// that user's prepared credentials, `None` when chorus does not know the name.
///
/// Trust succeeds at once. SCRAM runs AuthenticationSASL, SASLInitialResponse,
/// AuthenticationSASLContinue, SASLResponse, AuthenticationSASLFinal. An unknown
/// user goes through the same messages with a mock verifier and fails like a wrong
/// password. On success nothing more is sent: AuthenticationOk is the caller's.
pub async fn authenticate<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    reader: &mut MessageReader<R>,
    writer: &mut W,
    user: Option<&AuthUser>,
    username: &str,
) -> Result<(), AuthError> {
    let mut scram = match user.map(|u| &u.credential) {
        Some(Credential::Trust) => return Ok(()),
        Some(Credential::Scram(verifier)) => ScramServer::new(verifier.clone()),
        None => ScramServer::mock(username),
    };
    let failed = |e: ScramError| match e {
        ScramError::InvalidProof if user.is_none() => AuthError::UnknownUser { user: username.to_string() },
        ScramError::InvalidProof => AuthError::WrongPassword { user: username.to_string() },
        e => AuthError::Scram(e),
    };

    let mut mechanisms = SCRAM_SHA_256.as_bytes().to_vec();
    mechanisms.extend_from_slice(b"\0\0");
    send(writer, build::auth(AUTH_SASL, &mechanisms)).await?;

    let initial = read_sasl(reader).await?;
    let client_first = match initial_response(initial.body())? {
        Some(data) => data.to_vec(),
        None => {
            // No initial response: ask for it with an empty challenge, as PostgreSQL does.
            send(writer, build::auth(AUTH_SASL_CONTINUE, &[])).await?;
            read_sasl(reader).await?.body().to_vec()
        }
    };
    let server_first = scram.server_first(&client_first).map_err(failed)?;
    send(writer, build::auth(AUTH_SASL_CONTINUE, &server_first)).await?;

    let client_final = read_sasl(reader).await?;
    let server_final = scram.server_final(client_final.body()).map_err(failed)?;
    send(writer, build::auth(AUTH_SASL_FINAL, &server_final)).await?;
    Ok(())
}

/// SASLInitialResponse: mechanism name, then the client's first message or -1.
fn initial_response(body: &[u8]) -> Result<Option<&[u8]>, AuthError> {
    let malformed = || AuthError::Protocol("malformed SASLInitialResponse message".to_string());
    let mut f = Fields::new(body);
    let mechanism = f.cstr().ok_or_else(malformed)?;
    if mechanism != SCRAM_SHA_256 {
        return Err(AuthError::Protocol(format!(
            "client selected an invalid SASL authentication mechanism \"{mechanism}\""
        )));
    }
    match f.i32().ok_or_else(malformed)? {
        -1 if f.rest().is_empty() => Ok(None),
        len if len >= 0 && len as usize == f.rest().len() => Ok(Some(f.rest())),
        _ => Err(malformed()),
    }
}

/// The next message, which must be a SASLInitialResponse / SASLResponse ('p').
async fn read_sasl<R: AsyncRead + Unpin>(reader: &mut MessageReader<R>) -> Result<Message, AuthError> {
    let msg = reader.read().await?;
    match msg.tag {
        b'p' => Ok(msg),
        b'X' => Err(AuthError::Closed),
        tag => Err(AuthError::Protocol(format!("expected SASL response, got message type {}", printable(tag)))),
    }
}

fn printable(tag: u8) -> String {
    if tag.is_ascii_graphic() { format!("'{}'", tag as char) } else { format!("0x{tag:02x}") }
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut W, msg: Message) -> Result<(), AuthError> {
    writer.write_all(&msg.frame).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthUsers;
    use crate::config::{AuthMethod, User};
    use crate::protocol::ServerError;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio_postgres::NoTls;
    use tokio_postgres::error::SqlState;

    const MAX: usize = 1 << 20;
    const PENCIL: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    fn users() -> Arc<AuthUsers> {
        let user = |name: &str, password: Option<&str>, auth| User {
            name: name.into(),
            password: password.map(Into::into),
            auth,
            mysql_auth: None,
        };
        Arc::new(
            AuthUsers::from_config(&[
                user("alice", Some("wonderland"), AuthMethod::ScramSha256),
                user("trusty", None, AuthMethod::Trust),
                // As stored by PostgreSQL for password "pencil" (RFC 7677's salt).
                user("bob", Some(PENCIL), AuthMethod::ScramSha256),
            ])
            .unwrap(),
        )
    }

    /// A tiny server: startup packet, [`authenticate`], then what a real server sends
    /// after it (AuthenticationOk, BackendKeyData, ReadyForQuery) or the error.
    async fn fake_server(stream: DuplexStream, users: Arc<AuthUsers>) -> Result<(), AuthError> {
        let (r, mut w) = tokio::io::split(stream);
        let mut reader = MessageReader::new(r, MAX);
        let username = loop {
            let startup = reader.read_startup(10_000).await?;
            let mut f = Fields::new(&startup);
            if f.i32() == Some(80877103) {
                w.write_all(b"N").await?; // SSLRequest: no TLS here
                continue;
            }
            let mut user = String::new();
            while let (Some(k), Some(v)) = (f.cstr(), f.cstr()) {
                if k == "user" {
                    user = v.to_string();
                }
            }
            break user;
        };
        let result = authenticate(&mut reader, &mut w, users.get(&username), &username).await;
        match &result {
            Ok(()) => {
                for m in [build::auth(0, &[]), build::backend_key_data(42, 7), build::ready_for_query(b'I')] {
                    w.write_all(&m.frame).await?;
                }
            }
            Err(e) => {
                if let Some(ce) = e.client_error() {
                    w.write_all(&ce.to_message().frame).await?;
                }
            }
        }
        w.flush().await?;
        result
    }

    /// Connect with the real tokio-postgres client; return its result and the server's.
    async fn connect(user: &str, password: Option<&str>) -> (Result<(), tokio_postgres::Error>, Result<(), AuthError>) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(fake_server(server_io, users()));
        let mut config = tokio_postgres::Config::new();
        config.user(user).dbname("app");
        if let Some(p) = password {
            config.password(p);
        }
        let client = config.connect_raw(client_io, NoTls).await.map(drop);
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn right_password_connects() {
        let (client, server) = connect("alice", Some("wonderland")).await;
        client.unwrap();
        server.unwrap();
        let (client, server) = connect("bob", Some("pencil")).await;
        client.unwrap();
        server.unwrap();
    }

    #[tokio::test]
    async fn wrong_password_gets_28p01() {
        let (client, server) = connect("alice", Some("looking-glass")).await;
        let err = client.unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err}");
        let db = err.as_db_error().unwrap();
        assert_eq!(db.message(), "password authentication failed for user \"alice\"");
        assert_eq!(db.severity(), "FATAL");
        assert!(matches!(server, Err(AuthError::WrongPassword { user }) if user == "alice"));
    }

    #[tokio::test]
    async fn unknown_user_fails_like_a_wrong_password() {
        let (client, server) = connect("mallory", Some("wonderland")).await;
        let err = client.unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err}");
        assert_eq!(err.as_db_error().unwrap().message(), "password authentication failed for user \"mallory\"");
        assert!(matches!(server, Err(AuthError::UnknownUser { user }) if user == "mallory"));
    }

    #[tokio::test]
    async fn trust_needs_no_password() {
        let (client, server) = connect("trusty", None).await;
        client.unwrap();
        server.unwrap();
    }

    /// A hand-driven client: sends the startup packet, returns the pipe and the
    /// server task.
    async fn raw_client(
        user: &str,
    ) -> (
        MessageReader<tokio::io::ReadHalf<DuplexStream>>,
        tokio::io::WriteHalf<DuplexStream>,
        tokio::task::JoinHandle<Result<(), AuthError>>,
    ) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(fake_server(server_io, users()));
        let (r, mut w) = tokio::io::split(client_io);
        let mut body = 196608i32.to_be_bytes().to_vec();
        body.extend_from_slice(format!("user\0{user}\0\0").as_bytes());
        let mut packet = (body.len() as i32 + 4).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        w.write_all(&packet).await.unwrap();
        let mut reader = MessageReader::new(r, MAX);
        let sasl = reader.read().await.unwrap();
        assert_eq!(sasl.tag, b'R');
        assert_eq!(sasl.body(), b"\0\0\0\x0aSCRAM-SHA-256\0\0");
        (reader, w, server)
    }

    fn sasl_initial(mechanism: &str, data: Option<&[u8]>) -> Message {
        let mut body = format!("{mechanism}\0").into_bytes();
        match data {
            Some(d) => {
                body.extend_from_slice(&(d.len() as i32).to_be_bytes());
                body.extend_from_slice(d);
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        Message::new(b'p', &body)
    }

    async fn expect_error(reader: &mut MessageReader<tokio::io::ReadHalf<DuplexStream>>) -> ServerError {
        let msg = reader.read().await.unwrap();
        assert_eq!(msg.tag, b'E');
        ServerError::parse(msg.body())
    }

    #[tokio::test]
    async fn garbage_instead_of_sasl_initial_response_gets_08p01() {
        let (mut reader, mut w, server) = raw_client("alice").await;
        w.write_all(&build::query("select 1").frame).await.unwrap();
        let err = expect_error(&mut reader).await;
        assert_eq!((err.severity.as_str(), err.code.as_str()), ("FATAL", "08P01"));
        assert_eq!(err.message, "expected SASL response, got message type 'Q'");
        assert!(matches!(server.await.unwrap(), Err(AuthError::Protocol(_))));
    }

    #[tokio::test]
    async fn protocol_violations_get_08p01() {
        let cases: Vec<(Message, &str)> = vec![
            (
                sasl_initial("SCRAM-SHA-256-PLUS", Some(b"p=tls-server-end-point,,n=,r=x")),
                "invalid SASL authentication mechanism",
            ),
            (sasl_initial("SCRAM-SHA-256", Some(b"x,,n=,r=abc")), "malformed SCRAM message"),
            (sasl_initial("SCRAM-SHA-256", Some(b"p=tls-server-end-point,,n=,r=abc")), "channel binding"),
            (Message::new(b'p', b"SCRAM-SHA-256\0\0\0\0\x09short"), "malformed SASLInitialResponse"),
            (Message::new(b'p', b"SCRAM-SHA-256"), "malformed SASLInitialResponse"),
        ];
        for (msg, want) in cases {
            let (mut reader, mut w, server) = raw_client("alice").await;
            w.write_all(&msg.frame).await.unwrap();
            let err = expect_error(&mut reader).await;
            assert_eq!(err.code, "08P01", "{want}: {err}");
            assert!(err.message.contains(want), "{want}: {err}");
            assert!(server.await.unwrap().is_err());
        }
    }

    #[tokio::test]
    async fn authzid_is_not_supported() {
        let (mut reader, mut w, server) = raw_client("alice").await;
        w.write_all(&sasl_initial("SCRAM-SHA-256", Some(b"n,a=bob,n=,r=abc")).frame).await.unwrap();
        assert_eq!(expect_error(&mut reader).await.code, "0A000");
        assert!(matches!(server.await.unwrap(), Err(AuthError::Scram(ScramError::AuthzidNotSupported))));
    }

    #[tokio::test]
    async fn initial_response_may_come_after_an_empty_challenge() {
        let (mut reader, mut w, server) = raw_client("alice").await;
        let mut scram = ScramSha256::new(b"wonderland", ChannelBinding::unsupported());
        w.write_all(&sasl_initial("SCRAM-SHA-256", None).frame).await.unwrap();
        assert_eq!(reader.read().await.unwrap().body(), b"\0\0\0\x0b");
        w.write_all(&Message::new(b'p', scram.message()).frame).await.unwrap();
        let first = reader.read().await.unwrap();
        assert_eq!(&first.body()[..4], b"\0\0\0\x0b");
        scram.update(&first.body()[4..]).unwrap();
        w.write_all(&Message::new(b'p', scram.message()).frame).await.unwrap();
        let last = reader.read().await.unwrap();
        assert_eq!(&last.body()[..4], b"\0\0\0\x0c");
        scram.finish(&last.body()[4..]).unwrap();
        assert_eq!(reader.read().await.unwrap().body(), b"\0\0\0\0", "AuthenticationOk from the caller");
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn client_going_away_is_closed() {
        let (reader, w, server) = raw_client("alice").await;
        drop((reader, w));
        assert!(matches!(server.await.unwrap(), Err(AuthError::Closed)));

        let (mut reader, mut w, server) = raw_client("alice").await;
        w.write_all(&build::terminate().frame).await.unwrap();
        assert!(matches!(server.await.unwrap(), Err(AuthError::Closed)));
        let mut rest = Vec::new();
        reader.get_mut().read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing is sent to a client that left");
    }

    #[test]
    fn client_errors_never_reveal_unknown_users() {
        let unknown = AuthError::UnknownUser { user: "x".into() }.client_error();
        let wrong = AuthError::WrongPassword { user: "x".into() }.client_error();
        assert_eq!(unknown, wrong);
        assert_eq!(unknown.unwrap().code, sqlstate::INVALID_PASSWORD);
        assert_eq!(AuthError::Closed.client_error(), None);
    }
}
