//! The store against a model: random sequences of operations, batches,
//! prefix deletes, transactions and leases (granted, keys put on them and
//! taken off, revoked) must give the same outcomes, state,
//! revisions, events and listings (at every past revision) as a plain map.

use std::collections::BTreeMap;

use futures_util::{FutureExt, StreamExt};
use proptest::prelude::*;

use super::*;
use crate::domain::*;
use crate::watch::*;

const KEYS: &[&str] = &["a", "a/x", "a/y", "b"];
const PREFIXES: &[&str] = &["", "a", "a/", "a/x", "b", "c"];
const VALUES: &[&str] = &["0", "1", "2"];

fn key() -> impl Strategy<Value = Key> {
    proptest::sample::select(KEYS).prop_map(Key::from)
}

fn value() -> impl Strategy<Value = Value> {
    proptest::sample::select(VALUES).prop_map(Value::from)
}

/// The leases steps name: two, so that keys move between them.
fn lease_id() -> impl Strategy<Value = LeaseId> {
    (1u64..=2).prop_filter_map("a lease id", LeaseId::new)
}

fn lifetime() -> impl Strategy<Value = Lifetime> {
    prop_oneof![
        3 => Just(Lifetime::Forever),
        2 => lease_id().prop_map(Lifetime::Lease),
    ]
}

fn revisions() -> impl Strategy<Value = Revisions> {
    prop_oneof![
        Just(Revisions::Any),
        proptest::collection::vec(0u64..12, 0..3).prop_map(Revisions::OneOf),
    ]
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        3 => Just(Condition::Always),
        1 => (proptest::option::of(revisions()), proptest::option::of(revisions()))
            .prop_map(|(must, must_not)| Condition::Revision { must, must_not }),
        2 => proptest::option::of(value()).prop_map(Condition::Value),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let action = prop_oneof![
        Just(Action::Get),
        (value(), lifetime()).prop_map(|(value, lifetime)| Action::Put { value, lifetime }),
        Just(Action::Delete),
    ];
    (key(), action, condition()).prop_map(|(key, action, condition)| Op {
        key,
        action,
        condition,
    })
}

fn comparison() -> impl Strategy<Value = Comparison> {
    let order =
        proptest::sample::select(&[Order::Equal, Order::NotEqual, Order::Less, Order::Greater][..]);
    let operand = prop_oneof![
        value().prop_map(Operand::Value),
        (0u64..12).prop_map(Operand::ModRevision),
        (0u64..12).prop_map(Operand::CreateRevision),
        (0u64..4).prop_map(Operand::Version),
    ];
    (order, operand).prop_map(|(order, operand)| Comparison { order, operand })
}

fn guard() -> impl Strategy<Value = Guard> {
    let key_test = prop_oneof![
        1 => Just(KeyTest::Exists),
        1 => Just(KeyTest::Absent),
        3 => comparison().prop_map(KeyTest::Compare),
    ];
    let prefix_test = prop_oneof![
        1 => Just(PrefixTest::Empty),
        3 => comparison().prop_map(PrefixTest::Every),
    ];
    let prefix = proptest::sample::select(PREFIXES).prop_map(Key::from);
    prop_oneof![
        2 => (key(), key_test).prop_map(|(key, test)| Guard::Key { key, test }),
        1 => (prefix, prefix_test).prop_map(|(prefix, test)| Guard::Prefix { prefix, test }),
    ]
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    let prefix = proptest::sample::select(PREFIXES).prop_map(Key::from);
    let doomed = proptest::sample::select(&PREFIXES[1..]).prop_map(Key::from);
    prop_oneof![
        1 => key().prop_map(TxnOp::Get),
        1 => (prefix, 1usize..4).prop_map(|(prefix, limit)| TxnOp::List { prefix, limit }),
        3 => (key(), value(), lifetime())
            .prop_map(|(key, value, lifetime)| TxnOp::Put { key, value, lifetime }),
        1 => key().prop_map(TxnOp::Delete),
        1 => doomed.prop_map(TxnOp::DeletePrefix),
    ]
}

