//! Server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677), pure: no I/O.
//!
//! Follows PostgreSQL's `auth-scram.c`: the username inside the SCRAM messages is
//! ignored (the startup packet's user counts), channel binding is never used (only
//! `SCRAM-SHA-256` is advertised, not `-PLUS`), and an unknown user runs the whole
//! exchange against a mock verifier so it fails exactly like a wrong password.

use super::verifier::{KEY_LEN, ct_eq, hmac, sha256};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub use super::verifier::{DEFAULT_ITERATIONS, SCRAM_SHA_256, ScramVerifier, VerifierError};

/// Random bytes in the server's part of the nonce (PostgreSQL's `SCRAM_RAW_NONCE_LEN`).
const RAW_NONCE_LEN: usize = 18;

/// What went wrong in an exchange. Every variant but [`ScramError::InvalidProof`]
/// is the client breaking the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The proof does not match: wrong password, or an unknown user (mock verifier).
    #[error("SCRAM proof does not match")]
    InvalidProof,
    #[error("malformed SCRAM message ({0})")]
    Malformed(&'static str),
    #[error(
        "the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data"
    )]
    ChannelBindingNotSupported,
    #[error("the client uses an authorization identity, which is not supported")]
    AuthzidNotSupported,
    #[error("the client requires an unsupported SCRAM extension")]
    ExtensionNotSupported,
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    #[error("SCRAM nonce does not match")]
    NonceMismatch,
    #[error("SCRAM message out of order")]
    OutOfOrder,
}

/// Where an exchange stands.
enum State {
    /// Waiting for client-first-message.
    Initial,
    /// server-first-message sent; waiting for client-final-message.
    SentFirst {
        /// The gs2 header the client sent ("n,," or "y,,"); `c=` must repeat it.
        gs2_header: &'static str,
        /// Client nonce followed by ours.
        nonce: String,
        /// `client-first-message-bare "," server-first-message`: the start of AuthMessage.
        auth_prefix: String,
    },
    Done,
}

/// One SCRAM-SHA-256 exchange with one client, as a state machine: feed it the
/// client's two messages, send back what it returns.
pub struct ScramServer {
    verifier: ScramVerifier,
    /// Set for an unknown user: run the exchange to the end, then fail.
    doomed: bool,
    server_nonce: String,
    state: State,
}

impl ScramServer {
    /// An exchange for a known user with this verifier.
    pub fn new(verifier: ScramVerifier) -> ScramServer {
        ScramServer::with_nonce(verifier, false, random_nonce())
    }

    /// An exchange for a user chorus does not know: indistinguishable on the wire
    /// from a real one, and it always ends in [`ScramError::InvalidProof`].
    pub fn mock(username: &str) -> ScramServer {
        ScramServer::with_nonce(ScramVerifier::mock(username), true, random_nonce())
    }

    fn with_nonce(verifier: ScramVerifier, doomed: bool, server_nonce: String) -> ScramServer {
        ScramServer { verifier, doomed, server_nonce, state: State::Initial }
    }

    /// Read client-first-message, return server-first-message.
    pub fn server_first(&mut self, client_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::Initial) {
            return Err(ScramError::OutOfOrder);
        }
        self.state = State::Done; // until this step succeeds
        let msg = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut p = Parser(msg);

        // gs2-header: cbind-flag "," [authzid] ","
        let gs2_header = match p.field()? {
            "n" => "n,,",
            "y" => "y,,",
            f if f.starts_with("p=") => return Err(ScramError::ChannelBindingNotSupported),
            _ => return Err(ScramError::Malformed("unexpected channel-binding flag")),
        };
        match p.field()? {
            "" => {}
            f if f.starts_with("a=") => return Err(ScramError::AuthzidNotSupported),
            _ => return Err(ScramError::Malformed("unexpected attribute in gs2 header")),
        }

