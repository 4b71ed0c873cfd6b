//! Leases: a TTL that many keys share (etcd's `Lease`). When it runs out,
//! or is revoked, every key attached to it goes at once.

use std::num::NonZeroU64;
use std::time::Duration;

/// A lease's id: a positive 63-bit number, as etcd's (an `int64` above 0),
/// shown as 16 hex digits as `etcdctl` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(NonZeroU64);

impl LeaseId {
    /// The largest id: etcd's ids are signed 64-bit numbers.
    pub const MAX: u64 = i64::MAX as u64;

    /// `None` for 0 or a number past [`LeaseId::MAX`].
    pub fn new(id: u64) -> Option<Self> {
        NonZeroU64::new(id)
            .filter(|id| id.get() <= Self::MAX)
            .map(Self)
    }

    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// Parses 1 to 16 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().and_then(Self::new)
    }
}

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.get())
    }
}

/// How long a written key lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lifetime {
    /// Until it is deleted (a write so detaches it from any lease and
    /// clears any TTL).
    #[default]
    Forever,
    /// Its own TTL.
    Ttl(Duration),
    /// As long as the lease.
    Lease(LeaseId),
}

impl Lifetime {
    /// From an optional TTL, as the API's `ttl` fields say it.
    pub fn from_ttl(ttl: Option<Duration>) -> Self {
        ttl.map_or(Self::Forever, Self::Ttl)
    }

    pub fn lease(self) -> Option<LeaseId> {
        match self {
            Self::Lease(lease) => Some(lease),
            Self::Forever | Self::Ttl(_) => None,
        }
    }
}

/// A lease as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseState {
    pub id: LeaseId,
    /// The TTL it was granted, in seconds: what each keep-alive restores.
    pub granted_ttl: u64,
    /// Seconds left (rounded up: 0 only once it has run out).
    pub ttl: u64,
    /// The token that granted it (none without an auth file).
    pub owner: Option<std::sync::Arc<str>>,
    /// The keys on it, in key order (when asked for).
    pub keys: Option<Vec<super::Key>>,
}

/// A lease as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHeld {
    pub id: LeaseId,
    pub owner: Option<std::sync::Arc<str>>,
}

/// A page of the leases, in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeasePage {
    pub leases: Vec<LeaseHeld>,
    /// Whether more follow the last.
    pub more: bool,
}

/// Why a lease call failed.
#[derive(Clone, Debug)]
pub enum LeaseError {
    /// No such lease: never granted, expired or revoked.
    NotFound(LeaseId),
    /// A grant named an id that is in use.
    Exists(LeaseId),
    /// A grant past the most leases the store holds (`--max-leases`).
    TooMany {
        max: usize,
    },
    Storage(super::StorageError),
}

impl From<super::StorageError> for LeaseError {
    fn from(err: super::StorageError) -> Self {
        Self::Storage(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_a_positive_int64_in_hex() {
        assert_eq!(LeaseId::new(0), None);
        assert_eq!(LeaseId::new(LeaseId::MAX + 1), None);
        let id = LeaseId::new(0x694d_7b9b_8a0e_3f04).expect("an id");
        assert_eq!(id.to_string(), "694d7b9b8a0e3f04");
        assert_eq!(LeaseId::parse("694d7b9b8a0e3f04"), Some(id));
        assert_eq!(LeaseId::parse("2a").map(LeaseId::get), Some(42));
        for bad in ["", "0", "x1", "8000000000000000", "00000000000000001", "+1"] {
            assert_eq!(LeaseId::parse(bad), None, "{bad:?}");
        }
    }
}