/// A branch whose writes do not overlap (the API refuses the rest).
fn branch() -> impl Strategy<Value = Vec<TxnOp>> {
    proptest::collection::vec(txn_op(), 0..5).prop_map(|ops| {
        let mut kept: Vec<TxnOp> = Vec::new();
        for op in ops {
            let written = |op: &TxnOp| match op {
                TxnOp::Put { key, .. } | TxnOp::Delete(key) => Some((key.clone(), false)),
                TxnOp::DeletePrefix(prefix) => Some((prefix.clone(), true)),
                TxnOp::Get(_) | TxnOp::List { .. } => None,
            };
            let overlaps = |(a, a_prefix): &(Key, bool), (b, b_prefix): &(Key, bool)| {
                a == b || (*a_prefix && b.starts_with(&**a)) || (*b_prefix && a.starts_with(&**b))
            };
            let clash = written(&op).is_some_and(|mine| {
                kept.iter()
                    .filter_map(written)
                    .any(|theirs| overlaps(&mine, &theirs))
            });
            if !clash {
                kept.push(op);
            }
        }
        kept
    })
}

fn txn() -> impl Strategy<Value = Txn> {
    (proptest::collection::vec(guard(), 0..3), branch(), branch()).prop_map(
        |(guards, then, otherwise)| Txn {
            guards,
            then,
            otherwise,
        },
    )
}

/// One step: a run of operations (one, or a batch), a prefix delete, or a
/// transaction.
#[derive(Clone, Debug)]
enum Step {
    Ops(Vec<Op>),
    DeletePrefix(&'static str),
    Txn(Txn),
    Grant(LeaseId),
    Revoke(LeaseId),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        // A batch names distinct keys (the API checks).
        6 => proptest::collection::vec(op(), 1..5).prop_map(|mut ops| {
            let mut seen = std::collections::HashSet::new();
            ops.retain(|op| seen.insert(op.key.clone()));
            Step::Ops(ops)
        }),
        1 => proptest::sample::select(&PREFIXES[1..]).prop_map(Step::DeletePrefix),
        3 => txn().prop_map(Step::Txn),
        1 => lease_id().prop_map(Step::Grant),
        1 => lease_id().prop_map(Step::Revoke),
    ]
}

/// A transaction's result in a form that compares.
#[derive(Debug, PartialEq)]
enum Seen {
    One(Outcome),
    Listed(Vec<(Key, Current)>, bool),
    Deleted(u64),
}

fn seen(result: TxnResult) -> Seen {
    match result {
        TxnResult::One(outcome) => Seen::One(outcome),
        TxnResult::Listed { entries, more } => Seen::Listed(
            entries
                .iter()
                .map(|entry| (Key::from(entry.key()), Current::from(entry)))
                .collect(),
            more,
        ),
        TxnResult::PrefixDeleted { deleted } => Seen::Deleted(deleted),
    }
}

/// An event as the model logs it: revision, part, kind, key, value.
type Logged = (u64, Option<u32>, EventKind, Key, Option<Value>);

/// The reference: a map, a revision counter, the event log and the map as
/// it was after each step.
#[derive(Default)]
struct Model {
    map: BTreeMap<Key, Current>,
    revision: u64,
    events: Vec<Logged>,
    past: Vec<(u64, BTreeMap<Key, Current>)>,
    leases: std::collections::BTreeSet<LeaseId>,
}

impl Model {
    /// Logs one revision's events, numbering them if there are several.
    fn log(&mut self, events: Vec<(EventKind, Key, Option<Value>)>) {
        if events.is_empty() {
            return;
        }
        self.revision += 1;
        let parts = events.len() > 1;
        for (part, (kind, key, value)) in events.into_iter().enumerate() {
            let part = parts.then_some(part as u32);
            self.events.push((self.revision, part, kind, key, value));
        }
    }

    /// Deletes the keys under `prefix` in key order, at one revision;
    /// returns how many.
    fn delete_prefix(&mut self, prefix: &str) -> u64 {
        let doomed: Vec<Key> = self
            .map
            .keys()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect();
        for key in &doomed {
            self.map.remove(key);
        }
        let count = doomed.len() as u64;
        self.log(
            doomed
                .into_iter()
                .map(|key| (EventKind::Delete, key, None))
                .collect(),
        );
        count
    }

