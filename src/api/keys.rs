//! Single-key operations: GET, PUT, DELETE and compare-and-swap.

use poem::error::ReadBodyError;

use poem::{IntoResponse, Request, Response};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::registry::{MetaResponses, Registry};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;

use super::auth::TokenAuth;
use super::body::{BodyExample, JsonBody, SentBody, ValueBody};
use super::conditional::{EntityTags, etag, given, parse_etags, write_condition};
use super::fence::{FenceHeader, fence_header};
use super::plain::Plain;
use super::problem::ErrorDoc;
use super::problem::{
    ApiError, BAD_REQUEST, ErrorStatuses, FORBIDDEN, INSUFFICIENT_STORAGE, KEY_OR_LEASE_NOT_FOUND,
    LEASE_NOT_FOUND, NOT_FOUND, PRECONDITION_FAILED, Problem, REQUEST_TIMEOUT, TOO_LARGE,
    TOO_MANY_REQUESTS, UNAUTHORIZED, UNAVAILABLE, UNSUPPORTED_MEDIA_TYPE,
    WRITE_PRECONDITION_FAILED,
};
use super::text::TextValue;
use super::{ApiTags, Context};
use crate::auth::Caller;
use crate::backend::Backend;
use crate::domain::{Action, Condition, Current, Lifetime, Meta, Op, Outcome, Value};

pub struct GetErrors;
impl ErrorStatuses for GetErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_FOUND,
        PRECONDITION_FAILED,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
    ];
}

pub struct PutErrors;
impl ErrorStatuses for PutErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        LEASE_NOT_FOUND,
        WRITE_PRECONDITION_FAILED,
        REQUEST_TIMEOUT,
        TOO_LARGE,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
        INSUFFICIENT_STORAGE,
    ];
}

pub struct DeleteErrors;
impl ErrorStatuses for DeleteErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_FOUND,
        WRITE_PRECONDITION_FAILED,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
        INSUFFICIENT_STORAGE,
    ];
}

pub struct CasErrors;
impl ErrorStatuses for CasErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        KEY_OR_LEASE_NOT_FOUND,
        WRITE_PRECONDITION_FAILED,
        REQUEST_TIMEOUT,
        TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
        INSUFFICIENT_STORAGE,
    ];
}

/// What a GET answers, as the spec declares it ([`GetAnswer`] is what is
/// sent).
#[derive(ApiResponse)]
pub enum GetResponse {
    /// The value, as text.
    #[oai(status = 200)]
    Ok(
        TextValue,
        /// The key's revision: the revision of its latest write.
        #[oai(header = "ETag")]
        String,
        /// The revision that created the key (kept across updates; new
        /// after a delete or expiry).
        #[oai(header = "Kv-Create-Revision")]
        u64,
        /// Writes to the key since it was created (1 for the first).
        #[oai(header = "Kv-Version")]
        u64,
        /// The lease the key lives on (16 hex digits), if it is on one.
        #[oai(header = "Kv-Lease")]
        Option<String>,
    ),
    /// The value has not changed since the ETag given in `If-None-Match`.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
}

/// What a GET answers: [`GetResponse`]'s answers, with the headers
/// written by hand ([`Plain`]). The derived answer parses each header's
/// name and formats each number through `format!` on every request, which
/// cost a GET some 2 000 instructions of its 22 000; here the names are
/// constants and the numbers go through `itoa`. A test holds the two to
/// the same bytes.
pub enum GetAnswer {
    Ok { value: Value, meta: Meta },
    NotModified { revision: u64 },
}

impl From<GetAnswer> for Plain {
    fn from(answer: GetAnswer) -> Self {
        match answer {
            GetAnswer::Ok { value, meta } => Plain::Value { value, meta },
            GetAnswer::NotModified { revision } => Plain::NotModified { revision },
        }
    }
}

impl IntoResponse for GetAnswer {
    fn into_response(self) -> Response {
        Plain::from(self).into_response()
    }
}

