//! Watching keys through Server-Sent Events.

use std::borrow::Cow;

use poem_openapi::param::{Header, Path, Query};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::TokenAuth;
use super::body::{BodyExample, JsonBody};
use super::problem::ErrorDoc;
use super::problem::{
    ApiError, BAD_REQUEST, ErrorStatus, ErrorStatuses, FORBIDDEN, Problem, REQUEST_TIMEOUT,
    TOO_LARGE, TOO_MANY_REQUESTS, UNAUTHORIZED, UNSUPPORTED_MEDIA_TYPE,
};
use super::sse::SseFrames;
use super::{ApiTags, Context};
use crate::backend::Backend;
use poem::Request;

use crate::domain::{Key, Position, WatchError, Watched};
use crate::watch::{Closer, Until};

/// The connection a request came in on, as a request extension the server
/// layer adds to the requests that may open a watch stream
/// ([`super::routes::streams`]): a watch stream hands it to the store,
/// which closes the connection when it drops the watcher.
#[derive(Clone)]
pub struct ConnectionCloser(pub Closer);

/// The `data` of a watch event (JSON). The SSE `event` field names what
/// happened: `snapshot` (the key's state when the stream opened), `put`
/// (a write or a successful CAS), `delete` or `expire`. The SSE `id` is the
/// store revision the event stands at, `R`, or `R.N` for the N-th (from 0)
/// of several events one revision holds (a batch, a prefix delete): send it
/// back as `Last-Event-ID` to resume after it (`?since=R` resumes after the
/// whole revision).
#[derive(Object, JsonSchema, Serialize, Clone, Debug, PartialEq)]
#[oai(example)]
#[schemars(title = "WatchEvent")]
pub struct WatchEvent {
    /// The key the event is about.
    pub key: String,
    /// The value after the event; null after a delete or expiry, and in a
    /// snapshot of an absent key.
    #[oai(nullable)]
    #[schemars(required)]
    pub value: Option<String>,
    /// The key's revision after the event (for a delete or expiry, the
    /// revision of the removal); null in a snapshot of an absent key.
    #[oai(nullable)]
    #[schemars(required)]
    pub revision: Option<u64>,
    /// The revision that created the key; absent after a delete or
    /// expiry, and in a snapshot of an absent key.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_revision: Option<u64>,
    /// Writes to the key since it was created (1 for the first); absent
    /// when `create_revision` is.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The lease the key lives on (16 hex digits); absent when it is on
    /// none.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

/// The body of `POST /watch`: a JSON array of keys (the original form),
/// or an object naming keys and prefixes.
///
/// Its schema is written by hand: poem-openapi's `Union` derive declares
/// every union `type: object`, which an array does not match.
#[derive(Deserialize, Debug)]
#[serde(
    untagged,
    expecting = "a JSON array of keys, or an object {\"keys\": [...], \"prefixes\": [...]}"
)]
pub enum WatchBody {
    Keys(Vec<String>),
    Set(WatchSet),
}

/// Keys and prefixes to watch: every key starting with a prefix is
/// watched, including keys created later; an empty prefix is the whole
/// store.
#[derive(Object, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct WatchSet {
    /// Keys to watch.
    #[oai(default)]
    #[serde(default)]
    pub keys: Vec<String>,
    /// Prefixes to watch.
    #[oai(default)]
    #[serde(default)]
    pub prefixes: Vec<String>,
}

/// Not imported: in scope, `Type::is_empty` (always false) would shadow
/// `str::is_empty` on `&&str`.
impl poem_openapi::types::Type for WatchBody {
    const IS_REQUIRED: bool = true;

