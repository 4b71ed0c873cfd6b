//! `LockMap`: the store's concurrent map from key to entry.

use std::hash::{BuildHasher, Hasher, RandomState};

use hashbrown::HashTable;
use parking_lot::{RwLock, RwLockWriteGuard};
use smallvec::SmallVec;

use crate::domain::Entry;

const SHARDS: usize = 64;

/// A shard: entries found by their own key, so a slot is one pointer.
type Shard = HashTable<Entry>;

/// The store's concurrent map: a fixed set of shards, each a hash table of
/// [`Entry`]s behind its own reader-writer lock.
///
/// Sharding keeps readers of one key from waiting on a writer of another. The
/// locks are `parking_lot`'s, chosen for their fairness: a steady flood of
/// readers cannot starve a writer and a flood of writers cannot starve
/// readers (the seed's `RwLock` design had that problem). They are blocking
/// locks, not tokio ones, because no `.await` ever happens while one is held:
/// every critical section is a few hash map operations.
///
/// Writers lock every shard their operation touches at once ([`LockMap::lock`]),
/// so a multi-key batch becomes visible to readers all at once.
pub struct LockMap {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
}

impl LockMap {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The key's hash (SipHash, randomly keyed: keys come from clients, who
    /// must not be able to aim them all at one bucket). One hash serves
    /// both the choice of shard and the shard's table, and the commit path
    /// hashes each key it writes once for all its lookups. Hashed as
    /// bytes, so a record's key is hashed without checking its UTF-8 again.
    pub fn hash(&self, key: &str) -> KeyHash {
        KeyHash(self.hash_bytes(key.as_bytes()))
    }

    fn hash_bytes(&self, key: &[u8]) -> u64 {
        // The key is the whole message: no length before it, as `[u8]`'s
        // `Hash` writes, nor a 0xFF after it, as `str`'s does (SipHash's
        // last block holds the length): a short key takes fewer blocks.
        let mut hasher = self.hasher.build_hasher();
        hasher.write(key);
        hasher.finish()
    }

    /// The hashes of `keys`, in their order, to lock and look them up by.
    pub fn hashes<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> SmallVec<[KeyHash; 1]> {
        keys.into_iter().map(|key| self.hash(key)).collect()
    }

    fn shard_of(hash: u64) -> usize {
        // Bits the tables do not use: they take the low bits for the bucket
        // and the top seven for the tag.
        ((hash >> 32) % SHARDS as u64) as usize
    }

    /// Runs `f` on the key's entry under the shard's read lock.
    pub fn read<R>(&self, key: &str, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        let hash = self.hash_bytes(key.as_bytes());
        let shard = self.shards[Self::shard_of(hash)].read();
        shard
            .find(hash, |entry| entry.key_bytes() == key.as_bytes())
            .map(f)
    }

    /// Write-locks the shards holding the keys of `hashes`, in shard order
    /// so that two writers can never deadlock on each other.
    pub fn lock<'h>(&self, hashes: impl IntoIterator<Item = &'h KeyHash>) -> Locked<'_> {
        // On the stack: a write names one key, or a few.
        let mut indexes: SmallVec<[usize; 4]> = hashes
            .into_iter()
            .map(|hash| Self::shard_of(hash.0))
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        let guards = indexes
            .into_iter()
            .map(|index| (index, self.shards[index].write()))
            .collect();
        Locked { map: self, guards }
    }

    /// Number of keys held, expired ones not yet swept included.
    pub fn count(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().len()).sum()
    }
}

impl Default for LockMap {
    fn default() -> Self {
        Self::new()
    }
}

