//! `Index`: the store's keys in byte order, for listings and prefix deletes.

use std::cmp::Ordering;

use super::Entry;

/// Every live record, ordered by key bytes, beside the hash shards.
///
/// Why beside and not instead: a GET must stay one hash probe (a B-tree
/// lookup in a million keys is a dozen cache misses), so the hash shards
/// stay the map and this is an index for range reads. It holds the same
/// reference-counted records as the map (one pointer each, no copy of key
/// or value), which is why a replacing write must update it too: otherwise
/// it would keep every key's first value alive. It lives under the commit
/// lock and changes in the one commit path, so a listing that holds that
/// lock sees the map exactly at the store's revision.
///
/// Why its own B+-tree and not `std`'s `BTreeSet`: memory (crates for
/// sorted sets split in the middle too). Keys often
/// arrive in ascending order (counters, timestamps, a bulk load), and a
/// B-tree that splits a full node in the middle leaves every node it passes
/// half full: `std`'s cost 21 bytes a key so (measured), the `indexset`
/// crate's 16, which put the store past its budget of 200 bytes a key. This
/// one splits a full node where the new key lands: at the end (an ascending
/// insert) the new key alone starts the next node, so ascending inserts
/// fill every node; anywhere else it splits in half. Nodes that fall below
/// a quarter full are merged with a neighbour when the two fit in one.
#[derive(Default)]
pub struct Index {
    root: Node,
}

/// Most records in a leaf, and most children of an inner node. Nodes are
/// searched in key order (a stride scan, [`scan`]), not by bisection:
/// records written one after another sit side by side in memory, and a
/// scan in key order is what the prefetcher follows. 32 pointers fill a
/// 256-byte allocation exactly: about 10 bytes a key with full leaves (24
/// measured no faster, 64 slower).
const CAPACITY: usize = 32;

/// A scan looks at every [`STRIDE`]th key first, then within the stretch
/// that holds the key: about 7 comparisons in a full node instead of 16.
/// Its loads stay in key order and independent of each other, which is
/// what a scan wins over bisection, with less than half the comparisons.
/// Replacing one of 10k keys (BENCHMARKS.md, issue 26, third round): front
/// to back 168–192 ns, bisection 257, this 153–170; of 1M: 1,190–1,430,
/// 2,160 and 1,044–1,066 ns.
const STRIDE: usize = 8;
/// A node below this is merged with a neighbour when the two fit in one.
const LOW: usize = CAPACITY / 4;

enum Node {
    /// Records in key order.
    Leaf(Vec<Entry>),
    /// Boxed: a node is then three words, and a parent holds 24 of them.
    Inner(Box<Inner>),
}

impl Default for Node {
    fn default() -> Self {
        Self::Leaf(Vec::new())
    }
}

/// `children[i + 1]` holds keys from `bounds[i]` on, and `children[i]` keys
/// below it. A bound is a copy of a key (one per child, so a few bytes per
/// key in all), never a record: a record there would outlive its key's
/// next write.
struct Inner {
    bounds: Vec<Box<[u8]>>,
    children: Vec<Node>,
}

