//! The key space: list the keys under a prefix a page at a time, and delete
//! them all at once.

use poem::Request;
use poem_openapi::param::{Header, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use serde::Serialize;
use serde::ser::SerializeStruct;

use super::auth::TokenAuth;
use super::body::JsonReply;
use super::cursor::{Cursor, CursorError};
use super::fence::{FenceHeader, fence_header};
use super::problem::ErrorDoc;
use super::problem::{
    ApiError, BAD_REQUEST, ErrorStatus, ErrorStatuses, FENCE_LOST, FORBIDDEN, INSUFFICIENT_STORAGE,
    Problem, TOO_MANY_REQUESTS, UNAUTHORIZED, UNAVAILABLE,
};
use super::text::Text;
use super::{ApiTags, Context};
use crate::backend::Backend;
use crate::domain::{Entry, RangeError, RangeRequest, Value};

/// The most records one page may hold, and how many when not said.
pub const MAX_LIMIT: u64 = 10_000;
pub(super) const DEFAULT_LIMIT: u64 = 1_000;

/// What one listed key takes in a page besides its key and value, at
/// most.
pub(super) const ITEM_OVERHEAD: usize = 48;

/// What is wrong with a `limit`.
pub fn bad_limit(given: impl std::fmt::Display) -> String {
    format!("limit {given} is not a whole number from 1 to {MAX_LIMIT}")
}

/// Why `DELETE /store?prefix=` is refused.
pub const EMPTY_PREFIX: &str =
    "the prefix is empty: deleting every key this way is refused; name a prefix";

pub const LISTING_GONE: ErrorDoc = ErrorDoc {
    status: 410,
    description: "The listing's revision is older than the history reaches (or comes from another run of the \
     server): list again without `cursor`.",
    example: (
        "history-gone",
        "History gone",
        "the listing's revision 5 is older than the oldest revision kept, 120: list again without a cursor",
    ),
};

pub struct ListErrors;
impl ErrorStatuses for ListErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        LISTING_GONE,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
    ];
}

pub struct DeletePrefixErrors;
impl ErrorStatuses for DeletePrefixErrors {
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

/// One key of a listing.
#[derive(Object, Clone, Debug, PartialEq)]
pub struct Listed {
    pub key: String,
    /// Absent with `keys_only=true`.
    #[oai(skip_serializing_if_is_none)]
    pub value: Option<Text>,
    /// The key's revision (its ETag) at the listing's revision.
    pub revision: u64,
    /// The revision that created the key.
    pub create_revision: u64,
    /// Writes to the key since it was created (1 for the first).
    pub version: u64,
    /// The lease the key lives on (16 hex digits), if it is on one.
    #[oai(skip_serializing_if_is_none)]
    pub lease: Option<String>,
    /// Seconds until the key expires (rounded up), if it has a TTL.
    #[oai(skip_serializing_if_is_none)]
    pub ttl: Option<u64>,
}

/// Written by hand to keep the members in name order, as poem-openapi
/// writes every other object.
impl Serialize for Listed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Listed", 7)?;
        out.serialize_field("create_revision", &self.create_revision)?;
        out.serialize_field("key", &self.key)?;
        if let Some(lease) = &self.lease {
            out.serialize_field("lease", lease)?;
        }
        out.serialize_field("revision", &self.revision)?;
        if let Some(ttl) = self.ttl {
            out.serialize_field("ttl", &ttl)?;
        }
        if let Some(value) = &self.value {
            out.serialize_field("value", value)?;
        }
        out.serialize_field("version", &self.version)?;
        out.end()
    }
}

/// One page of a listing.
#[derive(Object, Clone, Debug, PartialEq)]
#[oai(example)]
pub struct Listing {
    /// The store revision every page of this listing shows. Watch the
    /// prefix with `since` set to it to follow on from the listing.
    pub revision: u64,
    /// Keys in byte order.
    pub items: Vec<Listed>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[oai(nullable)]
    pub next: Option<String>,
    /// With `count=true`: how many keys the whole listing holds (all
    /// pages).
    #[oai(skip_serializing_if_is_none)]
    pub count: Option<u64>,
}

