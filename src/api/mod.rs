//! The API layer: poem-openapi operations that map HTTP onto store calls.
//!
//! The OpenAPI spec, Swagger UI and generated clients all come from the
//! declarations here. Each operation checks its input, calls the store once
//! and maps the outcome to a response; errors are [`Problem`]s.

mod auth;
mod backup;
mod batch;
mod body;
mod conditional;
mod cursor;
mod detached;
mod elections;
mod fast_path;
mod fence;
mod keys;
mod leases;
mod list;
mod locks;
mod plain;
mod problem;
mod results;
pub mod routes;
mod sse;
mod status;
mod text;
mod txn;
mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use poem_openapi::{OpenApiService, Tags};
use tokio_util::sync::CancellationToken;

pub use body::SentBody;
pub use fast_path::{Answered, FastPath, HeaderFields, Hot, RequestHead, text as header_text};
pub use list::{EMPTY_PREFIX, bad_limit};
pub use plain::Plain;
pub use problem::{ErrorStatus, Problem, shown};
pub use watch::ConnectionCloser;

use backup::BackupApi;
use batch::BatchApi;
use detached::Detached;
use elections::ElectionsApi;
use keys::KeysApi;
use leases::LeasesApi;
use list::ListApi;
use locks::LocksApi;
use status::StatusApi;
use txn::TxnApi;
use watch::{WatchApi, WatchEvent};

use crate::auth::Caller;
use crate::backend::{Backend, Counted};
use crate::domain::{BatchError, Fence, Key, LeaseId, Lifetime, Op, Outcome, Stats, StorageError};
use crate::metrics::{AnswerRoom, ConnectionCounters, Metrics};

#[derive(Tags)]
enum ApiTags {
    /// Read and write single keys.
    Keys,
    /// Follow changes to keys as Server-Sent Events.
    Watch,
    /// Several operations as one atomic commit: a batch, or a transaction
    /// with guards.
    Batch,
    /// TTLs that many keys share.
    Leases,
    /// Locks with fencing tokens the server enforces, and leader election.
    Coordination,
    /// Status and health of the server.
    Service,
}

/// The longest TTL, in seconds (100 years). The `maximum` validators on the
/// `ttl` fields repeat it, as attributes take only literals.
const MAX_TTL_SECONDS: u64 = 3_153_600_000;

/// What is wrong with a `ttl`, in the same words wherever it was given
/// (query or JSON body).
pub fn bad_ttl(given: impl std::fmt::Display) -> String {
    format!("ttl {given} is not a whole number of seconds from 1 to {MAX_TTL_SECONDS}")
}

/// What is wrong with a lease id a parameter gave (`name`), in the same
/// words as [`lease_number`]'s.
pub fn bad_lease_id(name: &str) -> String {
    format!("{name} is not a lease id: 1 to 16 hex digits")
}

/// A lease id as a request writes it: 1 to 16 hex digits (what the spec's
/// pattern says); its number, or 400.
fn lease_number(given: &str) -> Result<u64, Box<Problem>> {
    let hex =
        !given.is_empty() && given.len() <= 16 && given.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| u64::from_str_radix(given, 16).ok())
        .flatten()
        .ok_or_else(|| {
            Problem::invalid_request(format!("lease {:?}: {}", shown(given), bad_lease_id("it")))
                .into()
        })
}

/// The lease a request names: 400 if it is no id at all, 404 if it is a
/// number no lease can have (0, or past 7fffffffffffffff).
fn lease_id(given: &str) -> Result<LeaseId, Box<Problem>> {
    let number = lease_number(given)?;
    LeaseId::new(number).ok_or_else(|| {
        Problem::lease_missing(format!(
            "no lease has id {}: ids run from 1 to 7fffffffffffffff",
            shown(given)
        ))
        .into()
    })
}

/// What is wrong with a `since` revision given in the query.
pub fn bad_since(given: impl std::fmt::Display) -> String {
    format!("since {given} is not a revision (a whole number from 0)")
}