impl Inner {
    /// The child whose range holds `key`.
    fn child_for(&self, key: &[u8]) -> usize {
        // The first bound above `key`: none is `Equal`.
        let above = scan(&self.bounds, |bound| {
            if **bound <= *key {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        });
        match above {
            Ok(at) | Err(at) => at,
        }
    }

    /// Merges the child at `at` with a neighbour if the two fit in one.
    fn merge_around(&mut self, at: usize) {
        let (left, right) = if at + 1 < self.children.len() {
            (at, at + 1)
        } else if at > 0 {
            (at - 1, at)
        } else {
            return;
        };
        if self.children[left].len() + self.children[right].len() > CAPACITY {
            return;
        }
        let bound = self.bounds.remove(left);
        let taken = self.children.remove(right);
        match (&mut self.children[left], taken) {
            (Node::Leaf(into), Node::Leaf(from)) => into.extend(from),
            (Node::Inner(into), Node::Inner(from)) => {
                let from = *from;
                into.bounds.push(bound);
                into.bounds.extend(from.bounds);
                into.children.extend(from.children);
            }
            // Siblings are always at the same depth: nothing to merge.
            (_, taken) => {
                self.bounds.insert(left, bound);
                self.children.insert(right, taken);
            }
        }
    }
}

/// Where the item `order` finds `Equal` is in `items` (sorted), or
/// where it would go, as `binary_search_by` says it: the first item not
/// `Less`, found stride by stride ([`STRIDE`]).
fn scan<T>(items: &[T], order: impl Fn(&T) -> Ordering) -> Result<usize, usize> {
    let mut start = 0;
    while start + STRIDE < items.len() && order(&items[start + STRIDE - 1]) == Ordering::Less {
        start += STRIDE;
    }
    for (at, item) in items.iter().enumerate().skip(start) {
        match order(item) {
            Ordering::Less => {}
            Ordering::Equal => return Ok(at),
            Ordering::Greater => return Err(at),
        }
    }
    Err(items.len())
}

/// Where `key` is in a leaf, or where it would go.
fn search(entries: &[Entry], key: &[u8]) -> Result<usize, usize> {
    scan(entries, |entry| entry.key_bytes().cmp(key))
}

impl Node {
    fn len(&self) -> usize {
        match self {
            Self::Leaf(entries) => entries.len(),
            Self::Inner(inner) => inner.children.len(),
        }
    }

    /// Puts `entry` in place of any record of its key. When the node had to
    /// split, returns the new right sibling and the first key it holds.
    fn put(&mut self, entry: Entry) -> Option<(Box<[u8]>, Node)> {
        match self {
            Self::Leaf(entries) => {
                let at = match search(entries, entry.key_bytes()) {
                    Ok(at) => {
                        entries[at] = entry;
                        return None;
                    }
                    Err(at) => at,
                };
                if entries.len() < CAPACITY {
                    if entries.capacity() == 0 {
                        entries.reserve_exact(CAPACITY);
                    }
                    entries.insert(at, entry);
                    return None;
                }
                let mut right = Vec::with_capacity(CAPACITY);
                if at == entries.len() {
                    right.push(entry);
                } else {
                    right.extend(entries.drain(CAPACITY / 2..));
                    match at.checked_sub(CAPACITY / 2) {
                        Some(in_right) => right.insert(in_right, entry),
                        None => entries.insert(at, entry),
                    }
                }
                let bound = right.first().map(|first| first.key_bytes().into())?;
                Some((bound, Self::Leaf(right)))
            }
            Self::Inner(inner) => {
                let child = inner.child_for(entry.key_bytes());
                let (bound, split) = inner.children[child].put(entry)?;
                inner.bounds.insert(child, bound);
                inner.children.insert(child + 1, split);
                if inner.children.len() <= CAPACITY {
                    return None;
                }
                // The new child last (ascending keys): it alone moves right.
                let from = if child + 2 == inner.children.len() {
                    child + 1
                } else {
                    inner.children.len() / 2
                };
                let mut children = Vec::with_capacity(CAPACITY + 1);
                children.extend(inner.children.drain(from..));
                let bounds = inner.bounds.split_off(from);
                let bound = inner.bounds.pop()?;
                Some((bound, Self::Inner(Box::new(Inner { bounds, children }))))
            }
        }
    }

    fn remove(&mut self, key: &[u8]) {
        match self {
            Self::Leaf(entries) => {
                if let Ok(at) = search(entries, key) {
                    entries.remove(at);
                }
            }
            Self::Inner(inner) => {
                let child = inner.child_for(key);
                inner.children[child].remove(key);
                if inner.children[child].len() < LOW {
                    inner.merge_around(child);
                }
            }
        }
    }
}

impl Index {
    /// An index of `entries` (in key order, as the data dir returns them,
    /// they fill every node).
    pub fn from_sorted(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut index = Self::default();
        for entry in entries {
            index.put(entry);
        }
        index
    }

