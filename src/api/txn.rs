//! Transactions: guards, then one branch of operations, as one commit.

use std::collections::HashSet;

use poem::Request;
use poem::http::StatusCode;
use poem_openapi::param::Header;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde::{Deserialize, Serialize};

use super::auth::TokenAuth;
use super::batch::RESULT_OVERHEAD;
use super::body::{BodyExample, JsonBody, JsonReply};
use super::fence::{FenceHeader, fence_header};
use super::list::{
    DEFAULT_LIMIT, EMPTY_PREFIX, ITEM_OVERHEAD, Listed, MAX_LIMIT, bad_limit, listed,
};
use super::problem::ErrorDoc;
use super::problem::{
    ApiError, BAD_REQUEST, ErrorStatuses, FENCE_LOST, FORBIDDEN, INSUFFICIENT_STORAGE,
    LEASE_NOT_FOUND, Problem, REQUEST_TIMEOUT, TOO_LARGE, TOO_MANY_REQUESTS, UNAUTHORIZED,
    UNAVAILABLE, UNSUPPORTED_MEDIA_TYPE,
};
use super::text::Text;
use super::{ApiTags, Context, lease_number};
use crate::auth::Caller;
use crate::backend::Backend;
use crate::domain::{
    Comparison, Guard, KeyTest, Lifetime, Operand, Order, Outcome, PrefixTest, Txn, TxnOp,
    TxnResult, Value,
};

/// How a guard tests its key (or every key under its prefix).
#[derive(Enum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GuardCompare {
    Equal,
    NotEqual,
    Less,
    Greater,
    /// The key exists (keys only).
    Exists,
    /// The key does not exist; for a prefix, no key is under it.
    Absent,
}

/// One guard: a key (or every key under a prefix) compared with one
/// operand. Where there is no key, numbers count as 0 and a `value`
/// comparison fails (etcd's rule). Values compare byte by byte.
#[derive(Object, Deserialize, Clone, Debug)]
pub struct TxnGuard {
    /// The key tested (give `key` or `prefix`).
    #[oai(validator(min_length = 1), skip_serializing_if_is_none)]
    pub key: Option<String>,
    /// Every key under this prefix is tested (give `key` or `prefix`).
    #[oai(skip_serializing_if_is_none)]
    pub prefix: Option<String>,
    pub compare: GuardCompare,
    /// Operand: the value (with EQUAL, NOT_EQUAL, LESS, GREATER give
    /// exactly one operand).
    #[oai(skip_serializing_if_is_none)]
    pub value: Option<String>,
    /// Operand: the revision of the key's last write (its ETag).
    #[oai(
        validator(minimum(value = "0"), maximum(value = "9223372036854775807")),
        skip_serializing_if_is_none
    )]
    pub mod_revision: Option<u64>,
    /// Operand: the revision that created the key.
    #[oai(
        validator(minimum(value = "0"), maximum(value = "9223372036854775807")),
        skip_serializing_if_is_none
    )]
    pub create_revision: Option<u64>,
    /// Operand: writes to the key since it was created.
    #[oai(
        validator(minimum(value = "0"), maximum(value = "9223372036854775807")),
        skip_serializing_if_is_none
    )]
    pub version: Option<u64>,
    /// Operand: the key's lease (16 hex digits; `0`: on no lease).
    #[oai(
        validator(pattern = "^[0-9a-fA-F]{1,16}$"),
        skip_serializing_if_is_none
    )]
    pub lease: Option<String>,
}

/// What a transaction operation does.
#[derive(Enum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "UPPERCASE")]
#[serde(rename_all = "UPPERCASE")]
pub enum TxnMethod {
    /// A key's value, or with `prefix` the keys under it (up to `limit`).
    Get,
    Put,
    /// A key, or with `prefix` every key under it.
    Delete,
}

