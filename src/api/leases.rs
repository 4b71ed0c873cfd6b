//! Leases: a TTL many keys share. Grant one, put keys on it (`lease` on
//! any put), keep it alive; when it runs out or is revoked, all its keys
//! go in one commit.

use poem_openapi::param::{Path, Query};
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::{Deserialize, Serialize};

use super::auth::TokenAuth;
use super::body::{BodyExample, JsonBody, JsonReply};
use super::problem::ErrorDoc;
use super::problem::{
    ApiError, BAD_REQUEST, ErrorStatus, ErrorStatuses, FORBIDDEN, INSUFFICIENT_STORAGE, Problem,
    REQUEST_TIMEOUT, TOO_LARGE, TOO_MANY_REQUESTS, UNAUTHORIZED, UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
};
use super::{ApiTags, Context, MAX_TTL_SECONDS, bad_ttl, lease_id, lease_number};
use crate::auth::Caller;
use crate::backend::Backend;
use crate::domain::{LeaseError, LeaseId, LeaseState};

/// What a grant asks for.
#[derive(Object, Deserialize, Clone, Debug)]
pub struct GrantRequest {
    /// Seconds the lease lives without a keep-alive.
    #[oai(validator(minimum(value = "1"), maximum(value = "3153600000")))]
    pub ttl: u64,
    /// The id to give it (up to 16 hex digits, at most 7fffffffffffffff);
    /// without it (or with 0, as in etcd) the server picks one.
    #[oai(
        validator(pattern = "^[0-7]?[0-9a-fA-F]{1,15}$"),
        nullable,
        skip_serializing_if_is_none
    )]
    pub id: Option<String>,
}

impl BodyExample for GrantRequest {
    const AN_OBJECT: bool = true;

    fn body_example() -> Option<serde_json::Value> {
        Some(serde_json::json!({"ttl": 10}))
    }
}

/// A lease.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct Lease {
    /// Its id: 16 hex digits.
    pub id: String,
    /// Seconds left (rounded up).
    pub ttl: u64,
    /// The TTL it was granted: what each keep-alive restores.
    pub granted_ttl: u64,
    /// The name of the token that granted it (absent without an auth file).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// With `keys=true`: the keys on it, in key order.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

impl From<LeaseState> for Lease {
    fn from(state: LeaseState) -> Self {
        Self {
            id: state.id.to_string(),
            ttl: state.ttl,
            granted_ttl: state.granted_ttl,
            owner: state.owner.map(|owner| owner.to_string()),
            keys: state
                .keys
                .map(|keys| keys.iter().map(|key| key.to_string()).collect()),
        }
    }
}

/// A keep-alive's answer.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct KeptAlive {
    pub id: String,
    /// Seconds it lives now: its granted TTL.
    pub ttl: u64,
}

/// A lease in a listing.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct LeaseListed {
    pub id: String,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A page of leases, in id order.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct LeasePage {
    pub leases: Vec<LeaseListed>,
    /// Pass the last id as `after` for the next page; `null` on the last.
    #[oai(nullable)]
    pub next: Option<String>,
}

/// What a revoke did.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct Revoked {
    /// The store's revision after it (its keys' deletes, if it had any).
    pub revision: u64,
}

pub const NOT_FOUND: ErrorDoc = ErrorDoc {
    status: 404,
    description: "No such lease: never granted, expired or revoked (its keys are gone).",
    example: (
        "lease-not-found",
        "Lease not found",
        "lease 00000000000000c1 does not exist",
    ),
};
const EXISTS: ErrorDoc = ErrorDoc {
    status: 409,
    description: "A lease with this id exists.",
    example: (
        "lease-exists",
        "Lease exists",
        "lease 00000000000000c1 exists: pick another id, or none",
    ),
};

pub struct GrantErrors;
impl ErrorStatuses for GrantErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        EXISTS,
        REQUEST_TIMEOUT,
        TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
        INSUFFICIENT_STORAGE,
    ];
}

pub struct LeaseErrors;
impl ErrorStatuses for LeaseErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_FOUND,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
        INSUFFICIENT_STORAGE,
    ];
}

pub struct ListErrors;
impl ErrorStatuses for ListErrors {
    const STATUSES: &'static [ErrorDoc] =
        &[BAD_REQUEST, UNAUTHORIZED, TOO_MANY_REQUESTS, UNAVAILABLE];
}

