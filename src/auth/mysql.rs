//! MySQL password authentication, both sides: checking a client's scramble
//! (mysql_native_password, caching_sha2_password's fast path), decrypting a
//! caching_sha2_password full authentication sent with chorus's RSA key, and
//! computing chorus's own scrambles for the servers behind it.
//!
//! Neither plugin sends the password: the client proves it knows a hash of it
//! by mixing that hash with the nonce chorus sent. chorus keeps only the
//! double hashes ([`MysqlSecret`]), as a MySQL server does.

use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// Length of the nonce (the handshake's "auth plugin data").
pub const NONCE_LEN: usize = 20;

/// What chorus stores to check a MySQL client's password.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlSecret {
    /// SHA1(SHA1(password)), as in mysql.user for mysql_native_password.
    native: [u8; 20],
    /// SHA256(SHA256(password)): caching_sha2_password's cached value.
    sha2: [u8; 32],
}

impl std::fmt::Debug for MysqlSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MysqlSecret(..)")
    }
}

impl MysqlSecret {
    pub fn from_password(password: &str) -> MysqlSecret {
        let native: [u8; 20] = Sha1::digest(Sha1::digest(password.as_bytes())).into();
        let sha2: [u8; 32] = Sha256::digest(Sha256::digest(password.as_bytes())).into();
        MysqlSecret { native, sha2 }
    }

    /// mysql_native_password: response = SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))).
    pub fn check_native(&self, nonce: &[u8], response: &[u8]) -> bool {
        if response.len() != 20 {
            return false;
        }
        let mix: [u8; 20] = Sha1::new().chain_update(nonce).chain_update(self.native).finalize().into();
        let stage1: Vec<u8> = response.iter().zip(mix).map(|(a, b)| a ^ b).collect();
        constant_eq(&Sha1::digest(&stage1), &self.native)
    }

    /// caching_sha2_password's fast path: response = SHA256(pw) XOR
    /// SHA256(SHA256(SHA256(pw)) + nonce).
    pub fn check_sha2(&self, nonce: &[u8], response: &[u8]) -> bool {
        if response.len() != 32 {
            return false;
        }
        let mix: [u8; 32] = Sha256::new().chain_update(self.sha2).chain_update(nonce).finalize().into();
        let stage1: Vec<u8> = response.iter().zip(mix).map(|(a, b)| a ^ b).collect();
        constant_eq(&Sha256::digest(&stage1), &self.sha2)
    }

    /// A password sent in full (over TLS, or decrypted with chorus's key).
    pub fn check_plain(&self, password: &[u8]) -> bool {
        constant_eq(&Sha256::digest(Sha256::digest(password)), &self.sha2)
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh nonce: printable bytes, no NUL (clients read it as a C string).
pub fn nonce() -> [u8; NONCE_LEN] {
    use rand::RngExt;
    let mut rng = rand::rng();
    std::array::from_fn(|_| rng.random_range(0x21u8..0x7F))
}

/// chorus's own mysql_native_password scramble, for a server's nonce.
pub fn native_scramble(password: &str, nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha1::digest(password.as_bytes());
    let stage2 = Sha1::digest(stage1);
    let mix = Sha1::new().chain_update(nonce).chain_update(stage2).finalize();
    stage1.iter().zip(mix).map(|(a, b)| a ^ b).collect()
}

/// chorus's own caching_sha2_password scramble, for a server's nonce.
pub fn sha2_scramble(password: &str, nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha256::digest(password.as_bytes());
    let stage2 = Sha256::digest(stage1);
    let mix = Sha256::new().chain_update(stage2).chain_update(nonce).finalize();
    stage1.iter().zip(mix).map(|(a, b)| a ^ b).collect()
}

/// password + NUL, XORed with the nonce repeated: what caching_sha2_password
/// encrypts with the server's RSA key.
fn xor_with_nonce(data: &[u8], nonce: &[u8]) -> Vec<u8> {
    data.iter().enumerate().map(|(i, b)| b ^ nonce[i % nonce.len()]).collect()
}

/// Encrypt chorus's password for a server that asked for full authentication
/// over a plain connection, with the public key it sent (PEM).
pub fn encrypt_password(password: &str, nonce: &[u8], public_pem: &[u8]) -> Result<Vec<u8>, String> {
    let pem = std::str::from_utf8(public_pem).map_err(|e| e.to_string())?;
    let key = RsaPublicKey::from_public_key_pem(pem.trim_end_matches('\0')).map_err(|e| e.to_string())?;
    let mut plain = password.as_bytes().to_vec();
    plain.push(0);
    let mixed = xor_with_nonce(&plain, nonce);
    key.encrypt(&mut rsa::rand_core::OsRng, oaep(), &mixed).map_err(|e| e.to_string())
}

/// MySQL pads with RSA_PKCS1_OAEP_PADDING: OAEP with SHA-1 for both the
/// label hash and MGF1.
fn oaep() -> Oaep {
    Oaep::new::<sha1_oaep::Sha1>()
}

/// chorus's RSA key pair for caching_sha2_password full authentication over
/// plain connections. Made once per process, on first use (2048 bits take a
/// moment); clients fetch the public half, or are configured with it.
pub struct RsaKey {
    private: RsaPrivateKey,
    public_pem: String,
}

impl RsaKey {
    pub fn get() -> &'static RsaKey {
        static KEY: OnceLock<RsaKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key generation");
            let public_pem =
                RsaPublicKey::from(&private).to_public_key_pem(LineEnding::LF).expect("PEM encoding of a public key");
            RsaKey { private, public_pem }
        })
    }

    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    #[cfg(test)]
    fn public(&self) -> Vec<u8> {
        self.public_pem.as_bytes().to_vec()
    }

    /// The password a client encrypted with [`RsaKey::public_pem`], without its NUL.
    pub fn decrypt_password(&self, nonce: &[u8], cipher: &[u8]) -> Option<Vec<u8>> {
        let mixed = self.private.decrypt(oaep(), cipher).ok()?;
        let mut plain = xor_with_nonce(&mixed, nonce);
        if plain.last() == Some(&0) {
            plain.pop();
        }
        Some(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrambles_check_against_the_stored_secret() {
        let secret = MysqlSecret::from_password("s3cret");
        let n = nonce();
        assert!(n.iter().all(|b| (0x21..0x7F).contains(b)));
        assert!(secret.check_native(&n, &native_scramble("s3cret", &n)));
        assert!(!secret.check_native(&n, &native_scramble("wrong", &n)));
        assert!(!secret.check_native(&nonce(), &native_scramble("s3cret", &n)), "another nonce");
        assert!(secret.check_sha2(&n, &sha2_scramble("s3cret", &n)));
        assert!(!secret.check_sha2(&n, &sha2_scramble("s3creT", &n)));
        assert!(!secret.check_native(&n, b""), "an empty answer is no password");
        assert!(secret.check_plain(b"s3cret") && !secret.check_plain(b"s3cre"));
    }

    #[test]
    fn a_password_encrypted_with_the_public_key_decrypts() {
        let key = RsaKey::get();
        let n = nonce();
        let cipher = encrypt_password("pa55", &n, &key.public()).unwrap();
        assert_eq!(key.decrypt_password(&n, &cipher).as_deref(), Some(&b"pa55"[..]));
        assert_eq!(key.decrypt_password(&n, b"garbage"), None);
    }

    #[test]
    fn a_known_native_scramble() {
        // SHA1(SHA1("password")) is mysql.user's *2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19.
        let s = MysqlSecret::from_password("password");
        assert_eq!(
            s.native.iter().map(|b| format!("{b:02X}")).collect::<String>(),
            "2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
    }
}