/// Written by hand to keep the members in name order, as poem-openapi
/// writes every other object.
impl Serialize for Listing {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Listing", 4)?;
        if let Some(count) = self.count {
            out.serialize_field("count", &count)?;
        }
        out.serialize_field("items", &self.items)?;
        out.serialize_field("next", &self.next)?;
        out.serialize_field("revision", &self.revision)?;
        out.end()
    }
}

impl Example for Listing {
    fn example() -> Self {
        Self {
            revision: 12,
            items: vec![Listed {
                key: "config/db".to_owned(),
                value: Some(Text(Value::from("postgres://db:5432"))),
                revision: 9,
                create_revision: 4,
                version: 2,
                lease: None,
                ttl: None,
            }],
            next: None,
            count: None,
        }
    }
}

/// What a prefix delete did.
#[derive(Object, Clone, Debug, PartialEq)]
#[oai(example)]
pub struct Deleted {
    /// How many keys were deleted (one `delete` event each).
    pub deleted: u64,
    /// The store's revision after the delete.
    pub revision: u64,
}

impl Example for Deleted {
    fn example() -> Self {
        Self {
            deleted: 3,
            revision: 15,
        }
    }
}

#[derive(ApiResponse)]
pub enum ListResponse {
    /// One page of keys.
    #[oai(status = 200)]
    Page(JsonReply<Listing>),
}

#[derive(ApiResponse)]
pub enum DeletePrefixResponse {
    /// The keys are deleted.
    #[oai(status = 200)]
    Deleted(Json<Deleted>),
}

pub(super) fn listed(entry: &Entry, keys_only: bool) -> Listed {
    let meta = entry.meta();
    Listed {
        key: entry.key().to_owned(),
        value: (!keys_only).then(|| Text(entry.value())),
        revision: meta.mod_revision,
        create_revision: meta.create_revision,
        version: meta.version,
        lease: meta.lease.map(|lease| lease.to_string()),
        ttl: entry.ttl_left(),
    }
}

pub struct ListApi<B>(pub Context<B>);

