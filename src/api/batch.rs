//! Atomic batches of operations.

use poem::Request;
use poem::http::StatusCode;
use poem_openapi::param::Header;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde::Deserialize;

use super::auth::TokenAuth;
use super::body::{BodyExample, JsonBody, JsonReply};
use super::fence::{FenceHeader, fence_header};
use super::problem::ErrorDoc;
use super::problem::{
    ApiError, BAD_REQUEST, ErrorStatus, ErrorStatuses, FENCE_LOST, FORBIDDEN, INSUFFICIENT_STORAGE,
    LEASE_NOT_FOUND, Problem, REQUEST_TIMEOUT, TOO_LARGE, TOO_MANY_REQUESTS, UNAUTHORIZED,
    UNAVAILABLE, UNSUPPORTED_MEDIA_TYPE,
};
use super::results::OpResult;
use super::text::Text;
use super::{ApiTags, Context};
use crate::backend::Backend;
use crate::domain::{Action, BatchError, Condition, Op, Outcome, Value};

/// What a batch operation does.
#[derive(Enum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "UPPERCASE")]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Put,
    Delete,
    /// Compare-and-swap: `value` replaces `expected`.
    Cas,
}

/// One operation in a batch.
#[derive(Object, Deserialize, Clone, Debug)]
#[oai(example)]
pub struct BatchOp {
    pub method: Method,
    #[oai(validator(min_length = 1))]
    pub key: String,
    /// The value to write (PUT and CAS); absent (or null) means the empty
    /// value, as a PUT with no body.
    #[oai(nullable, skip_serializing_if_is_none)]
    pub value: Option<String>,
    /// Seconds until the key expires (PUT and CAS); without it (or with null)
    /// the key keeps no TTL.
    #[oai(
        validator(minimum(value = "1"), maximum(value = "3153600000")),
        nullable,
        skip_serializing_if_is_none
    )]
    pub ttl: Option<u64>,
    /// The lease (16 hex digits) the key lives on (PUT and CAS), instead of
    /// a `ttl`.
    #[oai(
        validator(pattern = "^[0-9a-fA-F]{1,16}$"),
        nullable,
        skip_serializing_if_is_none
    )]
    pub lease: Option<String>,
    /// CAS: the value the key must hold; `null` or absent means the key must
    /// not exist.
    #[oai(nullable)]
    pub expected: Option<String>,
}

impl Example for BatchOp {
    fn example() -> Self {
        Self {
            method: Method::Cas,
            key: "key1".to_owned(),
            value: Some("new_value".to_owned()),
            ttl: None,
            lease: None,
            expected: Some("old_value".to_owned()),
        }
    }
}

impl BodyExample for Vec<BatchOp> {
    fn body_example() -> Option<serde_json::Value> {
        Some(serde_json::json!([
            {"method": "PUT", "key": "balance:alice", "value": "90"},
            {"method": "CAS", "key": "balance:bob", "expected": "10", "value": "20"},
            {"method": "GET", "key": "balance:carol"}
        ]))
    }
}

pub const CONFLICT: ErrorDoc = ErrorDoc {
    status: 409,
    description: "A CAS operation failed, so no operation was applied; `results` holds the per-operation statuses.",
    example: (
        "batch-failed",
        "Batch failed",
        "a CAS operation failed; no operation was applied",
    ),
};

pub struct BatchErrors;
impl ErrorStatuses for BatchErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        LEASE_NOT_FOUND,
        FENCE_LOST,
        CONFLICT,
        REQUEST_TIMEOUT,
        TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
        INSUFFICIENT_STORAGE,
    ];
}

#[derive(ApiResponse)]
pub enum BatchResponse {
    /// Every operation applied, in order, as one atomic commit.
    #[oai(status = 200)]
    Ok(JsonReply<Vec<OpResult>>),
}

pub struct BatchApi<B>(pub Context<B>);

impl<B: Backend> BatchApi<B> {
    fn to_op(&self, index: usize, op: BatchOp) -> Result<Op, Box<Problem>> {
        let at = |problem: Box<Problem>| {
            Box::new(Problem {
                detail: format!("operation {index}: {}", problem.detail),
                ..*problem
            })
        };
        let key = self.0.key(&op.key).map_err(at)?;
        // Checked whatever the method: the spec bounds the field for all
        // (a GET ignores it, but a bad one is still a bad request).
        let lifetime = self.0.lifetime(op.ttl, op.lease.as_deref()).map_err(at)?;
        let (action, condition) = match op.method {
            Method::Get => (Action::Get, Condition::Always),
            Method::Delete => (Action::Delete, Condition::Always),
            Method::Put | Method::Cas => {
                let value = op.value.unwrap_or_default();
                self.0.check_value(&value).map_err(at)?;
                let action = Action::Put {
                    value: Value::from(value),
                    lifetime,
                };
                let condition = match op.method {
                    Method::Cas => Condition::Value(op.expected.map(Value::from)),
                    _ => Condition::Always,
                };
                (action, condition)
            }
        };
        Ok(Op {
            key,
            action,
            condition,
        })
    }
}

