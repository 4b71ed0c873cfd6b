//! Errors as RFC 9457 problem details (`application/problem+json`).

use std::borrow::Cow;
use std::marker::PhantomData;

use poem::http::{StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::types::{Example, ParseError, ParseFromJSON, ParseResult, ToJSON, Type};

use crate::domain::{LeaseId, StorageError};
use poem_openapi::{ApiResponse, Object};

use super::results::OpResult;

/// An error, as RFC 9457 problem details. Every error the server answers has
/// this shape, whether an operation, the router or a middleware made it.
#[derive(Object, Clone, Debug, PartialEq)]
#[oai(example)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:kv-store:problem:<slug>`).
    #[oai(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: ErrorStatus,
    /// What went wrong in this request.
    pub detail: String,
    /// On a failed condition (412): the key's current value, absent if the
    /// key does not exist.
    #[oai(skip_serializing_if_is_none)]
    pub value: Option<String>,
    /// On a failed condition (412): the key's current revision (its ETag).
    #[oai(skip_serializing_if_is_none)]
    pub revision: Option<u64>,
    /// On 410 Gone: the oldest revision a watch can still resume after
    /// (minus one).
    #[oai(skip_serializing_if_is_none)]
    pub oldest_revision: Option<u64>,
    /// On a failed batch (409): one result per operation, 412 (or 404) for
    /// the operations whose condition failed and 424 for the others.
    #[oai(skip_serializing_if_is_none)]
    pub results: Option<Vec<OpResult>>,
}

/// The status of a problem: a client or server error, nothing else. A
/// problem that could say 200 would be a bug that only a client sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorStatus(StatusCode);

