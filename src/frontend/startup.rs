//! The PostgreSQL startup phase: SSLRequest / GSSENCRequest negotiation (TLS via
//! rustls when configured), CancelRequest, and the StartupMessage.

use crate::protocol::{ClientError, Fields, sqlstate};
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
/// Startup packets larger than this are garbage (PostgreSQL uses 10000).
const MAX_STARTUP_PACKET: usize = 10_000;

/// The client's stream after negotiation.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What the client asked for.
pub enum Startup {
    Cancel { pid: i32, secret: i32 },
    Session { user: String, database: String, params: Vec<(String, String)> },
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("client closed the connection during startup")]
    Closed,
    #[error("i/o error during startup: {0}")]
    Io(#[from] std::io::Error),
    /// Reported to the client, then the connection is closed.
    #[error("{0}")]
    Reject(ClientError),
}

impl StartupError {
    pub fn client_error(&self) -> Option<&ClientError> {
        match self {
            StartupError::Reject(e) => Some(e),
            _ => None,
        }
    }
}

fn reject(code: &'static str, msg: impl Into<String>) -> StartupError {
    StartupError::Reject(ClientError::fatal(code, msg))
}

async fn read_packet<S: AsyncRead + Unpin>(s: &mut S) -> Result<BytesMut, StartupError> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(StartupError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = i32::from_be_bytes(len);
    if !(8..=MAX_STARTUP_PACKET as i32).contains(&len) {
        return Err(reject(sqlstate::PROTOCOL_VIOLATION, format!("invalid length of startup packet ({len})")));
    }
    let mut body = BytesMut::zeroed(len as usize - 4);
    s.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => StartupError::Closed,
        _ => e.into(),
    })?;
    Ok(body)
}

/// Send a startup rejection to the client before giving up on it.
async fn report<S: AsyncWrite + Unpin, T>(s: &mut S, r: Result<T, StartupError>) -> Result<T, StartupError> {
    if let Err(StartupError::Reject(e)) = &r {
        let _ = s.write_all(&e.to_message().frame).await;
        let _ = s.shutdown().await;
    }
    r
}

/// Run the startup phase on a fresh connection. Rejections (bad packets,
/// unsupported protocol versions) are reported to the client before returning.
pub async fn negotiate(stream: TcpStream, tls: Option<&TlsAcceptor>) -> Result<(ClientStream, Startup), StartupError> {
    let mut plain = stream;
    loop {
        let r = read_packet(&mut plain).await;
        let body = report(&mut plain, r).await?;
        let mut f = Fields::new(&body);
        let code = f.i32().unwrap_or(0);
        match code {
            SSL_REQUEST => match tls {
                Some(acceptor) => {
                    plain.write_all(b"S").await?;
                    let mut s = acceptor.accept(plain).await?;
                    let r = read_packet(&mut s).await;
                    let body = report(&mut s, r).await?;
                    let r = parse_startup(&body, &mut s).await;
                    return match report(&mut s, r).await? {
                        Some(st) => Ok((ClientStream::Tls(Box::new(s)), st)),
                        None => Err(reject(sqlstate::PROTOCOL_VIOLATION, "unexpected SSLRequest after TLS")),
                    };
                }
                None => plain.write_all(b"N").await?,
            },
            GSSENC_REQUEST => plain.write_all(b"N").await?,
            _ => {
                let r = parse_startup(&body, &mut plain).await;
                return match report(&mut plain, r).await? {
                    Some(st) => Ok((ClientStream::Plain(plain), st)),
                    None => Err(reject(sqlstate::PROTOCOL_VIOLATION, "unexpected encryption request")),
                };
            }
        }
    }
}

/// Decode a StartupMessage or CancelRequest. Protocol 3.x minor versions above
/// 0 and `_pq_.` options get a NegotiateProtocolVersion, as PostgreSQL does.
async fn parse_startup<S: AsyncWrite + Unpin>(body: &[u8], s: &mut S) -> Result<Option<Startup>, StartupError> {
    let mut f = Fields::new(body);
    let code = f.i32().unwrap_or(0);
    if code == SSL_REQUEST || code == GSSENC_REQUEST {
        return Ok(None);
    }
    if code == CANCEL_REQUEST {
        let pid = f.i32().ok_or_else(|| reject(sqlstate::PROTOCOL_VIOLATION, "malformed cancel request"))?;
        let secret = f.i32().ok_or_else(|| reject(sqlstate::PROTOCOL_VIOLATION, "malformed cancel request"))?;
        return Ok(Some(Startup::Cancel { pid, secret }));
    }
    let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
    if major != 3 {
        return Err(reject(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("unsupported frontend protocol {major}.{minor}: chorus supports protocol 3.0"),
        ));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    let mut unknown_options = Vec::new();
    loop {
        let Some(k) = f.cstr() else {
            return Err(reject(sqlstate::PROTOCOL_VIOLATION, "invalid startup packet layout"));
        };
        if k.is_empty() {
            break;
        }
        let Some(v) = f.cstr() else {
            return Err(reject(sqlstate::PROTOCOL_VIOLATION, "invalid startup packet layout: missing value"));
        };
        if k.starts_with("_pq_.") {
            unknown_options.push(k.to_string());
        } else {
            params.push((k.to_string(), v.to_string()));
        }
    }
    if minor > 0 || !unknown_options.is_empty() {
        let mut b = BytesMut::new();
        b.put_i32(0);
        b.put_i32(unknown_options.len() as i32);
        for o in &unknown_options {
            b.put_slice(o.as_bytes());
            b.put_u8(0);
        }
        s.write_all(&crate::protocol::Message::new(b'v', &b).frame).await?;
    }
    let mut user = None;
    let mut database = None;
    let mut session = Vec::new();
    for (k, v) in params {
        match k.as_str() {
            "user" => user = Some(v),
            "database" => database = Some(v),
            "replication" if v != "false" && v != "0" && v != "off" && v != "no" => {
                return Err(reject(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "replication connections are not supported by chorus",
                ));
            }
            "replication" => {}
            "options" => session.extend(parse_options(&v)?),
            _ => session.push((k, v)),
        }
    }
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Err(reject(sqlstate::INVALID_AUTHORIZATION, "no PostgreSQL user name specified in startup packet"));
    };
    let database = database.filter(|d| !d.is_empty()).unwrap_or_else(|| user.clone());
    Ok(Some(Startup::Session { user, database, params: session }))
}

/// Split the `options` startup parameter (`-c name=value --name=value`, with
/// backslash escapes) into settings.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, StartupError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
        } else if let Some(rest) = w.strip_prefix("-c") {
            Some(rest.to_string())
        } else if let Some(rest) = w.strip_prefix("--") {
            Some(rest.to_string())
        } else {
            return Err(reject(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("unsupported command-line option in \"options\": {w} (only -c name=value is supported)"),
            ));
        };
        let Some((k, v)) = setting.as_deref().and_then(|s| s.split_once('=')) else {
            return Err(reject(sqlstate::PROTOCOL_VIOLATION, format!("invalid option in \"options\": {w}")));
        };
        out.push((k.replace('-', "_"), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options("-c intervalstyle=iso_8601 --search-path=a,b -csearch_path=x\\ y").unwrap();
        assert_eq!(
            o,
            vec![
                ("intervalstyle".into(), "iso_8601".into()),
                ("search_path".into(), "a,b".into()),
                ("search_path".into(), "x y".into())
            ]
        );
        assert!(parse_options("-x").is_err());
        assert!(parse_options("").unwrap().is_empty());
    }
}
