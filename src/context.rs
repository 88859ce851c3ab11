//! Process-wide state every session shares: config, topology, caches, registries.

use crate::auth::AuthUsers;
use crate::cancel::CancelRegistry;
use crate::catalog::FunctionCatalog;
use crate::config::Config;
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
}

impl Context {
    pub fn new(config: Config) -> Result<Context, String> {
        let users = AuthUsers::from_config(&config.users)
            .map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))?;
        let topology = Arc::new(Topology::new(&config));
        Ok(Context {
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
