//! Read consistency (pure): which followers may serve a session's read, given
//! what the session wrote and saw and what each follower has applied.
//!
//! A session's [`Position`] holds three log positions (LSNs of the leader's
//! log, per database):
//! - `wrote`: its last committed write;
//! - `seen`: an upper bound of every node state it has read (the highest LSN
//!   each follower may have applied, or the leader's last commit, when the
//!   read ended), so a later read never sees an older state;
//! - `asked`: a position the client required (`SET chorus.position`), carried
//!   over from another connection.
//!
//! A follower's applied LSN is a lower bound of its state (the applier
//! publishes it after the commit), so "applied >= needed" proves the follower
//! holds everything needed. Followers apply the log in order, so every
//! follower state is a prefix of the leader's: consistent prefix holds as long
//! as one read transaction stays on one node, which routing guarantees.

use crate::replication::Lsn;
use std::time::Duration;

/// How fresh a read must be: the levels a policy combines.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadPolicy {
    /// The follower has applied the session's last write.
    pub read_your_writes: bool,
    /// The follower is not behind anything the session already read.
    pub monotonic: bool,
    /// Bounded staleness: at most this many transactions behind the leader.
    pub max_lag_txns: Option<u64>,
    /// Bounded staleness: nothing committed longer ago than this is missing.
    pub max_lag: Option<Duration>,
    /// Reads always go to the leader.
    pub leader_only: bool,
    /// How long a read waits for a follower to qualify.
    pub wait: Duration,
    /// What happens when none qualified within `wait`.
    pub on_timeout: Fallback,
}

/// What a read does when no follower qualifies in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Run on the leader, which always qualifies.
    Leader,
    /// Fail with an error that says why.
    Error,
}

impl Default for ReadPolicy {
    /// read-your-writes + monotonic, wait 100 ms, then the leader: an
    /// application that only changes its connection string keeps the
    /// guarantees of a single server.
    fn default() -> Self {
        ReadPolicy {
            read_your_writes: true,
            monotonic: true,
            max_lag_txns: None,
            max_lag: None,
            leader_only: false,
            wait: Duration::from_millis(100),
            on_timeout: Fallback::Leader,
        }
    }
}

impl ReadPolicy {
    /// Any healthy follower.
    pub fn eventual() -> ReadPolicy {
        ReadPolicy { read_your_writes: false, monotonic: false, ..ReadPolicy::default() }
    }
}

/// Where a session stands in its database's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub wrote: Lsn,
    pub seen: Lsn,
    pub asked: Lsn,
}

impl Position {
    /// The LSN a follower must have applied to serve this session's read.
    /// A position the client asked for always counts.
    pub fn needed(&self, p: &ReadPolicy) -> Lsn {
        let mut n = self.asked;
        if p.read_your_writes {
            n = n.max(self.wrote);
        }
        if p.monotonic {
            n = n.max(self.seen);
        }
        n
    }

    /// The position to hand to another connection: everything this session
    /// wrote, saw or was asked for.
    pub fn token(&self) -> Lsn {
        self.wrote.max(self.seen).max(self.asked)
    }

    pub fn wrote(&mut self, lsn: Lsn) {
        self.wrote = self.wrote.max(lsn);
    }

    /// A read ended on a node whose state was at most `upper`.
    pub fn saw(&mut self, upper: Lsn) {
        self.seen = self.seen.max(upper);
    }

    pub fn ask(&mut self, lsn: Lsn) {
        self.asked = self.asked.max(lsn);
    }
}

/// One follower as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerView {
    pub node: usize,
    /// Healthy and not diverged.
    pub readable: bool,
    /// Its applied LSN as last published (None: not known yet).
    pub applied: Option<Lsn>,
    /// Transactions committed on the leader it has not applied.
    pub lag_txns: u64,
    /// Age of the oldest commit it has not applied (zero when caught up).
    pub lag: Duration,
}

/// Why a follower does not qualify (for metrics and the fallback's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    Unreadable,
    Behind,
    TooStale,
}

impl Miss {
    pub fn as_str(self) -> &'static str {
        match self {
            Miss::Unreadable => "no healthy follower",
            Miss::Behind => "no follower has applied the session's position",
            Miss::TooStale => "every follower lags more than the policy allows",
        }
    }
}

/// May `f` serve a read that needs `needed` under policy `p`?
pub fn qualifies(p: &ReadPolicy, needed: Lsn, f: &FollowerView) -> Result<(), Miss> {
    if !f.readable {
        return Err(Miss::Unreadable);
    }
    let bounded = p.max_lag_txns.is_some() || p.max_lag.is_some();
    match f.applied {
        // Nothing known: only a session that needs nothing may read there.
        None if needed > 0 || bounded => return Err(Miss::Behind),
        Some(a) if a < needed => return Err(Miss::Behind),
        _ => {}
    }
    if p.max_lag_txns.is_some_and(|m| f.lag_txns > m) || p.max_lag.is_some_and(|m| f.lag > m) {
        return Err(Miss::TooStale);
    }
    Ok(())
}

