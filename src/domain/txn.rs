//! Transactions with guards: if every guard holds, the `then` operations
//! run, otherwise the `else` operations, as one commit (etcd's `Txn`).

use std::cmp::Ordering;

use super::{Current, Entry, Key, LeaseId, Lifetime, Outcome, Value};

/// How a key's field must compare with the guard's operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Equal,
    NotEqual,
    Less,
    Greater,
}

impl Order {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Equal => ordering.is_eq(),
            Self::NotEqual => ordering.is_ne(),
            Self::Less => ordering.is_lt(),
            Self::Greater => ordering.is_gt(),
        }
    }
}

/// A field of a key and the operand it is compared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operand {
    /// Compared byte by byte.
    Value(Value),
    ModRevision(u64),
    CreateRevision(u64),
    Version(u64),
    /// The key's lease id; 0: on no lease (etcd's rule).
    Lease(u64),
}

/// A key's field compared with an operand. Where there is no key (an
/// absent key, a prefix with none), every number counts as 0 and a value
/// comparison fails: etcd's rule, so both backends agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    pub order: Order,
    pub operand: Operand,
}

impl Comparison {
    pub fn holds(&self, current: Option<&Current>) -> bool {
        let number = |field: fn(&Current) -> u64| current.map_or(0, field);
        let ordering = match &self.operand {
            Operand::Value(operand) => match current {
                Some(current) => current.value.as_bytes().cmp(operand.as_bytes()),
                None => return false,
            },
            Operand::ModRevision(operand) => number(|c| c.meta.mod_revision).cmp(operand),
            Operand::CreateRevision(operand) => number(|c| c.meta.create_revision).cmp(operand),
            Operand::Version(operand) => number(|c| c.meta.version).cmp(operand),
            Operand::Lease(operand) => {
                number(|c| c.meta.lease.map_or(0, LeaseId::get)).cmp(operand)
            }
        };
        self.order.holds(ordering)
    }
}

/// What a guard on one key asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyTest {
    Exists,
    Absent,
    Compare(Comparison),
}

/// What a guard on a prefix asks of the keys under it. ("Some key exists"
/// is not one: etcd's compares hold for every key of a range.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrefixTest {
    /// No key under the prefix.
    Empty,
    /// Every key under it satisfies the comparison (with none, the
    /// comparison is judged as on an absent key).
    Every(Comparison),
}

/// One condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guard {
    Key { key: Key, test: KeyTest },
    Prefix { prefix: Key, test: PrefixTest },
}

impl Guard {
    /// Whether a key guard holds for the key in state `current`.
    pub fn holds_for_key(test: &KeyTest, current: Option<&Current>) -> bool {
        match test {
            KeyTest::Exists => current.is_some(),
            KeyTest::Absent => current.is_none(),
            KeyTest::Compare(comparison) => comparison.holds(current),
        }
    }

    /// Whether a prefix guard holds for the keys under it.
    pub fn holds_for_prefix<'a>(
        test: &PrefixTest,
        mut under: impl Iterator<Item = &'a Entry>,
    ) -> bool {
        match test {
            PrefixTest::Empty => under.next().is_none(),
            PrefixTest::Every(comparison) => {
                let mut any = false;
                let every = under.all(|entry| {
                    any = true;
                    comparison.holds(Some(&Current::from(entry)))
                });
                if any { every } else { comparison.holds(None) }
            }
        }
    }
}

/// One operation of a transaction's branch. Reads see the store as the
/// guards saw it; the writes all take the transaction's one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Get(Key),
    /// The first `limit` keys under the prefix, in key order.
    List {
        prefix: Key,
        limit: usize,
    },
    /// Sets the value, for `lifetime`.
    Put {
        key: Key,
        value: Value,
        lifetime: Lifetime,
    },
    Delete(Key),
    /// Deletes every key under a (non-empty) prefix.
    DeletePrefix(Key),
}

impl TxnOp {
    pub fn is_read(&self) -> bool {
        matches!(self, Self::Get(_) | Self::List { .. })
    }
}

