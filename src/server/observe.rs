//! Recording every request in the metrics.

use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use poem_openapi::OperationId;

use crate::metrics::Metrics;

/// Counts each request by operation and status and times it. Requests that
/// reach no API operation (unknown routes, the docs, rate-limited ones) are
/// counted as operation `other`.
pub struct RecordMetrics(pub Arc<Metrics>);

impl<E: Endpoint> Middleware<E> for RecordMetrics {
    type Output = Recorded<E>;

    fn transform(&self, inner: E) -> Self::Output {
        Recorded {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// An endpoint behind [`RecordMetrics`].
pub struct Recorded<E> {
    inner: E,
    metrics: Arc<Metrics>,
}

impl<E: Endpoint> Endpoint for Recorded<E> {
    type Output = Response;

    // Neither an `async fn` nor an `async` block: either would keep a copy
    // of the request or of the inner future (see `server::app`).
    fn call(&self, req: Request) -> impl Future<Output = poem::Result<Response>> + Send {
        let started = Instant::now();
        self.inner.call(req).map(move |result| {
            let result = result.map(IntoResponse::into_response);
            let (status, operation) = match &result {
                Ok(response) => (response.status(), response.data::<OperationId>()),
                Err(err) => (err.status(), err.data::<OperationId>()),
            };
            self.metrics.observe(
                operation.map_or("other", |operation| operation.0),
                status.as_u16(),
                started.elapsed().as_secs_f64(),
            );
            result
        })
    }
}
