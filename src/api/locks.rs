//! Locks: a named lock on a lease, its holder's fencing token, and the
//! waiters in line behind it (`crate::coord`). A write with
//! `If-Fence: NAME=TOKEN` applies only while the lock is held with that
//! token, judged in the write's own commit.

use std::time::Duration;

use poem_openapi::param::{Path, Query};
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::{Deserialize, Serialize};

use super::auth::TokenAuth;
use super::body::{BodyExample, JsonBody, JsonReply};
use super::fence::checked_token;
use super::problem::ErrorDoc;
use super::problem::{
    ApiError, BAD_REQUEST, ErrorStatus, ErrorStatuses, FENCE_LOST, FORBIDDEN, INSUFFICIENT_STORAGE,
    Problem, REQUEST_TIMEOUT, TOO_LARGE, TOO_MANY_REQUESTS, UNAUTHORIZED, UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
};
use super::{ApiTags, Context, MAX_TTL_SECONDS, bad_ttl};
use crate::auth::Caller;
use crate::backend::Backend;
use crate::coord::{self, Acquired, CoordError, Joining, LeaseChoice};
use crate::domain::{RangeError, StorageError, Value, queue_prefix};

/// What a contender's key adds to the name: `/` and up to 16 hex digits.
const QUEUE_KEY_SUFFIX: usize = 17;

/// How a contender asks to join: on a lease it holds, or on one granted
/// for it; and how long it waits.
#[derive(Object, Deserialize, Clone, Debug, Default)]
pub struct AcquireRequest {
    /// The lease to hold the lock (or lead) on, 16 hex digits: losing it
    /// (revoked, or not kept alive) releases the lock (ends the leadership).
    #[oai(
        validator(pattern = "^[0-9a-fA-F]{1,16}$"),
        nullable,
        skip_serializing_if_is_none
    )]
    pub lease: Option<String>,
    /// Instead of `lease`: grant a lease of this many seconds for it (its
    /// id is in the answer; keep it alive to hold on).
    #[oai(
        validator(minimum(value = "1"), maximum(value = "3153600000")),
        nullable,
        skip_serializing_if_is_none
    )]
    pub ttl: Option<u64>,
    /// Seconds to wait in line (0: do not wait); the server's most,
    /// `--max-lock-wait`, when absent or larger.
    #[oai(
        validator(minimum(value = "0"), maximum(value = "3153600000")),
        nullable,
        skip_serializing_if_is_none
    )]
    pub wait: Option<u64>,
}

impl BodyExample for AcquireRequest {
    const AN_OBJECT: bool = true;

    fn body_example() -> Option<serde_json::Value> {
        Some(serde_json::json!({"ttl": 10, "wait": 5}))
    }
}

/// A lock, acquired.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct LockHeld {
    pub name: String,
    /// The holder's key (`NAME/<lease id in hex>`, etcd's layout).
    pub key: String,
    /// The lease it is held on: keep it alive to hold on.
    pub lease: String,
    /// The fencing token: send `If-Fence: NAME=TOKEN` with a write to
    /// make it apply only while this holder holds the lock. It grows with
    /// every acquisition of the name (the key's create revision).
    pub token: u64,
    /// The store's revision when the lock was seen held.
    pub revision: u64,
}

/// Who holds a lock now.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct LockState {
    pub name: String,
    /// The holder, if any.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    /// Contenders waiting behind the holder.
    pub waiters: u64,
    /// The store's revision this was read at.
    pub revision: u64,
}

/// A lock's holder.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct Holder {
    pub key: String,
    /// Absent if the key is on no lease (put by hand).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    pub token: u64,
}

pub const LOCK_TIMED_OUT: ErrorDoc = ErrorDoc {
    status: 423,
    description: "The wait ran out before the lock (or the election) was free; the request left the line. \
     Retry after `Retry-After` seconds.",
    example: (
        "wait-timed-out",
        "Wait timed out",
        "the wait ran out before it was this request's turn; it left the line",
    ),
};
pub const LEASE_GONE: ErrorDoc = ErrorDoc {
    status: 404,
    description: "The lease named does not exist (never granted, expired or revoked), or it ended while the \
     request waited.",
    example: (
        "lease-not-found",
        "Lease not found",
        "lease 00000000000000c1 does not exist",
    ),
};
pub const CONTENDER_LOST: ErrorDoc = ErrorDoc {
    status: 409,
    description: "The request's key in line was deleted while it waited (by hand, or its lease ended).",
    example: (
        "contender-lost",
        "Contender lost",
        "key \"jobs/694d7c2a5b1e3f01\" was deleted while it waited in line (by hand, or its lease ended)",
    ),
};

