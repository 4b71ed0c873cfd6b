//! Serving one accepted connection: HTTP/1.1 or HTTP/2 (prior knowledge)
//! through hyper, each request handed to the poem application; a
//! connection that opens with a watch is served by [`super::lean_watch`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::FutureExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::http::uri::Scheme;
use poem::http::{self, Method, Version, header};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Body, Endpoint, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::answers::{self, AnswerBody};
use super::body_timeout::TimedBody;
use super::guarded_io::{ConnShared, GuardedIo, Signal, Timeouts};
use super::lean_watch::{self, Opening, Served};
use super::rewind::Rewind;
use super::tls::Tls;
use crate::api::ConnectionCloser;
use crate::api::routes;
use crate::metrics::ConnectionCounters;
use crate::watch::Closer;

/// What bounds the answers of every connection.
#[derive(Clone, Copy, Debug)]
pub struct AnswerLimits {
    /// Bytes of answers all connections together may hold before large
    /// ones are refused (`--answer-memory`).
    pub memory: usize,
    /// Requests one HTTP/2 connection may have open at once
    /// (`--max-streams`).
    pub streams: u32,
}

/// Everything a connection needs from the server.
pub struct ConnConfig<E> {
    pub app: E,
    pub local_addr: SocketAddr,
    pub timeouts: Timeouts,
    pub answers: AnswerLimits,
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
        answers: AnswerLimits,
        tls: Option<Arc<Tls>>,
        counters: Arc<ConnectionCounters>,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http2().max_concurrent_streams(answers.streams);
        Self {
            app,
            local_addr,
            timeouts,
            answers,
            builder,
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
    let service = {
        let config = config.clone();
        let shared = shared.clone();
        hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let in_flight = InFlight::start(shared.clone());
            let config = config.clone();
            let shared = shared.clone();
            let h2 = req.version() == Version::HTTP_2;
            let safe = matches!(*req.method(), Method::GET | Method::HEAD);
            let watch = routes::streams(req.method(), req.uri().path());
            let closer = watch.then(|| stream_closer(&shared, h2));
            let scheme = scheme.clone();
            async move {
                let request = poem_request(req, &config, scheme, peer, closer);
                // Boxed: hyper spawns a task per HTTP/2 stream, sized by
                // this future, and a watch stream's task lives as long as
                // the stream; the application's future would otherwise
                // stay in it.
                let response: http::Response<AnswerBody> =
                    Box::pin(answer(&config.app, request)).await.into();
                let memory = config.answers.memory;
                let answer = answers::admit(response, shared, in_flight, memory, safe, h2);
                Ok::<_, Infallible>(answer)
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

/// What a watch stream on this connection calls when the store drops its
/// watcher. Over HTTP/1.1 the connection is closed: the frames already in
/// its buffers can be freed no other way. Over HTTP/2 only the stream
/// ends: the store has already emptied its queue, and the stream's next
/// frame is an error, which hyper sends as RST_STREAM; the connection's
/// other streams go on (a client that grants no window at all is closed by
/// `--send-timeout`).
fn stream_closer(shared: &Arc<ConnShared>, h2: bool) -> Closer {
    if h2 { Arc::new(()) } else { shared.clone() }
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
