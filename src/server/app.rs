//! The HTTP application: the API's routes, the docs, and the middleware
//! every request passes, outermost last.

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, Route};

use super::access_log::AccessLog;
use super::admission::Admission;
use super::body_limit::BodyLimit;
use super::errors::{self, Problems};
use super::observe::RecordMetrics;
use crate::api::{self, Context, FastPath, Gate};
use crate::backend::Backend;

/// Builds the whole HTTP application over `context`.
///
/// A request's future is moved whole into its box, so its size is paid on
/// every request. An `async fn` layer keeps a copy of its `Request` (472
/// bytes) beside the inner future that took it, and an `async` block that
/// awaits a future it captured keeps that future twice; so the layers on
/// the way to the fast path map their inner future instead, and the full
/// API's future is boxed (`FastPath::long_way`): 8.5 KB per request
/// before, 1.3 KB after.
pub fn app<B: Backend>(
    context: Context<B>,
    admission: Admission,
    body_limit: BodyLimit,
    access_log: Option<AccessLog>,
) -> impl Endpoint<Output = poem::Response> + 'static {
    let metrics = context.metrics.clone();
    let keys = context.clone();
    let api = api::service(context);
    let docs = api.swagger_ui();
    let spec_json = api.spec_endpoint();
    let spec_yaml = api.spec_endpoint_yaml();
    let app = Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .at("/openapi.json", spec_json)
        .at("/openapi.yaml", spec_yaml)
        .at("/store/", errors::empty_key)
        .at("/store/cas/", errors::empty_key)
        .at("/watch_key/", errors::empty_key);
    let rule = admission.clone();
    let gate: Gate = Arc::new(move |req, rules| rule.admit(req, rules));
    FastPath::new(app.with(admission), keys, gate)
        .with(body_limit)
        .with(RecordMetrics {
            metrics,
            access_log,
        })
        .with(Problems)
}
