//! Leader election: campaign for a name with a value, resign, proclaim a
//! new value while leading, read the leader, and observe the leaders as
//! Server-Sent Events. An election is the same line as a lock
//! (`crate::coord`): the leader is the first in it, its term the key's
//! create revision, and `If-Fence: NAME=TERM` fences a write on it.

use std::io::Write;

use bytes::Bytes;
use futures_util::StreamExt;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::{Deserialize, Serialize};

use super::auth::TokenAuth;
use super::body::{BodyExample, JsonBody, JsonReply};
use super::fence::checked_token;
use super::locks::{
    AcquireErrors, AcquireRequest, ReadErrors, ReleaseErrors, ReleaseResponse, coord_problem,
};
use super::problem::ErrorDoc;
use super::problem::{
    ApiError, BAD_REQUEST, ErrorStatuses, FENCE_LOST, FORBIDDEN, INSUFFICIENT_STORAGE, Problem,
    REQUEST_TIMEOUT, TOO_LARGE, TOO_MANY_REQUESTS, UNAUTHORIZED, UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
};
use super::sse::SseFrames;
use super::{ApiTags, Context};
use crate::backend::Backend;
use crate::coord::{self, Leadership, Observed};
use crate::domain::{Entry, Value, queue_prefix};

/// A campaign: the value to lead with, and how to join the line (the
/// lease to campaign on, or a TTL for one granted for it, and how long to
/// wait), as a lock's acquisition asks.
#[derive(Object, Deserialize, Clone, Debug)]
pub struct CampaignRequest {
    /// What the leader proclaims (its address, say).
    pub value: String,
    #[oai(flatten)]
    #[serde(flatten)]
    pub join: AcquireRequest,
}

impl BodyExample for CampaignRequest {
    const AN_OBJECT: bool = true;

    fn body_example() -> Option<serde_json::Value> {
        Some(serde_json::json!({"value": "10.0.0.7:8080", "ttl": 10, "wait": 5}))
    }
}

/// A new value for the leader.
#[derive(Object, Deserialize, Clone, Debug)]
pub struct ProclaimRequest {
    /// The term the campaign answered: the value is set only while that
    /// term leads.
    #[oai(validator(minimum(value = "1"), maximum(value = "9223372036854776000")))]
    pub term: u64,
    pub value: String,
}

impl BodyExample for ProclaimRequest {
    const AN_OBJECT: bool = true;

    fn body_example() -> Option<serde_json::Value> {
        Some(serde_json::json!({"term": 7, "value": "10.0.0.8:8080"}))
    }
}

/// An election's leader.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct Leader {
    /// Its key (`NAME/<lease id in hex>`, etcd's layout).
    pub key: String,
    /// The lease it leads on; absent if the key is on none.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// Its term: the key's create revision. It grows with every new
    /// leader; `If-Fence: NAME=TERM` fences a write on it.
    pub term: u64,
    pub value: String,
}

impl From<&Entry> for Leader {
    fn from(entry: &Entry) -> Self {
        let meta = entry.meta();
        Self {
            key: entry.key().to_owned(),
            lease: meta.lease.map(|lease| lease.to_string()),
            term: meta.create_revision,
            value: entry.value_str().to_owned(),
        }
    }
}

/// A campaign won.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct Elected {
    pub name: String,
    #[oai(flatten)]
    #[serde(flatten)]
    pub leader: Leader,
    /// The store's revision when it was seen leading.
    pub revision: u64,
}

/// An election now.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct ElectionState {
    pub name: String,
    /// The leader; absent when nobody leads.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<Leader>,
    /// Campaigners waiting behind the leader.
    pub candidates: u64,
    /// The store's revision this was read at.
    pub revision: u64,
}

/// One event of an observation (`event: leader`, `id` its revision): who
/// leads from `revision` on.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct LeaderEvent {
    /// The revision at which this leadership began (or the leader
    /// proclaimed this value): resume after it with `Last-Event-ID`.
    pub revision: u64,
    /// The leader; absent when nobody leads.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<Leader>,
}

/// A proclaim's answer.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct Proclaimed {
    /// The store's revision after it.
    pub revision: u64,
}