/// Request limits the API enforces.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_batch_ops: usize,
    /// Most guards and operations, together, in one transaction.
    pub max_txn_ops: usize,
    pub max_watch_keys: usize,
    /// Bytes of keys and values one listing page may hold.
    pub max_page_bytes: usize,
    /// Bytes of values one batch answer may carry.
    pub max_batch_answer_bytes: usize,
    /// Bytes all answers not yet taken by their clients may hold.
    pub answer_memory: usize,
    /// Longest a lock or a campaign waits in line.
    pub max_lock_wait: Duration,
}

/// What every operation needs: the store, the limits, the metrics and the
/// shutdown signal that ends watch streams.
pub struct Context<B> {
    /// The backend, every call counted.
    pub store: Counted<B>,
    pub metrics: Arc<Metrics>,
    /// The connections' counters, with the bytes of answers not yet taken
    /// by their clients (`--answer-memory`).
    pub connections: Arc<ConnectionCounters>,
    pub limits: Limits,
    pub shutdown: CancellationToken,
}

/// Not derived: that would ask `B: Clone` of the type, not of the value.
impl<B: Backend> Clone for Context<B> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            connections: self.connections.clone(),
            limits: self.limits.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<B> Context<B> {
    /// Reserves room for an answer of up to `bytes` in `--answer-memory`
    /// until the returned guard is dropped (once the answer is built and
    /// the server layer charges what it really holds); refuses 503, before
    /// any work, when the room is not there. A batch is refused so before
    /// it runs: its answer reports writes, and is never thrown away after.
    fn answer_room(&self, bytes: usize) -> Result<AnswerRoom, Box<Problem>> {
        self.connections
            .reserve_answer(bytes, self.limits.answer_memory)
            .ok_or_else(|| Box::new(Problem::answers_full(bytes)))
    }

    /// Checks a key from a request against the limits, and makes it a [`Key`].
    fn key(&self, key: &str) -> Result<Key, Box<Problem>> {
        self.check_key(key)?;
        Ok(Key::from(key))
    }

    /// Checks a key from a request against the limits.
    fn check_key(&self, key: &str) -> Result<(), Box<Problem>> {
        if key.is_empty() {
            return Err(Problem::invalid_request("the key is empty").into());
        }
        let max = self.limits.max_key_bytes;
        if key.len() > max {
            return Err(Problem::invalid_request(format!(
                "the key is {} bytes; the limit is {max}",
                key.len()
            ))
            .into());
        }
        Ok(())
    }

    /// The fences a write's `If-Fence` header sets (none without one): the
    /// lock's name is checked as a key is, and the caller must be allowed
    /// to read the lock (a fence tells whether it is held).
    fn fences(&self, caller: &Caller, header: Option<&str>) -> Result<Vec<Fence>, Box<Problem>> {
        let Some(header) = header.filter(|header| !header.trim().is_empty()) else {
            return Ok(Vec::new());
        };
        let fence = fence::parse_fence(header)?;
        self.check_key(&fence.name)?;
        caller.may_read_prefix(&fence.prefix())?;
        Ok(vec![fence])
    }

    /// Checks a prefix from a request: like a key, but it may be empty.
    fn check_prefix(&self, prefix: &str) -> Result<(), Box<Problem>> {
        let max = self.limits.max_key_bytes;
        if prefix.len() > max {
            return Err(Problem::invalid_request(format!(
                "the prefix is {} bytes; the longest key is {max}",
                prefix.len()
            ))
            .into());
        }
        Ok(())
    }

    /// Checks a TTL from a JSON body: whole seconds from 1 to
    /// [`MAX_TTL_SECONDS`] (what the spec's `minimum` and `maximum` say).
    fn ttl(&self, ttl: Option<u64>) -> Result<Option<Duration>, Box<Problem>> {
        match ttl {
            Some(seconds) if !(1..=MAX_TTL_SECONDS).contains(&seconds) => {
                Err(Problem::invalid_request(bad_ttl(seconds)).into())
            }
            ttl => Ok(ttl.map(Duration::from_secs)),
        }
    }

    /// A write's lifetime from its `ttl` and `lease` (at most one).
    fn lifetime(&self, ttl: Option<u64>, lease: Option<&str>) -> Result<Lifetime, Box<Problem>> {
        let ttl = self.ttl(ttl)?;
        match (ttl, lease) {
            (Some(_), Some(_)) => Err(Problem::invalid_request(
                "give `ttl` or `lease`, not both: a key on a lease lives as long as the lease",
            )
            .into()),
            (ttl, None) => Ok(Lifetime::from_ttl(ttl)),
            (None, Some(lease)) => Ok(Lifetime::Lease(lease_id(lease)?)),
        }
    }

    /// Checks a value from a JSON body against the limits.
    fn check_value(&self, value: &str) -> Result<(), Box<Problem>> {
        let max = self.limits.max_value_bytes;
        if value.len() > max {
            return Err(Problem::too_large(format!(
                "the value is {} bytes; the limit is {max}",
                value.len()
            ))
            .into());
        }
        Ok(())
    }
}