    /// Puts `entry` in place of any record of its key.
    pub fn put(&mut self, entry: Entry) {
        if let Some((bound, right)) = self.root.put(entry) {
            let left = std::mem::take(&mut self.root);
            let mut children = Vec::with_capacity(CAPACITY + 1);
            children.extend([left, right]);
            self.root = Node::Inner(Box::new(Inner {
                bounds: vec![bound],
                children,
            }));
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.root.remove(key.as_bytes());
        if let Node::Inner(inner) = &mut self.root
            && inner.children.len() == 1
            && let Some(only) = inner.children.pop()
        {
            self.root = only;
        }
    }

    /// The records whose keys start with `prefix`, in key order, from just
    /// after `after` (or from the first).
    pub fn under<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let (start, inclusive) = match after {
            Some(after) if after.as_bytes() >= prefix.as_bytes() => (after.as_bytes(), false),
            _ => (prefix.as_bytes(), true),
        };
        Iter::seek(&self.root, start, inclusive)
            .take_while(move |entry| entry.key_bytes().starts_with(prefix.as_bytes()))
    }
}

/// Records in key order from a starting point: the leaf being read, and
/// the path of inner nodes down to it.
struct Iter<'a> {
    path: Vec<(&'a Inner, usize)>,
    leaf: std::slice::Iter<'a, Entry>,
}

impl<'a> Iter<'a> {
    /// From the first key at or after `key` (after it, unless `inclusive`).
    fn seek(root: &'a Node, key: &[u8], inclusive: bool) -> Self {
        let mut path = Vec::new();
        let mut node = root;
        loop {
            match node {
                Node::Inner(inner) => {
                    let child = inner.child_for(key);
                    path.push((&**inner, child));
                    node = &inner.children[child];
                }
                Node::Leaf(entries) => {
                    let from = entries.partition_point(|entry| {
                        let stored = entry.key_bytes();
                        stored < key || (!inclusive && stored == key)
                    });
                    let leaf = entries[from..].iter();
                    return Self { path, leaf };
                }
            }
        }
    }