#[derive(ApiResponse)]
pub enum GrantResponse {
    /// Granted.
    #[oai(status = 201)]
    Granted(JsonReply<Lease>),
}

#[derive(ApiResponse)]
pub enum KeepAliveResponse {
    /// The lease lives its granted TTL from now.
    #[oai(status = 200)]
    Ok(JsonReply<KeptAlive>),
}

#[derive(ApiResponse)]
pub enum LeaseResponse {
    #[oai(status = 200)]
    Ok(JsonReply<Lease>),
}

#[derive(ApiResponse)]
pub enum ListResponse {
    #[oai(status = 200)]
    Ok(JsonReply<LeasePage>),
}

#[derive(ApiResponse)]
pub enum RevokeResponse {
    /// Revoked; its keys are deleted.
    #[oai(status = 200)]
    Ok(JsonReply<Revoked>),
}

/// The most leases one page lists, and how many when not said.
const MAX_LIST: u64 = 10_000;
const DEFAULT_LIST: u64 = 1_000;

pub(super) fn lease_problem(err: LeaseError) -> Box<Problem> {
    Box::new(match err {
        LeaseError::NotFound(id) => Problem::lease_not_found(id),
        LeaseError::Exists(id) => Problem::new(
            ErrorStatus::CONFLICT,
            "lease-exists",
            "Lease exists",
            format!("lease {id} exists: pick another id, or none"),
        ),
        LeaseError::TooMany { max } => Problem::unavailable(&format!(
            "the server holds {max} leases, its most (--max-leases); revoke some or let them run \
             out"
        )),
        LeaseError::Storage(err) => Problem::not_stored(&err),
    })
}

pub struct LeasesApi<B>(pub Context<B>);

impl<B: Backend> Context<B> {
    /// The lease `id`, after checking the caller may use it.
    pub(super) async fn lease_for(
        &self,
        id: &str,
        caller: &Caller,
        keys: bool,
    ) -> Result<LeaseState, Box<Problem>> {
        let id = lease_id(id)?;
        let state = self.store.lease(id, keys).await.map_err(lease_problem)?;
        caller.may_use_lease(id, state.owner.as_deref())?;
        Ok(state)
    }

    /// Checks that the caller may use `id` without reading the lease when
    /// any caller may (no auth file).
    pub(super) async fn usable_lease(
        &self,
        id: &str,
        caller: &Caller,
    ) -> Result<LeaseId, Box<Problem>> {
        match caller {
            Caller::Anyone => lease_id(id),
            Caller::Token(_) => Ok(self.lease_for(id, caller, false).await?.id),
        }
    }
}

