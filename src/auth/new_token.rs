//! `kv-store token new`: a fresh random token and the `[[token]]` block that
//! admits it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Marks kv-store tokens, so secret scanners and people can tell them.
const PREFIX: &str = "kvs_";

/// A new token: `kvs_` and 256 random bits, base64url.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret)))
}

/// The SHA-256 of `token`, in hex, as the auth file keeps it.
pub fn digest_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The `[[token]]` block for `token`. Strings are written as JSON strings,
/// which are valid TOML basic strings (the same escapes; JSON's `\/` is
/// never produced).
pub fn block(token: &str, name: &str, read: &[String], write: &[String], admin: bool) -> String {
    let quoted = |text: &str| serde_json::to_string(text).unwrap_or_default();
    let list = |items: &[String]| {
        let items: Vec<String> = items.iter().map(|item| quoted(item)).collect();
        format!("[{}]", items.join(", "))
    };
    format!(
        "[[token]]\nname = {}\nsha256 = {}\nread = {}\nwrite = {}\nadmin = {admin}\n",
        quoted(name),
        quoted(&digest_hex(token)),
        list(read),
        list(write),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_256_random_bits_and_its_block_admits_it() {
        let token = generate().expect("random bytes");
        assert!(token.starts_with(PREFIX));
        assert_eq!(token.len(), PREFIX.len() + 43, "32 bytes in base64url");
        assert_ne!(token, generate().expect("random bytes"));
        assert_eq!(
            digest_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        let text = block(&token, "ci \"bot\"", &["a/".into()], &[], true);
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), &text).expect("written");
        let auth = super::super::Auth::load(file.path()).expect("the block loads");
        let found = auth.identify(&token).expect("the token is admitted");
        assert_eq!(&*found.name, "ci \"bot\"");
        assert!(found.admin && found.scopes.may_read_key("a/x"));
        assert!(auth.identify("kvs_other").is_none());
    }
}