impl ErrorStatus {
    pub const BAD_REQUEST: Self = Self(StatusCode::BAD_REQUEST);
    pub const UNAUTHORIZED: Self = Self(StatusCode::UNAUTHORIZED);
    pub const FORBIDDEN: Self = Self(StatusCode::FORBIDDEN);
    pub const NOT_FOUND: Self = Self(StatusCode::NOT_FOUND);
    pub const METHOD_NOT_ALLOWED: Self = Self(StatusCode::METHOD_NOT_ALLOWED);
    pub const REQUEST_TIMEOUT: Self = Self(StatusCode::REQUEST_TIMEOUT);
    pub const CONFLICT: Self = Self(StatusCode::CONFLICT);
    pub const GONE: Self = Self(StatusCode::GONE);
    pub const PRECONDITION_FAILED: Self = Self(StatusCode::PRECONDITION_FAILED);
    pub const LOCKED: Self = Self(StatusCode::LOCKED);
    pub const PAYLOAD_TOO_LARGE: Self = Self(StatusCode::PAYLOAD_TOO_LARGE);
    pub const URI_TOO_LONG: Self = Self(StatusCode::URI_TOO_LONG);
    pub const UNSUPPORTED_MEDIA_TYPE: Self = Self(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    pub const TOO_MANY_REQUESTS: Self = Self(StatusCode::TOO_MANY_REQUESTS);
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: Self =
        Self(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    pub const INTERNAL_SERVER_ERROR: Self = Self(StatusCode::INTERNAL_SERVER_ERROR);
    pub const SERVICE_UNAVAILABLE: Self = Self(StatusCode::SERVICE_UNAVAILABLE);
    pub const NOT_IMPLEMENTED: Self = Self(StatusCode::NOT_IMPLEMENTED);
    pub const INSUFFICIENT_STORAGE: Self = Self(StatusCode::INSUFFICIENT_STORAGE);

    /// `status` if it is a client or server error.
    pub fn new(status: StatusCode) -> Option<Self> {
        (status.is_client_error() || status.is_server_error()).then_some(Self(status))
    }

    pub fn code(self) -> StatusCode {
        self.0
    }
}

/// Documented, read and written as the integer it is (the spec says what
/// `u16` would).
impl Type for ErrorStatus {
    const IS_REQUIRED: bool = true;

    type RawValueType = Self;

    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        u16::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        u16::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ToJSON for ErrorStatus {
    fn to_json(&self) -> Option<serde_json::Value> {
        self.0.as_u16().to_json()
    }
}

impl ParseFromJSON for ErrorStatus {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        let code = u16::parse_from_json(value).map_err(ParseError::propagate)?;
        StatusCode::from_u16(code)
            .ok()
            .and_then(Self::new)
            .ok_or_else(|| ParseError::custom(format!("{code} is not an error status")))
    }
}

/// The most characters of client input a problem's detail repeats: a key,
/// a parameter or a header is shown by its first characters only, so an
/// answer never grows with what the client sent.
pub const MAX_ECHO: usize = 48;

/// The longest detail, in characters: a bound for messages from parsers
/// (serde, poem) that quote input in ways [`clip`] does not recognise.
const MAX_DETAIL: usize = 512;

/// `text` as a detail may repeat it: its first [`MAX_ECHO`] characters,
/// then `…` if there were more.
pub fn shown(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(MAX_ECHO) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
    }
}

/// `detail` with each quoted run (`"..."`, as `{:?}` and serde write
/// client input) cut to [`MAX_ECHO`] characters, and the whole to
/// [`MAX_DETAIL`].
fn clip(detail: String) -> String {
    if detail.len() <= MAX_ECHO {
        return detail;
    }
    let mut out = String::with_capacity(detail.len().min(MAX_DETAIL * 4));
    let mut written = 0;
    // Inside a quoted run: how many characters of it were kept.
    let mut quoted: Option<usize> = None;
    let mut escaped = false;
    for c in detail.chars() {
        if written == MAX_DETAIL {
            out.push('…');
            break;
        }
        let kept = match quoted {
            None => {
                if c == '"' {
                    quoted = Some(0);
                }
                Some(c)
            }
            Some(run) => {
                let closes = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                if closes {
                    quoted = None;
                    Some(c)
                } else {
                    quoted = Some(run + 1);
                    match run.cmp(&MAX_ECHO) {
                        std::cmp::Ordering::Less => Some(c),
                        std::cmp::Ordering::Equal => Some('…'),
                        std::cmp::Ordering::Greater => None,
                    }
                }
            }
        };
        if let Some(c) = kept {
            out.push(c);
            written += 1;
        }
    }
    out
}

impl Problem {
    pub fn new(status: ErrorStatus, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:kv-store:problem:{slug}"),
            title: title.to_owned(),
            status,
            detail: clip(detail.into()),
            value: None,
            revision: None,
            oldest_revision: None,
            results: None,
        }
    }

    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(
            ErrorStatus::BAD_REQUEST,
            "invalid-request",
            "Invalid request",
            detail,
        )
    }

    pub fn not_found(key: &str) -> Self {
        Self::new(
            ErrorStatus::NOT_FOUND,
            "key-not-found",
            "Key not found",
            format!("key {key:?} does not exist"),
        )
    }

    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(
            ErrorStatus::PAYLOAD_TOO_LARGE,
            "too-large",
            "Request too large",
            detail,
        )
    }

    /// A request body stopped arriving for longer than `--body-timeout`.
    pub fn request_timeout() -> Self {
        Self::new(
            ErrorStatus::REQUEST_TIMEOUT,
            "request-timeout",
            "Request timeout",
            "the request body stopped arriving for longer than --body-timeout",
        )
    }

    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(
            ErrorStatus::PRECONDITION_FAILED,
            "precondition-failed",
            "Precondition failed",
            detail,
        )
    }

    /// The backend (etcd) did not answer within `--etcd-timeout`, or has no
    /// quorum.
    pub fn unavailable(detail: &str) -> Self {
        Self::new(
            ErrorStatus::SERVICE_UNAVAILABLE,
            "unavailable",
            "Store unavailable",
            format!("{detail}; retry after Retry-After seconds"),
        )
    }

    /// No such lease: never granted, expired or revoked.
    pub fn lease_not_found(lease: LeaseId) -> Self {
        Self::lease_missing(format!(
            "lease {lease} does not exist (never granted, expired or revoked)"
        ))
    }

    /// No lease as `detail` says.
    pub fn lease_missing(detail: String) -> Self {
        Self::new(
            ErrorStatus::NOT_FOUND,
            "lease-not-found",
            "Lease not found",
            detail,
        )
    }

    /// A write the store did not apply: 503 while the server stops or etcd
    /// cannot be reached, 507 when the data dir refused it (disk full or an
    /// I/O error).
    pub fn not_stored(error: &StorageError) -> Self {
        match error {
            StorageError::ShuttingDown => Self::new(
                ErrorStatus::SERVICE_UNAVAILABLE,
                "shutting-down",
                "Shutting down",
                "the server is stopping; nothing was written, retry",
            ),
            StorageError::DiskRefused(detail) => Self::new(
                ErrorStatus::INSUFFICIENT_STORAGE,
                "insufficient-storage",
                "Insufficient storage",
                format!("{detail}; nothing was written, retry once the disk has room"),
            ),
            StorageError::DataDirLost(detail) => Self::new(
                ErrorStatus::SERVICE_UNAVAILABLE,
                "data-dir-lost",
                "Data dir lost",
                format!(
                    "{detail}; nothing was written: writes are refused until the server is \
                     restarted"
                ),
            ),
            StorageError::Unavailable(detail) => Self::unavailable(&format!(
                "{detail}; a write may or may not have been applied"
            )),
            StorageError::TooLarge(detail) => {
                Self::too_large(format!("{detail}; nothing was written"))
            }
            StorageError::LeaseNotFound(lease) => Self::lease_not_found(*lease),
            StorageError::FenceLost(fence) => Self::new(
                ErrorStatus::PRECONDITION_FAILED,
                "fence-lost",
                "Fence lost",
                format!(
                    "lock or election {:?} is not held with token {} (released, lost with its lease, or \
                     taken since); nothing was written",
                    fence.name, fence.token
                ),
            ),
        }
    }

    /// An answer of `bytes` would take the answers not yet taken by their
    /// clients past `--answer-memory`.
    pub fn answers_full(bytes: usize) -> Self {
        Self::new(
            ErrorStatus::SERVICE_UNAVAILABLE,
            "answers-full",
            "Answers full",
            format!(
                "the answer may take {bytes} bytes, and the server holds its most bytes of \
                 answers not yet taken by their clients (--answer-memory); nothing was done, \
                 retry after Retry-After seconds"
            ),
        )
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            ErrorStatus::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            detail,
        )
    }
}