    /// Runs a transaction: guards and reads on the state before it, the
    /// branch's writes in order at the next revision. Returns whether the
    /// guards held and the results, or the lease a put named that does not
    /// exist (then nothing is written).
    fn txn(&mut self, txn: &Txn) -> Result<(bool, Vec<Seen>), LeaseId> {
        let entry = |(key, current): (&Key, &Current)| {
            Entry::new(key, current.value.as_bytes(), current.meta, None)
        };
        let under = |prefix: &str| -> Vec<Entry> {
            self.map
                .iter()
                .filter(|(key, _)| key.starts_with(prefix))
                .map(entry)
                .collect()
        };
        let succeeded = txn.guards.iter().all(|guard| match guard {
            Guard::Key { key, test } => Guard::holds_for_key(test, self.map.get(key)),
            Guard::Prefix { prefix, test } => Guard::holds_for_prefix(test, under(prefix).iter()),
        });
        let missing = txn.branch(succeeded).iter().find_map(|op| match op {
            TxnOp::Put { lifetime, .. } => lifetime.lease().filter(|l| !self.leases.contains(l)),
            _ => None,
        });
        if let Some(missing) = missing {
            return Err(missing);
        }
        let before = self.map.clone();
        let revision = self.revision + 1;
        let mut events = Vec::new();
        let mut results = Vec::new();
        for op in txn.branch(succeeded) {
            results.push(match op {
                TxnOp::Get(key) => Seen::One(
                    before
                        .get(key)
                        .cloned()
                        .map_or(Outcome::NotFound, Outcome::Found),
                ),
                TxnOp::List { prefix, limit } => {
                    let all: Vec<(Key, Current)> = before
                        .iter()
                        .filter(|(key, _)| key.starts_with(&**prefix))
                        .map(|(key, current)| (key.clone(), current.clone()))
                        .collect();
                    let more = all.len() > *limit;
                    Seen::Listed(all.into_iter().take(*limit).collect(), more)
                }
                TxnOp::Put {
                    key,
                    value,
                    lifetime,
                } => {
                    let previous = before.get(key);
                    let meta = previous
                        .map_or(Meta::created(revision), |c| c.meta.rewritten(revision))
                        .on_lease(lifetime.lease());
                    self.map.insert(
                        key.clone(),
                        Current {
                            value: value.clone(),
                            meta,
                        },
                    );
                    events.push((EventKind::Put, key.clone(), Some(value.clone())));
                    Seen::One(match previous {
                        Some(_) => Outcome::Replaced { revision },
                        None => Outcome::Created { revision },
                    })
                }
                TxnOp::Delete(key) => match self.map.remove(key) {
                    Some(_) => {
                        events.push((EventKind::Delete, key.clone(), None));
                        Seen::One(Outcome::Deleted { revision })
                    }
                    None => Seen::One(Outcome::NotFound),
                },
                TxnOp::DeletePrefix(prefix) => {
                    let doomed: Vec<Key> = before
                        .keys()
                        .filter(|key| key.starts_with(&**prefix))
                        .cloned()
                        .collect();
                    for key in &doomed {
                        self.map.remove(key);
                        events.push((EventKind::Delete, key.clone(), None));
                    }
                    Seen::Deleted(doomed.len() as u64)
                }
            });
        }
        self.log(events);
        Ok((succeeded, results))
    }

    /// The first lease `ops` put a key on that does not exist.
    fn missing_lease(&self, ops: &[Op]) -> Option<LeaseId> {
        ops.iter().find_map(|op| match &op.action {
            Action::Put { lifetime, .. } => lifetime.lease().filter(|l| !self.leases.contains(l)),
            Action::Get | Action::Delete => None,
        })
    }

    /// Revokes a lease: its keys deleted in key order, at one revision.
    fn revoke(&mut self, id: LeaseId) -> bool {
        if !self.leases.remove(&id) {
            return false;
        }
        let doomed: Vec<Key> = self
            .map
            .iter()
            .filter(|(_, current)| current.meta.lease == Some(id))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &doomed {
            self.map.remove(key);
        }
        self.log(
            doomed
                .into_iter()
                .map(|key| (EventKind::Delete, key, None))
                .collect(),
        );
        true
    }

