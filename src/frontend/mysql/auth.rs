//! Authenticating a MySQL client at chorus: mysql_native_password, and
//! caching_sha2_password with its fast path and its full authentication
//! (the password over TLS, or encrypted with chorus's RSA key).
//!
//! As in a MySQL server, caching_sha2_password's fast path is open to a user
//! once that user has authenticated in full since chorus started: the first
//! connection proves the password over a protected channel. A client that
//! names another plugin is asked to switch to mysql_native_password.

use crate::auth::mysql::{MysqlSecret, RsaKey};
use crate::auth::{AuthUsers, Credential};
use crate::protocol::mysql::consts::{CACHING_SHA2_PASSWORD, NATIVE_PASSWORD};
use crate::protocol::mysql::error::auth_switch_payload;
use crate::protocol::mysql::packet::write_payload;
use crate::protocol::mysql::{MyError, PacketError, PacketReader, code};
use std::collections::HashSet;
use tokio::io::{AsyncRead, AsyncWrite};

/// caching_sha2_password's fast-path tokens (see the module docs).
const FAST_AUTH_OK: &[u8] = &[0x01, 0x03];
const PERFORM_FULL_AUTH: &[u8] = &[0x01, 0x04];
const REQUEST_PUBLIC_KEY: &[u8] = &[0x02];

/// Users who have authenticated in full with caching_sha2_password.
#[derive(Debug, Default)]
pub struct Sha2Cache(parking_lot::Mutex<HashSet<String>>);

