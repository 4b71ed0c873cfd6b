//! The HTTP application: the API's routes, the docs, and the middleware
//! every request passes, outermost last.

use poem::{Endpoint, EndpointExt, Route};

use super::admission::Admission;
use super::body_limit::BodyLimit;
use super::errors::{self, Problems};
use super::observe::{RecordMetrics, Recorder};
use crate::api::{self, Context};
use crate::backend::Backend;

/// Builds the HTTP application over `context`: every request but those
/// the connection's [hot lane](super::hot_lane) serves.
///
/// An `async fn` layer keeps a copy of its `Request` (472 bytes) beside
/// the inner future that took it, and an `async` block that awaits a
/// future it captured keeps that future twice; so the layers map their
/// inner future instead (the connection boxes the whole).
pub fn app<B: Backend>(
    context: Context<B>,
    admission: Admission,
    body_limit: BodyLimit,
    recorder: Recorder,
) -> impl Endpoint<Output = poem::Response> + 'static {
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
    app.with(admission)
        .with(body_limit)
        .with(RecordMetrics { recorder })
        .with(Problems)
}
