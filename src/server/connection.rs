//! Serving one accepted connection: HTTP/1.1 or HTTP/2 (prior knowledge)
//! through hyper, each request served by the [hot lane](super::hot_lane)
//! or handed to the poem application; while a connection's requests are
//! watches or hot ones, it is served by [`super::lean`] instead.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use poem::http::uri::Scheme;
use poem::http::{self, Method, Version};
use poem::{Endpoint, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::answers::{self, AnswerBody};
use super::conn_config::ConnConfig;
use super::dispatch::{self, InFlight, Origin, answer};
use super::guarded_io::{ConnShared, GuardedIo, Signal};
use super::lean::{self, Opening, RunEnd, Served};
use super::rewind::Rewind;
use super::tls::Tls;
use crate::api::routes;
use crate::backend::Backend;
use crate::watch::Closer;

/// Serves `stream` until the client leaves, a deadline passes or the store
/// drops a watcher on it (both close it at once), or it is told to shut
/// down (then requests in flight finish first).
pub async fn serve<E, B>(
    config: Arc<ConnConfig<E, B>>,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ConnShared>,
) where
    E: Endpoint<Output = Response> + 'static,
    B: Backend,
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
async fn serve_tls<E, B>(
    config: Arc<ConnConfig<E, B>>,
    tls: &Tls,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ConnShared>,
) where
    E: Endpoint<Output = Response> + 'static,
    B: Backend,
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
async fn serve_io<E, B, S>(
    config: Arc<ConnConfig<E, B>>,
    mut io: GuardedIo<S>,
    scheme: Scheme,
    peer: SocketAddr,
    shared: Arc<ConnShared>,
) where
    E: Endpoint<Output = Response> + 'static,
    B: Backend,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut read = BytesMut::new();
    let mut next = None;
    loop {
        let opening = match next.take() {
            Some(opening) => opening,
            None => tokio::select! {
                biased;
                _ = shared.signalled(false) => return,
                opening = lean::read(&mut io, &mut read, config.hot.max_body()) => opening,
            },
        };
        let request = match opening {
            Opening::Watch(request) => request,
            Opening::Hot(request) => {
                // Boxed once per run of hot requests: the hot lane's
                // future would otherwise size every connection's task,
                // watch connections' too.
                let run = lean::serve_hot_run(&config, &mut io, &mut read, request, peer, &shared);
                match Box::pin(run).await {
                    RunEnd::Closed => return,
                    RunEnd::Next(opening) => next = Some(opening),
                }
                continue;
            }
            Opening::Other => break,
            Opening::Gone => return,
        };
        let served = lean::serve_watch(
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
async fn serve_hyper<E, B, S>(
    config: Arc<ConnConfig<E, B>>,
    io: S,
    scheme: Scheme,
    peer: SocketAddr,
    shared: Arc<ConnShared>,
) where
    E: Endpoint<Output = Response> + 'static,
    B: Backend,
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
                let response = match config.hot.serve(req, peer, &config.timeouts).await {
                    Ok(response) => response,
                    Err(req) => {
                        let origin = Origin {
                            local: config.local_addr,
                            peer,
                            scheme,
                        };
                        let request = dispatch::from_hyper(req, &config.timeouts, &origin, closer);
                        // Boxed: hyper spawns a task per HTTP/2 stream,
                        // sized by this future, and a watch stream's task
                        // lives as long as the stream; the application's
                        // future would otherwise stay in it.
                        let response: http::Response<AnswerBody> =
                            Box::pin(answer(&config.app, request)).await.into();
                        response
                    }
                };
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