    type RawValueType = Self;

    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "WatchBody".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>(Self::name().into_owned(), |registry| {
            <WatchSet as poem_openapi::types::Type>::register(registry);
            MetaSchema {
                description: Some(
                    "The keys to watch as a JSON array, or an object naming keys and prefixes.",
                ),
                one_of: vec![
                    <Vec<String> as poem_openapi::types::Type>::schema_ref(),
                    <WatchSet as poem_openapi::types::Type>::schema_ref(),
                ],
                ..MetaSchema::ANY
            }
        });
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl BodyExample for WatchBody {
    fn body_example() -> Option<serde_json::Value> {
        Some(serde_json::json!({"keys": ["key1", "key2"], "prefixes": ["config/"]}))
    }
}

impl Example for WatchEvent {
    fn example() -> Self {
        Self {
            key: "key1".to_owned(),
            value: Some("value1".to_owned()),
            revision: Some(7),
            create_revision: Some(4),
            version: Some(2),
            lease: None,
        }
    }
}

pub const UNAVAILABLE: ErrorDoc = ErrorDoc {
    status: 503,
    description: "The server holds its most watch streams (`--max-watches`), or with `--backend etcd` etcd \
     cannot be reached; retry after `Retry-After` seconds.",
    example: (
        "too-many-watches",
        "Too many watches",
        "the server holds its most watch streams (10000); retry later",
    ),
};

pub const GONE: ErrorDoc = ErrorDoc {
    status: 410,
    description: "The history no longer reaches back to the requested revision (or the revision is from \
     another run of the server): read the keys again and watch without `Last-Event-ID`.",
    example: (
        "history-gone",
        "History gone",
        "revision 5 is older than the oldest revision still replayable, 120: read the keys again and watch without Last-Event-ID",
    ),
};

pub struct WatchKeyErrors;
impl ErrorStatuses for WatchKeyErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        GONE,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
    ];
}

pub struct WatchKeysErrors;
impl ErrorStatuses for WatchKeysErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        GONE,
        REQUEST_TIMEOUT,
        TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
    ];
}

#[derive(ApiResponse)]
pub enum WatchResponse {
    /// A Server-Sent Events stream of [`WatchEvent`]s.
    #[oai(status = 200)]
    Events(SseFrames<WatchEvent>),
}

/// The problem for a watch that could not start from `since`.
pub(super) fn watch_problem(err: WatchError, since: Option<Position>) -> Box<Problem> {
    let (detail, oldest) = match err {
        WatchError::TooMany { max } => {
            return Box::new(Problem::new(
                ErrorStatus::SERVICE_UNAVAILABLE,
                "too-many-watches",
                "Too many watches",
                format!("the server holds its most watch streams ({max}); retry later"),
            ));
        }
        WatchError::Unavailable(detail) => {
            return Box::new(Problem::unavailable(&detail));
        }
        WatchError::Compacted { oldest } => (
            format!(
                "the history starts at revision {oldest}; events after {} are gone",
                since.unwrap_or(Position::after(0))
            ),
            oldest,
        ),
        WatchError::Unknown { current, oldest } => (
            format!(
                "revision {} is newer than the store's revision {current}: it comes from \
                 another run of the server",
                since.map_or(0, |since| since.revision)
            ),
            oldest,
        ),
    };
    Box::new(Problem {
        oldest_revision: Some(oldest),
        ..Problem::new(ErrorStatus::GONE, "history-gone", "History gone", detail)
    })
}

pub struct WatchApi<B>(pub Context<B>);

impl<B: Backend> WatchApi<B> {
    async fn open(
        &self,
        req: &Request,
        auth: &TokenAuth,
        watched: Watched,
        last_event_id: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchResponse, Box<Problem>> {
        let caller = auth.caller();
        for key in &watched.keys {
            caller.may_read_key(key)?;
        }
        for prefix in &watched.prefixes {
            caller.may_read_prefix(prefix)?;
        }
        // A reconnecting EventSource repeats the URL (with its `since`) and
        // adds the newer position as Last-Event-ID: the header wins.
        // EventSource sends no Last-Event-ID before it has seen an id; treat
        // an empty one the same way.
        let since = match last_event_id.map(str::trim).filter(|id| !id.is_empty()) {
            Some(id) => Some(id.parse::<Position>().map_err(|()| {
                Problem::invalid_request(format!(
                    "Last-Event-ID {id:?} is not an event id (a revision R, or R.N within a \
                     revision)"
                ))
            })?),
            None => since.map(Position::after),
        };
        let closer = req
            .extensions()
            .get::<ConnectionCloser>()
            .map_or_else(|| -> Closer { std::sync::Arc::new(()) }, |c| c.0.clone());
        let watch = self
            .0
            .store
            .watch(watched, since, closer)
            .await
            .map_err(|err| watch_problem(err, since))?;
        // The stream ends at shutdown, and when a reload revokes the token.
        let shutdown = self.0.shutdown.clone().cancelled_owned();
        let end = async move {
            tokio::select! {
                () = shutdown => {}
                () = caller.revoked() => {}
            }
        };
        let stream = Until::new(watch, Box::pin(end));
        Ok(WatchResponse::Events(SseFrames::new(stream)))
    }
}

#[OpenApi(tag = "ApiTags::Watch")]
impl<B: Backend> WatchApi<B> {
    /// Watch a key
    ///
    /// A Server-Sent Events stream: first a `snapshot` event with the key's
    /// current value (null if absent), then every change in revision order.
    /// To resume after a disconnect, send the last event's id as
    /// `Last-Event-ID` (or `?since=` from a browser's EventSource): no
    /// snapshot is sent and every missed event is replayed. 410 if the
    /// history no longer reaches back that far. An idle stream is sent a comment
    /// every 15 s (`--watch-heartbeat`), 15 to 30 s after its last event.
    #[oai(path = "/watch_key/:key", method = "get", operation_id = "watch_key")]
    async fn watch_key(
        &self,
        req: &Request,
        /// The key (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        key: Path<String>,
        /// Resume after this event (the `id` of the last event received).
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
        /// Resume after this revision; `Last-Event-ID` wins if both are given.
        since: Query<Option<u64>>,
        auth: TokenAuth,
    ) -> Result<WatchResponse, ApiError<WatchKeyErrors>> {
        let watched = Watched {
            keys: vec![self.0.key(&key)?],
            prefixes: Vec::new(),
        };
        Ok(self
            .open(req, &auth, watched, last_event_id.as_deref(), since.0)
            .await?)
    }

