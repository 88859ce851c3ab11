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
    /// Replication found this follower's data differs from the leader's (a
    /// logged statement failed there). Unlike `healthy`, only an operator (a
    /// restart of chorus) clears it: the health checker never does.
    diverged: AtomicBool,
}

impl NodeState {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn is_diverged(&self) -> bool {
        self.diverged.load(Ordering::Relaxed)
    }

    /// May serve reads: answering health checks and not diverged.
    pub fn is_readable(&self) -> bool {
        self.is_healthy() && !self.is_diverged()
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
                diverged: AtomicBool::new(false),
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

    /// Take a follower out of the read rotation for good (until chorus
    /// restarts): its data no longer matches the leader's. Returns true if it
    /// was not marked already.
    pub fn set_diverged(&self, index: usize) -> bool {
        !self.nodes[index].diverged.swap(true, Ordering::Relaxed)
    }

    /// Followers' node indexes, in configuration order.
    pub fn followers(&self) -> &[usize] {
        &self.followers
    }

    /// Where the next read's search through the followers starts (round robin).
    pub fn rotation(&self) -> usize {
        self.next_follower.fetch_add(1, Ordering::Relaxed)
    }

    /// Next readable (healthy, not diverged) follower in round-robin order, if any.
    pub fn pick_follower(&self) -> Option<usize> {
        let n = self.followers.len();
        if n == 0 {
            return None;
        }
        let start = self.next_follower.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| self.followers[(start + k) % n]).find(|&i| self.nodes[i].is_readable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diverged_follower_leaves_the_rotation_and_health_does_not_bring_it_back() {
        let toml = "[[nodes]]\nname = \"l\"\nrole = \"leader\"\nhost = \"h\"\nport = 1\nuser = \"u\"\n\
                    [[nodes]]\nname = \"f1\"\nrole = \"follower\"\nhost = \"h\"\nport = 2\nuser = \"u\"\n\
                    [[nodes]]\nname = \"f2\"\nrole = \"follower\"\nhost = \"h\"\nport = 3\nuser = \"u\"\n\
                    [[users]]\nname = \"app\"\nauth = \"trust\"\n";
        let topo = Topology::new(&Config::from_toml_str(toml).unwrap());
        assert_eq!(topo.followers(), [1, 2]);
        assert!(topo.set_diverged(1));
        assert!(!topo.set_diverged(1), "already marked");
        topo.set_healthy(1, false);
        topo.set_healthy(1, true);
        assert!(topo.node(1).is_healthy() && topo.node(1).is_diverged() && !topo.node(1).is_readable());
        assert!((0..6).all(|_| topo.pick_follower() == Some(2)));
        topo.set_healthy(2, false);
        assert_eq!(topo.pick_follower(), None);
    }
}
