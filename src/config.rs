//! Configuration: one TOML file (+ `CHORUS__SECTION__KEY` environment overrides)
//! turned into a validated, typed [`Config`].
//!
//! Loading never reads the environment implicitly from defaults; the only
//! environment input is the documented override prefix.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration of one chorus process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub tls: Option<Tls>,
    #[serde(default)]
    pub replication: Replication,
    /// How fresh reads must be, unless a policy rule says otherwise.
    #[serde(default)]
    pub reads: crate::policy::PolicySpec,
    /// Where the policy rules are.
    #[serde(default)]
    pub policies: Policies,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The servers chorus fronts: exactly one leader, any number of followers.
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// Who may connect to chorus, and how they prove it.
    #[serde(default)]
    pub users: Vec<User>,
}

/// Where chorus accepts client connections. A listener is opened only when
/// nodes of its dialect are configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// PostgreSQL wire-protocol listener.
    pub postgres: Option<SocketAddr>,
    /// MySQL wire-protocol listener.
    pub mysql: Option<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            postgres: Some(SocketAddr::from(([127, 0, 0, 1], 6432))),
            mysql: Some(SocketAddr::from(([127, 0, 0, 1], 6033))),
        }
    }
}

/// Which wire protocol and SQL dialect a node speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    #[default]
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
}

impl Dialect {
    pub const ALL: [Dialect; 2] = [Dialect::Postgres, Dialect::Mysql];

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
        }
    }

    /// The database every server of the dialect has.
    pub fn admin_database(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
        }
    }
}

/// The Prometheus endpoint (see [`crate::metrics`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` here (e.g. "127.0.0.1:9187"). None: no endpoint.
    pub listen: Option<SocketAddr>,
}

/// Policy rule files (see [`crate::policy`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Directory of `*.toml` rule files, relative to the configuration
    /// file. None: every read uses `[reads]`.
    pub dir: Option<PathBuf>,
}

/// Resource limits that protect chorus and the servers behind it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Client connections accepted at once; more get SQLSTATE 53300.
    pub max_client_connections: usize,
    /// Largest protocol message accepted from a client, in bytes.
    pub max_message_bytes: usize,
    /// How long to wait for a server connection to be established.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Idle server connections kept per node and database for reuse.
    pub idle_server_connections: usize,
    /// How long a client may take to finish startup and authentication.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_client_connections: 1000,
            max_message_bytes: 64 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            idle_server_connections: 32,
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// Periodic node health checking.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed checks before a node leaves the read rotation.
    pub failures_before_down: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health { interval: Duration::from_millis(1000), timeout: Duration::from_millis(2000), failures_before_down: 1 }
    }
}

/// Statement replication from the leader's log to the followers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Replication {
    /// When a write's COMMIT is answered: at once (`async`), once one follower
    /// applied it (`semi-sync`), or once every follower did (`sync`).
    pub ack: AckMode,
    /// How long a `semi-sync`/`sync` COMMIT waits for followers before answering anyway.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// How long applied log entries are kept (on the leader and in the followers'
    /// copies) before they are trimmed. Entries some follower has not applied
    /// yet are never trimmed.
    #[serde(with = "humantime_serde")]
    pub log_retention: Duration,
    /// Databases to replicate; empty means every database on the leader.
    pub databases: Vec<String>,
    /// Transactions whose writes are all keyed (by primary key, constants
    /// only) take their LSN when they commit instead of at their first write,
    /// so writers do not queue behind each other's client round trips. Off:
    /// every writing transaction takes its LSN first (no deadlocks between a
    /// keyed transaction and one that already holds the LSN).
    pub lsn_at_commit: bool,
    /// What happens to a write whose text would compute other values on a
    /// follower (per-row `random()`, a volatile DEFAULT, a nondeterministic
    /// trigger ...): `capture` replicates the rows the leader wrote, `refuse`
    /// rejects it (SQLSTATE 0A000) before the leader runs it.
    pub unsafe_writes: UnsafeWrites,
}

/// See [`Replication::unsafe_writes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UnsafeWrites {
    #[default]
    Capture,
    Refuse,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            ack: AckMode::Async,
            ack_timeout: Duration::from_secs(5),
            log_retention: Duration::from_secs(3600),
            databases: Vec::new(),
            lsn_at_commit: true,
            unsafe_writes: UnsafeWrites::Capture,
        }
    }
}

impl Replication {
    /// True when `db` is replicated (listed, or the list is empty). The
    /// standard templates never are: chorus's schema in them would be
    /// copied into every database created from them.
    pub fn covers(&self, db: &str) -> bool {
        (self.databases.is_empty() && !matches!(db, "template0" | "template1")) || self.databases.iter().any(|d| d == db)
    }
}

