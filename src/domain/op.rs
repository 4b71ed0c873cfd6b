//! Operations and their outcomes: what the API asks of the store and what
//! it gets back.

use super::{Entry, Key, Lifetime, Meta, Value};

/// A key's value, revisions and version, as reads and failed conditions
/// report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current {
    pub value: Value,
    pub meta: Meta,
}

impl Current {
    /// The key's `mod_revision`: its ETag.
    pub fn revision(&self) -> u64 {
        self.meta.mod_revision
    }
}

impl From<&Entry> for Current {
    fn from(entry: &Entry) -> Self {
        Self {
            value: entry.value(),
            meta: entry.meta(),
        }
    }
}

/// A set of revisions a condition compares a key's `mod_revision` with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revisions {
    /// Any revision: the key exists.
    Any,
    OneOf(Vec<u64>),
}

impl Revisions {
    pub fn contains(&self, revision: u64) -> bool {
        match self {
            Self::Any => true,
            Self::OneOf(revisions) => revisions.contains(&revision),
        }
    }
}

/// What must hold for an operation to apply.
#[derive(Clone, Debug, Default)]
pub enum Condition {
    #[default]
    Always,
    /// The key's revision is in `must` (if given) and not in `must_not`
    /// (if given); an absent key is in no set.
    Revision {
        must: Option<Revisions>,
        must_not: Option<Revisions>,
    },
    /// Compare-and-swap: the key holds this value, or is absent for `None`.
    Value(Option<Value>),
}

impl Condition {
    /// Whether the condition holds for a key in state `current`.
    pub fn holds(&self, current: Option<&Current>) -> bool {
        let revision = current.map(Current::revision);
        match self {
            Self::Always => true,
            Self::Revision { must, must_not } => {
                let in_set = |set: &Revisions| revision.is_some_and(|r| set.contains(r));
                must.as_ref().is_none_or(in_set) && !must_not.as_ref().is_some_and(in_set)
            }
            Self::Value(expected) => match (expected, current) {
                (None, None) => true,
                (Some(expected), Some(current)) => *expected == current.value,
                _ => false,
            },
        }
    }

    pub(crate) fn is_cas(&self) -> bool {
        matches!(self, Self::Value(_))
    }
}

/// What an operation does.
#[derive(Clone, Debug)]
pub enum Action {
    Get,
    /// Sets the value, for `lifetime` (which replaces any TTL or lease the
    /// key had).
    Put {
        value: Value,
        lifetime: Lifetime,
    },
    Delete,
}

/// One operation on one key: a request, or one element of a batch.
#[derive(Clone, Debug)]
pub struct Op {
    pub key: Key,
    pub action: Action,
    pub condition: Condition,
}

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Found(Current),
    NotFound,
    Created {
        revision: u64,
    },
    Replaced {
        revision: u64,
    },
    Deleted {
        revision: u64,
    },
    /// The condition did not hold; nothing was written.
    Rejected {
        current: Option<Current>,
    },
}

impl Outcome {
    pub(crate) fn is_write(&self) -> bool {
        matches!(
            self,
            Self::Created { .. } | Self::Replaced { .. } | Self::Deleted { .. }
        )
    }
}

/// What `DELETE /store?prefix=` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixDeleted {
    pub deleted: u64,
    /// The store's revision after the delete.
    pub revision: u64,
}
