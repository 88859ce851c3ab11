//! The SCRAM-SHA-256 secret chorus keeps per user, in PostgreSQL's stored format,
//! and the few cryptographic primitives (PBKDF2 "Hi", HMAC, H) SCRAM is built from.
//!
//! chorus keeps only the verifier (salt, iteration count, StoredKey, ServerKey),
//! never a plain password, after startup: a verifier lets chorus check a client's
//! proof but not log in anywhere as that client.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::digest::CtOutput;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

/// The SASL mechanism name, and the prefix of a stored verifier.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Iterations used when chorus derives a verifier from a plain password
/// (PostgreSQL's default `scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length used when chorus derives a verifier (as PostgreSQL does).
pub const DEFAULT_SALT_LEN: usize = 16;

/// Upper bound on the iteration count accepted in a stored verifier, so a typo in
/// the configuration cannot stall startup (PostgreSQL itself allows up to 2^31-1,
/// but nobody configures more than a few hundred thousand).
const MAX_ITERATIONS: u32 = 10_000_000;

/// Length of SHA-256 output, and so of every SCRAM key and proof.
pub const KEY_LEN: usize = 32;

/// What a server needs to check a SCRAM-SHA-256 proof: PostgreSQL's
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    /// H(ClientKey): checks the client's proof.
    pub stored_key: [u8; KEY_LEN],
    /// HMAC(SaltedPassword, "Server Key"): proves chorus to the client.
    pub server_key: [u8; KEY_LEN],
}

/// Why a stored verifier could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifierError {
    #[error("not a SCRAM-SHA-256 verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)")]
    Format,
    #[error("invalid iteration count in SCRAM verifier (must be between 1 and {MAX_ITERATIONS})")]
    Iterations,
    #[error("invalid salt in SCRAM verifier (must be non-empty base64)")]
    Salt,
    #[error("invalid StoredKey or ServerKey in SCRAM verifier (must be base64 of {KEY_LEN} bytes)")]
    Key,
}

impl ScramVerifier {
    /// Read PostgreSQL's stored format (as in `pg_authid.rolpassword`).
    pub fn parse(s: &str) -> Result<ScramVerifier, VerifierError> {
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or(VerifierError::Format)?;
        let (iter_salt, keys) = rest.split_once('$').ok_or(VerifierError::Format)?;
        let (iterations, salt) = iter_salt.split_once(':').ok_or(VerifierError::Format)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(VerifierError::Format)?;
        let iterations: u32 = iterations.parse().map_err(|_| VerifierError::Iterations)?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(VerifierError::Iterations);
        }
        let salt = STANDARD.decode(salt).map_err(|_| VerifierError::Salt)?;
        if salt.is_empty() {
            return Err(VerifierError::Salt);
        }
        Ok(ScramVerifier { iterations, salt, stored_key: decode_key(stored_key)?, server_key: decode_key(server_key)? })
    }

    /// Derive a verifier from a password, SASLprep'ing it the way PostgreSQL does.
    /// Exact for ASCII passwords; see `saslprep` for the non-ASCII gap, which
    /// [`ScramVerifier::for_config_password`] does not have.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
        let salted = hi(&saslprep(password), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// The verifier for a configured `password`: either already a verifier
    /// (`SCRAM-SHA-256$...`, used as is) or a plain password, derived here with a
    /// random salt and 4096 iterations. Call once at startup, not per connection:
    /// the derivation is deliberately slow.
    pub fn for_config_password(password: &str) -> Result<ScramVerifier, VerifierError> {
        if password.starts_with("SCRAM-SHA-256$") {
            return ScramVerifier::parse(password);
        }
        // postgres-protocol derives exactly what PostgreSQL's `ALTER ROLE ... PASSWORD`
        // stores (full SASLprep of non-ASCII passwords included, random 16-byte salt,
        // 4096 iterations); reading its output back keeps one code path for both cases.
        ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(password.as_bytes()))
    }

    /// A verifier no password matches, with a salt stable per `username` for the life
    /// of the process: an unknown user then looks like a known one, even across
    /// repeated attempts (PostgreSQL's `scram_mock_salt` does the same).
    pub fn mock(username: &str) -> ScramVerifier {
        static SECRET: std::sync::OnceLock<[u8; KEY_LEN]> = std::sync::OnceLock::new();
        let secret = SECRET.get_or_init(|| {
            let mut s = [0u8; KEY_LEN];
            rand::fill(&mut s[..]);
            s
        });
        let salt = hmac(secret, username.as_bytes())[..DEFAULT_SALT_LEN].to_vec();
        let mut stored_key = [0u8; KEY_LEN];
        let mut server_key = [0u8; KEY_LEN];
        rand::fill(&mut stored_key[..]);
        rand::fill(&mut server_key[..]);
        ScramVerifier { iterations: DEFAULT_ITERATIONS, salt, stored_key, server_key }
    }
}

fn decode_key(s: &str) -> Result<[u8; KEY_LEN], VerifierError> {
    let bytes = STANDARD.decode(s).map_err(|_| VerifierError::Key)?;
    bytes.try_into().map_err(|_| VerifierError::Key)
}