    /// Watch a prefix
    ///
    /// A Server-Sent Events stream over every key starting with `prefix`
    /// (empty: the whole store), including keys created later. First a
    /// `snapshot` event per key under the prefix (in key order, streamed,
    /// without ids), then a `sync` event whose id is the revision the
    /// snapshot shows, then every change in revision order. Resume as with
    /// `watch_key`: `Last-Event-ID` (or `?since=`) replays what was missed
    /// without a second snapshot. Listing the prefix with `GET /store` and
    /// then watching from the listing's revision misses nothing and repeats
    /// nothing.
    #[oai(path = "/watch", method = "get", operation_id = "watch_prefix")]
    async fn watch_prefix(
        &self,
        req: &Request,
        /// Watch every key starting with this (empty: every key).
        prefix: Query<String>,
        /// Resume after this event (the `id` of the last event received).
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
        /// Resume after this revision; `Last-Event-ID` wins if both are given.
        since: Query<Option<u64>>,
        auth: TokenAuth,
    ) -> Result<WatchResponse, ApiError<WatchKeyErrors>> {
        self.0.check_prefix(&prefix)?;
        let watched = Watched {
            keys: Vec::new(),
            prefixes: vec![Key::from(prefix.as_str())],
        };
        Ok(self
            .open(req, &auth, watched, last_event_id.as_deref(), since.0)
            .await?)
    }

    /// Watch several keys and prefixes
    ///
    /// Like `watch_key` and `watch_prefix` together, over all the keys and
    /// prefixes in the body: a snapshot per key, then per key under each
    /// prefix, a `sync` event, then every change to any of them, in
    /// revision order. The body is a JSON array of keys, or an object
    /// `{"keys": [...], "prefixes": [...]}`.
    #[oai(path = "/watch", method = "post", operation_id = "watch_keys")]
    async fn watch_keys(
        &self,
        req: &Request,
        /// The keys (and prefixes) to watch.
        body: JsonBody<WatchBody>,
        /// Resume after this event (the `id` of the last event received).
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
        /// Resume after this revision; `Last-Event-ID` wins if both are given.
        since: Query<Option<u64>>,
        auth: TokenAuth,
    ) -> Result<WatchResponse, ApiError<WatchKeysErrors>> {
        let (keys, prefixes) = match body.0 {
            WatchBody::Keys(keys) => (keys, Vec::new()),
            WatchBody::Set(WatchSet { keys, prefixes }) => (keys, prefixes),
        };
        let max = self.0.limits.max_watch_keys;
        let named = keys.len() + prefixes.len();
        if named == 0 {
            return Err(
                Problem::invalid_request("name at least one key or prefix to watch").into(),
            );
        }
        if named > max {
            return Err(Problem::too_large(format!(
                "{named} keys and prefixes named; one stream may watch at most {max}"
            ))
            .into());
        }
        for key in &keys {
            self.0.check_key(key)?;
        }
        for prefix in &prefixes {
            self.0.check_prefix(prefix)?;
        }
        let watched = Watched {
            keys: keys.iter().map(|key| Key::from(key.as_str())).collect(),
            prefixes: prefixes
                .iter()
                .map(|prefix| Key::from(prefix.as_str()))
                .collect(),
        };
        Ok(self
            .open(req, &auth, watched, last_event_id.as_deref(), since.0)
            .await?)
    }
}
