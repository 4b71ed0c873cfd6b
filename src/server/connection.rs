//! Serving one accepted connection: HTTP/1.1 or HTTP/2 (prior knowledge)
//! through hyper, each request handed to the poem application; a
//! connection that opens with a watch is served by [`super::lean_watch`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::http::uri::Scheme;
use poem::http::{self, Version, header};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Body, Endpoint, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::body_timeout::TimedBody;
use super::guarded_io::{ConnShared, GuardedIo, Signal, Timeouts};
use super::lean_watch::{self, Opening, Served};
use super::rewind::Rewind;
use super::tls::Tls;
use crate::api::{self, ConnectionCloser};
use crate::metrics::ConnectionCounters;
use crate::store::Closer;

/// Everything a connection needs from the server.
pub struct ConnConfig<E> {
    pub app: E,
    pub local_addr: SocketAddr,
    pub timeouts: Timeouts,
    pub builder: auto::Builder<TokioExecutor>,
    /// HTTPS only, when set.
    pub tls: Option<Arc<Tls>>,
    pub counters: Arc<ConnectionCounters>,
}

impl<E> ConnConfig<E> {
    pub fn new(
        app: E,
        local_addr: SocketAddr,
        timeouts: Timeouts,
        tls: Option<Arc<Tls>>,
        counters: Arc<ConnectionCounters>,
    ) -> Self {
        Self {
            app,
            local_addr,
            timeouts,
            builder: auto::Builder::new(TokioExecutor::new()),
            tls,
            counters,
        }
    }
}

/// Serves `stream` until the client leaves, a deadline passes or the store
/// drops a watcher on it (both close it at once), or it is told to shut
/// down (then requests in flight finish first).
pub async fn serve<E>(
    config: Arc<ConnConfig<E>>,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ConnShared>,
) where
    E: Endpoint<Output = Response> + 'static,
{
    // Answers go out in one writev; waiting for an ACK (Nagle) only adds
    // latency to small responses.
    let _ = stream.set_nodelay(true);
    let Some(tls) = config.tls.clone() else {
        let io = GuardedIo::new(stream, shared.clone(), config.timeouts);
        return serve_io(config, io, Scheme::HTTP, peer, shared).await;
    };
    // Boxed: a TLS connection's state (rustls' session inline) would
    // otherwise size every connection's task, clear-text ones included.
    Box::pin(serve_tls(config, &tls, stream, peer, shared)).await;
}

/// Serves a connection over TLS (the server has a certificate).
async fn serve_tls<E>(
    config: Arc<ConnConfig<E>>,
    tls: &Tls,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ConnShared>,
) where
    E: Endpoint<Output = Response> + 'static,
{
    // The handshake counts toward the head's deadline: a client that stalls
    // in it holds a connection like one that stalls in its head.
    let acceptor = tls.acceptor();
    let handshake = tokio::time::timeout(config.timeouts.header, acceptor.accept(stream));
    let stream = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        },
        _ = shared.signalled(false) => return,
    };
    let io = GuardedIo::new(stream, shared.clone(), config.timeouts);
    serve_io(config, io, Scheme::HTTPS, peer, shared).await;
}

/// Serves HTTP on `io` (plain or TLS): the lean path while the client
/// sends watch requests, hyper from its first other request on.
async fn serve_io<E, S>(
    config: Arc<ConnConfig<E>>,
    mut io: GuardedIo<S>,
    scheme: Scheme,
    peer: SocketAddr,
    shared: Arc<ConnShared>,
) where
    E: Endpoint<Output = Response> + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut read = BytesMut::new();
    loop {
        let opening = tokio::select! {
            biased;
            _ = shared.signalled(false) => return,
            opening = lean_watch::read(&mut io, &mut read) => opening,
        };
        let request = match opening {
            Opening::Watch(request) => request,
            Opening::Other => break,
            Opening::Gone => return,
        };
        let served = lean_watch::serve(
            &config,
            &mut io,
            &mut read,
            request,
            scheme.clone(),
            peer,
            &shared,
        );
        let served = tokio::select! {
            biased;
            _ = shared.signalled(true) => return,
            served = served => served,
        };
        if let Served::Close = served {
            return;
        }
    }
    let io = Rewind::new(read.freeze(), io);
    // Boxed: hyper's connection state would otherwise size the task of
    // every connection, watch connections (which never get here) too.
    Box::pin(serve_hyper(config, io, scheme, peer, shared)).await;
}