    /// Applies `ops` (distinct keys) as one batch: conditions against the
    /// state before it, every write at the next revision. Returns the
    /// outcomes and whether they were applied.
    fn run(&mut self, ops: &[Op]) -> (Vec<Outcome>, bool) {
        let mut map = self.map.clone();
        let revision = self.revision + 1;
        let mut events = Vec::new();
        let mut outcomes = Vec::new();
        for op in ops {
            let current = map.get(&op.key).cloned();
            if !op.condition.holds(current.as_ref()) {
                outcomes.push(Outcome::Rejected { current });
                continue;
            }
            outcomes.push(match &op.action {
                Action::Get => current.map_or(Outcome::NotFound, Outcome::Found),
                Action::Put { value, lifetime } => {
                    let meta = current
                        .as_ref()
                        .map_or(Meta::created(revision), |c| c.meta.rewritten(revision))
                        .on_lease(lifetime.lease());
                    map.insert(
                        op.key.clone(),
                        Current {
                            value: value.clone(),
                            meta,
                        },
                    );
                    events.push((EventKind::Put, op.key.clone(), Some(value.clone())));
                    match current {
                        Some(_) => Outcome::Replaced { revision },
                        None => Outcome::Created { revision },
                    }
                }
                Action::Delete => match current {
                    None => Outcome::NotFound,
                    Some(_) => {
                        map.remove(&op.key);
                        events.push((EventKind::Delete, op.key.clone(), None));
                        Outcome::Deleted { revision }
                    }
                },
            });
        }
        let applied = !outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Rejected { .. }));
        if applied {
            self.map = map;
            self.log(events);
        }
        (outcomes, applied)
    }
}

const CONFIG: StoreConfig = StoreConfig {
    history: 1000,
    history_bytes: 1 << 20,
    watch: WatchLimits {
        per_watcher: 1 << 20,
        total: 1 << 30,
        watchers: 1000,
        heartbeat: std::time::Duration::from_secs(15),
    },
    max_leases: 100,
};

proptest! {
    #[test]
    fn the_store_behaves_like_the_model(
        batches in proptest::collection::vec(step(), 1..40)
    ) {
        check(&Store::new(CONFIG), &batches)?;
    }

    #[test]
    fn a_store_with_a_data_dir_behaves_like_the_model_and_reloads_its_state(
        batches in proptest::collection::vec(step(), 1..20)
    ) {
        let dir = tempfile::tempdir().map_err(|err| TestCaseError::fail(err.to_string()))?;
        let open = || Store::open(CONFIG, dir.path(), Fsync::Always)
            .map_err(|err| TestCaseError::fail(err.to_string()));
        let (store, _) = open()?;
        check(&store, &batches)?;
        let expected: Vec<_> = KEYS.iter().map(|key| store.get_now(key)).collect();
        let revision = store.stats().revision;
        store.close();

        let (reopened, recovered) = open()?;
        prop_assert_eq!(recovered.revision, revision);
        let reloaded: Vec<_> = KEYS.iter().map(|key| reopened.get_now(key)).collect();
        prop_assert_eq!(reloaded, expected);
        reopened.close();
    }
}