/// One operation of a branch.
#[derive(Object, Deserialize, Clone, Debug)]
pub struct TxnOperation {
    pub op: TxnMethod,
    /// The key (give `key` or, for GET and DELETE, `prefix`).
    #[oai(validator(min_length = 1), skip_serializing_if_is_none)]
    pub key: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub prefix: Option<String>,
    /// PUT: the value (absent means the empty value).
    #[oai(skip_serializing_if_is_none)]
    pub value: Option<String>,
    /// PUT: the lease (16 hex digits) the key lives on, instead of a `ttl`.
    #[oai(
        validator(pattern = "^[0-9a-fA-F]{1,16}$"),
        skip_serializing_if_is_none
    )]
    pub lease: Option<String>,
    /// PUT: seconds until the key expires; without it (or a `lease`) the
    /// key keeps no TTL.
    #[oai(
        validator(minimum(value = "1"), maximum(value = "3153600000")),
        skip_serializing_if_is_none
    )]
    pub ttl: Option<u64>,
    /// GET with `prefix`: at most this many keys (1 to 10000, default 1000).
    #[oai(
        validator(minimum(value = "1"), maximum(value = "10000")),
        skip_serializing_if_is_none
    )]
    pub limit: Option<u64>,
}

/// A transaction: if every guard holds, `then` runs, otherwise `else`.
#[derive(Object, Deserialize, Clone, Debug)]
pub struct TxnRequest {
    /// All must hold for `then` to run (none: `then` runs).
    #[oai(default)]
    #[serde(default)]
    pub guards: Vec<TxnGuard>,
    #[oai(default)]
    #[serde(default)]
    pub then: Vec<TxnOperation>,
    #[oai(rename = "else", default)]
    #[serde(rename = "else", default)]
    pub otherwise: Vec<TxnOperation>,
}

impl BodyExample for TxnRequest {
    const AN_OBJECT: bool = true;

    fn body_example() -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "guards": [
                {"key": "config/mode", "compare": "EQUAL", "mod_revision": 7},
                {"key": "config/lock", "compare": "ABSENT"}
            ],
            "then": [{"op": "PUT", "key": "config/mode", "value": "fast"}],
            "else": [{"op": "GET", "key": "config/mode"}]
        }))
    }
}

/// The result of one operation of the branch that ran.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct TxnOpResult {
    /// What the operation alone would have answered: GET 200 or 404 (413:
    /// its value left out, past `--max-batch-answer-bytes`), PUT 201
    /// (created) or 204, DELETE 204 or 404; GET and DELETE of a prefix 200.
    pub status: u16,
    /// GET of a key: its value.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Text>,
    /// GET of a key: its revision (ETag); PUT and DELETE: the
    /// transaction's revision.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// GET of a key: the revision that created it.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_revision: Option<u64>,
    /// GET of a key: writes to it since it was created.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// GET of a key: the lease it lives on, if any.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// GET of a prefix: the keys under it, in key order.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<Listed>>,
    /// GET of a prefix: whether more keys follow (past `limit`, or past
    /// `--max-batch-answer-bytes` of keys and values).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more: Option<bool>,
    /// DELETE of a prefix: how many keys it deleted.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
}

impl TxnOpResult {
    fn status(status: StatusCode) -> Self {
        Self {
            status: status.as_u16(),
            value: None,
            revision: None,
            create_revision: None,
            version: None,
            lease: None,
            keys: None,
            more: None,
            deleted: None,
        }
    }

    fn revision(status: StatusCode, revision: u64) -> Self {
        Self {
            revision: Some(revision),
            ..Self::status(status)
        }
    }
}

/// What a transaction did.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
pub struct TxnAnswer {
    /// Whether every guard held: `then` ran (otherwise `else` did).
    pub succeeded: bool,
    /// The store's revision after it: its writes' one revision, or the
    /// revision its reads saw.
    pub revision: u64,
    /// One per operation of the branch that ran, in order.
    pub results: Vec<TxnOpResult>,
}

pub struct TxnErrors;
impl ErrorStatuses for TxnErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        LEASE_NOT_FOUND,
        FENCE_LOST,
        REQUEST_TIMEOUT,
        TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
        INSUFFICIENT_STORAGE,
    ];
}

#[derive(ApiResponse)]
pub enum TxnResponse {
    /// The guards were judged and one branch ran, as one atomic commit.
    #[oai(status = 200)]
    Ok(JsonReply<TxnAnswer>),
}

/// Where a problem was found, for its message.
fn at(place: String) -> impl Fn(Box<Problem>) -> Box<Problem> {
    move |problem| {
        Box::new(Problem {
            detail: format!("{place}: {}", problem.detail),
            ..*problem
        })
    }
}

/// A key or a prefix, as a guard or an operation names it.
enum Target {
    Key(String),
    Prefix(String),
}

