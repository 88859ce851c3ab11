//! Process-wide state every session shares: config, topology, caches, registries.

use crate::auth::AuthUser;
use crate::cancel::CancelRegistry;
use crate::catalog::FunctionCatalog;
use crate::config::Config;
use crate::sql::ClassifyCache;
use crate::topology::Topology;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

pub struct Context {
    pub config: Config,
    pub topology: Arc<Topology>,
    pub classify: ClassifyCache,
    pub catalog: FunctionCatalog,
    pub cancels: CancelRegistry,
    pub users: HashMap<String, AuthUser>,
    pub next_session_id: AtomicU64,
}

impl Context {
    pub fn new(config: Config) -> Result<Context, String> {
        let mut users = HashMap::new();
        for u in &config.users {
            let au = AuthUser::from_config(u).map_err(|e| format!("users.{}: {e}", u.name))?;
            users.insert(u.name.clone(), au);
        }
        Ok(Context {
            topology: Arc::new(Topology::new(&config)),
            classify: ClassifyCache::new(16 * 1024),
            catalog: FunctionCatalog::new(config.leader().clone()),
            cancels: CancelRegistry::default(),
            users,
            next_session_id: AtomicU64::new(1),
            config,
        })
    }
}