impl ApiResponse for GetAnswer {
    fn meta() -> MetaResponses {
        GetResponse::meta()
    }

    fn register(registry: &mut Registry) {
        GetResponse::register(registry);
    }
}

#[derive(ApiResponse)]
pub enum PutResponse {
    /// The key was created.
    #[oai(status = 201)]
    Created(#[oai(header = "ETag")] String),
    /// The key existed; its value was replaced.
    #[oai(status = 204)]
    Replaced(#[oai(header = "ETag")] String),
}

/// What a PUT answers: [`PutResponse`]'s answers, written by hand
/// ([`Plain`]) for the reason [`GetAnswer`] is. A test holds the two to the
/// same bytes.
pub struct PutAnswer {
    pub created: bool,
    pub revision: u64,
}

impl From<PutAnswer> for Plain {
    fn from(answer: PutAnswer) -> Self {
        Plain::Written {
            created: answer.created,
            revision: answer.revision,
        }
    }
}

impl IntoResponse for PutAnswer {
    fn into_response(self) -> Response {
        Plain::from(self).into_response()
    }
}

impl ApiResponse for PutAnswer {
    fn meta() -> MetaResponses {
        PutResponse::meta()
    }

    fn register(registry: &mut Registry) {
        PutResponse::register(registry);
    }
}

#[derive(ApiResponse)]
pub enum DeleteResponse {
    /// The key was deleted.
    #[oai(status = 204)]
    Deleted,
}

#[derive(ApiResponse)]
pub enum CasResponse {
    /// The value was swapped in.
    #[oai(status = 204)]
    Swapped(#[oai(header = "ETag")] String),
}

/// A compare-and-swap request.
#[derive(Object, Deserialize, Debug)]
#[oai(example)]
pub struct CasRequest {
    /// The value the key must hold for the swap to happen; `null` (or
    /// absent) means the key must not exist (create only).
    #[oai(nullable)]
    pub expected: Option<String>,
    /// The value to store.
    pub new: String,
    /// Seconds until the key expires; without it (or with null) the key
    /// keeps no TTL.
    #[oai(
        validator(minimum(value = "1"), maximum(value = "3153600000")),
        nullable,
        skip_serializing_if_is_none
    )]
    pub ttl: Option<u64>,
    /// The lease (16 hex digits) the key lives on, instead of a `ttl`.
    #[oai(
        validator(pattern = "^[0-9a-fA-F]{1,16}$"),
        nullable,
        skip_serializing_if_is_none
    )]
    pub lease: Option<String>,
}

impl Example for CasRequest {
    fn example() -> Self {
        Self {
            expected: Some("old_value".to_owned()),
            new: "new_value".to_owned(),
            ttl: None,
            lease: None,
        }
    }
}

impl BodyExample for CasRequest {
    const AN_OBJECT: bool = true;
}

/// A 412 problem that tells the client what the key holds now.
pub fn condition_failed(key: &str, current: Option<Current>) -> Problem {
    let detail = match &current {
        Some(current) => format!("key {key:?} is at revision {}", current.revision()),
        None => format!("key {key:?} does not exist"),
    };
    Problem {
        value: current.as_ref().map(|c| c.value.as_str().to_owned()),
        revision: current.map(|c| c.revision()),
        ..Problem::precondition_failed(detail)
    }
}

fn unexpected(outcome: Outcome) -> Problem {
    // The outcome's shape is for the log, not for the client.
    tracing::error!(
        ?outcome,
        "the backend answered an outcome this operation cannot have"
    );
    Problem::internal("the backend answered an outcome this operation cannot have")
}

pub struct KeysApi<B>(pub Context<B>);