fn target(key: Option<String>, prefix: Option<String>) -> Result<Target, Box<Problem>> {
    match (key, prefix) {
        (Some(key), None) => Ok(Target::Key(key)),
        (None, Some(prefix)) => Ok(Target::Prefix(prefix)),
        _ => Err(Problem::invalid_request("give exactly one of `key` and `prefix`").into()),
    }
}

pub struct TxnApi<B>(pub Context<B>);

impl<B: Backend> TxnApi<B> {
    fn guard(&self, guard: TxnGuard, caller: &Caller) -> Result<Guard, Box<Problem>> {
        let lease = match guard.lease.as_deref() {
            None => None,
            Some(lease) => Some(Operand::Lease(lease_number(lease)?)),
        };
        let operands = [
            guard.value.map(|value| Operand::Value(Value::from(value))),
            guard.mod_revision.map(Operand::ModRevision),
            guard.create_revision.map(Operand::CreateRevision),
            guard.version.map(Operand::Version),
            lease,
        ];
        let mut given = operands.into_iter().flatten();
        let (operand, more) = (given.next(), given.next());
        let order = match guard.compare {
            GuardCompare::Equal => Some(Order::Equal),
            GuardCompare::NotEqual => Some(Order::NotEqual),
            GuardCompare::Less => Some(Order::Less),
            GuardCompare::Greater => Some(Order::Greater),
            GuardCompare::Exists | GuardCompare::Absent => None,
        };
        let comparison = match (order, operand, more) {
            (Some(order), Some(operand), None) => Some(Comparison { order, operand }),
            (Some(_), _, _) => {
                return Err(Problem::invalid_request(
                    "a comparison takes exactly one operand: `value`, `mod_revision`, \
                     `create_revision`, `version` or `lease`",
                )
                .into());
            }
            (None, None, _) => None,
            (None, Some(_), _) => {
                return Err(Problem::invalid_request("EXISTS and ABSENT take no operand").into());
            }
        };
        Ok(match target(guard.key, guard.prefix)? {
            Target::Key(key) => {
                caller.may_read_key(&key)?;
                let test = match (comparison, guard.compare) {
                    (Some(comparison), _) => KeyTest::Compare(comparison),
                    (None, GuardCompare::Exists) => KeyTest::Exists,
                    (None, _) => KeyTest::Absent,
                };
                Guard::Key {
                    key: self.0.key(&key)?,
                    test,
                }
            }
            Target::Prefix(prefix) => {
                self.0.check_prefix(&prefix)?;
                caller.may_read_prefix(&prefix)?;
                let test = match (comparison, guard.compare) {
                    (Some(comparison), _) => PrefixTest::Every(comparison),
                    (None, GuardCompare::Exists) => {
                        return Err(Problem::invalid_request(
                            "EXISTS is for a key: a prefix guard holds for every key under it \
                             (to ask whether any exists, use ABSENT in the other branch)",
                        )
                        .into());
                    }
                    (None, _) => PrefixTest::Empty,
                };
                Guard::Prefix {
                    prefix: prefix.into(),
                    test,
                }
            }
        })
    }

    fn op(&self, op: TxnOperation, caller: &Caller) -> Result<TxnOp, Box<Problem>> {
        let lifetime = self.0.lifetime(op.ttl, op.lease.as_deref())?;
        if lifetime != Lifetime::Forever && op.op != TxnMethod::Put {
            return Err(Problem::invalid_request("`ttl` and `lease` are for PUT").into());
        }
        if op.value.is_some() && op.op != TxnMethod::Put {
            return Err(Problem::invalid_request("`value` is for PUT").into());
        }
        let target = target(op.key, op.prefix)?;
        if op.limit.is_some() && !(op.op == TxnMethod::Get && matches!(target, Target::Prefix(_))) {
            return Err(Problem::invalid_request("`limit` is for GET of a prefix").into());
        }
        Ok(match (op.op, target) {
            (TxnMethod::Get, Target::Key(key)) => {
                caller.may_read_key(&key)?;
                TxnOp::Get(self.0.key(&key)?)
            }
            (TxnMethod::Get, Target::Prefix(prefix)) => {
                self.0.check_prefix(&prefix)?;
                caller.may_read_prefix(&prefix)?;
                let limit = op.limit.unwrap_or(DEFAULT_LIMIT);
                if !(1..=MAX_LIMIT).contains(&limit) {
                    return Err(Problem::invalid_request(bad_limit(limit)).into());
                }
                TxnOp::List {
                    prefix: prefix.into(),
                    limit: usize::try_from(limit).unwrap_or(usize::MAX),
                }
            }
            (TxnMethod::Put, Target::Key(key)) => {
                caller.may_write_key(&key)?;
                let value = op.value.unwrap_or_default();
                self.0.check_value(&value)?;
                TxnOp::Put {
                    key: self.0.key(&key)?,
                    value: Value::from(value),
                    lifetime,
                }
            }
            (TxnMethod::Put, Target::Prefix(_)) => {
                return Err(Problem::invalid_request("PUT takes a `key`, not a `prefix`").into());
            }
            (TxnMethod::Delete, Target::Key(key)) => {
                caller.may_write_key(&key)?;
                TxnOp::Delete(self.0.key(&key)?)
            }
            (TxnMethod::Delete, Target::Prefix(prefix)) => {
                if prefix.is_empty() {
                    return Err(Problem::invalid_request(EMPTY_PREFIX).into());
                }
                self.0.check_prefix(&prefix)?;
                caller.may_write_prefix(&prefix)?;
                TxnOp::DeletePrefix(prefix.into())
            }
        })
    }
}