/// Runs `batches` through `store` and the model side by side.
fn check(store: &Store, batches: &[Step]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|err| TestCaseError::fail(err.to_string()))?;
    let mut model = Model::default();
    model.past.push((0, BTreeMap::new()));
    for step in batches {
        let ops = match step {
            Step::Ops(ops) => ops,
            Step::Grant(id) => {
                let granted = runtime.block_on(store.grant(Some(*id), 60, None));
                let fresh = model.leases.insert(*id);
                prop_assert_eq!(granted.is_ok(), fresh, "grant {}", id);
                continue;
            }
            Step::Revoke(id) => {
                let revoked = runtime.block_on(store.revoke(*id));
                let existed = model.revoke(*id);
                match revoked {
                    Ok(revision) => {
                        prop_assert!(existed);
                        prop_assert_eq!(revision, model.revision);
                    }
                    Err(LeaseError::NotFound(_)) => prop_assert!(!existed),
                    Err(err) => return Err(TestCaseError::fail(format!("{err:?}"))),
                }
                model.past.push((model.revision, model.map.clone()));
                continue;
            }
            Step::Txn(txn) => {
                let outcome = runtime.block_on(store.txn(txn, &[]));
                match (model.txn(txn), outcome) {
                    (Err(missing), Err(StorageError::LeaseNotFound(named))) => {
                        prop_assert_eq!(missing, named);
                        continue;
                    }
                    (Ok((succeeded, expected)), Ok(outcome)) => {
                        prop_assert_eq!(outcome.succeeded, succeeded);
                        prop_assert_eq!(outcome.revision, model.revision);
                        let results: Vec<Seen> = outcome.results.into_iter().map(seen).collect();
                        prop_assert_eq!(results, expected);
                    }
                    (model, store) => {
                        return Err(TestCaseError::fail(format!("{model:?} but {store:?}")));
                    }
                }
                for key in KEYS {
                    prop_assert_eq!(store.get_now(key), model.map.get(*key).cloned());
                }
                model.past.push((model.revision, model.map.clone()));
                continue;
            }
            Step::DeletePrefix(prefix) => {
                let deleted = runtime
                    .block_on(store.delete_prefix(prefix, &[]))
                    .map_err(|err| TestCaseError::fail(err.to_string()))?;
                let expected = model.delete_prefix(prefix);
                prop_assert_eq!(
                    deleted,
                    PrefixDeleted {
                        deleted: expected,
                        revision: model.revision
                    }
                );
                model.past.push((model.revision, model.map.clone()));
                continue;
            }
        };
        if let Some(missing) = model.missing_lease(ops) {
            let refused = if ops.len() == 1 {
                runtime.block_on(store.apply(ops[0].clone())).err()
            } else {
                match runtime.block_on(store.batch(ops, &[])) {
                    Err(BatchError::Storage(err)) => Some(err),
                    _ => None,
                }
            };
            prop_assert!(
                matches!(refused, Some(StorageError::LeaseNotFound(named)) if named == missing),
                "{:?}",
                refused
            );
            continue;
        }
        let (expected, applied) = model.run(ops);
        let outcomes = if ops.len() == 1 {
            let outcome = runtime.block_on(store.apply(ops[0].clone()));
            vec![outcome.map_err(|err| TestCaseError::fail(err.to_string()))?]
        } else {
            match runtime.block_on(store.batch(ops, &[])) {
                Ok(outcomes) => {
                    prop_assert!(applied);
                    outcomes
                }
                Err(BatchError::Rejected(outcomes)) => {
                    prop_assert!(!applied);
                    outcomes
                }
                Err(BatchError::Storage(err)) => return Err(TestCaseError::fail(err.to_string())),
            }
        };
        prop_assert_eq!(outcomes, expected);
        for key in KEYS {
            prop_assert_eq!(store.get_now(key), model.map.get(*key).cloned());
        }
        prop_assert_eq!(store.stats().revision, model.revision);
        model.past.push((model.revision, model.map.clone()));
    }

    // Every past state lists as the model held it, a page of two at a time.
    for (revision, map) in &model.past {
        for prefix in PREFIXES {
            let at = ReadPoint::now(*revision);
            let mut listed = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store
                    .range_now(&RangeRequest {
                        prefix,
                        after: after.as_deref(),
                        at: Some(at),
                        limit: 2,
                        max_bytes: usize::MAX,
                        keys_only: false,
                        count: true,
                    })
                    .map_err(|err| TestCaseError::fail(format!("{err:?}")))?;
                let expected_count = map.keys().filter(|key| key.starts_with(prefix)).count();
                prop_assert_eq!(page.count, Some(expected_count as u64));
                listed.extend(
                    page.entries
                        .iter()
                        .map(|entry| (Key::from(entry.key()), Current::from(entry))),
                );
                match page.entries.last() {
                    Some(last) if page.more => after = Some(last.key().to_owned()),
                    _ => break,
                }
            }
            let expected: Vec<(Key, Current)> = map
                .iter()
                .filter(|(key, _)| key.starts_with(prefix))
                .map(|(key, current)| (key.clone(), current.clone()))
                .collect();
            prop_assert_eq!(
                listed,
                expected,
                "prefix {:?} at revision {}",
                prefix,
                revision
            );
        }
    }

    // The history replays exactly the model's events, from the start and
    // from after each of them (in the middle of a revision too).
    let starts = std::iter::once(Position::after(0)).chain(
        model
            .events
            .iter()
            .map(|&(revision, part, ..)| Position { revision, part }),
    );
    for (skip, since) in starts.enumerate() {
        let watched = Watched {
            keys: KEYS.iter().map(|key| Key::from(*key)).collect(),
            prefixes: Vec::new(),
        };
        let mut watch = store
            .watch(watched, Some(since), std::sync::Arc::new(()))
            .now_or_never()
            .ok_or_else(|| TestCaseError::fail("an in-memory store answers at once"))?
            .map_err(|err| TestCaseError::fail(format!("{err:?}")))?;
        let mut replayed = Vec::new();
        while let Some(Some(WatchItem::Event(delivery))) = watch.next().now_or_never() {
            let event = delivery.event;
            replayed.push((
                event.id,
                event.part,
                event.kind,
                Key::from(event.key()),
                event.value().map(Value::from),
            ));
        }
        prop_assert_eq!(&replayed[..], &model.events[skip..], "after {}", since);
    }
    Ok(())
}
