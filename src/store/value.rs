//! Values as the store keeps them.

use std::str::Utf8Error;

use bytes::Bytes;

/// A value: bytes that are known to be valid UTF-8.
///
/// Values travel as `Bytes` so that a GET, a watch event and the history can
/// share one allocation instead of copying the value for each reader. The
/// UTF-8 check happens once, when the value enters the store, so every reader
/// can hand it out as text without checking again.
#[derive(Clone, PartialEq, Eq)]
pub struct Value(Bytes);

impl Value {
    /// Checks `bytes` for UTF-8 and keeps them as a value.
    ///
    /// The bytes are copied into an allocation of their own: a request body
    /// often points into a larger read buffer, which must not stay alive for
    /// as long as the key does.
    pub fn from_utf8(bytes: &[u8]) -> Result<Self, Utf8Error> {
        std::str::from_utf8(bytes)?;
        Ok(Self(Bytes::copy_from_slice(bytes)))
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        // The constructor checked the bytes and nothing mutates them.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The value's bytes, sharing the allocation.
    pub fn bytes(&self) -> Bytes {
        self.0.clone()
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Self(Bytes::from(text))
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_invalid_utf8() {
        assert!(Value::from_utf8(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn keeps_text() {
        let value = Value::from_utf8("grüße".as_bytes()).expect("valid UTF-8");
        assert_eq!(value.as_str(), "grüße");
    }
}
