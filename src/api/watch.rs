//! Watching keys through Server-Sent Events.

use std::time::Duration;

use std::collections::HashSet;

use futures_util::StreamExt;
use poem::http::StatusCode;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use schemars::JsonSchema;
use serde::Serialize;

use super::body::{BodyExample, JsonBody};
use super::problem::{
    ApiError, BAD_REQUEST, ErrorStatuses, Problem, REQUEST_TIMEOUT, TOO_LARGE, TOO_MANY_REQUESTS,
    UNSUPPORTED_MEDIA_TYPE,
};
use super::sse::SseFrames;
use super::{ApiTags, Context};
use poem::Request;

use crate::store::{Closer, Key, WatchError};

/// The connection a request came in on, as a request extension the server
/// layer adds to the requests [`may_stream`] names: a watch stream hands it
/// to the store, which closes the connection when it drops the watcher.
#[derive(Clone)]
pub struct ConnectionCloser(pub Closer);

/// Whether a request to `path` may open a watch stream (so needs a
/// [`ConnectionCloser`]). Only those get one: an extension costs a map
/// allocation per request.
pub fn may_stream(path: &str) -> bool {
    path.starts_with("/watch")
}

/// How often an idle stream sends a comment, so that a dead client is
/// noticed and proxies keep the connection open.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// The `data` of a watch event (JSON). The SSE `event` field names what
/// happened: `snapshot` (the key's state when the stream opened), `put`
/// (a write or a successful CAS), `delete` or `expire`. The SSE `id` is the
/// store revision the event stands at: send it back as `Last-Event-ID` (or
/// `?since=`) to resume after it.
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
}

/// The body of `POST /watch`: the keys to watch.
impl BodyExample for Vec<String> {
    fn body_example() -> Option<serde_json::Value> {
        Some(serde_json::json!(["key1", "key2", "key3"]))
    }
}

impl Example for WatchEvent {
    fn example() -> Self {
        Self {
            key: "key1".to_owned(),
            value: Some("value1".to_owned()),
            revision: Some(7),
        }
    }
}

pub const UNAVAILABLE: (u16, &str) = (
    503,
    "The server holds its most watch streams (`--max-watches`); retry later.",
);

pub const GONE: (u16, &str) = (
    410,
    "The history no longer reaches back to the requested revision (or the revision is from \
     another run of the server): read the keys again and watch without `Last-Event-ID`.",
);

pub struct WatchKeyErrors;
impl ErrorStatuses for WatchKeyErrors {
    const STATUSES: &'static [(u16, &'static str)] =
        &[BAD_REQUEST, GONE, TOO_MANY_REQUESTS, UNAVAILABLE];
}

pub struct WatchKeysErrors;
impl ErrorStatuses for WatchKeysErrors {
    const STATUSES: &'static [(u16, &'static str)] = &[
        BAD_REQUEST,
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

pub struct WatchApi(pub Context);

impl WatchApi {
    fn open(
        &self,
        req: &Request,
        keys: Vec<Key>,
        last_event_id: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchResponse, Box<Problem>> {
        // A reconnecting EventSource repeats the URL (with its `since`) and
        // adds the newer position as Last-Event-ID: the header wins.
        // EventSource sends no Last-Event-ID before it has seen an id; treat
        // an empty one the same way.
        let since = match last_event_id.map(str::trim).filter(|id| !id.is_empty()) {
            Some(id) => Some(id.parse::<u64>().map_err(|_| {
                Problem::invalid_request(format!(
                    "Last-Event-ID {id:?} is not a revision (a non-negative integer)"
                ))
            })?),
            None => since,
        };
        let closer = req
            .extensions()
            .get::<ConnectionCloser>()
            .map_or_else(|| -> Closer { std::sync::Arc::new(()) }, |c| c.0.clone());
        let watch = self.0.store.watch(keys, since, closer).map_err(|err| {
            let (detail, oldest) = match err {
                WatchError::TooMany { max } => {
                    return Box::new(Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too-many-watches",
                        "Too many watches",
                        format!("the server holds its most watch streams ({max}); retry later"),
                    ));
                }
                WatchError::Compacted { oldest } => (
                    format!(
                        "the history starts at revision {oldest}; events after {} are gone",
                        since.unwrap_or_default()
                    ),
                    oldest,
                ),
                WatchError::Unknown { current, oldest } => (
                    format!(
                        "revision {} is newer than the store's revision {current}: it comes from \
                         another run of the server",
                        since.unwrap_or_default()
                    ),
                    oldest,
                ),
            };
            Box::new(Problem {
                oldest_revision: Some(oldest),
                ..Problem::new(StatusCode::GONE, "history-gone", "History gone", detail)
            })
        })?;
        let stream = watch.take_until(self.0.shutdown.clone().cancelled_owned());
        Ok(WatchResponse::Events(SseFrames::new(stream, HEARTBEAT)))
    }
}

#[OpenApi(tag = "ApiTags::Watch")]
impl WatchApi {
    /// Watch a key
    ///
    /// A Server-Sent Events stream: first a `snapshot` event with the key's
    /// current value (null if absent), then every change in revision order.
    /// To resume after a disconnect, send the last event's id as
    /// `Last-Event-ID` (or `?since=` from a browser's EventSource): no
    /// snapshot is sent and every missed event is replayed. 410 if the
    /// history no longer reaches back that far. A comment is sent after 15 s
    /// without an event.
    #[oai(path = "/watch_key/:key", method = "get", operation_id = "watch_key")]
    async fn watch_key(
        &self,
        req: &Request,
        /// The key (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        key: Path<String>,
        /// Resume after this revision (the `id` of the last event received).
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
        /// Resume after this revision; `Last-Event-ID` wins if both are given.
        since: Query<Option<u64>>,
    ) -> Result<WatchResponse, ApiError<WatchKeyErrors>> {
        let key = self.0.key(&key)?;
        Ok(self.open(req, vec![key], last_event_id.as_deref(), since.0)?)
    }

    /// Watch several keys
    ///
    /// Like `watch_key`, over all the keys in the body: a snapshot per key,
    /// then every change to any of them, in revision order.
    #[oai(path = "/watch", method = "post", operation_id = "watch_keys")]
    async fn watch_keys(
        &self,
        req: &Request,
        /// The keys to watch.
        keys: JsonBody<Vec<String>>,
        /// Resume after this revision (the `id` of the last event received).
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
        /// Resume after this revision; `Last-Event-ID` wins if both are given.
        since: Query<Option<u64>>,
    ) -> Result<WatchResponse, ApiError<WatchKeysErrors>> {
        let max = self.0.limits.max_watch_keys;
        if keys.is_empty() {
            return Err(Problem::invalid_request("name at least one key to watch").into());
        }
        if keys.len() > max {
            return Err(Problem::too_large(format!(
                "{} keys named; one stream may watch at most {max}",
                keys.len()
            ))
            .into());
        }
        let mut seen = HashSet::with_capacity(keys.len());
        let mut checked: Vec<Key> = Vec::with_capacity(keys.len());
        for key in keys.iter() {
            self.0.check_key(key)?;
            if seen.insert(key.as_str()) {
                checked.push(Key::from(key.as_str()));
            }
        }
        Ok(self.open(req, checked, last_event_id.as_deref(), since.0)?)
    }
}
