//! Values as the store keeps them.

use std::str::Utf8Error;

use bytes::Bytes;

use super::Entry;

/// A value: bytes that are known to be valid UTF-8.
///
/// A value on its way in (a request body, without a copy) or out (sharing
/// the [`Entry`](super::Entry) it was read from). The UTF-8 check happens
/// once, when the value enters the store, so every reader can hand it out as
/// text without checking again.
#[derive(Clone)]
pub struct Value(Repr);

#[derive(Clone)]
enum Repr {
    Bytes(Bytes),
    /// The value of this entry: taking it costs a reference count, not an
    /// allocation, which matters for the write path (a PUT reads the key's
    /// current state to decide between 201 and 204).
    Entry(Entry),
}

impl Value {
    /// Checks `bytes` for UTF-8 and keeps them as a value. They are not
    /// copied here: the entry a write creates copies them into its own
    /// allocation, so a request's read buffer is not kept alive by the key.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self(Repr::Bytes(bytes)))
    }

    /// The value an entry holds.
    pub(super) fn of(entry: Entry) -> Self {
        Self(Repr::Entry(entry))
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        // The constructors checked the bytes and nothing mutates them.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The value's bytes as they are (UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Bytes(bytes) => bytes,
            Repr::Entry(entry) => entry.value_bytes(),
        }
    }

    /// The value's bytes, sharing the allocation they are in.
    pub fn bytes(&self) -> Bytes {
        match &self.0 {
            Repr::Bytes(bytes) => bytes.clone(),
            Repr::Entry(entry) => Bytes::from_owner(ValueOf(entry.clone())),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Value {}

/// An entry seen as its value's bytes, for `Bytes::from_owner`.
struct ValueOf(Entry);

impl AsRef<[u8]> for ValueOf {
    fn as_ref(&self) -> &[u8] {
        self.0.value_bytes()
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self(Repr::Bytes(Bytes::copy_from_slice(text.as_bytes())))
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Self(Repr::Bytes(Bytes::from(text)))
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
