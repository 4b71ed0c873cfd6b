//! Listing cursors: where the next page of a listing starts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::domain::ReadPoint;

/// Where a listing goes on: the point it shows, the prefix it lists and the
/// last key sent. Clients treat it as opaque text.
///
/// Stateless on purpose (as Kubernetes' continue token): the server keeps
/// nothing per listing, so an abandoned listing costs nothing and any
/// page can be fetched again. Its bytes, base64url without padding:
/// version (1), revision and wall-clock milliseconds (8 bytes each, big
/// endian), a hash of the prefix (8), the last key, and a check (8) over
/// all of it, so a changed or cut cursor is refused rather than read as
/// some other position. The check is not a secret: a client that forges a
/// cursor gets no more than the listing it could ask for.
#[derive(Debug, PartialEq, Eq)]
pub struct Cursor {
    pub at: ReadPoint,
    pub after: String,
}

const VERSION: u8 = 1;
const FIXED: usize = 1 + 8 + 8 + 8 + 8;

/// Why a cursor was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum CursorError {
    /// Not a cursor this server wrote, or changed since.
    Garbled,
    /// A cursor of a listing of another prefix.
    OtherPrefix,
}

/// 64-bit FNV-1a: a stable hash (the same in every build, unlike std's),
/// enough to notice a changed byte.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Cursor {
    pub fn encode(&self, prefix: &str) -> String {
        let mut bytes = Vec::with_capacity(FIXED + self.after.len());
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.at.revision.to_be_bytes());
        bytes.extend_from_slice(&self.at.unix_millis.to_be_bytes());
        bytes.extend_from_slice(&fnv1a(prefix.as_bytes()).to_be_bytes());
        bytes.extend_from_slice(self.after.as_bytes());
        let check = fnv1a(&bytes);
        bytes.extend_from_slice(&check.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str, prefix: &str) -> Result<Self, CursorError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| CursorError::Garbled)?;
        if bytes.len() < FIXED || bytes[0] != VERSION {
            return Err(CursorError::Garbled);
        }
        let (body, check) = bytes.split_at(bytes.len() - 8);
        let word = |at: usize| -> Result<u64, CursorError> {
            let chunk = body.get(at..at + 8).ok_or(CursorError::Garbled)?;
            Ok(u64::from_be_bytes(
                chunk.try_into().map_err(|_| CursorError::Garbled)?,
            ))
        };
        if fnv1a(body).to_be_bytes() != check {
            return Err(CursorError::Garbled);
        }
        if word(17)? != fnv1a(prefix.as_bytes()) {
            return Err(CursorError::OtherPrefix);
        }
        let after = String::from_utf8(body[25..].to_vec()).map_err(|_| CursorError::Garbled)?;
        Ok(Self {
            at: ReadPoint {
                revision: word(1)?,
                unix_millis: word(9)?,
            },
            after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor() -> Cursor {
        Cursor {
            at: ReadPoint {
                revision: 42,
                unix_millis: 1_700_000_000_000,
            },
            after: "a/é".to_owned(),
        }
    }

    #[test]
    fn round_trips_for_its_prefix_only() {
        let text = cursor().encode("a/");
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Cursor::decode(&text, "a/"), Ok(cursor()));
        assert_eq!(Cursor::decode(&text, "b/"), Err(CursorError::OtherPrefix));
    }

    #[test]
    fn any_changed_or_missing_byte_is_refused() {
        let text = cursor().encode("a/");
        let bytes = URL_SAFE_NO_PAD.decode(&text).expect("base64url");
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] ^= 0x01;
            let changed = URL_SAFE_NO_PAD.encode(&changed);
            assert_eq!(
                Cursor::decode(&changed, "a/"),
                Err(CursorError::Garbled),
                "byte {at}"
            );
        }
        assert_eq!(
            Cursor::decode(&text[..text.len() - 3], "a/"),
            Err(CursorError::Garbled)
        );
        assert_eq!(
            Cursor::decode("not a cursor!", "a/"),
            Err(CursorError::Garbled)
        );
        assert_eq!(Cursor::decode("", "a/"), Err(CursorError::Garbled));
    }
}