#[OpenApi(tag = "ApiTags::Leases")]
impl<B: Backend> LeasesApi<B> {
    /// Grant a lease
    ///
    /// A lease of `ttl` seconds. Put keys on it with `lease` on a PUT (or a
    /// CAS, a batch or transaction PUT); keep it alive before the TTL runs
    /// out. When it runs out, every key on it expires in one commit (an
    /// `expire` event each, in key order, at one revision); a revoke
    /// deletes them so. Only the token that granted it (or an admin token)
    /// may keep it alive, read or revoke it.
    #[oai(path = "/leases", method = "post", operation_id = "grant_lease")]
    async fn grant(
        &self,
        request: JsonBody<GrantRequest>,
        auth: TokenAuth,
    ) -> Result<GrantResponse, ApiError<GrantErrors>> {
        let GrantRequest { ttl, id } = request.0;
        if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
            return Err(Problem::invalid_request(bad_ttl(ttl)).into());
        }
        // 0 asks the server to pick one, as in etcd.
        let id = match id.as_deref().map(lease_number).transpose()? {
            None | Some(0) => None,
            Some(number) => Some(LeaseId::new(number).ok_or_else(|| {
                Problem::invalid_request("a lease id is at most 7fffffffffffffff")
            })?),
        };
        let granted = self
            .0
            .store
            .grant(id, ttl, auth.caller().name())
            .await
            .map_err(lease_problem)?;
        Ok(GrantResponse::Granted(JsonReply(granted.into())))
    }

    /// Keep a lease alive
    ///
    /// The lease lives its granted TTL from now. 404 once it has run out or
    /// was revoked: its keys are gone, and a client that held it must
    /// grant a new one and put its keys back.
    #[oai(
        path = "/leases/:id/keepalive",
        method = "post",
        operation_id = "keep_lease_alive"
    )]
    async fn keep_alive(
        &self,
        /// The lease's id (16 hex digits).
        #[oai(validator(pattern = "^[0-9a-fA-F]{1,16}$"))]
        id: Path<String>,
        auth: TokenAuth,
    ) -> Result<KeepAliveResponse, ApiError<LeaseErrors>> {
        let id = self.0.usable_lease(&id, &auth.caller()).await?;
        let ttl = self.0.store.keep_alive(id).await.map_err(lease_problem)?;
        Ok(KeepAliveResponse::Ok(JsonReply(KeptAlive {
            id: id.to_string(),
            ttl,
        })))
    }

    /// Read a lease
    ///
    /// Its remaining and granted TTL, who granted it, and with `keys=true`
    /// the keys on it (those the token may read).
    #[oai(path = "/leases/:id", method = "get", operation_id = "get_lease")]
    async fn lease(
        &self,
        /// The lease's id (16 hex digits).
        #[oai(validator(pattern = "^[0-9a-fA-F]{1,16}$"))]
        id: Path<String>,
        /// Also list the keys on the lease.
        keys: Query<Option<bool>>,
        auth: TokenAuth,
    ) -> Result<LeaseResponse, ApiError<LeaseErrors>> {
        let caller = auth.caller();
        let mut state = self
            .0
            .lease_for(&id, &caller, keys.0.unwrap_or(false))
            .await?;
        // Other tokens may have put keys on it: only those the caller may
        // read are named.
        if let Some(keys) = &mut state.keys {
            keys.retain(|key| caller.may_read_key(key).is_ok());
        }
        Ok(LeaseResponse::Ok(JsonReply(state.into())))
    }

    /// List leases
    ///
    /// The leases the token may use (all of them for an admin token, or
    /// without an auth file), in id order, a page of at most `limit`.
    #[oai(path = "/leases", method = "get", operation_id = "list_leases")]
    async fn list(
        &self,
        /// Start after this id (the `next` of the previous page).
        #[oai(validator(pattern = "^[0-9a-fA-F]{1,16}$"))]
        after: Query<Option<String>>,
        /// Most leases in the page (1 to 10000, default 1000).
        #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
        limit: Query<Option<u64>>,
        auth: TokenAuth,
    ) -> Result<ListResponse, ApiError<ListErrors>> {
        // Past the largest id there is none; from 0 is from the first.
        let after = after.as_deref().map(lease_number).transpose()?;
        if after.is_some_and(|after| after >= LeaseId::MAX) {
            return Ok(ListResponse::Ok(JsonReply(LeasePage {
                leases: Vec::new(),
                next: None,
            })));
        }
        let after = after.and_then(LeaseId::new);
        let limit = limit.0.unwrap_or(DEFAULT_LIST);
        if !(1..=MAX_LIST).contains(&limit) {
            return Err(Problem::invalid_request(format!(
                "limit {limit} is not a whole number from 1 to {MAX_LIST}"
            ))
            .into());
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let page = self
            .0
            .store
            .leases(after, limit)
            .await
            .map_err(lease_problem)?;
        let caller = auth.caller();
        let next = page
            .more
            .then(|| page.leases.last().map(|lease| lease.id.to_string()))
            .flatten();
        let leases = page
            .leases
            .into_iter()
            .filter(|lease| {
                caller
                    .may_use_lease(lease.id, lease.owner.as_deref())
                    .is_ok()
            })
            .map(|lease| LeaseListed {
                id: lease.id.to_string(),
                owner: lease.owner.map(|owner| owner.to_string()),
            })
            .collect();
        Ok(ListResponse::Ok(JsonReply(LeasePage { leases, next })))
    }

    /// Revoke a lease
    ///
    /// Deletes every key on it in one commit (a `delete` event each, in key
    /// order, at one revision), then the lease.
    #[oai(path = "/leases/:id", method = "delete", operation_id = "revoke_lease")]
    async fn revoke(
        &self,
        /// The lease's id (16 hex digits).
        #[oai(validator(pattern = "^[0-9a-fA-F]{1,16}$"))]
        id: Path<String>,
        auth: TokenAuth,
    ) -> Result<RevokeResponse, ApiError<LeaseErrors>> {
        let id = self.0.usable_lease(&id, &auth.caller()).await?;
        let revision = self.0.store.revoke(id).await.map_err(lease_problem)?;
        Ok(RevokeResponse::Ok(JsonReply(Revoked { revision })))
    }
}