/// Refuses a branch that writes one key twice, or a key under a prefix it
/// deletes (etcd refuses both: the writes of one revision must not
/// overlap).
fn distinct_writes(branch: &[TxnOp], name: &str) -> Result<(), Box<Problem>> {
    let mut keys = HashSet::new();
    let mut prefixes: Vec<(usize, &str)> = Vec::new();
    for (index, op) in branch.iter().enumerate() {
        match op {
            TxnOp::Put { key, .. } | TxnOp::Delete(key) => {
                if !keys.insert(&**key) {
                    return Err(Problem::invalid_request(format!(
                        "{name}[{index}]: key {key:?} is written twice in one branch"
                    ))
                    .into());
                }
            }
            TxnOp::DeletePrefix(prefix) => prefixes.push((index, prefix)),
            TxnOp::Get(_) | TxnOp::List { .. } => {}
        }
    }
    for (position, (index, prefix)) in prefixes.iter().enumerate() {
        let overlaps = keys.iter().any(|key| key.starts_with(prefix))
            || prefixes.iter().enumerate().any(|(other, (_, p))| {
                other != position && (p.starts_with(prefix) || prefix.starts_with(p))
            });
        if overlaps {
            return Err(Problem::invalid_request(format!(
                "{name}[{index}]: prefix {prefix:?} overlaps another write in one branch"
            ))
            .into());
        }
    }
    Ok(())
}

/// The answer's results, values carried only while keys and values stay
/// within `max` bytes (the first value always stays): past it a GET says
/// 413 without its value and a listing ends early with `more`.
fn results(txn_results: Vec<TxnResult>, max: usize) -> Vec<TxnOpResult> {
    let mut carried = 0usize;
    let mut room = |bytes: usize| {
        let fits = carried == 0 || carried.saturating_add(bytes) <= max;
        if fits {
            carried = carried.saturating_add(bytes);
        }
        fits
    };
    txn_results
        .into_iter()
        .map(|result| match result {
            TxnResult::One(Outcome::Found(current)) => {
                let revision = current.revision();
                if !room(current.value.as_str().len()) {
                    return TxnOpResult::revision(StatusCode::PAYLOAD_TOO_LARGE, revision);
                }
                TxnOpResult {
                    value: Some(Text(current.value)),
                    create_revision: Some(current.meta.create_revision),
                    version: Some(current.meta.version),
                    lease: current.meta.lease.map(|lease| lease.to_string()),
                    ..TxnOpResult::revision(StatusCode::OK, revision)
                }
            }
            TxnResult::One(Outcome::Created { revision }) => {
                TxnOpResult::revision(StatusCode::CREATED, revision)
            }
            TxnResult::One(Outcome::Replaced { revision } | Outcome::Deleted { revision }) => {
                TxnOpResult::revision(StatusCode::NO_CONTENT, revision)
            }
            TxnResult::One(Outcome::NotFound | Outcome::Rejected { .. }) => {
                TxnOpResult::status(StatusCode::NOT_FOUND)
            }
            TxnResult::Listed { entries, more } => {
                let total = entries.len();
                let keys: Vec<Listed> = entries
                    .iter()
                    .take_while(|entry| room(entry.key().len() + entry.value().as_str().len()))
                    .map(|entry| listed(entry, false))
                    .collect();
                TxnOpResult {
                    more: Some(more || keys.len() < total),
                    keys: Some(keys),
                    ..TxnOpResult::status(StatusCode::OK)
                }
            }
            TxnResult::PrefixDeleted { deleted } => TxnOpResult {
                deleted: Some(deleted),
                ..TxnOpResult::status(StatusCode::OK)
            },
        })
        .collect()
}