/// Shards write-locked by [`LockMap::lock`]; only keys whose hashes were
/// given there may be used.
pub struct Locked<'a> {
    map: &'a LockMap,
    guards: SmallVec<[(usize, RwLockWriteGuard<'a, Shard>); 1]>,
}

/// A key's hash in a [`LockMap`], made by [`LockMap::hash`]: what
/// [`Locked`] finds the key by.
#[derive(Clone, Copy, Debug)]
pub struct KeyHash(u64);

impl Locked<'_> {
    /// The shard's position among the guards of the key hashed `hash`.
    fn locate(&self, key: &[u8], hash: KeyHash) -> usize {
        debug_assert_eq!(hash.0, self.map.hash_bytes(key), "another key's hash");
        let index = LockMap::shard_of(hash.0);
        match self.guards.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(position) => position,
            Err(_) => unreachable!("key {key:?} used without locking its shard"),
        }
    }

    pub fn get(&self, key: &str, hash: KeyHash) -> Option<&Entry> {
        let position = self.locate(key.as_bytes(), hash);
        self.guards[position]
            .1
            .find(hash.0, |entry| entry.key_bytes() == key.as_bytes())
    }

    /// Puts `entry` under its key, hashed `hash`; returns the entry it
    /// replaced.
    pub fn insert(&mut self, hash: KeyHash, entry: Entry) -> Option<Entry> {
        let position = self.locate(entry.key_bytes(), hash);
        let shard = &mut self.guards[position].1;
        let map = self.map;
        match shard.entry(
            hash.0,
            |other| other.key_bytes() == entry.key_bytes(),
            |other| map.hash_bytes(other.key_bytes()),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut slot) => {
                Some(std::mem::replace(slot.get_mut(), entry))
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(entry);
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str, hash: KeyHash) -> Option<Entry> {
        let position = self.locate(key.as_bytes(), hash);
        let shard = &mut self.guards[position].1;
        match shard.find_entry(hash.0, |entry| entry.key_bytes() == key.as_bytes()) {
            Ok(slot) => Some(slot.remove().0),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Meta;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    fn entry(key: &str, text: &str, revision: u64) -> Entry {
        Entry::new(key, text.as_bytes(), Meta::created(revision), None)
    }

    #[test]
    fn locked_keys_are_readable_and_writable() {
        let map = LockMap::new();
        let keys = ["a", "b", "c"];
        {
            let hashes = map.hashes(keys);
            let mut locked = map.lock(&hashes);
            for (i, (key, hash)) in keys.iter().zip(&hashes).enumerate() {
                locked.insert(*hash, entry(key, key, i as u64));
            }
            assert_eq!(locked.get("b", hashes[1]).map(Entry::mod_revision), Some(1));
            assert!(locked.remove("c", hashes[2]).is_some());
        }
        assert_eq!(map.count(), 2);
        assert_eq!(
            map.read("a", |e| e.value_str().to_owned()).as_deref(),
            Some("a")
        );
        assert!(map.read("c", |_| ()).is_none());
    }

    /// Runs `flood` on several threads until `work` has finished, and fails if
    /// `work` cannot finish: the starvation the seed's design allowed.
    fn finishes_under_flood(flood: fn(&LockMap), work: fn(&LockMap)) {
        let map = Arc::new(LockMap::new());
        let hash = map.hash("hot");
        map.lock([&hash]).insert(hash, entry("hot", "0", 0));
        let stop = Arc::new(AtomicBool::new(false));
        let flooders: Vec<_> = (0..4)
            .map(|_| {
                let (map, stop) = (map.clone(), stop.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        flood(&map);
                    }
                })
            })
            .collect();
        let (done_tx, done_rx) = mpsc::channel();
        let worker_map = map.clone();
        thread::spawn(move || {
            work(&worker_map);
            let _ = done_tx.send(());
        });
        // A watchdog, not a timing assertion: a starved worker never finishes.
        let finished = done_rx.recv_timeout(Duration::from_secs(120)).is_ok();
        stop.store(true, Ordering::Relaxed);
        for flooder in flooders {
            flooder.join().expect("flooder thread panicked");
        }
        assert!(finished, "the worker starved under the flood");
    }

    fn read_hot(map: &LockMap) {
        map.read("hot", Entry::mod_revision);
    }

    fn write_hot(map: &LockMap) {
        let hash = map.hash("hot");
        let mut locked = map.lock([&hash]);
        let revision = locked.get("hot", hash).map_or(0, Entry::mod_revision) + 1;
        locked.insert(hash, entry("hot", "w", revision));
    }

    #[test]
    fn writers_are_not_starved_by_a_flood_of_readers() {
        finishes_under_flood(read_hot, |map| {
            for _ in 0..10_000 {
                write_hot(map);
            }
        });
    }

    #[test]
    fn readers_are_not_starved_by_a_flood_of_writers() {
        finishes_under_flood(write_hot, |map| {
            for _ in 0..10_000 {
                read_hot(map);
            }
        });
    }
}
