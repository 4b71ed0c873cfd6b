//! The store against a model: random sequences of operations and batches
//! must give the same outcomes, state, revisions and events as a plain map
//! that applies them one at a time.

use std::collections::BTreeMap;

use futures_util::{FutureExt, StreamExt};
use proptest::prelude::*;

use super::*;

const KEYS: &[&str] = &["a", "b", "c"];
const VALUES: &[&str] = &["0", "1", "2"];

fn key() -> impl Strategy<Value = Key> {
    proptest::sample::select(KEYS).prop_map(Key::from)
}

fn value() -> impl Strategy<Value = Value> {
    proptest::sample::select(VALUES).prop_map(Value::from)
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
        value().prop_map(|value| Action::Put { value, ttl: None }),
        Just(Action::Delete),
    ];
    (key(), action, condition()).prop_map(|(key, action, condition)| Op {
        key,
        action,
        condition,
    })
}

/// The reference: a map, a revision counter and the event log.
#[derive(Default)]
struct Model {
    map: BTreeMap<Key, Current>,
    revision: u64,
    events: Vec<(u64, EventKind, Key, Option<Value>)>,
}

impl Model {
    /// Applies `ops` as one batch; returns the outcomes and whether they
    /// were applied.
    fn run(&mut self, ops: &[Op]) -> (Vec<Outcome>, bool) {
        let mut map = self.map.clone();
        let mut revision = self.revision;
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
                Action::Put { value, .. } => {
                    revision += 1;
                    map.insert(
                        op.key.clone(),
                        Current {
                            value: value.clone(),
                            revision,
                        },
                    );
                    events.push((
                        revision,
                        EventKind::Put,
                        op.key.clone(),
                        Some(value.clone()),
                    ));
                    match current {
                        Some(_) => Outcome::Replaced { revision },
                        None => Outcome::Created { revision },
                    }
                }
                Action::Delete => match current {
                    None => Outcome::NotFound,
                    Some(_) => {
                        revision += 1;
                        map.remove(&op.key);
                        events.push((revision, EventKind::Delete, op.key.clone(), None));
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
            self.revision = revision;
            self.events.extend(events);
        }
        (outcomes, applied)
    }
}

const CONFIG: StoreConfig = StoreConfig {
    history: 1000,
    history_bytes: 1 << 20,
    watch_queue_bytes: 1 << 20,
    watch_memory: 1 << 30,
    max_watches: 1000,
};

proptest! {
    #[test]
    fn the_store_behaves_like_the_model(
        batches in proptest::collection::vec(proptest::collection::vec(op(), 1..5), 1..40)
    ) {
        check(&Store::new(CONFIG), &batches)?;
    }

    #[test]
    fn a_store_with_a_data_dir_behaves_like_the_model_and_reloads_its_state(
        batches in proptest::collection::vec(proptest::collection::vec(op(), 1..5), 1..20)
    ) {
        let dir = tempfile::tempdir().map_err(|err| TestCaseError::fail(err.to_string()))?;
        let open = || Store::open(CONFIG, dir.path(), Fsync::Always)
            .map_err(|err| TestCaseError::fail(err.to_string()));
        let (store, _) = open()?;
        check(&store, &batches)?;
        let expected: Vec<_> = KEYS.iter().map(|key| store.get(key)).collect();
        let revision = store.stats().revision;
        store.close();

        let (reopened, recovered) = open()?;
        prop_assert_eq!(recovered.revision, revision);
        let reloaded: Vec<_> = KEYS.iter().map(|key| reopened.get(key)).collect();
        prop_assert_eq!(reloaded, expected);
        reopened.close();
    }
}

/// Runs `batches` through `store` and the model side by side.
fn check(store: &Store, batches: &[Vec<Op>]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|err| TestCaseError::fail(err.to_string()))?;
    let mut model = Model::default();
    for ops in batches {
        let (expected, applied) = model.run(ops);
        let outcomes = if ops.len() == 1 {
            let outcome = runtime.block_on(store.apply(ops[0].clone()));
            vec![outcome.map_err(|err| TestCaseError::fail(err.to_string()))?]
        } else {
            match runtime.block_on(store.batch(ops)) {
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
            prop_assert_eq!(store.get(key), model.map.get(*key).cloned());
        }
        prop_assert_eq!(store.stats().revision, model.revision);
    }

    // The history replays exactly the model's events.
    let mut watch = store
        .watch(
            KEYS.iter().map(|k| Key::from(*k)).collect(),
            Some(0),
            std::sync::Arc::new(()),
        )
        .map_err(|err| TestCaseError::fail(format!("{err:?}")))?;
    let mut replayed = Vec::new();
    while let Some(Some(delivery)) = watch.next().now_or_never() {
        let event = delivery.event;
        replayed.push((
            event.id,
            event.kind,
            Key::from(event.key()),
            event.value().map(Value::from),
        ));
    }
    prop_assert_eq!(replayed, model.events);
    Ok(())
}