impl<B: Backend> Context<B> {
    /// One operation as one commit, if its `fences` hold.
    async fn write_one(&self, op: Op, fences: &[Fence]) -> Result<Outcome, StorageError> {
        if fences.is_empty() {
            return self.store.apply(op).await;
        }
        match self.store.batch(std::slice::from_ref(&op), fences).await {
            Ok(mut outcomes) | Err(BatchError::Rejected(mut outcomes)) => {
                Ok(outcomes.pop().unwrap_or(Outcome::NotFound))
            }
            Err(BatchError::Storage(err)) => Err(err),
        }
    }
}

/// The API's operations over a backend `B`, as one poem-openapi type.
pub type Api<B> = (
    KeysApi<B>,
    ListApi<B>,
    WatchApi<B>,
    BatchApi<B>,
    TxnApi<B>,
    LeasesApi<B>,
    LocksApi<B>,
    ElectionsApi<B>,
    BackupApi<B>,
    StatusApi<B>,
);

const DESCRIPTION: &str = "A concurrent key-value store. Values are UTF-8 text; every write \
takes the next store-wide revision, which is the key's `ETag`. Errors are RFC 9457 problem \
details (`application/problem+json`). Watch streams are Server-Sent Events that resume after \
a disconnect without losing an event.";

/// Builds the OpenAPI service over `context`.
pub fn service<B: Backend>(context: Context<B>) -> OpenApiService<Api<B>, ()> {
    let api = (
        KeysApi(context.clone()),
        ListApi(context.clone()),
        WatchApi(context.clone()),
        BatchApi(context.clone()),
        TxnApi(context.clone()),
        LeasesApi(context.clone()),
        LocksApi(context.clone()),
        ElectionsApi(context.clone()),
        BackupApi(context.clone()),
        StatusApi {
            context,
            started: Instant::now(),
        },
    );
    OpenApiService::new(api, "kv-store", env!("CARGO_PKG_VERSION"))
        .description(DESCRIPTION)
        // Relative: Swagger UI then calls whichever address served it.
        .server(poem_openapi::ServerObject::new("/").description("this server"))
        .license(
            poem_openapi::LicenseObject::new("AGPL-3.0-only")
                .url("https://www.gnu.org/licenses/agpl-3.0.html"),
        )
}

/// The service over no backend at all: the spec depends only on the code.
fn detached() -> OpenApiService<Api<Detached>, ()> {
    service(Context {
        metrics: Arc::new(Metrics::new(Stats::default, Arc::default(), &[])),
        connections: Arc::default(),
        store: Counted::new(Detached),
        limits: Limits {
            max_key_bytes: 0,
            max_value_bytes: 0,
            max_batch_ops: 0,
            max_txn_ops: 0,
            max_watch_keys: 0,
            max_page_bytes: 0,
            max_batch_answer_bytes: 0,
            answer_memory: 0,
            max_lock_wait: Duration::ZERO,
        },
        shutdown: CancellationToken::new(),
    })
}

/// The OpenAPI spec as JSON, as `/openapi.json` serves it.
pub fn spec_json() -> String {
    detached().spec()
}

/// The OpenAPI spec as YAML, as `/openapi.yaml` serves it.
pub fn spec_yaml() -> String {
    detached().spec_yaml()
}

/// The JSON Schema of a watch event's `data`.
pub fn watch_event_schema() -> String {
    let schema = schemars::schema_for!(WatchEvent);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
