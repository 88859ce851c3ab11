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
