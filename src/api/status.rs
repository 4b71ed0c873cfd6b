//! Service endpoints: status and health.

use std::time::{Instant, SystemTime};

use poem::{IntoResponse, Response};
use poem_openapi::payload::{Payload, PlainText};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Serialize;

use super::auth::TokenAuth;
use super::body::JsonReply;
use super::problem::ErrorDoc;
use super::problem::{
    ApiError, ErrorStatus, ErrorStatuses, FORBIDDEN, Problem, TOO_MANY_REQUESTS, UNAUTHORIZED,
    UNAVAILABLE,
};
use super::{ApiTags, Context};
use crate::backend::Backend;
use crate::domain::Readiness;

/// The server's state and counters.
#[derive(Object, Serialize, Debug, Clone)]
#[oai(example)]
pub struct Status {
    /// Always "OK" when the server answers.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// Where the keys live: `memory` (this process) or `etcd`.
    pub backend: String,
    /// Seconds since the server started.
    pub uptime: u64,
    /// The server's clock, RFC 3339.
    pub server_time: String,
    /// Keys held (expired keys not yet swept included).
    pub total_keys: u64,
    /// GET, PUT, DELETE and CAS operations, batch operations included.
    pub total_operations: u64,
    pub get_operations: u64,
    pub put_operations: u64,
    pub delete_operations: u64,
    pub cas_operations: u64,
    pub successful_cas_operations: u64,
    pub failed_cas_operations: u64,
    /// Watch streams open now.
    pub watch_requests_count: u64,
    /// Batches run.
    pub batch_requests_count: u64,
    /// The store's current revision.
    pub revision: u64,
    /// The oldest revision a watch can still resume after (minus one).
    pub oldest_revision: u64,
    /// Keys removed because their TTL ran out.
    pub expired_keys: u64,
    /// Watch streams ended because the client read too slowly.
    pub dropped_watchers: u64,
}

impl Example for Status {
    fn example() -> Self {
        Self {
            status: "OK".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            backend: "memory".to_owned(),
            uptime: 3600,
            server_time: "2026-11-24T06:00:00Z".to_owned(),
            total_keys: 2,
            total_operations: 12,
            get_operations: 6,
            put_operations: 3,
            delete_operations: 1,
            cas_operations: 2,
            successful_cas_operations: 1,
            failed_cas_operations: 1,
            watch_requests_count: 1,
            batch_requests_count: 1,
            revision: 5,
            oldest_revision: 0,
            expired_keys: 0,
            dropped_watchers: 0,
        }
    }
}

pub struct MetricsErrors;
impl ErrorStatuses for MetricsErrors {
    const STATUSES: &'static [ErrorDoc] = &[UNAUTHORIZED, FORBIDDEN, METRICS_FAILED];
}

const METRICS_FAILED: ErrorDoc = ErrorDoc {
    status: 500,
    description: "The metrics could not be encoded.",
    example: (
        "internal",
        "Internal server error",
        "cannot encode the metrics: formatter error",
    ),
};

pub struct StatusErrors;
impl ErrorStatuses for StatusErrors {
    const STATUSES: &'static [ErrorDoc] =
        &[UNAUTHORIZED, FORBIDDEN, TOO_MANY_REQUESTS, UNAVAILABLE];
}

#[derive(ApiResponse)]
pub enum StatusResponse {
    /// The server's state.
    #[oai(status = 200)]
    Ok(JsonReply<Status>),
}

#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// The metrics, in the Prometheus / OpenMetrics text format.
    #[oai(status = 200)]
    Ok(MetricsText),
}

/// Metrics text, as Prometheus scrapes it.
pub struct MetricsText(String);

impl Payload for MetricsText {
    const CONTENT_TYPE: &'static str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")))
    }
}

impl IntoResponse for MetricsText {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(self.0)
    }
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    /// The server is up.
    #[oai(status = 200)]
    Ok(PlainText<&'static str>),
}

pub struct ReadyErrors;
impl ErrorStatuses for ReadyErrors {
    const STATUSES: &'static [ErrorDoc] = &[ErrorDoc {
        status: 503,
        description: "The node cannot serve requests now (it is stopping, or etcd cannot be \
                      reached); `detail` says why.",
        example: ("not-ready", "Not ready", "the server is shutting down"),
    }];
}

pub struct StatusApi<B> {
    pub context: Context<B>,
    pub started: Instant,
}

#[OpenApi(tag = "ApiTags::Service")]
impl<B: Backend> StatusApi<B> {
    /// Server status
    ///
    /// Counters since start, the store's revision and the oldest revision a
    /// watch can resume after.
    #[oai(path = "/status", method = "get", operation_id = "status")]
    async fn status(&self, auth: TokenAuth) -> Result<StatusResponse, ApiError<StatusErrors>> {
        auth.caller().may_administer()?;
        let store = &self.context.store;
        let stats = store
            .stats()
            .await
            .map_err(|err| Problem::not_stored(&err))?;
        Ok(StatusResponse::Ok(JsonReply(Status {
            status: "OK".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            backend: store.name().to_owned(),
            uptime: self.started.elapsed().as_secs(),
            server_time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            total_keys: stats.keys,
            total_operations: stats.gets + stats.puts + stats.deletes + stats.cas,
            get_operations: stats.gets,
            put_operations: stats.puts,
            delete_operations: stats.deletes,
            cas_operations: stats.cas,
            successful_cas_operations: stats.cas_succeeded,
            failed_cas_operations: stats.cas_failed,
            watch_requests_count: stats.open_watches,
            batch_requests_count: stats.batches,
            revision: stats.revision,
            oldest_revision: stats.oldest_revision,
            expired_keys: stats.expired,
            dropped_watchers: stats.lagging_watchers,
        })))
    }

    /// Prometheus metrics
    ///
    /// Request counts and latency histograms by operation and status, keys,
    /// revision, open watch streams, dropped slow watchers and expirations.
    /// Exempt from rate limiting.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, auth: TokenAuth) -> Result<MetricsResponse, ApiError<MetricsErrors>> {
        auth.caller().may_administer()?;
        let text = self
            .context
            .metrics
            .encode()
            .map_err(|err| Problem::internal(format!("cannot encode the metrics: {err}")))?;
        Ok(MetricsResponse::Ok(MetricsText(text)))
    }

    /// Liveness
    ///
    /// 200 while the server runs. Exempt from rate limiting.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> HealthResponse {
        HealthResponse::Ok(PlainText("OK"))
    }

    /// Readiness
    ///
    /// 200 when this node can serve requests: with `--backend etcd`, etcd
    /// answered within `--etcd-timeout` and this node's watch on it is
    /// running. 503 otherwise (and while the server stops). Exempt from
    /// rate limiting.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> Result<HealthResponse, ApiError<ReadyErrors>> {
        match self.context.store.readiness().await {
            Readiness::Ready => Ok(HealthResponse::Ok(PlainText("OK"))),
            Readiness::NotReady(why) => Err(Problem::new(
                ErrorStatus::SERVICE_UNAVAILABLE,
                "not-ready",
                "Not ready",
                why,
            )
            .into()),
        }
    }
}
