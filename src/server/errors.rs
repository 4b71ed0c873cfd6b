//! Turning every error the framework makes into problem+json.

use futures_util::FutureExt;
use futures_util::future::Either;
use poem::http::{HeaderValue, Method, StatusCode, Uri, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use poem_openapi::error::ContentTypeError;

use crate::api::{self, ErrorStatus, Problem, routes};

/// `/store/` and the like: a key-taking path with the key left out.
#[poem::handler]
pub fn empty_key() -> Response {
    Problem::invalid_request("the key is empty").into_response()
}

/// The outermost middleware: errors an operation answered are already
/// problem+json and pass through; the rest (unknown route, wrong method, bad
/// parameters or JSON, wrong Content-Type) become problems here with their
/// original status.
pub struct Problems;

impl<E: Endpoint> Middleware<E> for Problems {
    type Output = ProblemsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        ProblemsEndpoint { inner }
    }
}

/// An endpoint behind [`Problems`].
pub struct ProblemsEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for ProblemsEndpoint<E> {
    type Output = Response;

    // Neither an `async fn` nor an `async` block: either would keep a copy
    // of the request or of the inner future (see `server::app`).
    fn call(&self, req: Request) -> impl Future<Output = poem::Result<Response>> + Send {
        if let Err(problem) = check_path(req.uri().path()).and_then(|()| check_conditions(&req)) {
            return Either::Left(std::future::ready(Ok(problem.into_response())));
        }
        // A `Uri` clone shares its bytes; the path is only read on error.
        let uri = req.uri().clone();
        let method = req.method().clone();
        Either::Right(self.inner.call(req).map(move |result| match result {
            Ok(response) => Ok(response.into_response()),
            Err(err) => Ok(self.problem_response(err, &method, &uri)),
        }))
    }
}

impl<E> ProblemsEndpoint<E> {
    fn problem_response(&self, err: poem::Error, method: &Method, uri: &Uri) -> Response {
        if err.is_from_response() {
            return err.into_response();
        }
        let status = err.status();
        let problem = match status {
            StatusCode::NOT_FOUND => Problem::new(
                ErrorStatus::NOT_FOUND,
                "not-found",
                "Not found",
                not_found_detail(uri.path()),
            ),
            StatusCode::METHOD_NOT_ALLOWED => {
                let mut response = Problem::new(
                    ErrorStatus::METHOD_NOT_ALLOWED,
                    "method-not-allowed",
                    "Method not allowed",
                    "this endpoint does not support the method; see /docs",
                )
                .into_response();
                let allowed = routes::allowed(uri.path());
                let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                if let Ok(allow) = HeaderValue::from_str(&allow.join(", ")) {
                    response.headers_mut().insert(header::ALLOW, allow);
                }
                return response;
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
                ErrorStatus::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                match err.downcast_ref::<ContentTypeError>() {
                    Some(ContentTypeError::NotSupported { content_type }) => format!(
                        "Content-Type {:?} is not accepted here; send Content-Type: \
                         application/json",
                        api::shown(content_type)
                    ),
                    _ => "the request has no Content-Type; send Content-Type: application/json"
                        .to_owned(),
                },
            ),
            StatusCode::BAD_REQUEST => {
                Problem::invalid_request(bad_request_detail(&err, method, uri))
            }
            status if status.is_server_error() => {
                tracing::error!(%status, error = %err, "request failed");
                Problem::internal("the server failed to handle the request")
            }
            status => match ErrorStatus::new(status) {
                Some(error) => Problem::new(
                    error,
                    "http-error",
                    status.canonical_reason().unwrap_or("Error"),
                    err.to_string(),
                ),
                None => {
                    tracing::error!(%status, error = %err, "an error with a status of success");
                    Problem::internal("the server failed to handle the request")
                }
            },
        };
        problem.into_response()
    }
}

