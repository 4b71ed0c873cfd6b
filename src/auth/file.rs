//! The auth file (`--auth-file`): TOML, one `[[token]]` table per token,
//! holding a SHA-256 of the secret, never the secret.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{Digest, Token, Tokens};
use crate::auth::scope::Scopes;

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// One `[[token]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
    #[serde(default)]
    admin: bool,
}

/// Why an auth file cannot be used.
#[derive(Debug)]
pub struct AuthFileError(pub String);

impl std::fmt::Display for AuthFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthFileError {}

/// A digest from 64 hex digits.
fn digest(hex: &str) -> Option<Digest> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}

/// Reads and checks the file at `path`. Tokens that `previous` holds with
/// the same digest, scopes and admin flag keep their revocation signal, so a
/// reload ends only the streams of tokens that were removed or changed.
pub(super) fn load(path: &Path, previous: Option<&Tokens>) -> Result<Tokens, AuthFileError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|err| AuthFileError(format!("cannot read the auth file {shown}: {err}")))?;
    let file: AuthFile = toml::from_str(&text)
        .map_err(|err| AuthFileError(format!("the auth file {shown} is not valid: {err}")))?;
    let mut by_digest = HashMap::with_capacity(file.token.len());
    let mut names = HashSet::with_capacity(file.token.len());
    for (index, entry) in file.token.into_iter().enumerate() {
        let at = format!("{shown}: token {} ({:?})", index + 1, entry.name);
        if entry.name.is_empty() {
            return Err(AuthFileError(format!("{at}: the name is empty")));
        }
        if !names.insert(entry.name.clone()) {
            return Err(AuthFileError(format!("{at}: the name is used twice")));
        }
        let digest = digest(&entry.sha256).ok_or_else(|| {
            AuthFileError(format!(
                "{at}: sha256 must be the 64 hex digits of the token's SHA-256 (kv-store token new \
                 prints it)"
            ))
        })?;
        let scopes = Scopes {
            read: entry.read,
            write: entry.write,
        };
        let revoked = previous
            .and_then(|tokens| tokens.by_digest.get(&digest))
            .filter(|old| {
                *old.name == *entry.name && old.scopes == scopes && old.admin == entry.admin
            })
            .map_or_else(CancellationToken::new, |old| old.revoked.clone());
        let token = Arc::new(Token {
            name: entry.name.into(),
            scopes,
            admin: entry.admin,
            revoked,
        });
        if by_digest.insert(digest, token).is_some() {
            return Err(AuthFileError(format!(
                "{at}: the same sha256 as an earlier token"
            )));
        }
    }
    Ok(Tokens { by_digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(text: &str) -> (tempfile::NamedTempFile, Result<Tokens, AuthFileError>) {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("written");
        let loaded = load(file.path(), None);
        (file, loaded)
    }

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn reads_tokens_with_their_scopes() {
        let text = format!(
            "[[token]]\nname = \"deploy-bot\"\nsha256 = \"{HASH}\"\nread = [\"config/\"]\nwrite = \
             [\"config/deploy/\"]\n"
        );
        let (_file, tokens) = written(&text);
        let tokens = tokens.expect("loads");
        let token = tokens.by_digest.values().next().expect("one token");
        assert_eq!(&*token.name, "deploy-bot");
        assert!(token.scopes.may_write_key("config/deploy/x"));
        assert!(!token.admin);
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        let one =
            |name: &str, hash: &str| format!("[[token]]\nname = \"{name}\"\nsha256 = \"{hash}\"\n");
        for (text, says) in [
            ("[[token]\n".to_owned(), "not valid"),
            (format!("{}secret = \"x\"\n", one("a", HASH)), "not valid"),
            (one("a", "abc"), "64 hex digits"),
            (one("a", &"g".repeat(64)), "64 hex digits"),
            (one("", HASH), "name is empty"),
            (
                format!("{}{}", one("a", HASH), one("a", &HASH.replace('9', "8"))),
                "used twice",
            ),
            (
                format!("{}{}", one("a", HASH), one("b", HASH)),
                "same sha256",
            ),
        ] {
            let (_file, loaded) = written(&text);
            let err = loaded.expect_err("refused");
            assert!(err.0.contains(says), "{text:?}: {err}");
        }
    }
}
