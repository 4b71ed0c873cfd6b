//! Handing a request to the application, whichever path read it (hyper,
//! or the lean watch path): the one conversion to the application's
//! request, and the count of requests in flight that the connection's
//! deadlines read.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use poem::http::uri::Scheme;
use poem::http::{self, Version, header};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Body, Endpoint, Request, RequestParts, Response};

use super::body_timeout::TimedBody;
use super::guarded_io::{ConnShared, Timeouts};
use crate::api::ConnectionCloser;
use crate::watch::Closer;

/// Where a request came from: the connection's addresses and scheme.
#[derive(Clone)]
pub struct Origin {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub scheme: Scheme,
}

/// The application's request for a head and body, read by hyper or by the
/// lean path alike, carrying the connection's `closer` if it may open a
/// watch stream.
pub fn request(
    head: http::request::Parts,
    body: Body,
    origin: &Origin,
    closer: Option<Closer>,
) -> Request {
    let parts = RequestParts::from((
        head,
        LocalAddr(origin.local.into()),
        RemoteAddr(origin.peer.into()),
        origin.scheme.clone(),
    ));
    let mut request = Request::from_parts(parts, body);
    if let Some(closer) = closer {
        request.extensions_mut().insert(ConnectionCloser(closer));
    }
    request
}

/// The application's request for one hyper read.
pub fn from_hyper(
    req: http::Request<Incoming>,
    timeouts: &Timeouts,
    origin: &Origin,
    closer: Option<Closer>,
) -> Request {
    let (head, incoming) = req.into_parts();
    let body = body(&head, incoming, timeouts);
    request(head, body, origin, closer)
}

/// A request's body under `--body-timeout`, or none at all when its head
/// says there is none (no box for a GET's empty body).
pub fn body(head: &http::request::Parts, incoming: Incoming, timeouts: &Timeouts) -> Body {
    if !may_have_body(head) {
        return Body::empty();
    }
    let body = incoming.map_err(std::io::Error::other);
    Body::from(http_body_util::combinators::BoxBody::new(TimedBody::new(
        body.boxed(),
        timeouts.body,
    )))
}

/// Whether a request can carry a body (HTTP/1 needs Content-Length or
/// Transfer-Encoding for one).
fn may_have_body(head: &http::request::Parts) -> bool {
    let headers = &head.headers;
    match headers.get(header::CONTENT_LENGTH) {
        Some(length) => length.as_bytes() != b"0",
        None => head.version >= Version::HTTP_2 || headers.contains_key(header::TRANSFER_ENCODING),
    }
}

/// The application's answer to `request`, errors included: poem's
/// `Endpoint::get_response`, without the copy of the request that its
/// `async` block keeps beside the call's future (see `server::app`).
pub fn answer<E: Endpoint<Output = Response>>(
    app: &E,
    request: Request,
) -> impl Future<Output = Response> + Send + '_ {
    app.call(request)
        .map(|result| result.unwrap_or_else(|err| err.into_response()))
}

/// Counts a request as in flight from the moment hyper hands it over until
/// its response body is done with: the connection's idle deadline does not
/// run meanwhile (a watch stream is in flight as long as it is open).
pub struct InFlight(Arc<ConnShared>);

impl InFlight {
    pub fn start(shared: Arc<ConnShared>) -> Self {
        shared.request_started();
        Self(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}
