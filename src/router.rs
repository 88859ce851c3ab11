//! Pure routing decision: (what the query needs, where the session stands) -> where it goes.

/// Where a request should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Leader,
    /// Any healthy follower (the session falls back to the leader if none).
    AnyFollower,
    /// Exactly this node: the session's open transaction or in-flight pipeline lives there.
    Node(usize),
}

/// The parts of a session's state routing depends on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionView {
    /// Node holding the session's open transaction.
    pub txn_node: Option<usize>,
    /// Node with requests in flight (pipelining); responses must stay in order.
    pub busy_node: Option<usize>,
    /// Session state lives on the leader only (temp tables, LISTEN, ...).
    pub pinned: bool,
    pub leader: usize,
}

/// Decide where a request goes. `needs_leader` is true for writes, DDL, locking
/// reads, volatile or unknown functions, unparsable text and read-write transactions.
pub fn decide(needs_leader: bool, s: SessionView) -> Want {
    if let Some(n) = s.txn_node {
        // A transaction never leaves its server. A write inside a READ ONLY
        // transaction on a follower fails there, as it would on any server.
        return Want::Node(n);
    }
    if s.pinned {
        return Want::Leader;
    }
    match s.busy_node {
        Some(n) if !needs_leader || n == s.leader => Want::Node(n),
        _ if needs_leader => Want::Leader,
        _ => Want::AnyFollower,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(txn: Option<usize>, busy: Option<usize>, pinned: bool) -> SessionView {
        SessionView { txn_node: txn, busy_node: busy, pinned, leader: 0 }
    }

    #[test]
    fn table() {
        let cases = [
            // needs_leader, txn, busy, pinned => want
            (false, None, None, false, Want::AnyFollower),
            (true, None, None, false, Want::Leader),
            (false, Some(2), None, false, Want::Node(2)),
            (true, Some(2), None, false, Want::Node(2)),
            (true, Some(0), Some(0), false, Want::Node(0)),
            (false, None, None, true, Want::Leader),
            (true, None, None, true, Want::Leader),
            (false, Some(1), None, true, Want::Node(1)),
            (false, None, Some(1), false, Want::Node(1)),
            (true, None, Some(1), false, Want::Leader),
            (true, None, Some(0), false, Want::Node(0)),
            (false, None, Some(0), false, Want::Node(0)),
        ];
        for (needs, txn, busy, pinned, want) in cases {
            assert_eq!(decide(needs, view(txn, busy, pinned)), want, "{needs} {txn:?} {busy:?} {pinned}");
        }
    }
}