#[OpenApi(tag = "ApiTags::Keys")]
impl<B: Backend> KeysApi<B> {
    /// Read a key
    ///
    /// Returns the key's value as `text/plain` with its revision as `ETag`.
    /// With `If-None-Match` naming the current ETag the answer is 304 with no
    /// body. An expired key is never returned, even before it is swept.
    #[oai(path = "/store/:key", method = "get", operation_id = "get_key")]
    async fn get_key(
        &self,
        /// The key (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        key: Path<String>,
        /// Answer 304 if the key's ETag is one of these.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<EntityTags>>,
        /// Answer 412 unless the key's ETag is one of these (or `*`).
        #[oai(name = "If-Match")]
        if_match: Header<Option<EntityTags>>,
        auth: TokenAuth,
    ) -> Result<GetAnswer, ApiError<GetErrors>> {
        let caller = auth.caller();
        self.get(&caller, &key, if_none_match.as_deref(), if_match.as_deref())
            .await
    }
    /// Write a key
    ///
    /// Stores the request body (UTF-8 text, any Content-Type) as the key's
    /// value: 201 if the key is new, 204 if it replaced a value. Both carry
    /// the new revision as `ETag`. `ttl` makes the key expire; `lease` puts
    /// it on a lease instead (it lives as long as the lease: 404 if there
    /// is no such lease); a PUT with neither clears any TTL and takes the
    /// key off its lease. `If-Match` makes the write conditional on the
    /// current ETag, `If-None-Match: *` on the key not existing.
    #[oai(path = "/store/:key", method = "put", operation_id = "put_key")]
    #[allow(
        clippy::too_many_arguments,
        reason = "poem-openapi: one argument per parameter the spec declares"
    )]
    async fn put_key(
        &self,
        /// The key (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        key: Path<String>,
        /// Seconds until the key expires.
        #[oai(validator(minimum(value = "1"), maximum(value = "3153600000")))]
        ttl: Query<Option<u64>>,
        /// The lease the key lives on (16 hex digits), instead of a `ttl`.
        #[oai(validator(pattern = "^[0-9a-fA-F]{1,16}$"))]
        lease: Query<Option<String>>,
        /// Write only if the key's ETag is one of these (or `*`: the key exists).
        #[oai(name = "If-Match")]
        if_match: Header<Option<EntityTags>>,
        /// `*`: write only if the key does not exist.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<EntityTags>>,
        /// `NAME=TOKEN`: write only if lock `NAME` is held with that token.
        #[oai(name = "If-Fence")]
        _if_fence: Header<Option<FenceHeader>>,
        req: &Request,
        body: ValueBody,
        auth: TokenAuth,
    ) -> Result<PutAnswer, ApiError<PutErrors>> {
        let conditions = WriteConditions {
            if_match: if_match.as_deref(),
            if_none_match: if_none_match.as_deref(),
            if_fence: fence_header(req)?,
        };
        let caller = auth.caller();
        let lifetime = self.0.lifetime(ttl.0, lease.as_deref())?;
        let body = SentBody::Streaming(body.0);
        self.put(&caller, &key, lifetime, conditions, body).await
    }

    /// Delete a key
    ///
    /// 204 when the key was deleted, 404 when it did not exist. `If-Match`
    /// makes the delete conditional on the current ETag.
    #[oai(path = "/store/:key", method = "delete", operation_id = "delete_key")]
    async fn delete_key(
        &self,
        /// The key (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        key: Path<String>,
        /// Delete only if the key's ETag is one of these (or `*`).
        #[oai(name = "If-Match")]
        if_match: Header<Option<EntityTags>>,
        /// `NAME=TOKEN`: delete only if lock `NAME` is held with that token.
        #[oai(name = "If-Fence")]
        _if_fence: Header<Option<FenceHeader>>,
        req: &Request,
        auth: TokenAuth,
    ) -> Result<DeleteResponse, ApiError<DeleteErrors>> {
        let caller = auth.caller();
        self.delete(&caller, &key, if_match.as_deref(), fence_header(req)?)
            .await
    }

    /// Compare and swap
    ///
    /// Sets the key to `new` only if it currently holds `expected`; with
    /// `expected: null`, only if the key does not exist. 204 with the new
    /// `ETag` on success; 412 (with the current value and revision) when the
    /// value differs or the key exists; 404 when `expected` is a string and
    /// the key does not exist.
    #[oai(
        path = "/store/cas/:key",
        method = "post",
        operation_id = "compare_and_swap"
    )]
    async fn compare_and_swap(
        &self,
        /// The key (one path segment; send `/` as `%2F`).
        #[oai(validator(min_length = 1))]
        key: Path<String>,
        /// `NAME=TOKEN`: swap only if lock `NAME` is held with that token.
        #[oai(name = "If-Fence")]
        _if_fence: Header<Option<FenceHeader>>,
        req: &Request,
        request: JsonBody<CasRequest>,
        auth: TokenAuth,
    ) -> Result<CasResponse, ApiError<CasErrors>> {
        let key = self.0.key(&key)?;
        let caller = auth.caller();
        caller.may_write_key(&key)?;
        let fences = self.0.fences(&caller, fence_header(req)?)?;
        let JsonBody(CasRequest {
            expected,
            new,
            ttl,
            lease,
        }) = request;
        self.0.check_value(&new)?;
        let lifetime = self.0.lifetime(ttl, lease.as_deref())?;
        let expects_value = expected.is_some();
        let op = Op {
            key: key.clone(),
            action: Action::Put {
                value: Value::from(new),
                lifetime,
            },
            condition: Condition::Value(expected.map(Value::from)),
        };
        match self
            .0
            .write_one(op, &fences)
            .await
            .map_err(|err| Problem::not_stored(&err))?
        {
            Outcome::Created { revision } | Outcome::Replaced { revision } => {
                Ok(CasResponse::Swapped(etag(revision)))
            }
            Outcome::Rejected { current: None } if expects_value => {
                Err(Problem::not_found(&key).into())
            }
            Outcome::Rejected { current } => Err(condition_failed(&key, current).into()),
            other => Err(unexpected(other).into()),
        }
    }
}