pub struct AcquireErrors;
impl ErrorStatuses for AcquireErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        LEASE_GONE,
        CONTENDER_LOST,
        REQUEST_TIMEOUT,
        TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        LOCK_TIMED_OUT,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
        INSUFFICIENT_STORAGE,
    ];
}

pub struct ReadErrors;
impl ErrorStatuses for ReadErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
    ];
}

pub struct ReleaseErrors;
impl ErrorStatuses for ReleaseErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        FENCE_LOST,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
        INSUFFICIENT_STORAGE,
    ];
}

#[derive(ApiResponse)]
pub enum AcquireResponse {
    /// Held: the caller holds the lock until it releases it or its lease
    /// ends.
    #[oai(status = 200)]
    Held(JsonReply<LockHeld>),
}

#[derive(ApiResponse)]
pub enum LockResponse {
    #[oai(status = 200)]
    Ok(JsonReply<LockState>),
}

#[derive(ApiResponse)]
pub enum ReleaseResponse {
    /// Released: the next in line holds it now (if any).
    #[oai(status = 204)]
    Released,
}

/// The problem for a coordination error.
pub(super) fn coord_problem(err: CoordError) -> Box<Problem> {
    Box::new(match err {
        CoordError::TimedOut => Problem::new(
            ErrorStatus::LOCKED,
            "wait-timed-out",
            "Wait timed out",
            "the wait ran out before it was this request's turn; it left the line",
        ),
        CoordError::LeaseNotFound(lease) => Problem::lease_not_found(lease),
        CoordError::Lost { key } => Problem::new(
            ErrorStatus::CONFLICT,
            "contender-lost",
            "Contender lost",
            format!(
                "key {key:?} was deleted while it waited in line (by hand, or its lease ended)"
            ),
        ),
        CoordError::Storage(err) => Problem::not_stored(&err),
        CoordError::Lease(err) => *super::leases::lease_problem(err),
        CoordError::Range(RangeError::Unavailable(detail)) => Problem::unavailable(&detail),
        CoordError::Range(
            RangeError::Compacted { oldest } | RangeError::Unknown { oldest, .. },
        ) => Problem {
            oldest_revision: Some(oldest),
            ..Problem::new(
                ErrorStatus::GONE,
                "history-gone",
                "History gone",
                format!(
                    "the history starts at revision {oldest}: that revision is gone (or comes \
                     from another run of the server)"
                ),
            )
        },
        CoordError::Watch(err) => *super::watch::watch_problem(err, None),
    })
}

impl<B: Backend> Context<B> {
    /// Checks a lock's (or election's) name: its contenders' keys (the
    /// name, `/` and up to 16 hex digits) must fit `--max-key-bytes`.
    pub(super) fn check_queue_name(&self, name: &str) -> Result<(), Box<Problem>> {
        self.check_key(name)?;
        let max = self.limits.max_key_bytes.saturating_sub(QUEUE_KEY_SUFFIX);
        if name.len() > max {
            return Err(Problem::invalid_request(format!(
                "the name is {} bytes; its contenders' keys add {QUEUE_KEY_SUFFIX} (`/` and a \
                 lease id), so the longest name is {max}",
                name.len()
            ))
            .into());
        }
        Ok(())
    }

    /// Checks a lock's (or election's) name, and that the caller may write
    /// its queue.
    pub(super) fn queue_name(&self, name: &str, caller: &Caller) -> Result<(), Box<Problem>> {
        self.check_queue_name(name)?;
        caller.may_write_prefix(&queue_prefix(name))?;
        Ok(())
    }

