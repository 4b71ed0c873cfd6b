//! The result of one operation of a batch, in its answer and in the 409
//! problem of a batch that failed.

use poem::http::StatusCode;
use poem_openapi::Object;
use poem_openapi::types::Example;
use serde::Serialize;

use super::text::Text;
use crate::domain::Value;

/// The result of one batch operation, with the status the single-key
/// endpoint would have answered (or 413 for a GET whose value was left out
/// to keep the answer under `--max-batch-answer-bytes`).
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
#[oai(example)]
pub struct OpResult {
    pub status: u16,
    /// GET: the value (absent with status 413: left out of a batch answer
    /// that would have grown too large).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Text>,
    /// The key's revision after the operation (for a delete, the revision of
    /// the delete).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

impl Example for OpResult {
    fn example() -> Self {
        Self {
            status: 200,
            value: Some(Text(Value::from("value1"))),
            revision: Some(7),
        }
    }
}

impl OpResult {
    pub(super) fn status(status: StatusCode) -> Self {
        Self {
            status: status.as_u16(),
            value: None,
            revision: None,
        }
    }

    pub(super) fn revision(status: StatusCode, revision: u64) -> Self {
        Self {
            revision: Some(revision),
            ..Self::status(status)
        }
    }
}