/// A write's conditional headers, as sent.
#[derive(Clone, Copy, Default)]
pub struct WriteConditions<'a> {
    pub if_match: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub if_fence: Option<&'a str>,
}

/// The operations' work once their input is extracted, shared by the
/// poem-openapi operations above and the [fast path](super::fast_path).
impl<B: Backend> KeysApi<B> {
    pub(super) async fn get(
        &self,
        caller: &Caller,
        key: &str,
        if_none_match: Option<&str>,
        if_match: Option<&str>,
    ) -> Result<GetAnswer, ApiError<GetErrors>> {
        self.0.check_key(key)?;
        caller.may_read_key(key)?;
        let must = given(if_match)
            .map(|header| parse_etags("If-Match", header, false))
            .transpose()?;
        let none_of = given(if_none_match)
            .map(|header| parse_etags("If-None-Match", header, true))
            .transpose()?;
        let current = self
            .0
            .store
            .get(key)
            .await
            .map_err(|err| Problem::not_stored(&err))?;
        if let Some(must) = must {
            let must = Condition::Revision {
                must: Some(must),
                must_not: None,
            };
            if !must.holds(current.as_ref()) {
                return Err(condition_failed(key, current).into());
            }
        }
        let current = current.ok_or_else(|| Problem::not_found(key))?;
        let revision = current.revision();
        if let Some(none_of) = none_of
            && none_of.contains(revision)
        {
            return Ok(GetAnswer::NotModified { revision });
        }
        Ok(GetAnswer::Ok {
            value: current.value,
            meta: current.meta,
        })
    }

