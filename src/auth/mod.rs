//! Client authentication at the proxy (SCRAM-SHA-256, trust).
//!
//! chorus authenticates clients itself and connects to servers with its own
//! credentials: a SCRAM exchange cannot be replayed onto another connection.
//! Users are turned into [`AuthUser`]s once at startup, so the slow password
//! derivation never happens per connection.

pub mod mysql;
pub mod scram;
mod verifier;

use crate::config::{AuthMethod, User};
use scram::{ScramVerifier, VerifierError};
use std::collections::HashMap;

/// How one configured user proves who they are, ready to use.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub name: String,
    pub credential: Credential,
    /// The password's MySQL hashes, when the configuration gives the
    /// password itself (a stored SCRAM verifier cannot be turned into them).
    pub mysql: Option<mysql::MysqlSecret>,
    /// The MySQL plugin this user must use, if any.
    pub mysql_plugin: Option<crate::config::MysqlAuth>,
}

/// The precomputed secret behind an [`AuthMethod`].
#[derive(Debug, Clone)]
pub enum Credential {
    /// Anyone who names this user is let in.
    Trust,
    /// The client must prove knowledge of the password behind this verifier.
    Scram(ScramVerifier),
}

/// A configured user whose credentials cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    #[error("user {0:?}: a password is required for auth = \"scram-sha-256\"")]
    MissingPassword(String),
    #[error("user {user:?}: {source}")]
    InvalidVerifier {
        user: String,
        #[source]
        source: VerifierError,
    },
}

impl AuthUser {
    /// Prepare a configured user: a plain password is turned into a SCRAM verifier
    /// here (random salt, 4096 iterations); a stored verifier is checked and kept.
    pub fn from_config(user: &User) -> Result<AuthUser, AuthConfigError> {
        let mysql = match user.auth {
            AuthMethod::Trust => None,
            AuthMethod::ScramSha256 => user
                .password
                .as_deref()
                .filter(|p| !p.is_empty() && !p.starts_with("SCRAM-SHA-256$"))
                .map(mysql::MysqlSecret::from_password),
        };
        let credential = match user.auth {
            AuthMethod::Trust => Credential::Trust,
            AuthMethod::ScramSha256 => {
                let password = user.password.as_deref().filter(|p| !p.is_empty());
                let password = password.ok_or_else(|| AuthConfigError::MissingPassword(user.name.clone()))?;
                let verifier = ScramVerifier::for_config_password(password)
                    .map_err(|source| AuthConfigError::InvalidVerifier { user: user.name.clone(), source })?;
                Credential::Scram(verifier)
            }
        };
        Ok(AuthUser { name: user.name.clone(), credential, mysql, mysql_plugin: user.mysql_auth })
    }

    pub fn method(&self) -> AuthMethod {
        match self.credential {
            Credential::Trust => AuthMethod::Trust,
            Credential::Scram(_) => AuthMethod::ScramSha256,
        }
    }
}

/// Every configured user by name, prepared once at startup.
#[derive(Debug, Clone, Default)]
pub struct AuthUsers {
    users: HashMap<String, AuthUser>,
}

impl AuthUsers {
    /// Prepare all users, reporting every unusable one at once.
    pub fn from_config(users: &[User]) -> Result<AuthUsers, Vec<AuthConfigError>> {
        let mut out = HashMap::new();
        let mut problems = Vec::new();
        for u in users {
            match AuthUser::from_config(u) {
                Ok(a) => {
                    out.insert(a.name.clone(), a);
                }
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() { Ok(AuthUsers { users: out }) } else { Err(problems) }
    }

    pub fn get(&self, name: &str) -> Option<&AuthUser> {
        self.users.get(name)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: Option<&str>, auth: AuthMethod) -> User {
        User { name: name.into(), password: password.map(Into::into), auth, mysql_auth: None }
    }

    #[test]
    fn prepares_each_kind_of_user() {
        let trust = AuthUser::from_config(&user("t", None, AuthMethod::Trust)).unwrap();
        assert!(matches!(trust.credential, Credential::Trust));
        assert_eq!(trust.method(), AuthMethod::Trust);

        let plain = AuthUser::from_config(&user("p", Some("pencil"), AuthMethod::ScramSha256)).unwrap();
        let Credential::Scram(v) = &plain.credential else { panic!("expected SCRAM") };
        assert_eq!(ScramVerifier::from_password("pencil", &v.salt, v.iterations), *v);

        let stored = ScramVerifier::from_password("pencil", b"0123456789abcdef", 4096).to_string();
        let kept = AuthUser::from_config(&user("s", Some(&stored), AuthMethod::ScramSha256)).unwrap();
        let Credential::Scram(v) = &kept.credential else { panic!("expected SCRAM") };
        assert_eq!(v.to_string(), stored);
        assert_eq!(kept.method(), AuthMethod::ScramSha256);
    }

    #[test]
    fn reports_every_unusable_user() {
        let users = [
            user("ok", Some("pw"), AuthMethod::ScramSha256),
            user("nopw", None, AuthMethod::ScramSha256),
            user("empty", Some(""), AuthMethod::ScramSha256),
            user("broken", Some("SCRAM-SHA-256$x"), AuthMethod::ScramSha256),
        ];
        let errs = AuthUsers::from_config(&users).unwrap_err();
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[0], AuthConfigError::MissingPassword("nopw".into()));
        assert!(matches!(&errs[2], AuthConfigError::InvalidVerifier { user, .. } if user == "broken"));
        assert!(errs[2].to_string().contains("broken"), "{}", errs[2]);

        let ok = AuthUsers::from_config(&users[..1]).unwrap();
        assert_eq!(ok.len(), 1);
        assert!(ok.get("ok").is_some() && ok.get("nopw").is_none());
    }
}