    /// Joins queue `name` (a lock's or an election's) as the request asks
    /// and waits for its head.
    pub(super) async fn contend(
        &self,
        name: &str,
        request: AcquireRequest,
        value: Value,
        caller: &Caller,
    ) -> Result<Acquired, Box<Problem>> {
        let lease = match (request.lease.as_deref(), request.ttl) {
            (Some(_), Some(_)) => {
                return Err(Problem::invalid_request(
                    "give `lease` or `ttl`, not both: `ttl` grants a lease for the request",
                )
                .into());
            }
            (None, None) => {
                return Err(Problem::invalid_request(
                    "give `lease` (a lease to hold it on) or `ttl` (seconds of a lease granted \
                     for it)",
                )
                .into());
            }
            (Some(lease), None) => LeaseChoice::Given(self.usable_lease(lease, caller).await?),
            (None, Some(ttl)) => {
                if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
                    return Err(Problem::invalid_request(bad_ttl(ttl)).into());
                }
                LeaseChoice::Grant {
                    ttl,
                    owner: caller.name(),
                }
            }
        };
        if let Some(wait) = request.wait.filter(|wait| *wait > MAX_TTL_SECONDS) {
            return Err(Problem::invalid_request(format!(
                "wait {wait} is past the longest, {MAX_TTL_SECONDS} seconds (the server waits at \
                 most --max-lock-wait anyway)"
            ))
            .into());
        }
        let max = self.limits.max_lock_wait;
        let wait = request
            .wait
            .map_or(max, |seconds| Duration::from_secs(seconds).min(max));
        let joining = Joining { name, lease, value };
        // A stopping server answers a waiter at once (it leaves the line).
        tokio::select! {
            acquired = coord::acquire(&self.store, joining, wait) => acquired.map_err(coord_problem),
            () = self.shutdown.cancelled() => {
                Err(Problem::not_stored(&StorageError::ShuttingDown).into())
            }
        }
    }
}

pub struct LocksApi<B>(pub Context<B>);

#[OpenApi(tag = "ApiTags::Coordination")]
impl<B: Backend> LocksApi<B> {
    /// Acquire a lock
    ///
    /// Joins the line for lock `name` and waits (up to `wait` seconds) until
    /// it is this request's turn: waiters are served in arrival order, and
    /// each wakes only when the one ahead of it goes. The lock is held on a
    /// lease (`lease`, or one granted for `ttl` seconds): it is released by
    /// `DELETE`, or when the lease ends. The answer's `token` fences writes
    /// (`If-Fence: NAME=TOKEN`). 423 with `Retry-After` if the wait runs
    /// out; a request whose client goes away leaves the line. The lock is
    /// the keys `NAME/<lease id in hex>`, as etcd's `concurrency` package
    /// (and `etcdctl lock`) lays them out.
    #[oai(path = "/locks/:name", method = "post", operation_id = "acquire_lock")]
    async fn acquire(
        &self,
        /// The lock's name (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        name: Path<String>,
        request: JsonBody<AcquireRequest>,
        auth: TokenAuth,
    ) -> Result<AcquireResponse, ApiError<AcquireErrors>> {
        let caller = auth.caller();
        self.0.queue_name(&name, &caller)?;
        let held = self
            .0
            .contend(&name, request.0, Value::from(String::new()), &caller)
            .await?;
        Ok(AcquireResponse::Held(JsonReply(LockHeld {
            name: name.0,
            key: held.key.to_string(),
            lease: held.lease.to_string(),
            token: held.token,
            revision: held.revision,
        })))
    }

    /// Read a lock
    ///
    /// Who holds lock `name` (its token, so that any service can check a
    /// token it was handed) and how many wait behind it.
    #[oai(path = "/locks/:name", method = "get", operation_id = "get_lock")]
    async fn read(
        &self,
        /// The lock's name (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        name: Path<String>,
        auth: TokenAuth,
    ) -> Result<LockResponse, ApiError<ReadErrors>> {
        self.0.check_queue_name(&name)?;
        auth.caller().may_read_prefix(&queue_prefix(&name))?;
        let queue = coord::read(&self.0.store, &name, None)
            .await
            .map_err(coord_problem)?;
        let holder = queue.head().map(|head| Holder {
            key: head.key().to_owned(),
            lease: head.meta().lease.map(|lease| lease.to_string()),
            token: head.meta().create_revision,
        });
        Ok(LockResponse::Ok(JsonReply(LockState {
            name: name.0,
            holder,
            waiters: queue.contenders.len().saturating_sub(1) as u64,
            revision: queue.revision,
        })))
    }

    /// Release a lock
    ///
    /// Releases lock `name` if it is held with `token` (412 `fence-lost`
    /// otherwise: released already, lost with its lease, or taken since).
    /// The next in line holds it from then on. The lease lives on.
    #[oai(
        path = "/locks/:name",
        method = "delete",
        operation_id = "release_lock"
    )]
    async fn release(
        &self,
        /// The lock's name (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        name: Path<String>,
        /// The token the acquisition answered.
        #[oai(validator(minimum(value = "1"), maximum(value = "9223372036854776000")))]
        token: Query<u64>,
        auth: TokenAuth,
    ) -> Result<ReleaseResponse, ApiError<ReleaseErrors>> {
        self.0.queue_name(&name, &auth.caller())?;
        coord::release(&self.0.store, &name, checked_token(token.0)?)
            .await
            .map_err(coord_problem)?;
        Ok(ReleaseResponse::Released)
    }
}
