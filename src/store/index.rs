//! `Index`: the store's keys in byte order, for listings and prefix deletes.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Bound;

use super::Entry;

/// Every live record, ordered by key bytes, beside the hash shards.
///
/// Why beside and not instead: a GET must stay one hash probe (a B-tree
/// lookup in a million keys is a dozen cache misses), so the hash shards
/// stay the map and this is an index for range reads. It holds the same
/// reference-counted records as the map (one pointer each, no copy of key
/// or value), which is why a replacing write must update it too: otherwise
/// it would keep every key's first value alive.
///
/// It lives under the commit lock and changes in the one commit path, so a
/// listing that holds that lock sees the map exactly at the store's
/// revision. `std`'s B-tree is the densest ordered set of pointers at hand:
/// about 17 bytes a key filled in random order, 21 in ascending order
/// (measured: `bench/run.py --only memory`, BENCHMARKS.md).
#[derive(Default)]
pub struct Index {
    entries: BTreeSet<Indexed>,
}

/// A record ordered by its key alone.
struct Indexed(Entry);

impl PartialEq for Indexed {
    fn eq(&self, other: &Self) -> bool {
        self.0.key_bytes() == other.0.key_bytes()
    }
}

impl Eq for Indexed {}

impl PartialOrd for Indexed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Indexed {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.key_bytes().cmp(other.0.key_bytes())
    }
}

/// Lets the set be searched by key bytes, ordered as the records are.
impl Borrow<[u8]> for Indexed {
    fn borrow(&self) -> &[u8] {
        self.0.key_bytes()
    }
}

impl Index {
    /// An index of records already in key order (as the data dir returns
    /// them): built bottom-up, with full nodes.
    pub fn from_sorted(entries: impl IntoIterator<Item = Entry>) -> Self {
        Self {
            entries: entries.into_iter().map(Indexed).collect(),
        }
    }

    /// Puts `entry` in place of any record of its key.
    pub fn put(&mut self, entry: Entry) {
        self.entries.replace(Indexed(entry));
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key.as_bytes());
    }

    /// The records whose keys start with `prefix`, in key order, from just
    /// after `after` (or from the first).
    pub fn under<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let start = match after {
            Some(after) if after.as_bytes() >= prefix.as_bytes() => {
                Bound::Excluded(after.as_bytes())
            }
            _ => Bound::Included(prefix.as_bytes()),
        };
        self.entries
            .range::<[u8], _>((start, Bound::Unbounded))
            .map(|indexed| &indexed.0)
            .take_while(move |entry| entry.key_bytes().starts_with(prefix.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, revision: u64) -> Entry {
        Entry::new(key, b"v", revision, None)
    }

    fn keys<'a>(entries: impl Iterator<Item = &'a Entry>) -> Vec<&'a str> {
        entries.map(Entry::key).collect()
    }

    #[test]
    fn lists_a_prefix_in_byte_order_from_a_position() {
        let mut index = Index::default();
        for key in ["b", "a/2", "a/1", "a", "a0", "é", "e"] {
            index.put(entry(key, 1));
        }
        assert_eq!(keys(index.under("a", None)), ["a", "a/1", "a/2", "a0"]);
        assert_eq!(keys(index.under("a/", Some("a/1"))), ["a/2"]);
        assert_eq!(keys(index.under("", Some("a0"))), ["b", "e", "é"]);
        assert_eq!(keys(index.under("a/", Some("0"))), ["a/1", "a/2"]);
        assert_eq!(keys(index.under("z", None)), Vec::<&str>::new());
    }

    #[test]
    fn a_put_replaces_the_record_of_its_key() {
        let mut index = Index::default();
        index.put(entry("k", 1));
        index.put(entry("k", 2));
        let listed: Vec<u64> = index.under("", None).map(Entry::mod_revision).collect();
        assert_eq!(listed, [2]);
        index.remove("k");
        assert_eq!(index.under("", None).count(), 0);
    }
}
