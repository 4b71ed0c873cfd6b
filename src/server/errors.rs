//! Turning every error the framework makes into problem+json.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};

use crate::api::Problem;

/// `/store/` and the like: a key-taking path with the key left out.
#[poem::handler]
pub fn empty_key() -> Response {
    Problem::invalid_request("the key is empty").into_response()
}

/// The outermost error handler. Errors an operation answered are already
/// problem+json and pass through; the rest (unknown route, wrong method,
/// bad parameters or JSON, wrong Content-Type) become problems here with
/// their original status.
pub async fn problem_response(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    let problem = match status {
        StatusCode::NOT_FOUND => Problem::new(
            status,
            "not-found",
            "Not found",
            "no such endpoint; the API is described at /docs",
        ),
        StatusCode::METHOD_NOT_ALLOWED => Problem::new(
            status,
            "method-not-allowed",
            "Method not allowed",
            "this endpoint does not support the method; see /docs",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
            status,
            "unsupported-media-type",
            "Unsupported media type",
            format!("{err}; send Content-Type: application/json"),
        ),
        StatusCode::BAD_REQUEST => Problem::invalid_request(err.to_string()),
        status if status.is_server_error() => {
            tracing::error!(%status, error = %err, "request failed");
            Problem::internal("the server failed to handle the request")
        }
        status => Problem::new(
            status,
            "http-error",
            status.canonical_reason().unwrap_or("Error"),
            err.to_string(),
        ),
    };
    problem.into_response()
}