impl Example for Problem {
    fn example() -> Self {
        Self::not_found("key1")
    }
}

const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Seconds a client waits before retrying a 503 or a 423 (a wait in line
/// that ran out).
const RETRY_AFTER_SECONDS: &str = "1";

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status.code();
        let mut response = Response::builder()
            .status(status)
            .content_type(PROBLEM_CONTENT_TYPE);
        if matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::LOCKED) {
            response = response.header(header::RETRY_AFTER, RETRY_AFTER_SECONDS);
        }
        response.body(self.to_json_string())
    }
}

impl Payload for Problem {
    const CONTENT_TYPE: &'static str = PROBLEM_CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        <Self as Type>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <Self as Type>::register(registry);
    }
}

/// The error statuses one operation documents.
pub trait ErrorStatuses: Send + Sync + 'static {
    const STATUSES: &'static [ErrorDoc];
}

/// One documented error status: what it means for the operation, and a
/// problem it answers (slug, title, detail), which the spec shows as the
/// status's example, so Swagger UI shows each status its own problem.
#[derive(Clone, Copy)]
pub struct ErrorDoc {
    pub status: u16,
    pub description: &'static str,
    pub example: (&'static str, &'static str, &'static str),
}

impl ErrorDoc {
    /// The example as the server would answer it.
    fn example(&self) -> serde_json::Value {
        let (slug, title, detail) = self.example;
        serde_json::json!({
            "type": format!("urn:kv-store:problem:{slug}"),
            "title": title,
            "status": self.status,
            "detail": detail,
        })
    }
}

pub const BAD_REQUEST: ErrorDoc = ErrorDoc {
    status: 400,
    description: "The request is malformed: a bad key, value, parameter or body.",
    example: (
        "invalid-request",
        "Invalid request",
        "ttl 0 is not a whole number of seconds from 1 to 3153600000",
    ),
};
pub const NOT_FOUND: ErrorDoc = ErrorDoc {
    status: 404,
    description: "The key does not exist (or has expired).",
    example: (
        "key-not-found",
        "Key not found",
        "key \"config/db\" does not exist",
    ),
};
pub const LEASE_NOT_FOUND: ErrorDoc = ErrorDoc {
    status: 404,
    description: "The lease named does not exist (never granted, expired or revoked).",
    example: (
        "lease-not-found",
        "Lease not found",
        "lease 00000000000000c1 does not exist",
    ),
};
pub const KEY_OR_LEASE_NOT_FOUND: ErrorDoc = ErrorDoc {
    status: 404,
    description: "The key does not exist (or has expired), or the lease named does not.",
    example: (
        "key-not-found",
        "Key not found",
        "key \"config/db\" does not exist",
    ),
};
pub const PRECONDITION_FAILED: ErrorDoc = ErrorDoc {
    status: 412,
    description: "A condition (If-Match, If-None-Match or the expected value) does not hold; nothing was written.",
    example: (
        "precondition-failed",
        "Precondition failed",
        "key \"config/db\" is at revision 9",
    ),
};
pub const WRITE_PRECONDITION_FAILED: ErrorDoc = ErrorDoc {
    status: 412,
    description: "A condition (If-Match, If-None-Match or the expected value) does not hold, or the lock \
     `If-Fence` names is not held with its token (`fence-lost`); nothing was written.",
    example: (
        "precondition-failed",
        "Precondition failed",
        "key \"config/db\" is at revision 9",
    ),
};
pub const FENCE_LOST: ErrorDoc = ErrorDoc {
    status: 412,
    description: "The lock `If-Fence` names is not held with its token (`fence-lost`); nothing was written.",
    example: (
        "fence-lost",
        "Fence lost",
        "lock or election \"jobs\" is not held with token 41 (released, lost with its lease, or taken since); nothing was written",
    ),
};
pub const REQUEST_TIMEOUT: ErrorDoc = ErrorDoc {
    status: 408,
    description: "The request body stopped arriving for longer than the server's body timeout.",
    example: (
        "request-timeout",
        "Request timeout",
        "the request body stopped arriving for longer than --body-timeout",
    ),
};
pub const TOO_LARGE: ErrorDoc = ErrorDoc {
    status: 413,
    description: "The request exceeds a configured limit.",
    example: (
        "too-large",
        "Request too large",
        "the value is 2000000 bytes, more than --max-value-bytes (1048576)",
    ),
};
pub const UNSUPPORTED_MEDIA_TYPE: ErrorDoc = ErrorDoc {
    status: 415,
    description: "The body must be `application/json`.",
    example: (
        "unsupported-media-type",
        "Unsupported media type",
        "Content-Type \"text/plain\" is not accepted here; send Content-Type: application/json",
    ),
};
pub const UNAVAILABLE: ErrorDoc = ErrorDoc {
    status: 503,
    description: "The store cannot answer now: the server is stopping (nothing was written), its data dir's \
     file was removed or replaced (nothing was written; writes are refused until a restart), the \
     answers its clients have not taken yet fill `--answer-memory` (nothing was done), or with \
     `--backend etcd` etcd did not answer within `--etcd-timeout` or has no quorum (a write may \
     or may not have been applied). Retry after `Retry-After` seconds, here or on another node.",
    example: (
        "shutting-down",
        "Shutting down",
        "the server is stopping; nothing was written, retry",
    ),
};
pub const INSUFFICIENT_STORAGE: ErrorDoc = ErrorDoc {
    status: 507,
    description: "The data dir refused the write (disk full or an I/O error); nothing was written.",
    example: (
        "insufficient-storage",
        "Insufficient storage",
        "the data dir refused the write (No space left on device): nothing was written",
    ),
};
pub const UNAUTHORIZED: ErrorDoc = ErrorDoc {
    status: 401,
    description: "The server has an auth file and the request has no `Authorization: Bearer` token it knows.",
    example: (
        "unauthorized",
        "Unauthorized",
        "this server needs `Authorization: Bearer <token>`",
    ),
};
pub const FORBIDDEN: ErrorDoc = ErrorDoc {
    status: 403,
    description: "The token's scopes do not cover a key or prefix the request touches (or, for status and \
     metrics, it is not an admin token); nothing was done.",
    example: (
        "forbidden",
        "Forbidden",
        "token \"deploy-bot\" may not write key \"config/db\"",
    ),
};
pub const TOO_MANY_REQUESTS: ErrorDoc = ErrorDoc {
    status: 429,
    description: "The client exceeded its rate limit; retry after `Retry-After` seconds.",
    example: (
        "rate-limited",
        "Too many requests",
        "rate limit exceeded; retry in 1 s",
    ),
};

/// An operation's error: a [`Problem`], documented in the spec under the
/// statuses `S` lists. One schema for every error status keeps generated
/// clients simple (one error type per operation). Boxed: a `Problem` is
/// large and errors are rare, and every operation's future and result
/// carries room for one.
pub struct ApiError<S>(pub Box<Problem>, PhantomData<fn() -> S>);

impl<S> From<Problem> for ApiError<S> {
    fn from(problem: Problem) -> Self {
        Self(Box::new(problem), PhantomData)
    }
}

impl<S> From<Box<Problem>> for ApiError<S> {
    fn from(problem: Box<Problem>) -> Self {
        Self(problem, PhantomData)
    }
}

impl<S: ErrorStatuses> ApiResponse for ApiError<S> {
    fn meta() -> MetaResponses {
        let responses = S::STATUSES
            .iter()
            .map(|doc| MetaResponse {
                description: doc.description,
                status: Some(doc.status),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: PROBLEM_CONTENT_TYPE,
                    // `allOf` of the one `Problem`: an example beside a
                    // `$ref` would be ignored, and generators read a
                    // lone `allOf` as the schema itself (one error type).
                    schema: MetaSchemaRef::Inline(Box::new(MetaSchema {
                        all_of: vec![<Problem as Type>::schema_ref()],
                        example: Some(doc.example()),
                        ..MetaSchema::ANY
                    })),
                }],
                headers: match doc.status {
                    423 | 429 | 503 => vec![MetaHeader {
                        name: header::RETRY_AFTER.to_string(),
                        description: Some("Seconds to wait before retrying.".to_owned()),
                        required: true,
                        deprecated: false,
                        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format(
                            "integer", "uint64",
                        ))),
                    }],
                    401 => vec![MetaHeader {
                        name: header::WWW_AUTHENTICATE.to_string(),
                        description: Some("`Bearer realm=\"kv-store\"`.".to_owned()),
                        required: true,
                        deprecated: false,
                        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
                    }],
                    _ => Vec::new(),
                },
            })
            .collect();
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        <Problem as Type>::register(registry);
    }
}

impl<S> IntoResponse for ApiError<S> {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl<S> From<ApiError<S>> for poem::Error {
    fn from(error: ApiError<S>) -> Self {
        poem::Error::from_response(error.into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_quoted_input_is_cut_and_short_input_kept() {
        let key = "k".repeat(7000);
        let detail = clip(format!("key {key:?} does not exist"));
        assert_eq!(
            detail,
            format!("key \"{}…\" does not exist", "k".repeat(MAX_ECHO))
        );
        let short = "key \"a\\\"b\" does not exist".to_owned();
        assert_eq!(clip(short.clone()), short, "an escaped quote stays inside");
        let unquoted = clip("x".repeat(7000));
        assert_eq!(unquoted.chars().count(), MAX_DETAIL + 1);
        assert!(unquoted.ends_with('…'));
        assert_eq!(shown("abc"), "abc");
        assert_eq!(
            shown(&"é".repeat(100)),
            format!("{}…", "é".repeat(MAX_ECHO))
        );
    }
}
