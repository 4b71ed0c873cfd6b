//! The single-key operations' successful answers in their fixed shapes: a
//! status, a few header fields and a value.
//!
//! Why: one description serves both ways such an answer is sent. As a poem
//! response (the operations, and the hot lane on hyper), its fields share
//! one allocation; the server's lean path writes the same fields, in the
//! same order, straight into the bytes it sends, with no header map at all
//! (building one and reading it back cost a GET ~1 900 of its ~16 700
//! instructions; BENCHMARKS.md, issue 26).

use bytes::BytesMut;
use poem::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use poem::{Body, IntoResponse, Response};
use poem_openapi::payload::Payload;

use super::text::TextValue;
use crate::domain::{Meta, Value};

static KV_CREATE_REVISION: HeaderName = HeaderName::from_static("kv-create-revision");
static KV_VERSION: HeaderName = HeaderName::from_static("kv-version");
static KV_LEASE: HeaderName = HeaderName::from_static("kv-lease");
static CONTENT_TYPE: HeaderName = header::CONTENT_TYPE;
static ETAG: HeaderName = header::ETAG;

/// The most header fields a [`Plain`] answer has.
const MAX_FIELDS: usize = 5;

/// Room for every value but the content type (an ETag, two numbers and a
/// lease id at most).
const VALUES_ROOM: usize = 80;

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static(TextValue::CONTENT_TYPE);

/// A successful answer of GET, PUT or DELETE of one key.
pub enum Plain {
    /// 200: the key's value (text) and its metadata.
    Value { value: Value, meta: Meta },
    /// 304: the key still has the ETag the client holds.
    NotModified { revision: u64 },
    /// 201 (`created`) or 204: a write, with its new ETag.
    Written { created: bool, revision: u64 },
    /// 204: the key was deleted.
    Deleted,
}

impl Plain {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Value { .. } => StatusCode::OK,
            Self::NotModified { .. } => StatusCode::NOT_MODIFIED,
            Self::Written { created: true, .. } => StatusCode::CREATED,
            Self::Written { created: false, .. } | Self::Deleted => StatusCode::NO_CONTENT,
        }
    }

    /// Calls `field` with each header field, in the order they are sent.
    pub fn fields(&self, mut field: impl FnMut(&'static HeaderName, &[u8])) {
        let mut digits = itoa::Buffer::new();
        match self {
            Self::Value { meta, .. } => {
                field(&CONTENT_TYPE, TextValue::CONTENT_TYPE.as_bytes());
                field(&ETAG, Quoted::new(meta.mod_revision).as_bytes());
                field(
                    &KV_CREATE_REVISION,
                    digits.format(meta.create_revision).as_bytes(),
                );
                field(&KV_VERSION, digits.format(meta.version).as_bytes());
                if let Some(lease) = meta.lease {
                    field(&KV_LEASE, lease.to_string().as_bytes());
                }
            }
            Self::NotModified { revision } | Self::Written { revision, .. } => {
                field(&ETAG, Quoted::new(*revision).as_bytes());
            }
            Self::Deleted => {}
        }
    }

    /// The body: the value, or nothing.
    pub fn body(&self) -> &[u8] {
        match self {
            Self::Value { value, .. } => value.as_bytes(),
            _ => &[],
        }
    }

    /// The body's length.
    pub fn body_len(&self) -> usize {
        self.body().len()
    }
}

impl IntoResponse for Plain {
    fn into_response(self) -> Response {
        // The values written into one buffer whose slices they share: one
        // allocation where each value would take its own. The content type
        // is a constant: not copied.
        let mut values = BytesMut::new();
        let mut ends = [(&ETAG, 0); MAX_FIELDS];
        let mut count = 0;
        self.fields(|name, value| {
            if name == CONTENT_TYPE {
                return;
            }
            if values.capacity() == 0 {
                values.reserve(VALUES_ROOM);
            }
            values.extend_from_slice(value);
            if let Some(end) = ends.get_mut(count) {
                *end = (name, values.len());
                count += 1;
            }
        });
        let values = values.freeze();
        let mut headers = HeaderMap::with_capacity(count + 1);
        let status = self.status();
        let body = match self {
            Self::Value { value, .. } => {
                headers.insert(CONTENT_TYPE.clone(), TEXT_PLAIN);
                // Shared with the store, not copied.
                Body::from(value.bytes())
            }
            _ => Body::empty(),
        };
        let mut start = 0;
        for &(name, end) in &ends[..count] {
            // Digits, quotes and hex digits: always a valid value.
            if let Ok(value) = HeaderValue::from_maybe_shared(values.slice(start..end)) {
                headers.insert(name.clone(), value);
            }
            start = end;
        }
        let mut response = Response::builder().status(status).body(body);
        *response.headers_mut() = headers;
        response
    }
}

/// A revision as an ETag: in double quotes.
struct Quoted {
    bytes: [u8; 22],
    len: usize,
}

impl Quoted {
    fn new(revision: u64) -> Self {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(revision).as_bytes();
        let mut bytes = [b'"'; 22];
        bytes[1..=digits.len()].copy_from_slice(digits);
        Self {
            bytes,
            len: digits.len() + 2,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etag_is_the_revision_in_quotes() {
        assert_eq!(Quoted::new(0).as_bytes(), b"\"0\"");
        assert_eq!(
            Quoted::new(u64::MAX).as_bytes(),
            b"\"18446744073709551615\""
        );
    }
}
