//! The store's map (`LockMap`: sharded parking_lot RwLocks) against a
//! single `std::sync::RwLock<HashMap>` and dashmap, under read-heavy,
//! write-heavy, mixed and hot-key loads from two threads (this machine's
//! core count). `cargo bench -p kv-bench --bench lock_map`

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dashmap::DashMap;
use kv_store::domain::{Entry, Key, Meta};
use kv_store::store::LockMap;

const KEYS: usize = 10_000;
const THREADS: usize = 2;

/// The two operations every map under test offers.
trait Map: Send + Sync + 'static {
    fn get(&self, key: &str) -> Option<u64>;
    fn put(&self, key: &Key, revision: u64);
}

/// The record every map stores: the store's own, made the same way for all.
fn entry(key: &str, revision: u64) -> Entry {
    Entry::new(key, &[b'v'; 100], Meta::created(revision), None)
}

impl Map for LockMap {
    fn get(&self, key: &str) -> Option<u64> {
        self.read(key, Entry::mod_revision)
    }

    fn put(&self, key: &Key, revision: u64) {
        let hash = self.hash(key);
        self.lock([&hash]).insert(hash, entry(key, revision));
    }
}

impl Map for RwLock<HashMap<Key, Entry>> {
    fn get(&self, key: &str) -> Option<u64> {
        let map = self.read().unwrap_or_else(|e| e.into_inner());
        map.get(key).map(Entry::mod_revision)
    }

    fn put(&self, key: &Key, revision: u64) {
        let mut map = self.write().unwrap_or_else(|e| e.into_inner());
        map.insert(key.clone(), entry(key, revision));
    }
}

impl Map for DashMap<Key, Entry> {
    fn get(&self, key: &str) -> Option<u64> {
        DashMap::get(self, key).map(|e| e.mod_revision())
    }

    fn put(&self, key: &Key, revision: u64) {
        self.insert(key.clone(), entry(key, revision));
    }
}

/// Runs `iters` operations on each of [`THREADS`] threads; every
/// `write_every`-th operation is a write (0: never), on one of `keys` keys.
fn run<M: Map>(map: &Arc<M>, keys: &Arc<Vec<Key>>, iters: u64, write_every: u64) -> Duration {
    let started = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (map, keys) = (map.clone(), keys.clone());
            thread::spawn(move || {
                let mut n = t * 7919;
                for i in 0..iters {
                    n = n.wrapping_mul(31).wrapping_add(17);
                    let key = &keys[n % keys.len()];
                    if write_every != 0 && i % write_every == 0 {
                        map.put(key, i);
                    } else {
                        black_box(map.get(key));
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    started.elapsed()
}

fn bench_map<M: Map>(c: &mut Criterion, name: &str, map: M) {
    let map = Arc::new(map);
    let all: Vec<Key> = (0..KEYS).map(|i| Key::from(format!("key{i}"))).collect();
    for key in &all {
        map.put(key, 0);
    }
    let all = Arc::new(all);
    let hot = Arc::new(vec![all[0].clone()]);
    let mut group = c.benchmark_group(name);
    for (load, keys, write_every) in [
        ("read-heavy", &all, 0),
        ("write-heavy", &all, 1),
        ("mixed 90-10", &all, 10),
        ("hot key 90-10", &hot, 10),
    ] {
        group.bench_function(load, |b| {
            b.iter_custom(|iters| run(&map, keys, iters, write_every))
        });
    }
    group.finish();
}

fn maps(c: &mut Criterion) {
    bench_map(c, "LockMap", LockMap::new());
    bench_map(c, "RwLock<HashMap>", RwLock::new(HashMap::new()));
    bench_map(c, "DashMap", DashMap::new());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = maps
}
criterion_main!(benches);