/// A transaction: guards, and the operations for each way they come out.
/// Its writes name distinct keys (the API checks: a key written twice, or
/// under a prefix the same branch deletes, is refused as etcd refuses it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub guards: Vec<Guard>,
    pub then: Vec<TxnOp>,
    pub otherwise: Vec<TxnOp>,
}

impl Txn {
    /// The branch that runs when the guards come out `succeeded`.
    pub fn branch(&self, succeeded: bool) -> &[TxnOp] {
        if succeeded {
            &self.then
        } else {
            &self.otherwise
        }
    }
}

/// What one operation of a transaction did.
#[derive(Clone, Debug)]
pub enum TxnResult {
    /// A get, put or delete: as the same operation alone.
    One(Outcome),
    /// The keys a list found, in key order.
    Listed { entries: Vec<Entry>, more: bool },
    /// How many keys a prefix delete removed.
    PrefixDeleted { deleted: u64 },
}

/// What a transaction did.
#[derive(Clone, Debug)]
pub struct TxnOutcome {
    /// Whether every guard held (so `then` ran, else `else`).
    pub succeeded: bool,
    /// The store's revision after the transaction: its writes' revision,
    /// or the revision its reads saw.
    pub revision: u64,
    /// One per operation of the branch that ran.
    pub results: Vec<TxnResult>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Meta;

    fn current(value: &str, mod_revision: u64) -> Current {
        Current {
            value: value.into(),
            meta: Meta {
                create_revision: 2,
                mod_revision,
                version: 3,
                lease: LeaseId::new(5),
            },
        }
    }

    fn compare(order: Order, operand: Operand) -> Comparison {
        Comparison { order, operand }
    }

    #[test]
    fn every_order_compares_each_field() {
        let key = current("b", 7);
        let cases = [
            (Order::Equal, Operand::ModRevision(7), true),
            (Order::NotEqual, Operand::ModRevision(7), false),
            (Order::Less, Operand::ModRevision(8), true),
            (Order::Greater, Operand::ModRevision(7), false),
            (Order::Equal, Operand::CreateRevision(2), true),
            (Order::Greater, Operand::Version(2), true),
            (Order::Less, Operand::Value("c".into()), true),
            (Order::Greater, Operand::Value("a".into()), true),
            (Order::Equal, Operand::Value("b".into()), true),
            (Order::Equal, Operand::Lease(5), true),
            (Order::Greater, Operand::Lease(0), true),
        ];
        for (order, operand, holds) in cases {
            assert_eq!(
                compare(order, operand.clone()).holds(Some(&key)),
                holds,
                "{order:?} {operand:?}"
            );
        }
    }

    #[test]
    fn an_absent_key_has_zero_numbers_and_no_value() {
        assert!(compare(Order::Equal, Operand::Version(0)).holds(None));
        assert!(compare(Order::Less, Operand::ModRevision(1)).holds(None));
        assert!(!compare(Order::Equal, Operand::Value("".into())).holds(None));
        assert!(!compare(Order::NotEqual, Operand::Value("x".into())).holds(None));
        assert!(compare(Order::Equal, Operand::Lease(0)).holds(None));
    }

    #[test]
    fn a_prefix_guard_asks_every_key() {
        let entry = |key: &str, revision| Entry::new(key, b"v", Meta::created(revision), None);
        let keys = [entry("p/a", 3), entry("p/b", 9)];
        let before_5 = PrefixTest::Every(compare(Order::Less, Operand::ModRevision(5)));
        assert!(!Guard::holds_for_prefix(&before_5, keys.iter()));
        assert!(Guard::holds_for_prefix(&before_5, keys[..1].iter()));
        assert!(Guard::holds_for_prefix(&before_5, [].iter()));
        assert!(Guard::holds_for_prefix(&PrefixTest::Empty, [].iter()));
        assert!(!Guard::holds_for_prefix(&PrefixTest::Empty, keys.iter()));
        let value = PrefixTest::Every(compare(Order::Equal, Operand::Value("v".into())));
        assert!(Guard::holds_for_prefix(&value, keys.iter()));
        assert!(!Guard::holds_for_prefix(&value, [].iter()), "etcd's rule");
    }
}
