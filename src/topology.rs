//! The nodes behind chorus, their roles and health, and the read rotation.

use crate::backend::Pool;
use crate::config::{Config, Role};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub struct NodeState {
    pub index: usize,
    pub name: Arc<str>,
    pub role: Role,
    pub pool: Arc<Pool>,
    healthy: AtomicBool,
}

impl NodeState {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

pub struct Topology {
    nodes: Vec<NodeState>,
    leader: usize,
    followers: Vec<usize>,
    next_follower: AtomicUsize,
}

impl Topology {
    pub fn new(config: &Config) -> Topology {
        let nodes: Vec<NodeState> = config
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeState {
                index: i,
                name: n.name.as_str().into(),
                role: n.role,
                pool: Arc::new(Pool::new(
                    i,
                    n.clone(),
                    config.limits.idle_server_connections,
                    config.limits.connect_timeout,
                )),
                // Optimistic until the first check says otherwise: a node that is
                // down fails fast on connect and is then marked down.
                healthy: AtomicBool::new(true),
            })
            .collect();
        let leader = nodes.iter().position(|n| n.role == Role::Leader).expect("validated: one leader");
        let followers = nodes.iter().filter(|n| n.role == Role::Follower).map(|n| n.index).collect();
        Topology { nodes, leader, followers, next_follower: AtomicUsize::new(0) }
    }

    pub fn leader(&self) -> usize {
        self.leader
    }

    pub fn node(&self, index: usize) -> &NodeState {
        &self.nodes[index]
    }

    pub fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }

    pub fn set_healthy(&self, index: usize, healthy: bool) -> bool {
        let was = self.nodes[index].healthy.swap(healthy, Ordering::Relaxed);
        if !healthy {
            self.nodes[index].pool.clear();
        }
        was != healthy
    }

    /// Next healthy follower in round-robin order, if any.
    pub fn pick_follower(&self) -> Option<usize> {
        let n = self.followers.len();
        if n == 0 {
            return None;
        }
        let start = self.next_follower.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| self.followers[(start + k) % n]).find(|&i| self.nodes[i].is_healthy())
    }
}
