//! Recording every request in the metrics and the access log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http_body_util::combinators::BoxBody;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use poem_openapi::OperationId;

use super::access_log::{AccessLog, Line};
use crate::auth::Caller;
use crate::metrics::Metrics;

/// Counts each request by operation and status and times it, and writes
/// its access-log line (unless `--access-log false`). Requests that reach
/// no API operation (unknown routes, the docs, rate-limited ones) are
/// counted as operation `other`.
pub struct RecordMetrics {
    pub recorder: Recorder,
}

/// Where a request's figures go: the metrics and the access log. The
/// middleware and the server's hot lane both record through it.
#[derive(Clone)]
pub struct Recorder {
    pub metrics: Arc<Metrics>,
    pub access_log: Option<AccessLog>,
}

/// One request, as it is recorded.
pub struct Record<'a> {
    pub client: Option<SocketAddr>,
    pub caller: Option<&'a Caller>,
    pub operation: &'static str,
    pub status: u16,
    /// The answer's body size, when known before it is sent.
    pub bytes: Option<u64>,
    pub took: Duration,
}

impl Recorder {
    pub fn record(&self, record: &Record<'_>) {
        self.metrics
            .observe(record.operation, record.status, record.took.as_secs_f64());
        if let Some(log) = &self.access_log {
            let token = match record.caller {
                Some(Caller::Token(token)) => Some(&*token.name),
                _ => None,
            };
            log.record(&Line {
                client: record.client,
                token,
                operation: record.operation,
                status: record.status,
                bytes: record.bytes,
                micros: u64::try_from(record.took.as_micros()).unwrap_or(u64::MAX),
            });
        }
    }

    /// Whether the answer's size goes in the access log.
    pub fn logs(&self) -> bool {
        self.access_log.is_some()
    }
}

impl<E: Endpoint> Middleware<E> for RecordMetrics {
    type Output = Recorded<E>;

    fn transform(&self, inner: E) -> Self::Output {
        Recorded {
            inner,
            recorder: self.recorder.clone(),
        }
    }
}

/// An endpoint behind [`RecordMetrics`].
pub struct Recorded<E> {
    inner: E,
    recorder: Recorder,
}

impl<E: Endpoint> Endpoint for Recorded<E> {
    type Output = Response;

    // Neither an `async fn` nor an `async` block: either would keep a copy
    // of the request or of the inner future (see `server::app`).
    fn call(&self, req: Request) -> impl Future<Output = poem::Result<Response>> + Send {
        let started = Instant::now();
        let client = req.remote_addr().as_socket_addr().copied();
        self.inner.call(req).map(move |result| {
            let mut result = result.map(IntoResponse::into_response);
            let bytes = match &mut result {
                Ok(response) if self.recorder.logs() => body_size(response),
                _ => None,
            };
            let (status, operation, caller) = match &result {
                Ok(response) => (
                    response.status(),
                    response.data::<OperationId>(),
                    response.data::<Caller>(),
                ),
                Err(err) => (
                    err.status(),
                    err.data::<OperationId>(),
                    err.data::<Caller>(),
                ),
            };
            self.recorder.record(&Record {
                client,
                caller,
                operation: operation.map_or("other", |operation| operation.0),
                status: status.as_u16(),
                bytes,
                took: started.elapsed(),
            });
            result
        })
    }
}

/// The answer's body size, when it is known before it is sent (not a
/// stream's). poem keeps the body to itself: taken out and put back.
pub fn body_size(response: &mut Response) -> Option<u64> {
    let body = BoxBody::from(response.take_body());
    let size = http_body::Body::size_hint(&body).exact();
    response.set_body(poem::Body::from(body));
    size
}
