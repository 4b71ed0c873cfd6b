//! Who may do what: bearer tokens scoped to key prefixes.
//!
//! Tokens are random (256 bits, `kv-store token new`), so the auth file
//! keeps their SHA-256 only: a leaked file (or backup, or snapshot) gives no
//! token away, which Consul users learnt the hard way (consul#791). A fast
//! hash is enough for a secret that cannot be guessed, and a request is
//! looked up by the digest of the token it presents, so the time a lookup
//! takes says nothing about any secret.
//!
//! `file.rs` reads the TOML file, `scope.rs` decides which keys a token
//! covers, `new_token.rs` makes tokens. The server layer identifies the
//! caller of each request ([`Auth::identify`]); the API layer checks what
//! it asks for against the caller's scopes ([`Caller`]).

mod file;
pub mod new_token;
mod scope;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

pub use file::AuthFileError;
pub use scope::Scopes;

/// A token's SHA-256.
type Digest = [u8; 32];

/// One token of the auth file.
#[derive(Debug)]
pub struct Token {
    /// Shown in logs, metrics and 403s; never the secret.
    pub name: Arc<str>,
    pub scopes: Scopes,
    /// May read `/status` and `/metrics`.
    pub admin: bool,
    /// Cancelled when a reload removes or changes the token: its open
    /// watch streams end.
    revoked: CancellationToken,
}

impl Token {
    /// Completes when a reload removes or changes this token.
    pub fn revoked(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.revoked.clone().cancelled_owned()
    }
}

/// The tokens of one reading of the auth file.
#[derive(Debug)]
pub struct Tokens {
    by_digest: HashMap<Digest, Arc<Token>>,
}

/// The auth file's tokens, reloadable while the server runs.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    tokens: RwLock<Arc<Tokens>>,
}

/// What a reload changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Reloaded {
    pub tokens: usize,
    /// Tokens removed or changed: their watch streams were ended.
    pub revoked: usize,
}

impl Auth {
    /// Reads the auth file; an error names the file and what is wrong.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let tokens = file::load(path, None)?;
        Ok(Self {
            path: path.to_owned(),
            tokens: RwLock::new(Arc::new(tokens)),
        })
    }

    /// How many tokens the file holds now.
    pub fn len(&self) -> usize {
        self.tokens.read().by_digest.len()
    }

    /// Whether the file holds no token (no request can pass).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the file again. On success the new tokens serve from the next
    /// request, and tokens removed or changed are revoked; on error the old
    /// tokens stay.
    pub fn reload(&self) -> Result<Reloaded, AuthFileError> {
        let old = self.tokens.read().clone();
        let new = Arc::new(file::load(&self.path, Some(&old))?);
        // The new tokens first: a client whose stream ends at the reload
        // and comes back finds them in place.
        *self.tokens.write() = new.clone();
        let mut revoked = 0;
        for (digest, token) in &old.by_digest {
            let kept = new.by_digest.get(digest).is_some_and(|new| {
                new.name == token.name && new.scopes == token.scopes && new.admin == token.admin
            });
            if !kept {
                token.revoked.cancel();
                revoked += 1;
            }
        }
        let tokens = new.by_digest.len();
        Ok(Reloaded { tokens, revoked })
    }

    /// The token a bearer secret belongs to, if any.
    pub fn identify(&self, secret: &str) -> Option<Arc<Token>> {
        let digest: Digest = Sha256::digest(secret.as_bytes()).into();
        self.tokens.read().by_digest.get(&digest).cloned()
    }
}

/// Who makes a request, as the API layer checks it.
#[derive(Clone, Debug)]
pub enum Caller {
    /// No auth file: everyone may do everything.
    Anyone,
    Token(Arc<Token>),
}

/// Why a caller may not do what it asked: the 403's detail.
#[derive(Debug)]
pub struct Denied(pub String);

impl Caller {
    fn check(
        &self,
        allowed: impl FnOnce(&Token) -> bool,
        what: impl FnOnce() -> String,
    ) -> Result<(), Denied> {
        match self {
            Self::Anyone => Ok(()),
            Self::Token(token) if allowed(token) => Ok(()),
            Self::Token(token) => Err(Denied(format!("token {:?} may not {}", token.name, what()))),
        }
    }

    pub fn may_read_key(&self, key: &str) -> Result<(), Denied> {
        self.check(
            |t| t.scopes.may_read_key(key),
            || format!("read key {key:?}"),
        )
    }

    pub fn may_write_key(&self, key: &str) -> Result<(), Denied> {
        self.check(
            |t| t.scopes.may_write_key(key),
            || format!("write key {key:?}"),
        )
    }

    pub fn may_read_prefix(&self, prefix: &str) -> Result<(), Denied> {
        self.check(
            |t| t.scopes.may_read_prefix(prefix),
            || format!("read every key under prefix {prefix:?}"),
        )
    }

    pub fn may_write_prefix(&self, prefix: &str) -> Result<(), Denied> {
        self.check(
            |t| t.scopes.may_write_prefix(prefix),
            || format!("write every key under prefix {prefix:?}"),
        )
    }

    pub fn may_administer(&self) -> Result<(), Denied> {
        self.check(
            |t| t.admin,
            || "read the server's status and metrics (admin)".to_owned(),
        )
    }

    /// The caller's token's name (none without an auth file): who holds
    /// the leases it grants.
    pub fn name(&self) -> Option<Arc<str>> {
        match self {
            Self::Anyone => None,
            Self::Token(token) => Some(token.name.clone()),
        }
    }

    /// Whether the caller may keep alive, read or revoke a lease granted by
    /// `owner`: the token that granted it, or an admin token.
    pub fn may_use_lease(
        &self,
        lease: impl std::fmt::Display,
        owner: Option<&str>,
    ) -> Result<(), Denied> {
        self.check(
            |t| t.admin || owner == Some(&*t.name),
            || format!("use lease {lease}: another token granted it"),
        )
    }

    /// Completes when the caller's token is revoked (never without one).
    pub async fn revoked(self) {
        match self {
            Self::Anyone => std::future::pending().await,
            Self::Token(token) => token.revoked().await,
        }
    }
}