    pub(super) async fn put(
        &self,
        caller: &Caller,
        key: &str,
        lifetime: Lifetime,
        conditions: WriteConditions<'_>,
        body: SentBody,
    ) -> Result<PutAnswer, ApiError<PutErrors>> {
        let key = self.0.key(key)?;
        caller.may_write_key(&key)?;
        let fences = self.0.fences(caller, conditions.if_fence)?;
        let limit = self.0.limits.max_value_bytes;
        let bytes = super::body::read_limited(body, limit)
            .await
            .map_err(|err| match err {
                ReadBodyError::PayloadTooLarge => {
                    Problem::too_large(format!("the value is larger than {limit} bytes"))
                }
                other if super::body::timed_out(&other) => Problem::request_timeout(),
                other => Problem::invalid_request(format!("cannot read the body: {other}")),
            })?;
        let value = Value::from_utf8(bytes)
            .map_err(|err| Problem::invalid_request(format!("the value is not UTF-8: {err}")))?;
        let op = Op {
            key: key.clone(),
            action: Action::Put { value, lifetime },
            condition: write_condition(conditions.if_match, conditions.if_none_match)?,
        };
        match self
            .0
            .write_one(op, &fences)
            .await
            .map_err(|err| Problem::not_stored(&err))?
        {
            Outcome::Created { revision } => Ok(PutAnswer {
                created: true,
                revision,
            }),
            Outcome::Replaced { revision } => Ok(PutAnswer {
                created: false,
                revision,
            }),
            Outcome::Rejected { current } => Err(condition_failed(&key, current).into()),
            other => Err(unexpected(other).into()),
        }
    }

    pub(super) async fn delete(
        &self,
        caller: &Caller,
        key: &str,
        if_match: Option<&str>,
        if_fence: Option<&str>,
    ) -> Result<DeleteResponse, ApiError<DeleteErrors>> {
        let key = self.0.key(key)?;
        caller.may_write_key(&key)?;
        let fences = self.0.fences(caller, if_fence)?;
        let op = Op {
            key: key.clone(),
            action: Action::Delete,
            condition: write_condition(if_match, None)?,
        };
        match self
            .0
            .write_one(op, &fences)
            .await
            .map_err(|err| Problem::not_stored(&err))?
        {
            Outcome::Deleted { .. } => Ok(DeleteResponse::Deleted),
            Outcome::NotFound => Err(Problem::not_found(&key).into()),
            Outcome::Rejected { current } => Err(condition_failed(&key, current).into()),
            other => Err(unexpected(other).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LeaseId;
    use bytes::Bytes;
    use poem::http::StatusCode;

    /// Status, headers in order and body: what a client receives.
    async fn seen(response: Response) -> (StatusCode, Vec<(String, Vec<u8>)>, Bytes) {
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect();
        let body = response.into_body().into_bytes().await.expect("a body");
        (status, headers, body)
    }

    #[tokio::test]
    async fn a_get_answer_is_what_the_spec_declares() {
        let value = || TextValue(Bytes::from_static(b"v1"));
        for lease in [None, LeaseId::new(0x2a)] {
            let meta = Meta {
                create_revision: 3,
                mod_revision: 12,
                version: 4,
                lease,
            };
            let ours = GetAnswer::Ok {
                value: Value::from("v1"),
                meta,
            };
            let shown = lease.map(|lease| lease.to_string());
            let declared = GetResponse::Ok(value(), etag(12), 3, 4, shown);
            assert_eq!(
                seen(ours.into_response()).await,
                seen(declared.into_response()).await
            );
        }
        let ours = GetAnswer::NotModified { revision: 12 };
        let declared = GetResponse::NotModified(etag(12));
        assert_eq!(
            seen(ours.into_response()).await,
            seen(declared.into_response()).await
        );
    }

    #[tokio::test]
    async fn a_delete_answer_is_what_the_spec_declares() {
        assert_eq!(
            seen(Plain::Deleted.into_response()).await,
            seen(DeleteResponse::Deleted.into_response()).await
        );
    }

    #[tokio::test]
    async fn a_put_answer_is_what_the_spec_declares() {
        for created in [true, false] {
            let ours = PutAnswer {
                created,
                revision: 7,
            };
            let declared = match created {
                true => PutResponse::Created(etag(7)),
                false => PutResponse::Replaced(etag(7)),
            };
            assert_eq!(
                seen(ours.into_response()).await,
                seen(declared.into_response()).await
            );
        }
    }
}