fn result(method: Method, outcome: Outcome) -> OpResult {
    match outcome {
        Outcome::Found(current) => {
            let revision = current.revision();
            OpResult {
                value: Some(Text(current.value)),
                ..OpResult::revision(StatusCode::OK, revision)
            }
        }
        Outcome::NotFound => OpResult::status(StatusCode::NOT_FOUND),
        Outcome::Created { revision } if method == Method::Put => {
            OpResult::revision(StatusCode::CREATED, revision)
        }
        Outcome::Created { revision }
        | Outcome::Replaced { revision }
        | Outcome::Deleted { revision } => OpResult::revision(StatusCode::NO_CONTENT, revision),
        // CAS on an absent key that expected a value: 404, as on /store/cas.
        Outcome::Rejected { current: None } if method == Method::Cas => {
            OpResult::status(StatusCode::NOT_FOUND)
        }
        Outcome::Rejected { .. } => OpResult::status(StatusCode::PRECONDITION_FAILED),
    }
}

/// What one result takes in a batch answer besides its value, at most.
pub(super) const RESULT_OVERHEAD: usize = 64;

/// The results of a batch that applied, each value read only while the
/// values so far stay within `max` bytes: past it a GET's result says 413
/// without its value (the first value always stays, however large, as a
/// listing page always holds one key).
fn capped_results(methods: Vec<Method>, outcomes: Vec<Outcome>, max: usize) -> Vec<OpResult> {
    let mut carried = 0usize;
    methods
        .into_iter()
        .zip(outcomes)
        .map(|(method, outcome)| match outcome {
            Outcome::Found(current) => {
                let len = current.value.as_str().len();
                if carried > 0 && carried.saturating_add(len) > max {
                    OpResult::revision(StatusCode::PAYLOAD_TOO_LARGE, current.revision())
                } else {
                    carried = carried.saturating_add(len);
                    result(method, Outcome::Found(current))
                }
            }
            outcome => result(method, outcome),
        })
        .collect()
}

#[OpenApi(tag = "ApiTags::Batch")]
impl<B: Backend> BatchApi<B> {
    /// Run a batch
    ///
    /// Applies the operations as one atomic, isolated commit (an etcd
    /// transaction): each key at most once per batch; every CAS compares
    /// with the store before the batch; all its writes take one revision,
    /// and no other request sees part of it. Its watch events share that
    /// revision, with ids `R.0`, `R.1`, ... in operation order. Answers one
    /// result per operation, with the status the single-key endpoint would
    /// give; a GET whose value would take the answer past
    /// `--max-batch-answer-bytes` of values answers 413 without its value
    /// (read the key on its own). If any CAS fails, nothing is applied
    /// and the answer is 409 with the per-operation results (412 or 404 for
    /// the failed CAS, 424 for the others).
    #[oai(path = "/batch", method = "post", operation_id = "batch")]
    async fn batch(
        &self,
        /// `NAME=TOKEN`: apply only if lock `NAME` is held with that token.
        #[oai(name = "If-Fence")]
        _if_fence: Header<Option<FenceHeader>>,
        req: &Request,
        ops: JsonBody<Vec<BatchOp>>,
        auth: TokenAuth,
    ) -> Result<BatchResponse, ApiError<BatchErrors>> {
        let max = self.0.limits.max_batch_ops;
        if ops.len() > max {
            return Err(Problem::too_large(format!(
                "the batch has {} operations; the limit is {max}",
                ops.len()
            ))
            .into());
        }
        if let Some(max) = self.0.store.max_batch_ops()
            && ops.len() > max
        {
            return Err(Problem::too_large(format!(
                "the batch has {} operations; etcd takes at most {max} in one transaction \
                 (--etcd-max-txn-ops)",
                ops.len()
            ))
            .into());
        }
        let mut seen = std::collections::HashSet::with_capacity(ops.len());
        if let Some((index, op)) = ops.iter().enumerate().find(|(_, op)| !seen.insert(&op.key)) {
            return Err(Problem::invalid_request(format!(
                "operation {index}: key {:?} is already in the batch; a batch names each key \
                 once",
                op.key
            ))
            .into());
        }
        // Every op is checked before any is applied.
        let caller = auth.caller();
        let fences = self.0.fences(&caller, fence_header(req)?)?;
        for op in ops.iter() {
            match op.method {
                Method::Get => caller.may_read_key(&op.key)?,
                Method::Put | Method::Delete | Method::Cas => caller.may_write_key(&op.key)?,
            }
        }
        // Room for the answer before anything runs: the values it may
        // carry, and a result per op.
        let _room = self
            .0
            .answer_room(self.0.limits.max_batch_answer_bytes + ops.len() * RESULT_OVERHEAD)?;
        let methods: Vec<Method> = ops.iter().map(|op| op.method).collect();
        let ops = ops
            .0
            .into_iter()
            .enumerate()
            .map(|(index, op)| self.to_op(index, op))
            .collect::<Result<Vec<Op>, Box<Problem>>>()?;
        match self.0.store.batch(&ops, &fences).await {
            Ok(outcomes) => {
                let max = self.0.limits.max_batch_answer_bytes;
                let results = capped_results(methods, outcomes, max);
                Ok(BatchResponse::Ok(JsonReply(results)))
            }
            Err(BatchError::Storage(err)) => Err(Problem::not_stored(&err).into()),
            Err(BatchError::Rejected(outcomes)) => {
                let results = methods
                    .into_iter()
                    .zip(outcomes)
                    .map(|(method, outcome)| match outcome {
                        Outcome::Rejected { .. } => result(method, outcome),
                        _ => OpResult::status(StatusCode::FAILED_DEPENDENCY),
                    })
                    .collect();
                Err(Problem {
                    results: Some(results),
                    ..Problem::new(
                        ErrorStatus::CONFLICT,
                        "batch-failed",
                        "Batch failed",
                        "a CAS operation failed; no operation was applied",
                    )
                }
                .into())
            }
        }
    }
}
