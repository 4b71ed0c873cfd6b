//! What a token may touch: key prefixes it may read and write.

/// A token's key prefixes. Writing implies reading; `""` is every key.
///
/// Prefixes, not patterns: a key is in scope when it starts with one of
/// them, as Consul's `key_prefix` and etcd's prefix permissions work. So
/// `config/` covers `config/db` but neither `config` nor `configs/x`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes {
    pub read: Vec<String>,
    pub write: Vec<String>,
}

/// Whether every key starting with `prefix` starts with one of `scopes`:
/// `prefix` itself starts with one.
fn covers(scopes: &[String], prefix: &str) -> bool {
    scopes
        .iter()
        .any(|scope| prefix.starts_with(scope.as_str()))
}

impl Scopes {
    pub fn may_read_key(&self, key: &str) -> bool {
        covers(&self.read, key) || covers(&self.write, key)
    }

    pub fn may_write_key(&self, key: &str) -> bool {
        covers(&self.write, key)
    }

    /// A listing or watch of a prefix reads every key under it, including
    /// keys created later: one scope must cover the whole prefix.
    pub fn may_read_prefix(&self, prefix: &str) -> bool {
        self.may_read_key(prefix)
    }

    /// A prefix delete writes every key under it.
    pub fn may_write_prefix(&self, prefix: &str) -> bool {
        self.may_write_key(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(read: &[&str], write: &[&str]) -> Scopes {
        Scopes {
            read: read.iter().map(|s| (*s).to_owned()).collect(),
            write: write.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_prefix_covers_what_starts_with_it_and_nothing_else() {
        let s = scopes(&["config/"], &["config/deploy/"]);
        assert!(s.may_read_key("config/db"));
        assert!(!s.may_read_key("config"));
        assert!(!s.may_read_key("configs/x"));
        assert!(s.may_write_key("config/deploy/x"));
        assert!(!s.may_write_key("config/db"));
        // Writing implies reading.
        assert!(scopes(&[], &["a/"]).may_read_key("a/b"));
        assert!(s.may_read_prefix("config/"));
        assert!(s.may_read_prefix("config/d"));
        assert!(!s.may_read_prefix("config"), "would cover configs/...");
        assert!(!s.may_read_prefix(""));
        assert!(s.may_write_prefix("config/deploy/"));
        assert!(!s.may_write_prefix("config/"));
    }

    #[test]
    fn the_empty_prefix_is_every_key() {
        let all = scopes(&[""], &[]);
        assert!(all.may_read_key("anything") && all.may_read_prefix(""));
        assert!(!all.may_write_key("anything"));
    }

    #[test]
    fn prefixes_are_bytes_of_utf8() {
        let s = scopes(&["é/"], &[]);
        assert!(s.may_read_key("é/x") && !s.may_read_key("e/x"));
        // A prefix cut inside a character covers nothing more than its bytes.
        assert!(scopes(&["\u{e9}"], &[]).may_read_prefix("\u{e9}a"));
    }
}