/// A path whose percent-encoding is broken (`%ZZ`, a lone `%`) or decodes
/// to bytes that are not UTF-8 (`%C3%28`). The router would take the first
/// literally and refuse the second with a vague message.
/// Refuses an `If-Match` / `If-None-Match` that is not visible ASCII: no
/// entity tag can hold anything else, and the framework would take such a
/// header for absent, dropping the condition.
fn check_conditions(req: &Request) -> Result<(), Box<Problem>> {
    for (header, name) in [
        (header::IF_MATCH, "If-Match"),
        (header::IF_NONE_MATCH, "If-None-Match"),
    ] {
        if req
            .headers()
            .get(&header)
            .is_some_and(|value| value.to_str().is_err())
        {
            return Err(Box::new(Problem::invalid_request(format!(
                "{name}: not a list of entity tags (visible ASCII: each a revision in double \
                 quotes, as the ETag header gives it)"
            ))));
        }
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), Box<Problem>> {
    if !path.contains('%') {
        return Ok(());
    }
    let bytes = path.as_bytes();
    for (at, _) in path.match_indices('%') {
        let escape = bytes.get(at + 1..at + 3);
        if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
            let shown: String = path[at..].chars().take(3).collect();
            return Err(Box::new(Problem::invalid_request(format!(
                "the path has a broken percent-encoding at {shown:?}: % must be followed by two \
                 hex digits (send a literal % as %25)"
            ))));
        }
    }
    if percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .is_err()
    {
        return Err(Box::new(Problem::invalid_request(
            "the path is not UTF-8 once percent-decoded: keys are UTF-8 text, so encode each \
             character's UTF-8 bytes (é is %C3%A9)",
        )));
    }
    Ok(())
}

/// What a request to no endpoint is told: for a key path with a `/` left
/// in the key, how to send it.
fn not_found_detail(path: &str) -> String {
    let key = ["/store/cas/", "/watch_key/", "/store/"]
        .iter()
        .find_map(|route| path.strip_prefix(route))
        .filter(|key| key.contains('/'));
    match key {
        Some(key) => format!(
            "no such endpoint: a key is one path segment, so send the `/` inside key {:?} as \
             %2F ({})",
            api::shown(key),
            api::shown(&key.replace('/', "%2F"))
        ),
        None => "no such endpoint; the API is described at /docs".to_owned(),
    }
}

/// The detail of a 400 from the framework: for the query parameters whose
/// parser speaks in type names, the words the API uses elsewhere; for a
/// required one left out, which operation needs it.
fn bad_request_detail(err: &poem::Error, method: &Method, uri: &Uri) -> String {
    let Some(param) = err.downcast_ref::<poem_openapi::error::ParseParamError>() else {
        return err.to_string();
    };
    // A lease id in the path (`/leases/{id}`) or the query.
    if matches!(param.name, "id" | "lease" | "after") {
        return api::bad_lease_id(param.name);
    }
    let given = uri
        .query()
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix(param.name)?.strip_prefix('='));
    let operation = format!("{method} {}", uri.path());
    let Some(given) = given else {
        return match (param.name, uri.path()) {
            ("prefix", "/store") => format!(
                "{operation} needs `prefix`: every key starting with it is deleted (it may not \
                 be empty)"
            ),
            ("prefix", "/watch") => format!(
                "{operation} needs `prefix`: every key starting with it is watched (`prefix=` \
                 watches every key)"
            ),
            (name, _) => format!("{operation} needs the query parameter `{name}`"),
        };
    };
    let given = api::shown(given);
    match param.name {
        "ttl" => api::bad_ttl(given),
        "since" => api::bad_since(given),
        "limit" => api::bad_limit(given),
        "keys_only" | "count" | "keys" => {
            format!(
                "{} {given} is not a boolean: send true or false",
                param.name
            )
        }
        // Only DELETE /store constrains a given `prefix` (not empty).
        "prefix" => api::EMPTY_PREFIX.to_owned(),
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_percent_encodings_are_refused() {
        assert!(check_path("/store/a%2Fb").is_ok());
        assert!(check_path("/store/%C3%A9").is_ok());
        for path in ["/store/%ZZ", "/store/a%", "/store/a%2", "/store/%C3%28"] {
            assert!(check_path(path).is_err(), "{path}");
        }
    }
}