pub struct ProclaimErrors;
impl ErrorStatuses for ProclaimErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        FENCE_LOST,
        REQUEST_TIMEOUT,
        TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
        INSUFFICIENT_STORAGE,
    ];
}

pub const HISTORY_GONE: ErrorDoc = ErrorDoc {
    status: 410,
    description: "The history no longer reaches back to the revision to resume after; observe again \
     without it.",
    example: (
        "history-gone",
        "History gone",
        "revision 5 is older than the oldest revision still replayable, 120: observe again without it",
    ),
};

pub struct ObserveErrors;
impl ErrorStatuses for ObserveErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        HISTORY_GONE,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
    ];
}

#[derive(ApiResponse)]
pub enum CampaignResponse {
    /// Elected: the caller leads until it resigns or its lease ends.
    #[oai(status = 200)]
    Elected(JsonReply<Elected>),
}

#[derive(ApiResponse)]
pub enum ElectionResponse {
    #[oai(status = 200)]
    Ok(JsonReply<ElectionState>),
}

#[derive(ApiResponse)]
pub enum ProclaimResponse {
    #[oai(status = 200)]
    Ok(JsonReply<Proclaimed>),
}

#[derive(ApiResponse)]
pub enum ObserveResponse {
    /// A Server-Sent Events stream of [`LeaderEvent`]s.
    #[oai(status = 200)]
    Events(SseFrames<LeaderEvent>),
}

/// The SSE frame of one observed item; `Dropped` cuts the stream, so the
/// client resumes instead of taking it for finished.
fn frame(item: Observed) -> std::io::Result<Bytes> {
    match item {
        Observed::Leader(Leadership { revision, leader }) => {
            let event = LeaderEvent {
                revision,
                leader: leader.as_ref().map(Leader::from),
            };
            let mut frame = Vec::with_capacity(128);
            // Writing to a Vec cannot fail; the event is strings and numbers.
            let _ = write!(frame, "id: {revision}\nevent: leader\ndata: ");
            let _ = serde_json::to_writer(&mut frame, &event);
            frame.extend_from_slice(b"\n\n");
            Ok(Bytes::from(frame))
        }
        Observed::Idle => Ok(Bytes::from_static(b":\n\n")),
        Observed::Dropped => Err(std::io::Error::other("the store dropped the observer")),
    }
}

pub struct ElectionsApi<B>(pub Context<B>);

#[OpenApi(tag = "ApiTags::Coordination")]
impl<B: Backend> ElectionsApi<B> {
    /// Campaign in an election
    ///
    /// Joins the line of election `name` with `value` and waits (up to
    /// `wait` seconds) to lead it: campaigners are served in arrival order,
    /// as a lock's waiters. The answer's `term` fences writes
    /// (`If-Fence: NAME=TERM`) and proclaims. 423 with `Retry-After` if the
    /// wait runs out. The line is the keys `NAME/<lease id in hex>`, as
    /// etcd's `concurrency` package (and `etcdctl elect`) lays them out.
    #[oai(path = "/elections/:name", method = "post", operation_id = "campaign")]
    async fn campaign(
        &self,
        /// The election's name (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        name: Path<String>,
        request: JsonBody<CampaignRequest>,
        auth: TokenAuth,
    ) -> Result<CampaignResponse, ApiError<AcquireErrors>> {
        let caller = auth.caller();
        self.0.queue_name(&name, &caller)?;
        let CampaignRequest { value, join } = request.0;
        self.0.check_value(&value)?;
        let elected = self
            .0
            .contend(&name, join, Value::from(value), &caller)
            .await?;
        Ok(CampaignResponse::Elected(JsonReply(Elected {
            name: name.0,
            leader: Leader {
                key: elected.key.to_string(),
                lease: Some(elected.lease.to_string()),
                term: elected.token,
                value: elected.value.as_str().to_owned(),
            },
            revision: elected.revision,
        })))
    }