#[OpenApi(tag = "ApiTags::Keys")]
impl<B: Backend> ListApi<B> {
    /// List keys
    ///
    /// The keys starting with `prefix` (all keys when empty or absent), in
    /// byte order, a page at a time: pass the answer's `next` as `cursor`
    /// for the next page. Every page shows the store as it was at the first
    /// page's `revision`, whatever is written in between; when the history
    /// no longer reaches back to it the page is 410 and the listing starts
    /// over. A page ends at `limit` keys, or before its keys and values
    /// would pass `--max-page-bytes` (it always holds one key).
    #[oai(path = "/store", method = "get", operation_id = "list_keys")]
    async fn list_keys(
        &self,
        /// List the keys starting with this.
        prefix: Query<Option<String>>,
        /// Most keys in the page (1 to 10000; default 1000).
        #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
        limit: Query<Option<u64>>,
        /// Where to go on: the `next` of the previous page (absent or
        /// empty: the first page).
        cursor: Query<Option<String>>,
        /// Leave the values out.
        keys_only: Query<Option<bool>>,
        /// Also count the keys of the whole listing.
        count: Query<Option<bool>>,
        auth: TokenAuth,
    ) -> Result<ListResponse, ApiError<ListErrors>> {
        let prefix = prefix.0.unwrap_or_default();
        self.0.check_prefix(&prefix)?;
        auth.caller().may_read_prefix(&prefix)?;
        // In 1..=MAX_LIMIT: the validator above said so, in the words of
        // `bad_limit` (server/errors.rs).
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT);
        let cursor = cursor
            .0
            .filter(|text| !text.is_empty())
            .map(|text| {
                Cursor::decode(&text, &prefix).map_err(|err| {
                    Box::new(Problem::invalid_request(match err {
                        CursorError::Garbled => {
                            "the cursor is not one this server gave out, or was changed: pass \
                             the `next` of the previous page as it came"
                        }
                        CursorError::OtherPrefix => {
                            "the cursor belongs to a listing of another prefix: keep the prefix \
                             of the first page"
                        }
                    }))
                })
            })
            .transpose()?;
        let keys_only = keys_only.0.unwrap_or(false);
        // Room for the page before it is read: at most its bytes (or one
        // record, however large), and each item's JSON around them.
        let limits = &self.0.limits;
        let records = limits
            .max_page_bytes
            .max(limits.max_key_bytes + limits.max_value_bytes);
        let items = usize::try_from(limit).unwrap_or(usize::MAX);
        let _room = self
            .0
            .answer_room(records.saturating_add(items.saturating_mul(ITEM_OVERHEAD)))?;
        let page = self
            .0
            .store
            .range(&RangeRequest {
                prefix: &prefix,
                after: cursor.as_ref().map(|cursor| cursor.after.as_str()),
                at: cursor.as_ref().map(|cursor| cursor.at),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
                max_bytes: self.0.limits.max_page_bytes,
                keys_only,
                count: count.0.unwrap_or(false),
            })
            .await
            .map_err(|err| {
                let revision = cursor.as_ref().map_or(0, |cursor| cursor.at.revision);
                let (detail, oldest) = match err {
                    RangeError::Compacted { oldest } => (
                        format!(
                            "the listing shows revision {revision}, and the history now starts \
                             at {oldest}: list again without `cursor`"
                        ),
                        oldest,
                    ),
                    RangeError::Unavailable(detail) => return Problem::unavailable(&detail),
                    RangeError::Unknown { current, oldest } => (
                        format!(
                            "the listing shows revision {revision}, newer than the store's \
                             {current}: the cursor comes from another run of the server"
                        ),
                        oldest,
                    ),
                };
                Problem {
                    oldest_revision: Some(oldest),
                    ..Problem::new(ErrorStatus::GONE, "history-gone", "History gone", detail)
                }
            })?;
        let next = page
            .more
            .then(|| page.entries.last())
            .flatten()
            .map(|last| {
                Cursor {
                    at: page.at,
                    after: last.key().to_owned(),
                }
                .encode(&prefix)
            });
        Ok(ListResponse::Page(JsonReply(Listing {
            revision: page.at.revision,
            items: page
                .entries
                .iter()
                .map(|entry| listed(entry, keys_only))
                .collect(),
            next,
            count: page.count,
        })))
    }

    /// Delete keys by prefix
    ///
    /// Deletes every key starting with `prefix` (which may not be empty) in
    /// one atomic commit: one `delete` event per key, in revision order,
    /// and with `--data-dir` one transaction. Answers how many keys were
    /// deleted and the store's revision after it.
    #[oai(path = "/store", method = "delete", operation_id = "delete_prefix")]
    async fn delete_prefix(
        &self,
        /// Delete the keys starting with this (not empty).
        #[oai(validator(min_length = 1))]
        prefix: Query<String>,
        /// `NAME=TOKEN`: delete only if lock `NAME` is held with that token.
        #[oai(name = "If-Fence")]
        _if_fence: Header<Option<FenceHeader>>,
        req: &Request,
        auth: TokenAuth,
    ) -> Result<DeletePrefixResponse, ApiError<DeletePrefixErrors>> {
        // Not empty: the validator above said so, in the words of
        // `EMPTY_PREFIX` (server/errors.rs).
        self.0.check_prefix(&prefix)?;
        let caller = auth.caller();
        caller.may_write_prefix(&prefix)?;
        let fences = self.0.fences(&caller, fence_header(req)?)?;
        let done = self
            .0
            .store
            .delete_prefix(&prefix, &fences)
            .await
            .map_err(|err| Problem::not_stored(&err))?;
        Ok(DeletePrefixResponse::Deleted(Json(Deleted {
            deleted: done.deleted,
            revision: done.revision,
        })))
    }
}
