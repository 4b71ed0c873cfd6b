//! What one watch stream watches.

use std::collections::HashSet;

use super::Key;

/// What one watcher watches: keys, and prefixes (every key starting with
/// one, including keys created later).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watched {
    pub keys: Vec<Key>,
    pub prefixes: Vec<Key>,
}

impl Watched {
    /// The same set without repeats: a prefix inside another prefix and a
    /// key under a watched prefix are dropped, so that no event (and no
    /// snapshot) reaches the watcher twice.
    pub fn normalised(mut self) -> Self {
        self.prefixes.sort_unstable();
        self.prefixes.dedup();
        let mut prefixes: Vec<Key> = Vec::with_capacity(self.prefixes.len());
        for prefix in self.prefixes {
            // Sorted: a prefix comes right after the shortest one covering it.
            if !prefixes
                .last()
                .is_some_and(|kept| prefix.starts_with(&**kept))
            {
                prefixes.push(prefix);
            }
        }
        let covered = |key: &str| prefixes.iter().any(|prefix| key.starts_with(&**prefix));
        let mut seen = HashSet::with_capacity(self.keys.len());
        let keys = self
            .keys
            .into_iter()
            .filter(|key| !covered(key) && seen.insert(key.clone()))
            .collect();
        Self { keys, prefixes }
    }
}
