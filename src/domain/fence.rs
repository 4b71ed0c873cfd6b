//! Locks, elections and fences: a named queue of keys on leases, as etcd's
//! `concurrency` package lays it out, and the check a fenced write makes.
//!
//! A lock (or an election) `NAME` is the keys `NAME/<lease id in hex>`: one
//! per contender, each on its contender's lease. The holder (the leader) is
//! the key with the lowest create revision, and that revision is its
//! fencing token (its term): it grows with every acquisition of the name,
//! since a later key is created at a later revision. The layout is etcd's
//! own, so `etcdctl lock` and `etcdctl elect` queue on the same keys.

use super::{Entry, Key, LeaseId};

/// The prefix every contender's key of queue `name` starts with.
pub fn queue_prefix(name: &str) -> String {
    format!("{name}/")
}

/// The key of the contender on `lease` in queue `name`: the lease id in
/// lowercase hex without leading zeros, as etcd's `fmt.Sprintf("%x")`.
pub fn queue_key(name: &str, lease: LeaseId) -> String {
    format!("{name}/{:x}", lease.get())
}

/// The key at the head of a queue: the lowest create revision among the
/// keys under its prefix.
pub fn head<'a>(under: impl Iterator<Item = &'a Entry>) -> Option<&'a Entry> {
    under.min_by_key(|entry| entry.meta().create_revision)
}

/// A write's fence: it applies only if lock (or election) `name` is held
/// with `token` at the moment of its commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub name: Key,
    pub token: u64,
}

impl Fence {
    /// The prefix of the fence's queue.
    pub fn prefix(&self) -> String {
        queue_prefix(&self.name)
    }

    /// Whether a queue whose keys are `under` is held with this token.
    pub fn holds<'a>(&self, under: impl Iterator<Item = &'a Entry>) -> bool {
        head(under).is_some_and(|head| head.meta().create_revision == self.token)
    }
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Meta;

    #[test]
    fn the_key_is_etcds_layout() {
        let lease = LeaseId::new(0x694d_7d3a_a3b1_4c0f).expect("an id");
        assert_eq!(queue_key("jobs", lease), "jobs/694d7d3aa3b14c0f");
        let small = LeaseId::new(0x2a).expect("an id");
        assert_eq!(queue_key("a/b", small), "a/b/2a");
        assert_eq!(queue_prefix("jobs"), "jobs/");
    }

    #[test]
    fn the_lowest_create_revision_holds() {
        let entry = |key: &str, created| Entry::new(key, b"", Meta::created(created), None);
        let queue = [entry("q/1", 9), entry("q/2", 4), entry("q/3", 7)];
        let fence = |token| Fence {
            name: "q".into(),
            token,
        };
        assert!(fence(4).holds(queue.iter()));
        assert!(!fence(7).holds(queue.iter()), "a waiter's revision");
        assert!(!fence(4).holds([].iter()), "an empty queue");
        assert_eq!(fence(4).to_string(), "q=4");
    }
}