/// How many followers must have applied a write before its COMMIT is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckMode {
    Async,
    SemiSync,
    Sync,
}

/// TLS for client connections (rustls). Without it chorus answers 'N' to SSLRequest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
}

/// One database server behind chorus, and chorus's own credentials for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    /// `postgres` (default) or `mysql` (MySQL and MariaDB).
    #[serde(default)]
    pub dialect: Dialect,
    pub role: Role,
    pub host: String,
    /// 1-65535. Read as any integer, so that a value out of range is reported
    /// by [`Config::validate`] together with every other problem instead of
    /// aborting the load on its own (it becomes 0, which validation rejects).
    #[serde(deserialize_with = "port_number")]
    pub port: u16,
    pub user: String,
    #[serde(default)]
    pub password: Option<String>,
    /// Database used for health checks and catalog look-ups (default: the
    /// dialect's own, `postgres` or `mysql`).
    #[serde(default)]
    pub admin_database: String,
}

fn port_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let n = i64::deserialize(d)?;
    Ok(u16::try_from(n).unwrap_or(0))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "trust")]
    Trust,
}

/// A user allowed to connect to chorus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// Plain password, or a PostgreSQL SCRAM verifier (`SCRAM-SHA-256$...`).
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "default_auth")]
    pub auth: AuthMethod,
    /// For MySQL clients: the plugin the user must log in with, as a MySQL
    /// account's plugin (a client that starts with another is asked to
    /// switch). None: either of mysql_native_password and caching_sha2_password.
    #[serde(default)]
    pub mysql_auth: Option<MysqlAuth>,
}

/// A MySQL authentication plugin chorus speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MysqlAuth {
    #[serde(rename = "mysql_native_password")]
    NativePassword,
    #[serde(rename = "caching_sha2_password")]
    CachingSha2Password,
}

impl MysqlAuth {
    pub fn plugin(self) -> &'static str {
        match self {
            MysqlAuth::NativePassword => "mysql_native_password",
            MysqlAuth::CachingSha2Password => "caching_sha2_password",
        }
    }
}

fn default_auth() -> AuthMethod {
    AuthMethod::ScramSha256
}

