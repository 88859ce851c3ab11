//! Process-wide state every session shares: config, topology, caches, registries.

use crate::auth::AuthUsers;
use crate::cancel::CancelRegistry;
use crate::catalog::FunctionCatalog;
use crate::config::Config;
use crate::policy::PolicySet;
use crate::replication::Replication;
use crate::sql::ClassifyCache;
use crate::topology::Topology;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

pub struct Context {
    pub config: Config,
    pub topology: Arc<Topology>,
    pub classify: ClassifyCache,
    pub catalog: FunctionCatalog,
    pub cancels: CancelRegistry,
    pub users: AuthUsers,
    pub next_session_id: AtomicU64,
    /// Statement replication: appliers, progress, per-database setup.
    pub replication: Arc<Replication>,
    /// Which databases need their sequences captured into the log.
    pub sequences: crate::session::sequences::SequenceSync,
    /// Where synchronized snapshots were exported (`pg_dump -j`).
    pub snapshots: crate::session::snapshots::ExportedSnapshots,
    /// Tables that carry chorus's trigger for capturing rows triggers insert.
    pub capture_triggers: crate::session::trigger_rows::CaptureTriggers,
    /// The read policies in force (replaced whole on reload).
    policies: parking_lot::RwLock<Arc<PolicySet>>,
    /// Bumped on every reload: sessions check it before choosing a policy.
    pub policies_version: AtomicU64,
    pub metrics: crate::metrics::Metrics,
}

impl Context {
    pub fn new(config: Config) -> Result<Context, String> {
        let users = AuthUsers::from_config(&config.users)
            .map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))?;
        let topology = Arc::new(Topology::new(&config));
        let policies = config.load_policies().map_err(|e| e.to_string())?;
        crate::metrics::init();
        Ok(Context {
            metrics: crate::metrics::Metrics::new(&topology),
            policies: parking_lot::RwLock::new(Arc::new(policies)),
            policies_version: AtomicU64::new(1),
            replication: Arc::new(Replication::new(config.clone(), topology.clone())),
            topology,
            classify: ClassifyCache::new(16 * 1024),
            catalog: FunctionCatalog::new(config.leader().clone()),
            cancels: CancelRegistry::default(),
            users,
            next_session_id: AtomicU64::new(1),
            sequences: Default::default(),
            snapshots: Default::default(),
            capture_triggers: Default::default(),
            config,
        })
    }
}

impl Context {
    /// The policies in force.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.policies.read().clone()
    }

    /// Read the policy files again (SIGHUP). A directory with any problem
    /// changes nothing: the old policies stay in force and the problems are
    /// returned, every one of them.
    pub fn reload_policies(&self) -> Result<usize, crate::policy::PolicyError> {
        let set = self.config.load_policies()?;
        let n = set.rules.len();
        *self.policies.write() = Arc::new(set);
        self.policies_version.fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(n)
    }
}

/// What every MySQL session shares: its cluster's configuration (MySQL
/// nodes only), the users, what the leader told chorus about itself.
pub struct MysqlContext {
    pub config: Config,
    pub users: AuthUsers,
    pub sha2_cache: crate::frontend::mysql::auth::Sha2Cache,
    pub next_session_id: AtomicU64,
    /// Live sessions by chorus's connection id (for KILL).
    pub sessions: dashmap::DashMap<u64, Arc<crate::session::mysql::SessionEntry>>,
    /// The MySQL nodes, their health and the read rotation.
    pub topology: Arc<Topology>,
    /// Statement replication to the followers (None: no followers to feed).
    pub replication: Option<Arc<crate::replication::mysql::MyReplication>>,
    /// The read policies (`[reads]` and the policy files, read at start).
    pub policies: Arc<PolicySet>,
    /// Requests per node and route, read fallbacks.
    pub metrics: crate::metrics::Metrics,
    /// What the leader's triggers, routines and defaults mean for replay.
    pub catalog: crate::catalog::mysql::MyCatalog,
    /// The leader's version, capabilities and collation from its last greeting:
    /// chorus greets clients with them, so they see the server they expect.
    leader_hello: parking_lot::RwLock<Option<crate::backend::mysql::ServerHello>>,
}

/// Greeting defaults before the leader was ever reached.
const MYSQL_FALLBACK_VERSION: &str = "5.5.5-10.11.0-MariaDB-chorus";

impl MysqlContext {
    pub fn new(config: Config) -> Result<MysqlContext, String> {
        let users = AuthUsers::from_config(&config.users)
            .map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))?;
        let topology = Arc::new(Topology::new(&config));
        let replication =
            Some(Arc::new(crate::replication::mysql::MyReplication::new(config.clone(), topology.clone())));
        let policies = Arc::new(config.load_policies().map_err(|e| e.to_string())?);
        crate::metrics::init();
        let leader = config.nodes.iter().find(|n| n.role == crate::config::Role::Leader).expect("validated").clone();
        Ok(MysqlContext {
            catalog: crate::catalog::mysql::MyCatalog::new(leader, config.limits.connect_timeout),
            metrics: crate::metrics::Metrics::new(&topology),
            policies,
            topology,
            replication,
            config,
            users,
            sha2_cache: Default::default(),
            next_session_id: AtomicU64::new(1),
            sessions: Default::default(),
            leader_hello: parking_lot::RwLock::new(None),
        })
    }

    /// (server version, capabilities, collation) to greet a client with.
    pub fn greeting_facts(&self) -> (String, u32, u8) {
        use crate::protocol::mysql::consts::{DEFAULT_COLLATION, cap};
        match &*self.leader_hello.read() {
            Some(h) => (h.version.clone(), h.capabilities & cap::PROXY, h.collation),
            None => (MYSQL_FALLBACK_VERSION.to_string(), cap::PROXY, DEFAULT_COLLATION),
        }
    }

    /// A new connection to the leader for a session.
    pub async fn connect_leader(
        &self,
        opts: &crate::backend::mysql::LoginOptions<'_>,
    ) -> Result<crate::backend::mysql::MyServerConn, crate::backend::mysql::MyBackendError> {
        let leader = self.config.nodes.iter().position(|n| n.role == crate::config::Role::Leader).expect("validated");
        let conn = crate::backend::mysql::MyServerConn::connect(leader, &self.config.nodes[leader], opts).await?;
        if self.leader_hello.read().as_ref().is_none_or(|h| h.version != conn.hello.version) {
            crate::sql::mysql::lex::set_server_version(&conn.hello.version);
            *self.leader_hello.write() = Some(conn.hello.clone());
        }
        Ok(conn)
    }

    /// Learn the leader's greeting (best effort: without it chorus greets
    /// with defaults until the first session reaches the leader).
    pub async fn probe_leader(&self) {
        use crate::protocol::mysql::consts::{DEFAULT_COLLATION, cap};
        let opts = crate::backend::mysql::LoginOptions {
            database: None,
            capabilities: cap::PROXY,
            collation: DEFAULT_COLLATION,
            timeout: self.config.limits.connect_timeout,
        };
        if let Err(e) = self.connect_leader(&opts).await {
            tracing::warn!(error = %e, "cannot reach the MySQL leader yet");
        }
    }

    pub fn unreachable(&self, e: &crate::backend::mysql::MyBackendError) -> crate::protocol::mysql::MyError {
        crate::session::mysql::unreachable_error(e)
    }
}