    /// Read an election
    ///
    /// Who leads election `name` (its term and value), and how many
    /// campaigners wait behind it.
    #[oai(
        path = "/elections/:name",
        method = "get",
        operation_id = "get_election"
    )]
    async fn read(
        &self,
        /// The election's name (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        name: Path<String>,
        auth: TokenAuth,
    ) -> Result<ElectionResponse, ApiError<ReadErrors>> {
        self.0.check_queue_name(&name)?;
        auth.caller().may_read_prefix(&queue_prefix(&name))?;
        let queue = coord::read(&self.0.store, &name, None)
            .await
            .map_err(coord_problem)?;
        Ok(ElectionResponse::Ok(JsonReply(ElectionState {
            name: name.0,
            leader: queue.head().map(Leader::from),
            candidates: queue.contenders.len().saturating_sub(1) as u64,
            revision: queue.revision,
        })))
    }

    /// Proclaim a new value
    ///
    /// Sets the leader's value, if `term` still leads election `name` (412
    /// `fence-lost` otherwise). Observers see it as a new leader event.
    #[oai(
        path = "/elections/:name/proclaim",
        method = "post",
        operation_id = "proclaim"
    )]
    async fn proclaim(
        &self,
        /// The election's name (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        name: Path<String>,
        request: JsonBody<ProclaimRequest>,
        auth: TokenAuth,
    ) -> Result<ProclaimResponse, ApiError<ProclaimErrors>> {
        self.0.queue_name(&name, &auth.caller())?;
        let ProclaimRequest { term, value } = request.0;
        if term == 0 {
            return Err(Problem::invalid_request("term 0 is no term: terms start at 1").into());
        }
        let term = checked_token(term)?;
        self.0.check_value(&value)?;
        let revision = coord::proclaim(&self.0.store, &name, term, Value::from(value))
            .await
            .map_err(coord_problem)?;
        Ok(ProclaimResponse::Ok(JsonReply(Proclaimed { revision })))
    }

    /// Resign from an election
    ///
    /// Ends the leadership of `term` in election `name` (412 `fence-lost`
    /// if it no longer leads); the next campaigner in line leads from then
    /// on. The lease lives on.
    #[oai(path = "/elections/:name", method = "delete", operation_id = "resign")]
    async fn resign(
        &self,
        /// The election's name (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        name: Path<String>,
        /// The term the campaign answered.
        #[oai(validator(minimum(value = "1"), maximum(value = "9223372036854776000")))]
        term: Query<u64>,
        auth: TokenAuth,
    ) -> Result<ReleaseResponse, ApiError<ReleaseErrors>> {
        self.0.queue_name(&name, &auth.caller())?;
        coord::release(&self.0.store, &name, checked_token(term.0)?)
            .await
            .map_err(coord_problem)?;
        Ok(ReleaseResponse::Released)
    }

    /// Observe an election
    ///
    /// A Server-Sent Events stream of `leader` events: who leads now
    /// (no `leader`: nobody), then each change of leader or of its value, in
    /// revision order. Each event's `id` is its revision: to resume after a
    /// disconnect send it as `Last-Event-ID` (or `?since=`); every change
    /// since is replayed, none twice. 410 if the history no longer reaches
    /// back that far.
    #[oai(
        path = "/elections/:name/observe",
        method = "get",
        operation_id = "observe_election"
    )]
    async fn observe(
        &self,
        /// The election's name (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        name: Path<String>,
        /// Resume after this event (the `id` of the last event received).
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
        /// Resume after this revision; `Last-Event-ID` wins if both are given.
        since: Query<Option<u64>>,
        auth: TokenAuth,
    ) -> Result<ObserveResponse, ApiError<ObserveErrors>> {
        self.0.check_queue_name(&name)?;
        let caller = auth.caller();
        caller.may_read_prefix(&queue_prefix(&name))?;
        let since = match last_event_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())
        {
            Some(id) => Some(id.parse::<u64>().map_err(|_| {
                Problem::invalid_request(format!(
                    "Last-Event-ID {id:?} is not an event id of an observation (a revision)"
                ))
            })?),
            None => since.0,
        };
        let observed = coord::observe(&self.0.store, &name, since, std::sync::Arc::new(()))
            .await
            .map_err(coord_problem)?;
        // The stream ends at shutdown, and when a reload revokes the token.
        let frames = observed
            .map(frame)
            .take_until(self.0.shutdown.clone().cancelled_owned())
            .take_until(caller.revoked());
        Ok(ObserveResponse::Events(SseFrames::of_frames(frames)))
    }
}
