//! Values as the store keeps them.

use std::str::Utf8Error;

use bytes::Bytes;

/// A value: bytes that are known to be valid UTF-8.
///
/// A value on its way in (a request body, without a copy) or out (sharing
/// the [`Entry`](super::Entry) it was read from). The UTF-8 check happens
/// once, when the value enters the store, so every reader can hand it out as
/// text without checking again.
#[derive(Clone, PartialEq, Eq)]
pub struct Value(Bytes);

impl Value {
    /// Checks `bytes` for UTF-8 and keeps them as a value. They are not
    /// copied here: the entry a write creates copies them into its own
    /// allocation, so a request's read buffer is not kept alive by the key.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self(bytes))
    }

    /// Bytes that are UTF-8 already (they come out of an entry).
    pub(super) fn shared(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        // The constructor checked the bytes and nothing mutates them.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The value's bytes as they are (UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
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
        assert!(Value::from_utf8(Bytes::from_static(&[0xff, 0xfe])).is_err());
    }

    #[test]
    fn keeps_text() {
        let value = Value::from_utf8(Bytes::from("grüße")).expect("valid UTF-8");
        assert_eq!(value.as_str(), "grüße");
    }
}