impl fmt::Display for ScramVerifier {
    /// PostgreSQL's stored format, readable by [`ScramVerifier::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    /// Keys stay out of logs: with both of them one can impersonate chorus to a client.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &STANDARD.encode(&self.salt))
            .finish_non_exhaustive()
    }
}

/// SASLprep (RFC 4013) as PostgreSQL applies it to passwords: when the password
/// cannot be prepared, the raw bytes are used instead.
///
/// For ASCII passwords the result is exact: SASLprep maps printable ASCII to
/// itself, and the ASCII it prohibits (control characters) makes PostgreSQL fall
/// back to the raw bytes, which are the same. Non-ASCII passwords would need NFKC
/// normalization, which needs the `stringprep` crate as a direct dependency; until
/// then they are used raw here. [`ScramVerifier::for_config_password`] does not
/// go through this function and is exact for every password.
fn saslprep(password: &str) -> Vec<u8> {
    password.as_bytes().to_vec()
}

/// PBKDF2-HMAC-SHA-256 with one output block: RFC 5802's `Hi(str, salt, i)`.
pub fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    let key = Hmac::<Sha256>::new_from_slice(password).expect("HMAC takes keys of any length");
    let mut u: [u8; KEY_LEN] =
        key.clone().chain_update(salt).chain_update(1u32.to_be_bytes()).finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        u = key.clone().chain_update(u).finalize().into_bytes().into();
        out.iter_mut().zip(u).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// HMAC-SHA-256(key, data).
pub fn hmac(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    Hmac::<Sha256>::new_from_slice(key)
        .expect("HMAC takes keys of any length")
        .chain_update(data)
        .finalize()
        .into_bytes()
        .into()
}

/// SHA-256(data): SCRAM's `H`.
pub fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

/// Equality whose time does not depend on where the inputs differ.
pub fn ct_eq(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> bool {
    CtOutput::<Sha256>::new((*a).into()) == CtOutput::<Sha256>::new((*b).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example: password "pencil", this salt, 4096 iterations.
    const PENCIL: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    #[test]
    fn pbkdf2_matches_rfc_7914_vector() {
        // RFC 7914 section 11, PBKDF2-HMAC-SHA256 P="passwd" S="salt" c=1 (first 32 bytes).
        let out = hi(b"passwd", b"salt", 1);
        assert_eq!(hex(&out), "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc");
    }

    #[test]
    fn derives_rfc_7677_keys() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = ScramVerifier::from_password("pencil", &salt, 4096);
        assert_eq!(v.to_string(), PENCIL);
        assert_eq!(ScramVerifier::parse(PENCIL).unwrap(), v);
    }

    #[test]
    fn agrees_with_postgres_protocol() {
        let stored = postgres_protocol::password::scram_sha_256(b"s3cret pass!");
        let v = ScramVerifier::parse(&stored).unwrap();
        assert_eq!(v.to_string(), stored);
        assert_eq!(ScramVerifier::from_password("s3cret pass!", &v.salt, v.iterations), v);
    }

    #[test]
    fn config_password_detects_verifiers() {
        assert_eq!(ScramVerifier::for_config_password(PENCIL).unwrap().to_string(), PENCIL);
        let a = ScramVerifier::for_config_password("pencil").unwrap();
        let b = ScramVerifier::for_config_password("pencil").unwrap();
        assert_eq!(a.iterations, DEFAULT_ITERATIONS);
        assert_eq!(a.salt.len(), DEFAULT_SALT_LEN);
        assert_ne!(a.salt, b.salt, "salt is random");
        assert_eq!(ScramVerifier::from_password("pencil", &a.salt, a.iterations), a);
        // A broken verifier is an error, never silently taken as a plain password.
        assert!(ScramVerifier::for_config_password("SCRAM-SHA-256$4096:abc").is_err());
    }

    #[test]
    fn rejects_malformed_verifiers() {
        let cases = [
            ("md5abcdef", VerifierError::Format),
            ("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==", VerifierError::Format),
            ("SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$AA==:AA==", VerifierError::Iterations),
            ("SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$AA==:AA==", VerifierError::Iterations),
            ("SCRAM-SHA-256$4096:!!$AA==:AA==", VerifierError::Salt),
            ("SCRAM-SHA-256$4096:$AA==:AA==", VerifierError::Salt),
            ("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AA==:AA==", VerifierError::Key),
        ];
        for (text, want) in cases {
            assert_eq!(ScramVerifier::parse(text), Err(want), "{text}");
        }
    }

    #[test]
    fn mock_salt_is_stable_per_user() {
        assert_eq!(ScramVerifier::mock("alice").salt, ScramVerifier::mock("alice").salt);
        assert_ne!(ScramVerifier::mock("alice").salt, ScramVerifier::mock("bob").salt);
        assert_eq!(ScramVerifier::mock("alice").salt.len(), DEFAULT_SALT_LEN);
    }

    #[test]
    fn debug_hides_keys() {
        let text = format!("{:?}", ScramVerifier::parse(PENCIL).unwrap());
        assert!(!text.contains("WG5d8oPm"), "{text}");
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(&[7; KEY_LEN], &[7; KEY_LEN]));
        let mut other = [7; KEY_LEN];
        other[31] = 8;
        assert!(!ct_eq(&[7; KEY_LEN], &other));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