/// Everything wrong with a configuration, each with its key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(String),
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Load a TOML file, apply `CHORUS__SECTION__KEY` overrides, validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("CHORUS").prefix_separator("__").separator("__").try_parsing(true),
            )
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let mut cfg: Config = raw.try_deserialize().map_err(|e| ConfigError::Load(e.to_string()))?;
        cfg.fill_defaults();
        if let Some(dir) = cfg.policies.dir.as_mut()
            && dir.is_relative()
        {
            let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            *dir = base.join(&*dir);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse TOML text without environment overrides (tests, generated configs).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let mut cfg: Config = raw.try_deserialize().map_err(|e| ConfigError::Load(e.to_string()))?;
        cfg.fill_defaults();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Defaults that depend on other values.
    fn fill_defaults(&mut self) {
        for n in &mut self.nodes {
            if n.admin_database.is_empty() {
                n.admin_database = n.dialect.admin_database().to_string();
            }
        }
    }

    /// The dialects that have nodes, each served on its own listener.
    pub fn dialects(&self) -> Vec<Dialect> {
        Dialect::ALL.into_iter().filter(|d| self.nodes.iter().any(|n| n.dialect == *d)).collect()
    }

    /// This configuration restricted to one dialect's nodes: each dialect is
    /// a cluster of its own (one leader, its followers), served by its own
    /// listener; users, limits and policies are shared.
    pub fn for_dialect(&self, dialect: Dialect) -> Config {
        let mut c = self.clone();
        c.nodes.retain(|n| n.dialect == dialect);
        c
    }

    /// Report every problem at once, each with its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.nodes.is_empty() {
            problems.push("nodes: at least one node (the leader) is required".to_string());
        }
        let several = self.dialects().len() > 1;
        for d in self.dialects() {
            let leaders = self.nodes.iter().filter(|n| n.dialect == d && n.role == Role::Leader).count();
            if leaders != 1 {
                let of = if several { format!(" of dialect {:?}", d.name()) } else { String::new() };
                problems.push(format!("nodes: exactly one node{of} must have role = \"leader\", found {leaders}"));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.name.is_empty() {
                problems.push(format!("nodes[{i}].name: must not be empty"));
            }
            if self.nodes.iter().filter(|m| m.name == n.name).count() > 1 {
                problems.push(format!("nodes[{i}].name: duplicate node name {:?}", n.name));
            }
            if n.host.is_empty() {
                problems.push(format!("nodes[{i}].host: must not be empty"));
            }
            if n.port == 0 {
                problems.push(format!("nodes[{i}].port: must be between 1 and 65535"));
            }
            if n.user.is_empty() {
                problems.push(format!("nodes[{i}].user: must not be empty"));
            }
        }
        if self.users.is_empty() {
            problems.push("users: at least one user is required".to_string());
        }
        for (i, u) in self.users.iter().enumerate() {
            if u.name.is_empty() {
                problems.push(format!("users[{i}].name: must not be empty"));
            }
            if self.users.iter().filter(|m| m.name == u.name).count() > 1 {
                problems.push(format!("users[{i}].name: duplicate user {:?}", u.name));
            }
            if u.auth == AuthMethod::ScramSha256 && u.password.as_deref().unwrap_or("").is_empty() {
                problems.push(format!("users[{i}].password: required for auth = \"scram-sha-256\""));
            }
        }
        let dialects = self.dialects();
        if dialects.contains(&Dialect::Postgres) && self.listen.postgres.is_none() {
            problems.push("listen.postgres: a listen address is required".to_string());
        }
        if dialects.contains(&Dialect::Mysql) && self.listen.mysql.is_none() {
            problems.push("listen.mysql: a listen address is required for nodes with dialect = \"mysql\"".to_string());
        }
        // (Port 0 is "any free port": two of those never collide.)
        if dialects.len() > 1
            && self.listen.postgres.is_some_and(|a| a.port() != 0)
            && self.listen.postgres == self.listen.mysql
        {
            problems.push("listen.mysql: must differ from listen.postgres".to_string());
        }
        if self.limits.max_client_connections == 0 {
            problems.push("limits.max_client_connections: must be at least 1".to_string());
        }
        if self.limits.max_message_bytes < 1024 {
            problems.push("limits.max_message_bytes: must be at least 1024".to_string());
        }
        if self.health.interval.is_zero() {
            problems.push("health.interval: must be greater than zero".to_string());
        }
        if self.replication.ack != AckMode::Async && self.replication.ack_timeout.is_zero() {
            problems.push("replication.ack_timeout: must be greater than zero when ack is not \"async\"".to_string());
        }
        for (i, d) in self.replication.databases.iter().enumerate() {
            if d.is_empty() {
                problems.push(format!("replication.databases[{i}]: must not be empty"));
            } else if self.replication.databases[..i].contains(d) {
                problems.push(format!("replication.databases[{i}]: duplicate database {d:?}"));
            }
        }
        match self.reads.resolve(&crate::consistency::ReadPolicy::default(), "reads.") {
            Err(p) => problems.extend(p),
            Ok(_) if self.policies.dir.is_some() => {
                if let Err(e) = self.load_policies() {
                    problems.extend(e.0.into_iter().map(|p| format!("policies: {p}")));
                }
            }
            Ok(_) => {}
        }
        if let Some(tls) = &self.tls {
            if !tls.cert.exists() {
                problems.push(format!("tls.cert: file {} does not exist", tls.cert.display()));
            }
            if !tls.key.exists() {
                problems.push(format!("tls.key: file {} does not exist", tls.key.display()));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }

    /// The policy rules in force: the files of `policies.dir` (read now) on
    /// top of `[reads]`.
    pub fn load_policies(&self) -> Result<crate::policy::PolicySet, crate::policy::PolicyError> {
        let default = self
            .reads
            .resolve(&crate::consistency::ReadPolicy::default(), "reads.")
            .map_err(crate::policy::PolicyError)?;
        let Some(dir) = &self.policies.dir else { return Ok(crate::policy::PolicySet::just(default)) };
        let followers: Vec<(String, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role == Role::Follower)
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        crate::policy::load_dir(dir, &default, &followers)
    }

    /// The leader (of a configuration restricted to one dialect: see
    /// [`Config::for_dialect`]).
    pub fn leader(&self) -> &Node {
        self.nodes.iter().find(|n| n.role == Role::Leader).expect("validated: one leader")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_range_port_is_reported_with_the_other_problems() {
        let toml = "[[nodes]]\nname = \"a\"\nrole = \"follower\"\nhost = \"h\"\nport = 70000\nuser = \"u\"\n\
                    [[nodes]]\nname = \"b\"\nrole = \"leader\"\nhost = \"h\"\nport = -1\nuser = \"u\"\n\
                    [[users]]\nname = \"app\"\n";
        let Err(ConfigError::Invalid(problems)) = Config::from_toml_str(toml) else { panic!("accepted") };
        assert_eq!(
            problems,
            [
                "nodes[0].port: must be between 1 and 65535",
                "nodes[1].port: must be between 1 and 65535",
                "users[0].password: required for auth = \"scram-sha-256\"",
            ]
        );
        let ok = toml
            .replace("70000", "5432")
            .replace("-1", "65535")
            .replace("name = \"app\"", "name = \"app\"\npassword = \"p\"");
        let cfg = Config::from_toml_str(&ok).unwrap();
        assert_eq!((cfg.nodes[0].port, cfg.nodes[1].port), (5432, 65535));
    }

    const MINIMAL: &str = "[[nodes]]\nname = \"l\"\nrole = \"leader\"\nhost = \"h\"\nport = 5432\nuser = \"u\"\n\
                           [[users]]\nname = \"app\"\nauth = \"trust\"\n";

    #[test]
    fn replication_defaults_and_values() {
        let cfg = Config::from_toml_str(MINIMAL).unwrap();
        assert_eq!(cfg.replication.ack, AckMode::Async);
        assert_eq!(cfg.replication.ack_timeout, Duration::from_secs(5));
        assert_eq!(cfg.replication.log_retention, Duration::from_secs(3600));
        assert!(cfg.replication.covers("anything"));
        assert!(!cfg.replication.covers("template1") && !cfg.replication.covers("template0"));

        let toml = format!(
            "{MINIMAL}[replication]\nack = \"semi-sync\"\nack_timeout = \"250ms\"\nlog_retention = \"10m\"\n\
             databases = [\"shop\"]\n"
        );
        let cfg = Config::from_toml_str(&toml).unwrap();
        assert_eq!(cfg.replication.ack, AckMode::SemiSync);
        assert_eq!(cfg.replication.ack_timeout, Duration::from_millis(250));
        assert_eq!(cfg.replication.log_retention, Duration::from_secs(600));
        assert!(cfg.replication.covers("shop") && !cfg.replication.covers("other"));
        let sync = format!("{MINIMAL}[replication]\nack = \"sync\"\n");
        assert_eq!(Config::from_toml_str(&sync).unwrap().replication.ack, AckMode::Sync);
    }

    #[test]
    fn replication_problems_are_reported_with_their_key_paths() {
        let toml =
            format!("{MINIMAL}[replication]\nack = \"sync\"\nack_timeout = \"0s\"\ndatabases = [\"a\", \"\", \"a\"]\n");
        let Err(ConfigError::Invalid(problems)) = Config::from_toml_str(&toml) else { panic!("accepted") };
        assert_eq!(
            problems,
            [
                "replication.ack_timeout: must be greater than zero when ack is not \"async\"",
                "replication.databases[1]: must not be empty",
                "replication.databases[2]: duplicate database \"a\"",
            ]
        );
        let bad_mode = format!("{MINIMAL}[replication]\nack = \"eventually\"\n");
        assert!(matches!(Config::from_toml_str(&bad_mode), Err(ConfigError::Load(_))));
        let unknown = format!("{MINIMAL}[replication]\nlag = 1\n");
        assert!(matches!(Config::from_toml_str(&unknown), Err(ConfigError::Load(_))));
    }

    #[test]
    fn each_dialect_is_a_cluster_of_its_own() {
        let toml = format!(
            "{MINIMAL}[listen]\nmysql = \"127.0.0.1:6033\"\n\
             [[nodes]]\nname = \"m\"\ndialect = \"mysql\"\nrole = \"leader\"\nhost = \"h\"\nport = 3306\nuser = \"root\"\n\
             [[nodes]]\nname = \"m2\"\ndialect = \"mysql\"\nrole = \"follower\"\nhost = \"h\"\nport = 3307\nuser = \"root\"\n"
        );
        let cfg = Config::from_toml_str(&toml).unwrap();
        assert_eq!(cfg.dialects(), [Dialect::Postgres, Dialect::Mysql]);
        let my = cfg.for_dialect(Dialect::Mysql);
        assert_eq!(my.leader().name, "m");
        assert_eq!(my.nodes.len(), 2);
        assert!(my.nodes.iter().all(|n| n.admin_database == "mysql"));
        assert_eq!(cfg.for_dialect(Dialect::Postgres).leader().admin_database, "postgres");

        // Two MySQL leaders, the same address for both listeners.
        let bad = toml.replace("role = \"follower\"", "role = \"leader\"").replace("6033", "6432");
        let Err(ConfigError::Invalid(problems)) = Config::from_toml_str(&bad) else { panic!("accepted") };
        assert_eq!(
            problems,
            [
                "nodes: exactly one node of dialect \"mysql\" must have role = \"leader\", found 2",
                "listen.mysql: must differ from listen.postgres",
            ]
        );
        let unknown = toml.replace("dialect = \"mysql\"\nrole = \"leader\"", "dialect = \"oracle\"\nrole = \"leader\"");
        assert!(matches!(Config::from_toml_str(&unknown), Err(ConfigError::Load(_))));
    }
}
