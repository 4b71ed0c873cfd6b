//! A bound on every request body, so no request can make the server buffer
//! more than `--max-request-bytes`; and the answer to a body that stopped
//! arriving (`--body-timeout`, enforced by the connection).

use std::io;

use futures_util::future::Either;
use futures_util::{FutureExt, StreamExt};
use poem::error::ReadBodyError;
use poem::http::{HeaderValue, Version, header};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response};

use super::body_timeout::BodyTimedOut;
use crate::api::Problem;

/// The error a limited body stream ends with once the limit is passed.
#[derive(Debug)]
struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body too large")
    }
}

impl std::error::Error for TooLarge {}

/// Answers 413 to a body over `max` bytes: at once when Content-Length says
/// so, and while reading a chunked body (which has none) otherwise.
///
/// poem-openapi's JSON payloads read the whole body with no limit, so the
/// bound has to sit in front of them. PUT bodies also get the (smaller)
/// value limit in their handler.
#[derive(Clone, Copy)]
pub struct BodyLimit {
    pub max: usize,
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimited<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimited {
            inner,
            max: self.max,
        }
    }
}

/// An endpoint behind [`BodyLimit`].
pub struct BodyLimited<E> {
    inner: E,
    max: usize,
}

impl<E> BodyLimited<E> {
    fn too_large(&self) -> Response {
        Problem::too_large(format!(
            "the request body is larger than {} bytes",
            self.max
        ))
        .into_response()
    }
}

/// 408 for a body that stopped arriving; the connection is closed after it,
/// as the rest of the body would be read as the next request.
fn timed_out() -> Response {
    let mut response = Problem::request_timeout().into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Whether a body read failed with an error of type `T` that a body layer
/// put there. poem wraps the stream's error in `io::Error`s of its own, so
/// the chain is walked.
fn failed_with<T: std::error::Error + 'static>(err: &poem::Error) -> bool {
    let Some(ReadBodyError::Io(io)) = err.downcast_ref::<ReadBodyError>() else {
        return false;
    };
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(io);
    while let Some(err) = next {
        if err.is::<T>() {
            return true;
        }
        next = match err.downcast_ref::<io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => err.source(),
        };
    }
    false
}

impl<E: Endpoint> Endpoint for BodyLimited<E> {
    type Output = Response;

    // Neither an `async fn` nor an `async` block: either would keep a copy
    // of the request or of the inner future (see `server::app`).
    fn call(&self, mut req: Request) -> impl Future<Output = poem::Result<Response>> + Send {
        let length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match length {
            Some(length) if length > self.max as u64 => {
                return Either::Left(std::future::ready(Ok(self.too_large())));
            }
            Some(_) => {}
            // HTTP/1 without Content-Length or Transfer-Encoding: no body.
            None if req.version() < Version::HTTP_2
                && !req.headers().contains_key(header::TRANSFER_ENCODING) => {}
            None => {
                let max = self.max;
                let mut seen = 0usize;
                let chunks = req.take_body().into_bytes_stream().map(move |chunk| {
                    let chunk = chunk?;
                    seen += chunk.len();
                    if seen > max {
                        return Err(io::Error::other(TooLarge));
                    }
                    Ok(chunk)
                });
                req.set_body(Body::from_bytes_stream(chunks));
            }
        }
        Either::Right(self.inner.call(req).map(move |result| match result {
            Ok(response) => Ok(response.into_response()),
            Err(err) if failed_with::<TooLarge>(&err) => Ok(self.too_large()),
            Err(err) if failed_with::<BodyTimedOut>(&err) => Ok(timed_out()),
            Err(err) => Err(err),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::StatusCode;

    #[test]
    fn recognises_its_own_error_only() {
        let wrapped = io::Error::other(io::Error::other(TooLarge));
        let ours = poem::Error::from(ReadBodyError::Io(wrapped));
        assert!(failed_with::<TooLarge>(&ours));
        assert!(!failed_with::<BodyTimedOut>(&ours));
        let other = poem::Error::from(ReadBodyError::Io(io::Error::other("reset")));
        assert!(!failed_with::<TooLarge>(&other));
        assert_eq!(ours.status(), StatusCode::BAD_REQUEST, "poem's own status");
    }
}