/// Serves the rest of a connection through hyper.
async fn serve_hyper<E, S>(
    config: Arc<ConnConfig<E>>,
    io: S,
    scheme: Scheme,
    peer: SocketAddr,
    shared: Arc<ConnShared>,
) where
    E: Endpoint<Output = Response> + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let closer: Closer = shared.clone();
    let service = {
        let config = config.clone();
        let shared = shared.clone();
        hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let in_flight = InFlight::start(shared.clone());
            let config = config.clone();
            let closer = api::may_stream(req.uri().path()).then(|| closer.clone());
            let scheme = scheme.clone();
            async move {
                let request = poem_request(req, &config, scheme, peer, closer);
                // Boxed: hyper spawns a task per HTTP/2 stream, sized by
                // this future, and a watch stream's task lives as long as
                // the stream; the application's future would otherwise
                // stay in it.
                let response: http::Response<BoxBody<Bytes, std::io::Error>> =
                    Box::pin(answer(&config.app, request)).await.into();
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let conn = config.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        biased;
        _ = &mut conn => return,
        signal = shared.signalled(false) => if signal == Signal::Abort { return },
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn => {}
        _ = shared.signalled(true) => {}
    }
}

/// The application's answer to `request`, errors included: poem's
/// `Endpoint::get_response`, without the copy of the request that its
/// `async` block keeps beside the call's future (see `server::app`).
pub(super) fn answer<E: Endpoint<Output = Response>>(
    app: &E,
    request: Request,
) -> impl Future<Output = Response> + Send + '_ {
    app.call(request)
        .map(|result| result.unwrap_or_else(|err| err.into_response()))
}

/// The poem request for a hyper one, its body under `--body-timeout`,
/// carrying `closer` if it may open a watch stream.
fn poem_request<E>(
    req: http::Request<Incoming>,
    config: &ConnConfig<E>,
    scheme: Scheme,
    peer: SocketAddr,
    closer: Option<Closer>,
) -> Request {
    let mut request = Request::from((
        req,
        LocalAddr(config.local_addr.into()),
        RemoteAddr(peer.into()),
        scheme,
    ));
    if may_have_body(&request) {
        let body = BoxBody::from(request.take_body());
        let timed = TimedBody::new(body, config.timeouts.body);
        request.set_body(Body::from(BoxBody::new(timed)));
    }
    if let Some(closer) = closer {
        request.extensions_mut().insert(ConnectionCloser(closer));
    }
    request
}

/// Whether a request can carry a body (HTTP/1 needs Content-Length or
/// Transfer-Encoding for one).
fn may_have_body(request: &Request) -> bool {
    let headers = request.headers();
    match headers.get(header::CONTENT_LENGTH) {
        Some(length) => length.as_bytes() != b"0",
        None => {
            request.version() >= Version::HTTP_2 || headers.contains_key(header::TRANSFER_ENCODING)
        }
    }
}

/// Counts a request as in flight from the moment hyper hands it over until
/// its response body is done with: the connection's idle deadline does not
/// run meanwhile (a watch stream is in flight as long as it is open).
pub(super) struct InFlight(Arc<ConnShared>);

impl InFlight {
    pub(super) fn start(shared: Arc<ConnShared>) -> Self {
        shared.request_started();
        Self(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that keeps its request in flight until hyper drops it.
struct Tracked {
    body: BoxBody<Bytes, std::io::Error>,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
