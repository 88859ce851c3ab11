//! A self-signed certificate for 127.0.0.1 / localhost, for TLS tests.

use chorus::config::Tls;
use std::path::PathBuf;

/// Made with the openssl program (installed with PostgreSQL's packages:
/// postgresql-common needs ssl-cert, which needs openssl); removed on drop.
pub struct SelfSigned {
    dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl SelfSigned {
    pub fn create(label: &str) -> SelfSigned {
        let dir = crate::tests_root().join(format!("tls-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl (apt-get install openssl): {e}"));
        assert!(out.status.success(), "openssl failed: {}", String::from_utf8_lossy(&out.stderr));
        SelfSigned { dir, cert, key }
    }

    /// The `[tls]` section serving this certificate.
    pub fn tls(&self) -> Tls {
        Tls { cert: self.cert.clone(), key: self.key.clone() }
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
