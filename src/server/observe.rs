//! Recording every request in the metrics and the access log.

use std::sync::Arc;
use std::time::Instant;

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
    pub metrics: Arc<Metrics>,
    pub access_log: Option<AccessLog>,
}

impl<E: Endpoint> Middleware<E> for RecordMetrics {
    type Output = Recorded<E>;

    fn transform(&self, inner: E) -> Self::Output {
        Recorded {
            inner,
            metrics: self.metrics.clone(),
            access_log: self.access_log.clone(),
        }
    }
}

/// An endpoint behind [`RecordMetrics`].
pub struct Recorded<E> {
    inner: E,
    metrics: Arc<Metrics>,
    access_log: Option<AccessLog>,
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
            let (status, operation) = match &result {
                Ok(response) => (response.status(), response.data::<OperationId>()),
                Err(err) => (err.status(), err.data::<OperationId>()),
            };
            let operation = operation.map_or("other", |operation| operation.0);
            let took = started.elapsed();
            self.metrics
                .observe(operation, status.as_u16(), took.as_secs_f64());
            if let Some(log) = &self.access_log {
                let bytes = result.as_mut().ok().and_then(body_size);
                let caller = match &result {
                    Ok(response) => response.data::<Caller>(),
                    Err(err) => err.data::<Caller>(),
                };
                let token = match caller {
                    Some(Caller::Token(token)) => Some(&*token.name),
                    _ => None,
                };
                log.record(&Line {
                    client,
                    token,
                    operation,
                    status: status.as_u16(),
                    bytes,
                    micros: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                });
            }
            result
        })
    }
}

/// The answer's body size, when it is known before it is sent (not a
/// stream's). poem keeps the body to itself: taken out and put back.
fn body_size(response: &mut Response) -> Option<u64> {
    let body = BoxBody::from(response.take_body());
    let size = http_body::Body::size_hint(&body).exact();
    response.set_body(poem::Body::from(body));
    size
}