    /// Moves to the first leaf after the current one; false past the end.
    fn next_leaf(&mut self) -> bool {
        while let Some((inner, child)) = self.path.pop() {
            if child + 1 < inner.children.len() {
                self.path.push((inner, child + 1));
                let mut node = &inner.children[child + 1];
                while let Node::Inner(inner) = node {
                    self.path.push((&**inner, 0));
                    node = &inner.children[0];
                }
                if let Node::Leaf(entries) = node {
                    self.leaf = entries.iter();
                }
                return true;
            }
        }
        false
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Entry;

    fn next(&mut self) -> Option<&'a Entry> {
        loop {
            if let Some(entry) = self.leaf.next() {
                return Some(entry);
            }
            if !self.next_leaf() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::domain::Meta;

    fn entry(key: &str, revision: u64) -> Entry {
        Entry::new(key, b"v", Meta::created(revision), None)
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

    /// Leaves and their fill, for the memory claims.
    fn leaves(node: &Node, out: &mut Vec<usize>) {
        match node {
            Node::Leaf(entries) => out.push(entries.len()),
            Node::Inner(inner) => inner.children.iter().for_each(|child| leaves(child, out)),
        }
    }

    #[test]
    fn ascending_inserts_fill_every_leaf_but_the_last() {
        let index = Index::from_sorted((0..10_000).map(|n| entry(&format!("k{n:05}"), n)));
        let mut fill = Vec::new();
        leaves(&index.root, &mut fill);
        let (last, full) = fill.split_last().expect("leaves");
        assert!(full.iter().all(|&n| n == CAPACITY), "{fill:?}");
        assert_eq!(full.len() * CAPACITY + last, 10_000);
    }

    /// Checks that every key sits inside its node's bounds; returns the
    /// depth, which must be the same for every leaf.
    fn check(node: &Node, low: Option<&[u8]>, high: Option<&[u8]>) -> usize {
        match node {
            Node::Leaf(entries) => {
                for entry in entries {
                    assert!(low.is_none_or(|low| entry.key_bytes() >= low));
                    assert!(high.is_none_or(|high| entry.key_bytes() < high));
                }
                1
            }
            Node::Inner(inner) => {
                assert_eq!(inner.bounds.len() + 1, inner.children.len());
                assert!(inner.children.len() <= CAPACITY);
                let depths: Vec<usize> = (0..inner.children.len())
                    .map(|at| {
                        let low = if at == 0 {
                            low
                        } else {
                            Some(&*inner.bounds[at - 1])
                        };
                        let high = inner.bounds.get(at).map(|bound| &**bound).or(high);
                        check(&inner.children[at], low, high)
                    })
                    .collect();
                assert!(
                    depths.windows(2).all(|pair| pair[0] == pair[1]),
                    "{depths:?}"
                );
                depths[0] + 1
            }
        }
    }

    #[test]
    fn a_deep_tree_splits_and_merges_like_an_ordered_map() {
        let mut index = Index::default();
        let mut model = BTreeMap::new();
        // A fixed pseudo-random sequence: puts over 60k keys (three levels
        // of nodes), then removes of most of them (merges), then puts again.
        let mut state: u64 = 7;
        let mut next = |below: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) % below
        };
        for round in 0..3u64 {
            for revision in 0..150_000u64 {
                let key = format!("k{:05}", next(60_000));
                if round == 1 && next(10) < 9 {
                    index.remove(&key);
                    model.remove(&key);
                } else {
                    index.put(entry(&key, revision));
                    model.insert(key, revision);
                }
            }
            let depth = check(&index.root, None, None);
            if round == 0 {
                assert!(depth >= 3, "inner nodes split too: depth {depth}");
            }
            let listed: Vec<(&str, u64)> = index
                .under("", None)
                .map(|entry| (entry.key(), entry.mod_revision()))
                .collect();
            let expected: Vec<(&str, u64)> = model
                .iter()
                .map(|(key, revision)| (key.as_str(), *revision))
                .collect();
            assert_eq!(listed, expected, "round {round}");
        }
    }

    #[derive(Clone, Debug)]
    enum Change {
        Put(u16),
        Remove(u16),
    }

    fn change() -> impl Strategy<Value = Change> {
        // Few distinct keys, many changes: nodes split and merge often.
        prop_oneof![
            (0u16..3000).prop_map(Change::Put),
            (0u16..3000).prop_map(Change::Remove),
        ]
    }

    /// The stride scan answers as bisection does, for every length a node
    /// can have and every place a key can be.
    #[test]
    fn scan_finds_what_bisection_finds() {
        for len in 0..=CAPACITY + 1 {
            let items: Vec<usize> = (0..len).map(|i| 2 * i + 1).collect();
            for wanted in 0..=2 * len + 1 {
                assert_eq!(
                    scan(&items, |item| item.cmp(&wanted)),
                    items.binary_search(&wanted),
                    "{wanted} among {len}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn behaves_like_an_ordered_map(
            changes in proptest::collection::vec(change(), 1..4000),
            prefix in "(k[0-2]?[0-9]?)?",
            after in proptest::option::of("k[0-9]{0,4}"),
        ) {
            let mut index = Index::default();
            let mut model = BTreeMap::new();
            for (revision, change) in changes.iter().enumerate() {
                match change {
                    Change::Put(n) => {
                        let key = format!("k{n}");
                        index.put(entry(&key, revision as u64));
                        model.insert(key, revision as u64);
                    }
                    Change::Remove(n) => {
                        let key = format!("k{n}");
                        index.remove(&key);
                        model.remove(&key);
                    }
                }
            }
            let listed: Vec<(String, u64)> = index
                .under(&prefix, after.as_deref())
                .map(|entry| (entry.key().to_owned(), entry.mod_revision()))
                .collect();
            let expected: Vec<(String, u64)> = model
                .iter()
                .filter(|(key, _)| key.starts_with(&prefix))
                .filter(|(key, _)| after.as_ref().is_none_or(|after| key.as_str() > after.as_str()))
                .map(|(key, revision)| (key.clone(), *revision))
                .collect();
            prop_assert_eq!(listed, expected);
        }
    }
}