        // client-first-message-bare: [reserved-mext ","] username "," nonce ["," extensions]
        let bare = p.0;
        if bare.starts_with("m=") {
            return Err(ScramError::ExtensionNotSupported);
        }
        // The username is ignored, like PostgreSQL: the startup packet names the user.
        p.attr('n')?;
        let client_nonce = p.attr('r')?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(is_nonce_char) {
            return Err(ScramError::Malformed("invalid client nonce"));
        }
        // Optional extensions after the nonce are ignored (RFC 5802 section 5.1).
        while !p.0.is_empty() {
            check_extension(p.field()?)?;
        }

        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first =
            format!("r={nonce},s={},i={}", STANDARD.encode(&self.verifier.salt), self.verifier.iterations);
        let auth_prefix = format!("{bare},{server_first}");
        self.state = State::SentFirst { gs2_header, nonce, auth_prefix };
        Ok(server_first.into_bytes())
    }

    /// Read client-final-message, check the proof, return server-final-message.
    pub fn server_final(&mut self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::SentFirst { gs2_header, nonce, auth_prefix } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut p = Parser(msg);

        // channel-binding "," nonce ["," extensions] "," proof
        let cbind = p.attr('c')?;
        let cbind = STANDARD.decode(cbind).map_err(|_| ScramError::Malformed("invalid channel binding"))?;
        if cbind != gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if p.attr('r')? != nonce {
            return Err(ScramError::NonceMismatch);
        }
        // Extensions, up to the proof, which must come last (PostgreSQL takes the first p=).
        let (proof_at, proof) = loop {
            let start = msg.len() - p.0.len();
            if p.0.is_empty() {
                return Err(ScramError::Malformed("missing proof"));
            }
            let field = p.field()?;
            if let Some(proof) = field.strip_prefix("p=") {
                if start + field.len() != msg.len() {
                    return Err(ScramError::Malformed("garbage at end of client-final-message"));
                }
                break (start, proof);
            }
            check_extension(field)?;
        };
        let without_proof = &msg[..proof_at - 1];
        let proof: [u8; KEY_LEN] = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("invalid proof"))?;

        let auth_message = format!("{auth_prefix},{without_proof}");
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = proof;
        client_key.iter_mut().zip(client_signature).for_each(|(k, s)| *k ^= s);
        let matches = ct_eq(&sha256(&client_key), &self.verifier.stored_key);
        if !matches || self.doomed {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

/// An extension attribute: `letter "=" value`; its meaning is ignored.
fn check_extension(field: &str) -> Result<(), ScramError> {
    match field.as_bytes() {
        [name, b'=', ..] if name.is_ascii_alphabetic() => Ok(()),
        _ => Err(ScramError::Malformed("invalid attribute")),
    }
}

/// Printable ASCII except ',' (RFC 5802 `printable`).
fn is_nonce_char(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

/// 18 random bytes, base64: only nonce characters, like PostgreSQL's server nonce.
fn random_nonce() -> String {
    let mut raw = [0u8; RAW_NONCE_LEN];
    rand::fill(&mut raw[..]);
    STANDARD.encode(raw)
}

/// Cursor over comma-separated SCRAM attributes.
struct Parser<'a>(&'a str);

impl<'a> Parser<'a> {
    /// The text up to the next ',' (which is consumed); the rest if there is none.
    fn field(&mut self) -> Result<&'a str, ScramError> {
        match self.0.split_once(',') {
            Some((f, rest)) => {
                self.0 = rest;
                Ok(f)
            }
            None if self.0.is_empty() => Err(ScramError::Malformed("message ends too early")),
            None => Ok(std::mem::take(&mut self.0)),
        }
    }

    /// The value of the next field, which must be the attribute `name`.
    fn attr(&mut self, name: char) -> Result<&'a str, ScramError> {
        let field = self.field()?;
        let mut chars = field.chars();
        if chars.next() != Some(name) || chars.next() != Some('=') {
            return Err(ScramError::Malformed(match name {
                'n' => "expected username attribute",
                'r' => "expected nonce attribute",
                'c' => "expected channel-binding attribute",
                _ => "unexpected attribute",
            }));
        }
        Ok(&field[2..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str =
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn pencil() -> ScramVerifier {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramVerifier::from_password("pencil", &salt, 4096)
    }

    fn rfc_server() -> ScramServer {
        ScramServer::with_nonce(pencil(), false, SERVER_NONCE.to_string())
    }

    #[test]
    fn rfc_7677_example() {
        let mut s = rfc_server();
        assert_eq!(s.server_first(CLIENT_FIRST.as_bytes()).unwrap(), SERVER_FIRST.as_bytes());
        assert_eq!(s.server_final(CLIENT_FINAL.as_bytes()).unwrap(), SERVER_FINAL.as_bytes());
        assert_eq!(s.server_final(CLIENT_FINAL.as_bytes()), Err(ScramError::OutOfOrder));
    }

    #[test]
    fn rfc_7677_example_with_a_wrong_proof() {
        let mut s = rfc_server();
        s.server_first(CLIENT_FIRST.as_bytes()).unwrap();
        let bad = CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
        assert_eq!(s.server_final(bad.as_bytes()), Err(ScramError::InvalidProof));
    }

    /// Run a whole exchange with postgres-protocol's client, the one tokio-postgres uses.
    fn exchange(server: &mut ScramServer, password: &str, cb: ChannelBinding) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), cb);
        let first = server.server_first(client.message())?;
        client.update(&first).expect("client accepts server-first");
        let last = server.server_final(client.message())?;
        client.finish(&last).expect("client accepts the server's signature");
        Ok(())
    }

    #[test]
    fn round_trips_with_postgres_protocol_client() {
        for password in ["pencil", "correct horse battery staple", "p@ss,w=rd$:\\\"'"] {
            let v = ScramVerifier::for_config_password(password).unwrap();
            // postgres-protocol sends "y,," for unrequested and "n,," for unsupported.
            assert_eq!(exchange(&mut ScramServer::new(v.clone()), password, ChannelBinding::unrequested()), Ok(()));
            assert_eq!(exchange(&mut ScramServer::new(v.clone()), password, ChannelBinding::unsupported()), Ok(()));
            assert_eq!(
                exchange(&mut ScramServer::new(v), "wrong", ChannelBinding::unsupported()),
                Err(ScramError::InvalidProof)
            );
        }
    }

    #[test]
    fn non_ascii_config_passwords_are_saslprepped() {
        // U+00AA (ª) becomes "a" under NFKC, U+00AD (soft hyphen) maps to nothing:
        // the client prepares the password, so the stored verifier must too.
        let v = ScramVerifier::for_config_password("p\u{ad}ªss wörd").unwrap();
        assert_eq!(
            exchange(&mut ScramServer::new(v.clone()), "p\u{ad}ªss wörd", ChannelBinding::unsupported()),
            Ok(())
        );
        // Both sides prepare, so the prepared form is the same password...
        assert_eq!(exchange(&mut ScramServer::new(v.clone()), "pass wörd", ChannelBinding::unsupported()), Ok(()));
        // ...and a different one is not.
        assert_eq!(
            exchange(&mut ScramServer::new(v), "pass word", ChannelBinding::unsupported()),
            Err(ScramError::InvalidProof)
        );
    }

    #[test]
    fn mock_fails_like_a_wrong_password() {
        for password in ["", "pencil"] {
            let mut s = ScramServer::mock("nobody");
            assert_eq!(exchange(&mut s, password, ChannelBinding::unsupported()), Err(ScramError::InvalidProof));
        }
        // Even a proof built from the mock's own salt cannot match.
        let v = ScramVerifier::mock("nobody");
        let mut s = ScramServer::mock("nobody");
        let mut client = ScramSha256::new(b"x", ChannelBinding::unsupported());
        let first = s.server_first(client.message()).unwrap();
        assert!(String::from_utf8(first.clone()).unwrap().contains(&STANDARD.encode(&v.salt)));
        client.update(&first).unwrap();
        assert_eq!(s.server_final(client.message()), Err(ScramError::InvalidProof));
    }

    #[test]
    fn server_nonce_is_fresh_and_printable() {
        let a = ScramServer::new(pencil()).server_nonce;
        let b = ScramServer::new(pencil()).server_nonce;
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(is_nonce_char));
    }

    #[test]
    fn rejects_bad_client_first() {
        use ScramError::*;
        let cases: &[(&str, ScramError)] = &[
            ("", Malformed("message ends too early")),
            ("x,,n=,r=abc", Malformed("unexpected channel-binding flag")),
            ("p=tls-server-end-point,,n=,r=abc", ChannelBindingNotSupported),
            ("n,a=admin,n=,r=abc", AuthzidNotSupported),
            ("n,x,n=,r=abc", Malformed("unexpected attribute in gs2 header")),
            ("n,,m=ext,n=,r=abc", ExtensionNotSupported),
            ("n,,r=abc", Malformed("expected username attribute")),
            ("n,,n=user", Malformed("message ends too early")),
            ("n,,n=user,x=abc", Malformed("expected nonce attribute")),
            ("n,,n=user,r=", Malformed("invalid client nonce")),
            ("n,,n=user,r=a b", Malformed("invalid client nonce")),
            ("n,", Malformed("message ends too early")),
        ];
        for (msg, want) in cases {
            assert_eq!(rfc_server().server_first(msg.as_bytes()).as_ref(), Err(want), "{msg:?}");
        }
        assert_eq!(rfc_server().server_first(b"n,,n=\xff,r=abc"), Err(Malformed("not UTF-8")));
        // Extensions after the nonce are allowed and ignored.
        assert!(rfc_server().server_first(b"n,,n=user,r=abc,x=ext").is_ok());
        assert_eq!(rfc_server().server_first(b"n,,n=user,r=abc,ext"), Err(Malformed("invalid attribute")));
    }

    #[test]
    fn rejects_bad_client_final() {
        use ScramError::*;
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let cases: Vec<(String, ScramError)> = vec![
            (format!("c=eSws,r={nonce},p={proof}"), ChannelBindingMismatch),
            (format!("c=!!,r={nonce},p={proof}"), Malformed("invalid channel binding")),
            (format!("r={nonce},p={proof}"), Malformed("expected channel-binding attribute")),
            (format!("c=biws,r={nonce}x,p={proof}"), NonceMismatch),
            (format!("c=biws,p={proof}"), Malformed("expected nonce attribute")),
            (format!("c=biws,r={nonce}"), Malformed("missing proof")),
            (format!("c=biws,r={nonce},p=AAAA"), Malformed("invalid proof")),
            (format!("c=biws,r={nonce},p={proof},x=1"), Malformed("garbage at end of client-final-message")),
            (format!("c=biws,r={nonce},p={proof},"), Malformed("garbage at end of client-final-message")),
            (format!("c=biws,r={nonce},"), Malformed("missing proof")),
            (format!("c=biws,r={nonce},x,p={proof}"), Malformed("invalid attribute")),
            (format!("c=biws,r={nonce},p={proof},p={proof}"), Malformed("garbage at end of client-final-message")),
            (format!("c=biws,r={nonce},x=ext,p={proof}"), InvalidProof), // extension is part of AuthMessage
        ];
        for (msg, want) in cases {
            let mut s = rfc_server();
            s.server_first(CLIENT_FIRST.as_bytes()).unwrap();
            assert_eq!(s.server_final(msg.as_bytes()), Err(want), "{msg:?}");
        }
        // A "y,," client must repeat "y,," in c=.
        let mut s = rfc_server();
        s.server_first(b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(s.server_final(CLIENT_FINAL.as_bytes()), Err(ChannelBindingMismatch));
        // Out of order, and no second chance after an error.
        assert_eq!(rfc_server().server_final(CLIENT_FINAL.as_bytes()), Err(OutOfOrder));
        let mut s = rfc_server();
        assert!(s.server_first(b"garbage").is_err());
        assert_eq!(s.server_first(CLIENT_FIRST.as_bytes()), Err(OutOfOrder));
    }
}