/// The first qualifying follower of `prefer` (node indexes, in order), else
/// the first in rotation order from `start`, or the most telling reason none
/// qualifies.
pub fn pick(
    p: &ReadPolicy,
    needed: Lsn,
    followers: &[FollowerView],
    prefer: &[usize],
    start: usize,
) -> Result<usize, Miss> {
    if p.leader_only {
        return Err(Miss::Unreadable);
    }
    for node in prefer {
        if let Some(f) = followers.iter().find(|f| f.node == *node)
            && qualifies(p, needed, f).is_ok()
        {
            return Ok(f.node);
        }
    }
    let n = followers.len();
    let mut why = Miss::Unreadable;
    for k in 0..n {
        let f = &followers[(start + k) % n];
        match qualifies(p, needed, f) {
            Ok(()) => return Ok(f.node),
            // A reachable follower that is behind says more than one that is down.
            Err(m) => {
                if m != Miss::Unreadable {
                    why = m;
                }
            }
        }
    }
    Err(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(node: usize, applied: Option<Lsn>, lag_txns: u64, lag_ms: u64) -> FollowerView {
        FollowerView { node, readable: true, applied, lag_txns, lag: Duration::from_millis(lag_ms) }
    }

    #[test]
    fn the_default_needs_the_sessions_writes_and_reads() {
        let p = ReadPolicy::default();
        let mut pos = Position::default();
        assert_eq!(pos.needed(&p), 0);
        pos.wrote(7);
        pos.saw(5);
        assert_eq!(pos.needed(&p), 7);
        pos.saw(9);
        assert_eq!(pos.needed(&p), 9);
        pos.wrote(3);
        assert_eq!((pos.wrote, pos.token()), (7, 9), "positions only move forward");
        assert_eq!(pos.needed(&ReadPolicy::eventual()), 0);
        pos.ask(12);
        assert_eq!(pos.needed(&ReadPolicy::eventual()), 12, "an asked-for position always counts");
        assert_eq!(pos.token(), 12);
        let ryw_only = ReadPolicy { monotonic: false, ..ReadPolicy::default() };
        let pos = Position { wrote: 4, seen: 10, asked: 0 };
        assert_eq!(pos.needed(&ryw_only), 4);
    }

    #[test]
    fn qualification_table() {
        let p = ReadPolicy::default();
        let bounded =
            ReadPolicy { max_lag_txns: Some(5), max_lag: Some(Duration::from_millis(200)), ..ReadPolicy::eventual() };
        let down = FollowerView { readable: false, ..f(1, Some(100), 0, 0) };
        let cases = [
            // policy, needed, follower => outcome
            (&p, 0, f(1, None, 0, 0), Ok(())),
            (&p, 1, f(1, None, 0, 0), Err(Miss::Behind)),
            (&p, 10, f(1, Some(9), 1, 5), Err(Miss::Behind)),
            (&p, 10, f(1, Some(10), 3, 5), Ok(())),
            (&p, 0, down, Err(Miss::Unreadable)),
            (&bounded, 0, f(1, Some(10), 5, 200), Ok(())),
            (&bounded, 0, f(1, Some(10), 6, 0), Err(Miss::TooStale)),
            (&bounded, 0, f(1, Some(10), 0, 201), Err(Miss::TooStale)),
            (&bounded, 0, f(1, None, 0, 0), Err(Miss::Behind)),
        ];
        for (i, (policy, needed, view, want)) in cases.into_iter().enumerate() {
            assert_eq!(qualifies(policy, needed, &view), want, "case {i}");
        }
    }

    #[test]
    fn pick_rotates_over_qualifying_followers_and_explains_a_miss() {
        let p = ReadPolicy::default();
        let views = [f(1, Some(5), 0, 0), f(2, Some(9), 0, 0), f(3, Some(9), 0, 0)];
        assert_eq!(pick(&p, 9, &views, &[], 0), Ok(2));
        assert_eq!(pick(&p, 9, &views, &[], 2), Ok(3));
        assert_eq!(pick(&p, 9, &views, &[], 3), Ok(2), "wraps around, skipping the one behind");
        assert_eq!(pick(&p, 0, &views, &[], 1), Ok(2));
        assert_eq!(pick(&p, 10, &views, &[], 0), Err(Miss::Behind));
        let down = [FollowerView { readable: false, ..f(1, Some(9), 0, 0) }, f(2, Some(3), 0, 0)];
        assert_eq!(pick(&p, 9, &down, &[], 0), Err(Miss::Behind));
        assert_eq!(pick(&p, 9, &down[..1], &[], 0), Err(Miss::Unreadable));
        assert_eq!(pick(&p, 0, &[], &[], 0), Err(Miss::Unreadable));
        assert_eq!(pick(&p, 9, &views, &[3, 2], 0), Ok(3), "preferred first, in order");
        assert_eq!(pick(&p, 9, &views, &[1, 2], 2), Ok(2), "a preferred follower that is behind is skipped");
        assert_eq!(pick(&p, 5, &views, &[1], 2), Ok(1));
        let leader = ReadPolicy { leader_only: true, ..ReadPolicy::default() };
        assert_eq!(pick(&leader, 0, &views, &[], 0), Err(Miss::Unreadable));
    }
}
