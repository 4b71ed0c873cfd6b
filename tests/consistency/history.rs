//! What the clients saw, kept per key for the checker, and the writes
//! whose revision a client was told, for the watch validators.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use super::checker::{self, Entry, Op};

/// A write the server acknowledged with its revision (and its place among
/// its revision's writes, for a batch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    pub key: String,
    /// `None`: deleted.
    pub value: Option<String>,
}

/// Everything every client recorded.
pub struct History {
    started: Instant,
    inner: Mutex<Recorded>,
}

#[derive(Default)]
struct Recorded {
    per_key: BTreeMap<String, Vec<Entry>>,
    /// revision → the writes acknowledged at it, by key.
    acked: BTreeMap<u64, HashMap<String, Acked>>,
    /// revision → how many writes it holds, when a client knows (a batch
    /// or a single write acknowledged with its revision).
    writes_at: BTreeMap<u64, usize>,
    operations: usize,
    unknown: usize,
}

/// What the checker found.
pub struct Verdict {
    pub operations: usize,
    pub unknown: usize,
    pub keys: usize,
    pub failures: Vec<String>,
}

impl History {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            inner: Mutex::default(),
        }
    }

    /// Nanoseconds since the run started: the history's clock.
    pub fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records one client operation: its effect on each key it touched.
    pub fn record(&self, call: u64, ret: Option<u64>, ops: Vec<(String, Op)>) {
        let mut inner = self.inner.lock().expect("history lock");
        inner.operations += 1;
        if ret.is_none() {
            inner.unknown += 1;
        }
        for (key, op) in ops {
            inner
                .per_key
                .entry(key)
                .or_default()
                .push(Entry { call, ret, op });
        }
    }

    /// Records writes acknowledged at `revision` (all of one request).
    pub fn acked(&self, revision: u64, writes: Vec<Acked>) {
        let mut inner = self.inner.lock().expect("history lock");
        inner.writes_at.insert(revision, writes.len());
        let at = inner.acked.entry(revision).or_default();
        for write in writes {
            at.insert(write.key.clone(), write);
        }
    }

    /// The acknowledged writes, by revision.
    pub fn acked_writes(&self) -> BTreeMap<u64, HashMap<String, Acked>> {
        self.inner.lock().expect("history lock").acked.clone()
    }

    /// How many writes each revision a client learned of holds.
    pub fn writes_at(&self) -> BTreeMap<u64, usize> {
        self.inner.lock().expect("history lock").writes_at.clone()
    }

    /// Checks every key's history (all keys start absent).
    pub fn check(&self) -> Verdict {
        let inner = self.inner.lock().expect("history lock");
        let mut failures = Vec::new();
        for (key, entries) in &inner.per_key {
            if let Err(failure) = checker::check(entries, &None) {
                let mut shown: Vec<&Entry> = entries.iter().collect();
                shown.sort_by_key(|entry| entry.call);
                let around: Vec<String> = shown
                    .iter()
                    .rev()
                    .take(40)
                    .rev()
                    .map(|entry| format!("    {entry:?}"))
                    .collect();
                failures.push(format!(
                    "key {key:?}: not linearizable ({} of {} operations ordered; stuck at {:?})\n\
                     last operations:\n{}",
                    failure.linearized,
                    failure.total,
                    failure.stuck_at,
                    around.join("\n")
                ));
            }
        }
        Verdict {
            operations: inner.operations,
            unknown: inner.unknown,
            keys: inner.per_key.len(),
            failures,
        }
    }
}