#[OpenApi(tag = "ApiTags::Batch")]
impl<B: Backend> TxnApi<B> {
    /// Run a transaction
    ///
    /// Judges every guard against the store; if all hold, runs `then`,
    /// otherwise `else`: one atomic, isolated commit, as a batch (all its
    /// writes take one revision, their watch events `R.0`, `R.1`, ...;
    /// its reads see the store as the guards did). Guards failing is not
    /// an error: the answer says which branch ran. A branch may not write
    /// a key twice, nor a key under a prefix it deletes (400). At most
    /// `--max-txn-ops` guards and operations in all. Every key and prefix
    /// named, in the guards and both branches, must be in the token's
    /// scope (guards and GETs need read, PUT and DELETE write).
    #[oai(path = "/txn", method = "post", operation_id = "txn")]
    async fn txn(
        &self,
        /// `NAME=TOKEN`: run (either branch) only if lock `NAME` is held
        /// with that token.
        #[oai(name = "If-Fence")]
        _if_fence: Header<Option<FenceHeader>>,
        req: &Request,
        request: JsonBody<TxnRequest>,
        auth: TokenAuth,
    ) -> Result<TxnResponse, ApiError<TxnErrors>> {
        let request = request.0;
        let (guards, then, otherwise) = (request.guards, request.then, request.otherwise);
        let count = guards.len() + then.len() + otherwise.len();
        let max = self.0.limits.max_txn_ops;
        if count > max {
            return Err(Problem::too_large(format!(
                "the transaction has {count} guards and operations; the limit is {max} \
                 (--max-txn-ops)"
            ))
            .into());
        }
        if let Some(max) = self.0.store.max_batch_ops() {
            let largest = guards.len().max(then.len()).max(otherwise.len());
            if largest > max {
                return Err(Problem::too_large(format!(
                    "the transaction has {largest} guards or operations in one part; etcd takes \
                     at most {max} (--etcd-max-txn-ops)"
                ))
                .into());
            }
        }
        let caller = auth.caller();
        let fences = self.0.fences(&caller, fence_header(req)?)?;
        let guards = guards
            .into_iter()
            .enumerate()
            .map(|(index, guard)| {
                self.guard(guard, &caller)
                    .map_err(at(format!("guards[{index}]")))
            })
            .collect::<Result<Vec<Guard>, Box<Problem>>>()?;
        let branch = |ops: Vec<TxnOperation>, name: &str| {
            let ops = ops
                .into_iter()
                .enumerate()
                .map(|(index, op)| self.op(op, &caller).map_err(at(format!("{name}[{index}]"))))
                .collect::<Result<Vec<TxnOp>, Box<Problem>>>()?;
            distinct_writes(&ops, name)?;
            Ok::<_, Box<Problem>>(ops)
        };
        let txn = Txn {
            guards,
            then: branch(then, "then")?,
            otherwise: branch(otherwise, "else")?,
        };
        // Room for the answer before anything runs, as for a batch.
        let items: usize = txn
            .then
            .iter()
            .chain(&txn.otherwise)
            .map(|op| match op {
                TxnOp::List { limit, .. } => limit.saturating_mul(ITEM_OVERHEAD),
                _ => RESULT_OVERHEAD,
            })
            .fold(0, usize::saturating_add);
        let max_answer = self.0.limits.max_batch_answer_bytes;
        let _room = self.0.answer_room(max_answer.saturating_add(items))?;
        let outcome = self
            .0
            .store
            .txn(&txn, &fences)
            .await
            .map_err(|err| Problem::not_stored(&err))?;
        Ok(TxnResponse::Ok(JsonReply(TxnAnswer {
            succeeded: outcome.succeeded,
            revision: outcome.revision,
            results: results(outcome.results, max_answer),
        })))
    }
}