impl Sha2Cache {
    fn contains(&self, user: &str) -> bool {
        self.0.lock().contains(user)
    }
    fn insert(&self, user: &str) {
        self.0.lock().insert(user.to_string());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Tell the client, then close.
    #[error("{0}")]
    Denied(MyError),
    #[error(transparent)]
    Packet(#[from] PacketError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// One client's proof, as it arrived.
#[derive(Clone, Copy)]
pub struct Attempt<'a> {
    pub user: &'a str,
    pub plugin: Option<&'a str>,
    pub auth: &'a [u8],
    /// The client can switch plugins (CLIENT_PLUGIN_AUTH).
    pub can_switch: bool,
    /// The connection is TLS: a full authentication may send the password as is.
    pub tls: bool,
    /// Where the client connects from, for the error message.
    pub host: &'a str,
}

/// The exchange's side of the connection: reads the client's answers,
/// writes chorus's, keeping the sequence ids in step.
pub struct Channel<'a, R, W> {
    pub reader: &'a mut PacketReader<R>,
    pub writer: &'a mut W,
    /// The id of the next packet chorus writes.
    pub seq: &'a mut u8,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Channel<'_, R, W> {
    async fn send(&mut self, payload: &[u8]) -> Result<(), AuthError> {
        *self.seq = write_payload(self.writer, *self.seq, payload).await?;
        Ok(())
    }

    async fn receive(&mut self) -> Result<Vec<u8>, AuthError> {
        let p = self.reader.read_command().await?;
        *self.seq = p.seq.wrapping_add(1);
        Ok(p.payload.to_vec())
    }
}

fn denied(a: &Attempt<'_>, why: Option<&str>) -> AuthError {
    let using = if a.auth.is_empty() { "NO" } else { "YES" };
    let mut msg = format!("Access denied for user '{}'@'{}' (using password: {using})", a.user, a.host);
    if let Some(why) = why {
        msg.push_str(": ");
        msg.push_str(why);
    }
    AuthError::Denied(MyError::new(code::ACCESS_DENIED, msg))
}

/// Check the client's proof, asking for more where the plugin needs it.
/// Returns Ok once the user is in; the caller sends the final OK.
pub async fn authenticate<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    ch: &mut Channel<'_, R, W>,
    users: &AuthUsers,
    cache: &Sha2Cache,
    nonce: &[u8],
    a: &Attempt<'_>,
) -> Result<(), AuthError> {
    let Some(user) = users.get(a.user) else { return Err(denied(a, None)) };
    let secret = match (&user.credential, &user.mysql) {
        (Credential::Trust, _) => return Ok(()),
        (_, Some(s)) => s,
        (_, None) => {
            return Err(denied(
                a,
                Some(
                    "chorus has only a SCRAM verifier for this user; MySQL clients need the password itself \
                     in the [[users]] entry",
                ),
            ));
        }
    };
    let required = user.mysql_plugin.map(|p| p.plugin());
    if let Some(plugin) = required
        && a.plugin != Some(plugin)
        && !(a.plugin.is_none() && plugin == NATIVE_PASSWORD)
    {
        if !a.can_switch {
            return Err(AuthError::Denied(MyError::new(
                code::AUTH_MODE,
                format!("user '{}' must log in with {plugin}, and the client cannot switch plugins", a.user),
            )));
        }
        // As a MySQL server does for an account with another plugin.
        ch.send(&auth_switch_payload(plugin, nonce)).await?;
        let answer = ch.receive().await?;
        let switched = Attempt { plugin: Some(plugin), auth: &answer, ..*a };
        return match plugin {
            CACHING_SHA2_PASSWORD => sha2(ch, cache, secret, nonce, &switched).await,
            _ => check(secret.check_native(nonce, &answer), &switched),
        };
    }
    match a.plugin {
        Some(CACHING_SHA2_PASSWORD) => sha2(ch, cache, secret, nonce, a).await,
        Some(NATIVE_PASSWORD) | None => check(secret.check_native(nonce, a.auth), a),
        Some(_) if a.can_switch => {
            ch.send(&auth_switch_payload(NATIVE_PASSWORD, nonce)).await?;
            let answer = ch.receive().await?;
            check(secret.check_native(nonce, &answer), a)
        }
        Some(other) => Err(AuthError::Denied(MyError::new(
            code::AUTH_MODE,
            format!(
                "chorus does not support the authentication plugin {other:?}; use mysql_native_password or caching_sha2_password"
            ),
        ))),
    }
}

fn check(ok: bool, a: &Attempt<'_>) -> Result<(), AuthError> {
    if ok { Ok(()) } else { Err(denied(a, None)) }
}

async fn sha2<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    ch: &mut Channel<'_, R, W>,
    cache: &Sha2Cache,
    secret: &MysqlSecret,
    nonce: &[u8],
    a: &Attempt<'_>,
) -> Result<(), AuthError> {
    let mut scramble = a.auth.to_vec();
    if scramble.is_empty() && a.can_switch {
        // Some clients (libmariadb) name the plugin without an answer when
        // chorus greeted with another one: restart it with chorus's nonce.
        ch.send(&auth_switch_payload(CACHING_SHA2_PASSWORD, nonce)).await?;
        scramble = ch.receive().await?;
    }
    if scramble.is_empty() {
        return Err(denied(a, None));
    }
    if cache.contains(a.user) {
        if !secret.check_sha2(nonce, &scramble) {
            return Err(denied(a, None));
        }
        return ch.send(FAST_AUTH_OK).await;
    }
    ch.send(PERFORM_FULL_AUTH).await?;
    let mut answer = ch.receive().await?;
    let password = if a.tls {
        if answer.last() == Some(&0) {
            answer.pop();
        }
        answer
    } else {
        if answer == REQUEST_PUBLIC_KEY {
            let key = tokio::task::spawn_blocking(RsaKey::get).await.map_err(std::io::Error::other)?;
            let mut msg = vec![0x01];
            msg.extend_from_slice(key.public_pem().as_bytes());
            ch.send(&msg).await?;
            answer = ch.receive().await?;
        }
        let key = tokio::task::spawn_blocking(RsaKey::get).await.map_err(std::io::Error::other)?;
        match key.decrypt_password(nonce, &answer) {
            Some(p) => p,
            None => {
                return Err(denied(
                    a,
                    Some(
                        "caching_sha2_password needs TLS or chorus's RSA public key for the first login; \
                         connect with TLS, or let the client fetch the key (e.g. --get-server-public-key)",
                    ),
                ));
            }
        }
    };
    if !secret.check_plain(&password) {
        return Err(denied(a, None));
    }
    cache.insert(a.user);
    Ok(())
}
